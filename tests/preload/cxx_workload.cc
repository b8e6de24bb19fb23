// A C++ program for the preload tests: new/delete (plain, array, sized,
// aligned, nothrow), containers, std::thread, exceptions, fork() and
// posix_memalign.  Prints a deterministic digest of what it computed.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

struct alignas(64) Wide {
    double v[8];
};

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 1099511628211ull; }

static uint64_t work(unsigned seed)
{
    uint64_t h = 1469598103934665603ull;
    std::unordered_map<std::string, std::vector<int>> m;
    for (unsigned i = 0; i < 20000; i++) {
        std::string k = "key" + std::to_string((i * 7919u + seed) % 5000);
        m[k].push_back((int)i);
        if (i % 3 == 0)
            m.erase("key" + std::to_string((i * 31u) % 5000));
    }
    for (auto &kv : m)
        h += std::hash<std::string>()(kv.first) ^ kv.second.size();
    std::vector<std::unique_ptr<Wide>> ws;
    for (unsigned i = 0; i < 2000; i++) {
        ws.emplace_back(new Wide());
        if ((reinterpret_cast<uintptr_t>(ws.back().get()) & 63) != 0)
            std::abort();
        ws.back()->v[0] = i;
    }
    for (auto &w : ws)
        h = mix(h, (uint64_t)w->v[0]);
    int *arr = new int[1000];
    for (int i = 0; i < 1000; i++)
        arr[i] = i * i;
    h = mix(h, (uint64_t)arr[999]);
    delete[] arr;
    int *nt = new (std::nothrow) int(5);
    h = mix(h, (uint64_t)*nt);
    delete nt;
    try {
        throw std::runtime_error(std::string(100, 'x'));
    } catch (const std::exception &e) {
        h = mix(h, std::strlen(e.what()));
    }
    return h;
}

int main()
{
    uint64_t results[4] = {0};
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < 4; t++)
        ts.emplace_back([t, &results] { results[t] = work(t); });
    for (auto &t : ts)
        t.join();
    for (unsigned t = 0; t < 4; t++)
        std::printf("thread %u: %016llx\n", t, (unsigned long long)results[t]);

    void *p = nullptr;
    if (posix_memalign(&p, 4096, 10000) != 0 || (reinterpret_cast<uintptr_t>(p) & 4095) != 0)
        return 2;
    std::memset(p, 7, 10000);
    std::fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        // The child frees the parent's block and allocates on its own.
        std::free(p);
        std::printf("child: %016llx\n", (unsigned long long)work(9));
        std::fflush(stdout);
        std::exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    std::printf("parent block intact: %d\n", ((unsigned char *)p)[9999] == 7);
    std::free(p);
    std::printf("child status: %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
