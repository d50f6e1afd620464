/*
 * arf_parse - what an abuse feedback report (ARF, RFC 5965) says
 *
 * See arf_parse.h. The MIME walk is report_mime's; this module reads the
 * machine-readable part (RFC 5965 section 3.1) and the header of the
 * returned message.
 */
#include "sys_defs.h"

#include "arf_parse.h"
#include "mymalloc.h"

typedef struct ARF_PARSE_SEEN {
    const char *report_body; /* message/feedback-report */
    size_t report_len;
    const char *orig; /* message/rfc822 or text/rfc822-headers */
    size_t orig_len;
    bool feedback_report; /* inside report-type=feedback-report */
} ARF_PARSE_SEEN;

/* arf_parsed_alloc - an empty result */
ARF_PARSED *arf_parsed_alloc(void)
{
    ARF_PARSED *arf = mycalloc(1, sizeof(*arf));
    VSTR **fields[] = {&arf->feedback_type,
                       &arf->user_agent,
                       &arf->version,
                       &arf->orig_mail_from,
                       &arf->orig_rcpt_to,
                       &arf->arrival_date,
                       &arf->source_ip,
                       &arf->reported_domain,
                       &arf->return_path,
                       &arf->from,
                       &arf->to,
                       &arf->message_id};

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(fields); i++)
        *fields[i] = vstr_alloc(40);
    return arf;
}

/* arf_parsed_free - release it */
ARF_PARSED *arf_parsed_free(ARF_PARSED *arf)
{
    if (arf == NULL)
        return NULL;
    VSTR *fields[] = {arf->feedback_type,
                      arf->user_agent,
                      arf->version,
                      arf->orig_mail_from,
                      arf->orig_rcpt_to,
                      arf->arrival_date,
                      arf->source_ip,
                      arf->reported_domain,
                      arf->return_path,
                      arf->from,
                      arf->to,
                      arf->message_id};

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(fields); i++)
        vstr_free(fields[i]);
    myfree(arf);
    return NULL;
}

/* arf_parse_seen - the walk's callback: keep the parts we read */
static int arf_parse_seen(void *context, const REPORT_MIME_PART *part)
{
    ARF_PARSE_SEEN *seen = context;

    if (part->depth != 1)
        return 0; /* RFC 5965: the report's own parts only */
    if (strcmp(part->report_type, "feedback-report") == 0)
        seen->feedback_report = true;
    if (seen->report_body == NULL &&
        strcmp(part->type, "message/feedback-report") == 0) {
        seen->report_body = part->body;
        seen->report_len = part->body_len;
    } else if (seen->orig == NULL &&
               (strcmp(part->type, "message/rfc822") == 0 ||
                strcmp(part->type, "text/rfc822-headers") == 0 ||
                strcmp(part->type, "message/global") == 0 ||
                strcmp(part->type, "message/global-headers") == 0)) {
        seen->orig = part->body;
        seen->orig_len = part->body_len;
    }
    return 0;
}

/* arf_parse_addr_field - an address field: the address itself */
static void arf_parse_addr_field(const char *head, size_t len, const char *name,
                                 VSTR *value, VSTR *out)
{
    if (!report_mime_header(head, len, name, value))
        return;
    if (strcmp(vstr_str(value), "<>") == 0 ||
        !report_mime_addr(vstr_str(value), vstr_len(value), out))
        vstr_reset(out);
}

/* arf_parse - parse the report in buf[0..len) */
int arf_parse(const char *buf, size_t len, const REPORT_MIME_LIMITS *limits,
              ARF_PARSED *out, VSTR *why)
{
    ARF_PARSE_SEEN seen = {0};
    VSTR *value;
    size_t head_len;
    size_t body_off;

    if (len > limits->max_bytes)
        len = limits->max_bytes;
    if (report_mime_walk(buf, len, limits, arf_parse_seen, &seen, why) < 0)
        return -1;
    if (!seen.feedback_report) {
        vstr_cpy(why, "not a multipart/report; report-type=feedback-report");
        return -1;
    }
    if (seen.report_body == NULL) {
        vstr_cpy(why, "no message/feedback-report part");
        return -1;
    }
    value = vstr_alloc(100);
    /* The fields are one header-like block. */
    report_mime_split(seen.report_body, seen.report_len, &head_len, &body_off);
    const char *r = seen.report_body;

    if (report_mime_header(r, head_len, "Feedback-Type", out->feedback_type))
        vstr_lower(out->feedback_type);
    (void) report_mime_header(r, head_len, "User-Agent", out->user_agent);
    (void) report_mime_header(r, head_len, "Version", out->version);
    arf_parse_addr_field(r, head_len, "Original-Mail-From", value,
                         out->orig_mail_from);
    arf_parse_addr_field(r, head_len, "Original-Rcpt-To", value,
                         out->orig_rcpt_to);
    (void) report_mime_header(r, head_len, "Arrival-Date", out->arrival_date);
    if (!report_mime_header(r, head_len, "Source-IP", out->source_ip))
        (void) report_mime_header(r, head_len, "Source-Ip", out->source_ip);
    (void) report_mime_header(r, head_len, "Reported-Domain",
                              out->reported_domain);
    if (vstr_len(out->feedback_type) == 0) {
        vstr_cpy(why, "feedback report without a Feedback-Type field");
        vstr_free(value);
        return -1;
    }
    if (seen.orig == NULL) {
        vstr_cpy(why, "feedback report without the original message");
        vstr_free(value);
        return -1;
    }
    report_mime_split(seen.orig, seen.orig_len, &head_len, &body_off);
    arf_parse_addr_field(seen.orig, head_len, "Return-Path", value,
                         out->return_path);
    arf_parse_addr_field(seen.orig, head_len, "From", value, out->from);
    arf_parse_addr_field(seen.orig, head_len, "To", value, out->to);
    (void) report_mime_header(seen.orig, head_len, "Message-ID",
                              out->message_id);
    vstr_free(value);
    return 0;
}
