/*
 * render - the render service (issue #21): the API's spooled batches,
 * rendered and queued at the workers' pace, off the request path
 *
 * A trigger service of global/mail_server (master.cf "render", private,
 * unprivileged). The api daemon writes a batch of api_spool_min_recipients
 * or more into api_idempotency_directory/batches/ID (global/api_batch.h:
 * temporary file, fsync, rename, fsync of the directory) before its 202,
 * and wakes this service over private/render; the service also looks on
 * every wake-up tick, so a lost trigger only delays a batch. Several
 * processes may run: each works on one batch at a time, the one it holds
 * an exclusive flock(2) on; a killed process's lock goes with it and the
 * next look takes the batch up again.
 *
 * Each recipient's message is rendered (global/api_batch.h), handed to
 * cleanup like any API message (global/api_handoff.h: tenant, tags, pool,
 * DKIM, events), RENDER_PARALLEL at a time, in groups of RENDER_GROUP.
 * With non_smtpd_milters set, each message is first shown to the milters
 * (global/api_milter.h, in a child process): a reject or discard is a
 * failure that retrying cannot mend ("f I CODE" and a rejected event), a
 * tempfail a temporary one; a message a milter quarantined is marked
 * "q I QID" instead of "c I QID" and is never released from hold/.
 *
 * Nothing lost, nothing sent twice. The done mark of recipient I is the
 * line "c I QID" in batches/ID.log; rendering failures that retrying
 * cannot mend (cleanup's 5xx, a template error) are "f I CODE", each
 * written only once its "rejected" event (global/events.h: recipient,
 * tenant, batch, dsn, reply) is durable in the journal: the 202 said
 * "accepted", so webhook and API clients must learn of the drop (a crash
 * between the two writes the event again, with the same id). A mark
 * written after cleanup's commit and a crash between the two would send
 * the recipient twice; a mark written before the commit and a crash
 * between them would lose it. So the commit is made in two steps, with
 * the mark durable between them:
 *
 *   1. cleanup commits the message into hold/ (END with "hold"), fsynced
 *      as every commit is: it is durable, but qmgr does not look in
 *      hold/, so it cannot be delivered (nor leave the queue) yet;
 *   2. the group's "c I QID" lines are appended and the log is fsynced;
 *   3. each QID is renamed hold/ -> incoming/, incoming/ and hold/ are
 *      fsynced, and qmgr is woken.
 *
 * On taking up a batch, every "c I QID" whose file is still in hold/ is
 * released again (the crash came between 2 and 3), and every recipient
 * without a mark is rendered again. A crash before 2 leaves at most the
 * group's committed messages in hold/ without a mark: they are never
 * delivered, and their recipients are rendered again (sent once). Those
 * orphans stay in hold/ ("render batch ID" is their hold reason) for an
 * administrator to delete; with a process crash (kill -9, master gone)
 * they arise only when the kill lands between cleanup's commit and the
 * log write, with power loss also when the log lines had not reached the
 * disk. The mark is thus durable before the message can be delivered,
 * and only messages with a durable mark are ever released.
 *
 * A temporary failure (cleanup unreachable, 4xx, a timeout) stops the
 * batch after its group; it is tried again RENDER_RETRY seconds later.
 * When every recipient has a mark the batch file, then its log, are
 * removed. api_tenant_daily_limit was counted when the batch was
 * accepted.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "api_batch.h"
#include "api_handoff.h"
#include "api_milter.h"
#include "api_request.h"
#include "argv.h"
#include "cleanup_proto.h"
#include "events.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qid.h"
#include "safe_file.h"
#include "trigger.h"
#include "vstr.h"

#define RENDER_PARALLEL 4 /* messages with cleanup at once */
#define RENDER_GROUP 32 /* recipients per log fsync and release */
#define RENDER_RETRY 10 /* seconds before a stopped batch goes on */
#define RENDER_TICK 10 /* seconds between looks at the spool */
#define RENDER_BATCH_MAX (1024L * 1024 * 1024) /* bytes of a batch file */

typedef struct RENDER_CTX RENDER_CTX;

