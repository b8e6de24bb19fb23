// Threads and exceptions under the shim: every thread allocates through
// std::string/std::map/std::vector, throws and catches exceptions (whose
// objects libstdc++ allocates with __cxa_allocate_exception -> malloc),
// ships exception_ptrs and heap objects to other threads, which free them.
// Results are collected and printed in a fixed order, so the output is
// deterministic whatever the scheduling.
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

struct WorkError : std::runtime_error {
    int code;
    WorkError(const std::string &what, int c) : std::runtime_error(what), code(c) {}
};

struct Counter {  // thread_local with a destructor that allocates
    std::vector<std::string> log;
    ~Counter() { log.emplace_back("bye"); }
};
thread_local Counter tl_counter;

unsigned long fnv(const std::string &s, unsigned long h = 1469598103934665603UL)
{
    for (unsigned char c : s) h = (h ^ c) * 1099511628211UL;
    return h;
}

void level3(int id, int i)
{
    if (i % 7 == 0) throw WorkError("thread " + std::to_string(id) + " item " + std::to_string(i), i);
    if (i % 11 == 0) throw std::out_of_range(std::string(50 + i % 30, 'x'));
}

void level2(int id, int i)
{
    try {
        level3(id, i);
    } catch (const std::out_of_range &) {
        std::throw_with_nested(std::logic_error("nested at " + std::to_string(i)));
    }
}

struct Result {
    unsigned long hash = 0;
    int work_errors = 0, nested = 0, code_sum = 0;
    std::size_t map_size = 0;
};

Result work(int id)
{
    Result r;
    std::map<std::string, std::vector<int>> m;
    for (int i = 1; i <= 40000; i++) {
        std::string key = "k" + std::to_string((i * 2654435761u + id) % 500);
        m[key].push_back(i);
        try {
            level2(id, i);
            r.hash = fnv(key, r.hash);
        } catch (const WorkError &e) {
            r.work_errors++;
            r.code_sum += e.code;
            r.hash = fnv(e.what(), r.hash);
        } catch (const std::logic_error &e) {
            r.nested++;
            try {
                std::rethrow_if_nested(e);
            } catch (const std::out_of_range &inner) {
                r.hash = fnv(inner.what(), r.hash);
            }
        }
        tl_counter.log.push_back(key);
        if (tl_counter.log.size() > 100) tl_counter.log.clear();
    }
    r.map_size = m.size();
    return r;
}

// Producer/consumer: blocks allocated on one thread, freed on another.
struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::unique_ptr<std::string>> q;
    bool done = false;
};

}  // namespace

int main()
{
    const int nthreads = 4;
    std::vector<Result> results(nthreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; t++)
        threads.emplace_back([t, &results] { results[t] = work(t); });
    for (auto &th : threads) th.join();
    for (int t = 0; t < nthreads; t++)
        std::printf("thread %d: hash %lu work_errors %d nested %d codes %d keys %zu\n", t,
                    results[t].hash, results[t].work_errors, results[t].nested,
                    results[t].code_sum, results[t].map_size);

    // exception_ptr crossing threads through futures
    std::vector<std::future<std::string>> futs;
    for (int i = 0; i < 8; i++)
        futs.push_back(std::async(std::launch::async, [i]() -> std::string {
            std::string s(1000 * (i + 1), char('a' + i));
            if (i % 3 == 0) throw WorkError("async failure " + std::to_string(i), i);
            return s.substr(0, 10) + std::to_string(s.size());
        }));
    for (auto &f : futs) {
        try {
            std::printf("future: %s\n", f.get().c_str());
        } catch (const WorkError &e) {
            std::printf("future threw: %s (%d)\n", e.what(), e.code);
        }
    }

    std::exception_ptr eptr;
    std::thread thrower([&eptr] {
        try {
            throw std::runtime_error(std::string(300, 'e') + " from thread");
        } catch (...) {
            eptr = std::current_exception();
        }
    });
    thrower.join();
    try {
        std::rethrow_exception(eptr);
    } catch (const std::exception &e) {
        std::printf("rethrown in main: %zu chars, hash %lu\n", std::strlen(e.what()), fnv(e.what()));
    }
    eptr = nullptr;

    Queue q;
    std::atomic<unsigned long> consumed{0}, consumed_n{0};
    std::thread consumer([&] {
        unsigned long sum = 0, n = 0;
        for (;;) {
            std::unique_ptr<std::string> item;
            {
                std::unique_lock<std::mutex> lk(q.mu);
                q.cv.wait(lk, [&] { return !q.q.empty() || q.done; });
                if (q.q.empty()) break;
                item = std::move(q.q.front());
                q.q.pop_front();
            }
            sum += fnv(*item);  // order-independent; the string is freed here
            n++;
        }
        consumed = sum;
        consumed_n = n;
    });
    std::vector<std::thread> producers;
    for (int p = 0; p < 3; p++)
        producers.emplace_back([p, &q] {
            for (int i = 0; i < 20000; i++) {
                auto s = std::make_unique<std::string>(std::to_string(p) + ":" +
                                                       std::string(i % 200, 'p'));
                std::lock_guard<std::mutex> lk(q.mu);
                q.q.push_back(std::move(s));
                q.cv.notify_one();
            }
        });
    for (auto &th : producers) th.join();
    {
        std::lock_guard<std::mutex> lk(q.mu);
        q.done = true;
    }
    q.cv.notify_all();
    consumer.join();
    std::printf("producer/consumer: %lu items, digest %lu\n", consumed_n.load(), consumed.load());

    std::ostringstream os;
    for (int i = 0; i < 1000; i++) os << i << (i % 10 == 9 ? '\n' : ' ');
    std::printf("ostringstream hash %lu\n", fnv(os.str()));
    return 0;
}
