// mempool.h compiles on its own as C++17.
#include "mempool.h"

#include <cstring>

int main() { return std::strcmp(mempool_version(), "0.2.0") == 0 ? 0 : 1; }
