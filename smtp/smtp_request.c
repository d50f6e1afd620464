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
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "attr.h"
#include "delay_format.h"
#include "deliver_proto.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "smtp.h"
#include "vstr.h"

/* smtp_tv_diff - b - a in seconds, never negative */
static double smtp_tv_diff(const struct timeval *a, const struct timeval *b)
{
    double d = (double) (b->tv_sec - a->tv_sec) +
               (double) (b->tv_usec - a->tv_usec) / 1e6;

    return d > 0 ? d : 0;
}

/* smtp_req_send - queue one list to qmgr */
static void smtp_req_send(SMTP_REQ *req, ATTR_LIST *list)
{
    vstr_reset(req->wire);
    attr_list_encode(list, req->wire);
    if (bufferevent_write(req->qmgr, vstr_str(req->wire), vstr_len(req->wire)) <
        0)
        msg_warn("%s: cannot queue a reply to qmgr", req->qid);
    attr_list_free(list);
}

/* smtp_req_free - release a request and what it holds */
static void smtp_req_free(SMTP_REQ *req)
{
    SMTP_CTX *ctx = req->ctx;

    if (req->sess != NULL) {
        req->sess->req = NULL;
        smtp_sess_free(req->sess);
    }
    if (req->lookup)
        dns_lookup_cancel(req->lookup);
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
    for (size_t i = 0; i < req->addr_count; i++)
        myfree(req->addrs[i].host);
    myfree(req->addrs);
    myfree(req->queue_name);
    myfree(req->qid);
    myfree(req->nexthop);
    myfree(req->sender);
    vstr_free(req->host);
    vstr_free(req->site_reason);
    vstr_free(req->why);
    vstr_free(req->wire);
    bufferevent_free(req->qmgr);
    myfree(req);
    ctx->req_count--;
    if (ctx->busy && ctx->req_count <= SMTP_BUSY_REQUESTS) {
        ctx->busy = false;
        mail_server_busy(ctx->server, false);
    }
    if (ctx->req_count == 0 && mail_server_retiring(ctx->server))
        mail_server_exit(ctx->server, 0);
}

/* smtp_req_result - one recipient's outcome: RESULT to qmgr, log line */
void smtp_req_result(SMTP_REQ *req, size_t index, const char *action,
                     const char *dsn_in, const char *reason, const char *relay,
                     const char *diagnostic, const char *remote_mta)
{
    SMTP_RCPT *rcpt = req->rcpts + index;
    ATTR_LIST *list;
    struct timeval now, arrival, active;
    char dsn[16];
    char delay[4][32], total[32];
    double setup, xfer;

    if (rcpt->state == SMTP_RCPT_DONE)
        return;
    rcpt->state = SMTP_RCPT_DONE;
    snprintf(dsn, sizeof(dsn), "%s", dsn_in);
    if (req->ctx->conf.soft_bounce &&
        strcmp(action, DELIVER_ACTION_BOUNCED) == 0) {
        action = DELIVER_ACTION_DEFERRED;
        smtp_soft_dsn(dsn);
    }
    list = attr_list_alloc();
    attr_add_str(list, "request", DELIVER_REQ_RESULT);
    attr_add_int(list, "offset", rcpt->offset);
    attr_add_str(list, "action", action);
    attr_add_str(list, "dsn", dsn);
    attr_add_str(list, "reason", reason);
    attr_add_str(list, "relay", relay ? relay : "none");
    if (diagnostic)
        attr_add_str(list, "diagnostic", diagnostic);
    if (remote_mta)
        attr_add_str(list, "remote_mta", remote_mta);
    smtp_req_send(req, list);

    /* delays=a/b/c/d: queue, qmgr, connection setup, transmission */
    gettimeofday(&now, NULL);
    active.tv_sec = (time_t) (req->active_usec / 1000000);
    active.tv_usec = (suseconds_t) (req->active_usec % 1000000);
    arrival = req->info ? req->info->arrival : active;
    if (req->t_conn.tv_sec != 0) {
        setup = smtp_tv_diff(&req->t_request, &req->t_conn);
        xfer = smtp_tv_diff(&req->t_conn, &now);
    } else {
        setup = smtp_tv_diff(&req->t_request, &now);
        xfer = 0;
    }
    delay_format(smtp_tv_diff(&arrival, &now), total, sizeof(total));
    delay_format(smtp_tv_diff(&arrival, &active), delay[0], sizeof(delay[0]));
    delay_format(smtp_tv_diff(&active, &req->t_request), delay[1],
                 sizeof(delay[1]));
    delay_format(setup, delay[2], sizeof(delay[2]));
    delay_format(xfer, delay[3], sizeof(delay[3]));
    msg_info("%s: to=<%s>, relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s, "
             "status=%s (%s)",
             req->qid, rcpt->address, relay ? relay : "none", total, delay[0],
             delay[1], delay[2], delay[3], dsn, action, reason);
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
    ATTR_LIST *list = attr_list_alloc();

    if (req->lookup) {
        dns_lookup_cancel(req->lookup);
        req->lookup = NULL;
    }
    attr_add_str(list, "request", DELIVER_REQ_DONE);
    attr_add_int(list, "status", status);
    attr_add_int(list, "site_failed", site_failed ? 1 : 0);
    if (reason != NULL && *reason)
        attr_add_str(list, "reason", reason);
    smtp_req_send(req, list);
    req->stage = SMTP_REQ_DONE;
    bufferevent_disable(req->qmgr, EV_READ);
    /* The write callback frees us when DONE is out; make sure it runs. */
    if (evbuffer_get_length(bufferevent_get_output(req->qmgr)) == 0)
        bufferevent_trigger(req->qmgr, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS |
                                BEV_TRIG_DEFER_CALLBACKS);
}

