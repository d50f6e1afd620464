/*
 * smtp_request - the qmgr side of the SMTP delivery agent
 *
 * qmgr connects to private/smtp and sends one request: DELIVER, then its
 * RCPT lists (global/deliver_proto.h); readers are strict. Once every
 * recipient is in, the queue file is opened read-only and the request is
 * routed (smtp_connect.c). Each recipient's RESULT goes to qmgr as soon
 * as it is known, with its log line (to=<...>, relay=..., delay=...,
 * delays=a/b/c/d, dsn=..., status=...), then DONE; the request is freed
 * once DONE is out.
 *
 * The connection is kept for qmgr's next request (our HELLO says reuse=1):
 * once DONE is out, a fresh idle request takes it over and waits for the
 * next DELIVER (no HELLO again) for at most ipc_timeout. An idle request
 * is not work in hand: it does not keep a retiring process alive, and one
 * that gets a DELIVER while the process retires closes without a word, so
 * that qmgr sends it again over a fresh connection (to a new process).
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/time.h>

#include <event2/event.h>

#include "attr.h"
#include "attr_conn.h"
#include "deliver_agent.h"
#include "deliver_log.h"
#include "deliver_proto.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "smtp.h"
#include "verp.h"
#include "vstr.h"

/* smtp_req_send - queue req->wire (one list or more) to qmgr */
static void smtp_req_send(SMTP_REQ *req)
{
    if (vstr_len(req->wire) == 0 || req->qmgr == NULL)
        return;
    attr_conn_send_wire(req->qmgr, req->wire);
    vstr_reset(req->wire);
}

/* smtp_req_flush_event - what smtp_req_send_soon kept back goes now */
static void smtp_req_flush_event(evutil_socket_t fd, short what, void *arg)
{
    smtp_req_send(arg);
}

/* smtp_req_send_soon - send req->wire once this pass of the event loop
   is over: a DONE or more results that follow in the same pass go in
   the same write */
static void smtp_req_send_soon(SMTP_REQ *req)
{
    if (req->flush_ev == NULL &&
        (req->flush_ev = event_new(mail_server_base(req->ctx->server), -1, 0,
                                   smtp_req_flush_event, req)) == NULL) {
        smtp_req_send(req);
        return;
    }
    event_active(req->flush_ev, EV_TIMEOUT, 1);
}

/* smtp_req_new - an empty request, reading (no connection yet), in
   ctx->reqs */
static SMTP_REQ *smtp_req_new(SMTP_CTX *ctx)
{
    SMTP_REQ *req = mycalloc(1, sizeof(*req));

    req->ctx = ctx;
    if ((req->all_next = ctx->reqs) != NULL)
        req->all_next->all_prev = req;
    ctx->reqs = req;
    req->fd = -1;
    req->host = vstr_alloc(64);
    req->site_reason = vstr_alloc(100);
    req->site_diag = vstr_alloc(100);
    req->why = vstr_alloc(100);
    req->wire = vstr_alloc(256);
    return req;
}

