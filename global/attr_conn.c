/*
 * attr_conn - an attribute-list connection in the event loop
 *
 * The read loop every daemon shares: pull the bytes in, decode each whole
 * list, hand it on, and stop at once when a callback ended or freed the
 * connection. busy counts the callbacks running now; attr_conn_free()
 * inside one only sets closed, and the last callback to return releases
 * the memory (attr_conn_leave). attr_conn.h has the rules.
 *
 * The bufferevent only writes. Reading is an event of our own that reads
 * into the bufferevent's input: libevent's own read asks the socket how
 * much is waiting (ioctl FIONREAD) before every readv, a system call per
 * read that tells nothing a large enough read does not; here one read
 * into ATTR_CONN_READ_SIZE bytes of the input is all. Its idle timeout is
 * the read timeout attr_conn_timeouts() sets, as the bufferevent's was.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "attr.h"
#include "attr_conn.h"
#include "bev_direct.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define ATTR_CONN_READ_SIZE 16384

struct ATTR_CONN {
    struct bufferevent *bev; /* writes only */
    struct event *read_ev; /* EV_READ | EV_PERSIST on the socket */
    struct timeval read_tv; /* idle read timeout; tv_sec 0: none */
    struct event *deadline; /* made on first use */
    size_t max_len;
    size_t drain_low;
    const ATTR_CONN_OPS *ops;
    void *arg;
    VSTR *why;
    int busy; /* callbacks of ours running now */
    bool reading; /* attr_conn_reading() */
    bool closed; /* attr_conn_free() was called */
    bool ended; /* on_end was called */
};

/* attr_conn_release - free the connection for real */
static void attr_conn_release(ATTR_CONN *conn)
{
    event_free(conn->read_ev);
    bufferevent_free(conn->bev);
    if (conn->deadline)
        event_free(conn->deadline);
    vstr_free(conn->why);
    myfree(conn);
}

/* attr_conn_leave - one callback of ours returned: release when it was the
   last one and the connection was freed meanwhile */
static void attr_conn_leave(ATTR_CONN *conn)
{
    if (--conn->busy == 0 && conn->closed)
        attr_conn_release(conn);
}

/* attr_conn_free - close now, or when the running callback returns */
ATTR_CONN *attr_conn_free(ATTR_CONN *conn)
{
    if (conn == NULL)
        return NULL;
    if (conn->closed)
        msg_panic("%s: connection freed twice", __func__);
    if (conn->busy > 0) {
        conn->closed = true;
        (void) event_del(conn->read_ev);
        bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
    } else {
        attr_conn_release(conn);
    }
    return NULL;
}

/* attr_conn_end - report the end once */
static void attr_conn_end(ATTR_CONN *conn, ATTR_CONN_END kind, const char *why)
{
    if (conn->ended || conn->closed)
        return;
    conn->ended = true;
    (void) event_del(conn->read_ev);
    bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
    if (conn->deadline)
        (void) evtimer_del(conn->deadline);
    conn->busy++;
    conn->ops->on_end(conn, kind, why, conn->arg);
    attr_conn_leave(conn);
}

/* attr_conn_live - may the connection still read and call back? */
static bool attr_conn_live(const ATTR_CONN *conn)
{
    return !conn->closed && !conn->ended;
}

/* attr_conn_read_event - decode and hand on every whole list in the input */
static void attr_conn_read_event(struct bufferevent *bev, void *arg)
{
    ATTR_CONN *conn = arg;
    struct evbuffer *input = bufferevent_get_input(bev);

    conn->busy++;
    while (attr_conn_live(conn) && conn->reading) {
        size_t avail = evbuffer_get_length(input);
        /* A list is at most max_len bytes: never pull up more than that
           and one byte, whatever a fast peer has queued behind it. */
        size_t want = avail > conn->max_len ? conn->max_len + 1 : avail;
        ATTR_LIST *list = NULL;
        size_t used = 0;
        int ret;

        if (avail == 0)
            break;
        vstr_reset(conn->why);
        ret = attr_list_decode(
            (const char *) evbuffer_pullup(input, (ssize_t) want), want,
            conn->max_len, &used, &list, conn->why);
        if (ret == 0 && want > conn->max_len) {
            vstr_sprintf(conn->why, "attribute list larger than %zu bytes",
                         conn->max_len);
            ret = -1;
        }
        if (ret == 0)
            break; /* the rest comes later */
        if (ret < 0) {
            attr_conn_end(conn, ATTR_CONN_MALFORMED, vstr_str(conn->why));
            break;
        }
        evbuffer_drain(input, used);
        conn->ops->on_list(conn, list, conn->arg);
        attr_list_free(list);
    }
    attr_conn_leave(conn);
}

