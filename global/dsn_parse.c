/*
 * dsn_parse - what a delivery status notification that came back says
 *
 * See dsn_parse.h. The MIME walk is report_mime's; this module reads the
 * delivery-status fields (RFC 3464 section 2.3) and, for a free-form
 * bounce, looks for the line that carries the remote server's reply.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "api_mime.h"
#include "dsn_parse.h"
#include "mymalloc.h"

/* What the walk keeps: the first delivery-status, text/plain and
   text/html parts (their header blocks for the transfer encoding). */
typedef struct DSN_PARSE_SEEN {
    REPORT_MIME_PART status;
    REPORT_MIME_PART text;
    REPORT_MIME_PART html;
    bool report; /* the message is a multipart/report */
} DSN_PARSE_SEEN;

/* dsn_parsed_alloc - an empty result */
DSN_PARSED *dsn_parsed_alloc(void)
{
    DSN_PARSED *dsn = mycalloc(1, sizeof(*dsn));

    dsn->final_rcpt = vstr_alloc(64);
    dsn->orig_rcpt = vstr_alloc(64);
    dsn->action = vstr_alloc(16);
    dsn->status = vstr_alloc(16);
    dsn->reply = vstr_alloc(100);
    return dsn;
}

/* dsn_parsed_free - release it */
DSN_PARSED *dsn_parsed_free(DSN_PARSED *dsn)
{
    if (dsn == NULL)
        return NULL;
    vstr_free(dsn->final_rcpt);
    vstr_free(dsn->orig_rcpt);
    vstr_free(dsn->action);
    vstr_free(dsn->status);
    vstr_free(dsn->reply);
    for (int i = 0; i < dsn->rcpt_count; i++) {
        vstr_free(dsn->rcpts[i].final_rcpt);
        vstr_free(dsn->rcpts[i].orig_rcpt);
        vstr_free(dsn->rcpts[i].action);
        vstr_free(dsn->rcpts[i].status);
        vstr_free(dsn->rcpts[i].reply);
    }
    if (dsn->rcpts)
        myfree(dsn->rcpts);
    myfree(dsn);
    return NULL;
}

/* dsn_parsed_use - copy recipient block i into the top fields */
static void dsn_parsed_use(DSN_PARSED *dsn, int i)
{
    const DSN_PARSED_RCPT *r = dsn->rcpts + i;

    vstr_cpy(dsn->final_rcpt, vstr_str(r->final_rcpt));
    vstr_cpy(dsn->orig_rcpt, vstr_str(r->orig_rcpt));
    vstr_cpy(dsn->action, vstr_str(r->action));
    vstr_cpy(dsn->status, vstr_str(r->status));
    vstr_cpy(dsn->reply, vstr_str(r->reply));
}

/* dsn_parsed_is - is the block's address addr (ignoring case)? */
static bool dsn_parsed_is(const VSTR *field, const char *addr)
{
    return addr != NULL && *addr != 0 && vstr_len(field) > 0 &&
           strcasecmp(vstr_str(field), addr) == 0;
}

/* dsn_parsed_pick - choose the recipient block (see dsn_parse.h) */
bool dsn_parsed_pick(DSN_PARSED *dsn, const char *rcpt, const char *orig_rcpt)
{
    int failed = -1;

    for (int i = 0; i < dsn->rcpt_count; i++) {
        const DSN_PARSED_RCPT *r = dsn->rcpts + i;

        if (dsn_parsed_is(r->final_rcpt, rcpt) ||
            dsn_parsed_is(r->orig_rcpt, rcpt) ||
            dsn_parsed_is(r->final_rcpt, orig_rcpt) ||
            dsn_parsed_is(r->orig_rcpt, orig_rcpt)) {
            dsn_parsed_use(dsn, i);
            return true;
        }
        if (failed < 0 && strcmp(vstr_str(r->action), "failed") == 0)
            failed = i;
    }
    if (dsn->rcpt_count > 0)
        dsn_parsed_use(dsn, failed >= 0 ? failed : 0);
    return false;
}

