/*
 * qfile - queue file records: the writer, the strict reader, in-place marks
 *
 * The format is documented in qfile.h. The writer buffers records; the
 * producer (qfile_create, qfile_commit, qfile_abort) is the one place that
 * makes a queue file durable and visible: write, fsync, rename, directory
 * fsync, in that order, with util/safe_file doing each. The reader trusts
 * nothing it reads: every length is checked against the limit and the file,
 * every record against its place, and the file must end in exactly one END.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qfile_reuse.h"
#include "safe_file.h"
#include "vstr.h"

#define QFILE_WRITE_BUF (64 * 1024)
#define QFILE_READ_BUF (64 * 1024)
#define QFILE_ATTR_NAME_MAX 64

struct QFILE_WRITER {
    int fd;
    VSTR *buf; /* records not yet written */
    off_t flushed; /* bytes already written */
    int error; /* sticky errno */
    off_t content_offset; /* 0 until the M record */
    long long content_size;
    int rcpt_count;
};

/* qfile_put_len - the 4-byte big-endian length */
static void qfile_put_len(unsigned char *hdr, size_t len)
{
    hdr[0] = (unsigned char) (len >> 24);
    hdr[1] = (unsigned char) (len >> 16);
    hdr[2] = (unsigned char) (len >> 8);
    hdr[3] = (unsigned char) len;
}

/* qfile_get_len - decode the 4-byte big-endian length */
static size_t qfile_get_len(const unsigned char *hdr)
{
    return ((size_t) hdr[0] << 24) | ((size_t) hdr[1] << 16) |
           ((size_t) hdr[2] << 8) | (size_t) hdr[3];
}

/* qfile_writer_flush - write out the buffer; records the first error */
static void qfile_writer_flush(QFILE_WRITER *writer)
{
    if (writer->error == 0 && vstr_len(writer->buf) > 0) {
        if (safe_file_write_all(writer->fd, vstr_str(writer->buf),
                                vstr_len(writer->buf)) < 0)
            writer->error = errno ? errno : EIO;
        else
            writer->flushed += (off_t) vstr_len(writer->buf);
    }
    vstr_reset(writer->buf);
}

/* qfile_size_text - format the S record data */
static void qfile_size_text(char *buf, size_t size, long long content_size,
                            long long content_offset, long long rcpt_count)
{
    int n = snprintf(buf, size, "%3d %15lld %15lld %15lld", QFILE_VERSION,
                     content_size, content_offset, rcpt_count);

    if (n != QFILE_SIZE_LEN)
        msg_panic("%s: size record is %d bytes, not %d", __func__, n,
                  QFILE_SIZE_LEN);
}

/* qfile_writer_alloc - start a queue file on fd (writes the S placeholder) */
QFILE_WRITER *qfile_writer_alloc(int fd)
{
    QFILE_WRITER *writer = mymalloc(sizeof(*writer));
    char size_text[QFILE_SIZE_LEN + 1];

    writer->fd = fd;
    writer->buf = vstr_alloc(QFILE_WRITE_BUF);
    writer->flushed = 0;
    writer->error = 0;
    writer->content_offset = 0;
    writer->content_size = 0;
    writer->rcpt_count = 0;
    qfile_size_text(size_text, sizeof(size_text), 0, 0, 0);
    qfile_put_rec(writer, QFILE_REC_SIZE, size_text, QFILE_SIZE_LEN);
    return writer;
}

/* qfile_writer_free - release the writer; fd stays open */
QFILE_WRITER *qfile_writer_free(QFILE_WRITER *writer)
{
    if (writer) {
        vstr_free(writer->buf);
        myfree(writer);
    }
    return NULL;
}

/* qfile_put_rec - append one raw record */
void qfile_put_rec(QFILE_WRITER *writer, int type, const void *data, size_t len)
{
    unsigned char hdr[QFILE_HDR_LEN];

    if (len > QFILE_REC_MAX)
        msg_panic("%s: record of %zu bytes", __func__, len);
    if (writer->error)
        return;
    hdr[0] = (unsigned char) type;
    qfile_put_len(hdr + 1, len);
    vstr_ncat(writer->buf, (const char *) hdr, sizeof(hdr));
    if (len > 0)
        vstr_ncat(writer->buf, data, len);
    if (vstr_len(writer->buf) >= QFILE_WRITE_BUF)
        qfile_writer_flush(writer);
}

/* qfile_put_time - the arrival time record */
void qfile_put_time(QFILE_WRITER *writer, const struct timeval *tv)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%lld.%06ld", (long long) tv->tv_sec,
                     (long) tv->tv_usec);

    if (n < 0 || (size_t) n >= sizeof(buf))
        msg_panic("%s: time does not fit", __func__);
    qfile_put_rec(writer, QFILE_REC_TIME, buf, (size_t) n);
}

/* qfile_put_sender - the envelope sender record */
void qfile_put_sender(QFILE_WRITER *writer, const char *sender)
{
    qfile_put_rec(writer, QFILE_REC_FROM, sender, strlen(sender));
}

/* qfile_put_attr - one name=value attribute record */
void qfile_put_attr(QFILE_WRITER *writer, const char *name, const char *value)
{
    VSTR *buf = vstr_alloc(64);

    vstr_sprintf(buf, "%s=%s", name, value);
    qfile_put_rec(writer, QFILE_REC_ATTR, vstr_str(buf), vstr_len(buf));
    vstr_free(buf);
}

/* qfile_put_rcpt - one recipient record, not yet done */
void qfile_put_rcpt(QFILE_WRITER *writer, const char *address,
                    const char *orcpt, const char *notify)
{
    VSTR *buf = vstr_alloc(64);

    vstr_cat(buf, address);
    vstr_addch(buf, 0);
    vstr_cat(buf, orcpt ? orcpt : "");
    vstr_addch(buf, 0);
    vstr_cat(buf, notify ? notify : "");
    qfile_put_rec(writer, QFILE_REC_RCPT, vstr_str(buf), vstr_len(buf));
    writer->rcpt_count++;
    vstr_free(buf);
}

