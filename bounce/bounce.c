/*
 * bounce - the bounce daemon: turns a message's logs into one DSN
 *
 * Serves private/bounce (global/bounce_proto.h), one request per
 * connection: both sides greet (a peer of another protocol version is
 * logged with both versions and the connection closed, no STATUS, nothing
 * queued), then qmgr names a message and a kind; bounce reads the queue file
 * read-only and the log (bounce/QID for "bounce", defer/QID for "delay"),
 * keeps the records the sender asked to hear of (NOTIFY), composes one
 * multipart/report (bounce_dsn.c), hands it to cleanup (bounce_cleanup.c)
 * with the null sender and answers status 0 only once cleanup has
 * committed it. Everything else is an error with a reason and nothing
 * queued: qmgr keeps the log and asks again later.
 *
 * Who gets the notice:
 *   the sender                    with envelope sender <>
 *   sender <>                     no notice; failures go as a postmaster
 *                                 copy to 2bounce_notice_recipient (when
 *                                 set) from double-bounce@$myorigin
 *   sender double-bounce@$myorigin  nothing, only logged
 *
 * Requests are rare, so the work is blocking, one connection at a time per
 * process (master starts siblings while this one says busy), every read and
 * write with an ipc_timeout. The modules are listed in bounce.h.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "attr.h"
#include "bounce.h"
#include "bounce_dsn.h"
#include "bounce_proto.h"
#include "cleanup_proto.h"
#include "dsn_log.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qid.h"
#include "vstr.h"

#define BOUNCE_HEADERS_MAX (1024 * 1024) /* headers returned at most */
#define BOUNCE_TIMEOUT_MAX_MS (24 * 3600 * 1000) /* fits an int */

typedef struct BOUNCE_CTX {
    char *queue_dir;
    char *cleanup_path; /* queue_dir/private/cleanup */
    char *myhostname;
    char *myorigin;
    char *notice_rcpt; /* 2bounce_notice_recipient */
    char *double_bounce; /* double-bounce@$myorigin */
    long long size_limit; /* bounce_size_limit */
    long long max_lifetime; /* maximal_queue_lifetime */
    int timeout_ms; /* ipc_timeout */
} BOUNCE_CTX;

/* The notice being composed, for the compose callback. */
typedef struct BOUNCE_JOB {
    BOUNCE_DSN dsn;
} BOUNCE_JOB;

/* bounce_rcpt_pending - is address a recipient not yet done? */
static bool bounce_rcpt_pending(const QFILE_INFO *info, const char *address)
{
    for (size_t i = 0; i < info->rcpt_count; i++)
        if (!info->rcpts[i].done &&
            strcmp(info->rcpts[i].address, address) == 0)
            return true;
    return false;
}

/* bounce_select - the records to report, latest per recipient, in the
   order recipients first appear; returns how many (the array is the
   caller's to free) */
static size_t bounce_select(const char *kind, const DSN_LOG *dlog,
                            const QFILE_INFO *info, const DSN_LOG_REC ***out)
{
    const DSN_LOG_REC **recs = mycalloc(dlog->count + 1, sizeof(*recs));
    bool delay = strcmp(kind, BOUNCE_KIND_DELAY) == 0;
    size_t count = 0;

    for (size_t i = 0; i < dlog->count; i++) {
        const DSN_LOG_REC *rec = dlog->recs + i;
        size_t j;

        if (!bounce_dsn_wanted(kind, rec))
            continue;
        /* A delay warning is only for recipients still waiting. */
        if (delay && !bounce_rcpt_pending(info, rec->address))
            continue;
        /* A crash between log and done mark can repeat a record. */
        for (j = 0; j < count; j++)
            if (strcmp(recs[j]->address, rec->address) == 0)
                break;
        recs[j] = rec;
        if (j == count)
            count++;
    }
    *out = recs;
    return count;
}

/* bounce_read_content - the original's content into out: whole, or only
   its header block; 0, or -1 with the reason in why */
