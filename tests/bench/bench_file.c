/* A preloaded library that does nothing but write a 3 KB file at exit, the
 * way the shim writes its stats file (a temporary name, then rename):
 * scripts/bench startup shows what the file system alone charges for it. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((destructor)) static void write_file(void)
{
    static const char body[3000];
    char name[64], tmp[80];
    snprintf(name, sizeof(name), "bench_file.%d.json", (int)getpid());
    snprintf(tmp, sizeof(tmp), "%s.tmp", name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    ssize_t n = write(fd, body, sizeof(body));
    close(fd);
    if (n == (ssize_t)sizeof(body))
        rename(tmp, name);
}
