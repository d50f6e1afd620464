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

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "attr.h"
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
} QMGR_ADMIN_PEER;

static void qmgr_admin_event(struct bufferevent *bev, short what, void *arg);

/* qmgr_admin_send - queue one list, and free it */
static void qmgr_admin_send(struct bufferevent *bev, ATTR_LIST *list)
{
    VSTR *wire = vstr_alloc(100);

    attr_list_encode(list, wire);
    if (bufferevent_write(bev, vstr_str(wire), vstr_len(wire)) < 0)
        msg_fatal("cannot buffer %zu bytes", vstr_len(wire));
    attr_list_free(list);
    vstr_free(wire);
}

/* qmgr_admin_reply - queue one REPLY */
static void qmgr_admin_reply(struct bufferevent *bev, int status,
                             const char *reason)
{
    QMGR_ADMIN_REPLY reply = {.status = status, .reason = reason};

    qmgr_admin_send(bev, qmgr_admin_reply_list(&reply));
}

/* qmgr_admin_close - end a connection */
static void qmgr_admin_close(struct bufferevent *bev, QMGR_ADMIN_PEER *peer)
{
    bufferevent_free(bev);
    myfree(peer);
}

/* qmgr_admin_drained - what was queued has gone out: close */
static void qmgr_admin_drained(struct bufferevent *bev, void *arg)
{
    qmgr_admin_close(bev, arg);
}

/* qmgr_admin_close_after - read no more; close once what is queued (our
   HELLO, so the peer learns our version) has gone out, or on the idle
   timeout */
static void qmgr_admin_close_after(struct bufferevent *bev,
                                   QMGR_ADMIN_PEER *peer)
{
    (void) bufferevent_disable(bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        qmgr_admin_close(bev, peer);
    else
        bufferevent_setcb(bev, NULL, qmgr_admin_drained, qmgr_admin_event,
                          peer);
}

/* qmgr_admin_move - move active/qid (at path) to queue; the reply status */
static int qmgr_admin_move(QMGR_CTX *ctx, const char *qid, const char *queue,
                           const VSTR *path, VSTR *reason)
{
    if (mail_queue_move(ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE, queue, qid) ==
        0)
        return QMGR_ADMIN_STAT_OK;
    int status = errno == ENOENT ? QMGR_ADMIN_STAT_NOTHERE
                                 : QMGR_ADMIN_STAT_FAIL;

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
   (each answered); -1: close the connection */
static int qmgr_admin_list(QMGR_ADMIN_PEER *peer, struct bufferevent *bev,
                           const ATTR_LIST *list, VSTR *why)
{
    QMGR_ADMIN_REQUEST req;
    int status;

    if (!peer->greeted) {
        if (qmgr_admin_hello_take(list, why) < 0) {
            msg_warn("%s: %s", QMGR_ADMIN_SERVICE, vstr_str(why));
            return -1;
        }
        peer->greeted = true;
        return 0;
    }
    vstr_cpy(why, "");
    if (qmgr_admin_request_take(list, &req, why) < 0)
        status = QMGR_ADMIN_STAT_FAIL;
    else
        status = qmgr_admin_request(peer->ctx, &req, why);
    qmgr_admin_reply(bev, status, *vstr_str(why) ? vstr_str(why) : NULL);
    return 0;
}

/* qmgr_admin_read - answer every whole REQUEST that arrived */
static void qmgr_admin_read(struct bufferevent *bev, void *arg)
{
    QMGR_ADMIN_PEER *peer = arg;
    struct evbuffer *input = bufferevent_get_input(bev);
    VSTR *why = vstr_alloc(100);

    for (;;) {
        size_t len = evbuffer_get_length(input);
        ATTR_LIST *list = NULL;
        size_t used = 0;
        int ret;

        if (len == 0)
            break;
        ret = attr_list_decode((const char *) evbuffer_pullup(input, -1), len,
                               QMGR_ADMIN_LIST_MAX, &used, &list, why);
        if (ret == 0)
            break;
        if (ret < 0) {
            msg_warn("%s: malformed request: %s", QMGR_ADMIN_SERVICE,
                     vstr_str(why));
            qmgr_admin_close(bev, peer);
            break;
        }
        evbuffer_drain(input, used);
        ret = qmgr_admin_list(peer, bev, list, why);
        attr_list_free(list);
        if (ret < 0) {
            qmgr_admin_close_after(bev, peer);
            break;
        }
    }
    vstr_free(why);
}

/* qmgr_admin_event - EOF, error or idle timeout: close */
static void qmgr_admin_event(struct bufferevent *bev, short what, void *arg)
{
    qmgr_admin_close(bev, arg);
}

/* qmgr_admin_accept - a new admin connection */
static void qmgr_admin_accept(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;
    QMGR_ADMIN_PEER *peer;
    struct bufferevent *bev;
    struct timeval idle = {QMGR_ADMIN_IDLE, 0};
    int conn;

    if ((conn = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            msg_warn("accept on %s: %m", QMGR_ADMIN_SERVICE);
        return;
    }
    if ((bev = bufferevent_socket_new(ctx->base, conn,
                                      BEV_OPT_CLOSE_ON_FREE)) == NULL)
        msg_fatal("cannot create a connection event");
    peer = mycalloc(1, sizeof(*peer));
    peer->ctx = ctx;
    bufferevent_setcb(bev, qmgr_admin_read, NULL, qmgr_admin_event, peer);
    bufferevent_set_timeouts(bev, &idle, &idle);
    if (bufferevent_enable(bev, EV_READ | EV_WRITE) < 0)
        msg_fatal("cannot add a connection event");
    qmgr_admin_send(bev, qmgr_admin_hello_list());
}

/* qmgr_admin_init - listen on private/qmgr-admin (a failure only costs
   the admin command its way to qmgr: it says so) */
void qmgr_admin_init(QMGR_CTX *ctx)
{
    VSTR *path = vstr_alloc(100);

    ctx->admin_fd = -1;
    vstr_sprintf(path, "%s/%s/%s", ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
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
