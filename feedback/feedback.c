/*
 * feedback - the feedback service: DSNs and complaints that come back
 *
 * qmgr routes here (transport "feedback", global/verp_addr.h) mail to a
 * VERP return path bounce+TOKEN@bounce_verp_domain, to an unsubscribe
 * mailto address unsubscribe+TOKEN@unsubscribe_mailto_domain and to one
 * of complaint_addresses: such mail is parsed, never delivered. One request
 * per connection, as local's (global/deliver_proto.h); the queue file's
 * content is read up to feedback_size_limit bytes. For each recipient:
 *
 *   VERP address  the token (global/verp.h) must be ours: it names the
 *                 original message and recipient; the content is parsed
 *                 as a DSN (global/dsn_parse.h: RFC 3464 or a free-form
 *                 text, only from the null sender or a mailer daemon and
 *                 never an automatic reply). Action failed: a `bounced`
 *                 event with async true, for the original queue ID and
 *                 recipient; an
 *                 Action delayed, delivered, relayed or expanded: a log
 *                 line and no event (a delay is no outcome, the DSN that
 *                 ends it will come).
 *   complaint     the content is parsed as ARF (global/arf_parse.h); the
 *                 VERP token in its Original-Mail-From or in the returned
 *                 message's Return-Path ties it to the original; a
 *                 `complained` event when its Feedback-Type is one of
 *                 complaint_feedback_types (abuse, fraud, virus), else a
 *                 `feedback_report` event (not-spam, auth-failure ...:
 *                 it suppresses nothing and counts nowhere).
 *   unsubscribe   the mailto of List-Unsubscribe (RFC 2369), as
 *                 cleanup/cleanup_track.c writes it: the short form
 *                 unsubscribe+QID-MAC (global/track_token.h) names only
 *                 the message; the recipient and tenant recorded are the
 *                 candidates whose MAC it is: the mail's envelope
 *                 sender, From:, Sender: and Reply-To: with no tenant or
 *                 one of api_keys_file (so it works from the subscriber
 *                 after the journal forgot the message; the tenants
 *                 are read again only when the file changes), then each
 *                 recipient the journal names for QID with its event's
 *                 tenant (so it works from another address while the
 *                 journal has the message; only segments that may hold
 *                 its delivery are read, feedback_journal.c). The mailto asks for the https URL's token
 *                 as the subject: a Subject: that holds it (of the same
 *                 message, fitting the MAC) is believed first, from any
 *                 address, and names the list too. No fit:
 *                 feedback_unparsed, nobody unsubscribed. The long form
 *                 unsubscribe+TOKEN of mail sent before (the token of the
 *                 https URL, which names the recipient, tenant and list)
 *                 is the authority itself, whoever sends it. Either way
 *                 an `unsubscribed` event with the fields the api writes
 *                 for a One-Click POST (the short form alone has no list).
 *
 * The original's recipient, tenant, pool, provider and source address
 * come from its delivered event in the journal (feedback_journal.c).
 * When the journal no longer has it, the report cannot be tied to a
 * recipient: a valid token is in the return path of every message sent,
 * so whoever got one could name any address in the report. Its event then
 * has "verified": false, a null recipient and the report's claim as
 * "reported_recipient": it suppresses nobody (events/suppress.c passes
 * it over) and counts against no source (the report's Source-IP is
 * never believed).
 *
 * Anything that cannot be used (a bad or forged token, a report that does
 * not parse, a limit reached) is logged and recorded as a
 * `feedback_unparsed` event for the incoming message: it is consumed like
 * the rest, never retried and never bounced (a bounce of a bounce would
 * go to a bounce address).
 *
 * Order: the event is durable (events_emit) before the recipient's
 * RESULT says "sent" (consumed) to qmgr; an event that cannot be written
 * makes it "deferred", and qmgr tries again. Then, for an asynchronous
 * hard bounce or a complaint, the source address that sent the original
 * is reported to qmgr's reputation state (private/qmgr-pool "feedback",
 * global/pool_proto.h) so the circuit breaker counts it; that report is
 * best effort (a warning when qmgr cannot take it), and made once per
 * original recipient and kind: a report sent again (the journal has its
 * event already; the event itself is written again with the same id, for
 * consumers deduplicate) is not counted again.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "api_keys.h"
#include "arf_parse.h"
#include "argv.h"
#include "attr.h"
#include "bounce_class.h"
#include "deliver_agent.h"
#include "deliver_log.h"
#include "deliver_proto.h"
#include "dsn_parse.h"
#include "events.h"
#include "feedback.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "pool_proto.h"
#include "qfile.h"
#include "report_mime.h"
#include "sign_token.h"
#include "sock.h"
#include "track_token.h"
#include "verp.h"
#include "verp_addr.h"
#include "vstr.h"

#define FEEDBACK_TIMEOUT_MAX_MS (3600 * 1000)
#define FEEDBACK_POOL_TIMEOUT_MS 5000
#define FEEDBACK_RELAY "feedback"

typedef struct FEEDBACK_CONF {
    char *queue_dir;
    char *events_dir;
    char *verp_domain;
    char *unsub_domain; /* unsubscribe_mailto_domain */
    char *api_keys_file; /* its tenants: a short unsubscribe's candidates */
    char *complaint_addresses;
    ARGV *complaint_types; /* complaint_feedback_types */
    long long size_limit;
    long long journal_window; /* seconds after arrival a delivery may be */
    int timeout_ms;
} FEEDBACK_CONF;

