/*
 * verp_addr - which recipients are the feedback service's: the VERP
 * return paths bounce+TOKEN@bounce_verp_domain (global/verp.h), the
 * unsubscribe mailto addresses unsubscribe+TOKEN@unsubscribe_mailto_domain
 * (global/track_token.h) and complaint_addresses. Address tests only, no
 * token check (smtpd and qmgr route by them; feedback/ checks the token).
 */
#ifndef VERP_ADDR_H
#define VERP_ADDR_H

#include "sys_defs.h"

#define VERP_PREFIX "bounce+"

/* verp_addr_is_ours - is address bounce+SOMETHING@domain (any letter
   case)? */
extern bool verp_addr_is_ours(const char *address, const char *domain);

#define VERP_ADDR_TRANSPORT "feedback" /* the master.cf service */

typedef enum VERP_ADDR {
    VERP_ADDR_NONE, /* mail to deliver */
    VERP_ADDR_DSN, /* bounce+TOKEN@bounce_verp_domain: a DSN */
    VERP_ADDR_ARF, /* one of complaint_addresses: an ARF report */
    VERP_ADDR_UNSUB, /* unsubscribe+TOKEN@unsubscribe_mailto_domain: an
                        RFC 2369 mailto unsubscribe */
} VERP_ADDR;

/* verp_addr_kind - is address one whose mail the feedback service parses?
   verp_domain, unsub_domain and complaint_addresses (a list separated by
   commas or white space) as main.cf has them; NULL or "" for none. The
   prefixes tell a DSN from an unsubscribe when both domains are the same
   (unsubscribe_mailto_domain defaults to $bounce_verp_domain). */
extern VERP_ADDR verp_addr_kind(const char *address, const char *verp_domain,
                                const char *unsub_domain,
                                const char *complaint_addresses);

#endif
