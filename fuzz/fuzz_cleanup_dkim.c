/*
 * fuzz_cleanup_dkim - the parsers of DKIM signing (cleanup/cleanup_dkim_conf.c)
 *
 * The first input byte picks the parser, the rest is its text: a
 * dkim_signing_maps value (every key parsed has a valid-looking selector
 * and an absolute path, and the count is within the limit), a
 * dkim_signed_headers value (from is always signed, oversigned names are
 * signed names, names are lower case), a dkim_canonicalization value, or
 * a From: value (a domain found is lower case, has no '@' and is no
 * address literal). Each refusal must come with a reason.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "argv.h"
#include "cleanup.h"
#include "cleanup_dkim.h"
#include "fuzz_common.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_dkim_has - is name in av */
static bool fuzz_dkim_has(const ARGV *av, const char *name)
{
    for (size_t i = 0; i < (size_t) av->argc; i++)
        if (strcmp(av->argv[i], name) == 0)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *why;
    char *text;

    fuzz_init("fuzz_cleanup_dkim");
    if (size < 1 || size > 8192)
        return 0;
    text = mymalloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    why = vstr_alloc(64);
    switch (data[0] % 4) {
    case 0: {
        CLEANUP_DKIM_KEYSPEC *specs;
        ssize_t n = cleanup_dkim_keys_parse(text, &specs, why);

        if (n < 0) {
            if (specs != NULL || vstr_len(why) == 0)
                abort();
            break;
        }
        if (n < 1 || n > CLEANUP_DKIM_MAX_KEYS)
            abort();
        for (ssize_t i = 0; i < n; i++)
            if (specs[i].selector[0] == 0 || specs[i].path[0] != '/' ||
                strchr(specs[i].selector, ':') != NULL)
                abort();
        cleanup_dkim_keys_free(specs, (size_t) n);
        break;
    }
    case 1: {
        ARGV *sign, *over;

        if (cleanup_dkim_headers_parse(text, &sign, &over, why) < 0) {
            if (sign != NULL || vstr_len(why) == 0)
                abort();
            break;
        }
        if (!fuzz_dkim_has(sign, "from"))
            abort();
        for (size_t i = 0; i < (size_t) over->argc; i++)
            if (!fuzz_dkim_has(sign, over->argv[i]))
                abort();
        for (size_t i = 0; i < (size_t) sign->argc; i++)
            for (const char *cp = sign->argv[i]; *cp; cp++)
                if (*cp >= 'A' && *cp <= 'Z')
                    abort();
        argv_free(sign);
        argv_free(over);
        break;
    }
    case 2: {
        int header, body;

        if (cleanup_dkim_canon_parse(text, &header, &body, why) < 0) {
            if (vstr_len(why) == 0)
                abort();
        } else if ((header != CLEANUP_DKIM_CANON_SIMPLE &&
                    header != CLEANUP_DKIM_CANON_RELAXED) ||
                   (body != CLEANUP_DKIM_CANON_SIMPLE &&
                    body != CLEANUP_DKIM_CANON_RELAXED)) {
            abort();
        }
        break;
    }
    default: {
        char *domain = cleanup_dkim_from_domain(text);

        if (domain != NULL) {
            if (*domain == 0 || *domain == '[' || strchr(domain, '@'))
                abort();
            for (const char *cp = domain; *cp; cp++)
                if (*cp >= 'A' && *cp <= 'Z')
                    abort();
            myfree(domain);
        }
        break;
    }
    }
    vstr_free(why);
    myfree(text);
    return 0;
}