/* dsn_parsed_add - a new empty recipient block */
static DSN_PARSED_RCPT *dsn_parsed_add(DSN_PARSED *dsn)
{
    DSN_PARSED_RCPT *r;

    if (dsn->rcpt_count == dsn->rcpt_cap) {
        dsn->rcpt_cap = dsn->rcpt_cap ? 2 * dsn->rcpt_cap : 4;
        dsn->rcpts =
            myrealloc(dsn->rcpts, (size_t) dsn->rcpt_cap * sizeof(*dsn->rcpts));
    }
    r = dsn->rcpts + dsn->rcpt_count++;
    r->final_rcpt = vstr_alloc(64);
    r->orig_rcpt = vstr_alloc(64);
    r->action = vstr_alloc(16);
    r->status = vstr_alloc(16);
    r->reply = vstr_alloc(100);
    return r;
}

/* dsn_parsed_drop - forget the last recipient block */
static void dsn_parsed_drop(DSN_PARSED *dsn)
{
    DSN_PARSED_RCPT *r = dsn->rcpts + --dsn->rcpt_count;

    vstr_free(r->final_rcpt);
    vstr_free(r->orig_rcpt);
    vstr_free(r->action);
    vstr_free(r->status);
    vstr_free(r->reply);
}

/* dsn_parse_status_len - the length of an X.Y.Z code at text (at most
   max bytes), 0 when there is none */
static size_t dsn_parse_status_len(const char *text, size_t max)
{
    size_t at = 1;

    if (max < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') ||
        text[1] != '.')
        return 0;
    for (int field = 0; field < 2; field++) {
        size_t digits = 0;

        at++;
        while (at < max && isdigit((unsigned char) text[at]) && digits < 4) {
            at++;
            digits++;
        }
        if (digits == 0 || digits > 3)
            return 0;
        if (field == 0) {
            if (at >= max || text[at] != '.')
                return 0;
        }
    }
    return at;
}

/* dsn_parse_status_ok - is text an enhanced status code and nothing else */
bool dsn_parse_status_ok(const char *text)
{
    size_t len = strlen(text);

    return len > 0 && dsn_parse_status_len(text, len) == len;
}

/* dsn_parse_seen - the walk's callback: keep the parts we read */
static int dsn_parse_seen(void *context, const REPORT_MIME_PART *part)
{
    DSN_PARSE_SEEN *seen = context;

    if (*part->report_type)
        seen->report = true;
    if (seen->status.body == NULL &&
        (strcmp(part->type, "message/delivery-status") == 0 ||
         strcmp(part->type, "message/global-delivery-status") == 0)) {
        seen->status = *part;
    } else if (seen->text.body == NULL &&
               strcmp(part->type, "text/plain") == 0) {
        seen->text = *part;
    } else if (seen->html.body == NULL &&
               strcmp(part->type, "text/html") == 0) {
        seen->html = *part;
    }
    return 0;
}

