/*
 * qmgr_deliver - one delivery: an entry handed to a delivery agent
 *
 * The protocol is global/deliver_proto.h, read and written by its codec:
 * HELLO, DELIVER and the RCPT lists go out at once; the agent's HELLO
 * must name the same protocol and version (else the job ends as a
 * protocol error, logged); then each RESULT is recorded the moment it
 * arrives (so the done marks and logs are on disk before the agent is
 * even finished), and
 * DONE says whether the destination itself failed. A recipient without a
 * RESULT when the connection ends is never lost: the queue file still
 * holds it. When the agent died (the connection was lost before DONE: it
 * was killed, or crashed) the recipient is queued again at once, up to
 * QMGR_AGENT_DEATH_RETRIES times per message, so a killed agent does not
 * cost a retry_schedule step, while a message that kills its agent every
 * time still ends in deferred/; for any other end (a timeout, a protocol
 * error) it is deferred here.
 *
 * Kept connections: an agent whose HELLO says reuse=1 reads the next
 * DELIVER on the same connection after DONE. After a DONE the connection
 * waits in ctx->idle (at most QMGR_IDLE_MAX in all, QMGR_IDLE_TIME seconds
 * each; anything the agent says there, or its close, ends it) and the next
 * job for that agent's socket takes it instead of connecting. An agent
 * may close a kept connection at any time (it retires, its ipc_timeout
 * passed, it was killed): a job on a kept connection that ends before the
 * agent said a word is sent again at once and is not counted as an agent
 * death (it never started: a retiring agent closes such a request
 * unanswered), so a closed connection costs no delivery and no retry step.
 */
#include "sys_defs.h"

#include <sys/time.h>

#include "attr.h"
#include "deliver_proto.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "source_pool.h"
#include "vstr.h"

#define QMGR_AGENT_DEATH_RETRIES 3 /* per message, then deferred/ */
#define QMGR_IDLE_MAX 32 /* kept agent connections, in all */
#define QMGR_IDLE_TIME 5 /* seconds a kept agent connection waits */
#define QMGR_JOB_NO_TIMEOUT 3600 /* seconds, when none is configured */

/* An agent connection kept for the next job (ctx->idle) */
typedef struct QMGR_IDLE {
    struct QMGR_IDLE *prev;
    struct QMGR_IDLE *next;
    QMGR_CTX *ctx;
    QMGR_CONN *conn;
    char *path; /* the agent's socket */
} QMGR_IDLE;

typedef struct QMGR_JOB {
    struct QMGR_JOB *prev; /* ctx->jobs */
    struct QMGR_JOB *next;
    QMGR_CTX *ctx;
    QMGR_ENTRY *entry;
    QMGR_CONN *conn;
    bool *answered; /* per entry recipient */
    bool greeted; /* the agent's HELLO passed */
    bool mismatch; /* it named another protocol version */
    bool reuse_ok; /* the agent takes another request after DONE */
    bool reused; /* conn is a kept one: no HELLO this time */
    bool heard; /* the agent said something on this job */
    bool never_started; /* a kept conn ended before a word: send again */
    char *path; /* the agent's socket */
    bool done_seen;
    long long done_status;
    long long site_failed;
    char *done_reason;
    bool source_failed; /* DONE: the source could not be bound */
    char **replies; /* distinct remote replies, for response automation */
    size_t reply_count;
} QMGR_JOB;

/* qmgr_job_note_reply - remember a remote reply once per job: one reply
   that defers several recipients is one match for response automation,
   fed at the job's end (qmgr_job_feed_replies) */
static void qmgr_job_note_reply(QMGR_JOB *job, const char *diagnostic)
{
    for (size_t i = 0; i < job->reply_count; i++)
        if (strcmp(job->replies[i], diagnostic) == 0)
            return;
    job->replies = myrealloc_array(job->replies, job->reply_count + 1,
                                   sizeof(*job->replies));
    job->replies[job->reply_count++] = mystrdup(diagnostic);
}

/* qmgr_job_feed_replies - each distinct remote reply of the job, once, to
   response automation; frees them */
