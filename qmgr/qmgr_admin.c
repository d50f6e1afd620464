/*
 * qmgr_admin - the administrator's requests about messages in active/
 *
 * `sluice hold|delete|requeue` moves files in incoming/, deferred/ and
 * hold/ itself, but a file in active/ belongs to qmgr, so for those it
 * asks here, on queue_directory/private/qmgr-admin, a socket qmgr makes
 * itself (global/qmgr_admin_proto.h is the protocol). A message in memory
 * gets the request through qmgr_message_admin(), which acts at a safe
 * point. A file in active/ that is not in memory (the scan that takes
 * back active/ at start has not reached it, or a move out of active/
 * failed) has nothing in flight: it is moved or removed here at once.
 * Anything else is "not in active/", and the admin command looks again.
 *
 * Each connection starts with the greetings: ours goes out on accept, and
 * the command's must be the first list; a command of another protocol
 * version is logged with both versions and its connection closed before
 * any request is acted on. Lists are built and read only by the codec.
 */
#include "sys_defs.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "attr.h"
#include "attr_conn.h"
#include "dsn_log.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "qmgr_admin_proto.h"
#include "sock.h"
#include "vstr.h"

#define QMGR_ADMIN_BACKLOG 16
#define QMGR_ADMIN_IDLE 60 /* seconds an idle admin connection may stay */

/* One admin connection. */
typedef struct QMGR_ADMIN_PEER {
    QMGR_CTX *ctx;
    bool greeted; /* the command's HELLO has come */
    bool closing; /* close once our output has gone out */
} QMGR_ADMIN_PEER;

/* qmgr_admin_send - queue one list, and free it */
static void qmgr_admin_send(ATTR_CONN *conn, ATTR_LIST *list)
{
    attr_conn_send(conn, list);
    attr_list_free(list);
}

/* qmgr_admin_reply - queue one REPLY */
static void qmgr_admin_reply(ATTR_CONN *conn, int status, const char *reason)
{
    QMGR_ADMIN_REPLY reply = {.status = status, .reason = reason};

    qmgr_admin_send(conn, qmgr_admin_reply_list(&reply));
}

/* qmgr_admin_move - move active/qid (at path) to queue; the reply status */
static int qmgr_admin_move(QMGR_CTX *ctx, const char *qid, const char *queue,
                           const VSTR *path, VSTR *reason)
{
    if (mail_queue_move(ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE, queue, qid) ==
        0)
        return QMGR_ADMIN_STAT_OK;
    int status =
        errno == ENOENT ? QMGR_ADMIN_STAT_NOTHERE : QMGR_ADMIN_STAT_FAIL;

    vstr_sprintf(reason, "move %s to %s: %m", vstr_str(path), queue);
    return status;
}

/* qmgr_admin_unloaded - act on a file in active/ that is not in memory;
   the reply status */
static int qmgr_admin_unloaded(QMGR_CTX *ctx, const char *qid, QMGR_ADMIN_OP op,
                               VSTR *reason)
{
    VSTR *path = mail_queue_path(vstr_alloc(100), ctx->conf.queue_dir,
                                 MAIL_QUEUE_ACTIVE, qid);
    struct stat st;
    int status = QMGR_ADMIN_STAT_OK;

    if (lstat(vstr_str(path), &st) < 0) {
        status = QMGR_ADMIN_STAT_NOTHERE;
    } else if (op == QMGR_ADMIN_DELETE) {
        if (unlink(vstr_str(path)) < 0) {
            status = errno == ENOENT ? QMGR_ADMIN_STAT_NOTHERE
                                     : QMGR_ADMIN_STAT_FAIL;
            vstr_sprintf(reason, "remove %s: %m", vstr_str(path));
        } else {
            (void) dsn_log_remove(ctx->conf.queue_dir, DSN_LOG_DEFER, qid);
            (void) dsn_log_remove(ctx->conf.queue_dir, DSN_LOG_BOUNCE, qid);
            msg_info("%s: removed by the administrator", qid);
        }
    } else if (op == QMGR_ADMIN_HOLD) {
        if ((status = qmgr_admin_move(ctx, qid, MAIL_QUEUE_HOLD, path,
                                      reason)) == QMGR_ADMIN_STAT_OK)
            msg_info("%s: placed on hold", qid);
    } else if (op == QMGR_ADMIN_REQUEUE && !ctx->active_scan.pending) {
        /* Not in memory and the start-up scan of active/ is over: nothing
           would ever take it, so it goes through incoming/ again. */
        if ((status = qmgr_admin_move(ctx, qid, MAIL_QUEUE_INCOMING, path,
                                      reason)) == QMGR_ADMIN_STAT_OK) {
            msg_info("%s: requeued", qid);
            qmgr_scan_incoming(ctx);
        }
    }
    /* requeue during the start-up scan: that scan takes it soon. */
    vstr_free(path);
    return status;
}