static int bounce_read_content(int fd, bool whole, VSTR *out, VSTR *why)
{
    QFILE_READER *reader;
    QFILE_REC rec;
    int got;

    vstr_reset(out);
    if (lseek(fd, 0, SEEK_SET) < 0) {
        vstr_sprintf(why, "seek: %s", strerror(errno));
        return -1;
    }
    reader = qfile_reader_alloc(fd);
    while ((got = qfile_read_rec(reader, &rec, why)) > 0) {
        if (rec.type != QFILE_REC_CONT)
            continue;
        vstr_ncat(out, rec.data, rec.len);
        if (!whole && (bounce_dsn_header_len(vstr_str(out), vstr_len(out)) <
                           vstr_len(out) ||
                       vstr_len(out) >= BOUNCE_HEADERS_MAX))
            break;
    }
    qfile_reader_free(reader);
    if (got < 0)
        return -1;
    if (!whole) {
        size_t len = bounce_dsn_header_len(vstr_str(out), vstr_len(out));

        vstr_truncate(out, len < BOUNCE_HEADERS_MAX ? len : BOUNCE_HEADERS_MAX);
    }
    return 0;
}

/* bounce_boundary - a MIME boundary no content will hold */
static void bounce_boundary(VSTR *buf, const char *qid, const char *host)
{
    unsigned long long rnd = 0;

    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
        rnd = (unsigned long long) time(NULL) ^
              ((unsigned long long) getpid() << 32);
    vstr_sprintf(buf, "%s.%016llx/%s", qid, rnd, host);
}

/* bounce_compose - the cleanup callback: the notice, now it has an ID */
static void bounce_compose(void *arg, const char *dsn_queue_id, VSTR *content)
{
    BOUNCE_JOB *job = arg;

    job->dsn.dsn_queue_id = dsn_queue_id;
    job->dsn.now = time(NULL);
    bounce_dsn_compose(content, &job->dsn);
}

/* bounce_notify - one request; 0 (dsn_qid set when a notice was queued),
   or -1 with the reason in why */
