/*
 * local_file - read a .forward or :include: file that is safe to obey
 *
 * Such a file names commands and files that run or are written with the
 * privileges of its owner, so it is obeyed only when it is a regular file
 * owned by the user it is read for (or by root) and not group- or
 * world-writable. It is opened O_NONBLOCK, so a FIFO or a device in its
 * place cannot block the delivery agent, and checked with fstat on the
 * descriptor that is then read (no race with a rename).
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "local.h"
#include "mymalloc.h"
#include "vstr.h"

#define LOCAL_FILE_CHUNK 8192

/* local_file_read - see local.h */
char *local_file_read(const char *path, uid_t owner, size_t max_len,
                      LOCAL_FILE_STAT *why_stat, VSTR *why)
{
    VSTR *buf;
    struct stat st;
    char *data;
    int fd;

    vstr_reset(why);
    *why_stat = LOCAL_FILE_ERROR;
    if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            *why_stat = LOCAL_FILE_MISSING;
        vstr_sprintf(why, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0) {
        vstr_sprintf(why, "cannot stat %s: %s", path, strerror(errno));
        (void) close(fd);
        return NULL;
    }
    *why_stat = LOCAL_FILE_UNSAFE;
    if (!S_ISREG(st.st_mode)) {
        vstr_sprintf(why, "%s is not a regular file", path);
    } else if (st.st_uid != owner && st.st_uid != 0) {
        vstr_sprintf(why, "%s is owned by uid %ld, not by uid %ld or root",
                     path, (long) st.st_uid, (long) owner);
    } else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        vstr_sprintf(why, "%s is group or world writable (mode %04o)", path,
                     (unsigned) (st.st_mode & 07777));
    } else if ((uintmax_t) st.st_size > max_len) {
        *why_stat = LOCAL_FILE_ERROR;
        vstr_sprintf(why, "%s is larger than %zu bytes", path, max_len);
    } else {
        *why_stat = LOCAL_FILE_OK;
    }
    if (*why_stat != LOCAL_FILE_OK) {
        (void) close(fd);
        return NULL;
    }
    buf = vstr_alloc((size_t) st.st_size + 1);
    for (;;) {
        char chunk[LOCAL_FILE_CHUNK];
        ssize_t got = read(fd, chunk, sizeof(chunk));

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            *why_stat = LOCAL_FILE_ERROR;
            vstr_sprintf(why, "cannot read %s: %s", path, strerror(errno));
            break;
        }
        if (got == 0)
            break;
        if (vstr_len(buf) + (size_t) got > max_len) {
            *why_stat = LOCAL_FILE_ERROR;
            vstr_sprintf(why, "%s is larger than %zu bytes", path, max_len);
            break;
        }
        vstr_ncat(buf, chunk, (size_t) got);
    }
    (void) close(fd);
    if (*why_stat != LOCAL_FILE_OK) {
        vstr_free(buf);
        return NULL;
    }
    data = mystrdup(vstr_str(buf)); /* a NUL in the file ends it */
    vstr_free(buf);
    return data;
}
