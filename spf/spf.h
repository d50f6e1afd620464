/*
 * spf - internals shared by the spf daemon's modules
 *
 * spf.c     the daemon: configuration, the libunbound-backed DNS layer it
 *           gives libspf2, one check per connection (global/spf_proto.h)
 * spf_dkim.c DKIM verification with libopendkim (global/dkim_proto.h),
 *           keys fetched through the same libunbound context
 * spf_rr.c  DNS answers (libunbound's rdata) into libspf2's records;
 *           unit tested by spf_rr_test.c, fuzzed by fuzz/fuzz_spf_rr.c
 */
#ifndef SPF_H
#define SPF_H

#include "sys_defs.h"

#include <netinet/in.h>
#include <arpa/nameser.h>

#include <spf2/spf.h>

#include "attr.h"
#include "dkim_proto.h"
#include "vstr.h"

/* The longest SPF record handed to libspf2. RFC 7208 3.4 asks records to
   stay under 450 bytes; libspf2's compiler mis-handles records of tens of
   kilobytes (a 30 KB "... -all" came out neutral) and is where its CVEs
   live, so a longer one never reaches it: the check is a permerror. */
#define SPF_RECORD_MAX 4096

/* spf_rr_txt - TXT (or SPF) rdata: its character-strings joined (a NUL
   byte becomes '?'); false when the rdata is malformed */
extern bool spf_rr_txt(const unsigned char *data, size_t len, VSTR *out);

/* spf_rr_fill - one record of an answer (rdata of type, as libunbound
   gives it: names uncompressed) into rr->rr[idx]; text is scratch. An
   SPF record over SPF_RECORD_MAX is replaced by a text that is no SPF
   record, and rr's domain goes to oversize (when still empty). False:
   malformed (or libspf2 out of memory) */
extern bool spf_rr_fill(SPF_dns_rr_t *rr, int idx, ns_type type,
                        const unsigned char *data, size_t len, VSTR *text,
                        VSTR *oversize);

/* DKIM verification (spf_dkim.c). */
typedef struct SPF_DKIM SPF_DKIM;
struct ub_ctx;
/* spf_dkim_create - libopendkim set up once; ub NULL: DNS is off (every
   key lookup fails); psl (kept, may be NULL) names DMARC's organizational
   domains; DMARC looks for From: in the first head_max bytes */
struct PSL;
extern SPF_DKIM *spf_dkim_create(struct ub_ctx *ub, int timeout,
                                 const struct PSL *psl, size_t head_max);
extern SPF_DKIM *spf_dkim_free(SPF_DKIM *dk);
/* One message, one connection's state: spf_dkim_begin after its BEGIN
   (begin's strings copied), spf_dkim_data for each DATA (no lookup, no
   wait), spf_dkim_end after END: the keys fetched (synchronously, within
   dkim_lookup_timeout), DMARC evaluated when begin asks, the REPLY
   (caller frees); then spf_dkim_msg_free. */
typedef struct SPF_DKIM_MSG SPF_DKIM_MSG;
struct DKIM_REQUEST;
extern SPF_DKIM_MSG *spf_dkim_begin(SPF_DKIM *dk,
                                    const struct DKIM_REQUEST *begin);
extern void spf_dkim_data(SPF_DKIM_MSG *msg, const char *data, size_t len);
extern ATTR_LIST *spf_dkim_end(SPF_DKIM_MSG *msg);
extern SPF_DKIM_MSG *spf_dkim_msg_free(SPF_DKIM_MSG *msg);
extern const struct PSL *spf_dkim_psl(const SPF_DKIM_MSG *msg);
/* spf_dkim_txt - the TXT record of name starting with prefix into out,
   within the message's DNS budget: 1, 0 none, -1 the lookup failed */
extern int spf_dkim_txt(SPF_DKIM_MSG *msg, const char *name, const char *prefix,
                        VSTR *out);

/* DMARC (spf_dmarc.c): the library once (tld_file: the Public Suffix List
   for its relaxed alignment, or NULL), then one evaluation a message:
   the From: domain of head (the header section), its policy record (or
   the organizational domain's) through spf_dkim_txt, the SPF result of
   begin and the DKIM results in reply; the DMARC fields of reply are set
   (their strings in from and policy) */
extern bool spf_dmarc_init(const char *tld_file);
extern void spf_dmarc_done(const char *tld_file);
extern void spf_dmarc_eval(SPF_DKIM_MSG *dk, const struct DKIM_REQUEST *begin,
                           const char *head, size_t len, DKIM_REPLY *reply,
                           VSTR *from, VSTR *policy);

#endif