static int bounce_notify(BOUNCE_CTX *ctx, const char *kind,
                         const char *queue_name, const char *qid, VSTR *dsn_qid,
                         VSTR *why)
{
    VSTR *path =
        mail_queue_path(vstr_alloc(100), ctx->queue_dir, queue_name, qid);
    VSTR *content = vstr_alloc(4096);
    VSTR *boundary = vstr_alloc(100);
    VSTR *to = vstr_alloc(100);
    const DSN_LOG_REC **recs = NULL;
    QFILE_INFO *info = NULL;
    DSN_LOG *dlog = NULL;
    BOUNCE_JOB job;
    const char *dsn_sender = "";
    const char *ret_attr;
    const char *what;
    bool whole;
    size_t count;
    int flags = 0;
    int status = -1;
    int fd;

    memset(&job, 0, sizeof(job));
    vstr_reset(dsn_qid);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
        vstr_sprintf(why, "open %s: %s", vstr_str(path), strerror(errno));
        goto out;
    }
    if ((info = qfile_info_read(fd, why)) == NULL)
        goto out;
    dlog = dsn_log_read(ctx->queue_dir,
                        strcmp(kind, BOUNCE_KIND_DELAY) == 0 ? DSN_LOG_DEFER
                                                             : DSN_LOG_BOUNCE,
                        qid, why);
    if (dlog == NULL)
        goto out;
    count = bounce_select(kind, dlog, info, &recs);

    job.dsn.kind = strcmp(kind, BOUNCE_KIND_DELAY) == 0 ? BOUNCE_DSN_DELAY
                                                        : BOUNCE_DSN_SUCCESS;
    for (size_t i = 0; i < count; i++)
        if (strcmp(recs[i]->action, DSN_ACTION_FAILED) == 0)
            job.dsn.kind = BOUNCE_DSN_FAILURE;

    if (*info->sender == 0) {
        size_t kept = 0;

        /* Nobody answers <>: only failures go, to the postmaster. */
        if (job.dsn.kind == BOUNCE_DSN_FAILURE)
            for (size_t i = 0; i < count; i++)
                if (strcmp(recs[i]->action, DSN_ACTION_FAILED) == 0)
                    recs[kept++] = recs[i];
        count = kept;
        if (count > 0 && *ctx->notice_rcpt == 0) {
            msg_info("%s: discarding bounce of a message from <>", qid);
            count = 0;
        }
        if (count > 0) {
            job.dsn.postmaster_copy = true;
            vstr_cpy(to, ctx->notice_rcpt);
            if (strchr(ctx->notice_rcpt, '@') == NULL)
                vstr_sprintf_append(to, "@%s", ctx->myorigin);
            dsn_sender = ctx->double_bounce;
        }
    } else if (strcasecmp(info->sender, ctx->double_bounce) == 0) {
        if (count > 0)
            msg_info("%s: discarding double bounce", qid);
        count = 0;
    } else {
        vstr_cpy(to, info->sender);
    }
    if (count == 0) {
        status = 0; /* nothing to send */
        goto out;
    }

    ret_attr = qfile_info_attr(info, "ret");
    whole = !(ret_attr != NULL && strcasecmp(ret_attr, "HDRS") == 0);
    if (ctx->size_limit > 0 && info->content_size > ctx->size_limit)
        whole = false;
    if (bounce_read_content(fd, whole, content, why) < 0)
        goto out;
    if (whole && bounce_dsn_has_8bit(vstr_str(content), vstr_len(content))) {
        size_t hlen =
            bounce_dsn_header_len(vstr_str(content), vstr_len(content));

        /* message/rfc822 allows no encoding, and a 7-bit server on the way
           back could not take 8-bit: return the headers, say why. */
        if (!bounce_dsn_has_8bit(vstr_str(content) + hlen,
                                 vstr_len(content) - hlen)) {
            /* only the headers are 8-bit: the notice must be 8-bit */
        } else {
            vstr_truncate(content, hlen);
            whole = false;
            job.dsn.body_omitted_8bit = true;
        }
    }
    if (bounce_dsn_has_8bit(vstr_str(content), vstr_len(content)) ||
        bounce_dsn_has_8bit(vstr_str(to), vstr_len(to)) ||
        bounce_dsn_has_8bit(info->sender, strlen(info->sender)))
        flags |= CLEANUP_FLAG_8BIT;
    for (size_t i = 0; i < count; i++)
        if (bounce_dsn_has_8bit(recs[i]->address, strlen(recs[i]->address)))
            flags |= CLEANUP_FLAG_8BIT;

    bounce_boundary(boundary, qid, ctx->myhostname);
    job.dsn.myhostname = ctx->myhostname;
    job.dsn.queue_id = qid;
    job.dsn.orig_sender = info->sender;
    job.dsn.to = vstr_str(to);
    job.dsn.envid = qfile_info_attr(info, "envid");
    job.dsn.arrival = info->arrival.tv_sec;
    job.dsn.retry_until = info->arrival.tv_sec + (time_t) ctx->max_lifetime;
    job.dsn.boundary = vstr_str(boundary);
    job.dsn.rcpts = recs;
    job.dsn.rcpt_count = count;
    job.dsn.content = vstr_str(content);
    job.dsn.content_len = vstr_len(content);
    job.dsn.content_full = whole;
    if (bounce_cleanup_submit(ctx->cleanup_path, ctx->timeout_ms, flags,
                              dsn_sender, vstr_str(to), bounce_compose, &job,
                              dsn_qid, why) < 0)
        goto out;

    what = job.dsn.postmaster_copy              ? "postmaster non-delivery"
           : job.dsn.kind == BOUNCE_DSN_DELAY   ? "sender delay"
           : job.dsn.kind == BOUNCE_DSN_SUCCESS ? "sender delivery status"
                                                : "sender non-delivery";
    msg_info("%s: %s notification: %s", qid, what, vstr_str(dsn_qid));
    status = 0;

out:
    if (fd >= 0)
        (void) close(fd);
    if (info != NULL)
        qfile_info_free(info);
    dsn_log_free(dlog);
    myfree(recs);
    vstr_free(path);
    vstr_free(content);
    vstr_free(boundary);
    vstr_free(to);
    return status;
}

/* bounce_reply - the STATUS list; 0 or -1 (why) */
static int bounce_reply(ATTR_STREAM *stream, int status, const char *reason,
                        const char *dsn_qid, VSTR *why)
{
    BOUNCE_STATUS reply = {
        .status = status, .reason = reason, .dsn_queue_id = dsn_qid};
    ATTR_LIST *list = bounce_status_list(&reply);
    int ret;

    ret = attr_stream_write(stream, list, why);
    attr_list_free(list);
    return ret;
}

/* bounce_greet - send our HELLO and check qmgr's; 0, or -1 after a
   warning (the connection is to be closed without a STATUS) */
