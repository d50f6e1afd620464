/*
 * own_listen - the listener a daemon serves on an address main.cf names
 *
 * The daemon side of master's own listeners (master/master_service.c,
 * master_own_listeners[]): take the socket master bound for the address
 * the parameter has now, else bind it here. Never SO_REUSEPORT: with it,
 * any process of the same user could bind the port beside us and answer a
 * share of the connections.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>

#include "msg.h"
#include "own_listen.h"
#include "vstr.h"

#define OWN_LISTEN_FD_MAX 1024

/* own_listen_split - "host:port", "[v6]:port" or ":port" into host and
   port */
int own_listen_split(const char *addr, VSTR *host, VSTR *port)
{
    const char *colon;

    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');

        /* "[v6]:port": nothing between ']' and ':' */
        if (close == NULL || close[1] != ':' || close[2] == 0)
            return -1;
        vstr_ncpy(host, addr + 1, (size_t) (close - addr - 1));
        vstr_ncpy(port, close + 2, strlen(close + 2));
        return 0;
    }
    if ((colon = strrchr(addr, ':')) == NULL || colon[1] == 0)
        return -1;
    vstr_ncpy(host, addr, (size_t) (colon - addr));
    vstr_ncpy(port, colon + 1, strlen(colon + 1));
    return 0;
}

/* own_listen_inherited - the listener master bound for addr, or -1 */
static int own_listen_inherited(const char *param, const char *addr)
{
    const char *fd_text = getenv("SLUICE_OWN_LISTEN_FD");
    const char *bound = getenv("SLUICE_OWN_LISTEN_ADDR");
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    char *end;
    long fd;

    if (fd_text == NULL || bound == NULL)
        return -1;
    errno = 0;
    fd = strtol(fd_text, &end, 10);
    if (errno || end == fd_text || *end || fd < 3 || fd > OWN_LISTEN_FD_MAX) {
        msg_warn("bad SLUICE_OWN_LISTEN_FD \"%s\": ignored", fd_text);
        return -1;
    }
    if (strcmp(bound, addr) != 0) {
        /* main.cf changed since master's last reload */
        msg_warn("%s = %s, but master bound %s (reload to make it "
                 "bind the new one): binding it here",
                 param, addr, bound);
        (void) close((int) fd);
        return -1;
    }
    if (getsockopt((int) fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0 ||
        !accepting) {
        msg_warn("SLUICE_OWN_LISTEN_FD %ld is not a listening socket: ignored",
                 fd);
        return -1;
    }
    (void) fcntl((int) fd, F_SETFD, FD_CLOEXEC);
    (void) fcntl((int) fd, F_SETFL, fcntl((int) fd, F_GETFL) | O_NONBLOCK);
    return (int) fd;
}

/* own_listen - master's socket for param = addr, or one bound here */
int own_listen(const char *param, const char *addr, int backlog)
{
    struct addrinfo hints = {0};
    struct addrinfo *res;
    VSTR *host;
    VSTR *port;
    int on = 1;
    int fd;
    int err;

    if ((fd = own_listen_inherited(param, addr)) >= 0)
        return fd;
    host = vstr_alloc(64);
    port = vstr_alloc(16);
    if (own_listen_split(addr, host, port) < 0)
        msg_fatal("%s = %s: not ADDRESS:PORT", param, addr);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    if ((err = getaddrinfo(vstr_len(host) ? vstr_str(host) : NULL,
                           vstr_str(port), &hints, &res)) != 0)
        msg_fatal("%s = %s: %s (a numeric address and port)", param, addr,
                  gai_strerror(err));
    if ((fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                     0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0)
        msg_fatal("%s = %s: %m", param, addr);
    freeaddrinfo(res);
    vstr_free(host);
    vstr_free(port);
    return fd;
}
