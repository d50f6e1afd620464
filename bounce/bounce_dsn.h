/*
 * bounce_dsn - compose a delivery status notification (RFC 3464, 3462)
 *
 * Pure text work, no I/O: given the original message's envelope facts,
 * the log records to report and the original content (whole, or its
 * headers), build one multipart/report; report-type=delivery-status
 * message with LF line ends (cleanup's content convention):
 *
 *   part 1  text/plain               for people: each recipient, its reason
 *   part 2  message/delivery-status  Reporting-MTA, Arrival-Date, ...; then
 *                                    per recipient Final-Recipient, Action,
 *                                    Status, Remote-MTA, Diagnostic-Code ...
 *   part 3  message/rfc822           the whole original, or
 *           text/rfc822-headers      its headers only
 *
 * Text that comes from outside (reasons, server replies) is folded to one
 * line and its control and 8-bit bytes replaced, so it cannot forge a
 * field or make a 7-bit notice 8-bit.
 */
#ifndef BOUNCE_DSN_H
#define BOUNCE_DSN_H

#include "sys_defs.h"

#include <time.h>

#include "dsn_log.h"
#include "vstr.h"

typedef enum BOUNCE_DSN_KIND {
    BOUNCE_DSN_FAILURE, /* some recipients failed */
    BOUNCE_DSN_DELAY, /* a delay warning */
    BOUNCE_DSN_SUCCESS, /* only NOTIFY=SUCCESS deliveries */
} BOUNCE_DSN_KIND;

typedef struct BOUNCE_DSN {
    BOUNCE_DSN_KIND kind;
    const char *myhostname; /* Reporting-MTA, From: */
    const char *queue_id; /* the original's */
    const char *dsn_queue_id; /* the notice's, for Message-ID */
    const char *orig_sender; /* the original's envelope sender */
    const char *to; /* who gets the notice */
    bool postmaster_copy; /* to 2bounce_notice_recipient */
    const char *envid; /* DSN ENVID= or NULL */
    time_t arrival;
    time_t now;
    time_t retry_until; /* delay: when the queue gives up */
    const char *boundary; /* MIME boundary, unique */
    const DSN_LOG_REC *const *rcpts; /* what to report, in order */
    size_t rcpt_count;
    const char *content; /* original: whole or headers */
    size_t content_len;
    bool content_full; /* content is the whole message */
    bool body_omitted_8bit; /* headers only: the body is 8-bit */
} BOUNCE_DSN;

/* bounce_dsn_notify_has - does a NOTIFY= list hold keyword (any case)? */
extern bool bounce_dsn_notify_has(const char *notify, const char *keyword);
/* bounce_dsn_wanted - does the sender want to hear of rec in a notice of
   bounce_kind (BOUNCE_KIND_BOUNCE or BOUNCE_KIND_DELAY)? */
extern bool bounce_dsn_wanted(const char *bounce_kind, const DSN_LOG_REC *rec);
/* bounce_dsn_header_len - bytes of content's header block, the empty line
   that ends it included (len when there is no empty line) */
extern size_t bounce_dsn_header_len(const char *content, size_t len);
/* bounce_dsn_has_8bit - any byte over 0x7f? */
extern bool bounce_dsn_has_8bit(const char *data, size_t len);
/* bounce_dsn_date - an RFC 5322 date of when into buf */
extern void bounce_dsn_date(char *buf, size_t len, time_t when);
/* bounce_dsn_subject - the Subject: of a notice */
extern const char *bounce_dsn_subject(const BOUNCE_DSN *dsn);
/* bounce_dsn_compose - the whole notice into out (replacing it) */
extern void bounce_dsn_compose(VSTR *out, const BOUNCE_DSN *dsn);

#endif
