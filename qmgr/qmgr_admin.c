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
 * failed) has nothing in flight: it is moved or removed here at once,
 * after the files of finished messages that wait for qmgr_reuse.c's
 * thread have left active/ (one of those is done with, not a file to
 * requeue or hold).
 * Anything else is "not in active/", and the admin command looks again.
 *
 * Each connection starts with the greetings: ours goes out on accept, and
 * the command's must be the first list; a command of another protocol
 * version is logged with both versions and its connection closed before
 * any request is acted on (qmgr_listen.c, shared with qmgr-shaping).
 * Lists are built and read only by the codec.
 */
#include "sys_defs.h"

#include <sys/stat.h>

#include "attr.h"
#include "attr_conn.h"
#include "dsn_log.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "qmgr_admin_proto.h"
#include "vstr.h"

#define QMGR_ADMIN_IDLE 60 /* seconds an idle admin connection may stay */

/* qmgr_admin_reply - queue one REPLY */
static void qmgr_admin_reply(ATTR_CONN *conn, int status, const char *reason)
{
    QMGR_ADMIN_REPLY reply = {.status = status, .reason = reason};

    qmgr_listen_send(conn, qmgr_admin_reply_list(&reply));
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

    /* A finished file may still wait in active/ for qmgr_reuse.c's
       thread: not one to act on. */
    qmgr_reuse_settled(ctx);
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

/* qmgr_admin_serve - one REQUEST from the command (after the greetings,
   qmgr_listen.c), answered with its REPLY */
static void qmgr_admin_serve(QMGR_CTX *ctx, ATTR_CONN *conn,
                             const ATTR_LIST *list)
{
    QMGR_ADMIN_REQUEST req;
    VSTR *why = vstr_alloc(100);
    int status;

    if (qmgr_admin_request_take(list, &req, why) < 0)
        status = QMGR_ADMIN_STAT_FAIL;
    else
        status = qmgr_admin_request(ctx, &req, why);
    qmgr_admin_reply(conn, status, *vstr_str(why) ? vstr_str(why) : NULL);
    vstr_free(why);
}

/* qmgr_admin_init - listen on private/qmgr-admin (a failure only costs
   the admin command its way to qmgr: it says so) */
void qmgr_admin_init(QMGR_CTX *ctx)
{
    static const QMGR_LISTEN_OPS ops = {
        .service = QMGR_ADMIN_SERVICE,
        .hello_list = qmgr_admin_hello_list,
        .hello_take = qmgr_admin_hello_take,
        .request = qmgr_admin_serve,
    };

    ctx->admin_listener =
        qmgr_listen(ctx, &ops, QMGR_ADMIN_LIST_MAX, QMGR_ADMIN_IDLE);
}
