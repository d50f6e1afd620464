/*
 * cleanup - the daemon that turns a message source's stream into a queue file
 *
 * smtpd, pickup and later the HTTP API connect to private/cleanup and speak
 * the protocol of global/cleanup_proto.h, each list read by its codec; we
 * greet with HELLO and a client of another version is logged with both
 * versions and dropped before it can begin a message. Each connection is an
 * attr_conn in the event loop; the attribute lists it carries drive one
 * message at a time (cleanup_message.c). The answer to END is written only
 * after the queue file and incoming/ are on stable storage: the messages
 * whose END came in one pass of the event loop are committed together and
 * share one fsync of incoming/ (cleanup_commit.h). A process that serves
 * cleanup_process_connections clients tells master it is busy, so master
 * starts another and the commits of the processes overlap on the disk.
 * Once that answer has left our output buffer (or the client is gone), qmgr
 * gets a wake-up trigger (which may be lost: qmgr also scans), so qmgr never
 * races the client's 250. A protocol violation or a lost connection drops
 * the connection and removes the partial file (also when its END waits for
 * the group commit: that client was never answered). A connection carries
 * any number of messages, one after another (smtpd keeps its connection
 * for the session's next message); a retiring cleanup closes each
 * connection once its last answer is out and no message is in hand, so
 * that connections kept open do not keep it alive. The modules are
 * listed in cleanup.h.
 */
#include "sys_defs.h"

#include <signal.h>

#include "attr.h"
#include "attr_conn.h"
#include "cleanup.h"
#include "cleanup_commit.h"
#include "cleanup_dkim.h"
#include "cleanup_proto.h"
#include "events.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "maps.h"
#include "match_list.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile_reuse.h"
#include "trigger.h"
#include "vstr.h"

#define CLEANUP_STALE_AGE (24 * 3600) /* crash leftovers older than this */

/* The filter seam: header/body checks and DKIM signing go here. */
static const CLEANUP_FILTER *const cleanup_filters[] = {
    &cleanup_pool_filter, /* X-Sluice-Pool goes before anything signs */
    &cleanup_trace_filter, /* traceparent: (kept in the message) */
    &cleanup_track_filter, /* links, pixel, List-Unsubscribe: then signed */
    &cleanup_dkim_filter, /* signs the content as it stands */
    NULL,
};

/* Berkeley DB cannot free all of a handle that hit a corrupt page
   (DB_RUNRECOVERY): without this, a table spoiled under a running cleanup
   would fail the ASan build on that library's leak at exit. Only
   LeakSanitizer calls these. */
const char *__lsan_default_suppressions(void);

/* __lsan_default_suppressions - LeakSanitizer's hook */
const char *__lsan_default_suppressions(void)
{
    return "leak:libdb-5.3.so\n";
}

/* __lsan_default_options - no "Suppressions used" report at exit (the
   system tests fail on any sanitizer log file of a daemon) */
const char *__lsan_default_options(void);

/* __lsan_default_options - LeakSanitizer's hook */
const char *__lsan_default_options(void)
{
    return "print_suppressions=0";
}

typedef struct CLEANUP_CTX {
    CLEANUP_CONF conf;
    MAIL_SERVER *server;
    char *trigger_path; /* queue_dir/public/qmgr */
    TRIGGER_CONN *trigger; /* kept connection to it (one per process) */
    int timeout; /* seconds */
    int conn_count;
    int busy_connections; /* cleanup_process_connections; 0: never busy */
    bool trigger_pending;
    CLEANUP_COMMIT *commit; /* group commit queue (cleanup_commit.h) */
    struct CLEANUP_CONN *conns; /* every client connection */
} CLEANUP_CTX;

typedef enum CLEANUP_STATE {
    CLEANUP_STATE_HELLO, /* expect the client's HELLO */
    CLEANUP_STATE_IDLE, /* expect BEGIN */
    CLEANUP_STATE_ENVELOPE, /* RCPT, DATA or END */
    CLEANUP_STATE_CONTENT, /* DATA or END */
    CLEANUP_STATE_COMMIT, /* END came: waiting for the group commit */
} CLEANUP_STATE;

