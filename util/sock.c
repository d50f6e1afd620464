/*
 * sock - sockets made the way every daemon needs them
 *
 * Every descriptor is close-on-exec from birth (SOCK_CLOEXEC, never a later
 * fcntl), so no child inherits a listener by accident; listeners are
 * non-blocking because an event loop owns them. Addresses are numeric: this
 * module never asks DNS anything ("localhost" alone is taken as 127.0.0.1).
 * Failures return -1 with errno and log nothing.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>

#include "sock.h"

#define SOCK_PORT_MAX 65535

/* sock_close_keep_errno - close fd without disturbing errno */
static void sock_close_keep_errno(int fd)
{
    int saved_errno = errno;

    (void) close(fd);
    errno = saved_errno;
}

/* sock_unix_addr - fill a sockaddr_un; ENAMETOOLONG when path does not fit */
static int sock_unix_addr(struct sockaddr_un *sun, const char *path)
{
    size_t len = strlen(path);

    if (len == 0) {
        errno = EINVAL;
        return -1;
    }
    memset(sun, 0, sizeof(*sun));
    if (len >= sizeof(sun->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len + 1);
    return 0;
}

/* sock_unix_listen - bind and listen on a UNIX stream socket */
int sock_unix_listen(const char *path, int backlog, mode_t mode)
{
    struct sockaddr_un sun;
    struct stat st;
    int fd;

    if (sock_unix_addr(&sun, path) < 0)
        return -1;

    /*
     * A socket file left by a process that died is stale: nobody can be
     * listening on it once we are asked to. Anything that is not a socket
     * is someone's data, and we refuse rather than delete it.
     */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            errno = EEXIST;
            return -1;
        }
        if (unlink(path) < 0 && errno != ENOENT)
            return -1;
    } else if (errno != ENOENT) {
        return -1;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) <
        0)
        return -1;
    if (bind(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0)
        goto fail;
    if (chmod(path, mode) < 0 || listen(fd, backlog) < 0) {
        int saved_errno = errno;

        (void) unlink(path);
        errno = saved_errno;
        goto fail;
    }
    return fd;

fail:
    sock_close_keep_errno(fd);
    return -1;
}

/* sock_wait_connect - finish a connect(2) that a signal interrupted */
static int sock_wait_connect(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t err_len = sizeof(err);

    for (;;) {
        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        break;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) < 0)
        return -1;
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

/* sock_connect_blocking - connect(2), completing it across EINTR */
static int sock_connect_blocking(int fd, const struct sockaddr *sa,
                                 socklen_t sa_len)
{
    if (connect(fd, sa, sa_len) == 0)
        return 0;
    if (errno == EINTR || errno == EINPROGRESS)
        return sock_wait_connect(fd);
    return -1;
}

/* sock_unix_connect - connect to a UNIX stream socket (blocking) */
int sock_unix_connect(const char *path)
{
    struct sockaddr_un sun;
    int fd;

    if (sock_unix_addr(&sun, path) < 0)
        return -1;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (sock_connect_blocking(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0) {
        sock_close_keep_errno(fd);
        return -1;
    }
    return fd;
}

/* sock_parse_port - a decimal port 0..65535, digits only */
static int sock_parse_port(const char *str, int *port)
{
    long val = 0;

    if (*str == 0)
        return -1;
    for (const char *cp = str; *cp; cp++) {
        if (*cp < '0' || *cp > '9')
            return -1;
        val = val * 10 + (*cp - '0');
        if (val > SOCK_PORT_MAX)
            return -1;
    }
    *port = (int) val;
    return 0;
}

/*
 * sock_split_addr - split "host:port", "[v6]:port", "*:port" or "port"
 *
 * host gets the numeric host ("" for the wildcard); a bare IPv6 address
 * without brackets is ambiguous and rejected.
 */
static int sock_split_addr(const char *addr, char *host, size_t host_len,
                           int *port)
{
    const char *port_str;
    size_t len;

    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');

        if (end == NULL || end[1] != ':')
            return -1;
        len = (size_t) (end - addr - 1);
        if (len == 0 || memchr(addr + 1, ':', len) == NULL)
            return -1;
        port_str = end + 2;
        addr++;
    } else if ((port_str = strchr(addr, ':')) != NULL) {
        if (strchr(port_str + 1, ':') != NULL)
            return -1;
        len = (size_t) (port_str - addr);
        port_str++;
        if (len == 0)
            return -1;
        if (len == 1 && addr[0] == '*')
            len = 0;
    } else {
        len = 0;
        port_str = addr;
    }
    if (len >= host_len)
        return -1;
    memcpy(host, addr, len);
    host[len] = 0;
    if (strcmp(host, "localhost") == 0) {
        /* The courtesy: the one name everyone writes, never looked up. */
        if (host_len <= sizeof("127.0.0.1") - 1)
            return -1;
        snprintf(host, host_len, "%s", "127.0.0.1");
    }
    return sock_parse_port(port_str, port);
}

