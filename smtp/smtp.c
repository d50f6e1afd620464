/*
 * smtp - the SMTP delivery agent: one process, many deliveries at once
 *
 * qmgr connects to private/smtp and sends one request (DELIVER, then its
 * RCPT lists; global/deliver_proto.h). The agent opens the queue file
 * read-only, finds the servers of the next hop (global/dns.h; an IP
 * literal needs no DNS), and tries them in order until one completes the
 * greeting and EHLO: a refused connection, a 4xx/5xx greeting, a broken
 * EHLO or a timeout there moves on to the next address. Then one mail
 * transaction (MAIL, RCPT..., DATA, pipelined when the server offers
 * PIPELINING) with a timer for every phase. Each recipient's RESULT goes
 * to qmgr as soon as it is known, with its log line, then DONE.
 *
 * A connection that delivered is kept: RSET, then it waits idle in the
 * cache (keyed by next hop) for smtp_connection_cache_time_limit, and the
 * next request for that next hop takes it instead of looking up and
 * connecting again, at most smtp_connection_reuse_count_limit times. A
 * cached connection found dead before its first reply is dropped and the
 * request starts afresh, so reuse never fails a delivery.
 *
 * Every session and request lives on the event loop; nothing here blocks
 * except reading the local queue file.
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "attr.h"
#include "delay_format.h"
#include "deliver_proto.h"
#include "dns.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "smtp.h"
#include "vstr.h"
#include "xtext.h"

#define SMTP_BUSY_REQUESTS 500 /* requests in hand: tell master busy */
#define SMTP_QUIT_WAIT_MAX 5 /* at most this long for a reply to QUIT */
#define SMTP_CONTENT_HIGH (256 * 1024) /* content queued to a server */
#define SMTP_CONTENT_LOW (64 * 1024) /* refill below this */
#define SMTP_LINE_MAX (2 * SMTP_REPLY_LINE_MAX) /* unterminated reply line */
#define SMTP_BAD_LINE_SHOWN 100 /* of a malformed reply line, in the log */

/* What main.cf says, read once. */
typedef struct SMTP_CONF {
    char *queue_dir;
    char *helo_name;
    char *bind_address;
    int tcp_port;
    int connect_timeout;
    int helo_timeout;
    int mail_timeout;
    int rcpt_timeout;
    int data_init_timeout;
    int data_xfer_timeout;
    int data_done_timeout;
    int quit_timeout;
    int rset_timeout;
    int dns_timeout;
    int ipc_timeout;
    int cache_time;
    int reuse_limit;
    bool soft_bounce;
} SMTP_CONF;

typedef struct SMTP_SESS SMTP_SESS;
typedef struct SMTP_REQ SMTP_REQ;

typedef struct SMTP_CTX {
    SMTP_CONF conf;
    MAIL_SERVER *server;
    DNS_CTX *dns;
    int req_count;
    bool busy;
    SMTP_SESS *cache; /* idle connections */
} SMTP_CTX;

typedef struct SMTP_EXPECT {
    SMTP_CMD cmd;
    size_t rcpt; /* RCPT: which recipient */
} SMTP_EXPECT;

#define SMTP_EXPECT_MAX 4 /* beyond RCPTs: RSET, MAIL, DATA, DOT */

struct SMTP_SESS {
    SMTP_CTX *ctx;
    SMTP_REQ *req; /* NULL when idle or closing */
    struct bufferevent *bev;
    struct event *timer;
    char *nexthop; /* the cache key */
    char *host;
    char ip[INET6_ADDRSTRLEN];
    int port;
    VSTR *label; /* "host[ip]" */
    bool connected;
    bool greeted; /* EHLO/HELO done */
    int features;
    long long size_limit;
    int uses; /* transactions started */
    SMTP_REPLY *reply;
    SMTP_EXPECT *expect; /* replies awaited, in order */
    size_t expect_head;
    size_t expect_count;
    size_t expect_cap;
    bool broken; /* never reuse */
    bool quitting; /* QUIT sent: free at its reply */
    bool txn_started;
    bool txn_reply; /* a reply to this transaction arrived */
    bool mail_failed;
    size_t accepted; /* recipients accepted by RCPT */
    bool in_content;
    off_t content_pos;
    SMTP_ENC enc;
    VSTR *out;
    SMTP_SESS *next; /* the cache */
};

typedef enum SMTP_RCPT_STATE {
    SMTP_RCPT_PENDING,
    SMTP_RCPT_ACCEPTED,
    SMTP_RCPT_DONE,
} SMTP_RCPT_STATE;

typedef struct SMTP_RCPT {
    long long offset;
    char *address;
    char *orcpt;
    char *notify;
    SMTP_RCPT_STATE state;
} SMTP_RCPT;

typedef enum SMTP_REQ_STAGE {
    SMTP_REQ_READ_DELIVER,
    SMTP_REQ_READ_RCPT,
    SMTP_REQ_WORKING,
    SMTP_REQ_DONE, /* DONE queued: free when it is out */
} SMTP_REQ_STAGE;

struct SMTP_REQ {
    SMTP_CTX *ctx;
    struct bufferevent *qmgr;
    SMTP_REQ_STAGE stage;
    char *queue_name;
    char *qid;
    char *nexthop;
    char *sender;
    long long active_usec;
    long long rcpt_want;
    SMTP_RCPT *rcpts;
    size_t rcpt_count;
    int fd; /* the queue file, -1 */
    QFILE_INFO *info;
    VSTR *host;
    int port;
    bool mx;
    DNS_LOOKUP *lookup;
    DNS_ADDR *addrs;
    size_t addr_count;
    size_t addr_next;
    SMTP_SESS *sess;
    bool from_cache; /* sess came from the cache */
    struct timeval t_request;
    struct timeval t_conn; /* setup done; 0 until then */
    VSTR *site_reason; /* the last address's failure */
    char site_dsn[16];
    VSTR *why;
    VSTR *wire;
};

static void smtp_req_route(SMTP_REQ *req);
static void smtp_req_try_next(SMTP_REQ *req);
static void smtp_sess_free(SMTP_SESS *sess);
static void smtp_sess_quit(SMTP_SESS *sess);
static void smtp_sess_timer_set(SMTP_SESS *sess, int seconds);
static void smtp_txn_start(SMTP_SESS *sess);
static void smtp_txn_end(SMTP_SESS *sess);

/* smtp_tv_diff - b - a in seconds, never negative */
static double smtp_tv_diff(const struct timeval *a, const struct timeval *b)
{
    double d = (double) (b->tv_sec - a->tv_sec) +
               (double) (b->tv_usec - a->tv_usec) / 1e6;

    return d > 0 ? d : 0;
}