static void qmgr_job_feed_replies(QMGR_JOB *job)
{
    for (size_t i = 0; i < job->reply_count; i++) {
        qmgr_shaping_reply(job->ctx, job->entry->dest->shape, job->replies[i]);
        myfree(job->replies[i]);
    }
    job->replies = myfree(job->replies);
    job->reply_count = 0;
}

/* qmgr_idle_free - close a kept connection */
static void qmgr_idle_free(QMGR_IDLE *idle)
{
    QMGR_CTX *ctx = idle->ctx;

    if (idle->prev)
        idle->prev->next = idle->next;
    else
        ctx->idle = idle->next;
    if (idle->next)
        idle->next->prev = idle->prev;
    ctx->idle_count--;
    qmgr_conn_free(idle->conn);
    myfree(idle->path);
    myfree(idle);
}

/* qmgr_idle_list - an agent spoke on a kept connection: not ours to read */
static void qmgr_idle_list(QMGR_CONN *conn, ATTR_LIST *list, void *arg)
{
    QMGR_IDLE *idle = arg;

    msg_warn("%s: unexpected list on a kept agent connection: closed",
             idle->path);
    qmgr_idle_free(idle);
}

/* qmgr_idle_end - a kept connection was closed or timed out */
static void qmgr_idle_end(QMGR_CONN *conn, const char *why, void *arg)
{
    qmgr_idle_free(arg);
}

/* qmgr_idle_park - keep conn (its job is done) for the next job */
static void qmgr_idle_park(QMGR_CTX *ctx, QMGR_CONN *conn, const char *path)
{
    QMGR_IDLE *idle;

    if (ctx->idle_count >= QMGR_IDLE_MAX) {
        qmgr_conn_free(conn);
        return;
    }
    idle = mycalloc(1, sizeof(*idle));
    idle->ctx = ctx;
    idle->conn = conn;
    idle->path = mystrdup(path);
    if ((idle->next = ctx->idle) != NULL)
        idle->next->prev = idle;
    ctx->idle = idle;
    ctx->idle_count++;
    qmgr_conn_rebind(conn, qmgr_idle_list, qmgr_idle_end, idle, QMGR_IDLE_TIME);
}

/* qmgr_idle_take - a kept connection to path, the newest, or NULL */
static QMGR_CONN *qmgr_idle_take(QMGR_CTX *ctx, const char *path)
{
    for (QMGR_IDLE *idle = ctx->idle; idle != NULL; idle = idle->next) {
        if (strcmp(idle->path, path) == 0) {
            QMGR_CONN *conn = idle->conn;

            idle->conn = NULL; /* qmgr_idle_free leaves it open */
            qmgr_idle_free(idle);
            return conn;
        }
    }
    return NULL;
}

/* qmgr_job_retry_now - the agent died before DONE: queue what has no
   result again at once, rather than defer it? */
static bool qmgr_job_retry_now(QMGR_JOB *job, bool agent_died)
{
    QMGR_MESSAGE *msg = job->entry->msg;
    bool withdrawn =
        msg->admin_op == QMGR_ADMIN_HOLD || msg->admin_op == QMGR_ADMIN_DELETE;

    if (!qmgr_sched_agent_retry(agent_died, job->done_seen, withdrawn,
                                msg->agent_deaths, QMGR_AGENT_DEATH_RETRIES))
        return false;
    msg->agent_deaths++;
    return true;
}

/* qmgr_job_finish - defer what has no result (or, when the agent died,
   queue it again), free the job, schedule */
