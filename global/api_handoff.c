/*
 * api_handoff - hand one message to cleanup without blocking the loop
 *
 * A small state machine over one attr_conn: BEGIN (waiting for cleanup's
 * HELLO and the queue ID), DATA (RCPT and DATA lists go out as cleanup
 * takes them: at most API_HANDOFF_HIGH bytes wait in our output, the
 * drain callback sends more), END (waiting for the final STATUS).
 * Reading times out only while we wait for an answer; writing whenever
 * output waits. The hand-off is freed right after its done callback.
 */
#include "sys_defs.h"

#include "api_handoff.h"
#include "attr_conn.h"
#include "cleanup_proto.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define API_HANDOFF_HIGH (4 * CLEANUP_CHUNK_MAX) /* bytes in our output */

typedef enum API_HANDOFF_STATE {
    API_HANDOFF_BEGIN, /* waiting for cleanup's HELLO and the queue ID */
    API_HANDOFF_DATA, /* sending recipients and content */
    API_HANDOFF_END, /* END sent: waiting for cleanup's verdict */
} API_HANDOFF_STATE;

struct API_HANDOFF {
    ATTR_CONN *conn;
    const API_MESSAGE *msg;
    API_HANDOFF_DONE done;
    void *arg;
    API_HANDOFF_STATE state;
    bool greeted; /* cleanup's HELLO came and was ours */
    int timeout_sec;
    size_t next_rcpt; /* recipients sent */
    size_t sent; /* content bytes sent */
    VSTR *wire;
    VSTR *queue_id;
    const char *suppressed; /* the final STATUS's, while it is handled */
    VSTR *why;
};

static const ATTR_CONN_OPS api_handoff_ops;

/* api_handoff_send - encode and queue one list, then free it */
static void api_handoff_send(API_HANDOFF *h, ATTR_LIST *list)
{
    vstr_reset(h->wire);
    attr_list_encode(list, h->wire);
    attr_conn_send_wire(h->conn, h->wire);
    attr_list_free(list);
}

/* api_handoff_finish - the end: close, tell the owner, free */
static void api_handoff_finish(API_HANDOFF *h, int code, const char *why)
{
    API_HANDOFF_RESULT result = {
        .code = code,
        .queue_id = vstr_str(h->queue_id),
        .why = why ? why : "",
        .suppressed = code == 0 ? h->suppressed : NULL,
    };

    /* Maybe from the connection's own callback: attr_conn.h's rule. */
    h->conn = attr_conn_free(h->conn);
    h->done(&result, h->arg);
    vstr_free(h->wire);
    vstr_free(h->queue_id);
    vstr_free(h->why);
    myfree(h);
}

/* api_handoff_pump - send recipients, then content, then END, as far
   as the output allows */
static void api_handoff_pump(API_HANDOFF *h)
{
    const API_MESSAGE *msg = h->msg;
    size_t len = vstr_len(msg->content);

    while (h->next_rcpt < msg->rcpts->argc &&
           attr_conn_output_len(h->conn) < API_HANDOFF_HIGH) {
        CLEANUP_RCPT rcpt = {.address = msg->rcpts->argv[h->next_rcpt++]};

        api_handoff_send(h, cleanup_rcpt_list(&rcpt));
    }
    while (h->next_rcpt == msg->rcpts->argc && h->sent < len &&
           attr_conn_output_len(h->conn) < API_HANDOFF_HIGH) {
        size_t take = len - h->sent < CLEANUP_CHUNK_MAX ? len - h->sent
                                                        : CLEANUP_CHUNK_MAX;

        api_handoff_send(
            h, cleanup_data_list(vstr_str(msg->content) + h->sent, take));
        h->sent += take;
    }
    if (h->next_rcpt == msg->rcpts->argc && h->sent == len) {
        CLEANUP_END end = {.abort = false, .hold = msg->hold};

        api_handoff_send(h, cleanup_end_list(&end));
        h->state = API_HANDOFF_END;
        attr_conn_timeouts(h->conn, h->timeout_sec, h->timeout_sec);
    }
}