/* The batch this process holds. */
typedef struct RENDER_JOB {
    RENDER_CTX *ctx;
    char *id;
    VSTR *path; /* batches/ID */
    VSTR *log_path; /* batches/ID.log */
    VSTR *hold_reason;
    int fd; /* the batch file, flocked */
    int log_fd;
    json_t *batch;
    json_t *rcpts; /* borrowed from batch */
    const char *tenant;
    size_t count;
    unsigned char *done; /* per recipient: a mark is in the log */
    size_t next; /* the next recipient to look at */
    size_t started; /* of this group */
    size_t inflight;
    ARGV *committed; /* this group's QIDs in hold/, marks not yet synced */
    size_t log_whole; /* bytes of the log up to its last LF when read */
    bool stop; /* a temporary failure: no more this time */
    struct event *resume;
} RENDER_JOB;

struct RENDER_CTX {
    MAIL_SERVER *server;
    char *queue_dir;
    char *cleanup_path;
    char *qmgr_path;
    char *spool_dir;
    char *idem_dir; /* api_idempotency_directory */
    long long idem_ttl; /* api_idempotency_ttl */
    API_LIMITS limits;
    int cleanup_timeout;
    RENDER_JOB *job; /* NULL: idle */
    EVENTS *events; /* the journal, NULL: events_enable = no */
    API_MILTERS *milters; /* non_smtpd_milters, NULL: none */
    bool retiring;
};

typedef struct RENDER_ITEM {
    RENDER_JOB *job;
    size_t index;
    API_MESSAGE *msg;
} RENDER_ITEM;

static void render_scan(RENDER_CTX *ctx);
static void render_pump(RENDER_JOB *job);

/* render_log - append one mark line (one write: a kill leaves whole
   lines); false when it could not be written */
static bool render_log(RENDER_JOB *job, const char *line)
{
    if (safe_file_write_all(job->log_fd, line, strlen(line)) < 0) {
        msg_warn("batch %s: write %s: %m", job->id, vstr_str(job->log_path));
        return false;
    }
    return true;
}

/* render_release - hold/QID -> incoming/QID; a file already gone from
   hold/ was released before */
static void render_release(RENDER_JOB *job, const char *qid)
{
    if (mail_queue_rename(job->ctx->queue_dir, MAIL_QUEUE_HOLD,
                          MAIL_QUEUE_INCOMING, qid) < 0 &&
        errno != ENOENT)
        msg_warn("%s: batch %s: release from hold: %m", qid, job->id);
}

/* render_release_sync - make the releases durable and wake qmgr */
static void render_release_sync(RENDER_CTX *ctx)
{
    VSTR *dir = vstr_alloc(100);

    vstr_sprintf(dir, "%s/%s", ctx->queue_dir, MAIL_QUEUE_INCOMING);
    if (safe_file_fsync_dir(vstr_str(dir)) < 0)
        msg_warn("fsync %s: %m", vstr_str(dir));
    vstr_sprintf(dir, "%s/%s", ctx->queue_dir, MAIL_QUEUE_HOLD);
    if (safe_file_fsync_dir(vstr_str(dir)) < 0)
        msg_warn("fsync %s: %m", vstr_str(dir));
    vstr_free(dir);
    (void) trigger_send(ctx->qmgr_path, TRIGGER_WAKEUP);
}

/* render_job_free - let go of the batch (its lock with it) */
static void render_job_free(RENDER_JOB *job)
{
    RENDER_CTX *ctx = job->ctx;

    if (job->resume != NULL)
        event_free(job->resume);
    if (job->log_fd >= 0)
        (void) close(job->log_fd);
    if (job->fd >= 0)
        (void) close(job->fd);
    json_decref(job->batch);
    argv_free(job->committed);
    myfree(job->done);
    myfree(job->id);
    vstr_free(job->path);
    vstr_free(job->log_path);
    vstr_free(job->hold_reason);
    myfree(job);
    ctx->job = NULL;
    if (ctx->retiring)
        mail_server_exit(ctx->server, 0);
}

