/*
 * smtp_session - one connection to a server: its I/O
 *
 * A libevent bufferevent carries the conversation; a timer bounds each
 * phase (smtp_*_timeout). Reply lines are parsed as they arrive and each
 * complete reply is fed to the conversation (SMTP_PROTO, smtp_proto.c),
 * which decides everything SMTP: the session writes the commands it
 * produces, reports the recipients it decided to smtp_request.c, sends
 * the content when it says so (read from the queue file a record at a
 * time and encoded, so no message is ever held in memory whole), and
 * hands a server that will not do back to smtp_connect.c for the next
 * address. What stays here is what depends on I/O: timers, a reply that
 * arrived ahead of its command, a line too long, the connection lost.
 *
 * Nothing here blocks except reading the local queue file.
 */
#include "sys_defs.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bev_direct.h"
#include "deliver_proto.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "smtp.h"
#include "tls_client.h"
#include "vstr.h"

static void smtp_sess_timer_set(SMTP_SESS *sess, int seconds);
static void smtp_txn_start(SMTP_SESS *sess);
static void smtp_txn_end(SMTP_SESS *sess);
static void smtp_sess_read_event(struct bufferevent *bev, void *arg);
static void smtp_sess_write_event(struct bufferevent *bev, void *arg);
static void smtp_sess_event(struct bufferevent *bev, short what, void *arg);

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
    case SMTP_CMD_STARTTLS:
    case SMTP_CMD_AUTH:
        return conf->helo_timeout;
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
    case SMTP_CMD_STARTTLS:
        return "sending STARTTLS";
    case SMTP_CMD_AUTH:
        return "authenticating";
    }
    return "talking";
}

/* smtp_sess_relay - "host[ip]:port" */
static void smtp_sess_relay(const SMTP_SESS *sess, VSTR *out)
{
    vstr_sprintf(out, "%s:%d", vstr_str(sess->label), sess->port);
}

/* smtp_sess_tls_close - end TLS with close_notify, as a TLS client
   should: libevent frees the filter without it (research notes 4.4), so
   the alert goes from the connection's output buffer straight to the
   socket, one non-blocking try (the close follows anyway) */
static void smtp_sess_tls_close(SMTP_SESS *sess)
{
    struct bufferevent *under;
    SSL *ssl;
    struct evbuffer *out;
    size_t len;
    unsigned char *data;

    if (sess->bev == NULL || sess->tls_handshake || !sess->proto->tls_active ||
        (ssl = bufferevent_openssl_get_ssl(sess->bev)) == NULL ||
        (under = bufferevent_get_underlying(sess->bev)) == NULL)
        return;
    (void) SSL_shutdown(ssl);
    ERR_clear_error();
    /* The socket bufferevent's output is frozen at its front (only it
       drains it): write a copy, the buffer goes with the bufferevent. */
    out = bufferevent_get_output(under);
    if ((len = evbuffer_get_length(out)) > 0 &&
        (data = evbuffer_pullup(out, -1)) != NULL)
        (void) write(bufferevent_getfd(under), data, len);
}