/* smtp_req_free - release a request and what it holds */
static void smtp_req_free(SMTP_REQ *req)
{
    SMTP_CTX *ctx = req->ctx;

    smtp_slot_release(req);
    if (req->sess != NULL) {
        req->sess->req = NULL;
        smtp_sess_free(req->sess);
    }
    if (req->lookup)
        dns_lookup_cancel(req->lookup);
    smtp_dane_forget(req);
    if (req->sts_lookup)
        mta_sts_lookup_cancel(req->sts_lookup);
    if (req->sts_mx)
        argv_free(req->sts_mx);
    if (req->flush_ev != NULL)
        event_free(req->flush_ev);
    if (req->fd >= 0)
        (void) close(req->fd);
    if (req->info)
        qfile_info_free(req->info);
    for (size_t i = 0; i < req->rcpt_count; i++) {
        myfree(req->rcpts[i].address);
        myfree(req->rcpts[i].orcpt);
        myfree(req->rcpts[i].notify);
    }
    myfree(req->rcpts);
    deliver_agent_reader_free(&req->reader);
    for (size_t i = 0; i < req->addr_count; i++)
        myfree(req->addrs[i].host);
    myfree(req->addrs);
    myfree(req->queue_name);
    myfree(req->qid);
    myfree(req->nexthop);
    myfree(req->sender);
    if (req->verp_sender)
        myfree(req->verp_sender);
    if (req->conn_group)
        myfree(req->conn_group);
    myfree(req->source_address);
    myfree(req->source_helo);
    if (req->tls_match)
        argv_free(req->tls_match);
    myfree(req->tls_protocols);
    vstr_free(req->host);
    vstr_free(req->site_reason);
    vstr_free(req->site_diag);
    vstr_free(req->why);
    if (req->window)
        vstr_free(req->window);
    vstr_free(req->wire);
    attr_conn_free(req->qmgr); /* from its own callback: attr_conn's rule */
    if (req->all_prev)
        req->all_prev->all_next = req->all_next;
    else
        ctx->reqs = req->all_next;
    if (req->all_next)
        req->all_next->all_prev = req->all_prev;
    if (req->idle) {
        myfree(req);
        return; /* never counted */
    }
    myfree(req);
    ctx->req_count--;
    if (ctx->busy && ctx->req_count <= SMTP_BUSY_REQUESTS) {
        ctx->busy = false;
        mail_server_busy(ctx->server, false);
    }
    if (ctx->req_count == 0 && mail_server_retiring(ctx->server))
        mail_server_exit(ctx->server, 0);
}

/* smtp_req_usec - microseconds from since to until (0 when backwards) */
static long long smtp_req_usec(const struct timeval *since,
                               const struct timeval *until)
{
    long long usec = ((long long) until->tv_sec - since->tv_sec) * 1000000 +
                     (until->tv_usec - since->tv_usec);

    return usec > 0 ? usec : 0;
}

/* smtp_req_result - one recipient's outcome: RESULT to qmgr, log line */
void smtp_req_result(SMTP_REQ *req, size_t index, const char *action,
                     const char *dsn_in, const char *reason, const char *relay,
                     const char *diagnostic, const char *remote_mta)
{
    SMTP_RCPT *rcpt = req->rcpts + index;
    DELIVER_RESULT result;
    DELIVER_TIMES times;
    DELIVER_LOG entry;
    BOUNCE_CLASS class = {.category = NULL, .hard = false};
    char dsn[16];

    if (rcpt->state == SMTP_RCPT_DONE)
        return;
    rcpt->state = SMTP_RCPT_DONE;
    snprintf(dsn, sizeof(dsn), "%s", dsn_in);
    if (req->ctx->conf.soft_bounce &&
        strcmp(action, DELIVER_ACTION_BOUNCED) == 0) {
        action = DELIVER_ACTION_DEFERRED;
        smtp_soft_dsn(dsn);
    }
    /* Classified once, here, where the reply is known: the log line,
       qmgr's events and the DSN all carry this. */
    if (strcmp(action, DELIVER_ACTION_SENT) != 0)
        bounce_class_result(req->ctx->bounce_classes, dsn, diagnostic, reason,
                            &class);
    result = (DELIVER_RESULT){.offset = rcpt->offset,
                              .action = action,
                              .dsn = dsn,
                              .reason = reason,
                              .relay = relay,
                              .diagnostic = diagnostic,
                              .remote_mta = remote_mta,
                              .source = req->source_address,
                              .category = class.category,
                              .hard = class.hard};
    /* The connection that gave it, when it went over TLS. */
    if (req->sess != NULL && req->sess->tls_word != NULL) {
        result.tls_version = req->sess->tls_version;
        result.tls_cipher = req->sess->tls_cipher;
        result.tls_level = req->sess->tls_word;
    }
    /* The attempt's latency and, for a new connection, its setup (the
       metrics daemon's histograms): delays= c and c+d. */
    gettimeofday(&times.now, NULL);
    result.attempt_usec = smtp_req_usec(&req->t_request, &times.now);
    if (req->sess != NULL && !req->from_cache && req->t_conn.tv_sec != 0 &&
        !req->sess->setup_reported) {
        /* Once per connection: the metrics count sessions by it. */
        result.conn_usec = smtp_req_usec(&req->t_request, &req->t_conn);
        req->sess->setup_reported = true;
    }
    deliver_agent_result_wire(&result, req->wire);
    smtp_req_send_soon(req);

    /* delays=a/b/c/d: queue, qmgr, connection setup, transmission (all
       setup while no connection was made) */
    times.active = deliver_log_usec(req->active_usec);
    times.arrival = req->info ? req->info->arrival : times.active;
    times.request = req->t_request;
    times.conn = req->t_conn.tv_sec != 0 ? req->t_conn : times.now;
    entry = (DELIVER_LOG){.qid = req->qid,
                          .to = rcpt->address,
                          .orig_to = NULL,
                          .relay = relay,
                          .dsn = dsn,
                          .category = class.category,
                          .status = action,
                          .reason = reason};
    deliver_log(&entry, &times);
}

