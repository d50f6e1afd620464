/*
 * smtp_session - one connection to a server: its I/O
 *
 * A libevent bufferevent carries the conversation; a timer bounds each
 * phase (smtp_*_timeout). Reply lines are parsed as they arrive
 * (smtp_proto.c), commands are written, pipelined when the server offers
 * PIPELINING, and the content is read from the queue file a record at a
 * time and encoded, so no message is ever held in memory whole. Whatever
 * a reply decides for a recipient goes to smtp_request.c; a server that
 * will not do goes back to smtp_connect.c for the next address.
 *
 * Nothing here blocks except reading the local queue file.
 */
#include "sys_defs.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "deliver_proto.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "smtp.h"
#include "vstr.h"
#include "xtext.h"

static void smtp_sess_timer_set(SMTP_SESS *sess, int seconds);
static void smtp_txn_start(SMTP_SESS *sess);
static void smtp_txn_end(SMTP_SESS *sess);

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

/* smtp_sess_relay - "host[ip]:port" */
static void smtp_sess_relay(const SMTP_SESS *sess, VSTR *out)
{
    vstr_sprintf(out, "%s:%d", vstr_str(sess->label), sess->port);
}

/* smtp_sess_free - close a connection and forget it */
void smtp_sess_free(SMTP_SESS *sess)
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
void smtp_sess_quit(SMTP_SESS *sess)
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


/* smtp_sess_open - a session on fd, a socket connecting to addr; NULL
   (fd closed, the reason in why) when it cannot even start */
SMTP_SESS *smtp_sess_open(SMTP_REQ *req, const DNS_ADDR *addr, int fd,
                          VSTR *why)
{
    SMTP_CTX *ctx = req->ctx;
    SMTP_SESS *sess;

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
    gettimeofday(&req->t_conn, NULL);
    if (sess->expect_count == 0)
        smtp_txn_start(sess);
    else /* the RSET reply starts the transaction */
        smtp_sess_timer_set(sess, sess->ctx->conf.rset_timeout);
}
