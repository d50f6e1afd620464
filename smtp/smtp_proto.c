/*
 * smtp_proto - the SMTP client's protocol pieces that need no I/O
 *
 * Replies are read a line at a time into an SMTP_REPLY until the line
 * whose code is followed by a space (or nothing); every line of a reply
 * carries the same code. smtp_reply_verdict() says what a reply means
 * for the command it answers, from one table, so no state of the client
 * takes an unexpected code for success. The content encoder keeps a few
 * bits of state between chunks (start of a line, header block, a CR
 * waiting for its next byte), so the queue file's C records can be sent as
 * they are read.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "mymalloc.h"
#include "smtp_proto.h"
#include "vstr.h"

/* smtp_reply_alloc - an empty reply */
SMTP_REPLY *smtp_reply_alloc(void)
{
    SMTP_REPLY *reply = mycalloc(1, sizeof(*reply));

    reply->text = vstr_alloc(100);
    reply->ehlo = vstr_alloc(100);
    return reply;
}

/* smtp_reply_free - release a reply; NULL */
SMTP_REPLY *smtp_reply_free(SMTP_REPLY *reply)
{
    vstr_free(reply->text);
    vstr_free(reply->ehlo);
    myfree(reply);
    return NULL;
}

/* smtp_reply_reset - ready for the next reply */
void smtp_reply_reset(SMTP_REPLY *reply)
{
    reply->code = 0;
    reply->lines = 0;
    reply->done = false;
    vstr_reset(reply->text);
    vstr_reset(reply->ehlo);
}

/* smtp_reply_line - one line of a reply */
int smtp_reply_line(SMTP_REPLY *reply, const char *line, size_t len)
{
    int code;
    bool last;

    if (reply->done)
        smtp_reply_reset(reply);
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len < 3 || !isdigit((unsigned char) line[0]) ||
        !isdigit((unsigned char) line[1]) || !isdigit((unsigned char) line[2]))
        return -1;
    if (len > 3 && line[3] != ' ' && line[3] != '-')
        return -1;
    code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code < 200 || code > 599)
        return -1;
    if (reply->code != 0 && code != reply->code)
        return -1; /* RFC 5321 4.2.1: one code for every line */
    if (++reply->lines > SMTP_REPLY_LINES_MAX)
        return -1;
    last = len == 3 || line[3] == ' ';
    if (reply->code == 0)
        reply->code = code;
    if (len > SMTP_REPLY_LINE_MAX)
        len = SMTP_REPLY_LINE_MAX;
    if (vstr_len(reply->text) > 0)
        vstr_addch(reply->text, ' ');
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char) line[i];

        /* The text goes into logs and DSNs: no control characters. */
        vstr_addch(reply->text, ch < ' ' || ch == 0x7f ? '?' : ch);
    }
    if (len > 4)
        vstr_ncat(reply->ehlo, line + 4, len - 4);
    vstr_addch(reply->ehlo, '\n');
    if (last)
        reply->done = true;
    return last ? 1 : 0;
}

/* The positive replies of each command; 4xx and 5xx are failures, any
   other code a protocol error. */
static const struct {
    SMTP_CMD cmd;
    int ok_min;
    int ok_max;
} smtp_verdict_table[] = {
    {SMTP_CMD_GREETING, 200, 299}, /* 220 expected */
    {SMTP_CMD_EHLO, 200, 299},
    {SMTP_CMD_HELO, 200, 299},
    {SMTP_CMD_MAIL, 200, 299},
    {SMTP_CMD_RCPT, 200, 299}, /* 250, 251, 252 */
    {SMTP_CMD_DATA, 354, 354}, /* a 2xx here never means the mail is sent */
    {SMTP_CMD_DOT, 200, 299},
    {SMTP_CMD_RSET, 200, 299},
    {SMTP_CMD_QUIT, 200, 299}, /* 221 expected */
};

/* smtp_reply_verdict - what code means after cmd */
SMTP_VERDICT smtp_reply_verdict(SMTP_CMD cmd, int code)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(smtp_verdict_table); i++) {
        if (smtp_verdict_table[i].cmd != cmd)
            continue;
        if (code >= smtp_verdict_table[i].ok_min &&
            code <= smtp_verdict_table[i].ok_max)
            return SMTP_VERDICT_OK;
        break;
    }
    if (code >= 400 && code <= 499)
        return SMTP_VERDICT_TEMP;
    if (code >= 500 && code <= 599)
        return SMTP_VERDICT_PERM;
    return SMTP_VERDICT_PROTO;
}

/* smtp_ehlo_features - the ESMTP keywords we use */
int smtp_ehlo_features(const SMTP_REPLY *reply, long long *size_limit)
{
    const char *cp = vstr_str(reply->ehlo);
    int features = 0;

    *size_limit = 0;
    while (*cp) {
        const char *end = strchr(cp, '\n');
        size_t len = end ? (size_t) (end - cp) : strlen(cp);
        size_t word = strcspn(cp, " \n");

        if (word > len)
            word = len;
        if (word == 10 && strncasecmp(cp, "PIPELINING", 10) == 0) {
            features |= SMTP_FEATURE_PIPELINING;
        } else if (word == 8 && strncasecmp(cp, "8BITMIME", 8) == 0) {
            features |= SMTP_FEATURE_8BITMIME;
        } else if (word == 3 && strncasecmp(cp, "DSN", 3) == 0) {
            features |= SMTP_FEATURE_DSN;
        } else if (word == 4 && strncasecmp(cp, "SIZE", 4) == 0) {
            features |= SMTP_FEATURE_SIZE;
            if (len > 5) {
                char *stop;
                long long value;

                errno = 0;
                value = strtoll(cp + 5, &stop, 10);
                if (errno == 0 && stop > cp + 5 && value > 0)
                    *size_limit = value;
            }
        }
        cp += len;
        if (*cp == '\n')
            cp++;
    }
    return features;
}

