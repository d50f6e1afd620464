/*
 * qmgr_shaping_admin - `sluice shaping` on private/qmgr-shaping
 *
 * The protocol is global/shaping_proto.h: greetings, then requests, each
 * answered in full before the next is read. "list" sends one BUCKET per
 * bucket qmgr holds (qmgr_shaping.c), then the REPLY; "suspend" and
 * "resume" act on a bucket at once (the scheduler runs again) and reply.
 * The socket is qmgr's own (mode 0600), as private/qmgr-admin is.
 */
#include "sys_defs.h"

#include <sys/socket.h>

#include <event2/event.h>

#include "attr.h"
#include "attr_conn.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "shaping.h"
#include "shaping_proto.h"
#include "sock.h"
#include "vstr.h"

#define QMGR_SHAPING_ADMIN_BACKLOG 16
#define QMGR_SHAPING_ADMIN_IDLE 60 /* seconds an idle connection may stay */

typedef struct QMGR_SHAPING_PEER {
    QMGR_CTX *ctx;
    ATTR_CONN *conn;
    bool greeted;
    bool closing;
} QMGR_SHAPING_PEER;

/* qmgr_shaping_admin_send - queue one list, and free it */
static void qmgr_shaping_admin_send(ATTR_CONN *conn, ATTR_LIST *list)
{
    attr_conn_send(conn, list);
    attr_list_free(list);
}

/* qmgr_shaping_admin_bucket - one BUCKET */
static void qmgr_shaping_admin_bucket(const QMGR_SHAPE *shape, size_t queued,
                                      long long now, void *arg)
{
    QMGR_SHAPING_PEER *peer = arg;
    const SHAPING_RULE *rule = shape->rule;
    static const SHAPING_RATE no_rate = {0, 0};
    const SHAPING_RATE *msg_rate = rule ? &rule->message_rate : &no_rate;
    const SHAPING_RATE *conn_rate = rule ? &rule->connection_rate : &no_rate;
    long long burst = rule ? rule->burst : 1;
    VSTR *msg_text = vstr_alloc(20);
    VSTR *conn_text = vstr_alloc(20);
    long long left = shape->state.suspended_until - now;
    SHAPING_PROTO_BUCKET bucket = {
        .bucket = shape->name,
        .rule = rule ? rule->key : "-",
        .max_connections = rule ? rule->max_connections : 0,
        .connections = shape->state.connections,
        .message_rate = shaping_rate_format(msg_rate, msg_text),
        .message_tokens =
            shaping_gcra_tokens(&shape->state.messages, msg_rate, burst, now),
        .connection_rate = shaping_rate_format(conn_rate, conn_text),
        .connection_tokens =
            shaping_gcra_tokens(&shape->state.connects, conn_rate, burst, now),
        /* whole seconds, rounded up: "0" only when it is over */
        .suspended = left > 0 ? (left + 999999) / 1000000 : 0,
        .queued = (long long) queued,
    };

    qmgr_shaping_admin_send(peer->conn, shaping_proto_bucket_list(&bucket));
    vstr_free(msg_text);
    vstr_free(conn_text);
}

/* qmgr_shaping_admin_list - one list from the command */
static void qmgr_shaping_admin_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    QMGR_SHAPING_PEER *peer = arg;
    SHAPING_PROTO_REQUEST req;
    SHAPING_PROTO_REPLY reply = {SHAPING_PROTO_STAT_OK, NULL,
                                 peer->ctx->conf.shaping_refused};
    VSTR *why = vstr_alloc(100);

    if (!peer->greeted) {
        if (shaping_proto_hello_take(list, why) < 0) {
            msg_warn("%s: %s", SHAPING_PROTO_SERVICE, vstr_str(why));
            peer->closing = true;
            attr_conn_reading(conn, false);
            attr_conn_drain_check(conn);
        } else {
            peer->greeted = true;
        }
        vstr_free(why);
        return;
    }
    if (shaping_proto_request_take(list, &req, why) < 0) {
        reply.status = SHAPING_PROTO_STAT_FAIL;
    } else if (strcmp(req.request, SHAPING_PROTO_REQ_LIST) == 0) {
        qmgr_shaping_each(peer->ctx, qmgr_shaping_admin_bucket, peer);
    } else if (qmgr_shaping_suspend(
                   peer->ctx, req.name,
                   strcmp(req.request, SHAPING_PROTO_REQ_SUSPEND) == 0
                       ? req.seconds
                       : 0,
                   why) < 0) {
        reply.status = SHAPING_PROTO_STAT_FAIL;
    }
    if (reply.status != SHAPING_PROTO_STAT_OK)
        reply.reason = vstr_str(why);
    qmgr_shaping_admin_send(conn, shaping_proto_reply_list(&reply));
    vstr_free(why);
}

/* qmgr_shaping_admin_end - EOF, error, idle or malformed: close */
static void qmgr_shaping_admin_end(ATTR_CONN *conn, ATTR_CONN_END kind,
                                   const char *why, void *arg)
{
    if (kind == ATTR_CONN_MALFORMED)
        msg_warn("%s: malformed request: %s", SHAPING_PROTO_SERVICE, why);
    attr_conn_free(conn);
    myfree(arg);
}

/* qmgr_shaping_admin_drain - our output is out: close when closing */
static void qmgr_shaping_admin_drain(ATTR_CONN *conn, void *arg)
{
    QMGR_SHAPING_PEER *peer = arg;

    if (peer->closing) {
        attr_conn_free(conn);
        myfree(peer);
    }
}

static const ATTR_CONN_OPS qmgr_shaping_admin_ops = {
    .on_list = qmgr_shaping_admin_list,
    .on_end = qmgr_shaping_admin_end,
    .on_drain = qmgr_shaping_admin_drain,
};

/* qmgr_shaping_admin_accept - a new connection */
static void qmgr_shaping_admin_accept(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;
    QMGR_SHAPING_PEER *peer;
    int conn_fd;

    if ((conn_fd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            msg_warn("accept on %s: %m", SHAPING_PROTO_SERVICE);
        return;
    }
    peer = mycalloc(1, sizeof(*peer));
    peer->ctx = ctx;
    peer->conn = attr_conn_accept(ctx->base, conn_fd, SHAPING_PROTO_LIST_MAX,
                                  &qmgr_shaping_admin_ops, peer);
    attr_conn_timeouts(peer->conn, QMGR_SHAPING_ADMIN_IDLE,
                       QMGR_SHAPING_ADMIN_IDLE);
    qmgr_shaping_admin_send(peer->conn, shaping_proto_hello_list());
}

/* qmgr_shaping_admin_init - listen on private/qmgr-shaping (a failure only
   costs `sluice shaping` its way to qmgr: it says so) */
void qmgr_shaping_admin_init(QMGR_CTX *ctx)
{
    VSTR *path = vstr_alloc(100);
    struct event *ev;
    int fd;

    mail_queue_service(path, ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                       SHAPING_PROTO_SERVICE);
    if ((fd = sock_unix_listen(vstr_str(path), QMGR_SHAPING_ADMIN_BACKLOG,
                               0600)) < 0) {
        msg_warn("cannot listen on %s: %m", vstr_str(path));
    } else if ((ev = event_new(ctx->base, fd, EV_READ | EV_PERSIST,
                               qmgr_shaping_admin_accept, ctx)) == NULL ||
               event_add(ev, NULL) < 0) {
        msg_fatal("cannot add the %s event", SHAPING_PROTO_SERVICE);
    } else {
        ctx->shape_admin_ev = ev;
    }
    vstr_free(path);
}