/* smtp_cmd_timeout - how long to wait for the reply to cmd */
static int smtp_cmd_timeout(const SMTP_CONF *conf, SMTP_CMD cmd)
{
    switch (cmd) {
    case SMTP_CMD_GREETING:
    case SMTP_CMD_EHLO:
    case SMTP_CMD_HELO:
        return conf->helo_timeout;
    case SMTP_CMD_MAIL:
        return conf->mail_timeout;
    case SMTP_CMD_RCPT:
        return conf->rcpt_timeout;
    case SMTP_CMD_DATA:
        return conf->data_init_timeout;
    case SMTP_CMD_DOT:
        return conf->data_done_timeout;
    case SMTP_CMD_RSET:
        return conf->rset_timeout;
    case SMTP_CMD_QUIT:
        return conf->quit_timeout < SMTP_QUIT_WAIT_MAX ? conf->quit_timeout
                                                        : SMTP_QUIT_WAIT_MAX;
    }
    return conf->helo_timeout;
}

/* smtp_cmd_phase - what we were doing, as Postfix says it */
static const char *smtp_cmd_phase(SMTP_CMD cmd)
{
    switch (cmd) {
    case SMTP_CMD_GREETING:
        return "receiving the initial server greeting";
    case SMTP_CMD_EHLO:
    case SMTP_CMD_HELO:
        return "performing the EHLO handshake";
    case SMTP_CMD_MAIL:
        return "sending MAIL FROM";
    case SMTP_CMD_RCPT:
        return "sending RCPT TO";
    case SMTP_CMD_DATA:
        return "sending DATA command";
    case SMTP_CMD_DOT:
        return "sending end of data -- message may be sent more than once";
    case SMTP_CMD_RSET:
        return "sending RSET";
    case SMTP_CMD_QUIT:
        return "sending QUIT";
    }
    return "talking";
}

/* smtp_cmd_name - for "(in reply to X command)" */
static const char *smtp_cmd_name(SMTP_CMD cmd)
{
    switch (cmd) {
    case SMTP_CMD_GREETING:
        return "initial greeting";
    case SMTP_CMD_EHLO:
        return "EHLO";
    case SMTP_CMD_HELO:
        return "HELO";
    case SMTP_CMD_MAIL:
        return "MAIL FROM";
    case SMTP_CMD_RCPT:
        return "RCPT TO";
    case SMTP_CMD_DATA:
        return "DATA";
    case SMTP_CMD_DOT:
        return "end of DATA";
    case SMTP_CMD_RSET:
        return "RSET";
    case SMTP_CMD_QUIT:
        return "QUIT";
    }
    return "unknown";
}

/* --- requests: qmgr's side ------------------------------------------- */

