/*
 * own_listen - the listener a daemon serves on an address main.cf names
 *
 * Master binds the address of a daemon in its master_own_listeners[]
 * table (api_listen, metrics_listen) and hands the socket over:
 * SLUICE_OWN_LISTEN_FD names the descriptor, SLUICE_OWN_LISTEN_ADDR the
 * address it was bound to. A reload gives the successor the same socket,
 * so no SO_REUSEPORT is needed (it would let any process of the same user
 * bind the port and take a share of the connections). Run without master,
 * or when master could not bind (or bound an older address), the daemon
 * binds the address itself, still without SO_REUSEPORT.
 */
#ifndef OWN_LISTEN_H
#define OWN_LISTEN_H

#include "sys_defs.h"

#include "vstr.h"

/* own_listen_split - "host:port", "[v6]:port" or ":port" (the wildcard:
   host empty) into host and port; 0, or -1 when it is not ADDRESS:PORT */
extern int own_listen_split(const char *addr, VSTR *host, VSTR *port);

/* own_listen - the listening socket (non-blocking, close-on-exec) for
   parameter param = addr: master's, or bound here; msg_fatal when it
   cannot be had */
extern int own_listen(const char *param, const char *addr, int backlog);

#endif
