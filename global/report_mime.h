/*
 * report_mime - a bounded walk over a MIME message held in a buffer, for
 * the parsers of reports sent back to us (dsn_parse, arf_parse)
 *
 * Pure functions over (buf, len): nothing is allocated that outlives a
 * call but what the caller passes in. The walk stops at explicit limits
 * (bytes looked at, nesting depth, parts in all) and says which one it
 * hit, so a MIME bomb costs a bounded amount of work. Bodies are not
 * decoded (a report's machine-readable parts are 7bit text, RFC 3464 and
 * RFC 5965 say so); lines may end in CRLF or LF.
 */
#ifndef REPORT_MIME_H
#define REPORT_MIME_H

#include "sys_defs.h"

#include "vstr.h"

typedef struct REPORT_MIME_LIMITS {
    size_t max_bytes; /* bytes of the buffer looked at */
    int max_depth; /* multipart nesting */
    int max_parts; /* parts in all, every level */
} REPORT_MIME_LIMITS;

#define REPORT_MIME_DEF_DEPTH 8
#define REPORT_MIME_DEF_PARTS 64
#define REPORT_MIME_UNTYPED "-" /* a multipart/report without report-type */
#define REPORT_MIME_VALUE_MAX 2000 /* longest header value kept (bytes) */

/* One leaf (or message/rfc822) part the walk found. */
typedef struct REPORT_MIME_PART {
    const char *type; /* content type, lower case, no parameters */
    const char *head; /* its header block */
    size_t head_len;
    const char *body; /* its body (not decoded) */
    size_t body_len;
    int depth; /* 0: the message itself */
    int index; /* 1-based position among its siblings (0: top) */
    const char *report_type; /* the enclosing multipart/report's
                                report-type, lower case,
                                REPORT_MIME_UNTYPED when it has none,
                                "" when the part is no report's */
} REPORT_MIME_PART;

/* A callback sees each part in order; non-zero stops the walk. */
typedef int (*REPORT_MIME_FN)(void *context, const REPORT_MIME_PART *part);

/* report_mime_walk - call fn for each non-multipart part of the message in
   buf[0..len) (message/rfc822 parts are passed whole, not entered); 0
   when the walk ended (by itself or by fn), -1 with why when a limit was
   reached or the structure is broken (a multipart without a boundary) */
extern int report_mime_walk(const char *buf, size_t len,
                            const REPORT_MIME_LIMITS *limits, REPORT_MIME_FN fn,
                            void *context, VSTR *why);

/* report_mime_split - the header block and body of buf[0..len): *head_len
   (without the blank line) and *body_off (after it; len when there is no
   blank line) */
extern void report_mime_split(const char *buf, size_t len, size_t *head_len,
                              size_t *body_off);

/* report_mime_header - the first header name: in head[0..len), unfolded,
   white space trimmed, at most REPORT_MIME_VALUE_MAX bytes, into value;
   true when found */
extern bool report_mime_header(const char *head, size_t len, const char *name,
                               VSTR *value);

/* report_mime_param - the parameter name of a header value (Content-Type's
   boundary=, report-type=), quotes removed, into out; true when found */
extern bool report_mime_param(const char *value, const char *name, VSTR *out);

/* report_mime_typed - a "type; value" field (Final-Recipient: rfc822;
   a@b.test, Diagnostic-Code: smtp; 550 ...): the value after the first
   ';', trimmed, into out (the whole field when there is no ';') */
extern void report_mime_typed(const char *field, VSTR *out);

/* report_mime_addr - the address in text: inside the first <...>, else
   the first word with an '@' (quotes and a trailing comma or period
   removed), into out; true when found */
extern bool report_mime_addr(const char *text, size_t len, VSTR *out);

#endif
