/*
 * deliver_proto - the protocol between qmgr and a delivery agent
 *
 * qmgr hands one delivery (one message, one next hop, up to
 * default_destination_recipient_limit recipients) to an agent by connecting
 * to the UNIX socket queue_directory/private/TRANSPORT (smtp, local).
 * One connection carries one request, unless the agent's HELLO says
 * reuse=1: then, after DONE, the agent reads the next DELIVER on the same
 * connection (no HELLO again), and either side may close it while it is
 * idle (qmgr sends a request the agent closed unanswered again over a new
 * connection: qmgr/qmgr_deliver.c).
 * Attribute lists (global/attr.h), in order:
 *
 *   agent -> qmgr    HELLO    (deliver_hello_spec), at once on accept
 *   qmgr -> agent    HELLO    first, before DELIVER (it need not wait for
 *                             the agent's)
 *   qmgr -> agent    DELIVER  (deliver_request_spec): the message and the
 *                             next hop; rcpt_count recipients follow
 *   qmgr -> agent    RCPT     (deliver_rcpt_spec), rcpt_count times
 *   agent -> qmgr    RESULT   (deliver_result_spec), once per recipient, in
 *                             any order, as soon as each is known
 *   agent -> qmgr    DONE     (deliver_done_spec): the request is finished
 *
 * HELLO names the protocol and its version; each side checks the other's
 * before anything else and, on a mismatch, logs both and gives up on the
 * connection (qmgr defers the recipients: nothing is lost).
 *
 * The agent opens queue_directory/queue_name/queue_id read-only for the
 * envelope attributes and the content; it never writes the queue file.
 * qmgr alone marks recipients done and writes the defer and bounce logs
 * (global/dsn_log.h), so a crash of an agent at any point leaves the queue
 * file as it was: a recipient without a RESULT when the connection ends is
 * deferred by qmgr ("delivery agent died"), and tried again.
 *
 * The agent writes the per-recipient log line itself (global/deliver_log.h,
 * as qmgr does for what it defers itself), in Postfix's format:
 *   QID: to=<rcpt>, relay=host[ip]:port, delay=D, delays=a/b/c/d,
 *   dsn=X.Y.Z, status=sent|deferred|bounced (reason)
 * with a = arrival to active_usec, b = active_usec to the request, c =
 * connection setup (DNS, connect, greeting, EHLO), d = transmission.
 *
 * Actions: "sent" (2xx), "deferred" (4xx, timeouts, DNS trouble: try
 * again later), "bounced" (5xx, null MX, and anything else permanent:
 * return to the sender). With soft_bounce = yes the agent reports
 * "deferred" where it would have said "bounced".
 */
#ifndef DELIVER_PROTO_H
#define DELIVER_PROTO_H

#include "attr.h"

#define DELIVER_LIST_MAX 65536 /* largest list either side sends */

#define DELIVER_PROTO_NAME "deliver" /* HELLO protocol= */
#define DELIVER_PROTO_VERSION                                                  \
    4 /* HELLO version=: bump on any change
                                  (3: source_address, source_helo,
                                  source, source_failed; 4: category,
                                  hard, tls_version, tls_cipher,
                                  tls_level, attempt_usec, conn_usec) */

#define DELIVER_REQ_HELLO "hello"
#define DELIVER_REQ_DELIVER "deliver"
#define DELIVER_REQ_RCPT "rcpt"
#define DELIVER_REQ_RESULT "result"
#define DELIVER_REQ_DONE "done"

#define DELIVER_ACTION_SENT "sent"
#define DELIVER_ACTION_DEFERRED "deferred"
#define DELIVER_ACTION_BOUNCED "bounced"

/* Attribute names: call sites use these, never the strings. */
#define DELIVER_ATTR_REQUEST "request"
#define DELIVER_ATTR_PROTOCOL "protocol"
#define DELIVER_ATTR_VERSION "version"
/* In the agent's HELLO: 1 when it reads another DELIVER on the same
   connection after DONE (qmgr may keep the connection for the next one). */