/* sock_numeric_addr - getaddrinfo for a numeric host; NULL host: wildcard */
static struct addrinfo *sock_numeric_addr(const char *host, int port,
                                          int family, int flags)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    char port_str[16];
    int err;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | flags;
    snprintf(port_str, sizeof(port_str), "%d", port);
    if ((err = getaddrinfo(host, port_str, &hints, &res)) != 0) {
        if (err != EAI_SYSTEM)
            errno = (err == EAI_MEMORY ? ENOMEM : EINVAL);
        return NULL;
    }
    return res;
}

/* sock_inet_bind - one listener on one address */
static int sock_inet_bind(const struct addrinfo *ai, int backlog)
{
    int fd;
    int on = 1;
    int off = 0;

    if ((fd = socket(ai->ai_family,
                     ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                     ai->ai_protocol)) < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0)
        goto fail;
    /* The IPv6 wildcard serves IPv4 too; a specific address only itself. */
    if (ai->ai_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) < 0)
        goto fail;
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0)
        goto fail;
    return fd;

fail:
    sock_close_keep_errno(fd);
    return -1;
}

/* sock_inet_listen - "host:port", "[v6]:port", "port" or "*:port" */
int sock_inet_listen(const char *addr, int backlog)
{
    char host[INET6_ADDRSTRLEN + 16];
    struct addrinfo *res;
    int port;
    int fd;

    if (sock_split_addr(addr, host, sizeof(host), &port) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (*host) {
        if ((res = sock_numeric_addr(host, port, AF_UNSPEC, AI_PASSIVE)) ==
            NULL)
            return -1;
        fd = sock_inet_bind(res, backlog);
        freeaddrinfo(res);
        return fd;
    }

    /*
     * Wildcard: one dual-stack IPv6 listener where the kernel has IPv6,
     * else the IPv4 wildcard.
     */
    if ((res = sock_numeric_addr(NULL, port, AF_INET6, AI_PASSIVE)) != NULL) {
        fd = sock_inet_bind(res, backlog);
        freeaddrinfo(res);
        if (fd >= 0 || (errno != EAFNOSUPPORT && errno != EADDRNOTAVAIL))
            return fd;
    }
    if ((res = sock_numeric_addr(NULL, port, AF_INET, AI_PASSIVE)) == NULL)
        return -1;
    fd = sock_inet_bind(res, backlog);
    freeaddrinfo(res);
    return fd;
}

/* sock_inet_connect - blocking TCP connect to a numeric host and port */
int sock_inet_connect(const char *host, int port)
{
    char host_buf[INET6_ADDRSTRLEN + 16];
    struct addrinfo *res;
    size_t len = strlen(host);
    int fd;

    if (port <= 0 || port > SOCK_PORT_MAX || len == 0) {
        errno = EINVAL;
        return -1;
    }
    /* Accept "[v6]" as well as "v6", and the "localhost" courtesy. */
    if (host[0] == '[' && host[len - 1] == ']' && len > 2) {
        if (len - 2 >= sizeof(host_buf)) {
            errno = EINVAL;
            return -1;
        }
        memcpy(host_buf, host + 1, len - 2);
        host_buf[len - 2] = 0;
        host = host_buf;
    } else if (strcmp(host, "localhost") == 0) {
        host = "127.0.0.1";
    }
    if ((res = sock_numeric_addr(host, port, AF_UNSPEC, 0)) == NULL)
        return -1;
    if ((fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC,
                     res->ai_protocol)) < 0) {
        freeaddrinfo(res);
        return -1;
    }
    if (sock_connect_blocking(fd, res->ai_addr, res->ai_addrlen) < 0) {
        sock_close_keep_errno(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* sock_nonblock - turn O_NONBLOCK on or off */
int sock_nonblock(int fd, bool on)
{
    int flags;

    if ((flags = fcntl(fd, F_GETFL)) < 0)
        return -1;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags) < 0 ? -1 : 0;
}

/* sock_cloexec - turn FD_CLOEXEC on or off */
int sock_cloexec(int fd, bool on)
{
    int flags;

    if ((flags = fcntl(fd, F_GETFD)) < 0)
        return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags) < 0 ? -1 : 0;
}
