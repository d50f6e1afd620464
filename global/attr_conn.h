/*
 * attr_conn - an attribute-list connection in the event loop
 *
 * One libevent bufferevent carrying attribute lists (attr.h), for both
 * ends: attr_conn_accept() takes a connected descriptor (the server side),
 * attr_conn_connect() connects to a UNIX socket without blocking (the
 * client side). Each whole list that arrives goes to ops->on_list; lists
 * split across reads are put together, several lists in one read come one
 * after the other.
 *
 * The end: EOF, an I/O error, a timeout, or a malformed list (a list
 * larger than max_len is malformed: the connection ends, nothing is ever
 * truncated) goes to ops->on_end once, with its kind and a reason. After
 * on_end nothing more is read, written or called back; the owner still
 * frees the connection (in on_end or later).
 *
 * Freeing: attr_conn_free() may be called at any time, from inside any of
 * the connection's own callbacks included. Inside one it only marks the
 * connection closed: no further callback runs, nothing more is read, and
 * the memory goes when the callback returns. Either way the caller must
 * not use the pointer again.
 */
#ifndef ATTR_CONN_H
#define ATTR_CONN_H

#include "sys_defs.h"

#include <event2/event.h>

#include "attr.h"
#include "vstr.h"

typedef struct ATTR_CONN ATTR_CONN;

typedef enum ATTR_CONN_END {
    ATTR_CONN_EOF, /* the peer closed: ATTR_CONN_LOST */
    ATTR_CONN_IO, /* a socket error: ATTR_CONN_ERROR ": strerror" */
    ATTR_CONN_TIMEOUT, /* a read or write timeout, or the deadline */
    ATTR_CONN_MALFORMED, /* bad bytes or a list over max_len: the decoder's
                            reason */
} ATTR_CONN_END;

#define ATTR_CONN_LOST "lost connection"
#define ATTR_CONN_ERROR "connection error"
#define ATTR_CONN_TIMED_OUT "timeout"

typedef struct ATTR_CONN_OPS {
    /* One decoded list; the list is freed when this returns. */
    void (*on_list)(ATTR_CONN *conn, ATTR_LIST *list, void *arg);
    /* The end, once (see above). */
    void (*on_end)(ATTR_CONN *conn, ATTR_CONN_END kind, const char *why,
                   void *arg);
    /* Optional: the output fell to the drain mark (attr_conn_drain_mark,
       default 0: everything sent is out). */
    void (*on_drain)(ATTR_CONN *conn, void *arg);
} ATTR_CONN_OPS;

/* attr_conn_accept - serve fd (made non-blocking; closed by the free) */
extern ATTR_CONN *attr_conn_accept(struct event_base *base, int fd,
                                   size_t max_len, const ATTR_CONN_OPS *ops,
                                   void *arg);

/* attr_conn_connect - connect to the UNIX socket path without blocking;
   NULL with the reason in why (errno kept) when it cannot even start */
extern ATTR_CONN *attr_conn_connect(struct event_base *base, const char *path,
                                    size_t max_len, const ATTR_CONN_OPS *ops,
                                    void *arg, VSTR *why);

/* attr_conn_free - close; see the freeing rule above; returns NULL */
extern ATTR_CONN *attr_conn_free(ATTR_CONN *conn);

/* attr_conn_send - queue one list for sending */
extern void attr_conn_send(ATTR_CONN *conn, const ATTR_LIST *list);

/* attr_conn_send_wire - queue lists already in wire form (attr_list_encode
   or a protocol module's encoder) */
extern void attr_conn_send_wire(ATTR_CONN *conn, const VSTR *wire);

/* attr_conn_timeouts - idle timeouts in seconds for reading (while reading
   is on) and writing (while output waits); 0 turns one off */
extern void attr_conn_timeouts(ATTR_CONN *conn, int read_sec, int write_sec);

/* attr_conn_deadline - end the connection with a timeout sec seconds from
   now, whatever moves on it (0: no deadline) */
extern void attr_conn_deadline(ATTR_CONN *conn, int sec);

/* attr_conn_reading - read (and call on_list) or not; on at the start */
extern void attr_conn_reading(ATTR_CONN *conn, bool on);

/* attr_conn_drain_mark - call on_drain when output falls to low bytes */
extern void attr_conn_drain_mark(ATTR_CONN *conn, size_t low);

/* attr_conn_rebind - callbacks from now on get arg (a connection handed
   from one owner to the next) */
extern void attr_conn_rebind(ATTR_CONN *conn, void *arg);
/* attr_conn_drain_check - call on_drain soon (from the loop) if the output
   is already at the drain mark: for "free me once this is out" */
extern void attr_conn_drain_check(ATTR_CONN *conn);

/* Bytes received and not yet a whole list; bytes waiting to go out. */
extern size_t attr_conn_input_len(const ATTR_CONN *conn);
extern size_t attr_conn_output_len(const ATTR_CONN *conn);

#endif
