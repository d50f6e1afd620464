/*
 * dsn_log - per-message logs of recipient results: defer/ and bounce/
 *
 * The format and the rules are in dsn_log.h. Records are attribute lists
 * appended with one write(2) each to a file opened O_APPEND, so records of
 * one writer never interleave; qmgr is the only writer. A reader stops at
 * a record cut short by a crash mid-append and ignores it: the writer
 * fsyncs a record before anything depends on it, so a cut one was never
 * relied on.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "attr.h"
#include "dsn_log.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "qid.h"
#include "safe_file.h"
#include "vstr.h"

/* The largest log read back: a message deferred every minute for a day
   with 50 recipients is about 72,000 records of a few hundred bytes. */
#define DSN_LOG_FILE_MAX (64 * 1024 * 1024)

/* dsn_log_known - is log one of the two log queues? */
static bool dsn_log_known(const char *log)
{
    return strcmp(log, DSN_LOG_DEFER) == 0 || strcmp(log, DSN_LOG_BOUNCE) == 0;
}

/* dsn_log_path - the log's file name */
static VSTR *dsn_log_path(VSTR *buf, const char *queue_dir, const char *log,
                          const char *qid)
{
    return mail_queue_path(buf, queue_dir, log, qid);
}

/* dsn_log_encode - one record in its wire form */
static void dsn_log_encode(const DSN_LOG_REC *rec, VSTR *out)
{
    ATTR_LIST *list = attr_list_alloc();

#define STR_OR_EMPTY(s) ((s) ? (s) : "")
    attr_add_str(list, "action", STR_OR_EMPTY(rec->action));
    attr_add_str(list, "address", STR_OR_EMPTY(rec->address));
    attr_add_str(list, "orcpt", STR_OR_EMPTY(rec->orcpt));
    attr_add_str(list, "notify", STR_OR_EMPTY(rec->notify));
    attr_add_int(list, "offset", rec->offset);
    attr_add_str(list, "status", STR_OR_EMPTY(rec->status));
    attr_add_data(list, "reason", STR_OR_EMPTY(rec->reason),
                  strlen(STR_OR_EMPTY(rec->reason)));
    attr_add_data(list, "diagnostic", STR_OR_EMPTY(rec->diagnostic),
                  strlen(STR_OR_EMPTY(rec->diagnostic)));
    attr_add_str(list, "remote_mta", STR_OR_EMPTY(rec->remote_mta));
    attr_add_int(list, "time", rec->time);
    if (rec->category != NULL && *rec->category)
        attr_add_str(list, "category", rec->category);
#undef STR_OR_EMPTY
    vstr_reset(out);
    attr_list_encode(list, out);
    attr_list_free(list);
}

/* dsn_log_append - append one record; see dsn_log.h */
int dsn_log_append(const char *queue_dir, const char *log, const char *qid,
                   const DSN_LOG_REC *rec, bool sync, VSTR *why)
{
    VSTR *path;
    VSTR *data;
    VSTR *dir;
    struct stat st;
    bool created;
    int status = -1;
    int fd;

    if (!dsn_log_known(log) || !qid_valid(qid)) {
        vstr_sprintf(why, "bad log name %s/%s", log, qid);
        return -1;
    }
    path = dsn_log_path(vstr_alloc(100), queue_dir, log, qid);
    data = vstr_alloc(256);
    dir = vstr_alloc(100);
    dsn_log_encode(rec, data);
    if (vstr_len(data) > DSN_LOG_REC_MAX) {
        /* A reason that long is a server's essay: keep the record and
           shorten the text, so the log stays readable. */
        DSN_LOG_REC cut = *rec;
        char *reason = mystrndup(rec->reason ? rec->reason : "", 1024);
        char *diag = mystrndup(rec->diagnostic ? rec->diagnostic : "", 1024);

        cut.reason = reason;
        cut.diagnostic = diag;
        dsn_log_encode(&cut, data);
        myfree(reason);
        myfree(diag);
    }
    /* The hash subdirectory may not exist yet. */
    vstr_cpy(dir, vstr_str(path));
    vstr_truncate(dir, (size_t) (strrchr(vstr_str(dir), '/') - vstr_str(dir)));
    if (mkdir(vstr_str(dir), 0700) == 0) {
        if (sync) {
            VSTR *top = vstr_alloc(100);

            vstr_sprintf(top, "%s/%s", queue_dir, log);
            (void) safe_file_fsync_dir(vstr_str(top));
            vstr_free(top);
        }
    } else if (errno != EEXIST) {
        vstr_sprintf(why, "mkdir %s: %m", vstr_str(dir));
        goto out;
    }
    created = stat(vstr_str(path), &st) < 0;
    if ((fd = open(vstr_str(path), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                   0600)) < 0) {
        vstr_sprintf(why, "open %s: %m", vstr_str(path));
        goto out;
    }
    if (write(fd, vstr_str(data), vstr_len(data)) != (ssize_t) vstr_len(data)) {
        vstr_sprintf(why, "write %s: %m", vstr_str(path));
        /* A partial record at the end is ignored by readers; cut it off
           anyway so the next append starts clean. */
        if (fstat(fd, &st) == 0 && st.st_size >= (off_t) vstr_len(data))
            (void) ftruncate(fd, st.st_size - (off_t) vstr_len(data));
        (void) close(fd);
        goto out;
    }
    if (sync && fsync(fd) < 0) {
        vstr_sprintf(why, "fsync %s: %m", vstr_str(path));
        (void) close(fd);
        goto out;
    }
    if (close(fd) < 0) {
        vstr_sprintf(why, "close %s: %m", vstr_str(path));
        goto out;
    }
    if (sync && created && safe_file_fsync_dir(vstr_str(dir)) < 0) {
        vstr_sprintf(why, "fsync %s: %m", vstr_str(dir));
        goto out;
    }
    status = 0;

out:
    vstr_free(path);
    vstr_free(data);
    vstr_free(dir);
    return status;
}