/* attr_conn_write_event - the output fell to the drain mark */
static void attr_conn_write_event(struct bufferevent *bev, void *arg)
{
    ATTR_CONN *conn = arg;

    if (!attr_conn_live(conn) || conn->ops->on_drain == NULL)
        return;
    conn->busy++;
    conn->ops->on_drain(conn, conn->arg);
    attr_conn_leave(conn);
}

/* attr_conn_event - EOF, a socket error or an idle timeout */
static void attr_conn_event(struct bufferevent *bev, short what, void *arg)
{
    ATTR_CONN *conn = arg;

    conn->busy++;
    if (what & BEV_EVENT_EOF) {
        /* Lists that came before the EOF were handed on first. */
        attr_conn_end(conn, ATTR_CONN_EOF, ATTR_CONN_LOST);
    } else if (what & BEV_EVENT_ERROR) {
        vstr_sprintf(conn->why, ATTR_CONN_ERROR ": %s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        attr_conn_end(conn, ATTR_CONN_IO, vstr_str(conn->why));
    } else if (what & BEV_EVENT_TIMEOUT) {
        attr_conn_end(conn, ATTR_CONN_TIMEOUT, ATTR_CONN_TIMED_OUT);
    }
    attr_conn_leave(conn);
}

/* attr_conn_socket_read - the socket is readable (or the idle read
   timeout passed): one read into the input, then on as libevent's own
   read would go (lists handed on; EOF, error or timeout reported) */
static void attr_conn_socket_read(evutil_socket_t fd, short what, void *arg)
{
    ATTR_CONN *conn = arg;
    struct evbuffer *input = bufferevent_get_input(conn->bev);
    struct evbuffer_iovec vec;
    ssize_t got;

    /* Reading was turned off since (attr_conn_read_arm): off for real now,
       nothing read, no timeout reported. */
    if (!conn->reading) {
        (void) event_del(conn->read_ev);
        return;
    }
    if (what & EV_TIMEOUT) {
        attr_conn_event(conn->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, conn);
        return;
    }
    /* The bufferevent keeps its input's end frozen but while it reads. */
    evbuffer_unfreeze(input, 0);
    if (evbuffer_reserve_space(input, ATTR_CONN_READ_SIZE, &vec, 1) < 1)
        msg_fatal("cannot buffer %d bytes", ATTR_CONN_READ_SIZE);
    if (vec.iov_len > ATTR_CONN_READ_SIZE)
        vec.iov_len = ATTR_CONN_READ_SIZE;
    got = read(fd, vec.iov_base, vec.iov_len);
    if (got > 0) {
        vec.iov_len = (size_t) got;
        if (evbuffer_commit_space(input, &vec, 1) < 0)
            msg_panic("%s: cannot commit %zd bytes read", __func__, got);
    }
    evbuffer_freeze(input, 0);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        attr_conn_event(conn->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, conn);
        return;
    }
    if (got == 0) {
        attr_conn_event(conn->bev, BEV_EVENT_READING | BEV_EVENT_EOF, conn);
        return;
    }
    attr_conn_read_event(conn->bev, conn);
}

/* attr_conn_read_arm - the read event as reading and the timeout say.
   Reading turned off stays in epoll until the socket has something to
   read (then attr_conn_socket_read takes it out): an agent turns reading
   off when it answers a request and on again for the next as soon as the
   answer is out, and each turn would be an epoll_ctl. */
