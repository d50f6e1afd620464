/*
 * bounce_dsn - compose a delivery status notification (RFC 3464, 3462)
 *
 * The layout is in bounce_dsn.h. The wording of the human part follows
 * Postfix's, so people who know those notices recognise these.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <time.h>

#include "bounce_dsn.h"
#include "bounce_proto.h"
#include "dsn_log.h"
#include "msg.h"
#include "vstr.h"

/* bounce_dsn_notify_has - does a NOTIFY= list hold keyword (any case)? */
bool bounce_dsn_notify_has(const char *notify, const char *keyword)
{
    size_t klen = strlen(keyword);
    const char *cp = notify;

    while (cp != NULL && *cp) {
        const char *end = strchr(cp, ',');
        size_t len = end ? (size_t) (end - cp) : strlen(cp);

        while (len > 0 && isspace((unsigned char) *cp))
            cp++, len--;
        while (len > 0 && isspace((unsigned char) cp[len - 1]))
            len--;
        if (len == klen && strncasecmp(cp, keyword, klen) == 0)
            return true;
        cp = end ? end + 1 : NULL;
    }
    return false;
}

/* bounce_dsn_wanted - does the sender want to hear of rec? */
bool bounce_dsn_wanted(const char *bounce_kind, const DSN_LOG_REC *rec)
{
    const char *notify = rec->notify ? rec->notify : "";

    if (strcmp(bounce_kind, BOUNCE_KIND_DELAY) == 0)
        return strcmp(rec->action, DSN_ACTION_DELAYED) == 0 &&
               (*notify == 0 || bounce_dsn_notify_has(notify, "DELAY"));
    if (strcmp(rec->action, DSN_ACTION_FAILED) == 0)
        return *notify == 0 || bounce_dsn_notify_has(notify, "FAILURE");
    if (strcmp(rec->action, DSN_ACTION_DELIVERED) == 0)
        return bounce_dsn_notify_has(notify, "SUCCESS");
    return false;
}

/* bounce_dsn_header_len - bytes of the header block and its empty line */
size_t bounce_dsn_header_len(const char *content, size_t len)
{
    size_t pos = 0;

    /* A message that starts with an empty line has no headers. */
    if (len > 0 && content[0] == '\n')
        return 1;
    while (pos < len) {
        const char *nl = memchr(content + pos, '\n', len - pos);

        if (nl == NULL)
            return len;
        pos = (size_t) (nl - content) + 1;
        if (pos < len && content[pos] == '\n')
            return pos + 1;
    }
    return len;
}

/* bounce_dsn_has_8bit - any byte over 0x7f? */
bool bounce_dsn_has_8bit(const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) data[i] & 0x80)
            return true;
    return false;
}

/* bounce_dsn_date - an RFC 5322 date of when into buf */
void bounce_dsn_date(char *buf, size_t len, time_t when)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
                                       "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    long offset;
    int n;

    /* Names by hand: strftime's %a and %b follow the locale. */
    if (localtime_r(&when, &tm) == NULL)
        msg_panic("%s: localtime_r failed", __func__);
    offset = tm.tm_gmtoff / 60;
    n = snprintf(buf, len, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 offset < 0 ? '-' : '+', labs(offset) / 60, labs(offset) % 60);
    if (n < 0 || (size_t) n >= len)
        msg_panic("%s: buffer of %zu bytes too small", __func__, len);
}

/* bounce_dsn_subject - the Subject: of a notice */
const char *bounce_dsn_subject(const BOUNCE_DSN *dsn)
{
    switch (dsn->kind) {
    case BOUNCE_DSN_DELAY:
        return "Delayed Mail (still being retried)";
    case BOUNCE_DSN_SUCCESS:
        return "Successful Mail Delivery Report";
    case BOUNCE_DSN_FAILURE:
    default:
        return dsn->postmaster_copy ? "Postmaster Copy: Undelivered Mail"
                                    : "Undelivered Mail Returned to Sender";
    }
}

/* bounce_dsn_clean - append text as one safe line: control characters and
   8-bit bytes become '?', line breaks and tabs a space */
static void bounce_dsn_clean(VSTR *out, const char *text)
{
    bool space = false;

    for (const unsigned char *cp = (const unsigned char *) text; *cp; cp++) {
        if (*cp == '\r' || *cp == '\n' || *cp == '\t' || *cp == ' ') {
            space = true;
            continue;
        }
        if (space && vstr_len(out) > 0)
            vstr_addch(out, ' ');
        space = false;
        vstr_addch(out, (*cp < 0x20 || *cp >= 0x7f) ? '?' : *cp);
    }
}

/* bounce_dsn_field - "Name: value\n", value cleaned; nothing when empty */
static void bounce_dsn_field(VSTR *out, const char *name, const char *value)
{
    VSTR *clean;

    if (value == NULL || *value == 0)
        return;
    clean = vstr_alloc(strlen(value) + 1);
    bounce_dsn_clean(clean, value);
    vstr_sprintf_append(out, "%s: %s\n", name, vstr_str(clean));
    vstr_free(clean);
}