/* smtp_req_site_failed - no server took the mail: defer everyone */
void smtp_req_site_failed(SMTP_REQ *req)
{
    const char *reason = vstr_len(req->site_reason) > 0
                             ? vstr_str(req->site_reason)
                             : "no mail server could be reached";

    smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED,
                      req->site_dsn[0] ? req->site_dsn : "4.4.1", reason, NULL,
                      NULL, NULL);
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
    } else if ((req->info = qfile_info_read(req->fd, req->why)) == NULL) {
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
    smtp_req_route(req);
}

/* smtp_req_fail - qmgr broke the protocol or went away */
static void smtp_req_fail(SMTP_REQ *req, const char *why)
{
    msg_warn("%s%sqmgr connection: %s", req->qid ? req->qid : "",
             req->qid ? ": " : "", why);
    smtp_req_free(req);
}

/* smtp_req_list - one list from qmgr */
static bool smtp_req_list(SMTP_REQ *req, ATTR_LIST *list)
{
    const char *request = attr_get_str(list, "request");

    if (req->stage == SMTP_REQ_READ_DELIVER) {
        if (request == NULL || strcmp(request, DELIVER_REQ_DELIVER) != 0 ||
            attr_list_check(list, deliver_request_spec,
                            SLUICE_ARRAY_LEN(deliver_request_spec),
                            req->why) < 0) {
            if (request && strcmp(request, DELIVER_REQ_DELIVER) != 0)
                vstr_sprintf(req->why, "expected DELIVER, got \"%s\"", request);
            return false;
        }
        req->queue_name = mystrdup(attr_get_str(list, "queue_name"));
        req->qid = mystrdup(attr_get_str(list, "queue_id"));
        req->nexthop = mystrdup(attr_get_str(list, "nexthop"));
        req->sender = mystrdup(attr_get_str(list, "sender"));
        (void) attr_get_int(list, "active_usec", &req->active_usec);
        (void) attr_get_int(list, "rcpt_count", &req->rcpt_want);
        if (req->rcpt_want < 1 || req->rcpt_want > 100000 ||
            strchr(req->qid, '/') || strchr(req->queue_name, '/') ||
            strcmp(req->qid, "..") == 0 || strcmp(req->qid, ".") == 0) {
            vstr_cpy(req->why, "bad rcpt_count, queue_id or queue_name");
            return false;
        }
        req->rcpts = mycalloc((size_t) req->rcpt_want, sizeof(SMTP_RCPT));
        req->stage = SMTP_REQ_READ_RCPT;
        return true;
    }
    if (req->stage == SMTP_REQ_READ_RCPT) {
        SMTP_RCPT *rcpt = req->rcpts + req->rcpt_count;
        const char *value;

        if (request == NULL || strcmp(request, DELIVER_REQ_RCPT) != 0 ||
            attr_list_check(list, deliver_rcpt_spec,
                            SLUICE_ARRAY_LEN(deliver_rcpt_spec),
                            req->why) < 0) {
            if (request && strcmp(request, DELIVER_REQ_RCPT) != 0)
                vstr_sprintf(req->why, "expected RCPT, got \"%s\"", request);
            return false;
        }
        (void) attr_get_int(list, "offset", &rcpt->offset);
        rcpt->address = mystrdup(attr_get_str(list, "address"));
        value = attr_get_str(list, "orcpt");
        rcpt->orcpt = mystrdup(value ? value : "");
        value = attr_get_str(list, "notify");
        rcpt->notify = mystrdup(value ? value : "");
        if ((long long) ++req->rcpt_count == req->rcpt_want)
            smtp_req_start(req);
        return true;
    }
    vstr_cpy(req->why, "unexpected list after the request");
    return false;
}