/* smtp_req_send - queue one list to qmgr */
static void smtp_req_send(SMTP_REQ *req, ATTR_LIST *list)
{
    vstr_reset(req->wire);
    attr_list_encode(list, req->wire);
    if (bufferevent_write(req->qmgr, vstr_str(req->wire),
                          vstr_len(req->wire)) < 0)
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
static void smtp_req_result(SMTP_REQ *req, size_t index, const char *action,
                            const char *dsn_in, const char *reason,
                            const char *relay, const char *diagnostic,
                            const char *remote_mta)
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
    delay_format(smtp_tv_diff(&arrival, &active), delay[0],
                      sizeof(delay[0]));
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
static void smtp_req_fail_all(SMTP_REQ *req, const char *action,
                              const char *dsn, const char *reason,
                              const char *relay, const char *diagnostic,
                              const char *remote_mta)
{
    for (size_t i = 0; i < req->rcpt_count; i++)
        smtp_req_result(req, i, action, dsn, reason, relay, diagnostic,
                        remote_mta);
}

/* smtp_req_done - send DONE; the request is freed once it is out */
static void smtp_req_done(SMTP_REQ *req, int status, bool site_failed,
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
static void smtp_req_site_failed(SMTP_REQ *req)
{
    const char *reason = vstr_len(req->site_reason) > 0
                             ? vstr_str(req->site_reason)
                             : "no mail server could be reached";

    smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED,
                      req->site_dsn[0] ? req->site_dsn : "4.4.1", reason, NULL,
                      NULL, NULL);
    smtp_req_done(req, 0, true, reason);
}

/* smtp_req_dns - the addresses of the next hop are known */
static void smtp_req_dns(const DNS_REPLY *reply, void *arg)
{
    SMTP_REQ *req = arg;

    req->lookup = NULL;
    if (reply->status != DNS_OK) {
        msg_info("%s: %s", req->qid, vstr_str(reply->reason));
        smtp_req_fail_all(req,
                          reply->status == DNS_PERM ? DELIVER_ACTION_BOUNCED
                                                    : DELIVER_ACTION_DEFERRED,
                          reply->dsn, vstr_str(reply->reason), NULL, NULL,
                          NULL);
        smtp_req_done(req, 0, true, vstr_str(reply->reason));
        return;
    }
    req->addrs = mymalloc_array(reply->count, sizeof(DNS_ADDR));
    for (size_t i = 0; i < reply->count; i++) {
        req->addrs[i] = reply->addrs[i];
        req->addrs[i].host = mystrdup(reply->addrs[i].host);
    }
    req->addr_count = reply->count;
    req->addr_next = 0;
    smtp_req_try_next(req);
}

/* smtp_cache_take - an idle connection to nexthop, or NULL */
static SMTP_SESS *smtp_cache_take(SMTP_CTX *ctx, const char *nexthop)
{
    for (SMTP_SESS **sp = &ctx->cache; *sp != NULL; sp = &(*sp)->next) {
        SMTP_SESS *sess = *sp;

        if (!sess->broken && strcmp(sess->nexthop, nexthop) == 0) {
            *sp = sess->next;
            sess->next = NULL;
            evtimer_del(sess->timer);
            return sess;
        }
    }
    return NULL;
}

/* smtp_cache_remove - take sess out of the cache if it is there */
static void smtp_cache_remove(SMTP_SESS *sess)
{
    for (SMTP_SESS **sp = &sess->ctx->cache; *sp != NULL; sp = &(*sp)->next) {
        if (*sp == sess) {
            *sp = sess->next;
            sess->next = NULL;
            return;
        }
    }
}

/* smtp_req_route - a cached connection, else DNS and a new one */
static void smtp_req_route(SMTP_REQ *req)
{
    SMTP_SESS *sess = smtp_cache_take(req->ctx, req->nexthop);

    if (sess != NULL) {
        req->sess = sess;
        sess->req = req;
        req->from_cache = true;
        gettimeofday(&req->t_conn, NULL);
        if (sess->expect_count == 0)
            smtp_txn_start(sess);
        else /* the RSET reply starts the transaction */
            smtp_sess_timer_set(sess, sess->ctx->conf.rset_timeout);
        return;
    }
    req->from_cache = false;
    req->lookup = dns_lookup(req->ctx->dns, vstr_str(req->host), req->mx,
                             req->ctx->conf.dns_timeout, smtp_req_dns, req);
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
                            SLUICE_ARRAY_LEN(deliver_rcpt_spec), req->why) < 0) {
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
        ret = attr_list_decode((const char *) evbuffer_pullup(input, -1),
                               avail, DELIVER_LIST_MAX, &used, &list,
                               req->why);
        if (ret == 0 && avail <= DELIVER_LIST_MAX)
            return;
        if (ret <= 0) {
            smtp_req_fail(req, ret == 0 ? "request too large"
                                        : vstr_str(req->why));
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
static void smtp_accept(MAIL_SERVER *server, int fd, void *arg)
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

/* --- sessions: the server's side ------------------------------------- */

/* smtp_sess_relay - "host[ip]:port" */
static void smtp_sess_relay(const SMTP_SESS *sess, VSTR *out)
{
    vstr_sprintf(out, "%s:%d", vstr_str(sess->label), sess->port);
}

/* smtp_sess_free - close a connection and forget it */
static void smtp_sess_free(SMTP_SESS *sess)
{
    if (sess->req != NULL && sess->req->sess == sess)
        sess->req->sess = NULL;
    smtp_cache_remove(sess);
    if (sess->bev)
        bufferevent_free(sess->bev);
    event_free(sess->timer);
    smtp_reply_free(sess->reply);
    myfree(sess->expect);
    myfree(sess->nexthop);
    myfree(sess->host);
    vstr_free(sess->label);
    vstr_free(sess->out);
    myfree(sess);
}

/* smtp_sess_timer_set - wait at most seconds for what comes next */
static void smtp_sess_timer_set(SMTP_SESS *sess, int seconds)
{
    struct timeval tv = {seconds > 0 ? seconds : 1, 0};

    evtimer_del(sess->timer);
    evtimer_add(sess->timer, &tv);
}

/* smtp_sess_expect - remember that cmd's reply is due */
static void smtp_sess_expect(SMTP_SESS *sess, SMTP_CMD cmd, size_t rcpt)
{
    if (sess->expect_head + sess->expect_count == sess->expect_cap) {
        if (sess->expect_head > 0) {
            memmove(sess->expect, sess->expect + sess->expect_head,
                    sess->expect_count * sizeof(SMTP_EXPECT));
            sess->expect_head = 0;
        } else {
            sess->expect_cap = sess->expect_cap ? 2 * sess->expect_cap : 8;
            sess->expect = myrealloc_array(sess->expect, sess->expect_cap,
                                           sizeof(SMTP_EXPECT));
        }
    }
    sess->expect[sess->expect_head + sess->expect_count].cmd = cmd;
    sess->expect[sess->expect_head + sess->expect_count].rcpt = rcpt;
    if (sess->expect_count++ == 0)
        smtp_sess_timer_set(sess, smtp_cmd_timeout(&sess->ctx->conf, cmd));
}

/* smtp_sess_write - queue text for the server */
static void smtp_sess_write(SMTP_SESS *sess, const char *data, size_t len)
{
    if (bufferevent_write(sess->bev, data, len) < 0)
        sess->broken = true; /* the write error event follows */
}

/* smtp_sess_cmd - send one command line and wait for its reply */
static void smtp_sess_cmd(SMTP_SESS *sess, SMTP_CMD cmd, size_t rcpt,
                          const char *line)
{
    smtp_sess_write(sess, line, strlen(line));
    smtp_sess_write(sess, "\r\n", 2);
    smtp_sess_expect(sess, cmd, rcpt);
}

/* smtp_sess_site_fail - this address did not work out: the next one */
static void smtp_sess_site_fail(SMTP_SESS *sess, const char *dsn,
                                const char *reason, bool log_qid)
{
    SMTP_REQ *req = sess->req;

    sess->req = NULL;
    if (sess->connected && !sess->broken)
        smtp_sess_quit(sess);
    else
        smtp_sess_free(sess);
    if (req == NULL)
        return;
    req->sess = NULL;
    if (log_qid)
        msg_info("%s: %s", req->qid, reason);
    else
        msg_info("%s", reason);
    vstr_cpy(req->site_reason, reason);
    snprintf(req->site_dsn, sizeof(req->site_dsn), "%s", dsn);
    if (req->from_cache) {
        /* A cached connection went bad: look up and connect afresh. */
        req->from_cache = false;
        req->t_conn.tv_sec = 0;
        smtp_req_route(req);
        return;
    }
    smtp_req_try_next(req);
}

/* smtp_sess_lost - the connection broke, timed out or the server broke
   the protocol: before the transaction another address is tried, in it
   whoever has no result yet is deferred with dsn */
static void smtp_sess_lost(SMTP_SESS *sess, const char *dsn,
                           const char *reason)
{
    SMTP_REQ *req = sess->req;
    VSTR *relay;

    if (req == NULL) {
        /* Idle, or closing: nobody waits for it. */
        smtp_sess_free(sess);
        return;
    }
    if (!sess->greeted || (req->from_cache && !sess->txn_reply)) {
        sess->broken = true;
        smtp_sess_site_fail(sess, dsn, reason, true);
        return;
    }
    /* Mid-transaction: whoever has no result yet is deferred. */
    relay = vstr_alloc(64);
    smtp_sess_relay(sess, relay);
    sess->req = NULL;
    req->sess = NULL;
    smtp_sess_free(sess);
    smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED, dsn, reason,
                      vstr_str(relay), NULL, NULL);
    vstr_free(relay);
    smtp_req_done(req, 0, false, NULL);
}

/* smtp_sess_proto_error - the server broke the protocol: the connection
   is closed without another word (after a reply nobody can explain,
   whatever is sent next may be taken as message content) and nothing of
   this transaction counts as delivered */
static void smtp_sess_proto_error(SMTP_SESS *sess, const char *what,
                                  const char *text)
{
    VSTR *why = vstr_alloc(200);

    if (sess->req == NULL) /* else the reason goes into the log with the
                              request's queue ID */
        msg_info("protocol error: host %s said: %s (%s)",
                 vstr_str(sess->label), text, what);
    sess->broken = true;
    vstr_sprintf(why, "protocol error: host %s said: %s (%s)",
                 vstr_str(sess->label), text, what);
    smtp_sess_lost(sess, "4.5.0", vstr_str(why));
    vstr_free(why);
}

/* smtp_sess_reply_result - a server reply decides recipient i */
static void smtp_sess_reply_result(SMTP_SESS *sess, size_t index, int code,
                                   const char *text, SMTP_CMD cmd)
{
    SMTP_REQ *req = sess->req;
    VSTR *reason = vstr_alloc(200);
    VSTR *relay = vstr_alloc(64);
    VSTR *diag = vstr_alloc(200);
    VSTR *mta = vstr_alloc(64);
    char dsn[16];

    smtp_reply_dsn(code, text, dsn, sizeof(dsn));
    smtp_sess_relay(sess, relay);
    vstr_sprintf(mta, "dns; %s", sess->host);
    vstr_sprintf(diag, "smtp; %s", text);
    /* Callers pass the positive reply of the command (2xx; never the 2xx
       of DATA) or a 4xx/5xx: smtp_reply_verdict() sorted out the rest. */
    if (code / 100 == 2) {
        smtp_req_result(req, index, DELIVER_ACTION_SENT, dsn, text,
                        vstr_str(relay), vstr_str(diag), vstr_str(mta));
    } else {
        vstr_sprintf(reason, "host %s said: %s (in reply to %s command)",
                     vstr_str(sess->label), text, smtp_cmd_name(cmd));
        smtp_req_result(req, index,
                        code / 100 == 5 ? DELIVER_ACTION_BOUNCED
                                        : DELIVER_ACTION_DEFERRED,
                        dsn, vstr_str(reason), vstr_str(relay),
                        vstr_str(diag), vstr_str(mta));
    }
    vstr_free(reason);
    vstr_free(relay);
    vstr_free(diag);
    vstr_free(mta);
}

/* smtp_sess_fail_pending - a reply decides every recipient still open */
static void smtp_sess_fail_pending(SMTP_SESS *sess, int code,
                                   const char *text, SMTP_CMD cmd,
                                   SMTP_RCPT_STATE which)
{
    SMTP_REQ *req = sess->req;

    for (size_t i = 0; i < req->rcpt_count; i++)
        if (req->rcpts[i].state == which)
            smtp_sess_reply_result(sess, i, code, text, cmd);
}

/* smtp_content_record - read the content record at pos: 1 data, 0 end,
   -1 error */
static int smtp_content_record(SMTP_REQ *req, off_t pos, VSTR *buf,
                               size_t *rec_len)
{
    unsigned char hdr[QFILE_HDR_LEN];
    size_t len;
    ssize_t got;

    if (pread(req->fd, hdr, sizeof(hdr), pos) != (ssize_t) sizeof(hdr))
        return -1;
    len = ((size_t) hdr[1] << 24) | ((size_t) hdr[2] << 16) |
          ((size_t) hdr[3] << 8) | hdr[4];
    if (hdr[0] == QFILE_REC_END)
        return 0;
    if (hdr[0] != QFILE_REC_CONT || len > QFILE_REC_MAX)
        return -1;
    vstr_reset(buf);
    vstr_reserve(buf, len);
    if (len > 0 &&
        (got = pread(req->fd, vstr_str(buf), len, pos + QFILE_HDR_LEN)) !=
            (ssize_t) len)
        return -1;
    buf->len = len;
    buf->data[len] = 0;
    *rec_len = QFILE_HDR_LEN + len;
    return 1;
}

/* smtp_content_8bit - does the content hold 8-bit bytes? */
static bool smtp_content_8bit(SMTP_REQ *req)
{
    VSTR *buf = vstr_alloc(4096);
    off_t pos = req->info->content_offset;
    size_t rec_len;
    bool found = false;

    while (!found && smtp_content_record(req, pos, buf, &rec_len) == 1) {
        found = smtp_has_8bit(vstr_str(buf), vstr_len(buf));
        pos += (off_t) rec_len;
    }
    vstr_free(buf);
    return found;
}

/* smtp_content_push - send content until enough is queued; false when
   the session is gone */
static bool smtp_content_push(SMTP_SESS *sess)
{
    SMTP_REQ *req = sess->req;
    struct evbuffer *output = bufferevent_get_output(sess->bev);
    VSTR *buf = vstr_alloc(4096);

    while (sess->in_content &&
           evbuffer_get_length(output) < SMTP_CONTENT_HIGH) {
        size_t rec_len = 0;
        int ret = smtp_content_record(req, sess->content_pos, buf, &rec_len);

        vstr_reset(sess->out);
        if (ret < 0) {
            vstr_free(buf);
            msg_warn("%s: cannot read the content at offset %lld", req->qid,
                     (long long) sess->content_pos);
            sess->broken = true; /* never send "." after half a message */
            smtp_sess_lost(sess, "4.4.2",
                           "queue file read error during content");
            return false;
        }
        if (ret == 0) {
            smtp_enc_finish(&sess->enc, sess->out);
            if (sess->enc.nul_count > 0 || sess->enc.cr_count > 0)
                msg_info("%s: content to %s: %zu NUL byte(s) removed, %zu "
                         "bare CR(s) sent as a line break (body) or a space "
                         "(headers)",
                         req->qid, vstr_str(sess->label), sess->enc.nul_count,
                         sess->enc.cr_count);
            smtp_sess_write(sess, vstr_str(sess->out), vstr_len(sess->out));
            sess->in_content = false;
            smtp_sess_expect(sess, SMTP_CMD_DOT, 0);
            break;
        }
        smtp_enc_feed(&sess->enc, vstr_str(buf), vstr_len(buf), sess->out);
        smtp_sess_write(sess, vstr_str(sess->out), vstr_len(sess->out));
        sess->content_pos += (off_t) rec_len;
    }
    if (sess->in_content)
        smtp_sess_timer_set(sess, sess->ctx->conf.data_xfer_timeout);
    vstr_free(buf);
    return true;
}

/* smtp_txn_next_rcpt - send the next RCPT (every RCPT and DATA when
   pipelining), or DATA after the last */
static void smtp_txn_next_rcpt(SMTP_SESS *sess, size_t from)
{
    SMTP_REQ *req = sess->req;
    VSTR *line = vstr_alloc(200);
    bool dsn = (sess->features & SMTP_FEATURE_DSN) != 0;
    bool pipelining = (sess->features & SMTP_FEATURE_PIPELINING) != 0;

    for (size_t i = from; i < req->rcpt_count; i++) {
        SMTP_RCPT *rcpt = req->rcpts + i;

        if (rcpt->state != SMTP_RCPT_PENDING)
            continue;
        vstr_sprintf(line, "RCPT TO:<%s>", rcpt->address);
        if (dsn && *rcpt->notify)
            vstr_sprintf_append(line, " NOTIFY=%s", rcpt->notify);
        if (dsn && *rcpt->orcpt)
            vstr_sprintf_append(line, " ORCPT=%s", rcpt->orcpt);
        smtp_sess_cmd(sess, SMTP_CMD_RCPT, i, vstr_str(line));
        if (!pipelining) {
            vstr_free(line);
            return;
        }
    }
    vstr_free(line);
    if (pipelining || sess->accepted > 0)
        smtp_sess_cmd(sess, SMTP_CMD_DATA, 0, "DATA");
    else
        smtp_txn_end(sess); /* nobody accepted: no DATA */
}

/* smtp_txn_start - greeted (or reused): one mail transaction */
static void smtp_txn_start(SMTP_SESS *sess)
{
    SMTP_REQ *req = sess->req;
    QFILE_INFO *info = req->info;
    const char *body_type = qfile_info_attr(info, "body_type");
    const char *ret = qfile_info_attr(info, "ret");
    const char *envid = qfile_info_attr(info, "envid");
    bool body_8bit = body_type && strcasecmp(body_type, "8BITMIME") == 0;
    VSTR *line = vstr_alloc(200);
    VSTR *relay = vstr_alloc(64);

    if (req->t_conn.tv_sec == 0)
        gettimeofday(&req->t_conn, NULL);
    sess->txn_started = true;
    sess->txn_reply = false;
    sess->mail_failed = false;
    sess->accepted = 0;
    sess->uses++;
    smtp_sess_relay(sess, relay);
    if (!(sess->features & SMTP_FEATURE_8BITMIME) &&
        (body_8bit || smtp_content_8bit(req))) {
        vstr_sprintf(line, "message has 8-bit content but the server %s does "
                     "not announce 8BITMIME", vstr_str(sess->label));
        smtp_req_fail_all(req, DELIVER_ACTION_BOUNCED, "5.6.3", vstr_str(line),
                          vstr_str(relay), NULL, NULL);
        vstr_free(line);
        vstr_free(relay);
        smtp_txn_end(sess);
        return;
    }
    if ((sess->features & SMTP_FEATURE_SIZE) && sess->size_limit > 0 &&
        info->content_size > sess->size_limit) {
        vstr_sprintf(line, "message size %lld exceeds size limit %lld of "
                     "server %s", info->content_size, sess->size_limit,
                     vstr_str(sess->label));
        smtp_req_fail_all(req, DELIVER_ACTION_BOUNCED, "5.3.4", vstr_str(line),
                          vstr_str(relay), NULL, NULL);
        vstr_free(line);
        vstr_free(relay);
        smtp_txn_end(sess);
        return;
    }
    vstr_free(relay);
    vstr_sprintf(line, "MAIL FROM:<%s>", req->sender);
    if (sess->features & SMTP_FEATURE_SIZE)
        vstr_sprintf_append(line, " SIZE=%lld", info->content_size);
    if ((sess->features & SMTP_FEATURE_8BITMIME) && body_8bit)
        vstr_cat(line, " BODY=8BITMIME");
    if (sess->features & SMTP_FEATURE_DSN) {
        if (ret && *ret)
            vstr_sprintf_append(line, " RET=%s", ret);
        if (envid && *envid) {
            /* The queue file holds it decoded (RFC 3461 4.4). */
            vstr_cat(line, " ENVID=");
            xtext_encode(line, envid, strlen(envid));
        }
    }
    smtp_sess_cmd(sess, SMTP_CMD_MAIL, 0, vstr_str(line));
    vstr_free(line);
    if (sess->features & SMTP_FEATURE_PIPELINING)
        smtp_txn_next_rcpt(sess, 0);
}

/* smtp_sess_quit - say goodbye and close when the server answers */
static void smtp_sess_quit(SMTP_SESS *sess)
{
    smtp_cache_remove(sess);
    sess->req = NULL;
    sess->quitting = true;
    sess->in_content = false;
    sess->expect_count = 0;
    sess->expect_head = 0;
    smtp_sess_cmd(sess, SMTP_CMD_QUIT, 0, "QUIT");
}

/* smtp_txn_end - the transaction is over: DONE, then cache or QUIT */
static void smtp_txn_end(SMTP_SESS *sess)
{
    SMTP_CTX *ctx = sess->ctx;
    SMTP_REQ *req = sess->req;
    const SMTP_CONF *conf = &ctx->conf;

    sess->req = NULL;
    sess->txn_started = false;
    if (req != NULL) {
        req->sess = NULL;
        smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED, "4.3.0",
                          "delivery agent lost track of this recipient", NULL,
                          NULL, NULL);
        smtp_req_done(req, 0, false, NULL);
    }
    if (sess->broken || conf->cache_time <= 0 ||
        (conf->reuse_limit > 0 && sess->uses >= conf->reuse_limit) ||
        mail_server_retiring(ctx->server)) {
        smtp_sess_quit(sess);
        return;
    }
    /* RSET now, so a dead connection shows before anyone needs it. */
    smtp_sess_cmd(sess, SMTP_CMD_RSET, 0, "RSET");
    sess->next = ctx->cache;
    ctx->cache = sess;
    smtp_sess_timer_set(sess, conf->cache_time);
}

