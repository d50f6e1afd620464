/*
 * qmgr_listen - the listener skeleton of qmgr's administrative services
 *
 * private/qmgr-admin (qmgr_admin.c) and private/qmgr-shaping
 * (qmgr_shaping_admin.c) are served the same way, and only here: a
 * socket qmgr makes itself (mode 0600) under queue_directory/private;
 * each accepted connection gets our HELLO at once, and the command's
 * HELLO must be the first list. A command of another protocol version
 * is logged with both versions and its connection closed once our HELLO
 * has gone out (so the peer learns our version), before any request is
 * acted on. Every later list goes to the service's request function,
 * which answers it in full. EOF, an error, the idle time or a malformed
 * list close the connection. What differs between the services is the
 * ops table, the longest list and the idle time.
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
#include "sock.h"
#include "vstr.h"

#define QMGR_LISTEN_BACKLOG 16

/* One listening service. */
struct QMGR_LISTENER {
    QMGR_CTX *ctx;
    const QMGR_LISTEN_OPS *ops;
    size_t list_max;
    int idle;
    int fd;
    struct event *ev;
};

/* One accepted connection. */
typedef struct QMGR_LISTEN_PEER {
    QMGR_LISTENER *listener;
    bool greeted; /* the command's HELLO has come */
    bool closing; /* close once our output has gone out */
} QMGR_LISTEN_PEER;

/* qmgr_listen_send - queue one list, and free it */
void qmgr_listen_send(ATTR_CONN *conn, ATTR_LIST *list)
{
    attr_conn_send(conn, list);
    attr_list_free(list);
}

/* qmgr_listen_list - one list from the command: its HELLO, then requests */
static void qmgr_listen_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    QMGR_LISTEN_PEER *peer = arg;
    const QMGR_LISTEN_OPS *ops = peer->listener->ops;
    VSTR *why;

    if (peer->greeted) {
        ops->request(peer->listener->ctx, conn, list);
        return;
    }
    why = vstr_alloc(100);
    if (ops->hello_take(list, why) < 0) {
        msg_warn("%s: %s", ops->service, vstr_str(why));
        peer->closing = true;
        attr_conn_reading(conn, false);
        attr_conn_drain_check(conn);
    } else {
        peer->greeted = true;
    }
    vstr_free(why);
}

/* qmgr_listen_end - EOF, error, idle timeout or a malformed list: close */
static void qmgr_listen_end(ATTR_CONN *conn, ATTR_CONN_END kind,
                            const char *why, void *arg)
{
    QMGR_LISTEN_PEER *peer = arg;

    if (kind == ATTR_CONN_MALFORMED)
        msg_warn("%s: malformed request: %s", peer->listener->ops->service,
                 why);
    attr_conn_free(conn);
    myfree(peer);
}

/* qmgr_listen_drain - our output is out: close when closing */
static void qmgr_listen_drain(ATTR_CONN *conn, void *arg)
{
    QMGR_LISTEN_PEER *peer = arg;

    if (peer->closing) {
        attr_conn_free(conn);
        myfree(peer);
    }
}

static const ATTR_CONN_OPS qmgr_listen_conn_ops = {
    .on_list = qmgr_listen_list,
    .on_end = qmgr_listen_end,
    .on_drain = qmgr_listen_drain,
};

/* qmgr_listen_accept - a new connection: our HELLO goes out at once */
static void qmgr_listen_accept(evutil_socket_t fd, short what, void *arg)
{
    QMGR_LISTENER *listener = arg;
    QMGR_LISTEN_PEER *peer;
    ATTR_CONN *conn;
    int conn_fd;

    if ((conn_fd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            msg_warn("accept on %s: %m", listener->ops->service);
        return;
    }
    peer = mycalloc(1, sizeof(*peer));
    peer->listener = listener;
    conn = attr_conn_accept(listener->ctx->base, conn_fd, listener->list_max,
                            &qmgr_listen_conn_ops, peer);
    attr_conn_timeouts(conn, listener->idle, listener->idle);
    qmgr_listen_send(conn, listener->ops->hello_list());
}

/* qmgr_listen - listen on private/ops->service; NULL when the socket
   cannot be made (logged: only the admin command loses its way to qmgr) */
QMGR_LISTENER *qmgr_listen(QMGR_CTX *ctx, const QMGR_LISTEN_OPS *ops,
                           size_t list_max, int idle)
{
    VSTR *path = vstr_alloc(100);
    QMGR_LISTENER *listener = NULL;
    int fd;

    mail_queue_service(path, ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                       ops->service);
    if ((fd = sock_unix_listen(vstr_str(path), QMGR_LISTEN_BACKLOG, 0600)) <
        0) {
        msg_warn("cannot listen on %s: %m", vstr_str(path));
    } else {
        listener = mycalloc(1, sizeof(*listener));
        listener->ctx = ctx;
        listener->ops = ops;
        listener->list_max = list_max;
        listener->idle = idle;
        listener->fd = fd;
        if ((listener->ev = event_new(ctx->base, fd, EV_READ | EV_PERSIST,
                                      qmgr_listen_accept, listener)) == NULL ||
            event_add(listener->ev, NULL) < 0)
            msg_fatal("cannot add the %s event", ops->service);
    }
    vstr_free(path);
    return listener;
}