/* smtp_sess_free - close a connection and forget it */
void smtp_sess_free(SMTP_SESS *sess)
{
    if (sess->req != NULL && sess->req->sess == sess)
        sess->req->sess = NULL;
    smtp_cache_remove(sess);
    smtp_group_remove(sess);
    if (sess->all_prev)
        sess->all_prev->all_next = sess->all_next;
    else
        sess->ctx->sessions = sess->all_next;
    if (sess->all_next)
        sess->all_next->all_prev = sess->all_prev;
    if (sess->stats_counted)
        conn_stats_disconnect(sess->ctx->conn_stats);
    smtp_sess_tls_close(sess);
    if (sess->bev)
        bufferevent_free(sess->bev);
    event_free(sess->timer);
    smtp_reply_free(sess->reply);
    smtp_proto_free(sess->proto);
    myfree(sess->txn_rcpts);
    myfree(sess->nexthop);
    myfree(sess->source);
    myfree(sess->policy_key);
    myfree(sess->host);
    dane_tlsa_free(sess->tlsa, sess->tlsa_count);
    myfree(sess->tlsa_base);
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

/* smtp_sess_write - send text to the server: straight to the socket when
   nothing is queued and the session is not TLS (bev_direct.h), else queued.
   The content loop (smtp_content_push) does not wait for the write
   callback: it goes on while less than SMTP_CONTENT_HIGH is queued. */
static void smtp_sess_write(SMTP_SESS *sess, const char *data, size_t len)
{
    if (bev_direct_write(sess->bev, data, len) == BEV_DIRECT_ERROR)
        sess->broken = true; /* the write error event follows */
}

/* smtp_sess_flush - write the commands the conversation produced; when
   none was awaited before (waiting_before), the timer of the first reply
   now due starts */
static void smtp_sess_flush(SMTP_SESS *sess, size_t waiting_before)
{
    SMTP_PROTO *proto = sess->proto;
    int cmd;

    if (vstr_len(proto->out) > 0) {
        smtp_sess_write(sess, vstr_str(proto->out), vstr_len(proto->out));
        vstr_reset(proto->out);
    }
    if (waiting_before == 0 && (cmd = smtp_proto_waiting(proto, 0)) >= 0)
        smtp_sess_timer_set(sess,
                            smtp_cmd_timeout(&sess->ctx->conf, (SMTP_CMD) cmd));
}

/* smtp_sess_in_content - is the content being sent? */
static bool smtp_sess_in_content(const SMTP_SESS *sess)
{
    return sess->proto->state == SMTP_PROTO_ST_CONTENT;
}

/* smtp_sess_site_fail - this address did not work out: the next one */
static void smtp_sess_site_fail(SMTP_SESS *sess, const char *dsn,
                                const char *reason, bool log_qid)
{
    SMTP_REQ *req = sess->req;

    /* The server's own words, for response automation (qmgr), before
       the session and its reply go. */
    if (req != NULL && sess->fail_reply != NULL)
        vstr_sprintf(req->site_diag, "smtp; %s", sess->fail_reply);
    else if (req != NULL)
        vstr_reset(req->site_diag);
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
static void smtp_sess_lost(SMTP_SESS *sess, const char *dsn, const char *reason)
{
    SMTP_REQ *req = sess->req;
    VSTR *relay;

    if (req == NULL) {
        /* Idle, or closing: nobody waits for it. */
        smtp_sess_free(sess);
        return;
    }
    /* No transaction yet (greeting, EHLO, TLS, AUTH): another address. */
    if (sess->uses == 0 || (req->from_cache && !sess->proto->txn_reply)) {
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
        msg_info("protocol error: host %s said: %s (%s)", vstr_str(sess->label),
                 text, what);
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
                     vstr_str(sess->label), text, smtp_proto_cmd_name(cmd));
        smtp_req_result(req, index,
                        code / 100 == 5 ? DELIVER_ACTION_BOUNCED
                                        : DELIVER_ACTION_DEFERRED,
                        dsn, vstr_str(reason), vstr_str(relay), vstr_str(diag),
                        vstr_str(mta));
    }
    vstr_free(reason);
    vstr_free(relay);
    vstr_free(diag);
    vstr_free(mta);
}

/* smtp_sess_decided - the recipients the last reply decided */
static void smtp_sess_decided(SMTP_SESS *sess, const char *text)
{
    SMTP_PROTO *proto = sess->proto;

    for (size_t i = 0; i < proto->decided_count; i++)
        smtp_sess_reply_result(sess, proto->decided[i], proto->code, text,
                               proto->cmd);
}

/* The content window's size: most messages fit whole, so one pread reads
   all of their content */
#define SMTP_WINDOW_SIZE (64 * 1024)

/* smtp_content_window - bytes [pos, pos + len) of the queue file, read
   through req->window; NULL when the file ends before them or cannot be
   read. The content is never rewritten while the file is in active/ (qmgr
   only turns R records of the envelope into D), so what the window holds
   stays true. */
static const char *smtp_content_window(SMTP_REQ *req, off_t pos, size_t len)
{
    VSTR *win;
    size_t want;
    ssize_t got;

    if (req->window == NULL)
        req->window = vstr_alloc(SMTP_WINDOW_SIZE);
    win = req->window;
    if (pos >= req->window_off &&
        (size_t) (pos - req->window_off) + len <= vstr_len(win))
        return vstr_str(win) + (pos - req->window_off);
    want = len > SMTP_WINDOW_SIZE ? len : SMTP_WINDOW_SIZE;
    vstr_reset(win);
    vstr_reserve(win, want);
    req->window_off = pos;
    do {
        got = pread(req->fd, vstr_str(win), want, pos);
    } while (got < 0 && errno == EINTR);
    if (got < 0)
        return NULL;
    win->len = (size_t) got;
    win->data[got] = 0;
    return (size_t) got >= len ? vstr_str(win) : NULL;
}

/* smtp_content_record - read the content record at pos: 1 data, 0 end,
   -1 error */
static int smtp_content_record(SMTP_REQ *req, off_t pos, VSTR *buf,
                               size_t *rec_len)
{
    const unsigned char *hdr;
    const char *data;
    size_t len;

    if ((hdr = (const unsigned char *) smtp_content_window(
             req, pos, QFILE_HDR_LEN)) == NULL)
        return -1;
    len = ((size_t) hdr[1] << 24) | ((size_t) hdr[2] << 16) |
          ((size_t) hdr[3] << 8) | hdr[4];
    if (hdr[0] == QFILE_REC_END)
        return 0;
    if (hdr[0] != QFILE_REC_CONT || len > QFILE_REC_MAX)
        return -1;
    if ((data = smtp_content_window(req, pos + QFILE_HDR_LEN, len)) == NULL)
        return -1;
    vstr_reset(buf);
    vstr_reserve(buf, len);
    memcpy(vstr_str(buf), data, len);
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
   the session is gone. Records are gathered into sess->out and sent a
   batch (SMTP_CONTENT_LOW) at a time: one send per batch, not per record. */
static bool smtp_content_push(SMTP_SESS *sess)
{
    SMTP_REQ *req = sess->req;
    struct evbuffer *output = bufferevent_get_output(sess->bev);
    VSTR *buf = vstr_alloc(4096);

    vstr_reset(sess->out);
    while (smtp_sess_in_content(sess) &&
           evbuffer_get_length(output) + vstr_len(sess->out) <
               SMTP_CONTENT_HIGH) {
        size_t rec_len = 0;
        int ret = smtp_content_record(req, sess->content_pos, buf, &rec_len);

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
            vstr_reset(sess->out);
            smtp_proto_data_end(sess->proto);
            smtp_sess_flush(sess, 0);
            break;
        }
        smtp_enc_feed(&sess->enc, vstr_str(buf), vstr_len(buf), sess->out);
        sess->content_pos += (off_t) rec_len;
        if (vstr_len(sess->out) >= SMTP_CONTENT_LOW) {
            smtp_sess_write(sess, vstr_str(sess->out), vstr_len(sess->out));
            vstr_reset(sess->out);
        }
    }
    if (vstr_len(sess->out) > 0) {
        smtp_sess_write(sess, vstr_str(sess->out), vstr_len(sess->out));
        vstr_reset(sess->out);
    }
    if (smtp_sess_in_content(sess))
        smtp_sess_timer_set(sess, sess->ctx->conf.data_xfer_timeout);
    vstr_free(buf);
    return true;
}

/* smtp_txn_start - greeted (or reused): one mail transaction */
static void smtp_txn_start(SMTP_SESS *sess)
{
    SMTP_REQ *req = sess->req;
    SMTP_PROTO *proto = sess->proto;
    QFILE_INFO *info = req->info;
    SMTP_PROTO_TXN *txn = &sess->txn;
    const char *body_type = qfile_info_attr(info, "body_type");
    VSTR *line;
    VSTR *relay;

    if (req->t_conn.tv_sec == 0)
        gettimeofday(&req->t_conn, NULL);
    sess->uses++;
    sess->conn_messages = req->conn_messages;
    sess->txn_rcpts = myrealloc_array(sess->txn_rcpts, req->rcpt_count,
                                      sizeof(*sess->txn_rcpts));
    for (size_t i = 0; i < req->rcpt_count; i++) {
        sess->txn_rcpts[i].address = req->rcpts[i].address;
        sess->txn_rcpts[i].notify = req->rcpts[i].notify;
        sess->txn_rcpts[i].orcpt = req->rcpts[i].orcpt;
        sess->txn_rcpts[i].done = req->rcpts[i].state == SMTP_RCPT_DONE;
    }
    txn->sender = req->verp_sender ? req->verp_sender : req->sender;
    txn->size = info->content_size;
    txn->body_8bit = body_type && strcasecmp(body_type, "8BITMIME") == 0;
    /* Reading the content for 8-bit bytes only when it matters. */
    txn->content_8bit = !(proto->caps & SMTP_FEATURE_8BITMIME) &&
                        !txn->body_8bit && smtp_content_8bit(req);
    txn->ret = qfile_info_attr(info, "ret");
    txn->envid = qfile_info_attr(info, "envid");
    txn->rcpts = sess->txn_rcpts;
    txn->rcpt_count = req->rcpt_count;
    if (smtp_proto_mail(proto, txn) == SMTP_PROTO_EV_NONE) {
        smtp_sess_flush(sess, 0);
        return;
    }
    /* Refused before a word was sent, or nobody to send to. */
    if (proto->refusal != SMTP_PROTO_REFUSE_NONE) {
        line = vstr_alloc(200);
        relay = vstr_alloc(64);
        smtp_sess_relay(sess, relay);
        if (proto->refusal == SMTP_PROTO_REFUSE_8BIT) {
            vstr_sprintf(line,
                         "message has 8-bit content but the server %s "
                         "does not announce 8BITMIME",
                         vstr_str(sess->label));
            smtp_req_fail_all(req, DELIVER_ACTION_BOUNCED, "5.6.3",
                              vstr_str(line), vstr_str(relay), NULL, NULL);
        } else {
            vstr_sprintf(line,
                         "message size %lld exceeds size limit %lld of "
                         "server %s",
                         info->content_size, proto->size_limit,
                         vstr_str(sess->label));
            smtp_req_fail_all(req, DELIVER_ACTION_BOUNCED, "5.3.4",
                              vstr_str(line), vstr_str(relay), NULL, NULL);
        }
        vstr_free(line);
        vstr_free(relay);
    }
    smtp_sess_flush(sess, 0);
    smtp_txn_end(sess);
}

/* smtp_sess_quit - say goodbye and close when the server answers */
void smtp_sess_quit(SMTP_SESS *sess)
{
    smtp_cache_remove(sess);
    sess->req = NULL;
    smtp_proto_quit(sess->proto);
    smtp_sess_flush(sess, 0);
}

/* smtp_txn_end - the transaction is over: DONE, then cache or QUIT */
static void smtp_txn_end(SMTP_SESS *sess)
{
    SMTP_CTX *ctx = sess->ctx;
    SMTP_REQ *req = sess->req;
    const SMTP_CONF *conf = &ctx->conf;

    sess->req = NULL;
    if (req != NULL) {
        req->sess = NULL;
        smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED, "4.3.0",
                          "delivery agent lost track of this recipient", NULL,
                          NULL, NULL);
        smtp_req_done(req, 0, false, NULL);
    }
    if (!sess->proto->reusable)
        sess->broken = true;
    if (sess->broken || conf->cache_time <= 0 ||
        (conf->reuse_limit > 0 && sess->uses >= conf->reuse_limit) ||
        (sess->conn_messages > 0 && sess->uses >= sess->conn_messages) ||
        mail_server_retiring(ctx->server)) {
        smtp_sess_quit(sess);
        return;
    }
    /* After a 2xx to the end of data no transaction is open and the next
       MAIL may come as it is (RFC 5321 4.1.4); Postfix too sends no RSET
       then (it sends one only to probe a connection it takes from its
       cache). A connection that died while idle shows when read (EOF
       here) or at the next MAIL, which then starts afresh elsewhere
       (smtp_sess_lost: reuse never fails a delivery). After any other
       end (a refused end of data, nobody accepted) RSET closes what the
       server may still hold. */
    if (!smtp_proto_txn_closed(sess->proto)) {
        smtp_proto_rset(sess->proto);
        smtp_sess_flush(sess, sess->proto->expect_count - 1);
    }
    sess->next = ctx->cache;
    ctx->cache = sess;
    smtp_sess_timer_set(sess, conf->cache_time);
    if (sess->conn_group)
        smtp_slot_wake(ctx);
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
    sess->fail_reply = text; /* freed with sess: copied before that */
    smtp_sess_site_fail(sess, dsn, reason, true);
}