typedef struct FEEDBACK_CTX {
    MAIL_SERVER *server;
    FEEDBACK_CONF conf;
    VSTR *key; /* sign_token key: verifies VERP and unsubscribe tokens */
    EVENTS *events; /* NULL: events_enable = no */
    BOUNCE_CLASS_RULES *rules; /* bounce_classes_file */
    ARGV *key_tenants; /* api_keys_file's tenants, each once */
    struct stat key_stat; /* of api_keys_file when they were read */
    bool key_read; /* key_tenants and key_stat are set */
} FEEDBACK_CTX;

typedef struct FEEDBACK_REQ {
    FEEDBACK_CTX *ctx;
    ATTR_STREAM *stream;
    DELIVER_REQ *in;
    QFILE_INFO *info;
    VSTR *content;
    bool truncated; /* content longer than feedback_size_limit */
    VSTR *why;
    struct timeval t_request;
} FEEDBACK_REQ;

/* What one recipient came to. */
typedef struct FEEDBACK_OUTCOME {
    const char *action; /* DELIVER_ACTION_SENT or _DEFERRED */
    const char *dsn;
    VSTR *text;
} FEEDBACK_OUTCOME;

/* feedback_classify - an asynchronous bounce's category and hard flag, by
   the same rules (global/bounce_class.h) as a reply during delivery: the
   DSN's Status and its Diagnostic-Code (or the free-form reply found) */
static const char *feedback_classify(const FEEDBACK_CTX *ctx,
                                     const char *status, const char *reply,
                                     bool *hard)
{
    BOUNCE_CLASS out;

    bounce_class_result(ctx->rules, status, reply, reply, &out);
    *hard = out.hard;
    return out.category;
}

/* feedback_limits - the parsers' limits */
static REPORT_MIME_LIMITS feedback_limits(const FEEDBACK_CTX *ctx)
{
    REPORT_MIME_LIMITS limits = {.max_bytes = (size_t) ctx->conf.size_limit,
                                 .max_depth = REPORT_MIME_DEF_DEPTH,
                                 .max_parts = REPORT_MIME_DEF_PARTS};

    return limits;
}

/* feedback_emit - one event, durable: 0, or -1 (warned) */
static int feedback_emit(FEEDBACK_CTX *ctx, const EVENT *event)
{
    if (ctx->events == NULL)
        return 0; /* events_enable = no: the log line is all there is */
    return events_emit(ctx->events, event);
}

/* feedback_unparsed - a recipient's mail that cannot be used: logged,
   recorded, consumed */
static void feedback_unparsed(FEEDBACK_REQ *req, const DELIVER_RCPT *rcpt,
                              const char *what, const char *why,
                              FEEDBACK_OUTCOME *out)
{
    VSTR *seq = vstr_alloc(24);
    VSTR *reply = vstr_alloc(100);
    EVENT event;

    vstr_sprintf(reply, "%s: %s%s", what, why,
                 req->truncated ? " (only the first feedback_size_limit "
                                  "bytes were looked at)"
                                : "");
    msg_warn("%s: unparseable %s to <%s>: %s", req->in->queue_id, what,
             rcpt->address, vstr_str(reply) + strlen(what) + 2);
    vstr_sprintf(seq, "%lld", rcpt->offset);
    events_event_init(&event, EVENTS_FEEDBACK_UNPARSED, req->in->queue_id,
                      vstr_str(seq));
    event.recipient = rcpt->address;
    event.sender = req->in->sender;
    event.reply = vstr_str(reply);
    if (feedback_emit(req->ctx, &event) < 0) {
        out->action = DELIVER_ACTION_DEFERRED;
        out->dsn = "4.3.0";
        vstr_cpy(out->text, "cannot write the feedback_unparsed event");
    } else {
        out->action = DELIVER_ACTION_SENT;
        out->dsn = "2.0.0";
        vstr_sprintf(out->text, "unparseable %s, recorded", what);
    }
    vstr_free(seq);
    vstr_free(reply);
}

/* feedback_pool_report - tell qmgr's reputation state that source (and
   provider, when known) got a late hard bounce or a complaint; best
   effort */
static void feedback_pool_report(FEEDBACK_CTX *ctx, const char *qid,
                                 const FEEDBACK_ORIG *orig, bool complaint)
{
    VSTR *path = vstr_alloc(100);
    VSTR *name = vstr_alloc(64);
    VSTR *why = vstr_alloc(100);
    POOL_PROTO_REQUEST request = {.request = POOL_PROTO_REQ_FEEDBACK,
                                  .kind = complaint ? "complaint" : "bounce"};
    POOL_PROTO_REPLY reply;
    ATTR_STREAM *stream = NULL;
    ATTR_LIST *list = NULL;
    int fd;
    int ret = -1;

    if (vstr_len(orig->source_ip) == 0)
        goto out; /* sent from no known source: nothing to count */
    vstr_cpy(name, vstr_str(orig->source_ip));
    if (vstr_len(orig->provider) > 0)
        vstr_sprintf_append(name, "/%s", vstr_str(orig->provider));
    request.name = vstr_str(name);
    mail_queue_service(path, ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                       POOL_PROTO_SERVICE);
    if ((fd = sock_unix_connect(vstr_str(path))) < 0) {
        vstr_sprintf(why, "connect %s: %s", vstr_str(path), strerror(errno));
        goto out;
    }
    stream =
        attr_stream_open(fd, POOL_PROTO_LIST_MAX, FEEDBACK_POOL_TIMEOUT_MS);
    list = pool_proto_hello_list();
    if (attr_stream_write(stream, list, why) < 0)
        goto out;
    list = attr_list_free(list);
    if (attr_stream_read(stream, &list, why) < 0 ||
        pool_proto_hello_take(list, why) < 0)
        goto out;
    list = attr_list_free(list);
    list = pool_proto_request_list(&request);
    if (attr_stream_write(stream, list, why) < 0)
        goto out;
    list = attr_list_free(list);
    if (attr_stream_read(stream, &list, why) < 0 ||
        pool_proto_reply_take(list, &reply, why) < 0)
        goto out;
    if (reply.status != POOL_PROTO_STAT_OK) {
        vstr_cpy(why, reply.reason ? reply.reason : "failed");
        goto out;
    }
    ret = 0;
out:
    if (ret < 0 && vstr_len(orig->source_ip) > 0)
        msg_warn("%s: reputation of %s not told of the %s: %s", qid,
                 vstr_str(name), complaint ? "complaint" : "late bounce",
                 vstr_str(why));
    if (list)
        attr_list_free(list);
    if (stream)
        attr_stream_close(stream);
    vstr_free(path);
    vstr_free(name);
    vstr_free(why);
}

