/*
 * cleanup_dkim_conf - the pure parsers of DKIM signing: a dkim_signing_maps
 * value, dkim_signed_headers, dkim_canonicalization, a From: value's domain
 *
 * Nothing here touches a file or libopendkim, so the unit tests and the
 * fuzz target drive these with any input. Every refusal says why.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "argv.h"
#include "cleanup.h"
#include "cleanup_dkim.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "vstr.h"

#define CLEANUP_DKIM_SEPARATORS ", \t\r\n"
#define CLEANUP_DKIM_SELECTOR_MAX 63 /* one DNS label's worth per label */
#define CLEANUP_DKIM_HEADERS_MAX 64

/* cleanup_dkim_selector_ok - RFC 6376 selector: dot-separated labels of
   letters, digits and inner hyphens (underscore allowed, as deployed) */
static bool cleanup_dkim_selector_ok(const char *sel, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) sel[i];

        if (ch == '.') {
            if (label == 0 || sel[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum(ch) && ch != '-' && ch != '_')
            return false;
        if (ch == '-' && label == 0)
            return false;
        if (++label > CLEANUP_DKIM_SELECTOR_MAX)
            return false;
    }
    return label > 0 && sel[len - 1] != '-';
}

/* cleanup_dkim_keys_free - release parsed key specs */
CLEANUP_DKIM_KEYSPEC *cleanup_dkim_keys_free(CLEANUP_DKIM_KEYSPEC *specs,
                                             size_t count)
{
    if (specs == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        myfree(specs[i].selector);
        myfree(specs[i].path);
    }
    myfree(specs);
    return NULL;
}

/* cleanup_dkim_keys_parse - selector:path[:type], comma/space separated */
ssize_t cleanup_dkim_keys_parse(const char *value, CLEANUP_DKIM_KEYSPEC **specs,
                                VSTR *why)
{
    ARGV *words = argv_split(value, CLEANUP_DKIM_SEPARATORS);
    CLEANUP_DKIM_KEYSPEC *out;
    size_t count = 0;

    *specs = NULL;
    if (words->argc == 0) {
        vstr_cpy(why, "no selector:/path/to/key.pem in the value");
        argv_free(words);
        return -1;
    }
    if (words->argc > CLEANUP_DKIM_MAX_KEYS) {
        vstr_sprintf(why, "%zu keys (at most %d)", (size_t) words->argc,
                     CLEANUP_DKIM_MAX_KEYS);
        argv_free(words);
        return -1;
    }
    out = mycalloc(words->argc, sizeof(*out));
    for (size_t i = 0; i < (size_t) words->argc; i++) {
        const char *word = words->argv[i];
        const char *colon = strchr(word, ':');
        const char *path;
        size_t path_len;
        CLEANUP_DKIM_KEYTYPE type = CLEANUP_DKIM_KEY_ANY;

        if (colon == NULL) {
            vstr_sprintf(why, "\"%s\" is not selector:/path/to/key.pem", word);
            goto bad;
        }
        if (!cleanup_dkim_selector_ok(word, (size_t) (colon - word))) {
            vstr_sprintf(why, "bad selector in \"%s\"", word);
            goto bad;
        }
        path = colon + 1;
        path_len = strlen(path);
        if (path_len > 4 && strcasecmp(path + path_len - 4, ":rsa") == 0) {
            type = CLEANUP_DKIM_KEY_RSA;
            path_len -= 4;
        } else if (path_len > 8 &&
                   strcasecmp(path + path_len - 8, ":ed25519") == 0) {
            type = CLEANUP_DKIM_KEY_ED25519;
            path_len -= 8;
        }
        if (path_len == 0 || path[0] != '/') {
            vstr_sprintf(why, "the key file in \"%s\" is not an absolute path",
                         word);
            goto bad;
        }
        out[count].selector = mymalloc((size_t) (colon - word) + 1);
        memcpy(out[count].selector, word, (size_t) (colon - word));
        out[count].selector[colon - word] = 0;
        out[count].path = mymalloc(path_len + 1);
        memcpy(out[count].path, path, path_len);
        out[count].path[path_len] = 0;
        out[count].type = type;
        count++;
    }
    argv_free(words);
    *specs = out;
    return (ssize_t) count;

bad:
    cleanup_dkim_keys_free(out, count);
    argv_free(words);
    return -1;
}

/* cleanup_dkim_name_ok - a header field name (RFC 5322 ftext), kept to the
   characters libopendkim's header patterns take literally */
