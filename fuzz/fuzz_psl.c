/*
 * fuzz_psl - the Public Suffix List reader and lookup (global/psl.h)
 *
 * The input's first line is a domain, the rest a list. A list that is
 * refused has a reason; the organizational domain of the domain (by the
 * list when it was read, and by no list) is always the lower-case
 * domain or one of its suffixes that starts at a label.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "psl.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_psl_check - org is a label-aligned suffix of the lower-case name */
static void fuzz_psl_check(const char *name, const char *org)
{
    size_t nlen = strlen(name);
    size_t olen = strlen(org);
    const char *tail;

    if (olen > nlen)
        abort();
    tail = name + nlen - olen;
    for (size_t i = 0; i < olen; i++)
        if (tolower((unsigned char) tail[i]) != (unsigned char) org[i])
            abort();
    if (olen < nlen && (olen == 0 || tail[-1] != '.'))
        abort();
}

/* LLVMFuzzerTestOneInput - a domain line and a list */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *) data;
    const char *nl = memchr(text, '\n', size);
    size_t dlen = nl != NULL ? (size_t) (nl - text) : size;
    VSTR *domain = vstr_alloc(64);
    VSTR *org = vstr_alloc(64);
    VSTR *why = vstr_alloc(64);
    PSL *psl;

    fuzz_init("fuzz_psl");
    vstr_ncpy(domain, text, dlen);
    /* A domain ends at its first NUL, as a C string does. */
    vstr_truncate(domain, strlen(vstr_str(domain)));
    psl = nl != NULL ? psl_parse(nl + 1, size - dlen - 1, why) : NULL;
    if (nl != NULL && psl == NULL && vstr_len(why) == 0)
        abort();
    psl_org_domain(psl, vstr_str(domain), org);
    fuzz_psl_check(vstr_str(domain), vstr_str(org));
    psl_org_domain(NULL, vstr_str(domain), org);
    fuzz_psl_check(vstr_str(domain), vstr_str(org));
    psl_free(psl);
    vstr_free(domain);
    vstr_free(org);
    vstr_free(why);
    return 0;
}