static void attr_conn_read_arm(ATTR_CONN *conn)
{
    if (!attr_conn_live(conn)) {
        (void) event_del(conn->read_ev);
        return;
    }
    if (!conn->reading)
        return;
    if (conn->read_tv.tv_sec > 0) {
        if (event_add(conn->read_ev, &conn->read_tv) < 0)
            msg_fatal("cannot add a connection event");
        return;
    }
    /* No timeout. event_add(NULL) would keep a timer set before, and a
       persistent event keeps its timeout even out of epoll and sets it
       again after each read: take the timer away (in epoll, whose
       timer is then queued), or assign the event afresh (out of it). */
    if (event_pending(conn->read_ev, EV_READ, NULL)) {
        if (event_remove_timer(conn->read_ev) < 0)
            msg_fatal("cannot remove a connection timeout");
        return;
    }
    if (event_assign(conn->read_ev, event_get_base(conn->read_ev),
                     event_get_fd(conn->read_ev), EV_READ | EV_PERSIST,
                     attr_conn_socket_read, conn) < 0 ||
        event_add(conn->read_ev, NULL) < 0)
        msg_fatal("cannot add a connection event");
}

/* attr_conn_deadline_event - the deadline passed */
static void attr_conn_deadline_event(evutil_socket_t fd, short what, void *arg)
{
    ATTR_CONN *conn = arg;

    conn->busy++;
    attr_conn_end(conn, ATTR_CONN_TIMEOUT, ATTR_CONN_TIMED_OUT);
    attr_conn_leave(conn);
}

/* attr_conn_new - the connection on a non-blocking connected fd */
static ATTR_CONN *attr_conn_new(struct event_base *base, int fd, size_t max_len,
                                const ATTR_CONN_OPS *ops, void *arg)
{
    ATTR_CONN *conn = mycalloc(1, sizeof(*conn));

    if (ops == NULL || ops->on_list == NULL || ops->on_end == NULL)
        msg_panic("%s: on_list and on_end are required", __func__);
    conn->max_len = max_len;
    conn->ops = ops;
    conn->arg = arg;
    conn->why = vstr_alloc(100);
    conn->reading = true;
    if ((conn->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE)) ==
        NULL)
        msg_fatal("cannot create a connection event");
    bufferevent_setcb(conn->bev, attr_conn_read_event, attr_conn_write_event,
                      attr_conn_event, conn);
    if (bufferevent_disable(conn->bev, EV_READ) < 0 ||
        bufferevent_enable(conn->bev, EV_WRITE) < 0)
        msg_fatal("cannot add a connection event");
    if ((conn->read_ev = event_new(base, fd, EV_READ | EV_PERSIST,
                                   attr_conn_socket_read, conn)) == NULL)
        msg_fatal("cannot create a connection event");
    attr_conn_read_arm(conn);
    return conn;
}

/* attr_conn_accept - serve fd */
ATTR_CONN *attr_conn_accept(struct event_base *base, int fd, size_t max_len,
                            const ATTR_CONN_OPS *ops, void *arg)
{
    if (evutil_make_socket_nonblocking(fd) < 0)
        msg_warn("cannot make a connection non-blocking: %m");
    return attr_conn_new(base, fd, max_len, ops, arg);
}

/* attr_conn_connect - connect to a UNIX socket without blocking */
ATTR_CONN *attr_conn_connect(struct event_base *base, const char *path,
                             size_t max_len, const ATTR_CONN_OPS *ops,
                             void *arg, VSTR *why)
{
    struct sockaddr_un sun;
    size_t path_len = strlen(path);
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (path_len >= sizeof(sun.sun_path)) {
        vstr_sprintf(why, "socket path too long: %s", path);
        errno = ENAMETOOLONG;
        return NULL;
    }
    memcpy(sun.sun_path, path, path_len + 1);
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
    return attr_conn_new(base, fd, max_len, ops, arg);
}

/* attr_conn_send - queue one list for sending */
void attr_conn_send(ATTR_CONN *conn, const ATTR_LIST *list)
{
    VSTR *wire = vstr_alloc(256);

    attr_list_encode(list, wire);
    attr_conn_send_wire(conn, wire);
    vstr_free(wire);
}