static int bounce_greet(ATTR_STREAM *stream, VSTR *why)
{
    ATTR_LIST *list = bounce_hello_list();
    int ret = attr_stream_write(stream, list, why);

    list = attr_list_free(list);
    if (ret < 0) {
        msg_warn("bounce greeting: %s", vstr_str(why));
        return -1;
    }
    if (attr_stream_read(stream, &list, why) < 0) {
        msg_warn("bounce greeting: %s", vstr_str(why));
        return -1;
    }
    ret = bounce_hello_take(list, why);
    attr_list_free(list);
    if (ret < 0)
        msg_warn("bounce request: %s", vstr_str(why));
    return ret;
}

/* bounce_serve - one connection: greetings, one request, one reply */
static void bounce_serve(BOUNCE_CTX *ctx, int fd)
{
    ATTR_STREAM *stream =
        attr_stream_open(fd, BOUNCE_LIST_MAX, ctx->timeout_ms);
    VSTR *why = vstr_alloc(100);
    VSTR *dsn_qid = vstr_alloc(QID_SIZE);
    ATTR_LIST *list = NULL;
    BOUNCE_REQ req;
    int status = 1;

    if (bounce_greet(stream, why) < 0)
        goto out;
    if (attr_stream_read(stream, &list, why) < 0) {
        msg_warn("bounce request: %s", vstr_str(why));
        goto out;
    }
    if (bounce_req_take(list, &req, why) < 0) {
        msg_warn("bad bounce request: %s", vstr_str(why));
        (void) bounce_reply(stream, 1, vstr_str(why), NULL, why);
        goto out;
    }
    if (bounce_notify(ctx, req.kind, req.queue_name, req.queue_id, dsn_qid,
                      why) == 0)
        status = 0;
    else
        msg_warn("%s: %s notice failed: %s", req.queue_id, req.kind,
                 vstr_str(why));
    if (bounce_reply(stream, status, status ? vstr_str(why) : NULL,
                     vstr_str(dsn_qid), why) < 0)
        msg_warn("bounce reply: %s", vstr_str(why));

out:
    attr_list_free(list);
    attr_stream_close(stream);
    vstr_free(why);
    vstr_free(dsn_qid);
}

/* bounce_accept - a connection from qmgr */
static void bounce_accept(MAIL_SERVER *server, int fd, void *arg)
{
    /* Blocking work: let master give new connections to a sibling. */
    mail_server_busy(server, true);
    bounce_serve(arg, fd);
    mail_server_busy(server, false);
}

/* bounce_pre_loop - read the configuration */
static void bounce_pre_loop(MAIL_SERVER *server, void *arg)
{
    BOUNCE_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    VSTR *buf = vstr_alloc(100);
    long long timeout = mail_conf_time(conf, "ipc_timeout") * 1000;

    ctx->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    mail_queue_service(buf, ctx->queue_dir, MAIL_QUEUE_PRIVATE,
                       CLEANUP_SERVICE);
    ctx->cleanup_path = mystrdup(vstr_str(buf));
    ctx->myhostname = mystrdup(mail_conf_str(conf, "myhostname"));
    ctx->myorigin = mystrdup(mail_conf_str(conf, "myorigin"));
    if (*ctx->myorigin == 0) {
        myfree(ctx->myorigin);
        ctx->myorigin = mystrdup(ctx->myhostname);
    }
    ctx->notice_rcpt =
        mystrdup(mail_conf_str(conf, "2bounce_notice_recipient"));
    vstr_sprintf(buf, "double-bounce@%s", ctx->myorigin);
    ctx->double_bounce = mystrdup(vstr_str(buf));
    ctx->size_limit = mail_conf_size(conf, "bounce_size_limit");
    ctx->max_lifetime = mail_conf_time(conf, "maximal_queue_lifetime");
    /* ipc_timeout is at least 1s (mail_params.c); the cap is ours. */
    if (timeout > BOUNCE_TIMEOUT_MAX_MS)
        timeout = BOUNCE_TIMEOUT_MAX_MS;
    ctx->timeout_ms = (int) timeout;
    vstr_free(buf);
}

/* main - the bounce daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = bounce_pre_loop,
        .on_accept = bounce_accept,
    };
    BOUNCE_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "bounce", &ops, &ctx);
    myfree(ctx.queue_dir);
    myfree(ctx.cleanup_path);
    myfree(ctx.myhostname);
    myfree(ctx.myorigin);
    myfree(ctx.notice_rcpt);
    myfree(ctx.double_bounce);
    return status;
}