/* feedback_or - value when not empty, else fallback (NULL when both are) */
static const char *feedback_or(const VSTR *value, const VSTR *fallback)
{
    if (vstr_len(value) > 0)
        return vstr_str(value);
    if (fallback != NULL && vstr_len(fallback) > 0)
        return vstr_str(fallback);
    return NULL;
}

/* feedback_dsn - a DSN to a VERP return path */
static void feedback_dsn(FEEDBACK_REQ *req, const DELIVER_RCPT *rcpt,
                         FEEDBACK_OUTCOME *out)
{
    FEEDBACK_CTX *ctx = req->ctx;
    REPORT_MIME_LIMITS limits = feedback_limits(ctx);
    DSN_PARSED *dsn = dsn_parsed_alloc();
    FEEDBACK_ORIG *orig = feedback_orig_alloc();
    VSTR *seq = vstr_alloc(24);
    char qid[QID_SIZE];
    long long offset;
    const char *category;
    bool hard;
    int lock = -1;
    EVENT event;

    if (verp_check(ctx->key, rcpt->address, qid, &offset, req->why) < 0) {
        feedback_unparsed(req, rcpt, "DSN", vstr_str(req->why), out);
        goto out;
    }
    if (dsn_parse_mail(vstr_str(req->content), vstr_len(req->content), &limits,
                       req->in->sender, dsn, req->why) < 0) {
        feedback_unparsed(req, rcpt, "DSN", vstr_str(req->why), out);
        goto out;
    }
    /* The journal first: of a report on several recipients, the block
       read is the one on the recipient the token ties to, else the first
       that failed. */
    vstr_sprintf(seq, "%lld.async", offset);
    /* Nothing is written without events: nothing to order. */
    if (ctx->events != NULL)
        lock = feedback_journal_lock(ctx->conf.events_dir, qid);
    feedback_journal_find(ctx->conf.events_dir, qid, offset, EVENTS_BOUNCED,
                          vstr_str(seq), orig);
    (void) dsn_parsed_pick(dsn, orig->found ? vstr_str(orig->recipient) : NULL,
                           orig->found ? vstr_str(orig->orig_recipient) : NULL);
    out->action = DELIVER_ACTION_SENT;
    out->dsn = "2.0.0";
    if (strcmp(vstr_str(dsn->action), "failed") != 0) {
        /* delayed: no outcome yet; delivered, relayed, expanded: none to
           record. Logged, consumed. */
        msg_info("%s: DSN for %s offset %lld: Action %s, status %s: not "
                 "recorded",
                 req->in->queue_id, qid, offset, vstr_str(dsn->action),
                 vstr_str(dsn->status));
        vstr_sprintf(out->text, "DSN with Action %s, not recorded",
                     vstr_str(dsn->action));
        goto out;
    }
    category = feedback_classify(ctx, vstr_str(dsn->status),
                                 vstr_str(dsn->reply), &hard);
    events_event_init(&event, EVENTS_BOUNCED, qid, vstr_str(seq));
    if (orig->found) {
        event.recipient = feedback_or(orig->recipient, NULL);
    } else {
        /* Not tied to a recipient of ours: what the report claims is
           kept, believed by nothing. */
        event.verified = 0;
        event.reported_recipient = feedback_or(dsn->orig_rcpt, dsn->final_rcpt);
    }
    event.orig_recipient = feedback_or(orig->orig_recipient, NULL);
    event.dsn = vstr_str(dsn->status);
    event.reply = vstr_str(dsn->reply);
    event.category = category;
    event.hard = hard;
    event.async = 1;
    event.tenant = feedback_or(orig->tenant, NULL);
    event.pool = feedback_or(orig->pool, NULL);
    event.source_ip = feedback_or(orig->source_ip, NULL);
    event.provider = feedback_or(orig->provider, NULL);
    if (feedback_emit(ctx, &event) < 0) {
        out->action = DELIVER_ACTION_DEFERRED;
        out->dsn = "4.3.0";
        vstr_cpy(out->text, "cannot write the bounced event");
        goto out;
    }
    feedback_journal_unlock(lock);
    lock = -1;
    msg_info("%s: late bounce of %s to=<%s>%s, dsn=%s, category=%s, "
             "hard=%s%s (%s)",
             req->in->queue_id, qid,
             event.recipient            ? event.recipient
             : event.reported_recipient ? event.reported_recipient
                                        : "?",
             orig->found ? "" : " (unverified: not in the journal)", event.dsn,
             category, hard ? "yes" : "no", orig->repeated ? ", repeated" : "",
             event.reply);
    vstr_sprintf(out->text, "bounced event for %s", qid);
    if (hard && orig->found && !orig->repeated)
        feedback_pool_report(ctx, qid, orig, false);
out:
    feedback_journal_unlock(lock);
    dsn_parsed_free(dsn);
    feedback_orig_free(orig);
    vstr_free(seq);
}

