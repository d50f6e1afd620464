/*
 * cleanup_content - the message content: headers, fixes, filters, body
 *
 * Content arrives in chunks that split lines anywhere. While in the header
 * block, chunks are cut into lines and lines into headers (a header is its
 * first line and its continuation lines); each header goes through the
 * filters and is written. The header block ends at an empty line, at a line
 * that is no header (an empty line is then inserted, as Postfix does), or
 * when it grows past header_size_limit (the rest is body). Then the missing
 * Message-ID:, Date: and, for local submissions, From: are added, and the
 * body is streamed to the queue file chunk by chunk as it comes, 8-bit
 * clean. A message whose last line lacks its newline gets one.
 *
 * Each header goes through header_checks (cleanup_checks.c), then canonical
 * address rewriting (cleanup_rewrite.c), then the filters. When
 * body_checks is set, the first body_checks_size_limit bytes of the body
 * are cut into lines (pieces of at most CLEANUP_BODY_LINE_MAX bytes) for it;
 * the rest of the body streams as before.
 */
#include "sys_defs.h"

#include <time.h>

#include "cleanup.h"
#include "cleanup_proto.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "vstr.h"

/* Postfix's body_checks_size_limit (no parameter yet): body bytes checked. */
/* Postfix's line_length_limit: longer body lines are checked in pieces. */
#define CLEANUP_BODY_LINE_MAX 2048

/* cleanup_content_init - content state of a new message */
void cleanup_content_init(CLEANUP_MSG *msg)
{
    msg->line = vstr_alloc(256);
    msg->header = vstr_alloc(256);
    msg->body_line = vstr_alloc(256);
    msg->prepend = vstr_alloc(64);
}

/* cleanup_content_free - release the content state */
void cleanup_content_free(CLEANUP_MSG *msg)
{
    msg->line = vstr_free(msg->line);
    msg->header = vstr_free(msg->header);
    msg->body_line = vstr_free(msg->body_line);
    msg->prepend = vstr_free(msg->prepend);
    msg->message_id = myfree(msg->message_id);
}

/* cleanup_content_write - content bytes into the queue file */
void cleanup_content_write(CLEANUP_MSG *msg, const char *data, size_t len)
{
    if (msg->status || msg->discard || len == 0)
        return;
    qfile_put_content(msg->writer, data, len);
    msg->last_byte = (unsigned char) data[len - 1];
}

/* cleanup_header_name_len - length of the header name before ':', 0 when
   the line is no header (RFC 5322: printable ASCII but ':') */
static size_t cleanup_header_name_len(const char *line, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) line[i];

        if (ch == ':')
            return i;
        if (ch < 33 || ch > 126)
            return 0;
    }
    return 0;
}

/* cleanup_header_is - does the header have this name (any case) */
static bool cleanup_header_is(const VSTR *header, const char *name)
{
    size_t len = strlen(name);

    return vstr_len(header) > len && vstr_str(header)[len] == ':' &&
           strncasecmp(vstr_str(header), name, len) == 0;
}

/* cleanup_header_value - the value of a header, unfolded and trimmed */
static char *cleanup_header_value(const VSTR *header)
{
    const char *cp = strchr(vstr_str(header), ':') + 1;
    VSTR *value = vstr_alloc(64);

    for (; *cp; cp++) {
        if (*cp == '\r' || *cp == '\n')
            continue;
        if ((*cp == ' ' || *cp == '\t') && vstr_len(value) == 0)
            continue;
        vstr_addch(value, *cp == '\t' ? ' ' : *cp);
    }
    vstr_trim(value);
    return vstr_export(value);
}

/* cleanup_header_out - one header through the filters, into the file */
static void cleanup_header_out(CLEANUP_MSG *msg, VSTR *header)
{
    for (size_t i = 0; i < msg->filter_count; i++) {
        if (msg->filters[i]->header == NULL)
            continue;
        if (msg->filters[i]->header(msg->filter_state[i], msg, header) ==
            CLEANUP_FILTER_DROP)
            return;
    }
    if (cleanup_header_is(header, "message-id")) {
        if (!msg->seen_message_id)
            msg->message_id =
                cleanup_header_value(header); /* logged at commit */
        msg->seen_message_id = true;
    } else if (cleanup_header_is(header, "date")) {
        msg->seen_date = true;
    } else if (cleanup_header_is(header, "from")) {
        msg->seen_from = true;
    }
    cleanup_content_write(msg, vstr_str(header), vstr_len(header));
}

/* cleanup_header_flush - the current header through header_checks, address
   rewriting and the filters, out */
static void cleanup_header_flush(CLEANUP_MSG *msg)
{
    VSTR *header = msg->header;
    bool keep;

    if (vstr_len(header) == 0)
        return;
    vstr_reset(msg->prepend);
    keep = cleanup_check_header(msg, header, msg->prepend);
    if (vstr_len(msg->prepend) > 0)
        cleanup_header_out(msg, msg->prepend);
    if (keep && cleanup_rewrite_header(msg, header))
        cleanup_header_out(msg, header);
    vstr_reset(header);
}