/* dsn_parse_hex - the value of a hex digit, -1 for other bytes */
static int dsn_parse_hex(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (unsigned char) tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* dsn_parse_decode - the body of a part, its base64 or quoted-printable
   Content-Transfer-Encoding decoded into buf (never more bytes than the
   body has: both encodings only shrink); *len its length. Other
   encodings (7bit, 8bit, binary, unknown) are returned as they are. */
static const char *dsn_parse_decode(const REPORT_MIME_PART *part, VSTR *buf,
                                    size_t *len)
{
    VSTR *cte = vstr_alloc(20);
    const unsigned char *in = (const unsigned char *) part->body;
    size_t n = part->body_len;
    const char *ret = part->body;

    *len = n;
    if (!report_mime_header(part->head, part->head_len,
                            "Content-Transfer-Encoding", cte))
        goto out;
    vstr_lower(cte);
    if (strcmp(vstr_str(cte), "base64") == 0) {
        unsigned int acc = 0;
        int bits = 0;

        vstr_reset(buf);
        vstr_reserve(buf, n);
        for (size_t i = 0; i < n && in[i] != '='; i++) {
            int v = api_mime_b64_value(in[i]);

            if (v < 0)
                continue; /* line ends, white space, junk */
            acc = (acc << 6) | (unsigned int) v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                vstr_addch(buf, (int) ((acc >> bits) & 0xff));
            }
        }
    } else if (strcmp(vstr_str(cte), "quoted-printable") == 0) {
        vstr_reset(buf);
        vstr_reserve(buf, n);
        for (size_t i = 0; i < n; i++) {
            int hi;
            int lo;

            if (in[i] != '=') {
                vstr_addch(buf, in[i]);
            } else if (i + 1 < n && in[i + 1] == '\n') {
                i += 1; /* soft line break */
            } else if (i + 2 < n && in[i + 1] == '\r' && in[i + 2] == '\n') {
                i += 2;
            } else if (i + 2 < n && (hi = dsn_parse_hex(in[i + 1])) >= 0 &&
                       (lo = dsn_parse_hex(in[i + 2])) >= 0) {
                vstr_addch(buf, hi * 16 + lo);
                i += 2;
            } else {
                vstr_addch(buf, '='); /* not an escape: kept */
            }
        }
    } else {
        goto out;
    }
    ret = vstr_str(buf);
    *len = vstr_len(buf);
out:
    vstr_free(cte);
    return ret;
}

/* dsn_parse_html_break - does the tag at text[0..len) (after its '<') end
   a line: br, p, div, tr, li, table, h1-h6, opening or closing? */
static bool dsn_parse_html_break(const char *text, size_t len)
{
    static const char *const names[] = {"br", "p",  "div", "tr", "li", "table",
                                        "h1", "h2", "h3",  "h4", "h5", "h6"};
    size_t at = (len > 0 && text[0] == '/') ? 1 : 0;
    size_t name = at;

    while (name < len && isalnum((unsigned char) text[name]))
        name++;
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(names); i++)
        if (name - at == strlen(names[i]) &&
            strncasecmp(text + at, names[i], name - at) == 0)
            return true;
    return false;
}

/* dsn_parse_tag_is - does the tag text[0..len) start with name? */
static bool dsn_parse_tag_is(const char *text, size_t len, const char *name)
{
    size_t nlen = strlen(name);

    return len >= nlen && strncasecmp(text, name, nlen) == 0;
}

/* dsn_parse_html - a crude text of html[0..len) into out (no longer than
   the html): tags removed (those that break a line become a newline),
   style and script contents dropped, &lt; &gt; &amp; &nbsp; &quot;
   replaced */
static void dsn_parse_html(const char *html, size_t len, VSTR *out)
{
    static const struct {
        const char *name;
        char ch;
    } ents[] = {{"&lt;", '<'},
                {"&gt;", '>'},
                {"&amp;", '&'},
                {"&nbsp;", ' '},
                {"&quot;", '"'}};
    bool skip = false; /* inside style or script */

    vstr_reset(out);
    vstr_reserve(out, len);
    for (size_t i = 0; i < len; i++) {
        if (html[i] == '<') {
            const char *gt = memchr(html + i, '>', len - i);
            size_t tlen = gt ? (size_t) (gt - html) - i - 1 : len - i - 1;
            const char *tag = html + i + 1;

            if (dsn_parse_tag_is(tag, tlen, "style") ||
                dsn_parse_tag_is(tag, tlen, "script"))
                skip = true;
            else if (dsn_parse_tag_is(tag, tlen, "/style") ||
                     dsn_parse_tag_is(tag, tlen, "/script"))
                skip = false;
            else if (!skip && dsn_parse_html_break(tag, tlen))
                vstr_addch(out, '\n');
            i += tlen + 1;
            continue;
        }
        if (skip)
            continue;
        if (html[i] == '&') {
            size_t e;

            for (e = 0; e < SLUICE_ARRAY_LEN(ents); e++) {
                size_t elen = strlen(ents[e].name);

                if (len - i >= elen &&
                    strncasecmp(html + i, ents[e].name, elen) == 0) {
                    vstr_addch(out, ents[e].ch);
                    i += elen - 1;
                    break;
                }
            }
            if (e < SLUICE_ARRAY_LEN(ents))
                continue;
        }
        vstr_addch(out, html[i]);
    }
}

