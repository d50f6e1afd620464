/*
 * auth_from - the author domain of a message (RFC 7489 3.1.1, 6.6.1)
 *
 * DMARC is evaluated for the domain of the From: header. This reads the
 * header section as smtpd streamed it (LF line ends, folded lines start
 * with a space or TAB) and finds that domain: exactly one From: field,
 * holding one address whose domain is a DNS name. Anything else (no
 * From:, two of them, a group or several mailboxes, no '@', a domain with
 * characters a DNS name has not) is an error with a reason: the caller
 * reports a permerror, never a pass.
 */
#ifndef AUTH_FROM_H
#define AUTH_FROM_H

#include "sys_defs.h"

#include "vstr.h"

#define AUTH_FROM_DOMAIN_MAX 253

/* auth_from_domain - head[0..len) is the header section (it may stop
   anywhere: what follows an empty line is ignored); 0 with the lower-case
   domain in domain, or -1 with why */
extern int auth_from_domain(const char *head, size_t len, VSTR *domain,
                            VSTR *why);

#endif
