/*
 * auth_from - the author domain of a message
 *
 * See auth_from.h. The address is taken the simple way that is enough
 * for its domain: comments (parentheses, nested) and quoted strings are
 * skipped; the text between '<' and '>' when there are angle brackets,
 * else the whole value; the domain is what follows the last '@'.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "auth_from.h"
#include "vstr.h"

/* auth_from_field - the unfolded value of the one From: field in value;
   the number of From: fields found */
static int auth_from_field(const char *head, size_t len, VSTR *value)
{
    int count = 0;
    size_t at = 0;

    vstr_reset(value);
    while (at < len && head[at] != '\n') {
        size_t eol = at;
        bool from;

        while (eol < len && head[eol] != '\n')
            eol++;
        /* "From" [WSP] ":" at the start of a field */
        from = eol - at >= 5 && strncasecmp(head + at, "from", 4) == 0;
        if (from) {
            size_t c = at + 4;

            while (c < eol && (head[c] == ' ' || head[c] == '\t'))
                c++;
            from = c < eol && head[c] == ':';
            if (from && ++count == 1) {
                vstr_ncat(value, head + c + 1, eol - c - 1);
                /* continuation lines */
                while (eol + 1 < len &&
                       (head[eol + 1] == ' ' || head[eol + 1] == '\t')) {
                    size_t next = eol + 1;

                    eol = next;
                    while (eol < len && head[eol] != '\n')
                        eol++;
                    vstr_ncat(value, head + next, eol - next);
                }
            }
        }
        at = eol + 1;
    }
    return count;
}

/* auth_from_domain - the author domain */
int auth_from_domain(const char *head, size_t len, VSTR *domain, VSTR *why)
{
    VSTR *value = vstr_alloc(100);
    VSTR *addr = vstr_alloc(100);
    int count = auth_from_field(head, len, value);
    int depth = 0;
    bool quoted = false;
    int mailboxes = 1;
    const char *at;
    int ret = -1;

    vstr_reset(domain);
    if (count != 1) {
        vstr_sprintf(why, count ? "%d From: fields" : "no From: field", count);
        goto out;
    }
    if (memchr(vstr_str(value), 0, vstr_len(value)) != NULL) {
        vstr_sprintf(why, "From: holds a NUL byte");
        goto out;
    }
    /* Outside comments and quotes: the address, and how many there are. */
    for (const char *cp = vstr_str(value); *cp; cp++) {
        if (quoted) {
            if (*cp == '\\' && cp[1] != 0)
                cp++;
            else if (*cp == '"')
                quoted = false;
            continue;
        }
        if (depth > 0) {
            if (*cp == '\\' && cp[1] != 0)
                cp++;
            else if (*cp == '(')
                depth++;
            else if (*cp == ')')
                depth--;
            continue;
        }
        if (*cp == '"') {
            quoted = true;
        } else if (*cp == '(') {
            depth = 1;
        } else if (*cp == ',' || *cp == ';' || *cp == ':') {
            mailboxes++; /* several mailboxes, or a group */
        } else if (*cp == '<') {
            vstr_reset(addr); /* the display name was not it */
        } else if (*cp == '>') {
            continue;
        } else if (!isspace((unsigned char) *cp)) {
            vstr_addch(addr, *cp);
        }
    }
    if (mailboxes != 1) {
        vstr_sprintf(why, "From: does not hold exactly one address");
        goto out;
    }
    if ((at = strrchr(vstr_str(addr), '@')) == NULL || at[1] == 0) {
        vstr_sprintf(why, "From: address without a domain");
        goto out;
    }
    for (at++; *at; at++)
        vstr_addch(domain, (char) tolower((unsigned char) *at));
    if (vstr_len(domain) > 0 && vstr_str(domain)[vstr_len(domain) - 1] == '.')
        vstr_truncate(domain, vstr_len(domain) - 1);
    if (vstr_len(domain) == 0 || vstr_len(domain) > AUTH_FROM_DOMAIN_MAX ||
        strchr(vstr_str(domain), '.') == NULL ||
        strspn(vstr_str(domain), "abcdefghijklmnopqrstuvwxyz0123456789.-_") !=
            vstr_len(domain) ||
        strstr(vstr_str(domain), "..") != NULL || vstr_str(domain)[0] == '.' ||
        vstr_str(domain)[vstr_len(domain) - 1] == '.') {
        vstr_sprintf(why, "From: domain is not a DNS name");
        vstr_reset(domain);
        goto out;
    }
    ret = 0;

out:
    vstr_free(value);
    vstr_free(addr);
    return ret;
}