/* dsn_parse_block - one recipient block of a delivery-status body into
   a new entry of out: 0, or -1 with why (and no entry) */
static int dsn_parse_block(const char *block, size_t head_len, DSN_PARSED *out,
                           VSTR *value, VSTR *why)
{
    DSN_PARSED_RCPT *r = dsn_parsed_add(out);

    if (report_mime_header(block, head_len, "Final-Recipient", value))
        report_mime_typed(vstr_str(value), r->final_rcpt);
    if (report_mime_header(block, head_len, "Original-Recipient", value))
        report_mime_typed(vstr_str(value), r->orig_rcpt);
    if (report_mime_header(block, head_len, "Action", value))
        vstr_lower(vstr_cpy(r->action, vstr_str(value)));
    if (report_mime_header(block, head_len, "Diagnostic-Code", value)) {
        report_mime_typed(vstr_str(value), r->reply);
        if (vstr_len(r->reply) > DSN_PARSE_REPLY_MAX)
            vstr_truncate(r->reply, DSN_PARSE_REPLY_MAX);
    }
    if (report_mime_header(block, head_len, "Status", value)) {
        /* "5.1.1 (user unknown)" happens: the code is the first word. */
        const char *v = vstr_str(value);

        vstr_ncpy(r->status, v, strcspn(v, " \t("));
    }
    if (vstr_len(r->action) == 0) {
        vstr_cpy(why, "recipient block without an Action field");
    } else if (!dsn_parse_status_ok(vstr_str(r->status))) {
        vstr_sprintf(why, "recipient block with a bad Status field: \"%.40s\"",
                     vstr_str(r->status));
    } else {
        return 0;
    }
    dsn_parsed_drop(out);
    return -1;
}

/* dsn_parse_fields - every recipient block of a delivery-status body (at
   most DSN_PARSE_BLOCKS_MAX; a bad one is skipped), the first also into
   the top fields: 0, or -1 with why when there is no good block */
static int dsn_parse_fields(const char *body, size_t len, DSN_PARSED *out,
                            VSTR *why)
{
    VSTR *value = vstr_alloc(100);
    VSTR *first_why = vstr_alloc(60);
    size_t head_len;
    size_t next;
    int ret = -1;

    /* The per-message block first, then a block per recipient. */
    report_mime_split(body, len, &head_len, &next);
    while (next < len && out->rcpt_count < DSN_PARSE_BLOCKS_MAX) {
        const char *block = body + next;
        size_t rest = len - next;

        report_mime_split(block, rest, &head_len, &next);
        next += (size_t) (block - body);
        if (head_len == 0)
            continue; /* more than one blank line */
        if (!report_mime_header(block, head_len, "Final-Recipient", value) &&
            !report_mime_header(block, head_len, "Action", value))
            continue;
        if (dsn_parse_block(block, head_len, out, value, why) < 0 &&
            vstr_len(first_why) == 0)
            vstr_cpy(first_why, vstr_str(why));
    }
    if (out->rcpt_count > 0) {
        dsn_parsed_use(out, 0);
        ret = 0;
    } else if (vstr_len(first_why) > 0) {
        vstr_cpy(why, vstr_str(first_why));
    } else {
        vstr_cpy(why, "delivery-status without a recipient block");
    }
    vstr_free(value);
    vstr_free(first_why);
    return ret;
}

/* dsn_parse_code_at - is there a reply code ("550 ", "550-") at line[at],
   a word of its own? */
