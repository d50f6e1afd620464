/*
 * spf_rr - DNS answers into libspf2's records
 *
 * libunbound hands each record's rdata as it came on the wire (names
 * uncompressed); libspf2 wants an SPF_dns_rr_t with one union per record:
 * an address, or a NUL-terminated text (TXT, MX host, PTR name). The data
 * is the DNS server's, untrusted: every length is checked, and an SPF
 * record over SPF_RECORD_MAX never reaches libspf2.
 */
#include "sys_defs.h"

#include <strings.h>

#include "dns.h"
#include "mymalloc.h"
#include "spf.h"
#include "vstr.h"

/* spf_rr_txt - TXT rdata: its strings, joined */
bool spf_rr_txt(const unsigned char *data, size_t len, VSTR *out)
{
    vstr_reset(out);
    for (size_t at = 0; at < len;) {
        size_t piece = data[at++];

        if (piece > len - at)
            return false;
        for (size_t i = 0; i < piece; i++)
            vstr_addch(out, data[at + i] != 0 ? data[at + i] : '?');
        at += piece;
    }
    return true;
}

/* spf_rr_fill - one record of an answer into rr at idx */
bool spf_rr_fill(SPF_dns_rr_t *rr, int idx, ns_type type,
                 const unsigned char *data, size_t len, VSTR *text,
                 VSTR *oversize)
{
    size_t size;
    DNS_MX mx = {0};

    switch (type) {
    case ns_t_a:
        if (len != 4 || SPF_dns_rr_buf_realloc(rr, idx, 4) != SPF_E_SUCCESS)
            return false;
        memcpy(&rr->rr[idx]->a, data, 4);
        return true;
    case ns_t_aaaa:
        if (len != 16 || SPF_dns_rr_buf_realloc(rr, idx, 16) != SPF_E_SUCCESS)
            return false;
        memcpy(&rr->rr[idx]->aaaa, data, 16);
        return true;
    case ns_t_mx:
        if (dns_mx_parse(data, len, &mx) < 0)
            return false;
        vstr_cpy(text, mx.host);
        myfree(mx.host);
        break;
    case ns_t_ptr:
        if (dns_name_parse(data, len, text) < 0)
            return false;
        break;
    default: /* TXT, SPF */
        if (!spf_rr_txt(data, len, text))
            return false;
        if (vstr_len(text) > SPF_RECORD_MAX &&
            strncasecmp(vstr_str(text), "v=spf1", 6) == 0) {
            if (vstr_len(oversize) == 0)
                vstr_cpy(oversize, rr->domain ? rr->domain : "?");
            vstr_cpy(text, "(an SPF record too long for sluice)");
        }
        break;
    }
    size = vstr_len(text) + 1;
    if (SPF_dns_rr_buf_realloc(rr, idx, size) != SPF_E_SUCCESS)
        return false;
    memcpy(rr->rr[idx]->txt, vstr_str(text), size);
    return true;
}
