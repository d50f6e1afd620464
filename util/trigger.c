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

#include "trigger.h"

/* trigger_send - send byte to the service at path; 0 or -1 (errno) */
int trigger_send(const char *path, int byte)
{
    struct sockaddr_un sun;
    size_t path_len = strlen(path);
    unsigned char ch;
    ssize_t sent;
    int saved_errno;
    int fd;

    if (byte < 0 || byte > UCHAR_MAX || path_len == 0) {
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
    ch = (unsigned char) byte;

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
        goto fail;
    }
    do {
        sent = send(fd, &ch, 1, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent != 1) {
        if (sent == 0)
            errno = EIO;
        goto fail;
    }
    if (close(fd) < 0 && errno != EINTR)
        return -1;
    return 0;

fail:
    saved_errno = errno;
    (void) close(fd);
    errno = saved_errno;
    return -1;
}