/* qmgr_admin_request - one REQUEST the codec took; the reply status */
static int qmgr_admin_request(QMGR_CTX *ctx, const QMGR_ADMIN_REQUEST *req,
                              VSTR *reason)
{
    const char *qid = req->queue_id;
    QMGR_MESSAGE *msg;
    QMGR_ADMIN_OP op;

    if (strcmp(req->request, QMGR_ADMIN_REQ_HOLD) == 0)
        op = QMGR_ADMIN_HOLD;
    else if (strcmp(req->request, QMGR_ADMIN_REQ_DELETE) == 0)
        op = QMGR_ADMIN_DELETE;
    else
        op = QMGR_ADMIN_REQUEUE;
    if ((msg = qmgr_message_find(ctx, qid)) == NULL)
        return qmgr_admin_unloaded(ctx, qid, op, reason);
    qmgr_message_admin(msg, op);
    qmgr_dest_schedule(ctx);
    return QMGR_ADMIN_STAT_OK;
}

/* qmgr_admin_list - one list from the command: its HELLO, then REQUESTs
   (each answered). A bad HELLO: read no more, and close once our own HELLO
   has gone out, so the peer learns our version */
static void qmgr_admin_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    QMGR_ADMIN_PEER *peer = arg;
    QMGR_ADMIN_REQUEST req;
    VSTR *why = vstr_alloc(100);
    int status;

    if (!peer->greeted) {
        if (qmgr_admin_hello_take(list, why) < 0) {
            msg_warn("%s: %s", QMGR_ADMIN_SERVICE, vstr_str(why));
            peer->closing = true;
            attr_conn_reading(conn, false);
            attr_conn_drain_check(conn);
        } else {
            peer->greeted = true;
        }
        vstr_free(why);
        return;
    }
    vstr_cpy(why, "");
    if (qmgr_admin_request_take(list, &req, why) < 0)
        status = QMGR_ADMIN_STAT_FAIL;
    else
        status = qmgr_admin_request(peer->ctx, &req, why);
    qmgr_admin_reply(conn, status, *vstr_str(why) ? vstr_str(why) : NULL);
    vstr_free(why);
}

/* qmgr_admin_end - EOF, error, idle timeout or a malformed request: close */
static void qmgr_admin_end(ATTR_CONN *conn, ATTR_CONN_END kind, const char *why,
                           void *arg)
{
    if (kind == ATTR_CONN_MALFORMED)
        msg_warn("%s: malformed request: %s", QMGR_ADMIN_SERVICE, why);
    attr_conn_free(conn);
    myfree(arg);
}

/* qmgr_admin_drain - our output is out: close when closing */
static void qmgr_admin_drain(ATTR_CONN *conn, void *arg)
{
    QMGR_ADMIN_PEER *peer = arg;

    if (peer->closing) {
        attr_conn_free(conn);
        myfree(peer);
    }
}

static const ATTR_CONN_OPS qmgr_admin_ops = {
    .on_list = qmgr_admin_list,
    .on_end = qmgr_admin_end,
    .on_drain = qmgr_admin_drain,
};

/* qmgr_admin_accept - a new admin connection */
static void qmgr_admin_accept(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;
    QMGR_ADMIN_PEER *peer;
    ATTR_CONN *conn;
    int conn_fd;

    if ((conn_fd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            msg_warn("accept on %s: %m", QMGR_ADMIN_SERVICE);
        return;
    }
    peer = mycalloc(1, sizeof(*peer));
    peer->ctx = ctx;
    conn = attr_conn_accept(ctx->base, conn_fd, QMGR_ADMIN_LIST_MAX,
                            &qmgr_admin_ops, peer);
    attr_conn_timeouts(conn, QMGR_ADMIN_IDLE, QMGR_ADMIN_IDLE);
    qmgr_admin_send(conn, qmgr_admin_hello_list());
}

/* qmgr_admin_init - listen on private/qmgr-admin (a failure only costs
   the admin command its way to qmgr: it says so) */
void qmgr_admin_init(QMGR_CTX *ctx)
{
    VSTR *path = vstr_alloc(100);

    ctx->admin_fd = -1;
    mail_queue_service(path, ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                       QMGR_ADMIN_SERVICE);
    if ((ctx->admin_fd =
             sock_unix_listen(vstr_str(path), QMGR_ADMIN_BACKLOG, 0600)) < 0) {
        msg_warn("cannot listen on %s: %m", vstr_str(path));
    } else if ((ctx->admin_ev =
                    event_new(ctx->base, ctx->admin_fd, EV_READ | EV_PERSIST,
                              qmgr_admin_accept, ctx)) == NULL ||
               event_add(ctx->admin_ev, NULL) < 0) {
        msg_fatal("cannot add the %s event", QMGR_ADMIN_SERVICE);
    }
    vstr_free(path);
}