/* smtp_sess_greeted - EHLO or HELO worked: the transaction */
static void smtp_sess_greeted(SMTP_SESS *sess)
{
    sess->greeted = true;
    smtp_txn_start(sess);
}

/* smtp_sess_greet_fail - a 4xx/5xx greeting or HELO/EHLO reply: this
   server will not do, another one may (so the status is temporary) */
static void smtp_sess_greet_fail(SMTP_SESS *sess, int code, const char *text,
                                 const char *reason)
{
    char dsn[16];

    smtp_reply_dsn(code, text, dsn, sizeof(dsn));
    smtp_soft_dsn(dsn);
    sess->broken = true;
    smtp_sess_site_fail(sess, dsn, reason, true);
}

/* smtp_sess_unexpected - "unexpected reply to X command" */
static void smtp_sess_unexpected(SMTP_SESS *sess, SMTP_CMD cmd,
                                 const char *text)
{
    VSTR *what = vstr_alloc(64);

    vstr_sprintf(what, "unexpected reply to %s command", smtp_cmd_name(cmd));
    smtp_sess_proto_error(sess, vstr_str(what), text);
    vstr_free(what);
}

/* smtp_sess_reply - one complete reply; false when sess is gone. What the
   reply means comes from smtp_reply_verdict() alone: only its OK is
   success, 4xx/5xx are failures, anything else is a protocol error that
   ends the connection and defers what is not decided. */