#define DELIVER_ATTR_REUSE "reuse"
#define DELIVER_ATTR_QUEUE_NAME "queue_name"
#define DELIVER_ATTR_QUEUE_ID "queue_id"
#define DELIVER_ATTR_NEXTHOP "nexthop"
#define DELIVER_ATTR_SENDER "sender"
#define DELIVER_ATTR_ACTIVE_USEC "active_usec"
#define DELIVER_ATTR_RCPT_COUNT "rcpt_count"
#define DELIVER_ATTR_CONN_MESSAGES "conn_messages"
#define DELIVER_ATTR_CONN_GROUP "conn_group"
#define DELIVER_ATTR_CONN_MAX "conn_max"
#define DELIVER_ATTR_OFFSET "offset"
#define DELIVER_ATTR_ADDRESS "address"
#define DELIVER_ATTR_ORCPT "orcpt"
#define DELIVER_ATTR_NOTIFY "notify"
#define DELIVER_ATTR_ACTION "action"
#define DELIVER_ATTR_DSN "dsn"
#define DELIVER_ATTR_REASON "reason"
#define DELIVER_ATTR_RELAY "relay"
#define DELIVER_ATTR_DIAGNOSTIC "diagnostic"
#define DELIVER_ATTR_REMOTE_MTA "remote_mta"
#define DELIVER_ATTR_STATUS "status"
#define DELIVER_ATTR_SITE_FAILED "site_failed"
#define DELIVER_ATTR_SOURCE_ADDRESS "source_address"
#define DELIVER_ATTR_SOURCE_HELO "source_helo"
#define DELIVER_ATTR_SOURCE "source"
#define DELIVER_ATTR_SOURCE_FAILED "source_failed"
#define DELIVER_ATTR_CATEGORY "category"
#define DELIVER_ATTR_HARD "hard"
#define DELIVER_ATTR_TLS_VERSION "tls_version"
#define DELIVER_ATTR_TLS_CIPHER "tls_cipher"
#define DELIVER_ATTR_TLS_LEVEL "tls_level"
#define DELIVER_ATTR_ATTEMPT_USEC "attempt_usec"
#define DELIVER_ATTR_CONN_USEC "conn_usec"

#define DELIVER_RCPT_MAX 100000 /* most recipients in one request */