/* render_recover - read the log: marks, and releases a crash left
   undone; 0, or -1 when the log cannot be read */
static int render_recover(RENDER_JOB *job)
{
    size_t len = 0;
    char *text =
        safe_file_read(vstr_str(job->log_path), RENDER_BATCH_MAX, &len);
    char *line;
    char *end;
    size_t marks = 0;

    if (text == NULL)
        return errno == ENOENT ? 0 : -1;
    for (line = text; (end = memchr(line, '\n', len - (size_t) (line - text)));
         line = end + 1) {
        char kind;
        unsigned long long index;
        char qid[QID_SIZE + 1];
        int n = 0;

        *end = 0;
        /* A torn line (power loss) is no mark. */
        if (sscanf(line, "%c %llu %n", &kind, &index, &n) < 2 || n == 0 ||
            index >= job->count)
            continue;
        if (kind == 'c' && strlen(line + n) == QID_LEN && qid_valid(line + n)) {
            memcpy(qid, line + n, QID_SIZE);
            render_release(job, qid);
        } else if (kind != 'f' && kind != 'q') {
            continue;
        }
        if (!job->done[index])
            marks++;
        job->done[index] = 1;
    }
    job->log_whole = (size_t) (line - text);
    if (line != text + len)
        msg_warn("batch %s: a torn last line of %s ignored (cut)", job->id,
                 vstr_str(job->log_path));
    myfree(text);
    if (marks > 0) {
        msg_info("batch %s: taken up again: %zu of %zu recipients done",
                 job->id, marks, job->count);
        render_release_sync(job->ctx);
    }
    return 0;
}

/* render_job_open - take batch name if no other process has it; the
   job, or NULL */
