/*
 * mynetworks - match a client IP address against a list of networks
 *
 * The list is what mynetworks (and smtpd_client_event_limit_exceptions)
 * hold: words separated by commas or white space, each an address
 * ("10.1.2.3", "::1", "[::1]") or a network in CIDR form ("127.0.0.0/8",
 * "[2001:db8::]/32"), optionally negated with a leading '!'. The first
 * entry that matches decides. IPv4-mapped IPv6 addresses match as IPv4.
 * Lookup tables (type:name) are not supported yet: parsing them fails.
 */
#ifndef MYNETWORKS_H
#define MYNETWORKS_H

#include "sys_defs.h"
#include "vstr.h"

typedef struct MYNETWORKS MYNETWORKS;

/* mynetworks_parse - compile a list; NULL with the reason in why */
extern MYNETWORKS *mynetworks_parse(const char *list, VSTR *why);
extern MYNETWORKS *mynetworks_free(MYNETWORKS *nets);
/* mynetworks_match - the numeric address addr is in the list */
extern bool mynetworks_match(const MYNETWORKS *nets, const char *addr);
/* mynetworks_count - number of entries (for tests and logging) */
extern size_t mynetworks_count(const MYNETWORKS *nets);

#endif
