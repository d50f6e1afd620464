/*
 * psl - organizational domains by the Public Suffix List
 *
 * DMARC (RFC 7489 3.2) looks for a policy at the organizational domain of
 * the From: domain when that domain has none of its own: the public
 * suffix the domain ends in (the longest rule of the list that matches
 * it: "co.uk", "*.ck" with the exception "!www.ck", and "*" when no rule
 * does) plus one more label. "mail.example.co.uk" belongs to
 * "example.co.uk", not to "co.uk" as the last two labels would say.
 *
 * The list is the text file of publicsuffix.org (Debian's package
 * publicsuffix: /usr/share/publicsuffix/public_suffix_list.dat): one rule
 * a line (its first word), "//" comments, blank lines. Both of its
 * sections (ICANN and private) count. A line that is no rule makes the
 * whole list an error naming that line: a list read in part would give
 * wrong answers quietly. A rule in Unicode (UTF-8) is kept as its
 * A-labels ("公司.cn" as "xn--55qx5d.cn", Punycode of RFC 3492), the form
 * a domain has in a From: header; its labels are taken as the list
 * writes them (lower case, NFC), with no further IDNA mapping.
 */
#ifndef PSL_H
#define PSL_H

#include "sys_defs.h"

#include "vstr.h"

/* The largest list file psl_load reads (Debian's is about 250 KB). */
#define PSL_FILE_MAX (16 * 1024 * 1024)

typedef struct PSL PSL;

/* psl_parse - the list in text[0..len); NULL with why (the line) */
extern PSL *psl_parse(const char *text, size_t len, VSTR *why);
/* psl_load - the list in the file path; NULL with why (the file, and the
   line or the system error) */
extern PSL *psl_load(const char *path, VSTR *why);
/* psl_free - NULL */
extern PSL *psl_free(PSL *psl);
/* psl_rules - the number of rules of the list */
extern size_t psl_rules(const PSL *psl);

/* psl_org_domain - the organizational domain of domain (a DNS name, any
   case, no trailing dot) into out, lower case: its public suffix and one
   label more; domain itself when it is a public suffix. psl NULL: no list,
   the last two labels (as if the list held only "*"). */
extern void psl_org_domain(const PSL *psl, const char *domain, VSTR *out);

#endif