/* attr_conn_send_wire - queue encoded lists for sending */
void attr_conn_send_wire(ATTR_CONN *conn, const VSTR *wire)
{
    int ret = bev_direct_write(conn->bev, vstr_str(wire), vstr_len(wire));

    if (ret == BEV_DIRECT_ERROR)
        msg_fatal("cannot buffer %zu bytes", vstr_len(wire));
    /* All of it went straight out: libevent wrote nothing, so it calls no
       on_drain; call it from the loop as if it had. */
    if (ret == BEV_DIRECT_ALL_SENT && conn->ops->on_drain != NULL)
        attr_conn_drain_check(conn);
}

/* attr_conn_timeval - seconds as a timeval, NULL for 0 */
static const struct timeval *attr_conn_timeval(struct timeval *tv, int sec)
{
    if (sec <= 0)
        return NULL;
    tv->tv_sec = sec;
    tv->tv_usec = 0;
    return tv;
}

/* attr_conn_timeouts - idle timeouts for reading and writing */
void attr_conn_timeouts(ATTR_CONN *conn, int read_sec, int write_sec)
{
    struct timeval write_tv;

    conn->read_tv.tv_sec = read_sec > 0 ? read_sec : 0;
    conn->read_tv.tv_usec = 0;
    (void) bufferevent_set_timeouts(conn->bev, NULL,
                                    attr_conn_timeval(&write_tv, write_sec));
    attr_conn_read_arm(conn); /* the idle time starts again, as it did */
}

/* attr_conn_deadline - end with a timeout sec seconds from now */
void attr_conn_deadline(ATTR_CONN *conn, int sec)
{
    struct timeval tv;

    if (conn->deadline == NULL &&
        (conn->deadline = evtimer_new(bufferevent_get_base(conn->bev),
                                      attr_conn_deadline_event, conn)) == NULL)
        msg_fatal("cannot create a deadline event");
    if (attr_conn_timeval(&tv, sec) == NULL) {
        (void) evtimer_del(conn->deadline);
    } else if (evtimer_add(conn->deadline, &tv) < 0) {
        msg_fatal("cannot add a deadline event");
    }
}

/* attr_conn_reading - read or not */
void attr_conn_reading(ATTR_CONN *conn, bool on)
{
    conn->reading = on;
    if (!attr_conn_live(conn))
        return;
    attr_conn_read_arm(conn);
    if (on) {
        /* Whole lists that already wait in the input are handed on from
           the loop, not from inside the caller. */
        if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
            bufferevent_trigger(conn->bev, EV_READ,
                                BEV_TRIG_IGNORE_WATERMARKS |
                                    BEV_TRIG_DEFER_CALLBACKS);
    }
}

/* attr_conn_drain_mark - when on_drain runs */
void attr_conn_drain_mark(ATTR_CONN *conn, size_t low)
{
    conn->drain_low = low;
    bufferevent_setwatermark(conn->bev, EV_WRITE, low, 0);
}

/* attr_conn_rebind - a new owner's arg for the callbacks */
void attr_conn_rebind(ATTR_CONN *conn, void *arg)
{
    conn->arg = arg;
}

/* attr_conn_drain_check - on_drain from the loop if output is low already */
void attr_conn_drain_check(ATTR_CONN *conn)
{
    if (attr_conn_live(conn) && attr_conn_output_len(conn) <= conn->drain_low)
        bufferevent_trigger(conn->bev, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS |
                                BEV_TRIG_DEFER_CALLBACKS);
}

/* attr_conn_input_len - bytes received and not yet handed on */
size_t attr_conn_input_len(const ATTR_CONN *conn)
{
    return evbuffer_get_length(bufferevent_get_input(conn->bev));
}

/* attr_conn_output_len - bytes waiting to go out */
size_t attr_conn_output_len(const ATTR_CONN *conn)
{
    return evbuffer_get_length(bufferevent_get_output(conn->bev));
}
