/*
 * psl - organizational domains by the Public Suffix List
 *
 * The rules are kept in one hash table keyed by the rule's name without
 * its "*." or "!": "*.ck" is "ck" with PSL_WILDCARD, "!www.ck" is "www.ck"
 * with PSL_EXCEPTION, "co.uk" is "co.uk" with PSL_NORMAL (a name may have
 * several). A lookup walks the domain's suffixes from its last label to
 * the whole name, one table lookup each, and applies the algorithm of
 * publicsuffix.org: an exception rule prevails, else the rule of most
 * labels, else "*".
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "htable.h"
#include "msg.h"
#include "mymalloc.h"
#include "psl.h"
#include "vstr.h"

#define PSL_NORMAL 1u
#define PSL_WILDCARD 2u
#define PSL_EXCEPTION 4u

#define PSL_LABEL_MAX 63
#define PSL_NAME_MAX 253

struct PSL {
    HTABLE *rules; /* name -> flags, as a pointer-sized integer */
    size_t count; /* rules read */
};

/* psl_flags - the flags stored under name (0: none) */
static unsigned psl_flags(const PSL *psl, const char *name)
{
    return (unsigned) (uintptr_t) htable_find(psl->rules, name);
}

/* psl_add - flag more under name */
static void psl_add(PSL *psl, const char *name, unsigned flag)
{
    unsigned flags = psl_flags(psl, name);

    if (flags != 0)
        (void) htable_delete(psl->rules, name);
    (void) htable_enter(psl->rules, name, (void *) (uintptr_t) (flags | flag));
}

/* psl_rule_ok - is name (the rule without "*." or "!") a name of labels
   of 1..63 bytes, none "*", at most 253 bytes; false with why */
static bool psl_rule_ok(const char *name, VSTR *why)
{
    size_t label = 0;

    if (strlen(name) > PSL_NAME_MAX) {
        vstr_cpy(why, "longer than 253 bytes");
        return false;
    }
    for (const char *cp = name;; cp++) {
        if (*cp == '.' || *cp == 0) {
            if (label == 0) {
                vstr_cpy(why, "an empty label");
                return false;
            }
            if (*cp == 0)
                return true;
            label = 0;
        } else if ((unsigned char) *cp < 0x21 || *cp == 0x7f || *cp == '!') {
            vstr_cpy(why, "a character a DNS name has not");
            return false;
        } else if (*cp == '*') {
            vstr_cpy(why, label == 0 && (cp[1] == '.' || cp[1] == 0)
                              ? "'*' other than as the first label"
                              : "'*' inside a label");
            return false;
        } else if (++label > PSL_LABEL_MAX) {
            vstr_cpy(why, "a label longer than 63 bytes");
            return false;
        }
    }
}

/* Punycode (RFC 3492) parameters. */
#define PSL_PUNY_BASE 36
#define PSL_PUNY_TMIN 1
#define PSL_PUNY_TMAX 26
#define PSL_PUNY_SKEW 38
#define PSL_PUNY_DAMP 700
#define PSL_PUNY_BIAS 72
#define PSL_PUNY_N 128
#define PSL_PUNY_MAXCP 64 /* code points of one label (63 bytes at most) */

/* psl_puny_adapt - RFC 3492 6.1 */
static uint32_t psl_puny_adapt(uint32_t delta, uint32_t points, bool first)
{
    uint32_t k = 0;

    delta = first ? delta / PSL_PUNY_DAMP : delta / 2;
    delta += delta / points;
    while (delta > ((PSL_PUNY_BASE - PSL_PUNY_TMIN) * PSL_PUNY_TMAX) / 2) {
        delta /= PSL_PUNY_BASE - PSL_PUNY_TMIN;
        k += PSL_PUNY_BASE;
    }
    return k + (PSL_PUNY_BASE - PSL_PUNY_TMIN + 1) * delta /
                   (delta + PSL_PUNY_SKEW);
}

/* psl_puny_digit - the basic code point of digit d (lower case) */
static char psl_puny_digit(uint32_t d)
{
    return (char) (d < 26 ? 'a' + d : '0' + (d - 26));
}

/* psl_utf8 - the code points of label[0..len) into cp; their number, or
   -1 for bad UTF-8 (or too many) */