/* qfile_put_content_begin - the M record: envelope ends, content starts */
void qfile_put_content_begin(QFILE_WRITER *writer)
{
    qfile_put_rec(writer, QFILE_REC_MESG, "", 0);
    writer->content_offset = qfile_writer_offset(writer);
}

/* qfile_put_content - content bytes, split into records of at most
   QFILE_REC_MAX */
void qfile_put_content(QFILE_WRITER *writer, const void *data, size_t len)
{
    const char *cp = data;

    while (len > 0) {
        size_t part = len > QFILE_REC_MAX ? QFILE_REC_MAX : len;

        qfile_put_rec(writer, QFILE_REC_CONT, cp, part);
        writer->content_size += (long long) part;
        cp += part;
        len -= part;
    }
}

/* qfile_writer_end - write END, flush, rewrite the S record; 0, or -1 with
   errno (the sticky error) */
static int qfile_writer_end(QFILE_WRITER *writer)
{
    char size_text[QFILE_SIZE_LEN + 1];

    if (writer->content_offset == 0)
        msg_panic("%s: no content begin record", __func__);
    qfile_put_rec(writer, QFILE_REC_END, "", 0);
    qfile_writer_flush(writer);
    if (writer->error == 0) {
        qfile_size_text(size_text, sizeof(size_text), writer->content_size,
                        (long long) writer->content_offset,
                        (long long) writer->rcpt_count);
        if (safe_file_pwrite_all(writer->fd, size_text, QFILE_SIZE_LEN,
                                 QFILE_HDR_LEN) < 0)
            writer->error = errno ? errno : EIO;
    }
    if (writer->error) {
        errno = writer->error;
        return -1;
    }
    return 0;
}

