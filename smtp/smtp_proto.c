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
 *
 * The conversation (SMTP_PROTO, at the end) is the client session as a
 * state machine in the manner of smtpd's smtpd_proto: it is fed one
 * complete reply at a time and answers with the commands to send, the
 * recipients that reply decided, and what it means for the session
 * (next MX, content, transaction over, reusable or not, closed). It
 * keeps the queue of replies still awaited, so pipelined replies are
 * matched to their commands in order, and the capability set from EHLO.
 * smtp_session.c does the I/O; smtp_machine_test.c drives it with
 * scripted replies.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "msg.h"
#include "mymalloc.h"
#include "smtp_proto.h"
#include "vstr.h"
#include "xtext.h"

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
    {SMTP_CMD_STARTTLS, 200, 299}, /* 220 expected */
    {SMTP_CMD_AUTH, 235, 235}, /* 334 is handled before the table */
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
        } else if (word == 8 && strncasecmp(cp, "STARTTLS", 8) == 0) {
            features |= SMTP_FEATURE_STARTTLS;
        } else if ((word == 4 && strncasecmp(cp, "AUTH", 4) == 0) ||
                   (word > 5 && strncasecmp(cp, "AUTH=", 5) == 0)) {
            features |= SMTP_FEATURE_AUTH;
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

/* smtp_ehlo_auth - the SASL mechanisms the server offers */
void smtp_ehlo_auth(const SMTP_REPLY *reply, VSTR *mechs)
{
    const char *cp = vstr_str(reply->ehlo);

    vstr_reset(mechs);
    while (*cp) {
        const char *end = strchr(cp, '\n');
        size_t len = end ? (size_t) (end - cp) : strlen(cp);

        if (len > 5 && strncasecmp(cp, "AUTH", 4) == 0 &&
            (cp[4] == ' ' || cp[4] == '=')) {
            const char *word = cp + 5;
            const char *stop = cp + len;

            while (word < stop) {
                size_t wlen;

                while (word < stop && *word == ' ')
                    word++;
                for (wlen = 0; word + wlen < stop && word[wlen] != ' '; wlen++)
                    ;
                if (wlen == 0)
                    break;
                /* Each mechanism once, whichever line named it. */
                {
                    VSTR *one = vstr_alloc(wlen + 1);
                    bool seen = false;

                    vstr_ncpy(one, word, wlen);
                    for (size_t i = 0; i < wlen; i++)
                        vstr_str(one)[i] =
                            (char) toupper((unsigned char) vstr_str(one)[i]);
                    for (const char *m = vstr_str(mechs); *m && !seen;) {
                        size_t mlen = strcspn(m, " ");

                        seen = mlen == wlen &&
                               strncmp(m, vstr_str(one), wlen) == 0;
                        m += mlen;
                        if (*m == ' ')
                            m++;
                    }
                    if (!seen) {
                        if (vstr_len(mechs) > 0)
                            vstr_addch(mechs, ' ');
                        vstr_cat(mechs, vstr_str(one));
                    }
                    vstr_free(one);
                }
                word += wlen;
            }
        }
        cp += len;
        if (*cp == '\n')
            cp++;
    }
}

static const char smtp_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* smtp_base64_encode - RFC 4648 base64, padded */
void smtp_base64_encode(VSTR *out, const char *data, size_t len)
{
    const unsigned char *in = (const unsigned char *) data;

    for (size_t i = 0; i < len; i += 3) {
        unsigned long group = (unsigned long) in[i] << 16;

        if (i + 1 < len)
            group |= (unsigned long) in[i + 1] << 8;
        if (i + 2 < len)
            group |= in[i + 2];
        vstr_addch(out, smtp_b64_alphabet[(group >> 18) & 0x3f]);
        vstr_addch(out, smtp_b64_alphabet[(group >> 12) & 0x3f]);
        vstr_addch(out,
                   i + 1 < len ? smtp_b64_alphabet[(group >> 6) & 0x3f] : '=');
        vstr_addch(out, i + 2 < len ? smtp_b64_alphabet[group & 0x3f] : '=');
    }
}

/* smtp_base64_decode - base64 text to bytes */
int smtp_base64_decode(VSTR *out, const char *text, size_t len)
{
    unsigned long group = 0;
    int bits = 0;
    size_t pad = 0;

    vstr_reset(out);
    for (size_t i = 0; i < len; i++) {
        const char *pos;

        if (text[i] == '=') {
            pad++;
            continue;
        }
        if (pad > 0 || text[i] == 0 ||
            (pos = strchr(smtp_b64_alphabet, text[i])) == NULL)
            return -1;
        group = (group << 6) | (unsigned long) (pos - smtp_b64_alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            vstr_addch(out, (int) ((group >> bits) & 0xff));
        }
    }
    if (pad > 2 || (len % 4) != 0)
        return -1;
    return 0;
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

/* --- the conversation ------------------------------------------------ */

/* Where each recipient of the transaction stands. */
enum {
    SMTP_PROTO_RCPT_PENDING, /* no verdict yet */
    SMTP_PROTO_RCPT_ACCEPTED, /* RCPT accepted: the end of data decides */
    SMTP_PROTO_RCPT_DECIDED, /* a reply (or the caller) decided */
};

/* smtp_proto_alloc - a conversation on a connection being made */
SMTP_PROTO *smtp_proto_alloc(const char *helo_name)
{
    SMTP_PROTO *proto = mycalloc(1, sizeof(*proto));

    proto->state = SMTP_PROTO_ST_CONNECTING;
    proto->helo_name = mystrdup(helo_name);
    proto->reusable = true;
    proto->out = vstr_alloc(512);
    proto->error = vstr_alloc(64);
    proto->auth_mechs = vstr_alloc(32);
    proto->expect_cap = 8;
    proto->expect = mymalloc_array(proto->expect_cap, sizeof(*proto->expect));
    return proto;
}

/* smtp_proto_free - release a conversation; NULL */
SMTP_PROTO *smtp_proto_free(SMTP_PROTO *proto)
{
    myfree(proto->helo_name);
    myfree(proto->rcpt_state);
    myfree(proto->expect);
    myfree(proto->decided);
    vstr_free(proto->out);
    vstr_free(proto->error);
    vstr_free(proto->auth_mechs);
    myfree(proto->auth_mech);
    myfree(proto->auth_user);
    if (proto->auth_pass) {
        memset(proto->auth_pass, 0, strlen(proto->auth_pass));
        myfree(proto->auth_pass);
    }
    myfree(proto);
    return NULL;
}

/* smtp_proto_cmd_name - for "(in reply to X command)" */
const char *smtp_proto_cmd_name(SMTP_CMD cmd)
{
    switch (cmd) {
    case SMTP_CMD_GREETING:
        return "initial greeting";
    case SMTP_CMD_EHLO:
        return "EHLO";
    case SMTP_CMD_HELO:
        return "HELO";
    case SMTP_CMD_MAIL:
        return "MAIL FROM";
    case SMTP_CMD_RCPT:
        return "RCPT TO";
    case SMTP_CMD_DATA:
        return "DATA";
    case SMTP_CMD_DOT:
        return "end of DATA";
    case SMTP_CMD_RSET:
        return "RSET";
    case SMTP_CMD_QUIT:
        return "QUIT";
    case SMTP_CMD_STARTTLS:
        return "STARTTLS";
    case SMTP_CMD_AUTH:
        return "AUTH";
    }
    return "unknown";
}

static SMTP_PROTO_EVENT smtp_proto_auth_challenge(SMTP_PROTO *proto,
                                                  const SMTP_REPLY *reply);

/* smtp_proto_expect - remember that cmd's reply is due */
static void smtp_proto_expect(SMTP_PROTO *proto, SMTP_CMD cmd, size_t rcpt)
{
    if (proto->expect_head + proto->expect_count == proto->expect_cap) {
        if (proto->expect_head > 0) {
            memmove(proto->expect, proto->expect + proto->expect_head,
                    proto->expect_count * sizeof(*proto->expect));
            proto->expect_head = 0;
        } else {
            proto->expect_cap *= 2;
            proto->expect = myrealloc_array(proto->expect, proto->expect_cap,
                                            sizeof(*proto->expect));
        }
    }
    proto->expect[proto->expect_head + proto->expect_count].cmd = cmd;
    proto->expect[proto->expect_head + proto->expect_count].rcpt = rcpt;
    proto->expect_count++;
}

/* smtp_proto_send - one command line, and its reply is due */
static void smtp_proto_send(SMTP_PROTO *proto, SMTP_CMD cmd, size_t rcpt,
                            const char *line)
{
    vstr_cat(proto->out, line);
    vstr_ncat(proto->out, "\r\n", 2);
    smtp_proto_expect(proto, cmd, rcpt);
}

/* smtp_proto_connected - the greeting is the reply to connecting */
void smtp_proto_connected(SMTP_PROTO *proto)
{
    if (proto->state != SMTP_PROTO_ST_CONNECTING)
        msg_panic("%s: connected in state %d", __func__, proto->state);
    proto->state = SMTP_PROTO_ST_GREETING;
    smtp_proto_expect(proto, SMTP_CMD_GREETING, 0);
}

/* smtp_proto_waiting - the n-th awaited reply's command, or -1 */
int smtp_proto_waiting(const SMTP_PROTO *proto, size_t n)
{
    if (n >= proto->expect_count)
        return -1;
    return (int) proto->expect[proto->expect_head + n].cmd;
}

/* smtp_proto_decide - the last reply decides recipient index */
static void smtp_proto_decide(SMTP_PROTO *proto, size_t index)
{
    if (proto->decided_count == proto->decided_cap) {
        proto->decided_cap = proto->decided_cap ? 2 * proto->decided_cap : 8;
        proto->decided = myrealloc_array(proto->decided, proto->decided_cap,
                                         sizeof(*proto->decided));
    }
    proto->rcpt_state[index] = SMTP_PROTO_RCPT_DECIDED;
    proto->decided[proto->decided_count++] = index;
}

/* smtp_proto_decide_all - the last reply decides every recipient in
   state which (or, with which < 0, every undecided one) */
static void smtp_proto_decide_all(SMTP_PROTO *proto, int which)
{
    for (size_t i = 0; i < proto->txn->rcpt_count; i++)
        if (which < 0 ? proto->rcpt_state[i] != SMTP_PROTO_RCPT_DECIDED
                      : proto->rcpt_state[i] == which)
            smtp_proto_decide(proto, i);
}

/* smtp_proto_txn_over - the transaction has ended */
static SMTP_PROTO_EVENT smtp_proto_txn_over(SMTP_PROTO *proto)
{
    proto->state = SMTP_PROTO_ST_READY;
    return SMTP_PROTO_EV_TXN_DONE;
}

/* smtp_proto_rcpts - the next RCPT (every RCPT and DATA when pipelining),
   DATA after the last, or the end when nobody was accepted */
static SMTP_PROTO_EVENT smtp_proto_rcpts(SMTP_PROTO *proto, size_t from)
{
    const SMTP_PROTO_TXN *txn = proto->txn;
    VSTR *line = vstr_alloc(200);
    bool dsn = (proto->caps & SMTP_FEATURE_DSN) != 0;
    bool pipelining = (proto->caps & SMTP_FEATURE_PIPELINING) != 0;

    for (size_t i = from; i < txn->rcpt_count; i++) {
        const SMTP_PROTO_RCPT *rcpt = txn->rcpts + i;

        if (proto->rcpt_state[i] != SMTP_PROTO_RCPT_PENDING)
            continue;
        vstr_sprintf(line, "RCPT TO:<%s>", rcpt->address);
        if (dsn && rcpt->notify && *rcpt->notify)
            vstr_sprintf_append(line, " NOTIFY=%s", rcpt->notify);
        if (dsn && rcpt->orcpt && *rcpt->orcpt)
            vstr_sprintf_append(line, " ORCPT=%s", rcpt->orcpt);
        smtp_proto_send(proto, SMTP_CMD_RCPT, i, vstr_str(line));
        if (!pipelining) {
            vstr_free(line);
            return SMTP_PROTO_EV_NONE;
        }
    }
    vstr_free(line);
    if (pipelining || proto->accepted > 0) {
        smtp_proto_send(proto, SMTP_CMD_DATA, 0, "DATA");
        return SMTP_PROTO_EV_NONE;
    }
    return smtp_proto_txn_over(proto); /* nobody accepted: no DATA */
}

/* smtp_proto_mail - a transaction: MAIL, and RCPTs and DATA pipelined */
SMTP_PROTO_EVENT smtp_proto_mail(SMTP_PROTO *proto, const SMTP_PROTO_TXN *txn)
{
    VSTR *line;

    if (proto->state != SMTP_PROTO_ST_READY)
        msg_panic("%s: transaction in state %d", __func__, proto->state);
    proto->txn = txn;
    if (txn->rcpt_count > proto->rcpt_cap) {
        proto->rcpt_cap = txn->rcpt_count;
        proto->rcpt_state = myrealloc_array(proto->rcpt_state, proto->rcpt_cap,
                                            sizeof(*proto->rcpt_state));
    }
    for (size_t i = 0; i < txn->rcpt_count; i++)
        proto->rcpt_state[i] = txn->rcpts[i].done ? SMTP_PROTO_RCPT_DECIDED
                                                  : SMTP_PROTO_RCPT_PENDING;
    proto->accepted = 0;
    proto->mail_failed = false;
    proto->txn_reply = false;
    proto->decided_count = 0;
    proto->refusal = SMTP_PROTO_REFUSE_NONE;
    if (!(proto->caps & SMTP_FEATURE_8BITMIME) &&
        (txn->body_8bit || txn->content_8bit))
        proto->refusal = SMTP_PROTO_REFUSE_8BIT;
    else if ((proto->caps & SMTP_FEATURE_SIZE) && proto->size_limit > 0 &&
             txn->size > proto->size_limit)
        proto->refusal = SMTP_PROTO_REFUSE_SIZE;
    if (proto->refusal != SMTP_PROTO_REFUSE_NONE) {
        smtp_proto_decide_all(proto, -1);
        return SMTP_PROTO_EV_TXN_DONE; /* still READY: nothing was sent */
    }
    proto->state = SMTP_PROTO_ST_TXN;
    line = vstr_alloc(200);
    vstr_sprintf(line, "MAIL FROM:<%s>", txn->sender);
    if (proto->caps & SMTP_FEATURE_SIZE)
        vstr_sprintf_append(line, " SIZE=%lld", txn->size);
    if ((proto->caps & SMTP_FEATURE_8BITMIME) && txn->body_8bit)
        vstr_cat(line, " BODY=8BITMIME");
    if (proto->caps & SMTP_FEATURE_DSN) {
        if (txn->ret && *txn->ret)
            vstr_sprintf_append(line, " RET=%s", txn->ret);
        if (txn->envid && *txn->envid) {
            /* The queue file holds it decoded (RFC 3461 4.4). */
            vstr_cat(line, " ENVID=");
            xtext_encode(line, txn->envid, strlen(txn->envid));
        }
    }
    smtp_proto_send(proto, SMTP_CMD_MAIL, 0, vstr_str(line));
    vstr_free(line);
    if (proto->caps & SMTP_FEATURE_PIPELINING)
        return smtp_proto_rcpts(proto, 0);
    return SMTP_PROTO_EV_NONE;
}

/* smtp_proto_data_end - the content is out: its reply is due */
void smtp_proto_data_end(SMTP_PROTO *proto)
{
    if (proto->state != SMTP_PROTO_ST_CONTENT)
        msg_panic("%s: end of data in state %d", __func__, proto->state);
    proto->state = SMTP_PROTO_ST_DOT;
    /* The encoder wrote the final ".\r\n" with the content. */
    smtp_proto_expect(proto, SMTP_CMD_DOT, 0);
}

/* smtp_proto_txn_closed - did the last transaction end with a 2xx to the
   end of data, with nothing awaited? RFC 5321 4.1.4: MAIL may then begin
   the next transaction (no transaction is open), so no RSET is needed */
bool smtp_proto_txn_closed(const SMTP_PROTO *proto)
{
    return proto->state == SMTP_PROTO_ST_READY && proto->expect_count == 0 &&
           proto->cmd == SMTP_CMD_DOT && proto->code >= 200 &&
           proto->code <= 299 && proto->reusable;
}

/* smtp_proto_rset - keep the connection: RSET */
void smtp_proto_rset(SMTP_PROTO *proto)
{
    proto->state = SMTP_PROTO_ST_RSET;
    smtp_proto_send(proto, SMTP_CMD_RSET, 0, "RSET");
}

/* smtp_proto_quit - say goodbye */
void smtp_proto_quit(SMTP_PROTO *proto)
{
    proto->state = SMTP_PROTO_ST_QUIT;
    proto->reusable = false;
    proto->expect_count = 0;
    proto->expect_head = 0;
    smtp_proto_send(proto, SMTP_CMD_QUIT, 0, "QUIT");
}

/* smtp_proto_tls_started - TLS is up: EHLO again */
void smtp_proto_tls_started(SMTP_PROTO *proto)
{
    if (proto->state != SMTP_PROTO_ST_TLS)
        msg_panic("%s: TLS started in state %d", __func__, proto->state);
    proto->tls_active = true;
    proto->greeted = false;
    proto->caps = 0;
    proto->size_limit = 0;
    vstr_reset(proto->auth_mechs);
    vstr_sprintf(proto->error, "EHLO %s", proto->helo_name);
    smtp_proto_send(proto, SMTP_CMD_EHLO, 0, vstr_str(proto->error));
    vstr_reset(proto->error);
    proto->state = SMTP_PROTO_ST_EHLO;
}

/* smtp_proto_auth - AUTH with the initial response (PLAIN) or none */
void smtp_proto_auth(SMTP_PROTO *proto, const char *mech, const char *user,
                     const char *pass)
{
    VSTR *line = vstr_alloc(128);

    if (proto->state != SMTP_PROTO_ST_READY)
        msg_panic("%s: AUTH in state %d", __func__, proto->state);
    myfree(proto->auth_mech);
    myfree(proto->auth_user);
    myfree(proto->auth_pass);
    proto->auth_mech = mystrdup(mech);
    proto->auth_user = mystrdup(user);
    proto->auth_pass = mystrdup(pass);
    proto->auth_step = 0;
    vstr_sprintf(line, "AUTH %s", mech);
    if (strcasecmp(mech, "PLAIN") == 0) {
        /* authzid NUL authcid NUL password (RFC 4616), authzid empty */
        VSTR *plain = vstr_alloc(64);

        vstr_addch(plain, 0);
        vstr_cat(plain, user);
        vstr_addch(plain, 0);
        vstr_cat(plain, pass);
        vstr_addch(line, ' ');
        smtp_base64_encode(line, vstr_str(plain), vstr_len(plain));
        memset(vstr_str(plain), 0, vstr_len(plain));
        vstr_free(plain);
    }
    smtp_proto_send(proto, SMTP_CMD_AUTH, 0, vstr_str(line));
    memset(vstr_str(line), 0, vstr_len(line));
    vstr_free(line);
    proto->state = SMTP_PROTO_ST_AUTH;
}

/* smtp_proto_auth_challenge - a 334: the next answer, or give up */
static SMTP_PROTO_EVENT smtp_proto_auth_challenge(SMTP_PROTO *proto,
                                                  const SMTP_REPLY *reply)
{
    VSTR *answer;
    const char *what;

    if (proto->auth_mech == NULL || strcasecmp(proto->auth_mech, "LOGIN") ||
        proto->auth_step >= 2) {
        /* PLAIN sent everything at once; LOGIN has two questions. The
           server waits for an answer: the connection is done for. */
        vstr_cpy(proto->error, "authentication protocol loop");
        proto->state = SMTP_PROTO_ST_READY;
        proto->reusable = false;
        return SMTP_PROTO_EV_AUTH_FAILED;
    }
    what = proto->auth_step++ == 0 ? proto->auth_user : proto->auth_pass;
    answer = vstr_alloc(64);
    smtp_base64_encode(answer, what, strlen(what));
    smtp_proto_send(proto, SMTP_CMD_AUTH, 0, vstr_str(answer));
    memset(vstr_str(answer), 0, vstr_len(answer));
    vstr_free(answer);
    (void) reply;
    return SMTP_PROTO_EV_NONE;
}

/* smtp_proto_error - the server broke the protocol; what is in
   proto->error */
static SMTP_PROTO_EVENT smtp_proto_error(SMTP_PROTO *proto)
{
    proto->state = SMTP_PROTO_ST_CLOSED;
    proto->reusable = false;
    proto->expect_count = 0;
    proto->expect_head = 0;
    return SMTP_PROTO_EV_ERROR;
}

/* smtp_proto_reply - one complete reply. What it means comes from
   smtp_reply_verdict() alone: only its OK is success, 4xx/5xx are
   failures, anything else is a protocol error that ends the connection.
   A 421 in a transaction ends it (the server is closing the channel, RFC
   5321 3.8): whoever is undecided is deferred with it, and the connection
   is not reused. */
SMTP_PROTO_EVENT smtp_proto_reply(SMTP_PROTO *proto, const SMTP_REPLY *reply)
{
    SMTP_PROTO_EXPECT exp;
    SMTP_VERDICT verdict;
    int code = reply->code;

    proto->decided_count = 0;
    proto->refusal = SMTP_PROTO_REFUSE_NONE;
    if (proto->expect_count == 0) {
        vstr_cpy(proto->error, "reply without a command");
        return smtp_proto_error(proto);
    }
    exp = proto->expect[proto->expect_head];
    proto->expect_head++;
    if (--proto->expect_count == 0)
        proto->expect_head = 0;
    proto->code = code;
    proto->cmd = exp.cmd;
    if (exp.cmd == SMTP_CMD_MAIL || exp.cmd == SMTP_CMD_RCPT ||
        exp.cmd == SMTP_CMD_DATA || exp.cmd == SMTP_CMD_DOT)
        proto->txn_reply = true;
    if (exp.cmd == SMTP_CMD_AUTH && code == 334)
        return smtp_proto_auth_challenge(proto, reply);
    verdict = smtp_reply_verdict(exp.cmd, code);
    if (exp.cmd == SMTP_CMD_QUIT) {
        proto->state = SMTP_PROTO_ST_CLOSED;
        return SMTP_PROTO_EV_CLOSED;
    }
    if (verdict == SMTP_VERDICT_PROTO) {
        vstr_sprintf(proto->error, "unexpected reply to %s command",
                     smtp_proto_cmd_name(exp.cmd));
        return smtp_proto_error(proto);
    }
    if (code == 421 && (exp.cmd == SMTP_CMD_MAIL || exp.cmd == SMTP_CMD_RCPT ||
                        exp.cmd == SMTP_CMD_DATA || exp.cmd == SMTP_CMD_DOT)) {
        proto->reusable = false;
        proto->expect_count = 0;
        proto->expect_head = 0;
        smtp_proto_decide_all(proto, -1);
        return smtp_proto_txn_over(proto);
    }

    switch (exp.cmd) {
    case SMTP_CMD_QUIT: /* above */
        break;
    case SMTP_CMD_STARTTLS:
        if (verdict == SMTP_VERDICT_OK) {
            proto->state = SMTP_PROTO_ST_TLS;
            return SMTP_PROTO_EV_STARTTLS;
        }
        proto->state = SMTP_PROTO_ST_READY;
        return SMTP_PROTO_EV_STARTTLS_REFUSED;
    case SMTP_CMD_AUTH:
        proto->state = SMTP_PROTO_ST_READY;
        if (verdict == SMTP_VERDICT_OK)
            return SMTP_PROTO_EV_AUTH_OK;
        proto->reusable = false;
        vstr_reset(proto->error);
        return SMTP_PROTO_EV_AUTH_FAILED;
    case SMTP_CMD_GREETING:
        if (verdict != SMTP_VERDICT_OK) {
            proto->reusable = false;
            return SMTP_PROTO_EV_REFUSED;
        }
        vstr_sprintf(proto->error, "EHLO %s", proto->helo_name);
        smtp_proto_send(proto, SMTP_CMD_EHLO, 0, vstr_str(proto->error));
        vstr_reset(proto->error);
        proto->state = SMTP_PROTO_ST_EHLO;
        return SMTP_PROTO_EV_NONE;
    case SMTP_CMD_EHLO:
    case SMTP_CMD_HELO:
        if (verdict == SMTP_VERDICT_OK) {
            proto->caps = exp.cmd == SMTP_CMD_EHLO
                              ? smtp_ehlo_features(reply, &proto->size_limit)
                              : 0;
            if (exp.cmd == SMTP_CMD_EHLO)
                smtp_ehlo_auth(reply, proto->auth_mechs);
            else
                vstr_reset(proto->auth_mechs);
            proto->greeted = true;
            if (proto->tls_wanted && !proto->tls_active &&
                (proto->caps & SMTP_FEATURE_STARTTLS)) {
                smtp_proto_send(proto, SMTP_CMD_STARTTLS, 0, "STARTTLS");
                proto->state = SMTP_PROTO_ST_STARTTLS;
                return SMTP_PROTO_EV_NONE;
            }
            proto->state = SMTP_PROTO_ST_READY;
            return SMTP_PROTO_EV_GREETED;
        }
        if (exp.cmd == SMTP_CMD_EHLO && verdict == SMTP_VERDICT_PERM) {
            vstr_sprintf(proto->error, "HELO %s", proto->helo_name);
            smtp_proto_send(proto, SMTP_CMD_HELO, 0, vstr_str(proto->error));
            vstr_reset(proto->error);
            proto->state = SMTP_PROTO_ST_HELO;
            return SMTP_PROTO_EV_NONE;
        }
        proto->reusable = false;
        return SMTP_PROTO_EV_REFUSED;
    case SMTP_CMD_RSET:
        if (verdict != SMTP_VERDICT_OK) {
            proto->reusable = false;
            return SMTP_PROTO_EV_RSET_FAILED;
        }
        if (proto->state == SMTP_PROTO_ST_RSET)
            proto->state = SMTP_PROTO_ST_READY;
        return SMTP_PROTO_EV_RSET_OK;
    case SMTP_CMD_MAIL:
        if (verdict != SMTP_VERDICT_OK) {
            proto->mail_failed = true;
            smtp_proto_decide_all(proto, SMTP_PROTO_RCPT_PENDING);
            if (!(proto->caps & SMTP_FEATURE_PIPELINING))
                return smtp_proto_txn_over(proto);
            return SMTP_PROTO_EV_NONE;
        }
        if (!(proto->caps & SMTP_FEATURE_PIPELINING))
            return smtp_proto_rcpts(proto, 0);
        return SMTP_PROTO_EV_NONE;
    case SMTP_CMD_RCPT:
        if (!proto->mail_failed) {
            if (verdict == SMTP_VERDICT_OK) {
                proto->rcpt_state[exp.rcpt] = SMTP_PROTO_RCPT_ACCEPTED;
                proto->accepted++;
            } else {
                smtp_proto_decide(proto, exp.rcpt);
            }
        }
        if (!(proto->caps & SMTP_FEATURE_PIPELINING))
            return smtp_proto_rcpts(proto, exp.rcpt + 1);
        return SMTP_PROTO_EV_NONE;
    case SMTP_CMD_DATA:
        if (verdict == SMTP_VERDICT_OK && proto->accepted > 0 &&
            !proto->mail_failed) {
            proto->state = SMTP_PROTO_ST_CONTENT;
            return SMTP_PROTO_EV_CONTENT;
        }
        if (verdict == SMTP_VERDICT_OK)
            proto->reusable = false; /* DATA without anyone: cannot end it */
        else if (proto->accepted > 0)
            smtp_proto_decide_all(proto, SMTP_PROTO_RCPT_ACCEPTED);
        return smtp_proto_txn_over(proto);
    case SMTP_CMD_DOT:
        smtp_proto_decide_all(proto, SMTP_PROTO_RCPT_ACCEPTED);
        return smtp_proto_txn_over(proto);
    }
    return SMTP_PROTO_EV_NONE;
}