/* smtp_sess_tls_fail - TLS did not work out with this server: at "may" a
   failed handshake is tried again in plain text on a new connection (as
   Postfix does; the half-done TLS session cannot carry on), at the
   mandatory levels the next address is tried and the mail is deferred */
static void smtp_sess_tls_fail(SMTP_SESS *sess, const char *dsn,
                               const char *reason, bool handshake)
{
    SMTP_REQ *req = sess->req;

    sess->tls_handshake = false;
    sess->broken = true;
    if (handshake && req != NULL && sess->tls_level == TLS_LEV_MAY) {
        msg_info("%s: %s; trying again without TLS "
                 "(smtp_tls_security_level = may)",
                 req->qid, reason);
        sess->req = NULL;
        req->sess = NULL;
        smtp_sess_free(sess);
        req->tls_plain_retry = true;
        if (req->addr_next > 0)
            req->addr_next--;
        smtp_req_try_next(req);
        return;
    }
    smtp_sess_site_fail(sess, dsn, reason, true);
}

/* smtp_sess_handshake_error - the handshake failed or timed out */
static void smtp_sess_handshake_error(SMTP_SESS *sess, const char *what)
{
    VSTR *why = vstr_alloc(200);
    VSTR *relay = vstr_alloc(64);

    smtp_sess_relay(sess, relay);
    vstr_sprintf(why, "Cannot start TLS: handshake failure with %s: %s",
                 vstr_str(relay), what);
    smtp_sess_tls_fail(sess, "4.7.5", vstr_str(why), true);
    vstr_free(relay);
    vstr_free(why);
}

