/*
 * milter - encode the MTA's milter packets, decode a milter's replies
 *
 * The protocol is described in milter.h. Decoding is strict: a reply
 * whose strings are not NUL-ended, whose header name is not a header
 * name, or whose reply code is not a 4xx or 5xx SMTP reply is refused
 * with a reason, and the caller treats the milter as failed.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>

#include "milter.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

/* milter_put32 - append a 32-bit big-endian number */
static void milter_put32(VSTR *out, uint32_t value)
{
    vstr_addch(out, (int) ((value >> 24) & 0xff));
    vstr_addch(out, (int) ((value >> 16) & 0xff));
    vstr_addch(out, (int) ((value >> 8) & 0xff));
    vstr_addch(out, (int) (value & 0xff));
}

/* milter_get32 - a 32-bit big-endian number */
static uint32_t milter_get32(const char *buf)
{
    const unsigned char *cp = (const unsigned char *) buf;

    return ((uint32_t) cp[0] << 24) | ((uint32_t) cp[1] << 16) |
           ((uint32_t) cp[2] << 8) | cp[3];
}

/* milter_packet - append one packet */
void milter_packet(VSTR *out, int cmd, const char *data, size_t len)
{
    if (len > MILTER_PACKET_MAX)
        msg_panic("%s: packet of %zu bytes", __func__, len);
    milter_put32(out, (uint32_t) len + 1);
    vstr_addch(out, cmd);
    if (len > 0)
        vstr_ncat(out, data, len);
}

/* milter_packet_strs - a packet of NUL-ended strings */
void milter_packet_strs(VSTR *out, int cmd, ...)
{
    VSTR *data = vstr_alloc(100);
    const char *str;
    va_list ap;

    va_start(ap, cmd);
    while ((str = va_arg(ap, const char *)) != NULL) {
        vstr_cat(data, str);
        vstr_addch(data, 0);
    }
    va_end(ap);
    milter_packet(out, cmd, vstr_str(data), vstr_len(data));
    vstr_free(data);
}

/* milter_optneg - the MTA's OPTNEG */
void milter_optneg(VSTR *out)
{
    VSTR *data = vstr_alloc(16);

    milter_put32(data, MILTER_PROTO_VERSION);
    milter_put32(data, MILTER_ACTIONS_OFFERED);
    milter_put32(data, MILTER_STEPS_OFFERED);
    milter_packet(out, MILTER_CMD_OPTNEG, vstr_str(data), vstr_len(data));
    vstr_free(data);
}

/* milter_connect - the CONNECT packet */
void milter_connect(VSTR *out, const char *host, int family, int port,
                    const char *addr)
{
    VSTR *data = vstr_alloc(100);

    vstr_cat(data, host);
    vstr_addch(data, 0);
    vstr_addch(data, family);
    if (family == '4' || family == '6') {
        vstr_addch(data, (port >> 8) & 0xff);
        vstr_addch(data, port & 0xff);
        vstr_cat(data, addr);
        vstr_addch(data, 0);
    }
    milter_packet(out, MILTER_CMD_CONNECT, vstr_str(data), vstr_len(data));
    vstr_free(data);
}

/* milter_packet_length - what a packet header announces */
long milter_packet_length(const unsigned char hdr[4])
{
    uint32_t len = ((uint32_t) hdr[0] << 24) | ((uint32_t) hdr[1] << 16) |
                   ((uint32_t) hdr[2] << 8) | hdr[3];

    if (len == 0 || len > MILTER_PACKET_MAX)
        return -1;
    return (long) len;
}

/* milter_take_str - the NUL-ended string at *pos; false when none */
static bool milter_take_str(const char *buf, size_t len, size_t *pos,
                            const char **out)
{
    const char *end;

    if (*pos >= len)
        return false;
    if ((end = memchr(buf + *pos, 0, len - *pos)) == NULL)
        return false;
    *out = buf + *pos;
    *pos = (size_t) (end - buf) + 1;
    return true;
}

/* milter_header_name_ok - RFC 5322 field name: printable, no colon */
static bool milter_header_name_ok(const char *name)
{
    if (*name == 0 || strlen(name) > 998)
        return false;
    for (const char *cp = name; *cp; cp++)
        if (*cp <= ' ' || *cp >= 127 || *cp == ':')
            return false;
    return true;
}