static void qmgr_job_finish(QMGR_JOB *job, const char *why, bool agent_died)
{
    QMGR_ENTRY *entry = job->entry;
    QMGR_DEST *dest = entry->dest;
    QMGR_CTX *ctx = job->ctx;
    VSTR *reason = vstr_alloc(100);
    QMGR_SCHED_OUTCOME outcome;
    bool withdrawn = entry->msg->admin_op == QMGR_ADMIN_HOLD ||
                     entry->msg->admin_op == QMGR_ADMIN_DELETE;
    bool retry =
        job->never_started ? !withdrawn : qmgr_job_retry_now(job, agent_died);
    size_t unanswered = 0;

    /* DONE leaves the connection ready for the agent's next request. */
    if (job->done_seen && job->reuse_ok && job->conn != NULL)
        qmgr_idle_park(ctx, job->conn, job->path);
    else
        qmgr_conn_free(job->conn);
    job->conn = NULL;
    qmgr_job_feed_replies(job);
    /* The source is not this machine's: leave it out, and send what has
       no result from another source of the pool (not a site failure). */
    if (job->source_failed && dest->source != NULL) {
        QMGR_ADMIN_OP op = entry->msg->admin_op;

        qmgr_source_failed(ctx, dest->source->address, job->done_reason);
        retry = op != QMGR_ADMIN_HOLD && op != QMGR_ADMIN_DELETE;
        job->site_failed = 0;
    }
    if (job->done_seen) {
        vstr_sprintf(reason, "delivery agent failed: %s",
                     job->done_reason ? job->done_reason : "no reason given");
    } else {
        vstr_sprintf(reason, "delivery agent %s: %s",
                     job->mismatch ? "failed" : "died", why);
    }
    outcome = qmgr_sched_outcome(job->done_seen, job->done_status,
                                 job->site_failed != 0);
    for (size_t i = 0; i < entry->count; i++) {
        if (job->answered[i])
            continue;
        unanswered++;
        /* The entry holds its message until it is freed below. */
        if (retry)
            qmgr_dest_add(entry->msg, dest->transport, dest->nexthop,
                          entry->index[i]);
        else
            qmgr_message_defer_self(entry->msg, entry->index[i], "4.3.0",
                                    vstr_str(reason));
    }
    if (job->never_started && retry && unanswered > 0)
        msg_info("%s: kept %s agent connection closed before an answer (%s):"
                 " sent again",
                 entry->msg->qid, dest->transport, why);
    else if (retry && unanswered > 0 && !job->source_failed)
        msg_warn("%s: %s, %zu recipient%s queued again at once (%d of %d)",
                 entry->msg->qid, vstr_str(reason), unanswered,
                 unanswered == 1 ? "" : "s", entry->msg->agent_deaths,
                 QMGR_AGENT_DEATH_RETRIES);
    ctx->jobs_running--;
    if (job->prev)
        job->prev->next = job->next;
    else
        ctx->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    qmgr_dest_job_done(dest, outcome,
                       job->done_reason ? job->done_reason : vstr_str(reason));
    qmgr_entry_free(entry);
    myfree(job->path);
    myfree(job->answered);
    myfree(job->done_reason);
    myfree(job);
    vstr_free(reason);
    qmgr_dest_schedule(ctx);
}

/* qmgr_job_result - one RESULT, taken by the codec */
static void qmgr_job_result(QMGR_JOB *job, const DELIVER_RESULT *result)
{
    QMGR_ENTRY *entry = job->entry;
    const char *source;
    BOUNCE_CLASS class;

    for (size_t i = 0; i < entry->count; i++) {
        QFILE_RCPT *rcpt = &entry->msg->info->rcpts[entry->index[i]];

        if (rcpt->offset != (off_t) result->offset)
            continue;
        if (job->answered[i]) {
            msg_warn("%s: %s agent: second result for offset %lld: ignored",
                     entry->msg->qid, entry->dest->transport, result->offset);
            return;
        }
        job->answered[i] = true;
        /* A remote reply (ours carry no diagnostic): response automation,
           once per distinct reply per job, at the job's end */
        if (result->diagnostic != NULL &&
            strcmp(result->action, DELIVER_ACTION_SENT) != 0)
            qmgr_job_note_reply(job, result->diagnostic);
        qmgr_message_provider(entry->msg, entry->index[i], entry->dest->shape);
        /* The source it was tried from: its event, its reputation. */
        source = result->source && *result->source ? result->source
                 : entry->dest->source ? entry->dest->source->address
                                       : NULL;
        qmgr_message_source(entry->msg, entry->index[i], source);
        qmgr_message_tls(entry->msg, entry->index[i], result->tls_version,
                         result->tls_cipher, result->tls_level);
        qmgr_message_timing(entry->msg, entry->index[i], result->attempt_usec,
                            result->conn_usec);
        qmgr_source_result(entry->msg, source,
                           entry->msg->rcpts[entry->index[i]].provider,
                           result->action, result->dsn, result->diagnostic,
                           result->remote_mta);
        class =
            (BOUNCE_CLASS){.category = result->category, .hard = result->hard};
        qmgr_message_result(entry->msg, entry->index[i], result->action,
                            result->dsn, result->reason, result->diagnostic,
                            result->remote_mta,
                            result->category != NULL ? &class : NULL);
        return;
    }
    msg_warn("%s: %s agent: result for unknown offset %lld: ignored",
             entry->msg->qid, entry->dest->transport, result->offset);
}