/* dsn_log_fill - point rec at the values of a checked list */
static void dsn_log_fill(DSN_LOG_REC *rec, const ATTR_LIST *list)
{
    long long value;

    rec->action = attr_get_str(list, "action");
    rec->address = attr_get_str(list, "address");
    rec->orcpt = attr_get_str(list, "orcpt");
    rec->notify = attr_get_str(list, "notify");
    rec->offset = attr_get_int(list, "offset", &value) ? value : -1;
    rec->status = attr_get_str(list, "status");
    rec->reason = attr_get_data(list, "reason", NULL);
    rec->diagnostic = attr_get_data(list, "diagnostic", NULL);
    rec->remote_mta = attr_get_str(list, "remote_mta");
    rec->time = attr_get_int(list, "time", &value) ? value : 0;
    rec->category = attr_get_str(list, "category");
}

/* dsn_log_read - the whole log; see dsn_log.h */
DSN_LOG *dsn_log_read(const char *queue_dir, const char *log, const char *qid,
                      VSTR *why)
{
    DSN_LOG *dlog = mymalloc(sizeof(*dlog));
    VSTR *path;
    char *text;
    size_t text_len = 0;
    size_t pos = 0;
    size_t cap = 0;

    dlog->recs = NULL;
    dlog->lists = NULL;
    dlog->count = 0;
    dlog->absent = false;
    if (!dsn_log_known(log) || !qid_valid(qid)) {
        vstr_sprintf(why, "bad log name %s/%s", log, qid);
        return dsn_log_free(dlog);
    }
    path = dsn_log_path(vstr_alloc(100), queue_dir, log, qid);
    if ((text = safe_file_read(vstr_str(path), DSN_LOG_FILE_MAX, &text_len)) ==
        NULL) {
        if (errno == ENOENT) {
            vstr_free(path);
            dlog->absent = true;
            return dlog; /* no log: no records */
        }
        vstr_sprintf(why, "read %s: %m", vstr_str(path));
        dlog = dsn_log_free(dlog);
        goto out;
    }
    while (pos < text_len) {
        ATTR_LIST *list = NULL;
        size_t used = 0;
        int got = attr_list_decode(text + pos, text_len - pos, DSN_LOG_REC_MAX,
                                   &used, &list, why);

        if (got == 0)
            break; /* cut short by a crash: ignore */
        if (got < 0 ||
            attr_list_check(list, dsn_log_spec, SLUICE_ARRAY_LEN(dsn_log_spec),
                            why) < 0) {
            VSTR *reason = vstr_alloc(100);

            vstr_sprintf(reason, "%s: record at offset %zu: %s", vstr_str(path),
                         pos, vstr_str(why));
            vstr_cpy(why, vstr_str(reason));
            vstr_free(reason);
            attr_list_free(list);
            dlog = dsn_log_free(dlog);
            goto out;
        }
        if (dlog->count == cap) {
            cap = cap ? 2 * cap : 8;
            dlog->recs = myrealloc(dlog->recs, cap * sizeof(*dlog->recs));
            dlog->lists = myrealloc(dlog->lists, cap * sizeof(*dlog->lists));
        }
        dlog->lists[dlog->count] = list;
        dsn_log_fill(dlog->recs + dlog->count, list);
        dlog->count++;
        pos += used;
    }

out:
    vstr_free(path);
    if (text != NULL)
        myfree(text);
    return dlog;
}

/* dsn_log_free - release a log read back; returns NULL */
DSN_LOG *dsn_log_free(DSN_LOG *dlog)
{
    if (dlog == NULL)
        return NULL;
    for (size_t i = 0; i < dlog->count; i++)
        attr_list_free(dlog->lists[i]);
    myfree(dlog->recs);
    myfree(dlog->lists);
    myfree(dlog);
    return NULL;
}

/* dsn_log_count - records with this action */
size_t dsn_log_count(const DSN_LOG *dlog, const char *action)
{
    size_t count = 0;

    for (size_t i = 0; i < dlog->count; i++)
        if (strcmp(dlog->recs[i].action, action) == 0)
            count++;
    return count;
}

/* dsn_log_latest - the last record with action for address, or NULL */
const DSN_LOG_REC *dsn_log_latest(const DSN_LOG *dlog, const char *action,
                                  const char *address)
{
    for (size_t i = dlog->count; i > 0; i--) {
        const DSN_LOG_REC *rec = dlog->recs + i - 1;

        if (strcmp(rec->action, action) == 0 &&
            strcmp(rec->address, address) == 0)
            return rec;
    }
    return NULL;
}

/* dsn_log_remove - unlink the log (absent is fine) */
int dsn_log_remove(const char *queue_dir, const char *log, const char *qid)
{
    VSTR *path;
    int ret = 0;

    if (!dsn_log_known(log) || !qid_valid(qid)) {
        errno = EINVAL;
        return -1;
    }
    path = dsn_log_path(vstr_alloc(100), queue_dir, log, qid);
    if (unlink(vstr_str(path)) < 0 && errno != ENOENT)
        ret = -1;
    vstr_free(path);
    return ret;
}

/* dsn_log_exists - is there a log? */
bool dsn_log_exists(const char *queue_dir, const char *log, const char *qid)
{
    VSTR *path;
    struct stat st;
    bool found;

    if (!dsn_log_known(log) || !qid_valid(qid))
        return false;
    path = dsn_log_path(vstr_alloc(100), queue_dir, log, qid);
    found = stat(vstr_str(path), &st) == 0;
    vstr_free(path);
    return found;
}
