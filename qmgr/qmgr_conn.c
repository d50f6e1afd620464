/*
 * qmgr_conn - a non-blocking attribute-list client of a private/ service
 *
 * qmgr must never wait for an agent or for bounce, so each request is a
 * connection in the event loop: lists go out through a bufferevent, each
 * list that comes back is handed to on_list, and the end of the
 * connection (EOF, error, a malformed list, the deadline) to on_end, once.
 * Either callback may free the connection; the module notices and stops
 * touching it.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "attr.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "vstr.h"

struct QMGR_CONN {
    struct bufferevent *bev;
    struct event *deadline;
    size_t max_len;
    QMGR_CONN_LIST_FN on_list;
    QMGR_CONN_END_FN on_end;
    void *arg;
    bool in_callback; /* a callback runs right now */
    bool freed; /* it called qmgr_conn_free */
    bool ended; /* on_end was called */
};

/* qmgr_conn_release - free the connection for real */
static void qmgr_conn_release(QMGR_CONN *conn)
{
    if (conn->bev)
        bufferevent_free(conn->bev);
    if (conn->deadline)
        event_free(conn->deadline);
    myfree(conn);
}

/* qmgr_conn_free - close the connection; no callback follows; NULL */
QMGR_CONN *qmgr_conn_free(QMGR_CONN *conn)
{
    if (conn == NULL)
        return NULL;
    if (conn->in_callback)
        conn->freed = true;
    else
        qmgr_conn_release(conn);
    return NULL;
}

/* qmgr_conn_end - report the end once; true when conn is gone after it */
static bool qmgr_conn_end(QMGR_CONN *conn, const char *why)
{
    if (conn->ended)
        return false;
    conn->ended = true;
    bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
    conn->in_callback = true;
    conn->on_end(conn, why, conn->arg);
    conn->in_callback = false;
    if (conn->freed) {
        qmgr_conn_release(conn);
        return true;
    }
    return false;
}

/* qmgr_conn_read - decode every whole list that arrived */
static void qmgr_conn_read(struct bufferevent *bev, void *arg)
{
    QMGR_CONN *conn = arg;
    struct evbuffer *input = bufferevent_get_input(bev);
    VSTR *why = vstr_alloc(100);

    while (!conn->ended) {
        size_t len = evbuffer_get_length(input);
        const char *data;
        ATTR_LIST *list = NULL;
        size_t used = 0;
        int ret;

        if (len == 0)
            break;
        data = (const char *) evbuffer_pullup(input, -1);
        ret = attr_list_decode(data, len, conn->max_len, &used, &list, why);
        if (ret == 0)
            break;
        if (ret < 0) {
            VSTR *text = vstr_alloc(100);

            vstr_sprintf(text, "malformed reply: %s", vstr_str(why));
            (void) qmgr_conn_end(conn, vstr_str(text));
            vstr_free(text);
            break;
        }
        evbuffer_drain(input, used);
        conn->in_callback = true;
        conn->on_list(conn, list, conn->arg);
        conn->in_callback = false;
        attr_list_free(list);
        if (conn->freed) {
            qmgr_conn_release(conn);
            break;
        }
    }
    vstr_free(why);
}

/* qmgr_conn_event - EOF, an error, or a timeout */
static void qmgr_conn_event(struct bufferevent *bev, short what, void *arg)
{
    QMGR_CONN *conn = arg;

    if (what & BEV_EVENT_EOF) {
        /* Lists that came with the EOF were read first by libevent. */
        (void) qmgr_conn_end(conn, QMGR_CONN_LOST);
    } else if (what & BEV_EVENT_ERROR) {
        VSTR *text = vstr_alloc(100);

        vstr_sprintf(text, QMGR_CONN_ERROR ": %s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        (void) qmgr_conn_end(conn, vstr_str(text));
        vstr_free(text);
    } else if (what & BEV_EVENT_TIMEOUT) {
        (void) qmgr_conn_end(conn, "timeout");
    }
}

/* qmgr_conn_deadline - the request took too long */
static void qmgr_conn_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void) qmgr_conn_end(arg, "timeout");
}

/* qmgr_conn_open - connect to a UNIX socket without blocking; NULL with
   the reason in why (and errno) when the connection cannot even start */
QMGR_CONN *qmgr_conn_open(struct event_base *base, const char *path,
                          long long timeout, size_t max_len,
                          QMGR_CONN_LIST_FN on_list, QMGR_CONN_END_FN on_end,
                          void *arg, VSTR *why)
{
    struct sockaddr_un sun;
    struct timeval tv;
    QMGR_CONN *conn;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        vstr_sprintf(why, "socket path too long: %s", path);
        return NULL;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) <
        0) {
        vstr_sprintf(why, "socket: %m");
        return NULL;
    }
    /* A UNIX connect completes at once or fails (EAGAIN: backlog full). */
    if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0 &&
        errno != EINPROGRESS) {
        int saved_errno = errno;

        vstr_sprintf(why, "connect to %s: %m", path);
        (void) close(fd);
        errno = saved_errno;
        return NULL;
    }
    conn = mycalloc(1, sizeof(*conn));
    conn->max_len = max_len;
    conn->on_list = on_list;
    conn->on_end = on_end;
    conn->arg = arg;
    conn->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    conn->deadline = evtimer_new(base, qmgr_conn_deadline, conn);
    if (conn->bev == NULL || conn->deadline == NULL)
        msg_fatal("cannot create connection events");
    bufferevent_setcb(conn->bev, qmgr_conn_read, NULL, qmgr_conn_event, conn);
    tv.tv_sec = (time_t) (timeout > 0 ? timeout : 3600);
    tv.tv_usec = 0;
    if (evtimer_add(conn->deadline, &tv) < 0 ||
        bufferevent_enable(conn->bev, EV_READ | EV_WRITE) < 0)
        msg_fatal("cannot add connection events");
    return conn;
}

/* qmgr_conn_send - queue one list for sending */
void qmgr_conn_send(QMGR_CONN *conn, const ATTR_LIST *list)
{
    VSTR *wire = vstr_alloc(256);

    attr_list_encode(list, wire);
    if (bufferevent_write(conn->bev, vstr_str(wire), vstr_len(wire)) < 0)
        msg_fatal("cannot buffer %zu bytes", vstr_len(wire));
    vstr_free(wire);
}