/* smtp_sess_tls_names - the names the certificate must carry */
static ARGV *smtp_sess_tls_names(SMTP_SESS *sess)
{
    SMTP_REQ *req = sess->req;

    if (!tls_level_verifies(sess->tls_level) || req == NULL)
        return NULL;
    return tls_match_names(sess->tls_level, req->tls_match, sess->host,
                           vstr_str(req->host));
}

/* smtp_sess_tls_done - the handshake finished: log it as Postfix does,
   check the certificate as the level demands, EHLO again */
static void smtp_sess_tls_done(SMTP_SESS *sess)
{
    SSL *ssl = bufferevent_openssl_get_ssl(sess->bev);
    ARGV *names = smtp_sess_tls_names(sess);
    TLS_STATUS status;
    VSTR *relay = vstr_alloc(64);
    VSTR *line = vstr_alloc(200);
    bool ok = true;

    sess->tls_handshake = false;
    smtp_sess_relay(sess, relay);
    tls_status_init(&status);
    status.dane = sess->tls_level == TLS_LEV_DANE;
    tls_client_status(ssl, names, &status);
    if (sess->tls_level == TLS_LEV_FPRINT && sess->req != NULL)
        tls_client_fprint(ssl, sess->ctx->conf.tls_fprint_digest,
                          sess->req->tls_match, &status);
    tls_client_summary(line, &status, vstr_str(relay));
    if (sess->ctx->conf.tls_loglevel > 0)
        msg_info("%s", vstr_str(line));
    smtp_sts_tls_check(sess, ssl);
    if (status.fprint && !status.matched) {
        msg_info("%s: server certificate verification failed for %s: %s",
                 sess->req ? sess->req->qid : "", vstr_str(relay),
                 vstr_str(status.verify_error));
        vstr_sprintf(line, "Server certificate not verified (%s: %s)",
                     vstr_str(relay), vstr_str(status.verify_error));
        ok = false;
    } else if (sess->tls_level == TLS_LEV_FPRINT && !status.fprint) {
        vstr_sprintf(line,
                     "Server certificate not verified (%s: no "
                     "fingerprint to match)",
                     vstr_str(relay));
        ok = false;
    } else if (status.dane && !status.matched) {
        msg_info("%s: server certificate verification failed for %s: %s",
                 sess->req ? sess->req->qid : "", vstr_str(relay),
                 vstr_str(status.verify_error));
        vstr_sprintf(line, "Server certificate not trusted (%s: %s)",
                     vstr_str(relay), vstr_str(status.verify_error));
        ok = false;
    } else if (tls_level_verifies(sess->tls_level)) {
        if (!status.trusted) {
            msg_info("%s: server certificate verification failed for %s: %s",
                     sess->req ? sess->req->qid : "", vstr_str(relay),
                     vstr_str(status.verify_error));
            vstr_sprintf(line, "Server certificate not trusted (%s: %s)",
                         vstr_str(relay), vstr_str(status.verify_error));
            ok = false;
        } else if (!status.matched) {
            VSTR *wanted = vstr_alloc(64);

            for (size_t i = 0; i < names->argc; i++)
                vstr_sprintf_append(wanted, "%s%s", i ? ", " : "",
                                    names->argv[i]);
            vstr_sprintf(line,
                         "Server certificate not verified (%s: it names %s, "
                         "not %s)",
                         vstr_str(relay), vstr_str(status.peer_names),
                         vstr_str(wanted));
            vstr_free(wanted);
            ok = false;
        }
    }
    if (ok) {
        /* What each result of this connection reports (deliver_proto.h). */
        sess->tls_word = tls_status_word(&status);
        snprintf(sess->tls_version, sizeof(sess->tls_version), "%s",
                 status.protocol);
        snprintf(sess->tls_cipher, sizeof(sess->tls_cipher), "%s",
                 status.cipher);
    }
    tls_status_free(&status);
    if (names)
        argv_free(names);
    vstr_free(relay);
    if (!ok) {
        sess->broken = true; /* no QUIT: nothing more goes to it */
        smtp_sess_tls_fail(sess, "4.7.5", vstr_str(line), false);
        vstr_free(line);
        return;
    }
    vstr_free(line);
    smtp_proto_tls_started(sess->proto);
    smtp_sess_flush(sess, 0);
}