/* feedback_arf_token - the first of the report's addresses whose VERP
   token is ours: 0 with qid and offset, -1 with why */
static int feedback_arf_token(FEEDBACK_CTX *ctx, const ARF_PARSED *arf,
                              char *qid, long long *offset, VSTR *why)
{
    const VSTR *candidates[] = {arf->orig_mail_from, arf->return_path};
    VSTR *last = vstr_alloc(100);
    int ret = -1;

    vstr_cpy(last, "no VERP return path of ours in Original-Mail-From or the "
                   "original's Return-Path");
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(candidates) && ret < 0; i++) {
        if (vstr_len(candidates[i]) == 0 ||
            strncasecmp(vstr_str(candidates[i]), VERP_PREFIX,
                        strlen(VERP_PREFIX)) != 0)
            continue;
        if (verp_check(ctx->key, vstr_str(candidates[i]), qid, offset, why) ==
            0)
            ret = 0;
        else
            vstr_cpy(last, vstr_str(why));
    }
    if (ret < 0)
        vstr_cpy(why, vstr_str(last));
    vstr_free(last);
    return ret;
}

/* feedback_complaint_type - is the Feedback-Type one of
   complaint_feedback_types? */
static bool feedback_complaint_type(const FEEDBACK_CTX *ctx, const char *type)
{
    for (size_t i = 0; i < ctx->conf.complaint_types->argc; i++)
        if (strcasecmp(ctx->conf.complaint_types->argv[i], type) == 0)
            return true;
    return false;
}

/* feedback_arf - an ARF report to a complaint address */
static void feedback_arf(FEEDBACK_REQ *req, const DELIVER_RCPT *rcpt,
                         FEEDBACK_OUTCOME *out)
{
    FEEDBACK_CTX *ctx = req->ctx;
    REPORT_MIME_LIMITS limits = feedback_limits(ctx);
    ARF_PARSED *arf = arf_parsed_alloc();
    FEEDBACK_ORIG *orig = feedback_orig_alloc();
    VSTR *seq = vstr_alloc(24);
    char qid[QID_SIZE];
    long long offset;
    bool complaint;
    const char *kind;
    int lock = -1;
    EVENT event;

    if (arf_parse(vstr_str(req->content), vstr_len(req->content), &limits, arf,
                  req->why) < 0 ||
        feedback_arf_token(ctx, arf, qid, &offset, req->why) < 0) {
        feedback_unparsed(req, rcpt, "ARF report", vstr_str(req->why), out);
        goto out;
    }
    complaint = feedback_complaint_type(ctx, vstr_str(arf->feedback_type));
    kind = complaint ? EVENTS_COMPLAINED : EVENTS_FEEDBACK_REPORT;
    vstr_sprintf(seq, "%lld", offset);
    /* Nothing is written without events: nothing to order. */
    if (ctx->events != NULL)
        lock = feedback_journal_lock(ctx->conf.events_dir, qid);
    feedback_journal_find(ctx->conf.events_dir, qid, offset, kind,
                          vstr_str(seq), orig);
    /* The reporter's Source-IP is never believed: the source counted is
       the one our delivered event names. */
    events_event_init(&event, kind, qid, vstr_str(seq));
    if (orig->found) {
        event.recipient = feedback_or(orig->recipient, NULL);
    } else {
        event.verified = 0;
        event.reported_recipient = feedback_or(arf->orig_rcpt_to, arf->to);
    }
    event.orig_recipient = feedback_or(orig->orig_recipient, NULL);
    event.feedback_type = vstr_str(arf->feedback_type);
    event.reply = feedback_or(arf->user_agent, NULL);
    event.tenant = feedback_or(orig->tenant, NULL);
    event.pool = feedback_or(orig->pool, NULL);
    event.source_ip = feedback_or(orig->source_ip, NULL);
    event.provider = feedback_or(orig->provider, NULL);
    if (feedback_emit(ctx, &event) < 0) {
        out->action = DELIVER_ACTION_DEFERRED;
        out->dsn = "4.3.0";
        vstr_sprintf(out->text, "cannot write the %s event", kind);
        goto out;
    }
    feedback_journal_unlock(lock);
    lock = -1;
    msg_info("%s: %s about %s to=<%s>%s, feedback_type=%s, source=%s%s",
             req->in->queue_id,
             complaint ? "complaint" : "feedback report (no complaint)", qid,
             event.recipient            ? event.recipient
             : event.reported_recipient ? event.reported_recipient
                                        : "?",
             orig->found ? "" : " (unverified: not in the journal)",
             event.feedback_type, event.source_ip ? event.source_ip : "?",
             orig->repeated ? ", repeated" : "");
    out->action = DELIVER_ACTION_SENT;
    out->dsn = "2.0.0";
    vstr_sprintf(out->text, "%s event for %s", kind, qid);
    if (complaint && orig->found && !orig->repeated)
        feedback_pool_report(ctx, qid, orig, true);
out:
    feedback_journal_unlock(lock);
    arf_parsed_free(arf);
    feedback_orig_free(orig);
    vstr_free(seq);
}