/* milter_header_value_ok - no bare CR, folded lines start with white space */
static bool milter_header_value_ok(const char *value)
{
    for (const char *cp = value; *cp; cp++) {
        if (*cp == '\r' && cp[1] != '\n')
            return false;
        if (*cp == '\n' && cp[1] != ' ' && cp[1] != '\t')
            return false;
    }
    return true;
}

/* milter_replycode_ok - an SMTP reply a milter may give */
bool milter_replycode_ok(const char *text)
{
    const char *cp = text;

    if (!((cp[0] == '4' || cp[0] == '5') && isdigit((unsigned char) cp[1]) &&
          isdigit((unsigned char) cp[2])))
        return false;
    for (;;) {
        const char *eol;

        if (strncmp(cp, text, 3) != 0)
            return false;
        eol = strstr(cp, "\r\n");
        if (eol == NULL) {
            if (cp[3] != 0 && cp[3] != ' ')
                return false;
            eol = cp + strlen(cp);
        } else if (cp[3] != '-') {
            return false;
        }
        for (const char *p = cp + 3; p < eol; p++)
            if ((unsigned char) *p < ' ' || (unsigned char) *p >= 127)
                return false;
        if (*eol == 0)
            return true;
        cp = eol + 2;
    }
}

/* milter_reply_parse - decode one reply packet */
int milter_reply_parse(const char *buf, size_t len, MILTER_REPLY *rep,
                       VSTR *why)
{
    size_t pos = 1;
    const char *data = buf + 1;
    size_t dlen = len - 1;

    memset(rep, 0, sizeof(*rep));
    if (len < 1) {
        vstr_cpy(why, "empty packet");
        return -1;
    }
    rep->cmd = (unsigned char) buf[0];
    switch (rep->cmd) {
    case MILTER_REP_CONTINUE:
    case MILTER_REP_ACCEPT:
    case MILTER_REP_REJECT:
    case MILTER_REP_TEMPFAIL:
    case MILTER_REP_DISCARD:
    case MILTER_REP_PROGRESS:
    case MILTER_REP_SKIP:
    case MILTER_REP_CONN_FAIL:
    case MILTER_REP_SHUTDOWN:
        /* libmilter sends none; some milters end with a NUL. */
        if (dlen > 1 || (dlen == 1 && data[0] != 0)) {
            vstr_sprintf(why, "reply '%c' with %zu bytes of data", rep->cmd,
                         dlen);
            return -1;
        }
        return 0;
    case MILTER_REP_OPTNEG:
        /* Version 6 may add a macro list after the three numbers. */
        if (dlen < 12) {
            vstr_sprintf(why, "OPTNEG reply of %zu bytes", dlen);
            return -1;
        }
        rep->version = milter_get32(data);
        rep->actions = milter_get32(data + 4);
        rep->steps = milter_get32(data + 8);
        return 0;
    case MILTER_REP_REPLYCODE:
        if (!milter_take_str(buf, len, &pos, &rep->text) || pos != len) {
            vstr_cpy(why, "reply code not one NUL-ended string");
            return -1;
        }
        if (!milter_replycode_ok(rep->text)) {
            vstr_cpy(why, "reply code is not a 4xx or 5xx SMTP reply");
            return -1;
        }
        return 0;
    case MILTER_REP_QUARANTINE:
    case MILTER_REP_ADDRCPT:
    case MILTER_REP_DELRCPT:
    case MILTER_REP_ADDRCPT_PAR:
    case MILTER_REP_CHGFROM:
    case MILTER_REP_SETSYMLIST:
        /* Taken apart only as far as we use them: a string first. */
        if (!milter_take_str(buf, len, &pos, &rep->text)) {
            vstr_sprintf(why, "reply '%c' without a NUL-ended string",
                         rep->cmd);
            return -1;
        }
        return 0;
    case MILTER_REP_INSHEADER:
    case MILTER_REP_CHGHEADER:
        if (dlen < 4) {
            vstr_sprintf(why, "reply '%c' without an index", rep->cmd);
            return -1;
        }
        rep->index = milter_get32(data);
        pos += 4;
        /* FALLTHROUGH */
    case MILTER_REP_ADDHEADER:
        if (!milter_take_str(buf, len, &pos, &rep->name) ||
            !milter_take_str(buf, len, &pos, &rep->value) || pos != len) {
            vstr_sprintf(why, "reply '%c' not a header name and value",
                         rep->cmd);
            return -1;
        }
        if (!milter_header_name_ok(rep->name)) {
            vstr_sprintf(why, "reply '%c': bad header name", rep->cmd);
            return -1;
        }
        if (!milter_header_value_ok(rep->value)) {
            vstr_sprintf(why, "reply '%c': bad header value", rep->cmd);
            return -1;
        }
        return 0;
    case MILTER_REP_REPLBODY:
        rep->data = data;
        rep->len = dlen;
        return 0;
    default:
        vstr_sprintf(why, "unknown reply code 0x%02x", rep->cmd);
        return -1;
    }
}