/* smtp_reply_dsn - enhanced status code, from the text or derived */
void smtp_reply_dsn(int code, const char *text, char *dsn, size_t len)
{
    int cls = code / 100;
    const char *cp = text;
    size_t n = 0;
    int dots = 0; /* after "X." */

    /* Skip "550 " or "550-". */
    if (strlen(cp) > 4 && isdigit((unsigned char) cp[0]))
        cp += 4;
    if (cp[0] - '0' == cls && cp[1] == '.') {
        n = 2;
        while (isdigit((unsigned char) cp[n]) || cp[n] == '.') {
            if (cp[n] == '.')
                dots++;
            n++;
        }
        if (dots == 1 && cp[n - 1] != '.' && cp[2] != '.' &&
            (cp[n] == 0 || cp[n] == ' ') && n < len && n <= 11) {
            snprintf(dsn, len, "%.*s", (int) n, cp);
            return;
        }
    }
    snprintf(dsn, len, "%d.0.0", cls == 2 ? 2 : cls == 4 ? 4 : 5);
}

/* smtp_nexthop_parse - the next hop's host, port and whether to use MX */
int smtp_nexthop_parse(const char *nexthop, int default_port, VSTR *host,
                       int *port, bool *mx, VSTR *why)
{
    const char *end;
    const char *port_text = NULL;
    size_t len;

    if (nexthop[0] == '[') {
        if ((end = strchr(nexthop, ']')) == NULL)
            goto bad;
        len = (size_t) (end - nexthop - 1);
        vstr_ncpy(host, nexthop + 1, len);
        if (end[1] == ':')
            port_text = end + 2;
        else if (end[1] != 0)
            goto bad;
        *mx = false;
    } else {
        end = strrchr(nexthop, ':');
        len = end ? (size_t) (end - nexthop) : strlen(nexthop);
        vstr_ncpy(host, nexthop, len);
        if (end)
            port_text = end + 1;
        *mx = true;
    }
    if (vstr_len(host) == 0 ||
        strcspn(vstr_str(host), " \t\r\n[]") != vstr_len(host))
        goto bad;
    if (strncasecmp(vstr_str(host), "ipv6:", 5) == 0) {
        memmove(vstr_str(host), vstr_str(host) + 5, vstr_len(host) - 4);
        vstr_truncate(host, vstr_len(host) - 5);
    }
    *port = default_port;
    if (port_text != NULL) {
        char *stop;
        long num;

        errno = 0;
        num = strtol(port_text, &stop, 10);
        if (errno || stop == port_text || *stop || num < 1 || num > 65535)
            goto bad;
        *port = (int) num;
    }
    return 0;

bad:
    vstr_sprintf(why, "bad next hop \"%s\"", nexthop);
    return -1;
}

/* smtp_enc_init - at the start of the content */
void smtp_enc_init(SMTP_ENC *enc)
{
    enc->bol = true;
    enc->header = true;
    enc->pending_cr = false;
    enc->nul_count = 0;
    enc->cr_count = 0;
}

/* smtp_enc_line_end - CRLF; an empty line ends the header block */
static void smtp_enc_line_end(SMTP_ENC *enc, VSTR *out)
{
    if (enc->bol)
        enc->header = false;
    vstr_ncat(out, "\r\n", 2);
    enc->bol = true;
}

/* smtp_enc_feed - lines to CRLF, a '.' at a line start doubled, a bare
   CR rewritten, NUL removed (see smtp.h) */
void smtp_enc_feed(SMTP_ENC *enc, const char *data, size_t len, VSTR *out)
{
    const char *cp = data;
    const char *end = data + len;

    vstr_reserve(out, len + len / 32 + 8);
    while (cp < end) {
        const char *span_end;

        if (enc->pending_cr) {
            enc->pending_cr = false;
            if (*cp != '\n') {
                /* A bare CR; this byte is looked at afresh below. */
                enc->cr_count++;
                if (enc->header) {
                    vstr_addch(out, ' ');
                    enc->bol = false;
                } else {
                    vstr_ncat(out, "\r\n", 2);
                    enc->bol = true;
                }
                continue;
            }
            /* CR LF: the LF below ends the line. */
        }
        if (*cp == 0) {
            enc->nul_count++;
            cp++;
            continue;
        }
        if (*cp == '\r') {
            enc->pending_cr = true;
            cp++;
            continue;
        }
        if (*cp == '\n') {
            smtp_enc_line_end(enc, out);
            cp++;
            continue;
        }
        if (enc->bol && *cp == '.')
            vstr_addch(out, '.');
        for (span_end = cp; span_end < end && *span_end != '\n' &&
                            *span_end != '\r' && *span_end != 0;
             span_end++)
            ;
        vstr_ncat(out, cp, (size_t) (span_end - cp));
        cp = span_end;
        enc->bol = false;
    }
}

/* smtp_enc_finish - the end of the content */
void smtp_enc_finish(SMTP_ENC *enc, VSTR *out)
{
    /* A CR at the very end ends the last line, as CR LF would. */
    if (enc->pending_cr || !enc->bol) {
        enc->pending_cr = false;
        smtp_enc_line_end(enc, out);
    }
    vstr_ncat(out, ".\r\n", 3);
    enc->bol = true;
}

/* smtp_has_8bit - any byte over 0x7f? */
bool smtp_has_8bit(const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) data[i] & 0x80)
            return true;
    return false;
}

/* smtp_soft_dsn - permanent to temporary */
void smtp_soft_dsn(char *dsn)
{
    if (dsn[0] == '5')
        dsn[0] = '4';
}