/* smtp_req_fail_all - every recipient without a result gets this one */
void smtp_req_fail_all(SMTP_REQ *req, const char *action, const char *dsn,
                       const char *reason, const char *relay,
                       const char *diagnostic, const char *remote_mta)
{
    for (size_t i = 0; i < req->rcpt_count; i++)
        smtp_req_result(req, i, action, dsn, reason, relay, diagnostic,
                        remote_mta);
}

/* smtp_req_done - send DONE; the request is freed once it is out */
void smtp_req_done(SMTP_REQ *req, int status, bool site_failed,
                   const char *reason)
{
    DELIVER_DONE done = {.status = status,
                         .site_failed = site_failed,
                         .reason = reason,
                         .source_failed = req->source_failed};

    if (req->lookup) {
        dns_lookup_cancel(req->lookup);
        req->lookup = NULL;
    }
    smtp_dane_forget(req);
    smtp_slot_release(req);
    deliver_agent_done_wire(&done, req->wire);
    smtp_req_send(req);
    req->stage = SMTP_REQ_DONE;
    attr_conn_reading(req->qmgr, false);
    /* The drain callback frees us when DONE is out; make sure it runs. */
    attr_conn_drain_check(req->qmgr);
}

/* smtp_req_site_failed - no server took the mail: defer everyone */
void smtp_req_site_failed(SMTP_REQ *req)
{
    const char *reason = vstr_len(req->site_reason) > 0
                             ? vstr_str(req->site_reason)
                             : "no mail server could be reached";

    /* A server's refusal (a 4xx/5xx greeting) goes with its words as the
       diagnostic: qmgr's response automation reads them. */
    smtp_req_fail_all(
        req, DELIVER_ACTION_DEFERRED,
        req->site_dsn[0] ? req->site_dsn : "4.4.1", reason, NULL,
        vstr_len(req->site_diag) ? vstr_str(req->site_diag) : NULL, NULL);
    smtp_req_done(req, 0, true, reason);
}