typedef struct CLEANUP_CONN {
    CLEANUP_CTX *ctx;
    ATTR_CONN *client;
    CLEANUP_MSG *msg;
    CLEANUP_STATE state;
    bool wake_qmgr; /* committed: wake qmgr when the reply is out */
    bool answered; /* an END was answered: the client reuses it */
    VSTR *why;
    struct CLEANUP_CONN *prev; /* ctx->conns */
    struct CLEANUP_CONN *next;
} CLEANUP_CONN;

static void cleanup_wake_qmgr(CLEANUP_CTX *ctx);

/* cleanup_conn_free - close the connection; a message in hand is removed */
static void cleanup_conn_free(CLEANUP_CONN *conn)
{
    CLEANUP_CTX *ctx = conn->ctx;

    /* A committed message whose client left before the reply went out. */
    if (conn->wake_qmgr)
        cleanup_wake_qmgr(ctx);
    /* Gone before its commit: nobody was told, the file goes. */
    if (conn->msg != NULL && conn->msg->commit_pending)
        cleanup_commit_cancel(ctx->commit, conn->msg);
    attr_conn_free(conn->client); /* maybe from its callback: attr_conn.h */
    conn->msg = cleanup_msg_free(conn->msg);
    vstr_free(conn->why);
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        ctx->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    myfree(conn);
    ctx->conn_count--;
    if (ctx->busy_connections > 0 && ctx->conn_count < ctx->busy_connections)
        mail_server_busy(ctx->server, false);
    if (ctx->conn_count == 0 && mail_server_retiring(ctx->server))
        mail_server_exit(ctx->server, 0);
}

/* cleanup_send - queue one list (HELLO, STATUS) for the client; frees it */
static void cleanup_send(CLEANUP_CONN *conn, ATTR_LIST *list)
{
    VSTR *wire = vstr_alloc(128);

    attr_list_encode(list, wire);
    attr_conn_send_wire(conn->client, wire);
    vstr_free(wire);
    attr_list_free(list);
}

/* cleanup_reply - send a STATUS list */
static void cleanup_reply(CLEANUP_CONN *conn, int status, const char *reason,
                          const char *qid, const char *suppressed)
{
    CLEANUP_STATUS reply = {.status = status,
                            .reason = reason,
                            .queue_id = qid,
                            .suppressed = suppressed};

    cleanup_send(conn, cleanup_status_list(&reply));
}

/* cleanup_trigger_event - wake qmgr, after the reply went out */
static void cleanup_trigger_event(evutil_socket_t fd, short what, void *arg)
{
    CLEANUP_CTX *ctx = arg;

    ctx->trigger_pending = false;
    if (trigger_conn_send(ctx->trigger, TRIGGER_WAKEUP) < 0 &&
        msg_verbose_get())
        msg_info("trigger %s: %m (qmgr will scan)", ctx->trigger_path);
}

/* cleanup_wake_qmgr - schedule one wake-up for any number of commits */
static void cleanup_wake_qmgr(CLEANUP_CTX *ctx)
{
    static const struct timeval now = {0, 0};

    if (ctx->trigger_pending)
        return;
    if (event_base_once(mail_server_base(ctx->server), -1, EV_TIMEOUT,
                        cleanup_trigger_event, ctx, &now) == 0)
        ctx->trigger_pending = true;
}

/* cleanup_hello - the client's HELLO: the first list, naming our
   protocol and version; a mismatch drops the connection */
static bool cleanup_hello(CLEANUP_CONN *conn, const ATTR_LIST *list)
{
    if (cleanup_hello_take(list, conn->why) < 0)
        return false;
    conn->state = CLEANUP_STATE_IDLE;
    return true;
}

/* cleanup_begin - BEGIN: a new message, answered with its queue ID */
static bool cleanup_begin(CLEANUP_CONN *conn, const ATTR_LIST *list)
{
    CLEANUP_BEGIN req;

    if (cleanup_begin_take(list, &req, conn->why) < 0)
        return false;
    if (conn->state != CLEANUP_STATE_IDLE) {
        /* A client may give up on a message whose BEGIN failed. */
        if (conn->msg == NULL || conn->msg->status == 0) {
            vstr_cpy(conn->why, "begin inside a message");
            return false;
        }
        conn->msg = cleanup_msg_free(conn->msg);
    }
    conn->msg = cleanup_msg_begin(&conn->ctx->conf, &req, cleanup_filters);
    conn->state = CLEANUP_STATE_ENVELOPE;
    cleanup_reply(conn, conn->msg->status, vstr_str(conn->msg->reason),
                  conn->msg->qid, NULL);
    return true;
}

