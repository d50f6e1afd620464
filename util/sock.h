/*
 * sock - sockets made the way every daemon needs them
 *
 * All descriptors are created close-on-exec; listeners are non-blocking.
 * Each function returns -1 with errno set (and no message) on failure, so the
 * caller decides whether that is fatal.
 */
#ifndef SOCK_H
#define SOCK_H

#include "sys_defs.h"

/* sock_unix_listen - bind and listen on a UNIX stream socket, replacing a
   stale socket file; mode is applied to the socket file. */
extern int sock_unix_listen(const char *path, int backlog, mode_t mode);
/* sock_unix_connect - connect to a UNIX stream socket (blocking) */
extern int sock_unix_connect(const char *path);
/* sock_inet_listen - "host:port", "[v6]:port", "port" or "*:port" */
extern int sock_inet_listen(const char *addr, int backlog);
/* sock_inet_connect - blocking TCP connect to a numeric host and port */
extern int sock_inet_connect(const char *host, int port);
extern int sock_nonblock(int fd, bool on);
extern int sock_cloexec(int fd, bool on);

#endif