static bool cleanup_dkim_name_ok(const char *name)
{
    if (*name == 0)
        return false;
    for (const char *cp = name; *cp; cp++)
        if (!isalnum((unsigned char) *cp) && *cp != '-' && *cp != '_')
            return false;
    return true;
}

/* cleanup_dkim_argv_has - is name in av */
static bool cleanup_dkim_argv_has(const ARGV *av, const char *name)
{
    for (size_t i = 0; i < (size_t) av->argc; i++)
        if (strcmp(av->argv[i], name) == 0)
            return true;
    return false;
}

/* cleanup_dkim_headers_parse - names to sign and to oversign */
int cleanup_dkim_headers_parse(const char *value, ARGV **sign, ARGV **oversign,
                               VSTR *why)
{
    ARGV *words = argv_split(value, CLEANUP_DKIM_SEPARATORS);
    ARGV *all = argv_alloc(16);
    ARGV *over = argv_alloc(8);

    *sign = *oversign = NULL;
    for (size_t i = 0; i < (size_t) words->argc; i++) {
        VSTR *name = vstr_alloc(32);
        bool plus = words->argv[i][0] == '+';

        vstr_cpy(name, words->argv[i] + (plus ? 1 : 0));
        vstr_lower(name);
        if (!cleanup_dkim_name_ok(vstr_str(name))) {
            vstr_sprintf(why, "dkim_signed_headers: bad header name \"%s\"",
                         words->argv[i]);
            vstr_free(name);
            goto bad;
        }
        if (strcmp(vstr_str(name), "dkim-signature") == 0) {
            vstr_cpy(why, "dkim_signed_headers: a signature cannot sign "
                          "DKIM-Signature");
            vstr_free(name);
            goto bad;
        }
        if (!cleanup_dkim_argv_has(all, vstr_str(name)))
            argv_add(all, vstr_str(name));
        if (plus && !cleanup_dkim_argv_has(over, vstr_str(name)))
            argv_add(over, vstr_str(name));
        vstr_free(name);
        if ((size_t) all->argc > CLEANUP_DKIM_HEADERS_MAX) {
            vstr_sprintf(why, "dkim_signed_headers: more than %d names",
                         CLEANUP_DKIM_HEADERS_MAX);
            goto bad;
        }
    }
    /* RFC 6376 5.4: From MUST be signed. */
    if (!cleanup_dkim_argv_has(all, "from"))
        argv_add(all, "from");
    argv_free(words);
    *sign = all;
    *oversign = over;
    return 0;

bad:
    argv_free(words);
    argv_free(all);
    argv_free(over);
    return -1;
}

/* cleanup_dkim_canon_word - "simple" or "relaxed" */
static int cleanup_dkim_canon_word(const char *word, size_t len)
{
    if (len == 6 && strncasecmp(word, "simple", len) == 0)
        return CLEANUP_DKIM_CANON_SIMPLE;
    if (len == 7 && strncasecmp(word, "relaxed", len) == 0)
        return CLEANUP_DKIM_CANON_RELAXED;
    return -1;
}

/* cleanup_dkim_canon_parse - header/body canonicalization */
int cleanup_dkim_canon_parse(const char *value, int *header, int *body,
                             VSTR *why)
{
    const char *slash = strchr(value, '/');
    size_t len = slash ? (size_t) (slash - value) : strlen(value);

    *header = cleanup_dkim_canon_word(value, len);
    *body = slash ? cleanup_dkim_canon_word(slash + 1, strlen(slash + 1))
                  : CLEANUP_DKIM_CANON_SIMPLE;
    if (*header < 0 || *body < 0) {
        vstr_sprintf(why,
                     "dkim_canonicalization: \"%s\" is not header/body with "
                     "each simple or relaxed",
                     value);
        return -1;
    }
    return 0;
}

/* cleanup_dkim_from_domain - the domain of a From: value's first address */
char *cleanup_dkim_from_domain(const char *value)
{
    size_t spans[2];
    ssize_t pairs = cleanup_rewrite_addr_spans(value, spans, 1);
    const char *domain;
    char *addr;
    char *result = NULL;

    if (pairs < 1 || spans[1] <= spans[0])
        return NULL;
    addr = mymalloc(spans[1] - spans[0] + 1);
    memcpy(addr, value + spans[0], spans[1] - spans[0]);
    addr[spans[1] - spans[0]] = 0;
    domain = smtp_addr_split(addr, NULL);
    if (domain != NULL && *domain != '[' &&
        smtp_addr_domain_ok(domain, strlen(domain))) {
        VSTR *lower = vstr_alloc(64);

        vstr_cpy(lower, domain);
        vstr_lower(lower);
        result = vstr_export(lower);
    }
    myfree(addr);
    return result;
}