/* smtp_req_read_event - lists from qmgr */
static void smtp_req_read_event(struct bufferevent *bev, void *arg)
{
    SMTP_REQ *req = arg;
    struct evbuffer *input = bufferevent_get_input(bev);

    while (req->stage == SMTP_REQ_READ_DELIVER ||
           req->stage == SMTP_REQ_READ_RCPT) {
        size_t avail = evbuffer_get_length(input);
        ATTR_LIST *list = NULL;
        size_t used = 0;
        int ret;
        bool ok;

        if (avail == 0)
            return;
        ret = attr_list_decode((const char *) evbuffer_pullup(input, -1), avail,
                               DELIVER_LIST_MAX, &used, &list, req->why);
        if (ret == 0 && avail <= DELIVER_LIST_MAX)
            return;
        if (ret <= 0) {
            smtp_req_fail(req,
                          ret == 0 ? "request too large" : vstr_str(req->why));
            return;
        }
        evbuffer_drain(input, used);
        ok = smtp_req_list(req, list);
        attr_list_free(list);
        if (!ok) {
            smtp_req_fail(req, vstr_str(req->why));
            return;
        }
    }
    if (evbuffer_get_length(input) > 0 && req->stage == SMTP_REQ_WORKING) {
        smtp_req_fail(req, "unexpected input after the request");
        return;
    }
    if (req->stage == SMTP_REQ_WORKING) {
        /* Reading on only notices qmgr going away; the delivery has
           timers of its own. */
        bufferevent_set_timeouts(req->qmgr, NULL, NULL);
    }
}

/* smtp_req_write_event - DONE is out: the request is over */
static void smtp_req_write_event(struct bufferevent *bev, void *arg)
{
    SMTP_REQ *req = arg;

    if (req->stage == SMTP_REQ_DONE)
        smtp_req_free(req);
}

/* smtp_req_event - qmgr EOF, error or timeout */
static void smtp_req_event(struct bufferevent *bev, short what, void *arg)
{
    SMTP_REQ *req = arg;

    if (req->stage == SMTP_REQ_DONE) {
        smtp_req_free(req);
        return;
    }
    smtp_req_fail(req, (what & BEV_EVENT_TIMEOUT) ? "timeout"
                       : (what & BEV_EVENT_EOF)   ? "lost connection"
                                                  : "I/O error");
}

/* smtp_accept - qmgr hands over a delivery */
void smtp_accept(MAIL_SERVER *server, int fd, void *arg)
{
    SMTP_CTX *ctx = arg;
    SMTP_REQ *req = mycalloc(1, sizeof(*req));
    struct timeval timeout = {ctx->conf.ipc_timeout, 0};

    req->ctx = ctx;
    req->fd = -1;
    req->host = vstr_alloc(64);
    req->site_reason = vstr_alloc(100);
    req->why = vstr_alloc(100);
    req->wire = vstr_alloc(256);
    req->qmgr = bufferevent_socket_new(mail_server_base(server), fd,
                                       BEV_OPT_CLOSE_ON_FREE);
    if (req->qmgr == NULL) {
        msg_warn("cannot create a bufferevent for a request");
        (void) close(fd);
        vstr_free(req->host);
        vstr_free(req->site_reason);
        vstr_free(req->why);
        vstr_free(req->wire);
        myfree(req);
        return;
    }
    if (++ctx->req_count > SMTP_BUSY_REQUESTS && !ctx->busy) {
        ctx->busy = true;
        mail_server_busy(server, true);
    }
    bufferevent_setcb(req->qmgr, smtp_req_read_event, smtp_req_write_event,
                      smtp_req_event, req);
    bufferevent_set_timeouts(req->qmgr, &timeout, &timeout);
    bufferevent_enable(req->qmgr, EV_READ | EV_WRITE);
}