static bool dsn_parse_code_at(const char *line, size_t len, size_t at)
{
    if (at + 4 > len || (line[at] != '4' && line[at] != '5') ||
        !isdigit((unsigned char) line[at + 1]) ||
        !isdigit((unsigned char) line[at + 2]) ||
        (line[at + 3] != ' ' && line[at + 3] != '-'))
        return false;
    return at == 0 || !isalnum((unsigned char) line[at - 1]);
}

/* dsn_parse_line - how good a reply line is: 3 code and status, 2 code,
   1 status, 0 neither; *code_at and *status_at where they are */
static int dsn_parse_line(const char *line, size_t len, size_t *code_at,
                          size_t *status_at, size_t *status_len)
{
    bool code = false;
    bool status = false;

    for (size_t at = 0; at < len && !(code && status); at++) {
        size_t slen;

        if (!code && dsn_parse_code_at(line, len, at)) {
            code = true;
            *code_at = at;
            continue;
        }
        if (!status && (line[at] == '4' || line[at] == '5') &&
            (at == 0 || !isalnum((unsigned char) line[at - 1])) &&
            (slen = dsn_parse_status_len(line + at, len - at)) > 0 &&
            (at + slen == len || !isalnum((unsigned char) line[at + slen]))) {
            status = true;
            *status_at = at;
            *status_len = slen;
        }
    }
    return code && status ? 3 : code ? 2 : status ? 1 : 0;
}

/* dsn_parse_has - does text[0..len) contain word, ignoring case? */
static bool dsn_parse_has(const char *text, size_t len, const char *word)
{
    size_t wlen = strlen(word);

    for (size_t at = 0; at + wlen <= len; at++)
        if (strncasecmp(text + at, word, wlen) == 0)
            return true;
    return false;
}

/* dsn_parse_delay_words - does a free-form text say the mail is only
   late (a delay warning)? */
static bool dsn_parse_delay_words(const char *text, size_t len)
{
    static const char *const words[] = {"delayed", "will retry",
                                        "will be retried", "still trying"};

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(words); i++)
        if (dsn_parse_has(text, len, words[i]))
            return true;
    return false;
}

/* dsn_parse_daemon - is the address a mailer daemon's or postmaster's? */
static bool dsn_parse_daemon(const char *addr)
{
    static const char *const names[] = {"mailer-daemon", "mailer_daemon",
                                        "mailerdaemon", "postmaster"};
    size_t local = strcspn(addr, "@");

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(names); i++)
        if (local == strlen(names[i]) &&
            strncasecmp(addr, names[i], local) == 0)
            return true;
    return false;
}

/* dsn_parse_bounce_like - may a message that is no RFC 3464 report be
   read as a free-form bounce? Only one from the null sender or a mailer
   daemon, and no automatic reply (RFC 3834: an out-of-office answer to
   the return path): 1, or 0 with why */
static int dsn_parse_bounce_like(const char *buf, size_t len,
                                 const char *sender, VSTR *why)
{
    VSTR *value = vstr_alloc(100);
    VSTR *from = vstr_alloc(64);
    size_t head_len;
    size_t body_off;
    int ok = 1;

    report_mime_split(buf, len, &head_len, &body_off);
    if (report_mime_header(buf, head_len, "Auto-Submitted", value) &&
        strncasecmp(vstr_str(value), "auto-replied", 12) == 0) {
        vstr_cpy(why, "an automatic reply (Auto-Submitted: auto-replied), "
                      "not a bounce");
        ok = 0;
    } else if (sender != NULL && *sender != 0 &&
               !(report_mime_header(buf, head_len, "From", value) &&
                 report_mime_addr(vstr_str(value), vstr_len(value), from) &&
                 dsn_parse_daemon(vstr_str(from)))) {
        vstr_cpy(why, "no DSN: a free-form text from a sender that is not "
                      "the null sender or a mailer daemon");
        ok = 0;
    }
    vstr_free(value);
    vstr_free(from);
    return ok;
}