/* cleanup_rcpt - RCPT: one recipient */
static bool cleanup_rcpt(CLEANUP_CONN *conn, const ATTR_LIST *list)
{
    CLEANUP_RCPT rcpt;

    if (cleanup_rcpt_take(list, &rcpt, conn->why) < 0)
        return false;
    if (conn->state != CLEANUP_STATE_ENVELOPE) {
        vstr_cpy(conn->why, conn->state == CLEANUP_STATE_IDLE
                                ? "rcpt outside a message"
                                : "rcpt after data");
        return false;
    }
    cleanup_msg_rcpt(conn->msg, rcpt.address, rcpt.orcpt, rcpt.notify);
    return true;
}

/* cleanup_data - DATA: a chunk of the content */
static bool cleanup_data(CLEANUP_CONN *conn, const ATTR_LIST *list)
{
    const char *data;
    size_t len;

    if (cleanup_data_take(list, &data, &len, conn->why) < 0)
        return false;
    if (conn->state == CLEANUP_STATE_IDLE) {
        vstr_cpy(conn->why, "data outside a message");
        return false;
    }
    conn->state = CLEANUP_STATE_CONTENT;
    cleanup_msg_data(conn->msg, data, len);
    return true;
}

/* cleanup_answer - the message is done: answer END, forget the message */
static void cleanup_answer(CLEANUP_CONN *conn, int status)
{
    char *suppressed = status ? NULL : cleanup_suppress_status(conn->msg);

    cleanup_reply(conn, status, vstr_str(conn->msg->reason), conn->msg->qid,
                  suppressed);
    myfree(suppressed);
    if (conn->msg->committed && !conn->msg->hold)
        conn->wake_qmgr = true; /* cleanup_on_drain, after the reply */
    conn->msg = cleanup_msg_free(conn->msg);
    conn->state = CLEANUP_STATE_IDLE;
    conn->answered = true;
}

/* cleanup_conn_idle - a connection a retiring cleanup may close: its
   client's last message is answered (the answer out), none is begun. A
   connection that has not yet carried a message is left alone: its first
   BEGIN may be on the way, and its client would lose that transaction. */
static bool cleanup_conn_idle(const CLEANUP_CONN *conn)
{
    return conn->state == CLEANUP_STATE_IDLE && conn->answered &&
           conn->msg == NULL && attr_conn_output_len(conn->client) == 0 &&
           attr_conn_input_len(conn->client) == 0;
}

/* cleanup_commit_done - the group commit of conn's message is over */
static void cleanup_commit_done(CLEANUP_MSG *msg, int status, void *arg)
{
    CLEANUP_CONN *conn = arg;

    if (conn->msg != msg)
        msg_panic("%s: message %s is not the connection's", __func__, msg->qid);
    cleanup_answer(conn, status);
}

/* cleanup_end - END: abort, or queue the message for the group commit
   (cleanup_commit_done answers); a message that failed is answered now */
static bool cleanup_end(CLEANUP_CONN *conn, const ATTR_LIST *list)
{
    CLEANUP_END end;
    int status;

    if (cleanup_end_take(list, &end, conn->why) < 0)
        return false;
    if (conn->state == CLEANUP_STATE_IDLE) {
        vstr_cpy(conn->why, "end outside a message");
        return false;
    }
    conn->msg->defer_commit = true;
    if (end.hold != NULL && !end.abort) {
        /* A milter's quarantine: committed into hold/, as HOLD does. */
        msg_info("%s: hold: %s", conn->msg->qid,
                 *end.hold ? end.hold : "quarantined");
        conn->msg->hold = true;
    }
    conn->msg->prepend_end = end.prepend; /* valid during the call */
    status = cleanup_msg_end(conn->msg, end.abort);
    conn->msg->prepend_end = NULL;
    if (conn->msg->commit_pending) {
        conn->state = CLEANUP_STATE_COMMIT;
        cleanup_commit_add(conn->ctx->commit, conn->msg, cleanup_commit_done,
                           conn);
        return true;
    }
    cleanup_answer(conn, status);
    return true;
}

