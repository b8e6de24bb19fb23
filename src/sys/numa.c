/*
 * NUMA placement with the raw system calls: glibc has no wrappers, and
 * libnuma would be one more library loaded into every preloaded process
 * for three calls.  Policies are MPOL_PREFERRED: pages go to the node
 * while it has memory and elsewhere after that, never a SIGBUS.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sys.h"

#define MPOL_PREFERRED 1
#define MPOL_MF_MOVE (1 << 1)
#define MPOL_F_NODE (1 << 0)
#define MPOL_F_ADDR (1 << 1)
#define NODE_BITS 1024

static long do_mbind(void *p, size_t len, int node)
{
    unsigned long mask[NODE_BITS / (8 * sizeof(unsigned long))] = {0};
    mask[(unsigned)node / (8 * sizeof(unsigned long))] |= 1ul << ((unsigned)node % (8 * sizeof(unsigned long)));
    return syscall(SYS_mbind, p, len, MPOL_PREFERRED, mask, (unsigned long)NODE_BITS + 1, MPOL_MF_MOVE);
}

int mp_numa_check(int node)
{
    if (node < 0 || node >= NODE_BITS)
        return -EINVAL;
    char path[64];
    snprintf(path, sizeof(path), "/sys/devices/system/node/node%d", node);
    if (access(path, F_OK) != 0)
        return access("/sys/devices/system/node/node0", F_OK) == 0 ? -EINVAL : -ENOTSUP;
    /* The node exists; may this process set a policy (containers often
     * filter these calls)?  Try it on a scratch page. */
    long pg = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    long r = do_mbind(p, (size_t)pg, node);
    int err = errno;
    munmap(p, (size_t)pg);
    if (r == 0)
        return 0;
    return err == EINVAL ? -EINVAL : -ENOTSUP; /* EPERM, ENOSYS */
}

int mp_numa_bind(void *p, size_t len, int node)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)p & ~(pg - 1);
    uintptr_t end = ((uintptr_t)p + len + pg - 1) & ~(pg - 1);
    return do_mbind((void *)start, end - start, node) == 0 ? 0 : -errno;
}

int mp_numa_node_of(const void *p)
{
    int node = -1;
    if (syscall(SYS_get_mempolicy, &node, NULL, 0UL, p, (unsigned long)(MPOL_F_NODE | MPOL_F_ADDR)) != 0)
        return -1;
    return node;
}
