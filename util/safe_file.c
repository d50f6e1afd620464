/*
 * safe_file - file operations that survive a crash
 *
 * A file is published durably in one order only: write it under a temporary
 * name in the same directory, fsync it, rename it into place, fsync the
 * directory. A crash at any step leaves either the old file or the new one,
 * never a mix, and a file that anyone was told about is on disk. Failures
 * return -1 with errno and log nothing; temporary files do not outlive a
 * failure.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define SAFE_FILE_READ_CHUNK 8192

/* safe_file_close_keep_errno - close fd without disturbing errno */
static void safe_file_close_keep_errno(int fd)
{
    int saved_errno = errno;

    (void) close(fd);
    errno = saved_errno;
}

/* safe_file_write_loop - write all of data, at offset when offset >= 0
   (pwrite) or at the file position otherwise, despite EINTR and short
   writes */
static int safe_file_write_loop(int fd, const void *data, size_t len,
                                off_t offset)
{
    const char *cp = data;
    ssize_t count;

    while (len > 0) {
        count = offset < 0 ? write(fd, cp, len) : pwrite(fd, cp, len, offset);
        if (count < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (count == 0) {
            /* No progress and no error: do not spin. */
            errno = EIO;
            return -1;
        }
        cp += count;
        len -= (size_t) count;
        if (offset >= 0)
            offset += count;
    }
    return 0;
}

/* safe_file_write_all - write all of data despite EINTR and short writes */
int safe_file_write_all(int fd, const void *data, size_t len)
{
    return safe_file_write_loop(fd, data, len, -1);
}

/* safe_file_pwrite_all - pwrite all of data at offset despite EINTR and
   short writes */
int safe_file_pwrite_all(int fd, const void *data, size_t len, off_t offset)
{
    if (offset < 0) {
        errno = EINVAL;
        return -1;
    }
    return safe_file_write_loop(fd, data, len, offset);
}

/* safe_file_fsync - fdatasync (or fsync) a descriptor */
int safe_file_fsync(int fd)
{
    int ret;

    do {
#ifdef HAVE_FDATASYNC
        ret = fdatasync(fd);
#else
        ret = fsync(fd);
#endif
    } while (ret < 0 && errno == EINTR);
    return ret;
}

/* safe_file_start_writeback - start writing fd's dirty pages, no wait */
void safe_file_start_writeback(int fd)
{
#ifdef SYNC_FILE_RANGE_WRITE
    (void) sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#else
    (void) fd;
#endif
}

/* safe_file_fsync_dir - fsync the directory dir itself */
int safe_file_fsync_dir(const char *dir)
{
    int fd;
    int ret;

    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -1;
    do {
        ret = fsync(fd);
    } while (ret < 0 && errno == EINTR);

    /*
     * A few file systems cannot sync a directory and say EINVAL; there is
     * nothing more durable to be had there, so that is not a failure.
     */
    if (ret < 0 && errno == EINVAL)
        ret = 0;
    if (ret < 0) {
        safe_file_close_keep_errno(fd);
        return -1;
    }
    return close(fd) < 0 && errno != EINTR ? -1 : 0;
}

/* safe_file_fsync_dir_or_fs - fsync dir, or the file system of fd when
   dir cannot be opened for want of permission */
int safe_file_fsync_dir_or_fs(const char *dir, int fd)
{
    int ret;

    if (safe_file_fsync_dir(dir) == 0)
        return 0;

    /*
     * Only the open can fail so (fsync never says EACCES). Syncing the
     * whole file system that holds the file commits the directory entry
     * too: more work than needed, but the only durable way left.
     */
    if (fd < 0 || (errno != EACCES && errno != EPERM))
        return -1;
#ifdef HAVE_SYNCFS
    do {
        ret = syncfs(fd);
    } while (ret < 0 && errno == EINTR);
#else
    /* POSIX sync() may return before the writes are done; Linux waits. */
    (void) fd;
    sync();
    ret = 0;
#endif
    return ret;
}

/* safe_file_dir_of - new string: the directory that holds path */
static char *safe_file_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return mystrdup(".");
    /* "/x" lives in "/", and "a//x" in "a". */
    while (slash > path && slash[-1] == '/')
        slash--;
    if (slash == path)
        return mystrdup("/");
    return mystrndup(path, (size_t) (slash - path));
}

/* safe_file_fsync_parent - fsync the directory that holds path */
int safe_file_fsync_parent(const char *path)
{
    char *dir = safe_file_dir_of(path);
    int ret = safe_file_fsync_dir(dir);
    int saved_errno = errno;

    myfree(dir);
    errno = saved_errno;
    return ret;
}

/* safe_file_fsync_parent_or_fs - fsync the directory that holds path, or
   the file system of fd when that directory cannot be opened */
int safe_file_fsync_parent_or_fs(const char *path, int fd)
{
    char *dir = safe_file_dir_of(path);
    int ret = safe_file_fsync_dir_or_fs(dir, fd);
    int saved_errno = errno;

    myfree(dir);
    errno = saved_errno;
    return ret;
}

