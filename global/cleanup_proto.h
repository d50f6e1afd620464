/*
 * cleanup_proto - the protocol between a message source and cleanup
 *
 * smtpd, pickup and later the HTTP API hand each message to cleanup over
 * the UNIX socket queue_directory/private/cleanup, as attribute lists
 * (global/attr.h). One connection carries one or more messages, in order:
 *
 *   cleanup -> client   HELLO    (cleanup_hello_spec), at once on accept
 *   client -> cleanup   HELLO    first, before BEGIN (it need not wait for
 *                                cleanup's)
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
 * A status is 0 for success, else an SMTP reply code (400..599: 451, 452,
 * 550, 552, 554) with the enhanced code and text in "reason" ("4.3.0 queue
 * file write error"). Any protocol violation makes cleanup drop the connection
 * and remove the partial file: nothing half-written is ever visible.
 *
 * HELLO names the protocol and its version; each side reads the other's
 * before anything else and, on a mismatch, logs both values and gives up
 * on the connection. Nothing is lost: cleanup has queued nothing, and the
 * client fails the hand-over as temporary (smtpd answers 451 4.3.0;
 * pickup keeps the maildrop file; local and bounce report a failure to
 * qmgr, which tries again later).
 *
 * Every list is read and written by the codec below (global/cleanup_proto.c):
 * smtpd and cleanup_client build their lists with the *_list functions,
 * cleanup and both clients read them with the strict *_take functions, and
 * the attribute names appear only as the CLEANUP_ATTR_* constants.
 */
#ifndef CLEANUP_PROTO_H
#define CLEANUP_PROTO_H

#include "attr.h"

#define CLEANUP_SERVICE "cleanup" /* private/cleanup */
#define CLEANUP_CHUNK_MAX 65536
#define CLEANUP_LIST_MAX (CLEANUP_CHUNK_MAX + 8192)
#define CLEANUP_STATUS_MAX 4096 /* a HELLO or STATUS list, as clients read */

#define CLEANUP_PROTO_NAME "cleanup" /* HELLO protocol= */
#define CLEANUP_PROTO_VERSION 1 /* HELLO version=: bump on any change */

/* The "request" attribute names the list (STATUS has none). */
#define CLEANUP_REQ_HELLO "hello"
#define CLEANUP_REQ_BEGIN "begin"
#define CLEANUP_REQ_RCPT "rcpt"
#define CLEANUP_REQ_DATA "data"
#define CLEANUP_REQ_END "end"

/* Flags in BEGIN. */
#define CLEANUP_FLAG_LOCAL 0x01 /* local submission: add From: etc. */
#define CLEANUP_FLAG_8BIT 0x02 /* BODY=8BITMIME declared */
#define CLEANUP_FLAG_SMTPUTF8 0x04

/* BEGIN origin= values. */
#define CLEANUP_ORIGIN_SMTP "smtp"
#define CLEANUP_ORIGIN_LOCAL "local"
#define CLEANUP_ORIGIN_API "api" /* the only origin that may name a tenant */

/* Attribute names: call sites use these, never the strings. */
#define CLEANUP_ATTR_REQUEST "request"
#define CLEANUP_ATTR_PROTOCOL "protocol" /* HELLO: "cleanup"; BEGIN: SMTP.. */
#define CLEANUP_ATTR_VERSION "version"
#define CLEANUP_ATTR_FLAGS "flags"
#define CLEANUP_ATTR_SENDER "sender"
#define CLEANUP_ATTR_ORIGIN "origin"
#define CLEANUP_ATTR_CLIENT_NAME "client_name"
#define CLEANUP_ATTR_CLIENT_ADDR "client_addr"
#define CLEANUP_ATTR_HELO_NAME "helo_name"
#define CLEANUP_ATTR_SIZE "size"
#define CLEANUP_ATTR_RET "ret"
#define CLEANUP_ATTR_ENVID "envid"
#define CLEANUP_ATTR_SASL_USERNAME "sasl_username"
#define CLEANUP_ATTR_FULL_NAME "full_name"
#define CLEANUP_ATTR_TENANT "tenant"
#define CLEANUP_ATTR_TAGS "tags"
#define CLEANUP_ATTR_METADATA "metadata"
#define CLEANUP_ATTR_NOT_BEFORE "not_before"
#define CLEANUP_ATTR_ADDRESS "address"
#define CLEANUP_ATTR_ORCPT "orcpt"
#define CLEANUP_ATTR_NOTIFY "notify"
#define CLEANUP_ATTR_DATA "data"
#define CLEANUP_ATTR_ABORT "abort"
#define CLEANUP_ATTR_PREPEND "prepend"
#define CLEANUP_ATTR_HOLD "hold"
#define CLEANUP_ATTR_STATUS "status"
#define CLEANUP_ATTR_REASON "reason"
#define CLEANUP_ATTR_QUEUE_ID "queue_id"
#define CLEANUP_ATTR_SUPPRESSED "suppressed"