static ssize_t psl_utf8(const unsigned char *label, size_t len, uint32_t *cp)
{
    size_t count = 0;

    for (size_t i = 0; i < len; count++) {
        uint32_t c = label[i];
        size_t more = c < 0x80                ? 0
                      : c >= 0xc2 && c < 0xe0 ? 1
                      : c >= 0xe0 && c < 0xf0 ? 2
                      : c >= 0xf0 && c < 0xf5 ? 3
                                              : 4;

        if (more == 4 || (more > 0 && i + more >= len) ||
            count == PSL_PUNY_MAXCP)
            return -1;
        c &= more == 0 ? 0x7f : more == 1 ? 0x1f : more == 2 ? 0x0f : 0x07;
        for (size_t j = 1; j <= more; j++) {
            if ((label[i + j] & 0xc0) != 0x80)
                return -1;
            c = (c << 6) | (label[i + j] & 0x3f);
        }
        /* no overlong form, surrogate or code point past U+10FFFF */
        if ((more == 2 && c < 0x800) || (more == 3 && c < 0x10000) ||
            (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
            return -1;
        cp[count] = c;
        i += more + 1;
    }
    return (ssize_t) count;
}

/* psl_punycode - a label of UTF-8 as its A-label ("xn--" and Punycode,
   RFC 3492) appended to out; false for bad UTF-8 */
static bool psl_punycode(const char *label, size_t len, VSTR *out)
{
    uint32_t cp[PSL_PUNY_MAXCP];
    ssize_t count = psl_utf8((const unsigned char *) label, len, cp);
    uint32_t n = PSL_PUNY_N, delta = 0, bias = PSL_PUNY_BIAS, h, b = 0;

    if (count <= 0)
        return false;
    vstr_cat(out, "xn--");
    for (ssize_t i = 0; i < count; i++)
        if (cp[i] < 0x80) {
            vstr_addch(out, (int) cp[i]);
            b++;
        }
    if (b > 0)
        vstr_addch(out, '-');
    /* Fewer than 64 code points under U+110000: no sum below overflows. */
    for (h = b; h < (uint32_t) count; delta++, n++) {
        uint32_t m = UINT32_MAX;

        for (ssize_t i = 0; i < count; i++)
            if (cp[i] >= n && cp[i] < m)
                m = cp[i];
        delta += (m - n) * (h + 1);
        n = m;
        for (ssize_t i = 0; i < count; i++) {
            if (cp[i] < n)
                delta++;
            if (cp[i] != n)
                continue;
            uint32_t q = delta;

            for (uint32_t k = PSL_PUNY_BASE;; k += PSL_PUNY_BASE) {
                uint32_t t = k <= bias                   ? PSL_PUNY_TMIN
                             : k >= bias + PSL_PUNY_TMAX ? PSL_PUNY_TMAX
                                                         : k - bias;

                if (q < t)
                    break;
                vstr_addch(out,
                           psl_puny_digit(t + (q - t) % (PSL_PUNY_BASE - t)));
                q = (q - t) / (PSL_PUNY_BASE - t);
            }
            vstr_addch(out, psl_puny_digit(q));
            bias = psl_puny_adapt(delta, h + 1, h == b);
            delta = 0;
            h++;
        }
    }
    return true;
}

/* psl_alabels - name with each label that is not ASCII as its A-label
   into out (a From: domain is ASCII: "xn--p1ai", never "рф"); false for
   bad UTF-8 */
static bool psl_alabels(const char *name, VSTR *out)
{
    vstr_reset(out);
    for (const char *label = name;;) {
        size_t len = strcspn(label, ".");
        bool ascii = true;

        for (size_t i = 0; i < len; i++)
            if ((unsigned char) label[i] >= 0x80)
                ascii = false;
        if (ascii)
            vstr_ncat(out, label, len);
        else if (!psl_punycode(label, len, out))
            return false;
        if (label[len] == 0)
            return true;
        vstr_addch(out, '.');
        label += len + 1;
    }
}

/* psl_line - one line's rule (its first word; none for a comment or a
   blank line) into psl; false with why */
static bool psl_line(PSL *psl, const char *line, size_t len, VSTR *rule,
                     VSTR *alabels, VSTR *why)
{
    size_t start = 0;
    size_t end;
    unsigned flag = PSL_NORMAL;
    const char *name;

    while (start < len &&
           (line[start] == ' ' || line[start] == '\t' || line[start] == '\r'))
        start++;
    if (start == len ||
        (len - start >= 2 && line[start] == '/' && line[start + 1] == '/'))
        return true;
    for (end = start; end < len && line[end] != ' ' && line[end] != '\t' &&
                      line[end] != '\r';
         end++)
        continue;
    if (memchr(line + start, 0, end - start) != NULL) {
        vstr_cpy(why, "a NUL byte");
        return false;
    }
    vstr_ncpy(rule, line + start, end - start);
    vstr_lower(rule);
    name = vstr_str(rule);
    if (name[0] == '!') {
        flag = PSL_EXCEPTION;
        name++;
        if (strchr(name, '.') == NULL) {
            vstr_cpy(why, "an exception rule of one label");
            return false;
        }
    } else if (name[0] == '*' && name[1] == '.') {
        flag = PSL_WILDCARD;
        name += 2;
    } else if (name[0] == '*' && name[1] == 0) {
        /* "*" is the implicit default rule: nothing to store. */
        psl->count++;
        return true;
    }
    if (!psl_alabels(name, alabels)) {
        vstr_cpy(why, "a label that is not UTF-8 (or far too long)");
        return false;
    }
    if (!psl_rule_ok(vstr_str(alabels), why))
        return false;
    psl_add(psl, vstr_str(alabels), flag);
    psl->count++;
    return true;
}

/* psl_parse - the list in text[0..len) */
PSL *psl_parse(const char *text, size_t len, VSTR *why)
{
    PSL *psl = mycalloc(1, sizeof(*psl));
    VSTR *rule = vstr_alloc(64);
    VSTR *line_why = vstr_alloc(64);
    VSTR *alabels = vstr_alloc(64);
    size_t lineno = 0;
    size_t pos = 0;

    psl->rules = htable_alloc(1024);
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t) (nl - text) : len;

        lineno++;
        if (!psl_line(psl, text + pos, end - pos, rule, alabels, line_why)) {
            vstr_sprintf(why, "line %zu: bad rule: %s", lineno,
                         vstr_str(line_why));
            psl = psl_free(psl);
            break;
        }
        pos = end + 1;
    }
    if (psl != NULL && psl->count == 0) {
        vstr_cpy(why, "no rules");
        psl = psl_free(psl);
    }
    vstr_free(rule);
    vstr_free(line_why);
    vstr_free(alabels);
    return psl;
}