/* feedback_unsub_emit - the unsubscribed event: durable, logged */
static void feedback_unsub_emit(FEEDBACK_REQ *req, const DELIVER_RCPT *rcpt,
                                const TRACK_TOKEN *tok, const char *how,
                                FEEDBACK_OUTCOME *out)
{
    VSTR *seq = vstr_alloc(40);
    EVENT event;

    /* The same id when qmgr hands this recipient over again (a crash
       between the event and the RESULT): the incoming message and the
       recipient's record. */
    vstr_sprintf(seq, "%s.%lld", req->in->queue_id, rcpt->offset);
    track_token_event(&event, EVENTS_UNSUBSCRIBED, tok, vstr_str(seq));
    if (*tok->extra == 0)
        event.list = NULL;
    if (feedback_emit(req->ctx, &event) < 0) {
        out->action = DELIVER_ACTION_DEFERRED;
        out->dsn = "4.3.0";
        vstr_cpy(out->text, "cannot write the unsubscribed event");
    } else {
        msg_info("%s: unsubscribed by mail from <%s>: qid=%s recipient=%s "
                 "tenant=%s list=%s (%s)",
                 req->in->queue_id, req->in->sender, tok->qid,
                 *tok->recipient ? tok->recipient : "(none)",
                 *tok->tenant ? tok->tenant : "(none)",
                 *tok->extra ? tok->extra : "(none)", how);
        out->action = DELIVER_ACTION_SENT;
        out->dsn = "2.0.0";
        vstr_sprintf(out->text, "unsubscribed event for %s", tok->qid);
    }
    vstr_free(seq);
}

/* feedback_unsub_senders - the addresses the unsubscribe mail comes from:
   its envelope sender, From:, Sender:, Reply-To:, appended to rcpts */
static void feedback_unsub_senders(FEEDBACK_REQ *req, ARGV *rcpts)
{
    static const char *const names[] = {"From", "Sender", "Reply-To"};
    VSTR *value = vstr_alloc(100);
    VSTR *addr = vstr_alloc(64);
    size_t head_len;
    size_t body_off;

    if (*req->in->sender)
        argv_add(rcpts, req->in->sender);
    report_mime_split(vstr_str(req->content), vstr_len(req->content), &head_len,
                      &body_off);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(names); i++)
        if (report_mime_header(vstr_str(req->content), head_len, names[i],
                               value) &&
            report_mime_addr(vstr_str(value), vstr_len(value), addr))
            argv_add(rcpts, vstr_str(addr));
    vstr_free(value);
    vstr_free(addr);
}

/* feedback_unsub_keys_tenants - every tenant of api_keys_file, once: read
   again only when the file changed (its inode, size, mtime or ctime); a
   file that is not there: none; one that cannot be read: a warning, none */
static const ARGV *feedback_unsub_keys_tenants(FEEDBACK_CTX *ctx)
{
    VSTR *list;
    VSTR *why;
    ARGV *lines;
    struct stat st;

    if (*ctx->conf.api_keys_file == 0 || stat(ctx->conf.api_keys_file, &st) < 0)
        memset(&st, 0, sizeof(st));
    if (ctx->key_read && st.st_ino == ctx->key_stat.st_ino &&
        st.st_dev == ctx->key_stat.st_dev &&
        st.st_size == ctx->key_stat.st_size &&
        st.st_mtim.tv_sec == ctx->key_stat.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == ctx->key_stat.st_mtim.tv_nsec &&
        st.st_ctim.tv_sec == ctx->key_stat.st_ctim.tv_sec &&
        st.st_ctim.tv_nsec == ctx->key_stat.st_ctim.tv_nsec)
        return ctx->key_tenants;
    if (ctx->key_tenants)
        argv_free(ctx->key_tenants);
    ctx->key_tenants = argv_alloc(8);
    ctx->key_stat = st;
    ctx->key_read = true;
    if (st.st_ino == 0 && st.st_size == 0)
        return ctx->key_tenants; /* no file */
    list = vstr_alloc(1024);
    why = vstr_alloc(100);
    if (api_keys_list(ctx->conf.api_keys_file, list, why) < 0) {
        msg_warn("unsubscribe: the tenants of api_keys_file: %s",
                 vstr_str(why));
        ctx->key_read = false; /* try again next time */
    } else {
        lines = argv_split(vstr_str(list), "\n");
        for (size_t i = 0; i < lines->argc; i++) {
            ARGV *words = argv_split(lines->argv[i], " ");
            bool seen = words->argc < 2 || *words->argv[1] == 0;

            for (size_t j = 0; j < ctx->key_tenants->argc && !seen; j++)
                seen = strcmp(ctx->key_tenants->argv[j], words->argv[1]) == 0;
            if (!seen)
                argv_add(ctx->key_tenants, words->argv[1]);
            argv_free(words);
        }
        argv_free(lines);
    }
    vstr_free(list);
    vstr_free(why);
    return ctx->key_tenants;
}

/* feedback_unsub_subject - the "unsub" token in the mail's Subject: (the
   mailto's ?subject=, track_token.h), when it is ours, of message qid and
   of a recipient and tenant that mac fits: 0 with tok filled (release
   with track_token_free), else -1 */