/* smtp_sess_starttls - the server said 220 to STARTTLS: whatever else it
   sent is dropped (a reply injected ahead of TLS must not be read as
   coming through it) and a TLS filter goes on top of the connection */
static bool smtp_sess_starttls(SMTP_SESS *sess)
{
    SMTP_CTX *ctx = sess->ctx;
    struct evbuffer *input = bufferevent_get_input(sess->bev);
    struct bufferevent *bev;
    VSTR *why;
    SSL *ssl;

    if (sess->req == NULL) {
        smtp_sess_free(sess);
        return false;
    }
    if (evbuffer_get_length(input) > 0) {
        msg_info("%s: %zu byte(s) after the reply to STARTTLS from %s "
                 "discarded",
                 sess->req->qid, evbuffer_get_length(input),
                 vstr_str(sess->label));
        evbuffer_drain(input, evbuffer_get_length(input));
    }
    why = vstr_alloc(100);
    if ((ssl = tls_client_ssl(ctx->tls, sess->req->tls_protocols, why)) ==
        NULL) {
        msg_warn("%s: TLS: %s", sess->req->qid, vstr_str(why));
        smtp_sess_handshake_error(sess, vstr_str(why));
        vstr_free(why);
        return false;
    }
    if (sess->tls_level == TLS_LEV_DANE &&
        tls_client_dane(ssl, sess->tlsa_base,
                        sess->req->mx ? vstr_str(sess->req->host) : NULL,
                        sess->tlsa, sess->tlsa_count, why) < 0) {
        SSL_free(ssl);
        smtp_sess_handshake_error(sess, vstr_str(why));
        vstr_free(why);
        return false;
    }
    /* An MX host that is an alias: its own name is a reference
       identifier too (RFC 7672 3.2.2), besides the TLSA base domain. */
    if (sess->tls_level == TLS_LEV_DANE &&
        strcasecmp(sess->tlsa_base, sess->host) != 0 &&
        SSL_add1_host(ssl, sess->host) != 1) {
        SSL_free(ssl);
        smtp_sess_handshake_error(sess, "SSL_add1_host failed");
        vstr_free(why);
        return false;
    }
    vstr_free(why);
    bev = bufferevent_openssl_filter_new(
        mail_server_base(ctx->server), sess->bev, ssl,
        BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == NULL) {
        SSL_free(ssl);
        smtp_sess_handshake_error(sess, "cannot create a TLS filter");
        return false;
    }
    sess->bev = bev;
    sess->tls_handshake = true;
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    /* After the filter exists: it resets the callbacks and watermarks of
       the connection underneath (research notes 4.4). */
    bufferevent_setcb(bev, smtp_sess_read_event, smtp_sess_write_event,
                      smtp_sess_event, sess);
    bufferevent_setwatermark(bev, EV_WRITE, SMTP_CONTENT_LOW, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    smtp_sess_timer_set(sess, ctx->conf.starttls_timeout);
    return false; /* the plain text reader stops here */
}

/* smtp_sess_auth_creds - user:password for this server from
   smtp_sasl_password_maps: the next hop as written ("[host]:port"), the
   server's host name, the next hop's domain. 1 found, 0 none, -1 the
   table failed */
static int smtp_sess_auth_creds(SMTP_SESS *sess, VSTR *creds)
{
    SMTP_REQ *req = sess->req;
    const char *keys[3] = {req->nexthop, sess->host, vstr_str(req->host)};
    const char *value;
    int error;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(keys); i++) {
        if ((value = maps_find(sess->ctx->sasl_passwd, keys[i], &error)) !=
            NULL) {
            vstr_cpy(creds, value);
            return 1;
        }
        if (error != MAP_NOTFOUND)
            return -1;
    }
    return 0;
}

/* smtp_sess_auth_start - AUTH when credentials exist for this server and
   it offers AUTH: 1 started, 0 not needed, -1 failed (sess is gone) */