/* smtp_req_start - every RCPT is in: open the queue file and go */
static void smtp_req_start(SMTP_REQ *req)
{
    SMTP_CONF *conf = &req->ctx->conf;
    VSTR *path = vstr_alloc(100);

    req->stage = SMTP_REQ_WORKING;
    gettimeofday(&req->t_request, NULL);
    mail_queue_path(path, conf->queue_dir, req->queue_name, req->qid);
    if ((req->fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        vstr_sprintf(req->why, "open %s: %s", vstr_str(path), strerror(errno));
    } else if ((req->info = qfile_info_read_new(req->fd, req->why)) == NULL) {
        VSTR *reason = vstr_alloc(100);

        vstr_sprintf(reason, "%s: %s", vstr_str(path), vstr_str(req->why));
        vstr_cpy(req->why, vstr_str(reason));
        vstr_free(reason);
    }
    if (req->info == NULL) {
        msg_warn("%s: cannot read the queue file: %s", req->qid,
                 vstr_str(req->why));
        vstr_free(path);
        smtp_req_done(req, 1, false, vstr_str(req->why));
        return;
    }
    vstr_free(path);
    if (smtp_nexthop_parse(req->nexthop, conf->tcp_port, req->host, &req->port,
                           &req->mx, req->why) < 0) {
        msg_warn("%s: %s", req->qid, vstr_str(req->why));
        smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED, "4.3.5",
                          vstr_str(req->why), NULL, NULL, NULL);
        smtp_req_done(req, 0, false, vstr_str(req->why));
        return;
    }
    if (!smtp_req_policy(req))
        return;
    smtp_req_sts(req); /* then smtp_req_route */
}

/* smtp_req_fail - qmgr broke the protocol or went away */
static void smtp_req_fail(SMTP_REQ *req, const char *why)
{
    const char *qid = req->qid          ? req->qid
                      : req->reader.req ? req->reader.req->queue_id
                                        : NULL;

    msg_warn("%s%sqmgr connection: %s", qid ? qid : "", qid ? ": " : "", why);
    smtp_req_free(req);
}

/* smtp_req_adopt - the complete request from the reader into req */
static void smtp_req_adopt(SMTP_REQ *req)
{
    DELIVER_REQ *in = req->reader.req;

    req->queue_name = mystrdup(in->queue_name);
    req->qid = mystrdup(in->queue_id);
    req->nexthop = mystrdup(in->nexthop);
    req->sender = mystrdup(in->sender);
    req->active_usec = in->active_usec;
    req->rcpt_want = (long long) in->rcpt_want;
    req->conn_messages = in->conn_messages;
    if (in->conn_group != NULL && in->conn_max > 0) {
        req->conn_group = mystrdup(in->conn_group);
        req->conn_max = in->conn_max;
    }
    if (in->source_address != NULL)
        req->source_address = mystrdup(in->source_address);
    if (in->source_helo != NULL)
        req->source_helo = mystrdup(in->source_helo);
    req->rcpts = mycalloc(in->rcpt_count, sizeof(SMTP_RCPT));
    for (size_t i = 0; i < in->rcpt_count; i++) {
        req->rcpts[i].offset = in->rcpts[i].offset;
        req->rcpts[i].address = mystrdup(in->rcpts[i].address);
        req->rcpts[i].orcpt = mystrdup(in->rcpts[i].orcpt);
        req->rcpts[i].notify = mystrdup(in->rcpts[i].notify);
    }
    req->rcpt_count = in->rcpt_count;
    /* VERP: qmgr sends such mail one recipient per request, so the token
       names the recipient; a null sender (a DSN) stays null. */
    if (req->ctx->conf.verp_key != NULL && *req->sender &&
        req->rcpt_count > 0) {
        VSTR *verp = vstr_alloc(100);

        verp_make(verp, req->ctx->conf.verp_key, req->ctx->conf.verp_domain,
                  req->qid, req->rcpts[0].offset);
        req->verp_sender = vstr_export(verp);
    }
    deliver_agent_reader_free(&req->reader);
}

/* smtp_req_list - one list from qmgr, through the shared reader */
static bool smtp_req_list(SMTP_REQ *req, ATTR_LIST *list)
{
    int ret = deliver_agent_feed(&req->reader, list, req->why);

    if (ret < 0)
        return false;
    if (ret == 0) {
        if (req->reader.req != NULL)
            req->stage = SMTP_REQ_READ_RCPT;
        return true;
    }
    smtp_req_adopt(req);
    smtp_req_start(req);
    return true;
}

