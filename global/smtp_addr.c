/*
 * smtp_addr - RFC 5321 envelope addresses: parsing paths, domains, quoting
 *
 * Everything here works on byte ranges and never trusts a terminator other
 * than the one the caller gives, so a NUL or a control byte inside an
 * address is an error, not a truncation.
 */
#include "sys_defs.h"

#include <arpa/inet.h>

#include "smtp_addr.h"
#include "vstr.h"

#define SMTP_ADDR_DOMAIN_MAX 255
#define SMTP_ADDR_LABEL_MAX 63

/* smtp_addr_atext - an RFC 5322 atext byte */
static bool smtp_addr_atext(int ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL;
}

/* smtp_addr_ldh - a byte allowed in a domain label */
static bool smtp_addr_ldh(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

/* smtp_addr_literal_ok - "[1.2.3.4]" or "[IPv6:...]" */
static bool smtp_addr_literal_ok(const char *lit, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 8];
    unsigned char bin[sizeof(struct in6_addr)];

    if (len < 3 || lit[0] != '[' || lit[len - 1] != ']')
        return false;
    lit++;
    len -= 2;
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, lit, len);
    buf[len] = 0;
    if (strlen(buf) != len)
        return false;
    if (strncasecmp(buf, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, buf + 5, bin) == 1;
    return inet_pton(AF_INET, buf, bin) == 1;
}

/* smtp_addr_domain_ok - a valid domain or address literal */
bool smtp_addr_domain_ok(const char *domain, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > SMTP_ADDR_DOMAIN_MAX)
        return false;
    if (domain[0] == '[')
        return smtp_addr_literal_ok(domain, len);
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char) domain[i];

        if (ch == '.') {
            if (label == 0 || domain[i - 1] == '-')
                return false; /* empty label, trailing '-' */
            label = 0;
        } else if (smtp_addr_ldh(ch)) {
            if (label == 0 && ch == '-')
                return false;
            if (++label > SMTP_ADDR_LABEL_MAX)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && domain[len - 1] != '-';
}

/* smtp_addr_local_end - length of a valid local part at addr, or 0 */
static size_t smtp_addr_local_end(const char *addr, size_t len)
{
    size_t i = 0;

    if (len > 0 && addr[0] == '"') {
        for (i = 1; i < len; i++) {
            int ch = (unsigned char) addr[i];

            if (ch == '"')
                return i + 1;
            if (ch == '\\') {
                if (++i >= len)
                    return 0;
                ch = (unsigned char) addr[i];
                if (ch < 32 || ch > 126)
                    return 0;
            } else if (ch < 32 || ch > 126) {
                return 0;
            }
        }
        return 0; /* no closing quote */
    }
    for (i = 0; i < len && addr[i] != '@'; i++) {
        int ch = (unsigned char) addr[i];

        if (ch != '.' && !smtp_addr_atext(ch))
            return 0;
    }
    return i;
}

/* smtp_addr_check - validate a bare address (no angle brackets) */
int smtp_addr_check(const char *addr, size_t len, VSTR *why)
{
    size_t local_len;

    if (len == 0) {
        vstr_cpy(why, "empty address");
        return -1;
    }
    if (len > SMTP_ADDR_MAX) {
        vstr_cpy(why, "address too long");
        return -1;
    }
    if ((local_len = smtp_addr_local_end(addr, len)) == 0) {
        vstr_cpy(why, "malformed address");
        return -1;
    }
    if (local_len == len)
        return 0; /* no domain: postmaster */
    if (addr[local_len] != '@') {
        vstr_cpy(why, "malformed address");
        return -1;
    }
    if (!smtp_addr_domain_ok(addr + local_len + 1, len - local_len - 1)) {
        vstr_cpy(why, "malformed domain");
        return -1;
    }
    return 0;
}

/* smtp_addr_skip_route - skip "@a,@b:" of an obsolete source route */
static const char *smtp_addr_skip_route(const char *p, const char *end)
{
    while (p < end && *p == '@') {
        const char *q = p + 1;

        while (q < end && *q != ',' && *q != ':')
            q++;
        if (q >= end || !smtp_addr_domain_ok(p + 1, (size_t) (q - p - 1)))
            return NULL;
        p = q + 1;
        if (*q == ':')
            return p;
    }
    return NULL;
}

/* smtp_addr_parse_path - parse "<addr> params" */
int smtp_addr_parse_path(const char *arg, int flags, VSTR *addr,
                         const char **rest, VSTR *why)
{
    const char *p = arg;
    const char *start;
    const char *end;
    const char *after;
    bool quoted = false;
    bool bracketed = false;

    vstr_reset(addr);
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '<') {
        bracketed = true;
        start = ++p;
        for (end = start; *end; end++) {
            if (quoted && *end == '\\' && end[1] != 0)
                end++;
            else if (*end == '"')
                quoted = !quoted;
            else if (*end == '>' && !quoted)
                break;
        }
        if (*end != '>') {
            vstr_cpy(why, "missing '>'");
            return -1;
        }
        after = end + 1;
        if (*after != 0 && *after != ' ' && *after != '\t') {
            vstr_cpy(why, "garbage after '>'");
            return -1;
        }
        if (start < end && *start == '@') {
            if ((start = smtp_addr_skip_route(start, end)) == NULL) {
                vstr_cpy(why, "malformed source route");
                return -1;
            }
        }
    } else {
        start = p;
        for (end = start; *end && *end != ' ' && *end != '\t'; end++)
            /* void */;
        after = end;
    }
    if (start == end) {
        if (!bracketed || !(flags & SMTP_ADDR_FLAG_NULL_OK)) {
            vstr_cpy(why, "empty address");
            return -1;
        }
    } else if (smtp_addr_check(start, (size_t) (end - start), why) < 0) {
        return -1;
    }
    vstr_ncpy(addr, start, (size_t) (end - start));
    while (*after == ' ' || *after == '\t')
        after++;
    *rest = after;
    return 0;
}

/* smtp_addr_split - the domain (or NULL) and the local part's length */
const char *smtp_addr_split(const char *addr, size_t *local_len)
{
    const char *at = NULL;
    const char *p;
    bool quoted = false;

    for (p = addr; *p; p++) {
        if (quoted && *p == '\\' && p[1] != 0)
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (*p == '@' && !quoted)
            at = p;
    }
    if (local_len != NULL)
        *local_len = at ? (size_t) (at - addr) : (size_t) (p - addr);
    return at ? at + 1 : NULL;
}

/* smtp_addr_domain - the domain part, or NULL */
const char *smtp_addr_domain(const char *addr)
{
    return smtp_addr_split(addr, NULL);
}

/* smtp_addr_quote - append the external form of local@domain to out */
void smtp_addr_quote(VSTR *out, const char *local, size_t local_len,
                     const char *domain)
{
    bool plain =
        local_len > 0 && local[0] != '.' && local[local_len - 1] != '.';

    for (size_t i = 0; plain && i < local_len; i++) {
        int ch = (unsigned char) local[i];

        if (ch == '.' ? local[i + 1] == '.' : !smtp_addr_atext(ch))
            plain = false;
    }
    if (plain) {
        vstr_ncat(out, local, local_len);
    } else {
        vstr_addch(out, '"');
        for (size_t i = 0; i < local_len; i++) {
            if (local[i] == '"' || local[i] == '\\')
                vstr_addch(out, '\\');
            vstr_addch(out, local[i]);
        }
        vstr_addch(out, '"');
    }
    if (domain != NULL) {
        vstr_addch(out, '@');
        vstr_cat(out, domain);
    }
}