static RENDER_JOB *render_job_open(RENDER_CTX *ctx, const char *name)
{
    RENDER_JOB *job = mycalloc(1, sizeof(*job));
    json_error_t jerr;
    char *text;
    size_t len;
    struct stat st;

    job->ctx = ctx;
    job->id = mystrdup(name);
    job->path = vstr_alloc(100);
    job->log_path = vstr_alloc(100);
    job->hold_reason = vstr_alloc(60);
    job->committed = argv_alloc(RENDER_GROUP);
    job->log_fd = -1;
    vstr_sprintf(job->path, "%s/%s", ctx->spool_dir, name);
    vstr_sprintf(job->log_path, "%s/%s.log", ctx->spool_dir, name);
    vstr_sprintf(job->hold_reason, "render batch %s", name);
    ctx->job = job;
    if ((job->fd = open(vstr_str(job->path), O_RDWR | O_CLOEXEC)) < 0) {
        render_job_free(job);
        return NULL;
    }
    if (flock(job->fd, LOCK_EX | LOCK_NB) < 0) {
        render_job_free(job); /* another process has it */
        return NULL;
    }
    /* Finished and removed while we waited for the lock? */
    if (stat(vstr_str(job->path), &st) < 0) {
        render_job_free(job);
        return NULL;
    }
    if ((text = safe_file_read(vstr_str(job->path), RENDER_BATCH_MAX, &len)) ==
            NULL ||
        (job->batch = json_loadb(text, len, 0, &jerr)) == NULL ||
        !json_is_array(job->rcpts =
                           json_object_get(job->batch, "recipients")) ||
        !json_is_object(json_object_get(job->batch, "base")) ||
        !json_is_string(json_object_get(job->batch, "tenant"))) {
        if (text == NULL) {
            msg_warn("batch %s: read %s: %m (tried again later)", name,
                     vstr_str(job->path));
        } else {
            VSTR *bad = vstr_alloc(100);

            /* Not a batch: put aside under a name no scan takes. */
            vstr_sprintf(bad, "%s.bad", vstr_str(job->path));
            msg_warn("batch %s: %s is not a batch: renamed %s", name,
                     vstr_str(job->path), vstr_str(bad));
            if (rename(vstr_str(job->path), vstr_str(bad)) < 0)
                msg_warn("rename %s: %m", vstr_str(job->path));
            vstr_free(bad);
        }
        myfree(text);
        render_job_free(job);
        return NULL;
    }
    myfree(text);
    job->tenant = json_string_value(json_object_get(job->batch, "tenant"));
    job->count = json_array_size(job->rcpts);
    job->done = mycalloc(job->count + 1, 1);
    if (render_recover(job) < 0) {
        msg_warn("batch %s: read %s: %m (left in place)", name,
                 vstr_str(job->log_path));
        render_job_free(job);
        return NULL;
    }
    if ((job->log_fd = open(vstr_str(job->log_path),
                            O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) <
        0) {
        msg_warn("batch %s: open %s: %m", name, vstr_str(job->log_path));
        render_job_free(job);
        return NULL;
    }
    /* A torn last line (power loss) is cut before the next mark: a mark
       appended to it would not be read as one (that recipient sent
       twice), and a torn line ended by a LF could read as another mark
       ("f 1" of "f 12 550"). */
    if (fstat(job->log_fd, &st) < 0 ||
        ((size_t) st.st_size > job->log_whole &&
         (ftruncate(job->log_fd, (off_t) job->log_whole) < 0 ||
          safe_file_fsync(job->log_fd) < 0))) {
        msg_warn("batch %s: cut the torn line of %s: %m (tried again later)",
                 name, vstr_str(job->log_path));
        render_job_free(job);
        return NULL;
    }
    return job;
}

/* render_keep - what GET /v1/messages/BATCH answers from once the batch
   has left the spool (api_batch_rendered_dir): its log linked as ID.log,
   then ID with the tenant and the recipients' addresses. Without them
   (a failure here is logged, nothing more) the api answers 404. */
static void render_keep(RENDER_JOB *job)
{
    RENDER_CTX *ctx = job->ctx;
    VSTR *dir = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    json_t *list = json_array();
    json_t *kept;
    char *text = NULL;

    api_batch_rendered_dir(ctx->idem_dir, dir);
    for (size_t i = 0; i < job->count; i++) {
        json_t *rcpt = json_array_get(job->rcpts, i);
        json_t *to = json_is_object(rcpt) ? json_object_get(rcpt, "to") : rcpt;

        json_array_append_new(list, json_pack("{s:O}", "to", to));
    }
    kept =
        json_pack("{s:s, s:s, s:I, s:o}", "id", job->id, "tenant", job->tenant,
                  "finished", (json_int_t) time(NULL), "recipients", list);
    if (kept == NULL || (text = json_dumps(kept, JSON_COMPACT)) == NULL)
        msg_fatal("out of memory");
    vstr_sprintf(path, "%s/%s.log", vstr_str(dir), job->id);
    /* A crash after the link took up the batch again: the same log. */
    if (mkdir(vstr_str(dir), 0700) < 0 && errno != EEXIST) {
        msg_warn("batch %s: mkdir %s: %m", job->id, vstr_str(dir));
    } else if (link(vstr_str(job->log_path), vstr_str(path)) < 0 &&
               errno != EEXIST) {
        msg_warn("batch %s: link %s: %m", job->id, vstr_str(path));
    } else {
        vstr_sprintf(path, "%s/%s", vstr_str(dir), job->id);
        if (safe_file_write(vstr_str(path), text, strlen(text), 0600) < 0)
            msg_warn("batch %s: write %s: %m", job->id, vstr_str(path));
    }
    free(text);
    json_decref(kept);
    vstr_free(dir);
    vstr_free(path);
}

/* render_finish - every recipient has a mark: remove the batch */
static void render_finish(RENDER_JOB *job)
{
    RENDER_CTX *ctx = job->ctx;

    VSTR *why = vstr_alloc(100);

    msg_info("batch %s: done: %zu recipients", job->id, job->count);
    /* The api crashed before its Idempotency-Key record and did not
       start again before now: the record is written before the batch
       that holds it goes (api_batch.h). */
    if (api_batch_idem_mend(ctx->idem_dir, ctx->idem_ttl, job->batch, why) < 0)
        msg_warn("batch %s: Idempotency-Key record: %s", job->id,
                 vstr_str(why));
    vstr_free(why);
    render_keep(job);
    /* The batch first: a log without its batch is only litter. */
    if (unlink(vstr_str(job->path)) < 0)
        msg_warn("batch %s: unlink %s: %m", job->id, vstr_str(job->path));
    if (unlink(vstr_str(job->log_path)) < 0 && errno != ENOENT)
        msg_warn("batch %s: unlink %s: %m", job->id, vstr_str(job->log_path));
    (void) safe_file_fsync_dir(ctx->spool_dir);
    render_job_free(job);
    if (!ctx->retiring)
        render_scan(ctx);
}

/* render_resume - go on with the job from the loop */
static void render_resume(evutil_socket_t fd, short what, void *arg)
{
    render_pump(arg);
}

/* render_later - come back to the job after sec seconds */
static void render_later(RENDER_JOB *job, int sec)
{
    struct timeval tv = {sec, 0};

    if (job->resume == NULL &&
        (job->resume = evtimer_new(mail_server_base(job->ctx->server),
                                   render_resume, job)) == NULL)
        msg_fatal("cannot create an event");
    evtimer_add(job->resume, &tv);
}

/* render_group_end - the group's messages all have their verdict: make
   the marks durable, then release the messages */
static void render_group_end(RENDER_JOB *job)
{
    job->started = 0;
    if (job->committed->argc == 0)
        return;
    if (safe_file_fsync(job->log_fd) < 0) {
        /* Marks not known to be durable: nothing is released. The list
           is kept for the next group's end (the batch is not finished
           while it is not empty), or the next process's recovery. */
        msg_warn("batch %s: fsync %s: %m (again in %ds)", job->id,
                 vstr_str(job->log_path), RENDER_RETRY);
        job->stop = true;
        return;
    }
    for (size_t i = 0; i < job->committed->argc; i++)
        render_release(job, job->committed->argv[i]);
    render_release_sync(job->ctx);
    argv_free(job->committed);
    job->committed = argv_alloc(RENDER_GROUP);
}

/* render_reject - recipient index was never queued (status, why): its
   "rejected" event made durable, then its "f" mark written; false when
   either failed (the recipient is looked at again later) */
static bool render_reject(RENDER_JOB *job, size_t index, int status,
                          const char *why)
{
    json_t *rcpt = json_array_get(job->rcpts, index);
    json_t *to = json_is_object(rcpt) ? json_object_get(rcpt, "to") : rcpt;
    VSTR *seq = vstr_alloc(64);
    VSTR *line = vstr_alloc(64);
    EVENT event;
    bool ok;

    /* The batch's ID stands for the queue ID the message never got: a
       queue ID no message has, which every reader of the journal takes. */
    vstr_sprintf(seq, "%zu", index);
    events_event_init(&event, EVENTS_REJECTED, job->id, vstr_str(seq));
    event.recipient = json_string_value(to);
    event.tenant = job->tenant;
    event.batch = job->id;
    event.reply = why;
    event.hard = 1;
    if (events_emit(job->ctx->events, &event) < 0) {
        msg_warn("batch %s: recipient %zu: rejected event not written "
                 "(again in %ds)",
                 job->id, index, RENDER_RETRY);
        ok = false;
    } else {
        /* The reason after the code, on the one line (the api's
           GET /v1/messages/BATCH shows it; recovery reads only the
           index). */
        vstr_sprintf(line, "f %zu %d %.200s", index, status, why);
        for (char *cp = vstr_str(line); *cp; cp++)
            if (*cp == '\n' || *cp == '\r')
                *cp = ' ';
        vstr_addch(line, '\n');
        ok = render_log(job, vstr_str(line));
    }
    if (ok)
        job->done[index] = 1;
    else
        job->stop = true;
    vstr_free(seq);
    vstr_free(line);
    return ok;
}

/* render_done - cleanup's verdict on one message */
static void render_done(const API_HANDOFF_RESULT *result, void *arg)
{
    RENDER_ITEM *item = arg;
    RENDER_JOB *job = item->job;
    VSTR *line = vstr_alloc(64);

    if (result->code == 0) {
        msg_info("%s: batch %s recipient %zu tenant=%s from=<%s> size=%zu",
                 result->queue_id, job->id, item->index, job->tenant,
                 item->msg->sender, vstr_len(item->msg->content));
        /* A milter's quarantine stays in hold/: "q", never released. */
        vstr_sprintf(line, "%c %zu %s\n", result->quarantine ? 'q' : 'c',
                     item->index, result->queue_id);
        /* GET /v1/messages/QID answers for the batch's tenant too. */
        api_batch_owner_record(job->ctx->idem_dir, result->queue_id,
                               job->tenant);
        if (render_log(job, vstr_str(line))) {
            if (result->quarantine == NULL)
                argv_add(job->committed, result->queue_id);
            job->done[item->index] = 1;
        } else {
            job->stop = true; /* left in hold/, rendered again */
        }
    } else if (result->code >= 500) {
        msg_info("batch %s: recipient %zu refused: %s", job->id, item->index,
                 result->why);
        (void) render_reject(job, item->index, result->code, result->why);
    } else {
        msg_warn("batch %s: cannot queue a message: %s (again in %ds)", job->id,
                 result->why, RENDER_RETRY);
        job->stop = true;
    }
    vstr_free(line);
    api_message_free(item->msg);
    myfree(item);
    job->inflight--;
    render_pump(job);
}

/* render_pump - start messages while the group has room; end the group
   when all have spoken; go on, stop or finish */
static void render_pump(RENDER_JOB *job)
{
    RENDER_CTX *ctx = job->ctx;
    json_t *base = json_object_get(job->batch, "base");
    json_t *data = json_object_get(job->batch, "data");
    json_t *tmpl = json_object_get(job->batch, "template");
    VSTR *why = vstr_alloc(100);
    VSTR *line = vstr_alloc(64);
    API_ERROR err;

    api_error_init(&err);
    if (json_is_null(data))
        data = NULL;
    if (json_is_null(tmpl))
        tmpl = NULL;
    while (!job->stop && job->next < job->count &&
           job->started < RENDER_GROUP && job->inflight < RENDER_PARALLEL) {
        size_t i = job->next++;
        RENDER_ITEM *item;
        API_MESSAGE *msg;

        if (job->done[i])
            continue;
        job->started++;
        if ((msg =
                 api_batch_recipient(base, data, json_array_get(job->rcpts, i),
                                     tmpl, &ctx->limits, i, &err)) == NULL) {
            msg_info("batch %s: recipient %zu: %d %s: %s", job->id, i,
                     err.status, err.code, vstr_str(err.message));
            vstr_sprintf(line, "%d %s: %s", err.status, err.code,
                         vstr_str(err.message));
            if (!render_reject(job, i, err.status, vstr_str(line)))
                break;
            continue;
        }
        msg->hold = vstr_str(job->hold_reason);
        /* The request's trace (the api checked it): a child of its span. */
        api_batch_traceparent(
            msg, json_string_value(json_object_get(job->batch, "traceparent")));
        item = mycalloc(1, sizeof(*item));
        item->job = job;
        item->index = i;
        item->msg = msg;
        if (api_submit_start(mail_server_base(ctx->server), ctx->milters,
                             ctx->cleanup_path, ctx->cleanup_timeout, msg,
                             job->tenant, render_done, item, why) < 0) {
            msg_warn("batch %s: cannot queue a message: %s (again in %ds)",
                     job->id, vstr_str(why), RENDER_RETRY);
            api_message_free(msg);
            myfree(item);
            job->stop = true;
            break;
        }
        job->inflight++;
    }
    api_error_free(&err);
    vstr_free(why);
    vstr_free(line);
    if (job->inflight > 0)
        return; /* render_done comes back */
    render_group_end(job);
    if (ctx->retiring) {
        render_job_free(job); /* the next process takes it up */
    } else if (job->stop) {
        job->stop = false;
        job->next = 0; /* the recipients without a mark, again */
        render_later(job, RENDER_RETRY);
    } else if (job->next < job->count) {
        render_later(job, 0); /* the next group after other events */
    } else {
        bool all = true;

        for (size_t i = 0; i < job->count && all; i++)
            all = job->done[i] != 0;
        if (all && job->committed->argc == 0) {
            render_finish(job);
        } else {
            job->next = 0;
            render_later(job, RENDER_RETRY);
        }
    }
}

/* render_scan - take up a batch no other process holds, if idle */
static void render_scan(RENDER_CTX *ctx)
{
    DIR *dp;
    struct dirent *de;

    if (ctx->job != NULL || ctx->retiring)
        return;
    if ((dp = opendir(ctx->spool_dir)) == NULL) {
        if (errno != ENOENT)
            msg_warn("opendir %s: %m", ctx->spool_dir);
        return;
    }
    while (ctx->job == NULL && (de = readdir(dp)) != NULL) {
        if (!qid_valid(de->d_name))
            continue;
        if (render_job_open(ctx, de->d_name) != NULL)
            render_later(ctx->job, 0);
    }
    (void) closedir(dp);
}

/* render_trigger - the api spooled a batch */
static void render_trigger(MAIL_SERVER *server, int byte, void *arg)
{
    render_scan(arg);
}

/* render_tick - the periodic look that catches a lost trigger */
static void render_tick(MAIL_SERVER *server, void *arg)
{
    render_scan(arg);
}

/* render_pre_loop - read the configuration, take up waiting batches */
static void render_pre_loop(MAIL_SERVER *server, void *arg)
{
    RENDER_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    VSTR *path = vstr_alloc(100);

    ctx->server = server;
    ctx->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    mail_queue_service(path, ctx->queue_dir, MAIL_QUEUE_PRIVATE,
                       CLEANUP_SERVICE);
    ctx->cleanup_path = mystrdup(vstr_str(path));
    mail_queue_service(path, ctx->queue_dir, MAIL_QUEUE_PUBLIC,
                       MAIL_QUEUE_QMGR_SERVICE);
    ctx->qmgr_path = mystrdup(vstr_str(path));
    ctx->idem_dir = mystrdup(mail_conf_str(conf, "api_idempotency_directory"));
    ctx->idem_ttl = mail_conf_time(conf, "api_idempotency_ttl");
    api_batch_dir(ctx->idem_dir, path);
    ctx->spool_dir = vstr_export(path);
    ctx->limits.max_recipients =
        (size_t) mail_conf_int(conf, "api_max_recipients");
    ctx->limits.max_message_size =
        (size_t) mail_conf_size(conf, "message_size_limit");
    ctx->cleanup_timeout = (int) mail_conf_time(conf, "render_cleanup_timeout");
    ctx->events = events_open(conf, "render");
    ctx->milters = api_milter_open(conf);
    render_scan(ctx);
}

/* render_retire - finish the group in hand, then exit */
static void render_retire(MAIL_SERVER *server, void *arg)
{
    RENDER_CTX *ctx = arg;

    ctx->retiring = true;
    if (ctx->job == NULL)
        mail_server_exit(server, 0);
    else if (ctx->job->inflight == 0)
        render_job_free(ctx->job);
}

/* render_post_loop - free what lives on the event base */
static void render_post_loop(MAIL_SERVER *server, void *arg)
{
    RENDER_CTX *ctx = arg;

    if (ctx->job != NULL && ctx->job->resume != NULL) {
        event_free(ctx->job->resume);
        ctx->job->resume = NULL;
    }
    ctx->milters = api_milter_close(ctx->milters);
}

/* main - the render service */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = render_pre_loop,
        .on_trigger = render_trigger,
        .on_tick = render_tick,
        .tick_seconds = RENDER_TICK,
        .on_retire = render_retire,
        .post_loop = render_post_loop,
    };
    RENDER_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "render", &ops, &ctx);
    myfree(ctx.queue_dir);
    myfree(ctx.cleanup_path);
    myfree(ctx.qmgr_path);
    myfree(ctx.spool_dir);
    myfree(ctx.idem_dir);
    (void) events_close(ctx.events);
    return status;
}
