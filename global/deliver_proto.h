/*
 * deliver_proto - the protocol between qmgr and a delivery agent
 *
 * qmgr hands one delivery (one message, one next hop, up to
 * default_destination_recipient_limit recipients) to an agent by connecting
 * to the UNIX socket queue_directory/private/TRANSPORT (smtp, later local).
 * One connection carries one request; either side closes it afterwards.
 * Attribute lists (global/attr.h), in order:
 *
 *   qmgr -> agent    DELIVER  (deliver_request_spec): the message and the
 *                             next hop; rcpt_count recipients follow
 *   qmgr -> agent    RCPT     (deliver_rcpt_spec), rcpt_count times
 *   agent -> qmgr    RESULT   (deliver_result_spec), once per recipient, in
 *                             any order, as soon as each is known
 *   agent -> qmgr    DONE     (deliver_done_spec): the request is finished
 *
 * The agent opens queue_directory/queue_name/queue_id read-only for the
 * envelope attributes and the content; it never writes the queue file.
 * qmgr alone marks recipients done and writes the defer and bounce logs
 * (global/dsn_log.h), so a crash of an agent at any point leaves the queue
 * file as it was: a recipient without a RESULT when the connection ends is
 * deferred by qmgr ("delivery agent died"), and tried again.
 *
 * The agent writes the per-recipient log line itself, in Postfix's format:
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

#define DELIVER_LIST_MAX 65536          /* largest list either side sends */

#define DELIVER_REQ_DELIVER "deliver"
#define DELIVER_REQ_RCPT "rcpt"
#define DELIVER_REQ_RESULT "result"
#define DELIVER_REQ_DONE "done"

#define DELIVER_ACTION_SENT "sent"
#define DELIVER_ACTION_DEFERRED "deferred"
#define DELIVER_ACTION_BOUNCED "bounced"

static const ATTR_SPEC deliver_request_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"deliver\""},
    {"queue_name", ATTR_TYPE_STR, true, false, "queue of the file: active"},
    {"queue_id", ATTR_TYPE_STR, true, false, "the message's queue ID"},
    {"nexthop", ATTR_TYPE_STR, true, false,
     "where to: domain (MX lookup), host or host:port (MX lookup of host), "
     "[host] or [host]:port (no MX lookup; host may be an IP literal)"},
    {"sender", ATTR_TYPE_STR, true, false, "envelope sender, \"\" for <>"},
    {"active_usec", ATTR_TYPE_INT, true, false,
     "when qmgr took the message into active/, microseconds since 1970"},
    {"rcpt_count", ATTR_TYPE_INT, true, false, "RCPT lists that follow"},
};

static const ATTR_SPEC deliver_rcpt_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"rcpt\""},
    {"offset", ATTR_TYPE_INT, true, false,
     "file offset of the recipient's R record: its key in RESULT"},
    {"address", ATTR_TYPE_STR, true, false, "recipient address"},
    {"orcpt", ATTR_TYPE_STR, false, false, "DSN ORCPT= (type;xtext)"},
    {"notify", ATTR_TYPE_STR, false, false, "DSN NOTIFY= list"},
};

static const ATTR_SPEC deliver_result_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"result\""},
    {"offset", ATTR_TYPE_INT, true, false, "the recipient's key"},
    {"action", ATTR_TYPE_STR, true, false, "sent | deferred | bounced"},
    {"dsn", ATTR_TYPE_STR, true, false, "enhanced status code X.Y.Z"},
    {"reason", ATTR_TYPE_STR, true, false,
     "for the log and the defer reason: \"250 2.0.0 Ok\", \"host "
     "mx.test[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO "
     "command)\", \"connect to ...: Connection refused\""},
    {"relay", ATTR_TYPE_STR, false, false,
     "host[ip]:port that answered, \"none\" when none did"},
    {"diagnostic", ATTR_TYPE_STR, false, false,
     "DSN Diagnostic-Code when a server replied: \"smtp; 550 5.1.1 ...\""},
    {"remote_mta", ATTR_TYPE_STR, false, false,
     "DSN Remote-MTA: \"dns; mx.test\""},
};

static const ATTR_SPEC deliver_done_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"done\""},
    {"status", ATTR_TYPE_INT, true, false,
     "0: every recipient has its RESULT; else the agent failed the request"},
    {"site_failed", ATTR_TYPE_INT, true, false,
     "1: the destination itself failed (DNS, no server reachable, 4xx/5xx "
     "greeting or EHLO), so qmgr throttles it; 0: it answered"},
    {"reason", ATTR_TYPE_STR, false, false, "why, when status or site_failed"},
};

#endif
