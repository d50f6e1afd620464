/*
 * match_list - lists of domains or client addresses, with tables
 *
 * The lists mydestination, relay_domains, mynetworks (and later others)
 * hold: words separated by commas or white space. Each word is one of
 *
 *   example.test        that domain (and, with MATCH_LIST_PARENT, any
 *                       subdomain of it: parent_domain_matches_subdomains)
 *   .example.test       any subdomain of example.test
 *   10.0.0.0/8, [::1]   (address lists) an address or a CIDR network
 *   type:name           a table (global/maps.h): domain lists look up the
 *                       domain, then its parent domains as ".parent" keys
 *                       (and as "parent" with MATCH_LIST_PARENT); address
 *                       lists look up the address, then (IPv4) its
 *                       shorter forms 1.2.3, 1.2, 1. A value that is
 *                       "REJECT"/"DUNNO" (any case) does not match.
 *   /path/file          the words in that file, one or more per line
 *   !word               negation: a match means "not in the list"
 *
 * The first word that matches decides. Domains compare without case.
 */
#ifndef MATCH_LIST_H
#define MATCH_LIST_H

#include "sys_defs.h"
#include "vstr.h"

#define MATCH_LIST_DOMAIN 0x01 /* a domain list */
#define MATCH_LIST_ADDR 0x02 /* a client address list */
#define MATCH_LIST_PARENT 0x04 /* example.test matches sub.example.test */

typedef struct MATCH_LIST MATCH_LIST;

/* match_list_create - compile param's value; NULL with why (naming the
   parameter and the bad word) */
extern MATCH_LIST *match_list_create(const char *param, const char *value,
                                     int flags, VSTR *why);
extern MATCH_LIST *match_list_free(MATCH_LIST *list);
/* match_list_match - 1 in the list, 0 not, -1 a table failed (answer
   "try again later") */
extern int match_list_match(MATCH_LIST *list, const char *item);

#endif