/* qmgr_job_list - a list from the agent: RESULT or DONE */
static void qmgr_job_list(QMGR_CONN *conn, ATTR_LIST *list, void *arg)
{
    QMGR_JOB *job = arg;
    const char *request = attr_get_str(list, DELIVER_ATTR_REQUEST);
    VSTR *why = vstr_alloc(100);

    job->heard = true;
    if (!job->greeted) {
        long long reuse = 0;

        if (deliver_hello_take(list, why) < 0) {
            msg_warn("%s: %s agent: %s", job->entry->msg->qid,
                     job->entry->dest->transport, vstr_str(why));
            job->mismatch = true;
            qmgr_job_finish(job, vstr_str(why), false);
        } else {
            job->greeted = true;
            job->reuse_ok =
                attr_get_int(list, DELIVER_ATTR_REUSE, &reuse) && reuse == 1;
        }
    } else if (request && strcmp(request, DELIVER_REQ_RESULT) == 0) {
        DELIVER_RESULT result;

        if (deliver_result_take(list, &result, why) < 0)
            msg_warn("%s: %s agent: bad result: %s: ignored",
                     job->entry->msg->qid, job->entry->dest->transport,
                     vstr_str(why));
        else
            qmgr_job_result(job, &result);
    } else if (request && strcmp(request, DELIVER_REQ_DONE) == 0) {
        DELIVER_DONE done;

        if (deliver_done_take(list, &done, why) < 0) {
            msg_warn("%s: %s agent: bad done: %s", job->entry->msg->qid,
                     job->entry->dest->transport, vstr_str(why));
            qmgr_job_finish(job, "malformed DONE", false);
        } else {
            job->done_seen = true;
            job->done_status = done.status;
            job->site_failed = done.site_failed;
            job->source_failed = done.source_failed;
            if (done.reason)
                job->done_reason = mystrdup(done.reason);
            qmgr_job_finish(job, "done", false);
        }
    } else {
        msg_warn("%s: %s agent: unexpected request \"%s\"",
                 job->entry->msg->qid, job->entry->dest->transport,
                 request ? request : "(none)");
        qmgr_job_finish(job, "protocol error", false);
    }
    vstr_free(why);
}

/* qmgr_job_end - the connection ended before DONE: the agent died when
   it was lost (EOF or an error), not when it timed out or talked nonsense */
static void qmgr_job_end(QMGR_CONN *conn, const char *why, void *arg)
{
    size_t error_len = strlen(QMGR_CONN_ERROR);
    bool agent_died = strcmp(why, QMGR_CONN_LOST) == 0 ||
                      strncmp(why, QMGR_CONN_ERROR, error_len) == 0;
    QMGR_JOB *job = arg;

    /* A kept connection the agent closed before it took the request. */
    if (job->reused && !job->heard && agent_died)
        job->never_started = true;
    qmgr_job_finish(job, why, agent_died);
}

