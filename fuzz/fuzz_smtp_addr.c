/*
 * fuzz_smtp_addr - the address parsers: smtp_addr, xtext, mynetworks
 *
 * The first byte picks the flags; the rest is a MAIL FROM:/RCPT TO:
 * argument. Whatever parses must check again, quote back to something that
 * checks, and have a domain that smtp_addr_domain_ok() accepts. xtext must
 * round-trip, and mynetworks must never crash on a list or an address.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "fuzz_common.h"
#include "mymalloc.h"
#include "mynetworks.h"
#include "smtp_addr.h"
#include "vstr.h"
#include "xtext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *addr = vstr_alloc(64);
    VSTR *why = vstr_alloc(64);
    VSTR *tmp = vstr_alloc(64);
    char *text;
    const char *rest = NULL;
    const char *domain;
    MYNETWORKS *nets;
    int flags;

    fuzz_init("fuzz_smtp_addr");
    if (size == 0)
        goto out;
    flags = data[0] & SMTP_ADDR_FLAG_NULL_OK;
    text = mystrndup((const char *) data + 1, size - 1);

    /* The bytes as they are, NULs and all. */
    (void) smtp_addr_check((const char *) data + 1, size - 1, why);
    (void) smtp_addr_domain_ok((const char *) data + 1, size - 1);

    if (smtp_addr_parse_path(text, flags, addr, &rest, why) == 0) {
        if (rest < text || rest > text + strlen(text))
            abort();
        if (vstr_len(addr) > 0 &&
            smtp_addr_check(vstr_str(addr), vstr_len(addr), why) != 0)
            abort();
        if ((domain = smtp_addr_domain(vstr_str(addr))) != NULL) {
            size_t local_len = (size_t) (domain - 1 - vstr_str(addr));

            if (!smtp_addr_domain_ok(domain, strlen(domain)))
                abort();
            /* A plain local part quotes to itself. */
            vstr_reset(tmp);
            smtp_addr_quote(tmp, vstr_str(addr), local_len, domain);
            if (vstr_str(addr)[0] != '"' &&
                strcmp(vstr_str(tmp), vstr_str(addr)) != 0 &&
                smtp_addr_check(vstr_str(tmp), vstr_len(tmp), why) != 0)
                abort();
        }
    }

    /* xtext: decode what decodes; encode round-trips. */
    if (xtext_decode(addr, text) == 0) {
        vstr_reset(tmp);
        xtext_encode(tmp, vstr_str(addr), vstr_len(addr));
        if (!xtext_valid(vstr_str(tmp)))
            abort();
    }
    vstr_reset(tmp);
    xtext_encode(tmp, (const char *) data, size);
    if (xtext_decode(addr, vstr_str(tmp)) != 0 || vstr_len(addr) != size ||
        memcmp(vstr_str(addr), data, size) != 0)
        abort();

    /* mynetworks: the text as a list, and as an address. */
    if ((nets = mynetworks_parse(text, why)) != NULL) {
        (void) mynetworks_match(nets, text);
        (void) mynetworks_match(nets, "127.0.0.1");
        (void) mynetworks_match(nets, "::ffff:10.1.2.3");
        mynetworks_free(nets);
    }
    if ((nets = mynetworks_parse("127.0.0.0/8 [::1]/128 !10.0.0.1 10.0.0.0/8",
                                 why)) == NULL)
        abort();
    (void) mynetworks_match(nets, text);
    mynetworks_free(nets);
    myfree(text);
out:
    vstr_free(addr);
    vstr_free(why);
    vstr_free(tmp);
    return 0;
}