/* dsn_parse_free_form - the best reply line of a free-form text */
static int dsn_parse_free_form(const char *text, size_t len, DSN_PARSED *out,
                               VSTR *why)
{
    size_t off = 0;
    int best = 0;
    size_t best_off = 0;
    size_t best_len = 0;
    size_t best_code = 0;
    size_t best_status = 0;
    size_t best_slen = 0;

    for (int lines = 0; off < len && lines < DSN_PARSE_LINES_MAX && best < 3;
         lines++) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t end = nl ? (size_t) (nl - text) : len;
        size_t code_at = 0;
        size_t status_at = 0;
        size_t slen = 0;
        int score =
            dsn_parse_line(text + off, end - off, &code_at, &status_at, &slen);

        if (score > best) {
            best = score;
            best_off = off;
            best_len = end - off;
            best_code = code_at;
            best_status = status_at;
            best_slen = slen;
        }
        off = end + 1;
    }
    if (best == 0) {
        vstr_cpy(why, "no SMTP reply or status code in the text");
        return -1;
    }
    const char *line = text + best_off;
    size_t from = best >= 2 ? best_code : best_status;

    vstr_ncpy(out->reply, line + from,
              best_len - from > DSN_PARSE_REPLY_MAX ? DSN_PARSE_REPLY_MAX
                                                    : best_len - from);
    vstr_trim(out->reply);
    if (best != 2)
        vstr_ncpy(out->status, line + best_status, best_slen);
    else
        vstr_sprintf(out->status, "%c.0.0", line[best_code]);
    /* A warning that the mail is late is no bounce: its reply is a 4xx,
       or its words say so. */
    vstr_cpy(out->action,
             *vstr_str(out->status) == '4' || dsn_parse_delay_words(text, len)
                 ? "delayed"
                 : "failed");
    (void) report_mime_addr(line, best_len, out->final_rcpt);
    out->form = DSN_PARSE_FREEFORM;
    return 0;
}

/* dsn_parse - parse the DSN in buf[0..len), as from the null sender */
int dsn_parse(const char *buf, size_t len, const REPORT_MIME_LIMITS *limits,
              DSN_PARSED *out, VSTR *why)
{
    return dsn_parse_mail(buf, len, limits, "", out, why);
}

/* dsn_parse_mail - parse the DSN in buf[0..len) that sender sent */
int dsn_parse_mail(const char *buf, size_t len,
                   const REPORT_MIME_LIMITS *limits, const char *sender,
                   DSN_PARSED *out, VSTR *why)
{
    DSN_PARSE_SEEN seen = {0};
    VSTR *decoded = NULL;
    VSTR *text = NULL;
    const char *body;
    size_t body_len;
    int ret = -1;

    if (len > limits->max_bytes)
        len = limits->max_bytes;
    if (report_mime_walk(buf, len, limits, dsn_parse_seen, &seen, why) < 0)
        return -1;
    if (seen.status.body != NULL) {
        decoded = vstr_alloc(100);
        body = dsn_parse_decode(&seen.status, decoded, &body_len);
        if (dsn_parse_fields(body, body_len, out, why) == 0) {
            out->form = DSN_PARSE_RFC3464;
            ret = 0;
        }
        goto out;
    }
    if (seen.report) {
        vstr_cpy(why, "multipart/report without a delivery-status part");
        goto out;
    }
    if (seen.text.body == NULL && seen.html.body == NULL) {
        vstr_cpy(why, "no text part");
        goto out;
    }
    if (!dsn_parse_bounce_like(buf, len, sender, why))
        goto out;
    decoded = vstr_alloc(100);
    if (seen.text.body != NULL) {
        body = dsn_parse_decode(&seen.text, decoded, &body_len);
    } else {
        text = vstr_alloc(100);
        body = dsn_parse_decode(&seen.html, decoded, &body_len);
        dsn_parse_html(body, body_len, text);
        body = vstr_str(text);
        body_len = vstr_len(text);
    }
    ret = dsn_parse_free_form(body, body_len, out, why);
out:
    if (decoded)
        vstr_free(decoded);
    if (text)
        vstr_free(text);
    return ret;
}
