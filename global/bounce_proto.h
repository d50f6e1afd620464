/*
 * bounce_proto - the protocol between qmgr and the bounce daemon
 *
 * qmgr asks bounce to turn a message's logs (global/dsn_log.h) into a DSN
 * (RFC 3461/3464) by connecting to queue_directory/private/bounce; one
 * request per connection:
 *
 *   qmgr -> bounce   NOTIFY  (bounce_request_spec)
 *   bounce -> qmgr   STATUS  (bounce_status_spec), sent only after the DSN
 *                            is committed by cleanup (or when there was
 *                            nothing to send)
 *
 * kind "bounce": the records of bounce/QID. Recipients "failed" are
 * reported when their NOTIFY is empty or holds FAILURE, "delivered" ones
 * when it holds SUCCESS; one DSN carries them all, its Action field per
 * recipient. kind "delay": the latest "delayed" record of each recipient in
 * defer/QID whose NOTIFY is empty or holds DELAY (a delay warning).
 *
 * The DSN goes to the message's sender with the null sender <>. A message
 * whose sender is <> gets no DSN; its failures go as a "double bounce"
 * notice to 2bounce_notice_recipient (when set) with sender
 * double-bounce@$myorigin, and a failure of a message from that sender is
 * only logged. RET=HDRS returns the headers, RET=FULL or none the whole
 * message (headers only when it is larger than bounce_size_limit).
 *
 * qmgr removes bounce/QID only after status 0: a failed request leaves the
 * log for the next try, so no notice is lost or sent twice.
 */
#ifndef BOUNCE_PROTO_H
#define BOUNCE_PROTO_H

#include "attr.h"

#define BOUNCE_SERVICE "bounce"         /* private/bounce */
#define BOUNCE_LIST_MAX 8192

#define BOUNCE_KIND_BOUNCE "bounce"
#define BOUNCE_KIND_DELAY "delay"

static const ATTR_SPEC bounce_request_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"notify\""},
    {"kind", ATTR_TYPE_STR, true, false, "bounce | delay"},
    {"queue_name", ATTR_TYPE_STR, true, false, "where the message is"},
    {"queue_id", ATTR_TYPE_STR, true, false, "the message's queue ID"},
};

static const ATTR_SPEC bounce_status_spec[] = {
    {"status", ATTR_TYPE_INT, true, false,
     "0: the DSN is queued, or there was nothing to send; else failed"},
    {"reason", ATTR_TYPE_STR, false, false, "why, when it failed"},
    {"dsn_queue_id", ATTR_TYPE_STR, false, false,
     "queue ID of the DSN, when one was sent"},
};

#endif