/* bounce_dsn_status - the record's status, or a default for its action */
static const char *bounce_dsn_status(const DSN_LOG_REC *rec)
{
    if (rec->status && *rec->status)
        return rec->status;
    if (strcmp(rec->action, DSN_ACTION_DELIVERED) == 0)
        return "2.0.0";
    if (strcmp(rec->action, DSN_ACTION_DELAYED) == 0)
        return "4.0.0";
    return "5.0.0";
}

/* bounce_dsn_action - the DSN Action of a record */
static const char *bounce_dsn_action(const DSN_LOG_REC *rec)
{
    if (strcmp(rec->action, DSN_ACTION_DELIVERED) == 0)
        return "delivered";
    if (strcmp(rec->action, DSN_ACTION_DELAYED) == 0)
        return "delayed";
    return "failed";
}

/* bounce_dsn_intro - the opening paragraphs of the human part */
static void bounce_dsn_intro(VSTR *out, const BOUNCE_DSN *dsn)
{
    vstr_sprintf_append(out, "This is the mail system at host %s.\n\n",
                        dsn->myhostname);
    switch (dsn->kind) {
    case BOUNCE_DSN_DELAY: {
        char until[64];

        bounce_dsn_date(until, sizeof(until), dsn->retry_until);
        vstr_cat(out, "####################################################"
                      "#################\n"
                      "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND "
                      "YOUR MESSAGE. #\n"
                      "####################################################"
                      "#################\n\n");
        vstr_sprintf_append(out,
                            "Your message could not be delivered to one or "
                            "more recipients yet.\nIt will be retried until "
                            "%s.\n",
                            until);
        break;
    }
    case BOUNCE_DSN_SUCCESS:
        vstr_cat(out, "Your message was successfully delivered to the "
                      "destination(s)\nlisted below. If the message was "
                      "delivered to mailbox you will\nreceive no further "
                      "notifications. Otherwise you may still receive\n"
                      "notifications of mail delivery errors from other "
                      "systems.\n");
        break;
    case BOUNCE_DSN_FAILURE:
    default:
        if (dsn->postmaster_copy)
            vstr_sprintf_append(out,
                                "A message from <%s> (queue ID %s) could not"
                                " be delivered\nto one or more recipients, "
                                "and its sender cannot be told.\n",
                                dsn->orig_sender, dsn->queue_id);
        else
            vstr_cat(out, "I'm sorry to have to inform you that your "
                          "message could not\nbe delivered to one or more "
                          "recipients. It's attached below.\n\n"
                          "For further assistance, please send mail to "
                          "postmaster.\n\nIf you do so, please include this "
                          "problem report. You can\ndelete your own text "
                          "from the attached returned message.\n");
        break;
    }
    vstr_cat(out, "\n                   The mail system\n\n");
}

/* bounce_dsn_human - part 1: each recipient and its reason */
static void bounce_dsn_human(VSTR *out, const BOUNCE_DSN *dsn)
{
    bounce_dsn_intro(out, dsn);
    for (size_t i = 0; i < dsn->rcpt_count; i++) {
        const DSN_LOG_REC *rec = dsn->rcpts[i];
        const char *why = rec->reason && *rec->reason ? rec->reason
                          : rec->diagnostic && *rec->diagnostic
                              ? rec->diagnostic
                              : bounce_dsn_action(rec);
        VSTR *line = vstr_alloc(100);

        vstr_sprintf(line, "<%s>: ", rec->address);
        bounce_dsn_clean(line, why);
        vstr_sprintf_append(out, "%s\n", vstr_str(line));
        /* The class of the failure (global/bounce_class.h), one word. */
        if (rec->category != NULL && *rec->category) {
            vstr_cpy(line, "    (failure class: ");
            bounce_dsn_clean(line, rec->category);
            vstr_sprintf_append(out, "%s)\n", vstr_str(line));
        }
        vstr_free(line);
    }
    if (dsn->body_omitted_8bit)
        vstr_cat(out, "\nThe message body holds 8-bit data; only its headers "
                      "are returned.\n");
}