/* cleanup_request - dispatch one list; false: drop the connection */
static bool cleanup_request(CLEANUP_CONN *conn, const ATTR_LIST *list)
{
    const char *request = cleanup_list_request(list);

    if (conn->state == CLEANUP_STATE_HELLO)
        return cleanup_hello(conn, list);
    if (conn->state == CLEANUP_STATE_COMMIT) {
        vstr_cpy(conn->why, "request before the answer to end");
        return false;
    }
    if (request == NULL) {
        vstr_cpy(conn->why, "list without request");
        return false;
    }
    if (strcmp(request, CLEANUP_REQ_BEGIN) == 0)
        return cleanup_begin(conn, list);
    if (strcmp(request, CLEANUP_REQ_RCPT) == 0)
        return cleanup_rcpt(conn, list);
    if (strcmp(request, CLEANUP_REQ_DATA) == 0)
        return cleanup_data(conn, list);
    if (strcmp(request, CLEANUP_REQ_END) == 0)
        return cleanup_end(conn, list);
    vstr_cpy(conn->why, "unknown request");
    return false;
}

/* cleanup_protocol_error - log, drop the connection and the message */
static void cleanup_protocol_error(CLEANUP_CONN *conn)
{
    msg_warn("%s%sprotocol error: %s; connection dropped",
             conn->msg ? conn->msg->qid : "", conn->msg ? ": " : "",
             vstr_str(conn->why));
    cleanup_conn_free(conn);
}

/* cleanup_on_list - handle one list */
static void cleanup_on_list(ATTR_CONN *client, ATTR_LIST *list, void *arg)
{
    CLEANUP_CONN *conn = arg;

    vstr_reset(conn->why);
    if (!cleanup_request(conn, list))
        cleanup_protocol_error(conn);
}

/* cleanup_on_drain - the output buffer is empty: replies are out */
static void cleanup_on_drain(ATTR_CONN *client, void *arg)
{
    CLEANUP_CONN *conn = arg;

    if (conn->wake_qmgr) {
        conn->wake_qmgr = false;
        cleanup_wake_qmgr(conn->ctx);
    }
    /* Retiring: a reused connection ends after its answer. */
    if (mail_server_retiring(conn->ctx->server) && cleanup_conn_idle(conn))
        cleanup_conn_free(conn);
}

/* cleanup_on_end - a malformed or oversized list is a protocol error; EOF,
   error or timeout: the message in hand is lost. Before DATA the client
   merely abandoned the transaction (RSET, QUIT, EHLO, or a drop that smtpd
   logs itself): nothing to say. */
static void cleanup_on_end(ATTR_CONN *client, ATTR_CONN_END kind,
                           const char *why, void *arg)
{
    CLEANUP_CONN *conn = arg;

    if (kind == ATTR_CONN_MALFORMED) {
        vstr_cpy(conn->why, why);
        cleanup_protocol_error(conn);
        return;
    }
    if (conn->msg != NULL && (conn->state == CLEANUP_STATE_CONTENT ||
                              conn->state == CLEANUP_STATE_COMMIT))
        msg_info("%s: %s with client while receiving the message;"
                 " message discarded",
                 conn->msg->qid,
                 kind == ATTR_CONN_TIMEOUT ? "timeout" : "lost connection");
    cleanup_conn_free(conn);
}

static const ATTR_CONN_OPS cleanup_conn_ops = {
    .on_list = cleanup_on_list,
    .on_end = cleanup_on_end,
    .on_drain = cleanup_on_drain,
};