/* psl_load - the list in the file path */
PSL *psl_load(const char *path, VSTR *why)
{
    VSTR *text;
    struct stat st;
    PSL *psl = NULL;
    ssize_t got;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        vstr_sprintf(why, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0) {
        vstr_sprintf(why, "%s: fstat: %s", path, strerror(errno));
        (void) close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        vstr_sprintf(why, "%s: not a regular file", path);
        (void) close(fd);
        return NULL;
    }
    text = vstr_alloc(st.st_size > 0 && st.st_size < PSL_FILE_MAX
                          ? (size_t) st.st_size + 1
                          : 4096);
    for (;;) {
        char buf[8192];

        if ((got = read(fd, buf, sizeof(buf))) < 0) {
            if (errno == EINTR)
                continue;
            vstr_sprintf(why, "%s: read: %s", path, strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        if (vstr_len(text) + (size_t) got > PSL_FILE_MAX) {
            vstr_sprintf(why, "%s: larger than %d bytes", path, PSL_FILE_MAX);
            goto out;
        }
        vstr_ncat(text, buf, (size_t) got);
    }
    if ((psl = psl_parse(vstr_str(text), vstr_len(text), why)) == NULL) {
        VSTR *line = vstr_alloc(64);

        vstr_sprintf(line, "%s: %s", path, vstr_str(why));
        vstr_cpy(why, vstr_str(line));
        vstr_free(line);
    }

out:
    (void) close(fd);
    vstr_free(text);
    return psl;
}

/* psl_free - NULL */
PSL *psl_free(PSL *psl)
{
    if (psl != NULL) {
        htable_free(psl->rules, NULL);
        myfree(psl);
    }
    return NULL;
}

/* psl_rules - the number of rules */
size_t psl_rules(const PSL *psl)
{
    return psl->count;
}

/* psl_org_domain - the public suffix and one label more */
void psl_org_domain(const PSL *psl, const char *domain, VSTR *out)
{
    const char *start[PSL_NAME_MAX / 2 + 2]; /* start[k]: the last k+1
                                                labels */
    size_t labels = 0;
    size_t suffix = 1; /* labels of the public suffix: "*" */
    const char *name;
    size_t len;

    vstr_cpy(out, domain);
    vstr_lower(out);
    name = vstr_str(out);
    len = vstr_len(out);
    if (len == 0)
        return;
    /* The start of each suffix, from the last label on; a name of more
       labels than a DNS name can have is searched by its last ones. */
    for (size_t i = len; i > 0 && labels < SLUICE_ARRAY_LEN(start); i--)
        if (name[i - 1] == '.')
            start[labels++] = name + i;
    if (labels < SLUICE_ARRAY_LEN(start))
        start[labels++] = name;
    for (size_t k = 1; psl != NULL && k <= labels; k++) {
        unsigned flags = psl_flags(psl, start[k - 1]);

        if ((flags & PSL_EXCEPTION) != 0) {
            suffix = k - 1; /* an exception prevails */
            break;
        }
        if ((flags & PSL_NORMAL) != 0 && k > suffix)
            suffix = k;
        if ((flags & PSL_WILDCARD) != 0 && k < labels && k + 1 > suffix)
            suffix = k + 1;
    }
    if (suffix < labels) {
        size_t keep = len - (size_t) (start[suffix] - name);

        memmove(vstr_str(out), start[suffix], keep);
        vstr_truncate(out, keep);
    }
}