static bool smtp_sess_reply(SMTP_SESS *sess)
{
    SMTP_REPLY *reply = sess->reply;
    SMTP_REQ *req = sess->req;
    SMTP_EXPECT exp;
    const char *text = vstr_str(reply->text);
    int code = reply->code;
    SMTP_VERDICT verdict;
    VSTR *why;

    if (sess->expect_count == 0) {
        smtp_sess_proto_error(sess, "reply without a command", text);
        return false;
    }
    exp = sess->expect[sess->expect_head];
    sess->expect_head++;
    if (--sess->expect_count == 0) {
        evtimer_del(sess->timer);
        sess->expect_head = 0;
    } else {
        smtp_sess_timer_set(
            sess,
            smtp_cmd_timeout(&sess->ctx->conf,
                             sess->expect[sess->expect_head].cmd));
    }
    if (exp.cmd != SMTP_CMD_GREETING && exp.cmd != SMTP_CMD_EHLO &&
        exp.cmd != SMTP_CMD_HELO && exp.cmd != SMTP_CMD_RSET &&
        exp.cmd != SMTP_CMD_QUIT)
        sess->txn_reply = true;
    verdict = smtp_reply_verdict(exp.cmd, code);
    if (verdict == SMTP_VERDICT_PROTO && exp.cmd != SMTP_CMD_QUIT) {
        smtp_sess_unexpected(sess, exp.cmd, text);
        return false;
    }

    switch (exp.cmd) {
    case SMTP_CMD_QUIT:
        smtp_sess_free(sess);
        return false;
    case SMTP_CMD_GREETING:
        if (verdict != SMTP_VERDICT_OK) {
            why = vstr_alloc(100);
            vstr_sprintf(why, "host %s refused to talk to me: %s",
                         vstr_str(sess->label), text);
            smtp_sess_greet_fail(sess, code, text, vstr_str(why));
            vstr_free(why);
            return false;
        }
        why = vstr_alloc(100);
        vstr_sprintf(why, "EHLO %s", sess->ctx->conf.helo_name);
        smtp_sess_cmd(sess, SMTP_CMD_EHLO, 0, vstr_str(why));
        vstr_free(why);
        return true;
    case SMTP_CMD_EHLO:
    case SMTP_CMD_HELO:
        if (verdict == SMTP_VERDICT_OK) {
            sess->features = exp.cmd == SMTP_CMD_EHLO
                                 ? smtp_ehlo_features(reply, &sess->size_limit)
                                 : 0;
            if (req == NULL) {
                smtp_sess_quit(sess);
                return true;
            }
            smtp_sess_greeted(sess);
            return true;
        }
        if (exp.cmd == SMTP_CMD_EHLO && verdict == SMTP_VERDICT_PERM) {
            why = vstr_alloc(100);
            vstr_sprintf(why, "HELO %s", sess->ctx->conf.helo_name);
            smtp_sess_cmd(sess, SMTP_CMD_HELO, 0, vstr_str(why));
            vstr_free(why);
            return true;
        }
        why = vstr_alloc(100);
        vstr_sprintf(why, "host %s said: %s (in reply to %s command)",
                     vstr_str(sess->label), text, smtp_cmd_name(exp.cmd));
        smtp_sess_greet_fail(sess, code, text, vstr_str(why));
        vstr_free(why);
        return false;
    case SMTP_CMD_RSET:
        if (verdict != SMTP_VERDICT_OK) {
            sess->broken = true;
            if (req != NULL) {
                why = vstr_alloc(100);
                vstr_sprintf(why, "host %s said: %s (in reply to RSET command)",
                             vstr_str(sess->label), text);
                smtp_sess_site_fail(sess, "4.4.2", vstr_str(why), true);
                vstr_free(why);
                return false;
            }
            smtp_sess_quit(sess);
            return true;
        }
        if (req != NULL && sess->expect_count == 0 && !sess->txn_started)
            smtp_txn_start(sess);
        else if (req == NULL && !sess->quitting)
            smtp_sess_timer_set(sess, sess->ctx->conf.cache_time); /* idle */
        return true;
    case SMTP_CMD_MAIL:
        if (verdict != SMTP_VERDICT_OK) {
            sess->mail_failed = true;
            smtp_sess_fail_pending(sess, code, text, SMTP_CMD_MAIL,
                                   SMTP_RCPT_PENDING);
            if (!(sess->features & SMTP_FEATURE_PIPELINING))
                smtp_txn_end(sess);
            return true;
        }
        if (!(sess->features & SMTP_FEATURE_PIPELINING))
            smtp_txn_next_rcpt(sess, 0);
        return true;
    case SMTP_CMD_RCPT:
        if (!sess->mail_failed) {
            if (verdict == SMTP_VERDICT_OK) {
                req->rcpts[exp.rcpt].state = SMTP_RCPT_ACCEPTED;
                sess->accepted++;
            } else {
                smtp_sess_reply_result(sess, exp.rcpt, code, text,
                                       SMTP_CMD_RCPT);
            }
        }
        if (!(sess->features & SMTP_FEATURE_PIPELINING))
            smtp_txn_next_rcpt(sess, exp.rcpt + 1);
        return true;
    case SMTP_CMD_DATA:
        if (verdict == SMTP_VERDICT_OK && sess->accepted > 0 &&
            !sess->mail_failed) {
            sess->in_content = true;
            sess->content_pos = req->info->content_offset;
            smtp_enc_init(&sess->enc);
            return smtp_content_push(sess);
        }
        if (verdict == SMTP_VERDICT_OK)
            sess->broken = true; /* DATA without anyone: cannot end it */
        else if (sess->accepted > 0)
            smtp_sess_fail_pending(sess, code, text, SMTP_CMD_DATA,
                                   SMTP_RCPT_ACCEPTED);
        smtp_txn_end(sess);
        return !sess->broken;
    case SMTP_CMD_DOT:
        smtp_sess_fail_pending(sess, code, text, SMTP_CMD_DOT,
                               SMTP_RCPT_ACCEPTED);
        smtp_txn_end(sess);
        return true;
    }
    return true;
}