/* cleanup_accept - a new client connection */
static void cleanup_accept(MAIL_SERVER *server, int fd, void *arg)
{
    CLEANUP_CTX *ctx = arg;
    CLEANUP_CONN *conn = mycalloc(1, sizeof(*conn));

    conn->ctx = ctx;
    conn->next = ctx->conns;
    if (conn->next)
        conn->next->prev = conn;
    ctx->conns = conn;
    conn->state = CLEANUP_STATE_HELLO;
    conn->why = vstr_alloc(64);
    conn->client = attr_conn_accept(mail_server_base(server), fd,
                                    CLEANUP_LIST_MAX, &cleanup_conn_ops, conn);
    ctx->conn_count++;
    if (ctx->busy_connections > 0 && ctx->conn_count >= ctx->busy_connections)
        mail_server_busy(server, true); /* master starts another cleanup */
    attr_conn_timeouts(conn->client, ctx->timeout, ctx->timeout);
    cleanup_send(conn, cleanup_hello_list());
}

/* cleanup_maps - the tables of parameter name, or NULL when it is empty;
   a table that cannot be opened is fatal (master retries with a back-off,
   and clients are told to try again meanwhile) */
static MAPS *cleanup_maps(const MAIL_CONF *conf, const char *name)
{
    const char *value = mail_conf_str(conf, name);
    VSTR *why;
    MAPS *maps;

    if (*value == 0)
        return NULL;
    why = vstr_alloc(100);
    if ((maps = maps_create(name, value, MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
    if (maps_count(maps) == 0)
        maps = maps_free(maps);
    return maps;
}

/* cleanup_tables - the canonical and content check tables, mydestination */
static void cleanup_tables(CLEANUP_CONF *cconf, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);

    cconf->canonical_maps = cleanup_maps(conf, "canonical_maps");
    cconf->sender_canonical_maps = cleanup_maps(conf, "sender_canonical_maps");
    cconf->recipient_canonical_maps =
        cleanup_maps(conf, "recipient_canonical_maps");
    cconf->virtual_alias_maps = cleanup_maps(conf, "virtual_alias_maps");
    cconf->virtual_recursion_limit =
        (int) mail_conf_int(conf, "virtual_alias_recursion_limit");
    cconf->virtual_expansion_limit =
        (int) mail_conf_int(conf, "virtual_alias_expansion_limit");
    cconf->header_checks = cleanup_maps(conf, "header_checks");
    cconf->body_checks = cleanup_maps(conf, "body_checks");
    cconf->mydestination =
        match_list_create("mydestination", mail_conf_str(conf, "mydestination"),
                          MATCH_LIST_DOMAIN, why);
    if (cconf->mydestination == NULL)
        msg_fatal("%s", vstr_str(why));
    cconf->recipient_delimiter =
        mystrdup(mail_conf_str(conf, "recipient_delimiter"));
    cconf->dkim = cleanup_dkim_create(conf);
    cleanup_pool_conf(cconf, conf);
    cleanup_trace_conf(cconf, conf);
    cleanup_track_conf(cconf, conf);
    cleanup_suppress_conf(cconf, conf);
    vstr_free(why);
}

/* cleanup_pre_loop - read main.cf once; clear what a crash left */
static void cleanup_pre_loop(MAIL_SERVER *server, void *arg)
{
    CLEANUP_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    VSTR *path = vstr_alloc(100);
    char host[256];

    ctx->server = server;
    /* A client that goes away must not kill us while we answer it. */
    signal(SIGPIPE, SIG_IGN);
    ctx->conf.queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    if (*ctx->conf.queue_dir == 0)
        msg_fatal("queue_directory is not set");
    ctx->conf.myhostname = mystrdup(mail_conf_str(conf, "myhostname"));
    if (*ctx->conf.myhostname == 0) {
        myfree(ctx->conf.myhostname);
        if (gethostname(host, sizeof(host)) < 0)
            msg_fatal("gethostname: %m");
        host[sizeof(host) - 1] = 0;
        ctx->conf.myhostname = mystrdup(host);
    }
    ctx->conf.myorigin = mystrdup(mail_conf_str(conf, "myorigin"));
    if (*ctx->conf.myorigin == 0) {
        myfree(ctx->conf.myorigin);
        ctx->conf.myorigin = mystrdup(ctx->conf.myhostname);
    }
    /* mail_conf_read() has validated these and supplies the defaults. */
    ctx->conf.message_size_limit = mail_conf_size(conf, "message_size_limit");
    ctx->conf.header_size_limit = mail_conf_size(conf, "header_size_limit");
    ctx->conf.body_checks_size_limit =
        mail_conf_size(conf, "body_checks_size_limit");
    /* daemon_timeout: the table keeps it within 1s..INT32_MAX. */
    ctx->timeout = (int) mail_conf_time(conf, "daemon_timeout");
    ctx->busy_connections =
        (int) mail_conf_int(conf, "cleanup_process_connections");
    ctx->commit =
        cleanup_commit_create(mail_server_base(server), ctx->conf.queue_dir);
    mail_queue_service(path, ctx->conf.queue_dir, MAIL_QUEUE_PUBLIC,
                       MAIL_QUEUE_QMGR_SERVICE);
    ctx->trigger_path = vstr_export(path);
    ctx->trigger = trigger_conn_create(ctx->trigger_path);
    cleanup_tables(&ctx->conf, conf);
    ctx->conf.events = events_open(conf, "cleanup");
    if (mail_conf_int(conf, "queue_file_reuse_limit") > 0)
        ctx->conf.reuse = qfile_reuse_open(ctx->conf.queue_dir);
    cleanup_remove_stale(&ctx->conf, CLEANUP_STALE_AGE);
}

/* cleanup_retire - finish the messages in hand, then exit */
static void cleanup_retire(MAIL_SERVER *server, void *arg)
{
    CLEANUP_CTX *ctx = arg;
    CLEANUP_CONN *conn;
    CLEANUP_CONN *next;

    /* Connections kept for more messages would keep us alive. */
    for (conn = ctx->conns; conn != NULL; conn = next) {
        next = conn->next;
        if (cleanup_conn_idle(conn))
            cleanup_conn_free(conn); /* exits with the last one */
    }
    if (ctx->conn_count == 0)
        mail_server_exit(server, 0);
}

/* cleanup_post_loop - free what lives on the event base */
static void cleanup_post_loop(MAIL_SERVER *server, void *arg)
{
    CLEANUP_CTX *ctx = arg;

    (void) server;
    ctx->commit = cleanup_commit_free(ctx->commit);
}

/* cleanup_ctx_release - free what pre_loop read (ASan leak reports) */
static void cleanup_ctx_release(CLEANUP_CTX *ctx)
{
    MAPS **tables[] = {
        &ctx->conf.canonical_maps,
        &ctx->conf.sender_canonical_maps,
        &ctx->conf.recipient_canonical_maps,
        &ctx->conf.virtual_alias_maps,
        &ctx->conf.header_checks,
        &ctx->conf.body_checks,
    };

    ctx->conf.queue_dir = myfree(ctx->conf.queue_dir);
    ctx->conf.reuse = qfile_reuse_free(ctx->conf.reuse);
    ctx->conf.myhostname = myfree(ctx->conf.myhostname);
    ctx->conf.myorigin = myfree(ctx->conf.myorigin);
    ctx->trigger = trigger_conn_free(ctx->trigger);
    ctx->trigger_path = myfree(ctx->trigger_path);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(tables); i++)
        if (*tables[i] != NULL)
            *tables[i] = maps_free(*tables[i]);
    if (ctx->conf.mydestination != NULL)
        ctx->conf.mydestination = match_list_free(ctx->conf.mydestination);
    ctx->conf.recipient_delimiter = myfree(ctx->conf.recipient_delimiter);
    ctx->conf.dkim = cleanup_dkim_free(ctx->conf.dkim);
    cleanup_pool_conf_free(&ctx->conf);
    cleanup_trace_conf_free(&ctx->conf);
    cleanup_track_conf_free(&ctx->conf);
    cleanup_suppress_conf_free(&ctx->conf);
    ctx->conf.events = events_close(ctx->conf.events);
}

/* main - the cleanup daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = cleanup_pre_loop,
        .on_accept = cleanup_accept,
        .on_retire = cleanup_retire,
        .post_loop = cleanup_post_loop,
    };
    CLEANUP_CTX ctx;
    int status;

    memset(&ctx, 0, sizeof(ctx));
    status = mail_server_main(argc, argv, "cleanup", &ops, &ctx);
    cleanup_ctx_release(&ctx);
    return status;
}
