/*
 * fuzz_mta_sts - the MTA-STS parsers (global/mta_sts.c): the policy file
 * an HTTPS server sends, the TXT records of _mta-sts.DOMAIN, the cache
 * file smtp reads back
 *
 * The first byte picks what the rest is: 0 a policy, 1 TXT records (split
 * at NUL bytes), 2 a cache file, 3 mx patterns and host names. A policy
 * that parses must have a mode, at most one year of max_age, mx patterns
 * that are domain names (after an optional "*."), at least one unless its
 * mode is none, and its canonical text must parse to the same policy;
 * every pattern must match itself (with "x" for a star).
 */
#include "sys_defs.h"

#include <stdint.h>

#include "argv.h"
#include "fuzz_common.h"
#include "mta_sts.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_policy_check - the promises of a parsed policy */
static void fuzz_policy_check(const MTA_STS_POLICY *policy)
{
    MTA_STS_POLICY again;
    VSTR *text = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    VSTR *host = vstr_alloc(100);

    if (policy->max_age < 0 || policy->max_age > MTA_STS_MAX_AGE_MAX)
        abort();
    if (policy->mode != MTA_STS_MODE_NONE && policy->mx->argc == 0)
        abort();
    for (size_t i = 0; i < policy->mx->argc; i++) {
        const char *p = policy->mx->argv[i];
        bool star = strncmp(p, "*.", 2) == 0;

        if (!mta_sts_domain_ok(p + (star ? 2 : 0)))
            abort();
        vstr_sprintf(host, "%s%s", star ? "x." : "", p + (star ? 2 : 0));
        if (!mta_sts_mx_match(p, vstr_str(host)) ||
            !mta_sts_policy_allows(policy, vstr_str(host)))
            abort();
    }
    mta_sts_policy_text(policy, text);
    if (mta_sts_policy_parse(vstr_str(text), vstr_len(text), &again, why) != 0)
        abort();
    if (again.mode != policy->mode || again.max_age != policy->max_age ||
        again.mx->argc != policy->mx->argc)
        abort();
    for (size_t i = 0; i < again.mx->argc; i++)
        if (strcmp(again.mx->argv[i], policy->mx->argv[i]) != 0)
            abort();
    mta_sts_policy_free(&again);
    vstr_free(text);
    vstr_free(why);
    vstr_free(host);
}

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *) data + 1;
    size_t len = size - 1;
    MTA_STS_POLICY policy;
    VSTR *why, *id;
    ARGV *parts;
    time_t fetched, expires;

    fuzz_init("fuzz_mta_sts");
    if (size == 0)
        return 0;
    why = vstr_alloc(100);
    id = vstr_alloc(40);
    switch (data[0] % 4) {
    case 0:
        if (mta_sts_policy_parse(text, len, &policy, why) == 0) {
            fuzz_policy_check(&policy);
            mta_sts_policy_free(&policy);
        }
        break;
    case 1:
        parts = argv_alloc(4);
        for (size_t start = 0, i = 0; i <= len; i++) {
            if (i == len || text[i] == 0) {
                argv_addn(parts, text + start, i - start);
                start = i + 1;
            }
        }
        if (mta_sts_txt_select(parts, id, why) == 1) {
            if (vstr_len(id) == 0 || vstr_len(id) > MTA_STS_ID_MAX)
                abort();
            for (size_t i = 0; i < vstr_len(id); i++)
                if (!isalnum((unsigned char) vstr_str(id)[i]))
                    abort();
        }
        argv_free(parts);
        break;
    case 2:
        if (mta_sts_cache_parse(text, len, id, &fetched, &expires, &policy,
                                why) == 0) {
            fuzz_policy_check(&policy);
            mta_sts_policy_free(&policy);
        }
        break;
    default: {
        char *copy = mystrndup(text, len);
        char *nl = strchr(copy, '\n');

        if (nl != NULL) {
            *nl = 0;
            (void) mta_sts_mx_match(copy, nl + 1);
        }
        (void) mta_sts_domain_ok(copy);
        myfree(copy);
        break;
    }
    }
    vstr_free(why);
    vstr_free(id);
    return 0;
}
