/*
 * smtp_addr - RFC 5321 envelope addresses: parsing paths, domains, quoting
 *
 * The SMTP server hands the argument of MAIL FROM: / RCPT TO: to
 * smtp_addr_parse_path(), which checks the path and returns the address
 * without angle brackets and without a source route, in its external form
 * (a quoted local part stays quoted, so the address never holds an
 * unquoted space), and where the ESMTP parameters start. Parsing is
 * lenient where Postfix is (spaces after the colon, an address without
 * angle brackets) and strict about what could hurt downstream: control
 * characters, NUL, 8-bit bytes (SMTPUTF8 is not offered), bad domains.
 * An address without a domain ("postmaster") is allowed; callers decide
 * (cleanup qualifies it with @$myorigin, and smtpd judges it by that
 * domain).
 */
#ifndef SMTP_ADDR_H
#define SMTP_ADDR_H

#include "sys_defs.h"
#include "vstr.h"

#define SMTP_ADDR_MAX 1000 /* longest address accepted, bytes */

#define SMTP_ADDR_FLAG_NULL_OK 0x01 /* "<>" is valid (MAIL FROM) */

/* smtp_addr_parse_path - parse "<addr> params"; 0 with the address in addr
   and *rest at the parameters (white space skipped), or -1 with a short
   reason in why ("malformed address", "bad domain"). */
extern int smtp_addr_parse_path(const char *arg, int flags, VSTR *addr,
                                const char **rest, VSTR *why);

/* smtp_addr_check - validate a bare address (no angle brackets); 0 or -1 */
extern int smtp_addr_check(const char *addr, size_t len, VSTR *why);

/* smtp_addr_split - the one rule every program uses to tell an envelope
   address's local part from its domain: the domain starts after the last
   '@' that is outside a quoted string. Returns the domain, or NULL when the
   address has none, and the length of the local part in *local_len (when
   local_len is not NULL). Nothing in a local part is ever a route: a quoted
   '@' ("v@outside.example" has no domain), a '%' (v%outside.example@host is
   local to host) and a '!' stay part of the local part. */
extern const char *smtp_addr_split(const char *addr, size_t *local_len);

/* smtp_addr_domain - smtp_addr_split without the local part's length */
extern const char *smtp_addr_domain(const char *addr);

/* smtp_addr_domain_ok - a valid domain or address literal */
extern bool smtp_addr_domain_ok(const char *domain, size_t len);

/* smtp_addr_quote - append the external form of local@domain to out,
   quoting the local part when it is not a dot-string */
extern void smtp_addr_quote(VSTR *out, const char *local, size_t local_len,
                            const char *domain);

#endif