/* smtp_bad_line - the start of a line that is no reply, for the log and
   the DSN: no control characters, at most SMTP_BAD_LINE_SHOWN bytes */
static void smtp_bad_line(VSTR *out, const char *data, size_t len)
{
    for (size_t i = 0; i < len && i < SMTP_BAD_LINE_SHOWN; i++) {
        int ch = (unsigned char) data[i];

        vstr_addch(out, ch < ' ' || ch == 0x7f ? '?' : ch);
    }
    if (len > SMTP_BAD_LINE_SHOWN)
        vstr_cat(out, "...");
}

/* smtp_sess_read_event - reply lines from the server. Whatever is in the
   input buffer was sent before the server could see a command written
   during this call, so it holds at most as many replies as commands were
   waiting when the call began: a reply beyond that was sent ahead of its
   command (a server that answers DATA with "354" and "250" in one go, or
   a stray line that would shift every later reply by one) and is a
   protocol error. */
static void smtp_sess_read_event(struct bufferevent *bev, void *arg)
{
    SMTP_SESS *sess = arg;
    struct evbuffer *input = bufferevent_get_input(bev);
    size_t budget = sess->expect_count;

    if (budget > 0 && sess->reply->lines > 0 && !sess->reply->done)
        budget--; /* a reply begun by an earlier call */
    for (;;) {
        struct evbuffer_ptr eol = evbuffer_search(input, "\n", 1, NULL);
        const char *data;
        size_t len;
        int ret;
        bool first;

        if (eol.pos < 0) {
            if (evbuffer_get_length(input) > SMTP_LINE_MAX) {
                VSTR *line = vstr_alloc(SMTP_BAD_LINE_SHOWN + 4);

                smtp_bad_line(line,
                              (const char *) evbuffer_pullup(
                                  input, SMTP_BAD_LINE_SHOWN),
                              evbuffer_get_length(input));
                smtp_sess_proto_error(sess, "reply line too long",
                                      vstr_str(line));
                vstr_free(line);
            }
            return;
        }
        len = (size_t) eol.pos;
        data = (const char *) evbuffer_pullup(input, (ssize_t) len + 1);
        first = sess->reply->lines == 0 || sess->reply->done;
        ret = smtp_reply_line(sess->reply, data, len);
        if (ret < 0) {
            VSTR *line = vstr_alloc(SMTP_BAD_LINE_SHOWN + 4);

            smtp_bad_line(line, data, len);
            evbuffer_drain(input, len + 1);
            smtp_sess_proto_error(sess, "malformed reply", vstr_str(line));
            vstr_free(line);
            return;
        }
        evbuffer_drain(input, len + 1);
        if (first) {
            if (budget == 0) {
                smtp_sess_proto_error(sess, sess->expect_count > 0
                                                ? "reply ahead of its command"
                                                : "reply without a command",
                                      vstr_str(sess->reply->text));
                return;
            }
            budget--;
        }
        if (ret == 1 && !smtp_sess_reply(sess))
            return;
    }
}