static int feedback_unsub_subject(FEEDBACK_REQ *req, const char *qid,
                                  const char *mac, TRACK_TOKEN *tok)
{
    VSTR *subject = vstr_alloc(100);
    size_t head_len;
    size_t body_off;
    ARGV *words;
    int ret = -1;

    report_mime_split(vstr_str(req->content), vstr_len(req->content), &head_len,
                      &body_off);
    if (!report_mime_header(vstr_str(req->content), head_len, "Subject",
                            subject)) {
        vstr_free(subject);
        return -1;
    }
    words = argv_split(vstr_str(subject), " \t");
    for (size_t i = 0; i < words->argc && ret < 0; i++) {
        if (strlen(words->argv[i]) < TRACK_MAILTO_TAG_CHARS ||
            track_token_parse(req->ctx->key, TRACK_PURPOSE_UNSUB,
                              words->argv[i], tok) < 0)
            continue;
        if (strcmp(tok->qid, qid) == 0 &&
            unsub_mailto_check(req->ctx->key, qid, mac, tok->recipient,
                               tok->tenant))
            ret = 0;
        else
            track_token_free(tok);
    }
    argv_free(words);
    vstr_free(subject);
    return ret;
}

/* feedback_unsub_match - the first of rcpts paired with "" or one of
   tenants whose MAC is mac: the recipient's index and the tenant
   ("" none), true; false when none */
static bool feedback_unsub_match(const FEEDBACK_CTX *ctx, const char *qid,
                                 const char *mac, const ARGV *rcpts,
                                 const ARGV *tenants, size_t *ri,
                                 const char **tenant)
{
    for (*ri = 0; *ri < rcpts->argc; (*ri)++) {
        *tenant = "";
        if (unsub_mailto_check(ctx->key, qid, mac, rcpts->argv[*ri], *tenant))
            return true;
        for (size_t ti = 0; ti < tenants->argc; ti++) {
            *tenant = tenants->argv[ti];
            if (**tenant && unsub_mailto_check(ctx->key, qid, mac,
                                               rcpts->argv[*ri], *tenant))
                return true;
        }
    }
    return false;
}

/* feedback_unsub_pairs - the first of the journal's pairs rcpts[i] with
   tenants[i] whose MAC is mac: its index, true; false when none */
static bool feedback_unsub_pairs(const FEEDBACK_CTX *ctx, const char *qid,
                                 const char *mac, const ARGV *rcpts,
                                 const ARGV *tenants, size_t *ri)
{
    for (*ri = 0; *ri < rcpts->argc; (*ri)++)
        if (unsub_mailto_check(ctx->key, qid, mac, rcpts->argv[*ri],
                               tenants->argv[*ri]))
            return true;
    return false;
}

/* feedback_unsub_short - the short form unsubscribe+QID-MAC
   (track_token.h): the address names no one. A Subject: with the
   message's long token that the MAC fits says everything (the list too);
   else the recipient and tenant are candidates whose MAC it is: first the
   addresses the mail comes from, with no tenant or one of api_keys_file
   (no journal read: the usual case, and one that works after the journal
   forgot the message), then each recipient the journal names for QID with
   the tenant of its event (a forwarding mailbox, a reply from another
   address), then the mail's addresses with the tenants the journal names.
   The HMACs made: (1 + the key file's tenants) per address of the mail,
   then at most FEEDBACK_JOURNAL_MAX_NAMES, then at most that per address
   (no recipient of the journal is paired with every key file tenant) */
static void feedback_unsub_short(FEEDBACK_REQ *req, const DELIVER_RCPT *rcpt,
                                 const char *qid, const char *mac,
                                 FEEDBACK_OUTCOME *out)
{
    FEEDBACK_CTX *ctx = req->ctx;
    ARGV *senders = argv_alloc(4);
    ARGV *listed = argv_alloc(4);
    ARGV *listed_tenants = argv_alloc(4);
    const char *recipient = NULL;
    const char *tenant = "";
    const char *how = NULL;
    TRACK_TOKEN tok;
    size_t ri;
    bool in_journal = false;

    /* The long token the mailto asked for as the subject: the list too */
    if (feedback_unsub_subject(req, qid, mac, &tok) == 0) {
        feedback_unsub_emit(req, rcpt, &tok, "the token in its Subject:", out);
        track_token_free(&tok);
        goto done;
    }
    feedback_unsub_senders(req, senders);
    if (feedback_unsub_match(ctx, qid, mac, senders,
                             feedback_unsub_keys_tenants(ctx), &ri, &tenant)) {
        recipient = senders->argv[ri];
        how = "the mail's own address";
    } else {
        in_journal = feedback_journal_rcpts(ctx->conf.events_dir, qid,
                                            ctx->conf.journal_window, listed,
                                            listed_tenants);
        if (feedback_unsub_pairs(ctx, qid, mac, listed, listed_tenants, &ri)) {
            recipient = listed->argv[ri];
            tenant = listed_tenants->argv[ri];
            how = "a recipient the journal names";
        } else if (feedback_unsub_match(ctx, qid, mac, senders, listed_tenants,
                                        &ri, &tenant)) {
            recipient = senders->argv[ri];
            how = "the mail's own address, a tenant the journal names";
        }
    }
    if (recipient != NULL) {
        tok = (TRACK_TOKEN){
            .qid = qid, .recipient = recipient, .tenant = tenant, .extra = ""};
        feedback_unsub_emit(req, rcpt, &tok, how, out);
    } else if (in_journal) {
        feedback_unparsed(req, rcpt, "unsubscribe",
                          "the address's MAC fits no recipient the journal "
                          "names for its message, nor the mail's sender "
                          "(forged, altered, or signed with another key)",
                          out);
    } else {
        feedback_unparsed(req, rcpt, "unsubscribe",
                          "not verified: the mail's sender, From:, Sender: "
                          "and Reply-To: do not fit the address's MAC, and "
                          "the journal does not have its message",
                          out);
    }
done:
    argv_free(senders);
    argv_free(listed);
    argv_free(listed_tenants);
}

