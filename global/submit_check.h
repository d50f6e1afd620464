/*
 * submit_check - what the envelope of a local submission may hold
 *
 * sendmail(1) checks its -f sender, -F full name and recipients here before
 * it writes a maildrop file, and pickup checks every maildrop file here
 * again before it hands it to cleanup, so both refuse the same things:
 * control characters (CR and LF above all: an address or a name must never
 * become a second SMTP command or header line downstream), an empty
 * recipient, and values longer than smtpd would take (SMTP_ADDR_MAX) or
 * than a From: header needs (SUBMIT_CHECK_FULL_NAME_MAX), which also keeps
 * every request to cleanup far below CLEANUP_LIST_MAX.
 */
#ifndef SUBMIT_CHECK_H
#define SUBMIT_CHECK_H

#include "sys_defs.h"
#include "smtp_addr.h"
#include "vstr.h"

#define SUBMIT_CHECK_ADDR_MAX SMTP_ADDR_MAX
#define SUBMIT_CHECK_FULL_NAME_MAX 1000 /* bytes of a -F full name */
#define SUBMIT_CHECK_ENVID_MAX 100 /* RFC 3461's ENVID limit */
#define SUBMIT_CHECK_QUOTE_MAX 60 /* bytes of a value shown in a reason */

/* submit_check_address - 0 when addr may be a recipient (or, with
   sender true, the envelope sender: "" is the null sender); else -1 and
   why says what is wrong ("contains a control character (\x0a)"),
   without repeating the address */
extern int submit_check_address(const char *addr, bool sender, VSTR *why);

/* submit_check_full_name - the same for a -F full name ("" is none) */
extern int submit_check_full_name(const char *name, VSTR *why);

/* submit_check_envid - the same for a -V envelope ID (RFC 3461): 1 to
   SUBMIT_CHECK_ENVID_MAX printable ASCII characters without spaces */
extern int submit_check_envid(const char *envid, VSTR *why);

/* submit_check_quote - append text to out in double quotes, each control
   byte and '"' and '\\' escaped (\x0a, \", \\), cut after max bytes with
   "..." so a huge or hostile value makes a short, one-line message */
extern void submit_check_quote(VSTR *out, const char *text, size_t max);

#endif