/* smtp_sess_write_event - the server took some content: send more */
static void smtp_sess_write_event(struct bufferevent *bev, void *arg)
{
    SMTP_SESS *sess = arg;

    if (sess->in_content && sess->req != NULL)
        smtp_content_push(sess);
}

/* smtp_sess_phase - what the session was doing, for a failure reason */
static const char *smtp_sess_phase(const SMTP_SESS *sess)
{
    if (sess->in_content)
        return "sending message content";
    return smtp_cmd_phase(sess->expect_count
                              ? sess->expect[sess->expect_head].cmd
                              : SMTP_CMD_QUIT);
}
/* smtp_sess_event - connected, EOF, error */
static void smtp_sess_event(struct bufferevent *bev, short what, void *arg)
{
    SMTP_SESS *sess = arg;
    VSTR *why;

    if (what & BEV_EVENT_CONNECTED) {
        sess->connected = true;
        smtp_sess_expect(sess, SMTP_CMD_GREETING, 0);
        bufferevent_enable(sess->bev, EV_READ | EV_WRITE);
        return;
    }
    why = vstr_alloc(100);
    if (!sess->connected) {
        int err = EVUTIL_SOCKET_ERROR();

        vstr_sprintf(why, "connect to %s:%d: %s", vstr_str(sess->label),
                     sess->port, err ? strerror(err) : "Connection refused");
        smtp_sess_site_fail(sess, "4.4.1", vstr_str(why), false);
    } else if (sess->quitting || sess->req == NULL) {
        smtp_sess_free(sess);
    } else {
        sess->broken = true;
        vstr_sprintf(why, "lost connection with %s while %s",
                     vstr_str(sess->label),
                     smtp_sess_phase(sess));
        smtp_sess_lost(sess, "4.4.2", vstr_str(why));
    }
    vstr_free(why);
}

/* smtp_sess_timer_event - a phase took too long, or the idle time is up */
static void smtp_sess_timer_event(evutil_socket_t fd, short what, void *arg)
{
    SMTP_SESS *sess = arg;
    VSTR *why;

    if (sess->quitting) {
        smtp_sess_free(sess);
        return;
    }
    if (sess->req == NULL) {
        /* Idle in the cache long enough. */
        if (sess->expect_count > 0) {
            smtp_sess_free(sess); /* not even RSET came back */
            return;
        }
        smtp_sess_quit(sess);
        return;
    }
    why = vstr_alloc(100);
    if (!sess->connected) {
        vstr_sprintf(why, "connect to %s:%d: Connection timed out",
                     vstr_str(sess->label), sess->port);
        sess->broken = true;
        smtp_sess_site_fail(sess, "4.4.1", vstr_str(why), false);
    } else {
        sess->broken = true;
        vstr_sprintf(why, "conversation with %s timed out while %s",
                     vstr_str(sess->label),
                     smtp_sess_phase(sess));
        smtp_sess_lost(sess, "4.4.2", vstr_str(why));
    }
    vstr_free(why);
}

/* smtp_sess_connect - start a connection to one address; false (with the
   reason in why) when it cannot even start */