/* qfile_writer_finish - write END, flush, rewrite the S record, fsync */
int qfile_writer_finish(QFILE_WRITER *writer)
{
    if (qfile_writer_end(writer) < 0)
        return -1;
    if (safe_file_fsync(writer->fd) < 0) {
        writer->error = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

/* qfile_writer_error - the sticky errno */
int qfile_writer_error(const QFILE_WRITER *writer)
{
    return writer->error;
}

/* qfile_writer_offset - bytes written so far, buffered included */
off_t qfile_writer_offset(const QFILE_WRITER *writer)
{
    return writer->flushed + (off_t) vstr_len(writer->buf);
}

/* qfile_writer_content_size - content bytes so far */
long long qfile_writer_content_size(const QFILE_WRITER *writer)
{
    return writer->content_size;
}

/* qfile_writer_rcpt_count - recipient records so far */
int qfile_writer_rcpt_count(const QFILE_WRITER *writer)
{
    return writer->rcpt_count;
}

/*
 * The producer.
 */
struct QFILE_OUT {
    int fd;
    char *path; /* the temporary name */
    int flags; /* QFILE_CREATE_* */
    QFILE_WRITER *writer;
    bool reused; /* a free file of reuse/ (qfile_reuse.h), locked */
    off_t old_size; /* ... and its length when taken */
};

/* qfile_create - create path exclusively and start its records */
QFILE_OUT *qfile_create(const char *path, mode_t mode, int flags)
{
    QFILE_OUT *out;
    int fd;

    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0)
        return NULL;
    out = mycalloc(1, sizeof(*out));
    out->fd = fd;
    out->path = mystrdup(path);
    out->flags = flags;
    out->writer = qfile_writer_alloc(fd);
    return out;
}

/* qfile_create_reuse - a free file of reuse, else qfile_create(path) */
QFILE_OUT *qfile_create_reuse(QFILE_REUSE *reuse, const char *path, mode_t mode)
{
    QFILE_OUT *out;
    VSTR *taken;
    off_t size;
    int fd;

    if (reuse == NULL || mode != QFILE_REUSE_MODE)
        return qfile_create(path, mode, 0);
    taken = vstr_alloc(100);
    if ((fd = qfile_reuse_take(reuse, taken, &size)) < 0) {
        vstr_free(taken);
        return qfile_create(path, mode, 0);
    }
    out = mycalloc(1, sizeof(*out));
    out->fd = fd;
    out->path = vstr_export(taken);
    out->reused = true;
    out->old_size = size;
    out->writer = qfile_writer_alloc(fd);
    return out;
}

/* qfile_out_writer - the writer for the records */
QFILE_WRITER *qfile_out_writer(QFILE_OUT *out)
{
    return out->writer;
}

/* qfile_out_path - the temporary name */
const char *qfile_out_path(const QFILE_OUT *out)
{
    return out->path;
}

/* qfile_out_free - close the file (errno kept) and release out */
static void qfile_out_free(QFILE_OUT *out)
{
    int saved_errno = errno;

    /*
     * Nothing to learn from close() here: after a successful fsync it has
     * nothing left to report, and after a failure the file is gone anyway.
     */
    (void) close(out->fd);
    qfile_writer_free(out->writer);
    myfree(out->path);
    myfree(out);
    errno = saved_errno;
}

/* qfile_remove - unlink path, errno kept */
static void qfile_remove(const char *path)
{
    int saved_errno = errno;

    if (unlink(path) < 0 && errno != ENOENT)
        msg_warn("remove %s: %m", path);
    errno = saved_errno;
}

/* qfile_dir_len - length of the directory part of path ("a/b/c": 3) */
static size_t qfile_dir_len(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? (size_t) (slash - path) : 0;
}

/* qfile_same_dir - do two paths name files in the same directory */
static bool qfile_same_dir(const char *a, const char *b)
{
    size_t len = qfile_dir_len(a);

    return len == qfile_dir_len(b) && strncmp(a, b, len) == 0;
}

/* qfile_commit_fail - item failed at step (errno says why): its temporary
   file goes */
static void qfile_commit_fail(QFILE_COMMIT *item, QFILE_STEP step)
{
    item->step = step;
    item->error = errno ? errno : EIO;
    /* A taken free file stays free (its content means nothing there). */
    if (!item->out->reused)
        qfile_remove(item->out->path);
}

/* qfile_in_dir - does path name a file directly in dir */
static bool qfile_in_dir(const char *path, const char *dir)
{
    size_t len = qfile_dir_len(path);

    return len == strlen(dir) && strncmp(path, dir, len) == 0;
}

/* qfile_sync_dir_of - fsync the directory of item's final name: through
   shared when that is its directory, else here (or syncfs) */
static int qfile_sync_dir_of(const QFILE_COMMIT *item, DIR_SYNC *shared)
{
    int sync_fd = (item->out->flags & QFILE_CREATE_SYNCFS) ? item->out->fd : -1;

    if (shared != NULL && sync_fd < 0 &&
        qfile_in_dir(item->path, dir_sync_dir(shared)))
        return dir_sync(shared);
    return safe_file_fsync_parent_or_fs(item->path, sync_fd);
}

/* qfile_cut_old - a reused file longer than its new records: cut what the
   old message left after them (before the fsync, which makes the length
   durable with the data) */
static int qfile_cut_old(QFILE_OUT *out)
{
    if (!out->reused || out->old_size <= out->writer->flushed)
        return 0;
    if (ftruncate(out->fd, out->writer->flushed) < 0)
        return -1;
    out->old_size = out->writer->flushed;
    return 0;
}

/* qfile_commit_group - write, fsync, rename each; one fsync per directory */
void qfile_commit_group(QFILE_COMMIT *items, size_t count)
{
    qfile_commit_group_shared(items, count, NULL);
}

/* qfile_commit_group_shared - the same, the directory fsync shared */
void qfile_commit_group_shared(QFILE_COMMIT *items, size_t count,
                               DIR_SYNC *shared)
{
    size_t i, j;

    /*
     * Each file: its records out, then its fsync, then its rename. In
     * passes, so that the disk sees the group's writes together: all the
     * files written out (and their writeback started), then each fsynced
     * (a later one may find blocks it shares with an earlier one, an inode
     * table block or the directory's, already written), then each renamed.
     */
    for (i = 0; i < count; i++) {
        QFILE_COMMIT *item = items + i;

        item->step = QFILE_STEP_NONE;
        item->error = 0;
        if (qfile_writer_end(item->out->writer) < 0 ||
            qfile_cut_old(item->out) < 0)
            qfile_commit_fail(item, QFILE_STEP_WRITE);
        else if (count > 1)
            safe_file_start_writeback(item->out->fd);
    }
    for (i = 0; i < count; i++)
        if (items[i].step == QFILE_STEP_NONE &&
            safe_file_fsync(items[i].out->fd) < 0)
            qfile_commit_fail(items + i, QFILE_STEP_FSYNC);
    for (i = 0; i < count; i++)
        if (items[i].step == QFILE_STEP_NONE &&
            rename(items[i].out->path, items[i].path) < 0)
            qfile_commit_fail(items + i, QFILE_STEP_RENAME);

    /*
     * One directory fsync covers every rename into that directory done
     * before it. When it fails, none of them is known to be durable: take
     * each back, so that each client's retry is no duplicate.
     */
    for (i = 0; i < count; i++) {
        QFILE_COMMIT *item = items + i;
        int err;

        if (item->step != QFILE_STEP_NONE || item->synced)
            continue;
        if (qfile_sync_dir_of(item, shared) == 0) {
            for (j = i; j < count; j++)
                if (items[j].step == QFILE_STEP_NONE &&
                    qfile_same_dir(item->path, items[j].path))
                    items[j].synced = true;
            continue;
        }
        err = errno ? errno : EIO;
        for (j = i; j < count; j++) {
            if (items[j].step == QFILE_STEP_NONE && !items[j].synced &&
                qfile_same_dir(item->path, items[j].path)) {
                items[j].step = QFILE_STEP_DIR_FSYNC;
                items[j].error = err;
                qfile_remove(items[j].path);
            }
        }
    }
    for (i = 0; i < count; i++) {
        qfile_out_free(items[i].out);
        items[i].out = NULL;
        items[i].synced = false;
    }
}

/* qfile_commit - write, fsync, rename, fsync the directory */
int qfile_commit(QFILE_OUT *out, const char *path, QFILE_STEP *failed_step)
{
    QFILE_COMMIT item = {.out = out, .path = path};

    qfile_commit_group(&item, 1);
    if (failed_step)
        *failed_step = item.step;
    if (item.step == QFILE_STEP_NONE)
        return 0;
    errno = item.error;
    return -1;
}

/* qfile_abort - close and remove the temporary file */
QFILE_OUT *qfile_abort(QFILE_OUT *out)
{
    if (out) {
        if (!out->reused)
            qfile_remove(out->path);
        qfile_out_free(out);
    }
    return NULL;
}

/* qfile_out_reopen - flush the writer; a read descriptor on the file */
static int qfile_out_reopen(QFILE_OUT *out)
{
    int fd;

    if (out->writer->content_offset == 0)
        msg_panic("%s: no content begin record", __func__);
    qfile_writer_flush(out->writer);
    if (out->writer->error) {
        errno = out->writer->error;
        return -1;
    }
    if ((fd = open(out->path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    return fd;
}

/* qfile_pread_all - read exactly len bytes at offset; -1 with errno (EIO
   for a short file) */
static int qfile_pread_all(int fd, void *buf, size_t len, off_t offset)
{
    char *cp = buf;

    while (len > 0) {
        ssize_t n = pread(fd, cp, len, offset);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        cp += n;
        len -= (size_t) n;
        offset += n;
    }
    return 0;
}

/* qfile_out_content - the content so far, record by record, to fn */
int qfile_out_content(QFILE_OUT *out, QFILE_CONTENT_FN fn, void *ctx)
{
    int fd = qfile_out_reopen(out);
    VSTR *buf;
    off_t offset;
    int ret = 0;

    if (fd < 0)
        return -1;
    buf = vstr_alloc(QFILE_READ_BUF);
    for (offset = out->writer->content_offset;
         ret == 0 && offset < out->writer->flushed;) {
        unsigned char hdr[QFILE_HDR_LEN];
        size_t len;

        if (qfile_pread_all(fd, hdr, sizeof(hdr), offset) < 0) {
            ret = -1;
            break;
        }
        len = qfile_get_len(hdr + 1);
        if (hdr[0] != QFILE_REC_CONT || len > QFILE_REC_MAX) {
            errno = EIO; /* we wrote it: only a damaged disk gets here */
            ret = -1;
            break;
        }
        vstr_reset(buf);
        vstr_reserve(buf, len);
        if (qfile_pread_all(fd, vstr_str(buf), len, offset + QFILE_HDR_LEN) <
            0) {
            ret = -1;
            break;
        }
        offset += QFILE_HDR_LEN + (off_t) len;
        if (len > 0)
            ret = fn(ctx, vstr_str(buf), len);
    }
    vstr_free(buf);
    (void) close(fd);
    return ret;
}

/* qfile_copy_range - copy [from, to) of rfd to the end of wfd */
static int qfile_copy_range(int rfd, int wfd, off_t from, off_t to)
{
    char buf[QFILE_READ_BUF];

    while (from < to) {
        size_t part = (size_t) (to - from) > sizeof(buf) ? sizeof(buf)
                                                         : (size_t) (to - from);

        if (qfile_pread_all(rfd, buf, part, from) < 0 ||
            safe_file_write_all(wfd, buf, part) < 0)
            return -1;
        from += (off_t) part;
    }
    return 0;
}

/* qfile_copy_open - create the copy of out at path (its name and "+"),
   locked like out when out is a reused file: a "+" file left by a holder
   of that free file that died is removed first (only the holder of its
   lock makes one) */
static int qfile_copy_open(const QFILE_OUT *out, const char *path, mode_t mode)
{
    int fd;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 && errno == EEXIST && out->reused && unlink(path) == 0)
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0 && out->reused && qfile_reuse_lock(fd) < 0) {
        int saved_errno = errno;

        (void) close(fd);
        (void) unlink(path);
        errno = saved_errno;
        return -1;
    }
    return fd;
}

/* qfile_out_prepend_content - a C record before the content so far */
int qfile_out_prepend_content(QFILE_OUT *out, const void *data, size_t len)
{
    QFILE_WRITER *writer = out->writer;
    unsigned char hdr[QFILE_HDR_LEN];
    VSTR *new_path;
    struct stat st;
    int rfd;
    int wfd = -1;
    int saved;

    if (len > QFILE_REC_MAX)
        msg_panic("%s: record of %zu bytes", __func__, len);
    if ((rfd = qfile_out_reopen(out)) < 0)
        goto fail;
    new_path = vstr_alloc(100);
    vstr_sprintf(new_path, "%s+", out->path);
    hdr[0] = QFILE_REC_CONT;
    qfile_put_len(hdr + 1, len);
    if (fstat(out->fd, &st) < 0 ||
        (wfd = qfile_copy_open(out, vstr_str(new_path), st.st_mode & 07777)) <
            0 ||
        qfile_copy_range(rfd, wfd, 0, writer->content_offset) < 0 ||
        safe_file_write_all(wfd, hdr, sizeof(hdr)) < 0 ||
        (len > 0 && safe_file_write_all(wfd, data, len) < 0) ||
        qfile_copy_range(rfd, wfd, writer->content_offset, writer->flushed) <
            0 ||
        rename(vstr_str(new_path), out->path) < 0) {
        saved = errno;
        if (wfd >= 0) {
            (void) close(wfd);
            qfile_remove(vstr_str(new_path));
        }
        (void) close(rfd);
        vstr_free(new_path);
        errno = saved;
        goto fail;
    }
    (void) close(rfd);
    vstr_free(new_path);
    (void) close(out->fd);
    out->fd = wfd;
    out->old_size = 0; /* a new file: nothing old to cut */
    writer->fd = wfd;
    writer->flushed += QFILE_HDR_LEN + (off_t) len;
    writer->content_size += (long long) len;
    return 0;

fail:
    if (writer->error == 0)
        writer->error = errno ? errno : EIO;
    errno = writer->error;
    return -1;
}

/* qfile_out_set_attr - replace (or add) one A record of the envelope */
int qfile_out_set_attr(QFILE_OUT *out, const char *name, const char *value)
{
    QFILE_WRITER *writer = out->writer;
    size_t name_len = strlen(name);
    VSTR *rec = vstr_alloc(64);
    VSTR *new_path = NULL;
    unsigned char hdr[QFILE_HDR_LEN];
    off_t mesg_at, old_at, old_size = 0, offset;
    struct stat st;
    off_t delta;
    int rfd;
    int wfd = -1;
    int saved;

    vstr_sprintf(rec, "%s=%s", name, value);
    if (vstr_len(rec) > QFILE_REC_MAX)
        msg_panic("%s: record of %zu bytes", __func__, vstr_len(rec));
    if ((rfd = qfile_out_reopen(out)) < 0) {
        vstr_free(rec);
        goto fail;
    }
    /* The M record is empty and just before the content. */
    mesg_at = writer->content_offset - QFILE_HDR_LEN;
    old_at = mesg_at;
    for (offset = QFILE_HDR_LEN + QFILE_SIZE_LEN; offset < mesg_at;) {
        char head[QFILE_HDR_LEN + 65];
        size_t len;

        if (qfile_pread_all(rfd, hdr, sizeof(hdr), offset) < 0)
            goto fail_close;
        len = qfile_get_len(hdr + 1);
        if (hdr[0] == QFILE_REC_ATTR && len > name_len && name_len <= 64 &&
            qfile_pread_all(rfd, head, name_len + 1, offset + QFILE_HDR_LEN) ==
                0 &&
            memcmp(head, name, name_len) == 0 && head[name_len] == '=') {
            old_at = offset;
            old_size = QFILE_HDR_LEN + (off_t) len;
            break;
        }
        offset += QFILE_HDR_LEN + (off_t) len;
    }
    hdr[0] = QFILE_REC_ATTR;
    qfile_put_len(hdr + 1, vstr_len(rec));
    new_path = vstr_alloc(100);
    vstr_sprintf(new_path, "%s+", out->path);
    if (fstat(out->fd, &st) < 0 ||
        (wfd = qfile_copy_open(out, vstr_str(new_path), st.st_mode & 07777)) <
            0 ||
        qfile_copy_range(rfd, wfd, 0, old_at) < 0 ||
        safe_file_write_all(wfd, hdr, sizeof(hdr)) < 0 ||
        safe_file_write_all(wfd, vstr_str(rec), vstr_len(rec)) < 0 ||
        qfile_copy_range(rfd, wfd, old_at + old_size, writer->flushed) < 0 ||
        rename(vstr_str(new_path), out->path) < 0) {
        saved = errno;
        if (wfd >= 0) {
            (void) close(wfd);
            qfile_remove(vstr_str(new_path));
        }
        errno = saved;
        goto fail_close;
    }
    (void) close(rfd);
    vstr_free(new_path);
    (void) close(out->fd);
    out->fd = wfd;
    out->old_size = 0; /* a new file: nothing old to cut */
    writer->fd = wfd;
    delta = QFILE_HDR_LEN + (off_t) vstr_len(rec) - old_size;
    writer->flushed += delta;
    writer->content_offset += delta;
    vstr_free(rec);
    return 0;

fail_close:
    saved = errno;
    (void) close(rfd);
    if (new_path)
        vstr_free(new_path);
    vstr_free(rec);
    errno = saved;
fail:
    if (writer->error == 0)
        writer->error = errno ? errno : EIO;
    errno = writer->error;
    return -1;
}

/* qfile_step_name - a step's name for log lines */
const char *qfile_step_name(QFILE_STEP step)
{
    switch (step) {
    case QFILE_STEP_NONE:
        return "none";
    case QFILE_STEP_WRITE:
        return "write";
    case QFILE_STEP_FSYNC:
        return "fsync";
    case QFILE_STEP_RENAME:
        return "rename";
    case QFILE_STEP_DIR_FSYNC:
        return "directory fsync";
    }
    return "unknown step";
}

/*
 * The reader.
 */
typedef enum QFILE_READ_STATE {
    QFILE_RS_SIZE, /* expect S */
    QFILE_RS_ENV, /* envelope records or M */
    QFILE_RS_CONTENT, /* C records or E */
    QFILE_RS_DONE, /* END seen, file whole */
    QFILE_RS_ERROR,
} QFILE_READ_STATE;

struct QFILE_READER {
    int fd;
    char *buf; /* buf[pos..len) unread */
    size_t pos;
    size_t len;
    size_t cap;
    bool eof;
    bool short_read; /* the last read() gave less than asked */
    bool short_is_eof; /* fd is a regular file: a short read met its end */
    off_t buf_offset; /* file offset of buf[0] */
    VSTR *rec_data; /* the current record, NUL added */
    VSTR *error; /* the reason, once failed */
    QFILE_READ_STATE state;
    bool seen_time;
    bool seen_from;
    long long rcpt_count;
    long long content_size;
    off_t content_offset;
    long long size_content; /* from the S record */
    long long size_offset;
    long long size_rcpts;
};

/* qfile_reader_alloc_at - read the queue file on fd, now at offset start */
static QFILE_READER *qfile_reader_alloc_at(int fd, off_t start)
{
    QFILE_READER *reader = mycalloc(1, sizeof(*reader));

    reader->fd = fd;
    reader->cap = QFILE_READ_BUF;
    reader->buf = mymalloc(reader->cap);
    reader->buf_offset = start < 0 ? 0 : start;
    reader->rec_data = vstr_alloc(256);
    reader->error = vstr_alloc(64);
    reader->state = QFILE_RS_SIZE;
    return reader;
}

/* qfile_reader_alloc - read the queue file on fd from its current offset */
QFILE_READER *qfile_reader_alloc(int fd)
{
    return qfile_reader_alloc_at(fd, lseek(fd, 0, SEEK_CUR));
}

/* qfile_reader_free - release the reader; fd stays open */
QFILE_READER *qfile_reader_free(QFILE_READER *reader)
{
    if (reader) {
        myfree(reader->buf);
        vstr_free(reader->rec_data);
        vstr_free(reader->error);
        myfree(reader);
    }
    return NULL;
}

/* qfile_fill - make at least want bytes available unless EOF; -1 on a read
   error */
static int qfile_fill(QFILE_READER *reader, size_t want)
{
    if (reader->len - reader->pos >= want)
        return 0;
    if (reader->pos > 0) {
        memmove(reader->buf, reader->buf + reader->pos,
                reader->len - reader->pos);
        reader->len -= reader->pos;
        reader->buf_offset += (off_t) reader->pos;
        reader->pos = 0;
    }
    if (want > reader->cap) {
        reader->cap = want;
        reader->buf = myrealloc(reader->buf, reader->cap);
    }
    while (reader->len < want && !reader->eof) {
        ssize_t n = read(reader->fd, reader->buf + reader->len,
                         reader->cap - reader->len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        reader->short_read = (size_t) n < reader->cap - reader->len;
        if (n == 0)
            reader->eof = true;
        else
            reader->len += (size_t) n;
    }
    return 0;
}

/* qfile_fail - enter the error state with a reason */
static int qfile_fail(QFILE_READER *reader, off_t offset, const char *fmt, ...)
    SLUICE_PRINTF(3, 4);

static int qfile_fail(QFILE_READER *reader, off_t offset, const char *fmt, ...)
{
    va_list ap;

    vstr_sprintf(reader->error, "offset %lld: ", (long long) offset);
    va_start(ap, fmt);
    vstr_vsprintf_append(reader->error, fmt, ap);
    va_end(ap);
    reader->state = QFILE_RS_ERROR;
    return -1;
}

/* qfile_parse_num - a decimal field, leading spaces allowed; -1 if bad */
static long long qfile_parse_num(const char *cp, size_t len)
{
    long long val = 0;
    size_t i = 0;

    while (i < len && cp[i] == ' ')
        i++;
    if (i == len)
        return -1;
    for (; i < len; i++) {
        if (cp[i] < '0' || cp[i] > '9')
            return -1;
        if (__builtin_mul_overflow(val, 10, &val) ||
            __builtin_add_overflow(val, cp[i] - '0', &val))
            return -1;
    }
    return val;
}

/* qfile_check_size - parse and check the S record data */
static int qfile_check_size(QFILE_READER *reader, const char *data, size_t len,
                            off_t offset)
{
    long long version;

    if (len != QFILE_SIZE_LEN || data[3] != ' ' || data[19] != ' ' ||
        data[35] != ' ')
        return qfile_fail(reader, offset, "malformed size record");
    version = qfile_parse_num(data, 3);
    reader->size_content = qfile_parse_num(data + 4, 15);
    reader->size_offset = qfile_parse_num(data + 20, 15);
    reader->size_rcpts = qfile_parse_num(data + 36, 15);
    if (version < 0 || reader->size_content < 0 || reader->size_offset < 0 ||
        reader->size_rcpts < 0)
        return qfile_fail(reader, offset, "malformed size record");
    if (version != QFILE_VERSION)
        return qfile_fail(reader, offset, "unsupported queue file version %lld",
                          version);
    return 0;
}

/* qfile_check_time - "SECONDS.MICROSECONDS" */
static bool qfile_check_time(const char *data, size_t len)
{
    const char *dot = memchr(data, '.', len);
    size_t sec_len, usec_len;

    if (dot == NULL)
        return false;
    sec_len = (size_t) (dot - data);
    usec_len = len - sec_len - 1;
    return sec_len >= 1 && sec_len <= 18 && usec_len >= 1 && usec_len <= 6 &&
           qfile_parse_num(data, sec_len) >= 0 && data[0] != ' ' &&
           qfile_parse_num(dot + 1, usec_len) >= 0 && dot[1] != ' ';
}

/* qfile_check_attr - "name=value", name [a-z0-9_]{1,64}, no NUL */
static bool qfile_check_attr(const char *data, size_t len)
{
    size_t i;

    if (memchr(data, 0, len))
        return false;
    for (i = 0; i < len && data[i] != '='; i++) {
        char ch = data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return false;
    }
    return i >= 1 && i <= QFILE_ATTR_NAME_MAX && i < len;
}

/* qfile_check_rcpt - "address\0orcpt\0notify", address not empty */
static bool qfile_check_rcpt(const char *data, size_t len)
{
    size_t nuls = 0;

    for (size_t i = 0; i < len; i++)
        if (data[i] == 0)
            nuls++;
    return nuls == 2 && len > 2 && data[0] != 0;
}

/* qfile_check_end - END: the S record must agree and nothing may follow */
static int qfile_check_end(QFILE_READER *reader, off_t offset)
{
    if (reader->size_content != reader->content_size)
        return qfile_fail(reader, offset,
                          "size record says %lld content bytes, found %lld",
                          reader->size_content, reader->content_size);
    if (reader->size_offset != (long long) reader->content_offset)
        return qfile_fail(
            reader, offset, "size record says content at %lld, found at %lld",
            reader->size_offset, (long long) reader->content_offset);
    if (reader->size_rcpts != reader->rcpt_count)
        return qfile_fail(reader, offset,
                          "size record says %lld recipients, found %lld",
                          reader->size_rcpts, reader->rcpt_count);
    /*
     * Nothing may follow END. A read of a regular file that gave less than
     * asked ended at the file's end: when END is the last byte it brought,
     * there is nothing after it, and the read that would find only EOF is
     * not needed. (A short read for another reason, a signal, can only make
     * this check miss trailing bytes: the records read are whole either way.)
     */
    if (reader->len == reader->pos && reader->short_read &&
        reader->short_is_eof) {
        reader->state = QFILE_RS_DONE;
        return 0;
    }
    if (qfile_fill(reader, 1) < 0)
        return qfile_fail(reader, offset, "read: %s", strerror(errno));
    if (reader->len > reader->pos)
        return qfile_fail(reader, offset + QFILE_HDR_LEN,
                          "data after END record");
    reader->state = QFILE_RS_DONE;
    return 0;
}

/* qfile_read_rec - the next record, strictly checked */
int qfile_read_rec(QFILE_READER *reader, QFILE_REC *rec, VSTR *why)
{
    const unsigned char *hdr;
    off_t offset;
    size_t len;
    int type;
    const char *data;

    if (reader->state == QFILE_RS_DONE)
        return 0;
    if (reader->state == QFILE_RS_ERROR)
        goto failed;

    offset = reader->buf_offset + (off_t) reader->pos;
    if (qfile_fill(reader, QFILE_HDR_LEN) < 0) {
        qfile_fail(reader, offset, "read: %s", strerror(errno));
        goto failed;
    }
    if (reader->len - reader->pos < QFILE_HDR_LEN) {
        if (reader->len == reader->pos)
            qfile_fail(reader, offset,
                       reader->state == QFILE_RS_SIZE ? "empty queue file"
                                                      : "missing END record");
        else
            qfile_fail(reader, offset, "truncated record header");
        goto failed;
    }
    hdr = (const unsigned char *) reader->buf + reader->pos;
    type = hdr[0];
    len = qfile_get_len(hdr + 1);
    if (strchr("STFARDMCE", type) == NULL || type == 0) {
        qfile_fail(reader, offset, "unknown record type 0x%02x", type);
        goto failed;
    }
    if (len > QFILE_REC_MAX) {
        qfile_fail(reader, offset, "record length %zu over the limit", len);
        goto failed;
    }
    if (qfile_fill(reader, QFILE_HDR_LEN + len) < 0) {
        qfile_fail(reader, offset, "read: %s", strerror(errno));
        goto failed;
    }
    if (reader->len - reader->pos < QFILE_HDR_LEN + len) {
        qfile_fail(reader, offset, "truncated record (%zu bytes, type %c)", len,
                   type);
        goto failed;
    }
    vstr_ncpy(reader->rec_data, reader->buf + reader->pos + QFILE_HDR_LEN, len);
    reader->pos += QFILE_HDR_LEN + len;
    data = vstr_str(reader->rec_data);

    /* Each record in its place. */
    switch (reader->state) {
    case QFILE_RS_SIZE:
        if (type != QFILE_REC_SIZE) {
            qfile_fail(reader, offset, "first record is not a size record");
            goto failed;
        }
        if (qfile_check_size(reader, data, len, offset) < 0)
            goto failed;
        reader->state = QFILE_RS_ENV;
        break;
    case QFILE_RS_ENV:
        switch (type) {
        case QFILE_REC_TIME:
            if (reader->seen_time || !qfile_check_time(data, len)) {
                qfile_fail(reader, offset, "bad or repeated time record");
                goto failed;
            }
            reader->seen_time = true;
            break;
        case QFILE_REC_FROM:
            if (reader->seen_from || memchr(data, 0, len)) {
                qfile_fail(reader, offset, "bad or repeated sender record");
                goto failed;
            }
            reader->seen_from = true;
            break;
        case QFILE_REC_ATTR:
            if (!qfile_check_attr(data, len)) {
                qfile_fail(reader, offset, "malformed attribute record");
                goto failed;
            }
            break;
        case QFILE_REC_RCPT:
        case QFILE_REC_DONE:
            if (!qfile_check_rcpt(data, len)) {
                qfile_fail(reader, offset, "malformed recipient record");
                goto failed;
            }
            reader->rcpt_count++;
            break;
        case QFILE_REC_MESG:
            if (len != 0 || !reader->seen_time || !reader->seen_from) {
                qfile_fail(reader, offset,
                           len ? "malformed message record"
                               : "time or sender record missing");
                goto failed;
            }
            reader->content_offset = offset + QFILE_HDR_LEN;
            reader->state = QFILE_RS_CONTENT;
            break;
        default:
            qfile_fail(reader, offset, "record type %c in the envelope", type);
            goto failed;
        }
        break;
    case QFILE_RS_CONTENT:
        if (type == QFILE_REC_CONT) {
            reader->content_size += (long long) len;
        } else if (type == QFILE_REC_END && len == 0) {
            if (qfile_check_end(reader, offset) < 0)
                goto failed;
            return 0;
        } else {
            qfile_fail(reader, offset, "record type %c in the content", type);
            goto failed;
        }
        break;
    default:
        msg_panic("%s: bad state %d", __func__, (int) reader->state);
    }
    rec->type = type;
    rec->data = data;
    rec->len = len;
    rec->offset = offset;
    return 1;

failed:
    if (why)
        vstr_cpy(why, vstr_str(reader->error));
    return -1;
}

/* qfile_info_read_from - read and check the whole file, fd at start;
   regular: fd is a queue file open()ed by the caller */
static QFILE_INFO *qfile_info_read_from(int fd, off_t start, bool regular,
                                        VSTR *why)
{
    QFILE_READER *reader = qfile_reader_alloc_at(fd, start);
    QFILE_INFO *info = mycalloc(1, sizeof(*info));
    size_t attr_cap = 0, rcpt_cap = 0;
    QFILE_REC rec;
    int status;

    reader->short_is_eof = regular;
    info->version = QFILE_VERSION;
    while ((status = qfile_read_rec(reader, &rec, why)) > 0) {
        switch (rec.type) {
        case QFILE_REC_TIME: {
            const char *dot = strchr(rec.data, '.');
            long long usec = qfile_parse_num(dot + 1, strlen(dot + 1));

            for (size_t n = strlen(dot + 1); n < 6; n++)
                usec *= 10;
            info->arrival.tv_sec =
                (time_t) qfile_parse_num(rec.data, (size_t) (dot - rec.data));
            info->arrival.tv_usec = (suseconds_t) usec;
            break;
        }
        case QFILE_REC_FROM:
            info->sender = mystrdup(rec.data);
            break;
        case QFILE_REC_ATTR: {
            const char *eq = strchr(rec.data, '=');

            if (info->attr_count == attr_cap) {
                attr_cap = attr_cap ? attr_cap * 2 : 8;
                info->attrs = myrealloc_array(info->attrs, attr_cap,
                                              sizeof(*info->attrs));
            }
            info->attrs[info->attr_count].name =
                mystrndup(rec.data, (size_t) (eq - rec.data));
            info->attrs[info->attr_count].value = mystrdup(eq + 1);
            info->attr_count++;
            break;
        }
        case QFILE_REC_RCPT:
        case QFILE_REC_DONE: {
            const char *orcpt = rec.data + strlen(rec.data) + 1;
            const char *notify = orcpt + strlen(orcpt) + 1;
            QFILE_RCPT *rcpt;

            if (info->rcpt_count == rcpt_cap) {
                rcpt_cap = rcpt_cap ? rcpt_cap * 2 : 8;
                info->rcpts = myrealloc_array(info->rcpts, rcpt_cap,
                                              sizeof(*info->rcpts));
            }
            rcpt = info->rcpts + info->rcpt_count++;
            rcpt->address = mystrdup(rec.data);
            rcpt->orcpt = mystrdup(orcpt);
            rcpt->notify = mystrdup(notify);
            rcpt->done = rec.type == QFILE_REC_DONE;
            rcpt->offset = rec.offset;
            if (rcpt->done)
                info->rcpt_done++;
            break;
        }
        case QFILE_REC_MESG:
            info->content_offset = rec.offset + QFILE_HDR_LEN;
            break;
        case QFILE_REC_CONT:
            info->content_size += (long long) rec.len;
            break;
        default:
            break;
        }
    }
    reader = qfile_reader_free(reader);
    if (status < 0)
        return qfile_info_free(info);
    return info;
}

/* qfile_info_read - read and check the whole file from fd's offset */
QFILE_INFO *qfile_info_read(int fd, VSTR *why)
{
    return qfile_info_read_from(fd, lseek(fd, 0, SEEK_CUR), false, why);
}

/* qfile_info_read_new - the same for a queue file just open()ed: offset 0,
   and a regular file (a short read is its end) */
QFILE_INFO *qfile_info_read_new(int fd, VSTR *why)
{
    return qfile_info_read_from(fd, 0, true, why);
}

/* qfile_info_free - release what qfile_info_read() returned */
QFILE_INFO *qfile_info_free(QFILE_INFO *info)
{
    if (info) {
        for (size_t i = 0; i < info->attr_count; i++) {
            myfree(info->attrs[i].name);
            myfree(info->attrs[i].value);
        }
        for (size_t i = 0; i < info->rcpt_count; i++) {
            myfree(info->rcpts[i].address);
            myfree(info->rcpts[i].orcpt);
            myfree(info->rcpts[i].notify);
        }
        myfree(info->attrs);
        myfree(info->rcpts);
        myfree(info->sender);
        myfree(info);
    }
    return NULL;
}

/* qfile_info_attr - the value of attribute name, NULL when absent */
const char *qfile_info_attr(const QFILE_INFO *info, const char *name)
{
    for (size_t i = 0; i < info->attr_count; i++)
        if (strcmp(info->attrs[i].name, name) == 0)
            return info->attrs[i].value;
    return NULL;
}

/* qfile_mark_done - turn the R record at offset into D in place */
int qfile_mark_done(int fd, off_t offset, VSTR *why)
{
    unsigned char hdr[QFILE_HDR_LEN];
    ssize_t n;
    char done = QFILE_REC_DONE;

    do {
        n = pread(fd, hdr, sizeof(hdr), offset);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        vstr_sprintf(why, "read at offset %lld: %m", (long long) offset);
        return -1;
    }
    if (n != (ssize_t) sizeof(hdr) ||
        (hdr[0] != QFILE_REC_RCPT && hdr[0] != QFILE_REC_DONE)) {
        vstr_sprintf(why, "offset %lld: not a recipient record",
                     (long long) offset);
        return -1;
    }
    if (hdr[0] == QFILE_REC_DONE)
        return 0;
    if (safe_file_pwrite_all(fd, &done, 1, offset) < 0 ||
        safe_file_fsync(fd) < 0) {
        vstr_sprintf(why, "mark done at offset %lld: %m", (long long) offset);
        return -1;
    }
    return 0;
}

/* qfile_dump_text - print text, showing NUL and control bytes escaped */
static void qfile_dump_text(FILE *out, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) data[i];

        if (ch < 0x20 || ch == 0x7f)
            fprintf(out, "\\x%02x", ch);
        else
            fputc(ch, out);
    }
}

/* qfile_dump - print the queue file in readable form, like postcat */
int qfile_dump(int fd, FILE *out)
{
    QFILE_READER *reader = qfile_reader_alloc(fd);
    VSTR *why = vstr_alloc(64);
    QFILE_REC rec;
    int status;
    bool at_line_start = true;

    fprintf(out, "*** ENVELOPE RECORDS ***\n");
    while ((status = qfile_read_rec(reader, &rec, why)) > 0) {
        switch (rec.type) {
        case QFILE_REC_SIZE:
            fprintf(out, "message_size: %.*s\n", (int) rec.len, rec.data);
            break;
        case QFILE_REC_TIME: {
            time_t when = (time_t) strtoll(rec.data, NULL, 10);
            char tbuf[64];
            struct tm tm;

            if (localtime_r(&when, &tm) &&
                strftime(tbuf, sizeof(tbuf), "%a %b %e %H:%M:%S %Y", &tm))
                fprintf(out, "message_arrival_time: %s\n", tbuf);
            else
                fprintf(out, "message_arrival_time: %s\n", rec.data);
            break;
        }
        case QFILE_REC_FROM:
            fprintf(out, "sender: ");
            qfile_dump_text(out, rec.data, rec.len);
            fputc('\n', out);
            break;
        case QFILE_REC_ATTR:
            fprintf(out, "named_attribute: ");
            qfile_dump_text(out, rec.data, rec.len);
            fputc('\n', out);
            break;
        case QFILE_REC_RCPT:
        case QFILE_REC_DONE: {
            const char *orcpt = rec.data + strlen(rec.data) + 1;
            const char *notify = orcpt + strlen(orcpt) + 1;

            fprintf(out, "%s: ",
                    rec.type == QFILE_REC_RCPT ? "recipient"
                                               : "done_recipient");
            qfile_dump_text(out, rec.data, strlen(rec.data));
            if (*orcpt) {
                fprintf(out, " orcpt=");
                qfile_dump_text(out, orcpt, strlen(orcpt));
            }
            if (*notify) {
                fprintf(out, " notify=");
                qfile_dump_text(out, notify, strlen(notify));
            }
            fputc('\n', out);
            break;
        }
        case QFILE_REC_MESG:
            fprintf(out, "*** MESSAGE CONTENTS ***\n");
            break;
        case QFILE_REC_CONT:
            fwrite(rec.data, 1, rec.len, out);
            if (rec.len > 0)
                at_line_start = rec.data[rec.len - 1] == '\n';
            break;
        default:
            break;
        }
    }
    if (!at_line_start)
        fputc('\n', out);
    if (status == 0)
        fprintf(out, "*** MESSAGE FILE END ***\n");
    else
        fprintf(out, "*** CORRUPT QUEUE FILE: %s ***\n", vstr_str(why));
    fflush(out);
    qfile_reader_free(reader);
    vstr_free(why);
    return status;
}
