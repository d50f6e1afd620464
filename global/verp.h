/*
 * verp - the VERP return path bounce+TOKEN@bounce_verp_domain
 *
 * TOKEN is sign_token (purpose "verp") of the message's queue ID (its
 * QID_LEN characters) and the recipient's record offset in the queue file
 * (8 bytes, big-endian): the pair that names one recipient of one message
 * and is the seq of its delivered event (events.h), so a DSN or complaint
 * that comes back can be tied to that recipient's events. 24 bytes of
 * payload and the 10-byte tag make a 55-character token: the local part
 * "bounce+TOKEN" is 62 characters, within RFC 5321's 64.
 */
#ifndef VERP_H
#define VERP_H

#include "sys_defs.h"

#include "qid.h"
#include "verp_addr.h"
#include "vstr.h"

#define VERP_PURPOSE "verp"

/* verp_make - append bounce+TOKEN@domain for (qid, offset) to out */
extern void verp_make(VSTR *out, const VSTR *key, const char *domain,
                      const char *qid, long long offset);

/* verp_check - the queue ID and offset in a bounce+TOKEN@... address
   (the domain is not checked: a complaint's copy may name another one):
   0, or -1 with why (not a VERP address, a bad or forged token) */
extern int verp_check(const VSTR *key, const char *address, char *qid,
                      long long *offset, VSTR *why);

#endif
