/*
 * The composition root's view of the core: every layer's header, for
 * init.c, the preload's wrappers and the tests.  Nothing in a layer folder
 * includes this (scripts/check-layers): each includes its own layer header.
 */
#ifndef MEMPOOL_INTERNAL_H
#define MEMPOOL_INTERNAL_H

#include "report.h"
#include "device_pool.h"

#endif /* MEMPOOL_INTERNAL_H */