/* qmgr_deliver_start - hand entry to its transport's agent */
void qmgr_deliver_start(QMGR_CTX *ctx, QMGR_ENTRY *entry)
{
    QMGR_MESSAGE *msg = entry->msg;
    QMGR_JOB *job = mycalloc(1, sizeof(*job));
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    DELIVER_REQ request;
    ATTR_LIST *list;
    VSTR *wire;

    job->ctx = ctx;
    job->entry = entry;
    job->answered = mycalloc(entry->count, sizeof(bool));
    ctx->jobs_running++;
    mail_queue_service(path, ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                       entry->dest->transport);
    job->path = mystrdup(vstr_str(path));
    if ((job->conn = qmgr_idle_take(ctx, vstr_str(path))) != NULL) {
        job->reused = job->greeted = job->reuse_ok = true;
        qmgr_conn_rebind(job->conn, qmgr_job_list, qmgr_job_end, job,
                         ctx->conf.job_timeout > 0 ? ctx->conf.job_timeout
                                                   : QMGR_JOB_NO_TIMEOUT);
    } else {
        job->conn = qmgr_conn_open(ctx->base, vstr_str(path),
                                   ctx->conf.job_timeout, DELIVER_LIST_MAX,
                                   qmgr_job_list, qmgr_job_end, job, why);
    }
    if (job->conn == NULL) {
        /* EAGAIN: the agent's listen queue is full. ECONNREFUSED: the
           socket is there but nobody listens right now (master is being
           restarted; when it is gone, qmgr goes too and the next one
           takes active/ back at once). Neither is a failure: wait. */
        int conn_errno = errno;
        bool busy = conn_errno == EAGAIN || conn_errno == ECONNREFUSED;

        ctx->jobs_running--;
        myfree(job->path);
        myfree(job->answered);
        myfree(job);
        if (busy) {
            if (conn_errno == ECONNREFUSED)
                msg_warn("%s: %s: waiting", msg->qid, vstr_str(why));
            qmgr_dest_push_back(entry->dest, entry);
        } else {
            msg_warn("%s: %s", msg->qid, vstr_str(why));
            /* Not the destination's fault: no site failure, no attempt. */
            for (size_t i = 0; i < entry->count; i++)
                qmgr_message_defer_self(msg, entry->index[i], "4.3.0",
                                        "mail transport unavailable");
            qmgr_dest_job_done(entry->dest, QMGR_SCHED_NOT_ATTEMPTED, NULL);
            qmgr_entry_free(entry);
        }
        vstr_free(path);
        vstr_free(why);
        return;
    }
    if ((job->next = ctx->jobs) != NULL)
        job->next->prev = job;
    ctx->jobs = job;
    /* HELLO, the request and its recipients go out in one write. */
    wire = vstr_alloc(512);
    if (!job->reused) {
        list = deliver_hello_list();
        attr_list_encode(list, wire);
        attr_list_free(list);
    }
    request = (DELIVER_REQ){
        .queue_name = MAIL_QUEUE_ACTIVE,
        .queue_id = msg->qid,
        .nexthop = entry->dest->nexthop,
        .sender = msg->info->sender,
        .active_usec = msg->active_usec,
        .rcpt_want = entry->count,
        .conn_messages = qmgr_shaping_conn_messages(entry->dest->shape),
        .conn_group = entry->dest->shape ? entry->dest->shape->name : NULL,
        .conn_max = qmgr_shaping_conn_max(entry->dest->shape),
        .source_address =
            entry->dest->source ? entry->dest->source->address : NULL,
        .source_helo =
            entry->dest->source ? entry->dest->source->helo_name : NULL};
    list = deliver_req_list(&request);
    attr_list_encode(list, wire);
    attr_list_free(list);
    for (size_t i = 0; i < entry->count; i++) {
        QFILE_RCPT *rcpt = &msg->info->rcpts[entry->index[i]];
        DELIVER_RCPT out = {.offset = (long long) rcpt->offset,
                            .address = rcpt->address,
                            .orcpt = rcpt->orcpt,
                            .notify = rcpt->notify};

        list = deliver_rcpt_list(&out);
        attr_list_encode(list, wire);
        attr_list_free(list);
    }
    qmgr_conn_send_wire(job->conn, wire);
    vstr_free(wire);
    vstr_free(path);
    vstr_free(why);
}
