/*
 * dane - TLSA records and the DANE decision for one MX host (RFC 7672)
 */
#include "sys_defs.h"

#include "dane.h"
#include "mymalloc.h"
#include "vstr.h"

/* dane_tlsa_parse - usage, selector, matching type, data */
int dane_tlsa_parse(const unsigned char *rdata, size_t len, DANE_TLSA *tlsa)
{
    if (len < 4)
        return -1;
    tlsa->usage = rdata[0];
    tlsa->selector = rdata[1];
    tlsa->mtype = rdata[2];
    tlsa->len = len - 3;
    tlsa->data = mymalloc(tlsa->len);
    memcpy(tlsa->data, rdata + 3, tlsa->len);
    return 0;
}

/* dane_tlsa_usable - RFC 7672 3.1: DANE-TA(2) and DANE-EE(3) only */
bool dane_tlsa_usable(const DANE_TLSA *tlsa)
{
    if (tlsa->usage != 2 && tlsa->usage != 3)
        return false;
    if (tlsa->selector > 1)
        return false;
    switch (tlsa->mtype) {
    case 0:
        return tlsa->len > 0;
    case 1:
        return tlsa->len == 32;
    case 2:
        return tlsa->len == 64;
    default:
        return false;
    }
}

/* dane_tlsa_free - release records */
DANE_TLSA *dane_tlsa_free(DANE_TLSA *tlsa, size_t count)
{
    if (tlsa == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++)
        myfree(tlsa[i].data);
    myfree(tlsa);
    return NULL;
}

/* dane_tlsa_name - the TLSA owner name of a host's SMTP port */
void dane_tlsa_name(VSTR *out, const char *host, int port)
{
    size_t len = strlen(host);

    if (len > 0 && host[len - 1] == '.')
        len--;
    vstr_sprintf(out, "_%d._tcp.%.*s", port, (int) len, host);
}

/* dane_decide - RFC 7672 2.2 and Postfix's dane / dane-only */
DANE_ACTION dane_decide(bool dane_only, bool addr_secure, DANE_TLSA_STATE state,
                        size_t total, size_t usable, const char *host,
                        VSTR *why)
{
    const char *level = dane_only ? "dane-only" : "dane";

    if (!addr_secure) {
        vstr_sprintf(why,
                     "%s: the MX or address records of %s are not "
                     "DNSSEC-validated",
                     level, host);
        return dane_only ? DANE_DEFER : DANE_MAY;
    }
    switch (state) {
    case DANE_TLSA_FAILED:
        vstr_sprintf(why, "%s: TLSA lookup for %s failed", level, host);
        return DANE_DEFER;
    case DANE_TLSA_INSECURE:
        vstr_sprintf(why, "%s: the TLSA records of %s are not DNSSEC-validated",
                     level, host);
        return dane_only ? DANE_DEFER : DANE_MAY;
    case DANE_TLSA_SECURE:
        break;
    }
    if (total == 0) {
        vstr_sprintf(why, "%s: %s has no TLSA records", level, host);
        return dane_only ? DANE_DEFER : DANE_MAY;
    }
    if (usable == 0) {
        vstr_sprintf(why, "%s: none of the %zu TLSA records of %s is usable",
                     level, total, host);
        return dane_only ? DANE_DEFER : DANE_ENCRYPT;
    }
    vstr_sprintf(why, "%s: %zu usable TLSA record(s) for %s", level, usable,
                 host);
    return DANE_USE_TLSA;
}