/* milter_addr_parse - inet:host:port, inet:port@host, unix:/path */
int milter_addr_parse(const char *spec, MILTER_ADDR *addr, VSTR *why)
{
    const char *rest;
    const char *colon;
    char *host = NULL;
    char *port = NULL;

    memset(addr, 0, sizeof(*addr));
    if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0) {
        rest = strchr(spec, ':') + 1;
        if (*rest != '/') {
            vstr_sprintf(why,
                         "milter address \"%s\": the path must be"
                         " absolute",
                         spec);
            return -1;
        }
        addr->is_unix = true;
        addr->path = mystrdup(rest);
        return 0;
    }
    if (strncmp(spec, "inet:", 5) != 0) {
        vstr_sprintf(why,
                     "milter address \"%s\": expected inet:host:port or"
                     " unix:/path",
                     spec);
        return -1;
    }
    rest = spec + 5;
    if (strchr(rest, '@') != NULL) {
        /* Sendmail's inet:port@host */
        const char *at = strchr(rest, '@');

        port = mystrndup(rest, (size_t) (at - rest));
        host = mystrdup(at + 1);
    } else if (*rest == '[') {
        const char *close = strchr(rest, ']');

        if (close == NULL || close[1] != ':')
            goto bad;
        host = mystrndup(rest + 1, (size_t) (close - rest - 1));
        port = mystrdup(close + 2);
    } else if ((colon = strrchr(rest, ':')) != NULL) {
        host = mystrndup(rest, (size_t) (colon - rest));
        port = mystrdup(colon + 1);
    } else {
        goto bad;
    }
    if (*host == 0 || strpbrk(host, " \t/") != NULL || *port == 0 ||
        strspn(port, "0123456789") != strlen(port) || strlen(port) > 5 ||
        strtol(port, NULL, 10) < 1 || strtol(port, NULL, 10) > 65535)
        goto bad;
    addr->host = host;
    addr->port = port;
    return 0;
bad:
    if (host != NULL)
        myfree(host);
    if (port != NULL)
        myfree(port);
    vstr_sprintf(why,
                 "milter address \"%s\": expected inet:host:port with a"
                 " port from 1 to 65535",
                 spec);
    return -1;
}

/* milter_addr_free - what milter_addr_parse allocated */
void milter_addr_free(MILTER_ADDR *addr)
{
    if (addr->host != NULL)
        myfree(addr->host);
    if (addr->port != NULL)
        myfree(addr->port);
    if (addr->path != NULL)
        myfree(addr->path);
    memset(addr, 0, sizeof(*addr));
}

/* milter_default_parse - milter_default_action */
int milter_default_parse(const char *value, MILTER_DEFAULT *out)
{
    if (strcasecmp(value, "tempfail") == 0)
        *out = MILTER_DEFAULT_TEMPFAIL;
    else if (strcasecmp(value, "accept") == 0)
        *out = MILTER_DEFAULT_ACCEPT;
    else if (strcasecmp(value, "reject") == 0)
        *out = MILTER_DEFAULT_REJECT;
    else
        return -1;
    return 0;
}
