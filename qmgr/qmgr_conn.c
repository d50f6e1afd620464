/*
 * qmgr_conn - a non-blocking attribute-list client of a private/ service
 *
 * qmgr must never wait for an agent or for bounce, so each request is a
 * connection in the event loop (global/attr_conn): lists go out, each list
 * that comes back is handed to on_list, and the end of the connection
 * (EOF, error, a malformed list, the deadline) to on_end, once, in the
 * words qmgr.h gives. Either callback may free the connection (attr_conn's
 * rule: the memory goes when the callback returns).
 */
#include "sys_defs.h"

#include "attr.h"
#include "attr_conn.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "vstr.h"

#define QMGR_CONN_NO_TIMEOUT 3600 /* seconds, when none is configured */

struct QMGR_CONN {
    ATTR_CONN *conn;
    QMGR_CONN_LIST_FN on_list;
    QMGR_CONN_END_FN on_end;
    void *arg;
};

/* qmgr_conn_free - close the connection; no callback follows; NULL */
QMGR_CONN *qmgr_conn_free(QMGR_CONN *conn)
{
    if (conn == NULL)
        return NULL;
    attr_conn_free(conn->conn);
    myfree(conn);
    return NULL;
}

/* qmgr_conn_list - one list from the service */
static void qmgr_conn_list(ATTR_CONN *attr_conn, ATTR_LIST *list, void *arg)
{
    QMGR_CONN *conn = arg;

    conn->on_list(conn, list, conn->arg);
}

/* qmgr_conn_end - the end, in qmgr.h's words */
static void qmgr_conn_end(ATTR_CONN *attr_conn, ATTR_CONN_END kind,
                          const char *why, void *arg)
{
    QMGR_CONN *conn = arg;
    VSTR *text = vstr_alloc(100);

    if (kind == ATTR_CONN_MALFORMED)
        vstr_sprintf(text, "malformed reply: %s", why);
    else
        vstr_cpy(text, why);
    /* conn may be gone when this returns */
    conn->on_end(conn, vstr_str(text), conn->arg);
    vstr_free(text);
}

static const ATTR_CONN_OPS qmgr_conn_ops = {
    .on_list = qmgr_conn_list,
    .on_end = qmgr_conn_end,
};

/* qmgr_conn_open - connect to a UNIX socket without blocking; NULL with
   the reason in why (and errno) when the connection cannot even start */
QMGR_CONN *qmgr_conn_open(struct event_base *base, const char *path,
                          long long timeout, size_t max_len,
                          QMGR_CONN_LIST_FN on_list, QMGR_CONN_END_FN on_end,
                          void *arg, VSTR *why)
{
    QMGR_CONN *conn = mycalloc(1, sizeof(*conn));

    conn->on_list = on_list;
    conn->on_end = on_end;
    conn->arg = arg;
    if ((conn->conn = attr_conn_connect(base, path, max_len, &qmgr_conn_ops,
                                        conn, why)) == NULL) {
        int saved_errno = errno;

        myfree(conn);
        errno = saved_errno;
        return NULL;
    }
    attr_conn_deadline(conn->conn, timeout <= 0          ? QMGR_CONN_NO_TIMEOUT
                                   : timeout > INT32_MAX ? INT32_MAX
                                                         : (int) timeout);
    return conn;
}

/* qmgr_conn_rebind - a new owner and deadline */
void qmgr_conn_rebind(QMGR_CONN *conn, QMGR_CONN_LIST_FN on_list,
                      QMGR_CONN_END_FN on_end, void *arg, long long timeout)
{
    conn->on_list = on_list;
    conn->on_end = on_end;
    conn->arg = arg;
    attr_conn_deadline(conn->conn, timeout <= 0          ? 0
                                   : timeout > INT32_MAX ? INT32_MAX
                                                         : (int) timeout);
}

/* qmgr_conn_send - queue one list for sending */
void qmgr_conn_send(QMGR_CONN *conn, const ATTR_LIST *list)
{
    attr_conn_send(conn->conn, list);
}

/* qmgr_conn_send_wire - queue lists already encoded (attr_list_encode):
   several lists, one write */
void qmgr_conn_send_wire(QMGR_CONN *conn, const VSTR *wire)
{
    attr_conn_send_wire(conn->conn, wire);
}
