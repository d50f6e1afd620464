/*
 * arf_parse - what an abuse feedback report (ARF, RFC 5965) says
 *
 * A pure function over a buffer (the report as received) with explicit
 * limits (report_mime.h). The report must be a multipart/report with
 * report-type=feedback-report whose message/feedback-report part has a
 * Feedback-Type; its third part, the original message (message/rfc822)
 * or its header (text/rfc822-headers), gives the Return-Path, From, To
 * and Message-ID of the message complained about. A report with no
 * original message is an error: nothing would tie it to a message of
 * ours (the caller records it as unparseable).
 */
#ifndef ARF_PARSE_H
#define ARF_PARSE_H

#include "sys_defs.h"

#include "report_mime.h"
#include "vstr.h"

typedef struct ARF_PARSED {
    VSTR *feedback_type; /* lower case: abuse, fraud, virus, other, ... */
    VSTR *user_agent;
    VSTR *version;
    VSTR *orig_mail_from; /* the address, <> removed, or "" */
    VSTR *orig_rcpt_to; /* likewise */
    VSTR *arrival_date;
    VSTR *source_ip;
    VSTR *reported_domain;
    /* From the original message: */
    VSTR *return_path; /* the address, <> removed, or "" */
    VSTR *from;
    VSTR *to;
    VSTR *message_id;
} ARF_PARSED;

/* arf_parsed_alloc - an empty result */
extern ARF_PARSED *arf_parsed_alloc(void);
/* arf_parsed_free - release it; returns NULL */
extern ARF_PARSED *arf_parsed_free(ARF_PARSED *arf);

/* arf_parse - parse the report in buf[0..len) into out: 0, or -1 with why
   (a limit reached, not a feedback report, no Feedback-Type, no original
   message) */
extern int arf_parse(const char *buf, size_t len,
                     const REPORT_MIME_LIMITS *limits, ARF_PARSED *out,
                     VSTR *why);

#endif
