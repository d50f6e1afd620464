/*
 * trigger - one-byte wake-ups over UNIX sockets
 *
 * The sender must never wait on a receiver that is busy or stuck: the
 * connect is non-blocking, so a full listen backlog is an immediate failure
 * (EAGAIN) instead of a stall, and the byte goes out with MSG_NOSIGNAL so a
 * receiver that hangs up cannot kill the sender with SIGPIPE. A lost trigger
 * costs only latency: every receiver also scans periodically.
 */
#include "sys_defs.h"

#include <limits.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "mymalloc.h"
#include "trigger.h"

struct TRIGGER_CONN {
    char *path;
    int fd; /* -1: not connected */
    time_t last; /* CLOCK_MONOTONIC seconds of the last send */
};

/* trigger_connect - a non-blocking connection to path; fd or -1 (errno) */
static int trigger_connect(const char *path)
{
    struct sockaddr_un sun;
    size_t path_len = strlen(path);
    int saved_errno;
    int fd;

    if (path_len == 0) {
        errno = EINVAL;
        return -1;
    }
    memset(&sun, 0, sizeof(sun));
    if (path_len >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, path_len + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) <
        0)
        return -1;

    /*
     * Linux completes a UNIX connect at once or fails with EAGAIN when the
     * backlog is full; elsewhere EINPROGRESS means the same: not now.
     */
    if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0) {
        if (errno == EINPROGRESS)
            errno = EAGAIN;
        saved_errno = errno;
        (void) close(fd);
        errno = saved_errno;
        return -1;
    }
    return fd;
}

/* trigger_put - send the one byte ch on fd; 0 or -1 (errno) */
static int trigger_put(int fd, unsigned char ch)
{
    ssize_t sent;

    do {
        sent = send(fd, &ch, 1, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent == 1)
        return 0;
    if (sent == 0)
        errno = EIO;
    return -1;
}

/* trigger_send - send byte to the service at path; 0 or -1 (errno) */
int trigger_send(const char *path, int byte)
{
    int saved_errno;
    int fd;

    if (byte < 0 || byte > UCHAR_MAX) {
        errno = EINVAL;
        return -1;
    }
    if ((fd = trigger_connect(path)) < 0)
        return -1;
    if (trigger_put(fd, (unsigned char) byte) < 0) {
        saved_errno = errno;
        (void) close(fd);
        errno = saved_errno;
        return -1;
    }
    if (close(fd) < 0 && errno != EINTR)
        return -1;
    return 0;
}

/* trigger_now - monotonic seconds */
static time_t trigger_now(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        return 0;
    return ts.tv_sec;
}

/* trigger_conn_create - a kept connection to path (connects on first use) */
TRIGGER_CONN *trigger_conn_create(const char *path)
{
    TRIGGER_CONN *conn = mymalloc(sizeof(*conn));

    conn->path = mystrdup(path);
    conn->fd = -1;
    conn->last = 0;
    return conn;
}

/* trigger_conn_drop - close the kept connection */
static void trigger_conn_drop(TRIGGER_CONN *conn)
{
    if (conn->fd >= 0)
        (void) close(conn->fd);
    conn->fd = -1;
}

/*
 * trigger_conn_send - send byte; 0 or -1 (errno). A send on a connection
 * the receiver closed fails (EPIPE, ECONNRESET, ENOTCONN): connect anew and
 * send once more. EAGAIN on a kept connection means the receiver has a full
 * buffer of wake-ups not read yet: this one is not needed, and the
 * connection stays.
 */
int trigger_conn_send(TRIGGER_CONN *conn, int byte)
{
    time_t now = trigger_now();

    if (byte < 0 || byte > UCHAR_MAX) {
        errno = EINVAL;
        return -1;
    }
    if (conn->fd >= 0 &&
        (now - conn->last >= TRIGGER_CONN_IDLE || now < conn->last))
        trigger_conn_drop(conn); /* before the receiver's idle timeout */
    for (int attempt = 0; attempt < 2; attempt++) {
        bool kept = conn->fd >= 0;

        if (!kept && (conn->fd = trigger_connect(conn->path)) < 0)
            return -1;
        conn->last = now;
        if (trigger_put(conn->fd, (unsigned char) byte) == 0)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return kept ? 0 : -1;
        trigger_conn_drop(conn);
        if (!kept)
            return -1; /* a fresh connection failed: not now */
    }
    return -1;
}

/* trigger_conn_free - close and free; NULL */
TRIGGER_CONN *trigger_conn_free(TRIGGER_CONN *conn)
{
    if (conn) {
        trigger_conn_drop(conn);
        myfree(conn->path);
        myfree(conn);
    }
    return NULL;
}
