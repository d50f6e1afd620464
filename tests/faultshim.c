/*
 * faultshim - LD_PRELOAD fault injector for the fault tests
 *
 * Makes write, pwrite, fsync, fdatasync and rename fail for files under one
 * directory, so that a test can show what a daemon or sendmail does when
 * the disk is full (ENOSPC) or broken (EIO). Environment:
 *
 *   FAULT_DIR    the directory (a path prefix; required, else no faults)
 *   FAULT_OP     write, fsync or rename (write covers write and pwrite,
 *                fsync covers fsync and fdatasync)
 *   FAULT_ERRNO  ENOSPC or EIO (default ENOSPC)
 *   FAULT_AFTER  let this many matching calls succeed first (default 0)
 *   FAULT_FILE   if set, faults fire only while this file exists (lets a
 *                test clear the fault in a long-running daemon)
 *   FAULT_DELAY_MS  if set, a fault is a wait of this many milliseconds,
 *                after which the call is made (a slow disk, not a broken
 *                one)
 *
 * Descriptors are tracked from open/openat/creat of paths under FAULT_DIR.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define FAULT_MAXFD 4096

static char fault_fds[FAULT_MAXFD];
static long fault_calls;

/* fault_dir - FAULT_DIR, or NULL */
static const char *fault_dir(void)
{
    const char *dir = getenv("FAULT_DIR");

    return dir && *dir ? dir : NULL;
}

/* fault_under - is path under FAULT_DIR */
static int fault_under(const char *path)
{
    const char *dir = fault_dir();
    size_t len;

    if (dir == NULL || path == NULL)
        return 0;
    len = strlen(dir);
    return strncmp(path, dir, len) == 0 && (path[len] == '/' || path[len] == 0);
}

/* fault_fire - should this call of operation op fail; sets errno */
static int fault_fire(const char *op)
{
    const char *want = getenv("FAULT_OP");
    const char *err = getenv("FAULT_ERRNO");
    const char *after = getenv("FAULT_AFTER");
    const char *file = getenv("FAULT_FILE");

    if (want == NULL || strcmp(want, op) != 0)
        return 0;
    if (file != NULL && *file && access(file, F_OK) != 0)
        return 0;
    if (fault_calls++ < (after ? strtol(after, NULL, 10) : 0))
        return 0;
    if (getenv("FAULT_DELAY_MS") != NULL) {
        long ms = strtol(getenv("FAULT_DELAY_MS"), NULL, 10);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        return 0;
    }
    errno = (err && strcmp(err, "EIO") == 0) ? EIO : ENOSPC;
    return 1;
}

/* fault_track - remember fd when it was opened under FAULT_DIR */
static int fault_track(int fd, const char *path)
{
    if (fd >= 0 && fd < FAULT_MAXFD)
        fault_fds[fd] = (char) fault_under(path);
    return fd;
}

/* fault_fd - is fd one of ours */
static int fault_fd(int fd)
{
    return fd >= 0 && fd < FAULT_MAXFD && fault_fds[fd];
}

#define REAL(name)                                                             \
    static __typeof__(&name) real;                                             \
    if (real == NULL)                                                          \
    real = (__typeof__(&name)) dlsym(RTLD_NEXT, #name)

/* open - track */
int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    va_list ap;

    REAL(open);
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return fault_track(real(path, flags, mode), path);
}

/* open64 - track */
int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    va_list ap;

    REAL(open64);
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return fault_track(real(path, flags, mode), path);
}

/* openat - track (absolute paths only, which is what sluice uses) */
int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    va_list ap;

    REAL(openat);
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return fault_track(real(dirfd, path, flags, mode), path);
}

/* close - forget */
int close(int fd)
{
    REAL(close);
    if (fd >= 0 && fd < FAULT_MAXFD)
        fault_fds[fd] = 0;
    return real(fd);
}

/* write - fail on demand */
ssize_t write(int fd, const void *buf, size_t len)
{
    REAL(write);
    if (fault_fd(fd) && fault_fire("write"))
        return -1;
    return real(fd, buf, len);
}

/* pwrite - fail on demand */
ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    REAL(pwrite);
    if (fault_fd(fd) && fault_fire("write"))
        return -1;
    return real(fd, buf, len, off);
}

/* pwrite64 - fail on demand */
ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    REAL(pwrite64);
    if (fault_fd(fd) && fault_fire("write"))
        return -1;
    return real(fd, buf, len, off);
}

/* fsync - fail on demand */
int fsync(int fd)
{
    REAL(fsync);
    if (fault_fd(fd) && fault_fire("fsync"))
        return -1;
    return real(fd);
}

/* fdatasync - fail on demand */
int fdatasync(int fd)
{
    REAL(fdatasync);
    if (fault_fd(fd) && fault_fire("fsync"))
        return -1;
    return real(fd);
}

/* rename - fail on demand */
int rename(const char *from, const char *to)
{
    REAL(rename);
    if ((fault_under(from) || fault_under(to)) && fault_fire("rename"))
        return -1;
    return real(from, to);
}