/* safe_file_rename - rename(2), then fsync the directories involved */
int safe_file_rename(const char *from, const char *to)
{
    char *from_dir;
    char *to_dir;
    int ret;
    int saved_errno;

    if (rename(from, to) < 0)
        return -1;
    from_dir = safe_file_dir_of(from);
    to_dir = safe_file_dir_of(to);
    /* The new name first: that is the one somebody is about to be told. */
    ret = safe_file_fsync_dir(to_dir);
    if (ret == 0 && strcmp(from_dir, to_dir) != 0)
        ret = safe_file_fsync_dir(from_dir);
    saved_errno = errno;
    myfree(from_dir);
    myfree(to_dir);
    errno = saved_errno;
    return ret;
}

/* safe_file_temp_name - "<dir>/.<base>.tmp.<pid>" beside path */
static VSTR *safe_file_temp_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    VSTR *tmp = vstr_alloc(strlen(path) + 32);

    vstr_ncat(tmp, path, (size_t) (base - path));
    vstr_sprintf_append(tmp, ".%s.tmp.%ld", base, (long) getpid());
    return tmp;
}

/* safe_file_create_temp - create the temporary file, exclusively */
static int safe_file_create_temp(const char *tmp_path, mode_t mode)
{
    int fd;
    const int flags = O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC;

    if ((fd = open(tmp_path, flags, mode & 07777)) < 0 && errno == EEXIST) {
        /*
         * Left by a process that crashed with our pid: a temporary name is
         * never anyone's data, so take it over, once.
         */
        if (unlink(tmp_path) < 0 && errno != ENOENT)
            return -1;
        fd = open(tmp_path, flags, mode & 07777);
    }
    return fd;
}

/* safe_file_write - replace path with data durably */
int safe_file_write(const char *path, const void *data, size_t len, mode_t mode)
{
    const char *slash = strrchr(path, '/');
    VSTR *tmp;
    int fd;
    int saved_errno;

    if (*path == 0 || (slash && slash[1] == 0)) {
        errno = EINVAL;
        return -1;
    }
    tmp = safe_file_temp_name(path);
    if ((fd = safe_file_create_temp(vstr_str(tmp), mode)) < 0)
        goto fail;

    /* The mode is the caller's, not the umask's. */
    if (fchmod(fd, mode & 07777) < 0 ||
        safe_file_write_all(fd, data, len) < 0 || safe_file_fsync(fd) < 0) {
        safe_file_close_keep_errno(fd);
        goto fail_unlink;
    }
    if (close(fd) < 0 && errno != EINTR)
        goto fail_unlink;
    if (rename(vstr_str(tmp), path) < 0)
        goto fail_unlink;
    vstr_free(tmp);
    /* In place now; the directory fsync makes the new name survive a crash. */
    return safe_file_fsync_parent(path);

fail_unlink:
    saved_errno = errno;
    (void) unlink(vstr_str(tmp));
    errno = saved_errno;
fail:
    saved_errno = errno;
    vstr_free(tmp);
    errno = saved_errno;
    return -1;
}

/* safe_file_read - read a whole file of at most max_len bytes */
char *safe_file_read(const char *path, size_t max_len, size_t *len_out)
{
    struct stat st;
    VSTR *buf;
    ssize_t count;
    size_t want;
    int fd;
    int saved_errno;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return NULL;
    if (fstat(fd, &st) < 0) {
        safe_file_close_keep_errno(fd);
        return NULL;
    }
    if (S_ISREG(st.st_mode) && (uintmax_t) st.st_size > max_len) {
        (void) close(fd);
        errno = EFBIG;
        return NULL;
    }

    /*
     * Read to end of file whatever the size said (files grow, pipes and
     * /proc have no size), but never keep more than max_len bytes.
     */
    buf = vstr_alloc(S_ISREG(st.st_mode) ? (size_t) st.st_size + 1
                                         : SAFE_FILE_READ_CHUNK);
    for (;;) {
        if (vstr_len(buf) > max_len) {
            errno = EFBIG;
            goto fail;
        }
        if (buf->cap == buf->len)
            vstr_reserve(buf, SAFE_FILE_READ_CHUNK);
        /* Room permitting, ask for one byte past the limit to notice it. */
        want = buf->cap - buf->len;
        if (max_len - buf->len < want)
            want = max_len - buf->len + 1;
        count = read(fd, buf->data + buf->len, want);
        if (count < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (count == 0)
            break;
        buf->len += (size_t) count;
    }
    buf->data[buf->len] = 0;
    (void) close(fd);
    if (len_out)
        *len_out = vstr_len(buf);
    return vstr_export(buf);

fail:
    saved_errno = errno;
    vstr_free(buf);
    (void) close(fd);
    errno = saved_errno;
    return NULL;
}