/* feedback_unsub - mail to an unsubscribe mailto address: the long form's
   token is the authority whoever sent it; the short form's MAC must fit
   the token in its Subject:, the mail's own sender or a recipient the
   journal names */
static void feedback_unsub(FEEDBACK_REQ *req, const DELIVER_RCPT *rcpt,
                           FEEDBACK_OUTCOME *out)
{
    FEEDBACK_CTX *ctx = req->ctx;
    VSTR *mac = vstr_alloc(TRACK_MAILTO_TAG_CHARS + 1);
    char qid[QID_SIZE];
    TRACK_TOKEN tok;

    if (unsub_mailto_split(rcpt->address, qid, mac) == 0) {
        feedback_unsub_short(req, rcpt, qid, vstr_str(mac), out);
    } else if (unsub_token_parse(ctx->key, rcpt->address, &tok) == 0) {
        feedback_unsub_emit(req, rcpt, &tok, "the address's token", out);
        track_token_free(&tok);
    } else {
        feedback_unparsed(req, rcpt, "unsubscribe",
                          "the token is not ours (forged, altered, or "
                          "signed with another key)",
                          out);
    }
    vstr_free(mac);
}

/* feedback_rcpt - one recipient: parse, record, answer qmgr */
static void feedback_rcpt(FEEDBACK_REQ *req, const DELIVER_RCPT *rcpt)
{
    FEEDBACK_CTX *ctx = req->ctx;
    FEEDBACK_OUTCOME out = {
        .action = DELIVER_ACTION_SENT, .dsn = "2.0.0", .text = vstr_alloc(100)};
    DELIVER_TIMES times;
    DELIVER_LOG entry;
    DELIVER_RESULT result;
    ATTR_LIST *list;

    switch (verp_addr_kind(rcpt->address, ctx->conf.verp_domain,
                           ctx->conf.unsub_domain,
                           ctx->conf.complaint_addresses)) {
    case VERP_ADDR_DSN:
        feedback_dsn(req, rcpt, &out);
        break;
    case VERP_ADDR_ARF:
        feedback_arf(req, rcpt, &out);
        break;
    case VERP_ADDR_UNSUB:
        feedback_unsub(req, rcpt, &out);
        break;
    default:
        /* bounce_verp_domain, unsubscribe_mailto_domain or
           complaint_addresses changed since qmgr routed it: nothing of ours
           any more. */
        feedback_unparsed(req, rcpt, "mail",
                          "not a VERP, unsubscribe or complaint address "
                          "(any more)",
                          &out);
        break;
    }
    entry = (DELIVER_LOG){.qid = req->in->queue_id,
                          .to = rcpt->address,
                          .relay = FEEDBACK_RELAY,
                          .dsn = out.dsn,
                          .status = out.action,
                          .reason = vstr_str(out.text)};
    gettimeofday(&times.now, NULL);
    times.active = deliver_log_usec(req->in->active_usec);
    times.arrival = req->info->arrival;
    times.request = req->t_request;
    times.conn = req->t_request;
    deliver_log(&entry, &times);
    result = (DELIVER_RESULT){.offset = rcpt->offset,
                              .action = out.action,
                              .dsn = out.dsn,
                              .reason = vstr_str(out.text),
                              .relay = FEEDBACK_RELAY};
    list = deliver_result_list(&result);
    if (attr_stream_write(req->stream, list, req->why) < 0)
        msg_warn("%s: RESULT to qmgr: %s", req->in->queue_id,
                 vstr_str(req->why));
    attr_list_free(list);
    vstr_free(out.text);
}

/* feedback_read_content - the content of the queue file on fd, up to
   limit bytes; 0, or -1 with why */
static int feedback_read_content(FEEDBACK_REQ *req, int fd, long long limit)
{
    QFILE_READER *reader;
    QFILE_REC rec;
    int got;

    if (lseek(fd, 0, SEEK_SET) < 0) {
        vstr_sprintf(req->why, "seek: %s", strerror(errno));
        return -1;
    }
    reader = qfile_reader_alloc(fd);
    while ((got = qfile_read_rec(reader, &rec, req->why)) > 0) {
        if (rec.type != QFILE_REC_CONT)
            continue;
        size_t room = (size_t) limit - vstr_len(req->content);

        if (rec.len > room) {
            vstr_ncat(req->content, rec.data, room);
            req->truncated = true;
            break; /* the rest is not looked at */
        }
        vstr_ncat(req->content, rec.data, rec.len);
    }
    qfile_reader_free(reader);
    return got < 0 ? -1 : 0;
}

/* feedback_done - the DONE list */
static void feedback_done(FEEDBACK_REQ *req, int status, const char *reason)
{
    DELIVER_DONE done = {
        .status = status, .site_failed = false, .reason = reason};
    ATTR_LIST *list = deliver_done_list(&done);

    if (attr_stream_write(req->stream, list, req->why) < 0)
        msg_warn("%s: DONE to qmgr: %s", req->in ? req->in->queue_id : "?",
                 vstr_str(req->why));
    attr_list_free(list);
}