static bool smtp_sess_connect(SMTP_REQ *req, const DNS_ADDR *addr, VSTR *why)
{
    SMTP_CTX *ctx = req->ctx;
    SMTP_SESS *sess;
    struct sockaddr_storage ss;
    socklen_t sslen;
    int fd;

    memset(&ss, 0, sizeof(ss));
    if (addr->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t) req->port);
        if (inet_pton(AF_INET6, addr->ip, &sin6->sin6_addr) != 1)
            goto bad_addr;
        sslen = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t) req->port);
        if (inet_pton(AF_INET, addr->ip, &sin->sin_addr) != 1)
            goto bad_addr;
        sslen = sizeof(*sin);
    }
    if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                     0)) < 0) {
        vstr_sprintf(why, "socket: %s", strerror(errno));
        return false;
    }
    /* Every write here is a whole command group or the end of the
       message, followed by a wait for the reply: Nagle would only hold the
       last small segment back until the server's delayed ACK. */
    {
        int on = 1;

        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    }
    if (*ctx->conf.bind_address) {
        struct sockaddr_storage bs;
        socklen_t bslen = 0;

        memset(&bs, 0, sizeof(bs));
        if (ss.ss_family == AF_INET &&
            inet_pton(AF_INET, ctx->conf.bind_address,
                      &((struct sockaddr_in *) &bs)->sin_addr) == 1) {
            bs.ss_family = AF_INET;
            bslen = sizeof(struct sockaddr_in);
        } else if (ss.ss_family == AF_INET6 &&
                   inet_pton(AF_INET6, ctx->conf.bind_address,
                             &((struct sockaddr_in6 *) &bs)->sin6_addr) == 1) {
            bs.ss_family = AF_INET6;
            bslen = sizeof(struct sockaddr_in6);
        }
        if (bslen > 0 && bind(fd, (struct sockaddr *) &bs, bslen) < 0) {
            vstr_sprintf(why, "bind %s: %s", ctx->conf.bind_address,
                         strerror(errno));
            (void) close(fd);
            return false;
        }
    }
    if (connect(fd, (struct sockaddr *) &ss, sslen) < 0 &&
        errno != EINPROGRESS) {
        vstr_sprintf(why, "connect to %s[%s]:%d: %s", addr->host, addr->ip,
                     req->port, strerror(errno));
        (void) close(fd);
        return false;
    }
    sess = mycalloc(1, sizeof(*sess));
    sess->ctx = ctx;
    sess->req = req;
    sess->nexthop = mystrdup(req->nexthop);
    sess->host = mystrdup(addr->host);
    snprintf(sess->ip, sizeof(sess->ip), "%s", addr->ip);
    sess->port = req->port;
    sess->label = vstr_alloc(64);
    vstr_sprintf(sess->label, "%s[%s]", sess->host, sess->ip);
    sess->reply = smtp_reply_alloc();
    sess->out = vstr_alloc(8192);
    sess->timer = evtimer_new(mail_server_base(ctx->server),
                              smtp_sess_timer_event, sess);
    sess->bev = bufferevent_socket_new(mail_server_base(ctx->server), fd,
                                       BEV_OPT_CLOSE_ON_FREE);
    if (sess->timer == NULL || sess->bev == NULL)
        msg_fatal("cannot create events for a connection");
    req->sess = sess;
    bufferevent_setcb(sess->bev, smtp_sess_read_event, smtp_sess_write_event,
                      smtp_sess_event, sess);
    bufferevent_setwatermark(sess->bev, EV_WRITE, SMTP_CONTENT_LOW, 0);
    smtp_sess_timer_set(sess, ctx->conf.connect_timeout);
    /* Already connecting: libevent reports the outcome to smtp_sess_event. */
    if (bufferevent_socket_connect(sess->bev, NULL, 0) < 0) {
        vstr_sprintf(why, "connect to %s:%d: %s", vstr_str(sess->label),
                     sess->port, strerror(errno));
        req->sess = NULL;
        sess->req = NULL;
        smtp_sess_free(sess);
        return false;
    }
    return true;

bad_addr:
    vstr_sprintf(why, "bad address %s", addr->ip);
    return false;
}

/* smtp_req_try_next - connect to the next address, or give up */
static void smtp_req_try_next(SMTP_REQ *req)
{
    while (req->addr_next < req->addr_count) {
        const DNS_ADDR *addr = req->addrs + req->addr_next++;

        if (smtp_sess_connect(req, addr, req->why))
            return;
        msg_info("%s", vstr_str(req->why));
        vstr_cpy(req->site_reason, vstr_str(req->why));
        snprintf(req->site_dsn, sizeof(req->site_dsn), "4.4.1");
    }
    smtp_req_site_failed(req);
}

/* --- the daemon ------------------------------------------------------ */

/* smtp_conf_time - a time parameter as int seconds */
static int smtp_conf_time(const MAIL_CONF *conf, const char *name)
{
    long long value = mail_conf_time(conf, name);

    return value < 0 ? 0 : value > INT32_MAX ? INT32_MAX : (int) value;
}

/* smtp_pre_loop - read main.cf once, set up DNS */
static void smtp_pre_loop(MAIL_SERVER *server, void *arg)
{
    SMTP_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    SMTP_CONF *sc = &ctx->conf;
    VSTR *why = vstr_alloc(100);
    long long port;

    ctx->server = server;
    signal(SIGPIPE, SIG_IGN);
    sc->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    if (*sc->queue_dir == 0)
        msg_fatal("queue_directory is not set");
    sc->helo_name = mystrdup(mail_conf_str(conf, "smtp_helo_name"));
    if (*sc->helo_name == 0) {
        myfree(sc->helo_name);
        sc->helo_name = mystrdup(mail_conf_str(conf, "myhostname"));
    }
    sc->bind_address = mystrdup(mail_conf_str(conf, "smtp_bind_address"));
    port = mail_conf_int(conf, "smtp_tcp_port");
    if (port < 1 || port > 65535)
        msg_fatal("smtp_tcp_port: bad port %lld", port);
    sc->tcp_port = (int) port;
    sc->connect_timeout = smtp_conf_time(conf, "smtp_connect_timeout");
    sc->helo_timeout = smtp_conf_time(conf, "smtp_helo_timeout");
    sc->mail_timeout = smtp_conf_time(conf, "smtp_mail_timeout");
    sc->rcpt_timeout = smtp_conf_time(conf, "smtp_rcpt_timeout");
    sc->data_init_timeout = smtp_conf_time(conf, "smtp_data_init_timeout");
    sc->data_xfer_timeout = smtp_conf_time(conf, "smtp_data_xfer_timeout");
    sc->data_done_timeout = smtp_conf_time(conf, "smtp_data_done_timeout");
    sc->quit_timeout = smtp_conf_time(conf, "smtp_quit_timeout");
    sc->rset_timeout = smtp_conf_time(conf, "smtp_rset_timeout");
    sc->dns_timeout = smtp_conf_time(conf, "smtp_dns_timeout");
    sc->ipc_timeout = smtp_conf_time(conf, "ipc_timeout");
    if (sc->ipc_timeout <= 0)
        sc->ipc_timeout = 3600;
    sc->cache_time = smtp_conf_time(conf, "smtp_connection_cache_time_limit");
    sc->reuse_limit =
        (int) mail_conf_int(conf, "smtp_connection_reuse_count_limit");
    sc->soft_bounce = mail_conf_bool(conf, "soft_bounce");
    if ((ctx->dns = dns_ctx_create(mail_server_base(server), conf, why)) ==
        NULL)
        msg_fatal("DNS: %s", vstr_str(why));
    vstr_free(why);
}

/* smtp_retire - finish the requests in hand, then exit */
static void smtp_retire(MAIL_SERVER *server, void *arg)
{
    SMTP_CTX *ctx = arg;

    if (ctx->req_count == 0)
        mail_server_exit(server, 0);
}

/* smtp_ctx_release - free what pre_loop made (ASan leak reports) */
static void smtp_ctx_release(SMTP_CTX *ctx)
{
    SMTP_CONF *sc = &ctx->conf;

    myfree(sc->queue_dir);
    myfree(sc->helo_name);
    myfree(sc->bind_address);
}

/* main - the SMTP delivery agent */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = smtp_pre_loop,
        .on_accept = smtp_accept,
        .on_retire = smtp_retire,
    };
    /* Static storage: the DNS context, cached connections and requests
       in flight at SIGTERM stay reachable after mail_server_main() freed
       the event base they hang on (their events cannot be freed then). */
    static SMTP_CTX ctx;
    int status;

    status = mail_server_main(argc, argv, "smtp", &ops, &ctx);
    smtp_ctx_release(&ctx);
    return status;
}