static const ATTR_SPEC deliver_hello_spec[] = {
    {DELIVER_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {DELIVER_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"deliver\""},
    {DELIVER_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "DELIVER_PROTO_VERSION of the sender"},
    {DELIVER_ATTR_REUSE, ATTR_TYPE_INT, false, false,
     "agent only: 1 when it takes more than one request per connection"},
};

static const ATTR_SPEC deliver_request_spec[] = {
    {DELIVER_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"deliver\""},
    {DELIVER_ATTR_QUEUE_NAME, ATTR_TYPE_STR, true, false,
     "queue of the file: active"},
    {DELIVER_ATTR_QUEUE_ID, ATTR_TYPE_STR, true, false,
     "the message's queue ID"},
    {DELIVER_ATTR_NEXTHOP, ATTR_TYPE_STR, true, false,
     "where to: domain (MX lookup), host or host:port (MX lookup of host), "
     "[host] or [host]:port (no MX lookup; host may be an IP literal)"},
    {DELIVER_ATTR_SENDER, ATTR_TYPE_STR, true, false,
     "envelope sender, \"\" for <>"},
    {DELIVER_ATTR_ACTIVE_USEC, ATTR_TYPE_INT, true, false,
     "when qmgr took the message into active/, microseconds since 1970"},
    {DELIVER_ATTR_RCPT_COUNT, ATTR_TYPE_INT, true, false,
     "RCPT lists that follow"},
    {DELIVER_ATTR_CONN_MESSAGES, ATTR_TYPE_INT, false, false,
     "smtp: messages per connection at most (shaping's "
     "messages_per_connection); absent or 0: no such limit"},
    {DELIVER_ATTR_CONN_GROUP, ATTR_TYPE_STR, false, false,
     "smtp: the deliveries that share conn_max (qmgr's shaping bucket)"},
    {DELIVER_ATTR_CONN_MAX, ATTR_TYPE_INT, false, false,
     "smtp: connections of conn_group open at most, idle cached ones "
     "counted (shaping's max_connections); absent or 0: no such limit"},
    {DELIVER_ATTR_SOURCE_ADDRESS, ATTR_TYPE_STR, false, false,
     "smtp: the local IP address to bind each connection to (qmgr's choice "
     "within the message's source pool); absent: smtp_bind_address"},
    {DELIVER_ATTR_SOURCE_HELO, ATTR_TYPE_STR, false, false,
     "smtp: the EHLO name of that source; absent or \"\": smtp_helo_name"},
};

static const ATTR_SPEC deliver_rcpt_spec[] = {
    {DELIVER_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"rcpt\""},
    {DELIVER_ATTR_OFFSET, ATTR_TYPE_INT, true, false,
     "file offset of the recipient's R record: its key in RESULT"},
    {DELIVER_ATTR_ADDRESS, ATTR_TYPE_STR, true, false, "recipient address"},
    {DELIVER_ATTR_ORCPT, ATTR_TYPE_STR, false, false,
     "DSN ORCPT= (type;xtext)"},
    {DELIVER_ATTR_NOTIFY, ATTR_TYPE_STR, false, false, "DSN NOTIFY= list"},
};

static const ATTR_SPEC deliver_result_spec[] = {
    {DELIVER_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"result\""},
    {DELIVER_ATTR_OFFSET, ATTR_TYPE_INT, true, false, "the recipient's key"},
    {DELIVER_ATTR_ACTION, ATTR_TYPE_STR, true, false,
     "sent | deferred | bounced"},
    {DELIVER_ATTR_DSN, ATTR_TYPE_STR, true, false,
     "enhanced status code X.Y.Z"},
    {DELIVER_ATTR_REASON, ATTR_TYPE_STR, true, false,
     "for the log and the defer reason: \"250 2.0.0 Ok\", \"host "
     "mx.test[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO "
     "command)\", \"connect to ...: Connection refused\""},
    {DELIVER_ATTR_RELAY, ATTR_TYPE_STR, false, false,
     "host[ip]:port that answered, \"none\" when none did"},
    {DELIVER_ATTR_DIAGNOSTIC, ATTR_TYPE_STR, false, false,
     "DSN Diagnostic-Code when a server replied: \"smtp; 550 5.1.1 ...\""},
    {DELIVER_ATTR_REMOTE_MTA, ATTR_TYPE_STR, false, false,
     "DSN Remote-MTA: \"dns; mx.test\""},
    {DELIVER_ATTR_SOURCE, ATTR_TYPE_STR, false, false,
     "the local address of the connection that gave the result (for the "
     "events), absent: none or unknown"},
    {DELIVER_ATTR_CATEGORY, ATTR_TYPE_STR, false, false,
     "deferred, bounced: the failure's class (global/bounce_class.h), "
     "classified once by the agent for its log line, qmgr's events and "
     "the DSN"},
    {DELIVER_ATTR_HARD, ATTR_TYPE_INT, false, false,
     "with category: 1 the address is bad for good, 0 not"},
    {DELIVER_ATTR_TLS_VERSION, ATTR_TYPE_STR, false, false,
     "the TLS protocol of the connection that gave the result (for the "
     "events: \"TLSv1.3\"); absent: plain text or no connection"},
    {DELIVER_ATTR_TLS_CIPHER, ATTR_TYPE_STR, false, false,
     "its cipher (\"TLS_AES_256_GCM_SHA384\"); with tls_version"},
    {DELIVER_ATTR_TLS_LEVEL, ATTR_TYPE_STR, false, false,
     "the peer's trust: Verified | Trusted | Untrusted | Anonymous (the "
     "first word of the TLS log line); with tls_version"},
    {DELIVER_ATTR_ATTEMPT_USEC, ATTR_TYPE_INT, false, false,
     "microseconds from the agent taking the request to this result (the "
     "delivery attempt's latency, for the events); absent: unknown"},
    {DELIVER_ATTR_CONN_USEC, ATTR_TYPE_INT, false, false,
     "microseconds the agent took to set up the new connection that gave "
     "the result (DNS, connect, greeting, EHLO, TLS), with the first "
     "result over it only; absent: a cached connection, a later result "
     "or no connection"},
};

static const ATTR_SPEC deliver_done_spec[] = {
    {DELIVER_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"done\""},
    {DELIVER_ATTR_STATUS, ATTR_TYPE_INT, true, false,
     "0: every recipient has its RESULT; else the agent failed the request"},
    {DELIVER_ATTR_SITE_FAILED, ATTR_TYPE_INT, true, false,
     "1: the destination itself failed (DNS, no server reachable, 4xx/5xx "
     "greeting or EHLO), so qmgr throttles it; 0: it answered"},
    {DELIVER_ATTR_REASON, ATTR_TYPE_STR, false, false,
     "why, when status or site_failed"},
    {DELIVER_ATTR_SOURCE_FAILED, ATTR_TYPE_INT, false, false,
     "1: the request's source_address could not be bound (EADDRNOTAVAIL): "
     "qmgr leaves that source out for smtp_source_retry_time and sends "
     "the recipients without a RESULT from another source; absent: 0"},
};

/*
 * The codec: each list as a C struct, filled from a list by a strict
 * reader (*_take: the list passes attr_list_check against its table, is
 * the request it should be, and its values make sense: a known queue, a
 * valid queue ID, a known action) and turned back into a list by *_list.
 * Readers return 0, or -1 with the reason in why.
 */
typedef struct DELIVER_RCPT {
    long long offset; /* key of the RESULT */
    char *address;
    char *orcpt; /* "" when absent */
    char *notify; /* "" when absent */
} DELIVER_RCPT;

typedef struct DELIVER_REQ {
    char *queue_name; /* a known queue */
    char *queue_id; /* qid_valid() */
    char *nexthop;
    char *sender; /* "" for <> */
    long long active_usec;
    size_t rcpt_want; /* rcpt_count of DELIVER */
    long long conn_messages; /* per connection at most, 0: no limit */
    char *conn_group; /* NULL: none (writer: NULL or "" for none) */
    long long conn_max; /* open connections of conn_group, 0: no limit */
    char *source_address; /* NULL: none (writer: NULL or "" for none) */
    char *source_helo; /* NULL: none (writer: NULL or "" for none) */
    size_t rcpt_count; /* RCPT lists taken so far */
    DELIVER_RCPT *rcpts; /* rcpt_want of them */
} DELIVER_REQ;

/* Strings borrowed from the list taken (or lent by the caller to *_list). */
typedef struct DELIVER_RESULT {
    long long offset;
    const char *action; /* DELIVER_ACTION_* */
    const char *dsn;
    const char *reason;
    const char *relay; /* NULL: "none" */
    const char *diagnostic; /* NULL when none */
    const char *remote_mta; /* NULL when none */
    const char *source; /* NULL when none */
    const char *category; /* NULL when none (sent, or an older agent) */
    bool hard; /* with category */
    const char *tls_version; /* NULL: plain text (then no cipher, level) */
    const char *tls_cipher;
    const char *tls_level; /* Verified | Trusted | Untrusted | Anonymous */
    long long attempt_usec; /* reader: -1 absent; writer: sent when > 0 */
    long long conn_usec; /* the same; absent: no new connection */
} DELIVER_RESULT;

typedef struct DELIVER_DONE {
    int status; /* 0: every recipient answered, 1 not */
    bool site_failed;
    const char *reason; /* NULL when none */
    bool source_failed; /* the source could not be bound */
} DELIVER_DONE;

/* deliver_hello_take - the peer's HELLO: -1 with a reason naming both
   sides' protocol and version when it is not ours */
extern int deliver_hello_take(const ATTR_LIST *list, VSTR *why);
/* deliver_hello_list - our HELLO */
extern ATTR_LIST *deliver_hello_list(void);

/* deliver_req_take - a DELIVER list into a new request (no recipients
   yet); NULL with the reason in why */
extern DELIVER_REQ *deliver_req_take(const ATTR_LIST *list, VSTR *why);
/* deliver_rcpt_take - one RCPT list into req's next recipient */
extern int deliver_rcpt_take(DELIVER_REQ *req, const ATTR_LIST *list,
                             VSTR *why);
/* deliver_req_complete - has every announced RCPT come? */
extern bool deliver_req_complete(const DELIVER_REQ *req);
/* deliver_req_free - release a request; NULL */
extern DELIVER_REQ *deliver_req_free(DELIVER_REQ *req);
/* deliver_req_list - the DELIVER list of req (rcpt_want recipients) */
extern ATTR_LIST *deliver_req_list(const DELIVER_REQ *req);
/* deliver_rcpt_list - the RCPT list of one recipient */
extern ATTR_LIST *deliver_rcpt_list(const DELIVER_RCPT *rcpt);

/* deliver_result_take - a RESULT list; strings borrowed from list */
extern int deliver_result_take(const ATTR_LIST *list, DELIVER_RESULT *result,
                               VSTR *why);
extern ATTR_LIST *deliver_result_list(const DELIVER_RESULT *result);
/* deliver_done_take - a DONE list; the reason borrowed from list */
extern int deliver_done_take(const ATTR_LIST *list, DELIVER_DONE *done,
                             VSTR *why);
extern ATTR_LIST *deliver_done_list(const DELIVER_DONE *done);

/* deliver_action_valid - one of the DELIVER_ACTION_* words? */
extern bool deliver_action_valid(const char *action);

#endif
