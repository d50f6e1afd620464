/*
 * verp_addr - which recipients are the feedback service's
 *
 * See verp_addr.h.
 */
#include "sys_defs.h"

#include <strings.h>

#include "smtp_addr.h"
#include "track_token.h"
#include "verp_addr.h"

/* verp_addr_prefixed - is address PREFIXSOMETHING@domain (any letter case,
   SOMETHING not empty)? */
static bool verp_addr_prefixed(const char *address, const char *prefix,
                               const char *domain)
{
    size_t local_len;
    const char *dom;

    if (domain == NULL || *domain == 0 ||
        (dom = smtp_addr_split(address, &local_len)) == NULL)
        return false;
    return local_len > strlen(prefix) &&
           strncasecmp(address, prefix, strlen(prefix)) == 0 &&
           strcasecmp(dom, domain) == 0;
}

/* verp_addr_is_ours - is address bounce+SOMETHING@domain? */
bool verp_addr_is_ours(const char *address, const char *domain)
{
    return verp_addr_prefixed(address, VERP_PREFIX, domain);
}

/* verp_addr_kind - is address one whose mail the feedback service parses? */
VERP_ADDR verp_addr_kind(const char *address, const char *verp_domain,
                         const char *unsub_domain,
                         const char *complaint_addresses)
{
    static const char sep[] = ", \t\r\n";
    size_t addr_len = strlen(address);
    const char *p = complaint_addresses;

    if (verp_addr_is_ours(address, verp_domain))
        return VERP_ADDR_DSN;
    if (verp_addr_prefixed(address, TRACK_UNSUB_PREFIX, unsub_domain))
        return VERP_ADDR_UNSUB;
    while (p != NULL && *(p += strspn(p, sep)) != 0) {
        size_t len = strcspn(p, sep);

        if (len == addr_len && strncasecmp(p, address, len) == 0)
            return VERP_ADDR_ARF;
        p += len;
    }
    return VERP_ADDR_NONE;
}
