/*
 * cleanup_proto - the protocol between a message source and cleanup
 *
 * smtpd, pickup and later the HTTP API hand each message to cleanup over
 * the UNIX socket queue_directory/private/cleanup, as attribute lists
 * (global/attr.h). One connection carries one or more messages, in order:
 *
 *   client -> cleanup   BEGIN    (cleanup_begin_spec)
 *   cleanup -> client   STATUS   (cleanup_status_spec): queue_id assigned,
 *                                or a failure (status != 0)
 *   client -> cleanup   RCPT     (cleanup_rcpt_spec), once per recipient
 *   client -> cleanup   DATA     (cleanup_data_spec), the content in chunks
 *                                of at most CLEANUP_CHUNK_MAX bytes, in
 *                                order; lines end in LF (the client has
 *                                removed the CR of CRLF and undone dot
 *                                stuffing); content is headers, an empty
 *                                line, the body
 *   client -> cleanup   END      (cleanup_end_spec): commit, or abort
 *   cleanup -> client   STATUS   (cleanup_status_spec), sent only after the
 *                                queue file and incoming/ are fsynced (on
 *                                commit) or the partial file removed (abort)
 *
 * A status is 0 for success, else an SMTP reply code (451, 452, 550, 554)
 * with the enhanced code and text in "reason" ("4.3.0 queue file write
 * error"). Any protocol violation makes cleanup drop the connection and
 * remove the partial file: nothing half-written is ever visible.
 */
#ifndef CLEANUP_PROTO_H
#define CLEANUP_PROTO_H

#include "attr.h"

#define CLEANUP_SERVICE "cleanup"       /* private/cleanup */
#define CLEANUP_CHUNK_MAX 65536
#define CLEANUP_LIST_MAX (CLEANUP_CHUNK_MAX + 8192)

/* The "request" attribute names the list. */
#define CLEANUP_REQ_BEGIN "begin"
#define CLEANUP_REQ_RCPT "rcpt"
#define CLEANUP_REQ_DATA "data"
#define CLEANUP_REQ_END "end"

/* Flags in BEGIN. */
#define CLEANUP_FLAG_LOCAL 0x01         /* local submission: add From: etc. */
#define CLEANUP_FLAG_8BIT 0x02          /* BODY=8BITMIME declared */
#define CLEANUP_FLAG_SMTPUTF8 0x04

static const ATTR_SPEC cleanup_begin_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"begin\""},
    {"flags", ATTR_TYPE_INT, true, false, "CLEANUP_FLAG_* bits"},
    {"sender", ATTR_TYPE_STR, true, false, "envelope sender, \"\" for <>"},
    {"origin", ATTR_TYPE_STR, true, false, "smtp | local | api | bounce"},
    {"client_name", ATTR_TYPE_STR, false, false, "client host name"},
    {"client_addr", ATTR_TYPE_STR, false, false, "client IP address"},
    {"helo_name", ATTR_TYPE_STR, false, false, "HELO/EHLO argument"},
    {"protocol", ATTR_TYPE_STR, false, false, "SMTP | ESMTP | ..."},
    {"size", ATTR_TYPE_INT, false, false, "SIZE= declared, bytes"},
    {"ret", ATTR_TYPE_STR, false, false, "DSN RET= FULL | HDRS"},
    {"envid", ATTR_TYPE_STR, false, false, "DSN ENVID= (xtext decoded)"},
    {"sasl_username", ATTR_TYPE_STR, false, false, "later: SMTP AUTH"},
    {"full_name", ATTR_TYPE_STR, false, false,
     "sender's full name (sendmail -F): the From: cleanup adds for a local"
     " submission becomes \"Full Name <sender>\""},
};

static const ATTR_SPEC cleanup_rcpt_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"rcpt\""},
    {"address", ATTR_TYPE_STR, true, false, "recipient address"},
    {"orcpt", ATTR_TYPE_STR, false, false, "DSN ORCPT= (type;xtext)"},
    {"notify", ATTR_TYPE_STR, false, false, "DSN NOTIFY= list"},
};

static const ATTR_SPEC cleanup_data_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"data\""},
    {"data", ATTR_TYPE_DATA, true, false, "a chunk of the content"},
};

static const ATTR_SPEC cleanup_end_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "\"end\""},
    {"abort", ATTR_TYPE_INT, true, false, "1: discard the message"},
};

static const ATTR_SPEC cleanup_status_spec[] = {
    {"status", ATTR_TYPE_INT, true, false, "0, or an SMTP reply code"},
    {"reason", ATTR_TYPE_STR, false, false, "enhanced code and text"},
    {"queue_id", ATTR_TYPE_STR, false, false, "the message's queue ID"},
};

#endif