/* api_handoff_on_list - cleanup's HELLO, then its STATUS lists */
static void api_handoff_on_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    API_HANDOFF *h = arg;
    CLEANUP_STATUS reply;

    vstr_reset(h->why);
    if (!h->greeted) {
        if (cleanup_hello_take(list, h->why) < 0) {
            api_handoff_finish(h, -1, vstr_str(h->why));
            return;
        }
        h->greeted = true;
        return;
    }
    if (cleanup_status_take(list, &reply, h->why) < 0) {
        api_handoff_finish(h, -1, vstr_str(h->why));
        return;
    }
    if (reply.status != 0) {
        /* A refusal, whenever it comes: cleanup keeps nothing. */
        vstr_sprintf(h->why, "cleanup: %d %s", reply.status,
                     reply.reason ? reply.reason : "no reason given");
        api_handoff_finish(h, reply.status, vstr_str(h->why));
        return;
    }
    if (attr_conn_input_len(conn) > 0 || h->state == API_HANDOFF_DATA) {
        api_handoff_finish(h, -1, "cleanup: unexpected reply");
        return;
    }
    if (h->state == API_HANDOFF_END) {
        h->suppressed = reply.suppressed; /* lives with list, for the call */
        api_handoff_finish(h, 0, NULL);
        return;
    }
    if (reply.queue_id == NULL || *reply.queue_id == 0) {
        api_handoff_finish(h, -1, "cleanup: no queue ID in its reply");
        return;
    }
    vstr_cpy(h->queue_id, reply.queue_id);
    h->state = API_HANDOFF_DATA;
    /* Nothing to read until END: only writes may time out meanwhile. */
    attr_conn_timeouts(h->conn, 0, h->timeout_sec);
    api_handoff_pump(h);
}

/* api_handoff_on_drain - cleanup took our backlog: send more */
static void api_handoff_on_drain(ATTR_CONN *conn, void *arg)
{
    API_HANDOFF *h = arg;

    if (h->state == API_HANDOFF_DATA)
        api_handoff_pump(h);
}

/* api_handoff_on_end - EOF, an error, a timeout or a malformed list */
static void api_handoff_on_end(ATTR_CONN *conn, ATTR_CONN_END kind,
                               const char *why, void *arg)
{
    API_HANDOFF *h = arg;

    vstr_sprintf(h->why, "cleanup connection: %s",
                 kind == ATTR_CONN_IO ? "I/O error" : why);
    api_handoff_finish(h, -1, vstr_str(h->why));
}

static const ATTR_CONN_OPS api_handoff_ops = {
    .on_list = api_handoff_on_list,
    .on_end = api_handoff_on_end,
    .on_drain = api_handoff_on_drain,
};

/* api_handoff_start - connect and send HELLO and BEGIN */
API_HANDOFF *api_handoff_start(struct event_base *base, const char *path,
                               int timeout_sec, const API_MESSAGE *msg,
                               const char *tenant, API_HANDOFF_DONE done,
                               void *arg, VSTR *why)
{
    API_HANDOFF *h = mycalloc(1, sizeof(*h));
    CLEANUP_BEGIN begin = {
        .flags = msg->eight_bit ? CLEANUP_FLAG_8BIT : 0,
        .sender = msg->sender,
        .origin = CLEANUP_ORIGIN_API,
        .size = -1,
        .tenant = tenant,
        .tags = msg->tags,
        .metadata = msg->metadata,
        .not_before = msg->not_before,
    };

    if ((h->conn = attr_conn_connect(base, path, CLEANUP_STATUS_MAX,
                                     &api_handoff_ops, h, why)) == NULL) {
        myfree(h);
        return NULL;
    }
    h->msg = msg;
    h->done = done;
    h->arg = arg;
    h->state = API_HANDOFF_BEGIN;
    h->timeout_sec = timeout_sec;
    h->wire = vstr_alloc(256);
    h->queue_id = vstr_alloc(32);
    h->why = vstr_alloc(100);
    attr_conn_drain_mark(h->conn, CLEANUP_CHUNK_MAX);
    attr_conn_timeouts(h->conn, timeout_sec, timeout_sec);
    /* Our HELLO first; cleanup's is checked when it comes. */
    api_handoff_send(h, cleanup_hello_list());
    api_handoff_send(h, cleanup_begin_list(&begin));
    return h;
}
