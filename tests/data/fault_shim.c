/* A disk that fails on demand, for tests/test_faults.py: loaded into an engine with
 * LD_PRELOAD, it makes the libc calls that write files (open with O_CREAT, write,
 * pwrite, writev, fsync, fdatasync) fail with FAULT_ERRNO (EIO, EDQUOT, ...) for every
 * file whose path starts with FAULT_PREFIX, while the file FAULT_TRIGGER exists.
 * Reads, sockets and every other file are untouched; removing the trigger heals the
 * "disk".  This is the kernel's answer seen through the C library: Python's own I/O
 * and torch.save reach the kernel through these calls.
 *
 *   cc -shared -fPIC -O1 -o fault_shim.so fault_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *prefix, *trigger;
static size_t prefix_len;
static int fault_errno = EIO;

__attribute__((constructor)) static void fault_init(void) {
    prefix = getenv("FAULT_PREFIX");
    trigger = getenv("FAULT_TRIGGER");
    prefix_len = prefix ? strlen(prefix) : 0;
    const char *e = getenv("FAULT_ERRNO");
    if (e && atoi(e) > 0)
        fault_errno = atoi(e);
}

static int armed(void) {
    return prefix && trigger && access(trigger, F_OK) == 0;
}

static int path_hit(const char *path) {
    return path && strncmp(path, prefix, prefix_len) == 0;
}

static int fd_hit(int fd) {
    if (!armed())
        return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return 0;
    path[n] = 0;
    return path_hit(path);
}

#define REAL(name) \
    static __typeof__(&name) real_##name; \
    if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

#define FAIL(ret) do { errno = fault_errno; return ret; } while (0)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    if (fd_hit(fd)) FAIL(-1);
    return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    if (fd_hit(fd)) FAIL(-1);
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64);
    if (fd_hit(fd)) FAIL(-1);
    return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev);
    if (fd_hit(fd)) FAIL(-1);
    return real_writev(fd, iov, cnt);
}

int fsync(int fd) {
    REAL(fsync);
    if (fd_hit(fd)) FAIL(-1);
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    if (fd_hit(fd)) FAIL(-1);
    return real_fdatasync(fd);
}

static int creates(int flags) {
    return (flags & O_CREAT) != 0;
}

#define OPEN_BODY(name, call) \
    mode_t mode = 0; \
    if (creates(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); } \
    if (creates(flags) && armed() && path_hit(path)) FAIL(-1); \
    return call

int open(const char *path, int flags, ...) {
    REAL(open);
    OPEN_BODY(open, real_open(path, flags, mode));
}

int open64(const char *path, int flags, ...) {
    REAL(open64);
    OPEN_BODY(open64, real_open64(path, flags, mode));
}

int openat(int dirfd, const char *path, int flags, ...) {
    REAL(openat);
    OPEN_BODY(openat, real_openat(dirfd, path, flags, mode));
}

int openat64(int dirfd, const char *path, int flags, ...) {
    REAL(openat64);
    OPEN_BODY(openat64, real_openat64(dirfd, path, flags, mode));
}