static int smtp_sess_auth_start(SMTP_SESS *sess)
{
    SMTP_PROTO *proto = sess->proto;
    const SMTP_CONF *conf = &sess->ctx->conf;
    VSTR *creds;
    VSTR *why;
    const char *mechs = vstr_str(proto->auth_mechs);
    const char *mech = NULL;
    bool noplain =
        proto->tls_active ? conf->sasl_tls_noplain : conf->sasl_noplain;
    char *colon;
    int found;

    if (!conf->sasl_enable || sess->auth_done ||
        !(proto->caps & SMTP_FEATURE_AUTH))
        return 0;
    sess->auth_done = true;
    creds = vstr_alloc(64);
    why = vstr_alloc(100);
    if ((found = smtp_sess_auth_creds(sess, creds)) <= 0) {
        vstr_free(creds);
        if (found == 0) {
            vstr_free(why);
            return 0;
        }
        vstr_sprintf(why, "smtp_sasl_password_maps: lookup of %s failed",
                     sess->req->nexthop);
        smtp_sess_site_fail(sess, "4.3.0", vstr_str(why), true);
        vstr_free(why);
        return -1;
    }
    if (!noplain) {
        /* PLAIN and LOGIN are all this client speaks (RFC 4616, the
           LOGIN draft): PLAIN first, it needs one round trip. */
        for (const char *m = mechs; *m && mech == NULL;) {
            size_t len = strcspn(m, " ");

            if (len == 5 && strncmp(m, "PLAIN", 5) == 0)
                mech = "PLAIN";
            m += len;
            if (*m == ' ')
                m++;
        }
        for (const char *m = mechs; *m && mech == NULL;) {
            size_t len = strcspn(m, " ");

            if (len == 5 && strncmp(m, "LOGIN", 5) == 0)
                mech = "LOGIN";
            m += len;
            if (*m == ' ')
                m++;
        }
    }
    if (mech == NULL) {
        vstr_sprintf(why,
                     "SASL authentication failed: server %s offered no "
                     "compatible authentication mechanisms for this type of "
                     "connection security",
                     vstr_str(sess->label));
        memset(vstr_str(creds), 0, vstr_len(creds));
        vstr_free(creds);
        smtp_sess_site_fail(sess, "4.7.0", vstr_str(why), true);
        vstr_free(why);
        return -1;
    }
    if ((colon = strchr(vstr_str(creds), ':')) == NULL) {
        vstr_sprintf(why,
                     "smtp_sasl_password_maps: the entry for %s is not "
                     "user:password",
                     sess->req->nexthop);
        msg_warn("%s", vstr_str(why));
        memset(vstr_str(creds), 0, vstr_len(creds));
        vstr_free(creds);
        smtp_sess_site_fail(sess, "4.3.5", vstr_str(why), true);
        vstr_free(why);
        return -1;
    }
    *colon = 0;
    smtp_proto_auth(proto, mech, vstr_str(creds), colon + 1);
    memset(vstr_str(creds), 0, vstr_len(creds) + 1);
    vstr_free(creds);
    vstr_free(why);
    smtp_sess_flush(sess, 0);
    return 1;
}

/* smtp_sess_greeted - EHLO needs nothing more: TLS as the level demands,
   AUTH when configured, then the transaction; false when sess is gone or
   going */
static bool smtp_sess_greeted(SMTP_SESS *sess)
{
    VSTR *why;

    if (sess->req == NULL) {
        smtp_sess_quit(sess);
        return true;
    }
    if (tls_level_required(sess->tls_level) && !sess->proto->tls_active) {
        why = vstr_alloc(100);
        vstr_sprintf(why, "TLS is required, but was not offered by host %s",
                     vstr_str(sess->label));
        smtp_sess_tls_fail(sess, "4.7.4", vstr_str(why), false);
        vstr_free(why);
        return false;
    }
    if (!sess->proto->tls_active)
        smtp_sts_no_tls(sess);
    switch (smtp_sess_auth_start(sess)) {
    case 1:
        return true;
    case -1:
        return false;
    default:
        break;
    }
    smtp_txn_start(sess);
    return true;
}

/* smtp_sess_reply - one complete reply, through the conversation; false
   when sess is gone or going */
