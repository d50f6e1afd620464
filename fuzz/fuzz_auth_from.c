/*
 * fuzz_auth_from - the From: domain reader of DMARC (global/auth_from.h)
 *
 * The input is a header section as a client may send it. A domain the
 * reader accepts is a lower-case DNS name (letters, digits, '.', '-',
 * '_', at least two labels, no empty one) of at most
 * AUTH_FROM_DOMAIN_MAX bytes; a refusal always has a reason and leaves
 * no domain.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "auth_from.h"
#include "fuzz_common.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one header section */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *domain = vstr_alloc(64);
    VSTR *why = vstr_alloc(64);

    fuzz_init("fuzz_auth_from");
    if (auth_from_domain((const char *) data, size, domain, why) == 0) {
        const char *d = vstr_str(domain);

        if (vstr_len(domain) == 0 || vstr_len(domain) > AUTH_FROM_DOMAIN_MAX ||
            strspn(d, "abcdefghijklmnopqrstuvwxyz0123456789.-_") !=
                vstr_len(domain) ||
            strchr(d, '.') == NULL || strstr(d, "..") != NULL || d[0] == '.' ||
            d[vstr_len(domain) - 1] == '.' || vstr_len(why) != 0)
            abort();
    } else if (vstr_len(why) == 0 || vstr_len(domain) != 0) {
        abort();
    }
    vstr_free(domain);
    vstr_free(why);
    return 0;
}