/* feedback_serve - one connection from qmgr: one request */
static void feedback_serve(FEEDBACK_CTX *ctx, int fd)
{
    FEEDBACK_REQ req = {.ctx = ctx};
    VSTR *path = vstr_alloc(100);
    ATTR_LIST *hello;
    char *qid_seen = NULL;
    int qfd = -1;

    req.stream = attr_stream_open(fd, DELIVER_LIST_MAX, ctx->conf.timeout_ms);
    req.why = vstr_alloc(100);
    req.content = vstr_alloc(8192);
    hello = deliver_hello_list();
    if (attr_stream_write(req.stream, hello, req.why) < 0) {
        msg_warn("qmgr connection: HELLO: %s", vstr_str(req.why));
        attr_list_free(hello);
        goto out;
    }
    attr_list_free(hello);
    if ((req.in = deliver_agent_read(req.stream, req.why, &qid_seen)) == NULL) {
        msg_warn("%s%sqmgr connection: %s", qid_seen ? qid_seen : "",
                 qid_seen ? ": " : "", vstr_str(req.why));
        goto out;
    }
    gettimeofday(&req.t_request, NULL);
    mail_queue_path(path, ctx->conf.queue_dir, req.in->queue_name,
                    req.in->queue_id);
    if ((qfd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0)
        vstr_sprintf(req.why, "open %s: %s", vstr_str(path), strerror(errno));
    else if ((req.info = qfile_info_read(qfd, req.why)) != NULL &&
             feedback_read_content(&req, qfd, ctx->conf.size_limit) < 0)
        req.info = qfile_info_free(req.info);
    if (qfd >= 0)
        (void) close(qfd);
    if (req.info == NULL) {
        msg_warn("%s: cannot read the queue file: %s", req.in->queue_id,
                 vstr_str(req.why));
        feedback_done(&req, 1, vstr_str(req.why));
        goto out;
    }
    for (size_t i = 0; i < req.in->rcpt_count; i++)
        feedback_rcpt(&req, req.in->rcpts + i);
    feedback_done(&req, 0, NULL);
out:
    if (qid_seen)
        myfree(qid_seen);
    if (req.info)
        qfile_info_free(req.info);
    if (req.in)
        deliver_req_free(req.in);
    vstr_free(req.content);
    vstr_free(req.why);
    attr_stream_close(req.stream);
    vstr_free(path);
}

/* feedback_accept - a request from qmgr: blocking work, so say busy */
static void feedback_accept(MAIL_SERVER *server, int fd, void *arg)
{
    mail_server_busy(server, true);
    feedback_serve(arg, fd);
    mail_server_busy(server, false);
}

/* feedback_pre_loop - read main.cf once, load the key, open the journal */
static void feedback_pre_loop(MAIL_SERVER *server, void *arg)
{
    FEEDBACK_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    FEEDBACK_CONF *fc = &ctx->conf;
    long long timeout = mail_conf_time(conf, "ipc_timeout") * 1000;
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);

    ctx->server = server;
    signal(SIGPIPE, SIG_IGN);
    fc->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    if (*fc->queue_dir == 0)
        msg_fatal("queue_directory is not set");
    fc->events_dir = mystrdup(mail_conf_str(conf, "events_directory"));
    fc->verp_domain = mystrdup(mail_conf_str(conf, "bounce_verp_domain"));
    fc->unsub_domain =
        mystrdup(mail_conf_str(conf, "unsubscribe_mailto_domain"));
    fc->complaint_addresses =
        mystrdup(mail_conf_str(conf, "complaint_addresses"));
    fc->api_keys_file = mystrdup(mail_conf_str(conf, "api_keys_file"));
    fc->complaint_types = mail_conf_list(conf, "complaint_feedback_types");
    fc->size_limit = mail_conf_size(conf, "feedback_size_limit");
    fc->journal_window = feedback_journal_window(conf);
    if (timeout > FEEDBACK_TIMEOUT_MAX_MS)
        timeout = FEEDBACK_TIMEOUT_MAX_MS;
    fc->timeout_ms = (int) timeout;
    /* Without the key no token can be told from a forgery. */
    ctx->key = vstr_alloc(SIGN_TOKEN_KEY_LEN);
    sign_token_key_path(conf, path);
    if (sign_token_key_load(vstr_str(path), ctx->key, why) < 0)
        msg_fatal("feedback key: %s", vstr_str(why));
    ctx->events = events_open(conf, "feedback");
    ctx->rules = bounce_class_rules_conf(conf);
    vstr_free(path);
    vstr_free(why);
}

/* feedback_post_loop - free what pre_loop made (ASan leak reports) */
static void feedback_post_loop(MAIL_SERVER *server, void *arg)
{
    FEEDBACK_CTX *ctx = arg;

    myfree(ctx->conf.queue_dir);
    myfree(ctx->conf.events_dir);
    myfree(ctx->conf.verp_domain);
    myfree(ctx->conf.unsub_domain);
    myfree(ctx->conf.complaint_addresses);
    myfree(ctx->conf.api_keys_file);
    argv_free(ctx->conf.complaint_types);
    if (ctx->key)
        ctx->key = vstr_free(ctx->key);
    if (ctx->events)
        ctx->events = events_close(ctx->events);
    ctx->rules = bounce_class_rules_free(ctx->rules);
    if (ctx->key_tenants)
        ctx->key_tenants = argv_free(ctx->key_tenants);
}

/* main - the feedback service */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = feedback_pre_loop,
        .on_accept = feedback_accept,
        .post_loop = feedback_post_loop,
    };
    static FEEDBACK_CTX ctx;

    return mail_server_main(argc, argv, "feedback", &ops, &ctx);
}