static bool smtp_sess_reply(SMTP_SESS *sess)
{
    SMTP_PROTO *proto = sess->proto;
    SMTP_REQ *req = sess->req;
    const char *text = vstr_str(sess->reply->text);
    size_t waiting;
    int next_cmd;
    SMTP_PROTO_EVENT event;
    VSTR *why;

    /* The timer now runs for the reply after this one, if any. */
    if (proto->expect_count > 0) {
        waiting = proto->expect_count - 1;
        if ((next_cmd = smtp_proto_waiting(proto, 1)) < 0)
            evtimer_del(sess->timer);
        else
            smtp_sess_timer_set(
                sess, smtp_cmd_timeout(&sess->ctx->conf, (SMTP_CMD) next_cmd));
    } else {
        waiting = 0;
    }
    event = smtp_proto_reply(proto, sess->reply);
    if (event == SMTP_PROTO_EV_ERROR) {
        smtp_sess_proto_error(sess, vstr_str(proto->error), text);
        return false;
    }
    if (event == SMTP_PROTO_EV_CLOSED) {
        smtp_sess_free(sess);
        return false;
    }
    if (req != NULL)
        smtp_sess_decided(sess, text);
    smtp_sess_flush(sess, waiting);

    switch (event) {
    case SMTP_PROTO_EV_NONE:
    case SMTP_PROTO_EV_ERROR:
    case SMTP_PROTO_EV_CLOSED:
        return true;
    case SMTP_PROTO_EV_REFUSED:
        why = vstr_alloc(100);
        if (proto->cmd == SMTP_CMD_GREETING)
            vstr_sprintf(why, "host %s refused to talk to me: %s",
                         vstr_str(sess->label), text);
        else
            vstr_sprintf(why, "host %s said: %s (in reply to %s command)",
                         vstr_str(sess->label), text,
                         smtp_proto_cmd_name(proto->cmd));
        smtp_sess_greet_fail(sess, proto->code, text, vstr_str(why));
        vstr_free(why);
        return false;
    case SMTP_PROTO_EV_GREETED:
        return smtp_sess_greeted(sess);
    case SMTP_PROTO_EV_STARTTLS:
        return smtp_sess_starttls(sess);
    case SMTP_PROTO_EV_STARTTLS_REFUSED:
        if (req != NULL && tls_level_required(sess->tls_level)) {
            why = vstr_alloc(100);
            vstr_sprintf(why,
                         "TLS is required, but host %s refused to start "
                         "TLS: %s",
                         vstr_str(sess->label), text);
            smtp_sess_tls_fail(sess, "4.7.5", vstr_str(why), false);
            vstr_free(why);
            return false;
        }
        return smtp_sess_greeted(sess); /* plain text, as EHLO said */
    case SMTP_PROTO_EV_AUTH_OK:
        if (req == NULL)
            smtp_sess_quit(sess);
        else
            smtp_txn_start(sess);
        return true;
    case SMTP_PROTO_EV_AUTH_FAILED:
        if (req == NULL) {
            smtp_sess_quit(sess);
            return true;
        }
        why = vstr_alloc(100);
        if (vstr_len(proto->error) > 0) {
            sess->broken = true; /* the server waits for an answer */
            vstr_sprintf(why, "SASL authentication failed; %s with server %s",
                         vstr_str(proto->error), vstr_str(sess->label));
        } else {
            vstr_sprintf(why, "SASL authentication failed; server %s said: %s",
                         vstr_str(sess->label), text);
        }
        smtp_sess_greet_fail(sess, proto->code, text, vstr_str(why));
        vstr_free(why);
        return false;
    case SMTP_PROTO_EV_RSET_FAILED:
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
    case SMTP_PROTO_EV_RSET_OK:
        if (req != NULL && proto->expect_count == 0 &&
            proto->state == SMTP_PROTO_ST_READY)
            smtp_txn_start(sess);
        else if (req == NULL && proto->state != SMTP_PROTO_ST_QUIT)
            smtp_sess_timer_set(sess, sess->ctx->conf.cache_time); /* idle */
        return true;
    case SMTP_PROTO_EV_CONTENT:
        sess->content_pos = req->info->content_offset;
        smtp_enc_init(&sess->enc);
        return smtp_content_push(sess);
    case SMTP_PROTO_EV_TXN_DONE:
        smtp_txn_end(sess);
        return !sess->broken;
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
    size_t budget = sess->proto->expect_count;

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

                smtp_bad_line(
                    line,
                    (const char *) evbuffer_pullup(input, SMTP_BAD_LINE_SHOWN),
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
                smtp_sess_proto_error(sess,
                                      sess->proto->expect_count > 0
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

    if (smtp_sess_in_content(sess) && sess->req != NULL)
        smtp_content_push(sess);
}

/* smtp_sess_phase - what the session was doing, for a failure reason */
static const char *smtp_sess_phase(const SMTP_SESS *sess)
{
    int cmd = smtp_proto_waiting(sess->proto, 0);

    if (sess->tls_handshake)
        return "performing the TLS handshake";
    if (smtp_sess_in_content(sess))
        return "sending message content";
    return smtp_cmd_phase(cmd >= 0 ? (SMTP_CMD) cmd : SMTP_CMD_QUIT);
}
/* smtp_sess_event - connected, EOF, error */
static void smtp_sess_event(struct bufferevent *bev, short what, void *arg)
{
    SMTP_SESS *sess = arg;
    VSTR *why;

    if (sess->tls_handshake) {
        if (what & BEV_EVENT_CONNECTED) {
            smtp_sess_tls_done(sess);
        } else {
            why = vstr_alloc(100);
            {
                unsigned long err;
                char buf[256];

                /* libevent keeps OpenSSL's errors of this connection;
                   lib 0 is none of OpenSSL's (a system error code). */
                while ((err = bufferevent_get_openssl_error(bev)) != 0) {
                    if (ERR_GET_LIB(err) == 0)
                        continue;
                    ERR_error_string_n(err, buf, sizeof(buf));
                    vstr_sprintf_append(why, "%s%s", vstr_len(why) ? "; " : "",
                                        buf);
                }
            }
            if (vstr_len(why) == 0)
                tls_error_text(why, (what & BEV_EVENT_EOF)
                                        ? "lost connection"
                                        : "TLS library problem");
            smtp_sess_handshake_error(sess, vstr_str(why));
            vstr_free(why);
        }
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        sess->connected = true;
        smtp_proto_connected(sess->proto);
        smtp_sess_flush(sess, 0);
        bufferevent_enable(sess->bev, EV_READ | EV_WRITE);
        return;
    }
    why = vstr_alloc(100);
    if (!sess->connected) {
        int err = EVUTIL_SOCKET_ERROR();

        vstr_sprintf(why, "connect to %s:%d: %s", vstr_str(sess->label),
                     sess->port, err ? strerror(err) : "Connection refused");
        smtp_sess_site_fail(sess, "4.4.1", vstr_str(why), false);
    } else if (sess->proto->state == SMTP_PROTO_ST_QUIT || sess->req == NULL) {
        smtp_sess_free(sess);
    } else {
        sess->broken = true;
        vstr_sprintf(why, "lost connection with %s while %s",
                     vstr_str(sess->label), smtp_sess_phase(sess));
        smtp_sess_lost(sess, "4.4.2", vstr_str(why));
    }
    vstr_free(why);
}

/* smtp_sess_timer_event - a phase took too long, or the idle time is up */
static void smtp_sess_timer_event(evutil_socket_t fd, short what, void *arg)
{
    SMTP_SESS *sess = arg;
    VSTR *why;

    if (sess->proto->state == SMTP_PROTO_ST_QUIT) {
        smtp_sess_free(sess);
        return;
    }
    if (sess->req == NULL) {
        /* Idle in the cache long enough. */
        if (sess->proto->expect_count > 0) {
            smtp_sess_free(sess); /* not even RSET came back */
            return;
        }
        smtp_sess_quit(sess);
        return;
    }
    if (sess->tls_handshake) {
        smtp_sess_handshake_error(sess, "timed out");
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
                     vstr_str(sess->label), smtp_sess_phase(sess));
        smtp_sess_lost(sess, "4.4.2", vstr_str(why));
    }
    vstr_free(why);
}

/* smtp_sess_open - a session on fd, a socket connecting to addr; NULL
   (fd closed, the reason in why) when it cannot even start */
SMTP_SESS *smtp_sess_open(SMTP_REQ *req, const DNS_ADDR *addr, int fd,
                          VSTR *why)
{
    SMTP_CTX *ctx = req->ctx;
    SMTP_SESS *sess;

    sess = mycalloc(1, sizeof(*sess));
    sess->ctx = ctx;
    if ((sess->all_next = ctx->sessions) != NULL)
        sess->all_next->all_prev = sess;
    ctx->sessions = sess;
    sess->req = req;
    sess->nexthop = mystrdup(req->nexthop);
    sess->source = mystrdup(req->source_address ? req->source_address : "");
    {
        VSTR *key = vstr_alloc(100);

        smtp_req_policy_key(req, key);
        sess->policy_key = mystrdup(vstr_str(key));
        vstr_free(key);
    }
    if (req->conn_group) {
        /* The connection counts in its group now, not the request. */
        sess->conn_group = mystrdup(req->conn_group);
        smtp_group_add(sess);
        smtp_slot_release(req);
    }
    sess->host = mystrdup(addr->host);
    snprintf(sess->ip, sizeof(sess->ip), "%s", addr->ip);
    sess->port = req->port;
    sess->label = vstr_alloc(64);
    vstr_sprintf(sess->label, "%s[%s]", sess->host, sess->ip);
    sess->reply = smtp_reply_alloc();
    sess->proto = smtp_proto_alloc(req->source_helo ? req->source_helo
                                                    : ctx->conf.helo_name);
    /* After a failed handshake at "may": this once without TLS. */
    sess->tls_level = req->tls_plain_retry ? TLS_LEV_NONE : req->conn_level;
    if (sess->tls_level == TLS_LEV_DANE) {
        sess->tlsa = mymalloc_array(req->tlsa_count + 1, sizeof(DANE_TLSA));
        for (size_t i = 0; i < req->tlsa_count; i++) {
            sess->tlsa[i] = req->tlsa[i];
            sess->tlsa[i].data = mymalloc(req->tlsa[i].len + 1);
            memcpy(sess->tlsa[i].data, req->tlsa[i].data, req->tlsa[i].len);
        }
        sess->tlsa_count = req->tlsa_count;
        sess->tlsa_base =
            mystrdup(req->tlsa_base ? req->tlsa_base : sess->host);
    }
    req->tls_plain_retry = false;
    sess->proto->tls_wanted = sess->tls_level >= TLS_LEV_MAY;
    sess->out = vstr_alloc(8192);
    sess->timer =
        evtimer_new(mail_server_base(ctx->server), smtp_sess_timer_event, sess);
    sess->bev = bufferevent_socket_new(mail_server_base(ctx->server), fd,
                                       BEV_OPT_CLOSE_ON_FREE);
    if (sess->timer == NULL || sess->bev == NULL)
        msg_fatal("cannot create events for a connection");
    req->sess = sess;
    if (ctx->conn_stats != NULL) {
        conn_stats_connect(ctx->conn_stats);
        sess->stats_counted = true;
    }
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
        return NULL;
    }
    return sess;
}

/* smtp_sess_reuse - req takes sess from the cache */
void smtp_sess_reuse(SMTP_SESS *sess, SMTP_REQ *req)
{
    evtimer_del(sess->timer);
    req->sess = sess;
    sess->req = req;
    req->from_cache = true;
    /* It counts in the group of the request it serves now. */
    if ((sess->conn_group == NULL) != (req->conn_group == NULL) ||
        (sess->conn_group && strcmp(sess->conn_group, req->conn_group))) {
        smtp_group_remove(sess);
        if (req->conn_group) {
            sess->conn_group = mystrdup(req->conn_group);
            smtp_group_add(sess);
        }
    }
    gettimeofday(&req->t_conn, NULL);
    if (sess->proto->expect_count == 0)
        smtp_txn_start(sess);
    else /* the RSET reply starts the transaction */
        smtp_sess_timer_set(sess, sess->ctx->conf.rset_timeout);
}
