/*
 * dsn_parse - what a delivery status notification that came back says
 *
 * A pure function over a buffer (the message as received, headers and
 * body) with explicit limits (report_mime.h): an RFC 3464
 * multipart/report with a message/delivery-status part gives every
 * per-recipient block's Final-Recipient, Original-Recipient, Action,
 * Status and Diagnostic-Code (the first one also in the top fields,
 * dsn_parsed_pick chooses another); a message that is no multipart/report
 * (the free-form bounces some providers still send) is searched, in its
 * first text/plain part (else its first text/html part, tags stripped),
 * for the line with an SMTP reply ("550 5.1.1 ...", "550-...",
 * "#5.1.1", "Status: 5.2.2"), best effort: only in mail from the null
 * sender or with a From: of MAILER-DAEMON or postmaster, and never in
 * an automatic reply (Auto-Submitted: auto-replied, an out-of-office
 * answer); a 4.x.x status or words like "delayed" or "will retry" make
 * its Action "delayed" (a warning, no bounce). Anything else is an error
 * with the reason: the caller records the message as unparseable.
 * A part's base64 or quoted-printable Content-Transfer-Encoding is
 * decoded first (into at most as many bytes as the part has).
 */
#ifndef DSN_PARSE_H
#define DSN_PARSE_H

#include "sys_defs.h"

#include "report_mime.h"
#include "vstr.h"

#define DSN_PARSE_REPLY_MAX 500 /* longest reply text kept (bytes) */
#define DSN_PARSE_LINES_MAX 20000 /* lines of a free-form text searched */
#define DSN_PARSE_BLOCKS_MAX 200 /* recipient blocks kept */

/* One per-recipient block of a delivery-status part. */
typedef struct DSN_PARSED_RCPT {
    VSTR *final_rcpt;
    VSTR *orig_rcpt;
    VSTR *action;
    VSTR *status;
    VSTR *reply;
} DSN_PARSED_RCPT;

typedef enum DSN_PARSE_FORM {
    DSN_PARSE_RFC3464 = 1, /* multipart/report; delivery-status */
    DSN_PARSE_FREEFORM = 2, /* a reply found in plain text */
} DSN_PARSE_FORM;

typedef struct DSN_PARSED {
    DSN_PARSE_FORM form;
    VSTR *final_rcpt; /* the address (the "rfc822;" type removed), or "" */
    VSTR *orig_rcpt; /* likewise */
    VSTR *action; /* lower case: failed, delayed, delivered, relayed,
                     expanded; "failed" or "delayed" for a free-form
                     text */
    VSTR *status; /* X.Y.Z, class 2, 4 or 5 */
    VSTR *reply; /* Diagnostic-Code without its type, or the free-form
                    line from its reply code on; may be "" */
    DSN_PARSED_RCPT *rcpts; /* RFC 3464: every valid recipient block, in
                               order (the top fields are a copy of one) */
    int rcpt_count;
    int rcpt_cap;
} DSN_PARSED;

/* dsn_parsed_alloc - an empty result */
extern DSN_PARSED *dsn_parsed_alloc(void);
/* dsn_parsed_free - release it; returns NULL */
extern DSN_PARSED *dsn_parsed_free(DSN_PARSED *dsn);

/* dsn_parse - parse the DSN in buf[0..len) into out: 0, or -1 with why
   (a limit reached, no delivery-status part or recipient block, no reply
   in a free-form text, no valid status) */
extern int dsn_parse(const char *buf, size_t len,
                     const REPORT_MIME_LIMITS *limits, DSN_PARSED *out,
                     VSTR *why);

/* dsn_parse_mail - dsn_parse of mail from the envelope sender (""
   the null sender; dsn_parse is this with ""): a free-form text is read
   only from the null sender or a mailer daemon (see above) */
extern int dsn_parse_mail(const char *buf, size_t len,
                          const REPORT_MIME_LIMITS *limits, const char *sender,
                          DSN_PARSED *out, VSTR *why);

/* dsn_parsed_pick - make the top fields those of the recipient block
   whose Final-Recipient or Original-Recipient is rcpt or orig_rcpt
   (ignoring case; either may be NULL), else of the first block with
   Action failed, else of the first block; true when one matched */
extern bool dsn_parsed_pick(DSN_PARSED *dsn, const char *rcpt,
                            const char *orig_rcpt);

/* dsn_parse_status_ok - is text an enhanced status code X.Y.Z (X 2, 4 or
   5; Y and Z one to three digits) and nothing else? */
extern bool dsn_parse_status_ok(const char *text);

#endif