static const ATTR_SPEC cleanup_hello_spec[] = {
    {CLEANUP_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {CLEANUP_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"cleanup\""},
    {CLEANUP_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "CLEANUP_PROTO_VERSION of the sender"},
};

static const ATTR_SPEC cleanup_begin_spec[] = {
    {CLEANUP_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"begin\""},
    {CLEANUP_ATTR_FLAGS, ATTR_TYPE_INT, true, false, "CLEANUP_FLAG_* bits"},
    {CLEANUP_ATTR_SENDER, ATTR_TYPE_STR, true, false,
     "envelope sender, \"\" for <>"},
    {CLEANUP_ATTR_ORIGIN, ATTR_TYPE_STR, true, false,
     "smtp | local | api | bounce"},
    {CLEANUP_ATTR_CLIENT_NAME, ATTR_TYPE_STR, false, false, "client host name"},
    {CLEANUP_ATTR_CLIENT_ADDR, ATTR_TYPE_STR, false, false,
     "client IP address"},
    {CLEANUP_ATTR_HELO_NAME, ATTR_TYPE_STR, false, false, "HELO/EHLO argument"},
    {CLEANUP_ATTR_PROTOCOL, ATTR_TYPE_STR, false, false, "SMTP | ESMTP | ..."},
    {CLEANUP_ATTR_SIZE, ATTR_TYPE_INT, false, false, "SIZE= declared, bytes"},
    {CLEANUP_ATTR_RET, ATTR_TYPE_STR, false, false, "DSN RET= FULL | HDRS"},
    {CLEANUP_ATTR_ENVID, ATTR_TYPE_STR, false, false,
     "DSN ENVID= (xtext decoded)"},
    {CLEANUP_ATTR_SASL_USERNAME, ATTR_TYPE_STR, false, false,
     "later: SMTP AUTH"},
    {CLEANUP_ATTR_FULL_NAME, ATTR_TYPE_STR, false, false,
     "sender's full name (sendmail -F): the From: cleanup adds for a local"
     " submission becomes \"Full Name <sender>\""},
    {CLEANUP_ATTR_TENANT, ATTR_TYPE_STR, false, false,
     "api only: the API key's tenant, [A-Za-z0-9._-]{1,64}"},
    {CLEANUP_ATTR_TAGS, ATTR_TYPE_STR, false, false,
     "api only: the request's tags, a compact JSON array of strings"},
    {CLEANUP_ATTR_METADATA, ATTR_TYPE_STR, false, false,
     "api only: the request's metadata, a compact flat JSON object"},
    {CLEANUP_ATTR_NOT_BEFORE, ATTR_TYPE_INT, false, false,
     "api only: send_at, the Unix time before which nothing is delivered"},
};

static const ATTR_SPEC cleanup_rcpt_spec[] = {
    {CLEANUP_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"rcpt\""},
    {CLEANUP_ATTR_ADDRESS, ATTR_TYPE_STR, true, false, "recipient address"},
    {CLEANUP_ATTR_ORCPT, ATTR_TYPE_STR, false, false,
     "DSN ORCPT= (type;xtext)"},
    {CLEANUP_ATTR_NOTIFY, ATTR_TYPE_STR, false, false, "DSN NOTIFY= list"},
};

static const ATTR_SPEC cleanup_data_spec[] = {
    {CLEANUP_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"data\""},
    {CLEANUP_ATTR_DATA, ATTR_TYPE_DATA, true, false, "a chunk of the content"},
};

static const ATTR_SPEC cleanup_end_spec[] = {
    {CLEANUP_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"end\""},
    {CLEANUP_ATTR_ABORT, ATTR_TYPE_INT, true, false, "1: discard the message"},
    {CLEANUP_ATTR_PREPEND, ATTR_TYPE_STR, false, false,
     "header lines (LF) put before the content at commit: smtpd's "
     "Authentication-Results:, known only after the body"},
    {CLEANUP_ATTR_HOLD, ATTR_TYPE_STR, false, false,
     "why the message goes into hold/ instead of incoming/ (a milter's "
     "quarantine): printable ASCII, at most CLEANUP_HOLD_MAX bytes"},
};

static const ATTR_SPEC cleanup_status_spec[] = {
    {CLEANUP_ATTR_STATUS, ATTR_TYPE_INT, true, false,
     "0, or an SMTP reply code"},
    {CLEANUP_ATTR_REASON, ATTR_TYPE_STR, false, false,
     "enhanced code and text"},
    {CLEANUP_ATTR_QUEUE_ID, ATTR_TYPE_STR, false, false,
     "the message's queue ID"},
    {CLEANUP_ATTR_SUPPRESSED, ATTR_TYPE_STR, false, false,
     "the recipients dropped as suppressed (global/suppress.h), a compact"
     " JSON object {\"count\": N, \"list\": [{\"address\", \"reason\"}]}"
     " whose list stops short of CLEANUP_SUPPRESSED_MAX bytes"},
};

/*
 * The codec: each list as a C struct, filled from a list by a strict
 * reader (*_take: the list passes attr_list_check against its table, is
 * the request it should be, and its values make sense) and turned back
 * into a list by *_list. Strings are borrowed from the list taken (or lent
 * by the caller to *_list). Readers return 0, or -1 with the reason in why.
 */

/* BEGIN: the envelope (strings NULL when absent). */
typedef struct CLEANUP_BEGIN {
    long long flags; /* CLEANUP_FLAG_* */
    const char *sender; /* "" for <> */
    const char *origin; /* CLEANUP_ORIGIN_* or "api", "bounce" */
    const char *client_name;
    const char *client_addr;
    const char *helo_name;
    const char *protocol; /* SMTP | ESMTP */
    long long size; /* SIZE=, -1 when absent */
    const char *ret;
    const char *envid;
    const char *sasl_username;
    const char *full_name; /* sendmail -F, for the From: cleanup adds */
    /* The api's (cleanup refuses them from any other origin): */
    const char *tenant; /* the API key's tenant */
    const char *tags; /* JSON array text */
    const char *metadata; /* JSON object text */
    long long not_before; /* send_at, Unix seconds; <= 0: none */
} CLEANUP_BEGIN;

typedef struct CLEANUP_RCPT {
    const char *address;
    const char *orcpt; /* NULL or "": none */
    const char *notify; /* NULL or "": none */
} CLEANUP_RCPT;

typedef struct CLEANUP_END {
    bool abort; /* discard the message */
    const char *prepend; /* NULL, or header lines to put first (LF ends,
                            printable ASCII and TAB, at most
                            CLEANUP_PREPEND_MAX bytes) */
    const char *hold; /* NULL, or why the message is committed into hold/
                         (printable ASCII, at most CLEANUP_HOLD_MAX) */
} CLEANUP_END;
#define CLEANUP_PREPEND_MAX 8192
#define CLEANUP_TENANT_MAX 64 /* BEGIN tenant= */
#define CLEANUP_TAGS_MAX 2048 /* BEGIN tags=, bytes */
#define CLEANUP_METADATA_MAX 8192 /* BEGIN metadata=, bytes */
#define CLEANUP_HOLD_MAX 1000

typedef struct CLEANUP_STATUS {
    int status; /* 0, or an SMTP reply code 400..599 */
    const char *reason; /* NULL when none */
    const char *queue_id; /* NULL when none; else qid_valid() */
    const char *suppressed; /* NULL when none: JSON object text */
} CLEANUP_STATUS;
#define CLEANUP_SUPPRESSED_MAX 3000 /* bytes of STATUS suppressed= */

/* cleanup_hello_take - the peer's HELLO: -1 with a reason naming both
   sides' protocol and version when it is not ours */
extern int cleanup_hello_take(const ATTR_LIST *list, VSTR *why);
/* cleanup_hello_list - our HELLO */
extern ATTR_LIST *cleanup_hello_list(void);

/* cleanup_list_request - the request= of a list, NULL when none */
extern const char *cleanup_list_request(const ATTR_LIST *list);

/* cleanup_begin_take - a BEGIN list; size is -1 when absent */
extern int cleanup_begin_take(const ATTR_LIST *list, CLEANUP_BEGIN *begin,
                              VSTR *why);
/* cleanup_begin_list - the BEGIN list of begin (NULL or empty optional
   strings and a negative size are left out) */
extern ATTR_LIST *cleanup_begin_list(const CLEANUP_BEGIN *begin);

extern int cleanup_rcpt_take(const ATTR_LIST *list, CLEANUP_RCPT *rcpt,
                             VSTR *why);
extern ATTR_LIST *cleanup_rcpt_list(const CLEANUP_RCPT *rcpt);

/* cleanup_data_take - a DATA chunk of at most CLEANUP_CHUNK_MAX bytes */
extern int cleanup_data_take(const ATTR_LIST *list, const char **data,
                             size_t *len, VSTR *why);
extern ATTR_LIST *cleanup_data_list(const char *data, size_t len);

extern int cleanup_end_take(const ATTR_LIST *list, CLEANUP_END *end, VSTR *why);
extern ATTR_LIST *cleanup_end_list(const CLEANUP_END *end);

/* cleanup_status_take - a STATUS list: a status of 0 or 400..599, a valid
   queue ID when there is one */
extern int cleanup_status_take(const ATTR_LIST *list, CLEANUP_STATUS *status,
                               VSTR *why);
/* cleanup_status_list - the STATUS list (the reason only with a failure) */
extern ATTR_LIST *cleanup_status_list(const CLEANUP_STATUS *status);

#endif
