/*
 * qmgr_admin_proto - the protocol between `sluice hold|delete|requeue` and
 * qmgr for messages in active/
 *
 * A message in active/ belongs to qmgr: it may be in delivery right now,
 * and qmgr alone writes its done marks and its defer and bounce logs. So
 * the admin command never renames or removes a file in active/ while qmgr
 * runs; it asks qmgr, which acts at a safe point:
 *
 *   delete   at once: the queue file and its defer and bounce logs are
 *            removed, recipients not yet handed to an agent are dropped,
 *            and the results of deliveries in flight are ignored (nothing
 *            is written for them: the file is never recreated, no DSN).
 *   hold     recipients not yet handed to an agent are withdrawn; when the
 *            deliveries in flight have ended, the file (with the done marks
 *            of what they finished) moves to hold/ instead of deferred/.
 *            When nothing is left to deliver the message completes as
 *            usual (delivered, bounced) and is not held.
 *   requeue  when the deliveries in flight have ended, what is left is due
 *            at once instead of at its next retry_schedule step.
 *
 * Messages in incoming/, deferred/ and hold/ are moved by the admin
 * command itself with rename(2); qmgr may rename the same file at the same
 * moment, and whoever loses gets ENOENT and looks again, so a message is
 * always in exactly one place.
 *
 * Transport: qmgr listens on the UNIX socket
 * queue_directory/private/qmgr-admin (QMGR_ADMIN_SERVICE, mode 0600,
 * made by qmgr itself, not by master). A connection carries any number
 * of requests, each answered before the next is read. Attribute lists
 * (global/attr.h):
 *
 *   admin -> qmgr   REQUEST  (qmgr_admin_request_spec)
 *   qmgr -> admin   REPLY    (qmgr_admin_reply_spec)
 *
 * status QMGR_ADMIN_STAT_NOTHERE means "not in active/ (any more)": the
 * message has moved on (to deferred/, or it is gone); the admin command
 * looks for it again. When qmgr is not running at all (master is down)
 * nobody owns active/ and the admin command moves the file itself.
 */
#ifndef QMGR_ADMIN_PROTO_H
#define QMGR_ADMIN_PROTO_H

#include "attr.h"

#define QMGR_ADMIN_SERVICE "qmgr-admin"  /* private/qmgr-admin */
#define QMGR_ADMIN_LIST_MAX 4096        /* largest list either side sends */

#define QMGR_ADMIN_REQ_HOLD "hold"
#define QMGR_ADMIN_REQ_DELETE "delete"
#define QMGR_ADMIN_REQ_REQUEUE "requeue"

#define QMGR_ADMIN_STAT_OK 0            /* done, or will be (hold, requeue) */
#define QMGR_ADMIN_STAT_NOTHERE 1       /* not in active/: look again */
#define QMGR_ADMIN_STAT_FAIL 2          /* could not: see reason */

static const ATTR_SPEC qmgr_admin_request_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "hold | delete | requeue"},
    {"queue_id", ATTR_TYPE_STR, true, false, "the message"},
};

static const ATTR_SPEC qmgr_admin_reply_spec[] = {
    {"status", ATTR_TYPE_INT, true, false, "0 ok, 1 not in active/, 2 failed"},
    {"reason", ATTR_TYPE_STR, false, false, "why it failed"},
};

#endif