/* bounce_dsn_status_part - part 2: the machine-readable report */
static void bounce_dsn_status_part(VSTR *out, const BOUNCE_DSN *dsn)
{
    char date[64];
    VSTR *value = vstr_alloc(100);

    vstr_sprintf(value, "dns; %s", dsn->myhostname);
    bounce_dsn_field(out, "Reporting-MTA", vstr_str(value));
    bounce_dsn_field(out, "X-Sluice-Queue-ID", dsn->queue_id);
    vstr_sprintf(value, "rfc822; %s", dsn->orig_sender);
    bounce_dsn_field(out, "X-Sluice-Sender", vstr_str(value));
    bounce_dsn_field(out, "Original-Envelope-Id", dsn->envid);
    bounce_dsn_date(date, sizeof(date), dsn->arrival);
    bounce_dsn_field(out, "Arrival-Date", date);
    for (size_t i = 0; i < dsn->rcpt_count; i++) {
        const DSN_LOG_REC *rec = dsn->rcpts[i];

        vstr_cat(out, "\n");
        vstr_sprintf(value, "rfc822; %s", rec->address);
        bounce_dsn_field(out, "Final-Recipient", vstr_str(value));
        bounce_dsn_field(out, "Original-Recipient", rec->orcpt);
        bounce_dsn_field(out, "Action", bounce_dsn_action(rec));
        bounce_dsn_field(out, "Status", bounce_dsn_status(rec));
        bounce_dsn_field(out, "Remote-MTA", rec->remote_mta);
        bounce_dsn_field(out, "Diagnostic-Code", rec->diagnostic);
        /* An extension field (RFC 3464 section 2.4: X- names are free). */
        bounce_dsn_field(out, "X-Sluice-Category", rec->category);
        if (rec->time > 0) {
            bounce_dsn_date(date, sizeof(date), (time_t) rec->time);
            bounce_dsn_field(out, "Last-Attempt-Date", date);
        }
        if (dsn->kind == BOUNCE_DSN_DELAY &&
            strcmp(rec->action, DSN_ACTION_DELAYED) == 0) {
            bounce_dsn_date(date, sizeof(date), dsn->retry_until);
            bounce_dsn_field(out, "Will-Retry-Until", date);
        }
    }
    vstr_free(value);
}

/* bounce_dsn_compose - the whole notice */
void bounce_dsn_compose(VSTR *out, const BOUNCE_DSN *dsn)
{
    VSTR *body = vstr_alloc(4096);
    char date[64];
    bool eight_bit;

    /* The parts first: the top-level encoding depends on them. */
    vstr_cat(body, "This is a MIME-encapsulated message.\n\n");
    vstr_sprintf_append(body, "--%s\n", dsn->boundary);
    vstr_cat(body, "Content-Description: Notification\n"
                   "Content-Type: text/plain; charset=us-ascii\n\n");
    bounce_dsn_human(body, dsn);
    vstr_sprintf_append(body, "\n--%s\n", dsn->boundary);
    vstr_cat(body, "Content-Description: Delivery report\n"
                   "Content-Type: message/delivery-status\n\n");
    bounce_dsn_status_part(body, dsn);
    vstr_sprintf_append(body, "\n--%s\n", dsn->boundary);
    if (dsn->content_full)
        vstr_sprintf_append(
            body,
            "Content-Description: %s\n"
            "Content-Type: message/rfc822\n",
            dsn->kind == BOUNCE_DSN_FAILURE ? "Undelivered Message"
            : dsn->kind == BOUNCE_DSN_DELAY ? "Delayed Message"
                                            : "Delivered Message");
    else
        vstr_sprintf_append(
            body,
            "Content-Description: %s\n"
            "Content-Type: text/rfc822-headers\n",
            dsn->kind == BOUNCE_DSN_FAILURE ? "Undelivered Message Headers"
            : dsn->kind == BOUNCE_DSN_DELAY ? "Delayed Message Headers"
                                            : "Delivered Message Headers");
    eight_bit = bounce_dsn_has_8bit(dsn->content, dsn->content_len);
    if (eight_bit)
        vstr_cat(body, "Content-Transfer-Encoding: 8bit\n");
    vstr_cat(body, "\n");
    vstr_ncat(body, dsn->content, dsn->content_len);
    if (dsn->content_len > 0 && dsn->content[dsn->content_len - 1] != '\n')
        vstr_cat(body, "\n");
    vstr_sprintf_append(body, "\n--%s--\n", dsn->boundary);

    vstr_reset(out);
    bounce_dsn_date(date, sizeof(date), dsn->now);
    vstr_sprintf_append(out, "Date: %s\n", date);
    vstr_sprintf_append(out, "From: MAILER-DAEMON@%s (Mail Delivery System)\n",
                        dsn->myhostname);
    vstr_sprintf_append(out, "Subject: %s\n", bounce_dsn_subject(dsn));
    vstr_sprintf_append(out, "To: <%s>\n", dsn->to);
    vstr_sprintf_append(out, "Message-Id: <%s.%s@%s>\n", dsn->dsn_queue_id,
                        dsn->queue_id, dsn->myhostname);
    vstr_cat(out, "Auto-Submitted: auto-replied\n"
                  "MIME-Version: 1.0\n");
    vstr_sprintf_append(out,
                        "Content-Type: multipart/report; "
                        "report-type=delivery-status;\n"
                        "\tboundary=\"%s\"\n",
                        dsn->boundary);
    vstr_sprintf_append(out, "Content-Transfer-Encoding: %s\n\n",
                        eight_bit ? "8bit" : "7bit");
    vstr_ncat(out, vstr_str(body), vstr_len(body));
    vstr_free(body);
}
