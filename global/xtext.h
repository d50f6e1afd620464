/*
 * xtext - the RFC 3461 xtext encoding of DSN ENVID= and ORCPT= values
 *
 * xtext is printable US-ASCII except '+' and '=', with any other byte
 * written as "+XX" (two upper-case hex digits).
 */
#ifndef XTEXT_H
#define XTEXT_H

#include "sys_defs.h"
#include "vstr.h"

/* xtext_decode - decode text into out; 0, or -1 when text is not xtext */
extern int xtext_decode(VSTR *out, const char *text);
/* xtext_valid - text is well-formed xtext */
extern bool xtext_valid(const char *text);
/* xtext_encode - append the xtext form of data[0..len) to out */
extern void xtext_encode(VSTR *out, const char *data, size_t len);

#endif