/* cleanup_phrase_atext - a byte that may stand unquoted in a phrase */
static bool cleanup_phrase_atext(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* cleanup_from_header - the From: header of a local submission
 *
 * The full name comes from the command line of whoever ran sendmail, so it
 * is cleaned before it goes into a header: control characters (CR and LF
 * above all: no header injection) become spaces, runs of white space one
 * space, and the ends are trimmed. A name of atoms separated by single
 * spaces is written as it is ("Some One <u@h>"), anything else as an RFC
 * 5322 quoted-string with '"' and '\\' escaped ("\"Doe, John\" <u@h>").
 * 8-bit bytes are kept as they are (no RFC 2047 encoding yet). */
void cleanup_from_header(VSTR *out, const char *sender, const char *full_name)
{
    const char *addr = *sender ? sender : "MAILER-DAEMON";
    VSTR *name = vstr_alloc(64);
    bool plain = true;

    for (const char *cp = full_name ? full_name : ""; *cp; cp++) {
        int ch = (unsigned char) *cp;

        if (ch < 32 || ch == 127)
            ch = ' ';
        if (ch == ' ' &&
            (vstr_len(name) == 0 || vstr_str(name)[vstr_len(name) - 1] == ' '))
            continue;
        vstr_addch(name, ch);
    }
    vstr_trim(name);
    for (size_t i = 0; i < vstr_len(name); i++) {
        int ch = (unsigned char) vstr_str(name)[i];

        if (ch != ' ' && !cleanup_phrase_atext(ch))
            plain = false;
    }
    vstr_cat(out, "From: ");
    if (vstr_len(name) == 0) {
        vstr_cat(out, addr);
    } else {
        if (plain) {
            vstr_ncat(out, vstr_str(name), vstr_len(name));
        } else {
            vstr_addch(out, '"');
            for (size_t i = 0; i < vstr_len(name); i++) {
                int ch = (unsigned char) vstr_str(name)[i];

                if (ch == '"' || ch == '\\')
                    vstr_addch(out, '\\');
                vstr_addch(out, ch);
            }
            vstr_addch(out, '"');
        }
        vstr_sprintf_append(out, " <%s>", addr);
    }
    vstr_addch(out, '\n');
    vstr_free(name);
}

/* cleanup_headers_end - add what is missing; the body starts */
static void cleanup_headers_end(CLEANUP_MSG *msg)
{
    VSTR *buf = vstr_alloc(128);

    cleanup_header_flush(msg);
    if (!msg->seen_message_id) {
        vstr_sprintf(buf, "<%s@%s>", msg->qid, msg->conf->myhostname);
        msg->message_id = mystrdup(vstr_str(buf));
        vstr_sprintf(buf, "Message-Id: %s\n", msg->message_id);
        cleanup_content_write(msg, vstr_str(buf), vstr_len(buf));
    }
    if (!msg->seen_date) {
        char date[64];
        struct tm tm;
        time_t when = msg->arrival.tv_sec;

        if (localtime_r(&when, &tm) == NULL ||
            strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
            msg_panic("%s: cannot format the date", __func__);
        vstr_sprintf(buf, "Date: %s\n", date);
        cleanup_content_write(msg, vstr_str(buf), vstr_len(buf));
    }
    if (!msg->seen_from && (msg->flags & CLEANUP_FLAG_LOCAL)) {
        vstr_reset(buf);
        cleanup_from_header(buf, msg->sender, msg->full_name);
        cleanup_content_write(msg, vstr_str(buf), vstr_len(buf));
    }
    vstr_free(buf);
    msg->in_body = true;
    for (size_t i = 0; i < msg->filter_count; i++)
        if (msg->filters[i]->end_headers)
            msg->filters[i]->end_headers(msg->filter_state[i], msg);
}

/* cleanup_body_out - body bytes: filters, then the file */
static void cleanup_body_out(CLEANUP_MSG *msg, const char *data, size_t len)
{
    if (len == 0 || msg->status || msg->discard)
        return;
    for (size_t i = 0; i < msg->filter_count; i++)
        if (msg->filters[i]->body)
            msg->filters[i]->body(msg->filter_state[i], msg, data, len);
    if (msg->body_hold != NULL) {
        /* Kept for cleanup_track.c's rewriting, up to its limit. */
        vstr_ncat(msg->body_hold, data, len);
        msg->last_byte = (unsigned char) data[len - 1];
        if (msg->body_hold_limit > 0 &&
            (long long) vstr_len(msg->body_hold) > msg->body_hold_limit) {
            cleanup_content_write(msg, vstr_str(msg->body_hold),
                                  vstr_len(msg->body_hold));
            vstr_reset(msg->body_hold);
            msg->body_hold = NULL;
        }
        return;
    }
    cleanup_content_write(msg, data, len);
}

/* cleanup_body_line_flush - the body line in hand through body_checks */
static void cleanup_body_line_flush(CLEANUP_MSG *msg)
{
    VSTR *line = msg->body_line;
    bool keep;

    if (vstr_len(line) == 0)
        return;
    msg->body_checked += (long long) vstr_len(line);
    vstr_reset(msg->prepend);
    keep = cleanup_check_body(msg, line, msg->prepend);
    cleanup_body_out(msg, vstr_str(msg->prepend), vstr_len(msg->prepend));
    if (keep)
        cleanup_body_out(msg, vstr_str(line), vstr_len(line));
    vstr_reset(line);
}

/* cleanup_body_checking - do body_checks still look at the body */
static bool cleanup_body_checking(const CLEANUP_MSG *msg)
{
    return msg->conf->body_checks != NULL &&
           maps_count(msg->conf->body_checks) > 0 && msg->status == 0 &&
           !msg->discard &&
           msg->body_checked < msg->conf->body_checks_size_limit;
}

/* cleanup_body - body bytes: line by line through body_checks while they
   look, else straight out */
static void cleanup_body(CLEANUP_MSG *msg, const char *data, size_t len)
{
    while (len > 0 && cleanup_body_checking(msg)) {
        const char *nl = memchr(data, '\n', len);
        size_t part = nl ? (size_t) (nl - data) + 1 : len;
        size_t room = CLEANUP_BODY_LINE_MAX - vstr_len(msg->body_line);

        if (part > room)
            part = room;
        vstr_ncat(msg->body_line, data, part);
        data += part;
        len -= part;
        if (vstr_str(msg->body_line)[vstr_len(msg->body_line) - 1] == '\n' ||
            vstr_len(msg->body_line) >= CLEANUP_BODY_LINE_MAX)
            cleanup_body_line_flush(msg);
    }
    if (len == 0)
        return;
    /* Past the limit: a partial line in hand goes first, unchecked. */
    cleanup_body_out(msg, vstr_str(msg->body_line), vstr_len(msg->body_line));
    vstr_reset(msg->body_line);
    cleanup_body_out(msg, data, len);
}

/* cleanup_header_line - one complete line (with its LF) of the header
   block; returns true when the line ended the header block */
static bool cleanup_header_line(CLEANUP_MSG *msg, const char *line, size_t len)
{
    msg->header_bytes += (long long) len;
    if (line[0] == '\n') {
        cleanup_headers_end(msg);
        cleanup_body_out(msg, "\n", 1);
        return true;
    }
    if ((line[0] == ' ' || line[0] == '\t') && vstr_len(msg->header) > 0 &&
        msg->header_bytes <= msg->conf->header_size_limit) {
        vstr_ncat(msg->header, line, len);
        return false;
    }
    if (cleanup_header_name_len(line, len) > 0 &&
        msg->header_bytes <= msg->conf->header_size_limit) {
        cleanup_header_flush(msg);
        vstr_ncat(msg->header, line, len);
        return false;
    }
    /* No header (or too many): the body starts with this line. */
    cleanup_headers_end(msg);
    cleanup_body_out(msg, "\n", 1);
    cleanup_body(msg, line, len);
    return true;
}

/* cleanup_content_data - a chunk of the content */
void cleanup_content_data(CLEANUP_MSG *msg, const char *data, size_t len)
{
    while (len > 0 && !msg->in_body) {
        const char *nl = memchr(data, '\n', len);
        size_t part = nl ? (size_t) (nl - data) + 1 : len;

        if (nl == NULL) {
            /* A partial line waits for the rest, within the limit. */
            vstr_ncat(msg->line, data, part);
            if ((long long) vstr_len(msg->line) + msg->header_bytes >
                msg->conf->header_size_limit) {
                cleanup_headers_end(msg);
                cleanup_body_out(msg, "\n", 1);
                cleanup_body(msg, vstr_str(msg->line), vstr_len(msg->line));
                vstr_reset(msg->line);
            }
            return;
        }
        if (vstr_len(msg->line) > 0) {
            vstr_ncat(msg->line, data, part);
            cleanup_header_line(msg, vstr_str(msg->line), vstr_len(msg->line));
            vstr_reset(msg->line);
        } else {
            cleanup_header_line(msg, data, part);
        }
        data += part;
        len -= part;
    }
    if (len > 0)
        cleanup_body(msg, data, len);
}

/* cleanup_content_end - finish the content: partial line, headers, LF */
void cleanup_content_end(CLEANUP_MSG *msg)
{
    if (!msg->in_body) {
        if (vstr_len(msg->line) > 0) {
            vstr_addch(msg->line, '\n');
            cleanup_header_line(msg, vstr_str(msg->line), vstr_len(msg->line));
            vstr_reset(msg->line);
        }
        if (!msg->in_body) {
            cleanup_headers_end(msg);
            cleanup_body_out(msg, "\n", 1);
        }
    }
    /* A last body line without its newline is still checked. */
    if (cleanup_body_checking(msg))
        cleanup_body_line_flush(msg);
    if (msg->last_byte != '\n')
        cleanup_body_out(msg, "\n", 1);
    for (size_t i = 0; i < msg->filter_count; i++)
        if (msg->filters[i]->end && msg->status == 0 && !msg->discard)
            msg->filters[i]->end(msg->filter_state[i], msg);
}