/* smtp_req_on_list - one list from qmgr */
static void smtp_req_on_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    SMTP_REQ *req = arg;
    SMTP_CTX *ctx = req->ctx;

    if (req->idle) {
        /* The next request on a kept connection. A retiring process
           takes no new work: closing unanswered makes qmgr send it again
           over a fresh connection. */
        if (mail_server_retiring(ctx->server)) {
            smtp_req_free(req);
            return;
        }
        req->idle = false;
        if (++ctx->req_count > SMTP_BUSY_REQUESTS && !ctx->busy) {
            ctx->busy = true;
            mail_server_busy(ctx->server, true);
        }
    }
    if (req->stage != SMTP_REQ_READ_DELIVER &&
        req->stage != SMTP_REQ_READ_RCPT) {
        smtp_req_fail(req, "unexpected input after the request");
        return;
    }
    if (!smtp_req_list(req, list)) {
        smtp_req_fail(req, vstr_str(req->why));
        return;
    }
    if (req->stage == SMTP_REQ_WORKING) {
        if (attr_conn_input_len(conn) > 0) {
            smtp_req_fail(req, "unexpected input after the request");
            return;
        }
        /* Reading on only notices qmgr going away; the delivery has
           timers of its own. */
        attr_conn_timeouts(conn, 0, 0);
    }
}

/* smtp_req_on_drain - DONE is out: the request is over; the connection
   waits for the next one (unless the process retires) */
static void smtp_req_on_drain(ATTR_CONN *conn, void *arg)
{
    SMTP_REQ *req = arg;
    SMTP_CTX *ctx = req->ctx;
    SMTP_REQ *next;

    if (req->stage != SMTP_REQ_DONE)
        return;
    if (mail_server_retiring(ctx->server) || attr_conn_input_len(conn) > 0) {
        smtp_req_free(req);
        return;
    }
    next = smtp_req_new(ctx);
    next->idle = true;
    next->reader.greeted = true; /* qmgr's HELLO came on this connection */
    next->qmgr = conn;
    req->qmgr = NULL;
    attr_conn_rebind(conn, next);
    attr_conn_reading(conn, true);
    attr_conn_timeouts(conn, ctx->conf.ipc_timeout, ctx->conf.ipc_timeout);
    smtp_req_free(req);
}

/* smtp_req_on_end - qmgr EOF, error, timeout or a malformed list */
static void smtp_req_on_end(ATTR_CONN *conn, ATTR_CONN_END kind,
                            const char *why, void *arg)
{
    SMTP_REQ *req = arg;

    if (req->stage == SMTP_REQ_DONE || req->idle) {
        smtp_req_free(req); /* an idle connection's end is no failure */
        return;
    }
    smtp_req_fail(req, kind == ATTR_CONN_IO ? "I/O error" : why);
}

static const ATTR_CONN_OPS smtp_req_ops = {
    .on_list = smtp_req_on_list,
    .on_end = smtp_req_on_end,
    .on_drain = smtp_req_on_drain,
};

/* smtp_accept - qmgr hands over a delivery */
void smtp_accept(MAIL_SERVER *server, int fd, void *arg)
{
    SMTP_CTX *ctx = arg;
    SMTP_REQ *req = smtp_req_new(ctx);

    req->qmgr = attr_conn_accept(mail_server_base(server), fd, DELIVER_LIST_MAX,
                                 &smtp_req_ops, req);
    if (++ctx->req_count > SMTP_BUSY_REQUESTS && !ctx->busy) {
        ctx->busy = true;
        mail_server_busy(server, true);
    }
    /* Our HELLO first, so that qmgr can tell a version mismatch too. */
    deliver_agent_hello_reuse_wire(req->wire);
    smtp_req_send(req);
    attr_conn_timeouts(req->qmgr, ctx->conf.ipc_timeout, ctx->conf.ipc_timeout);
}
