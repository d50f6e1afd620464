/*
 * mta_sts - MTA-STS (RFC 8461): the TLS policy a mail domain publishes
 *
 * A domain that wants its mail only over verified TLS publishes a TXT
 * record "_mta-sts.DOMAIN" ("v=STSv1; id=20240101T0000;") and a policy at
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt:
 *     version: STSv1
 *     mode: enforce          (or testing, or none)
 *     mx: mx1.example.com    (one line per MX pattern; "*.example.net"
 *     mx: *.example.net       stands for exactly one more label)
 *     max_age: 604800        (seconds the policy may be cached)
 *
 * mta_sts_lookup() finds the policy that applies to a domain now, without
 * blocking the event loop: the TXT record through the process's DNS
 * context (global/dns.h, libunbound), then, unless the cache already
 * holds the policy of that id, the address of mta-sts.DOMAIN (same DNS)
 * and the policy over HTTPS with libcurl's multi interface on the same
 * event loop. libcurl never resolves a name itself: the address we found
 * is handed to it (CURLOPT_RESOLVE), proxies from the environment are
 * ignored, redirects are not followed (RFC 8461 3.3), only https is
 * allowed, the certificate must chain to cafile (smtp_tls_CAfile; when
 * empty, the system's CA store) and name mta-sts.DOMAIN, the answer must
 * be 200 with Content-Type text/plain and at most MTA_STS_BODY_MAX bytes.
 *
 * Policies are cached by domain with their id until max_age runs out, in
 * memory and, when cache_dir can be written, in one file per domain there
 * (written durably: temporary file, fsync, rename), so a restarted agent
 * keeps enforcing a policy whose server is down. What applies:
 *   - TXT names the id of a cached unexpired policy: that policy
 *   - else the fetched policy (cached from then on)
 *   - a fetch that fails (no address, refused, bad certificate, not 200,
 *     malformed policy, timeout), a TXT lookup that fails, or no usable
 *     TXT record: the cached unexpired policy if there is one, else none
 *     (RFC 8461 3.3, 5.1: a malformed policy counts as no policy)
 * Each failure is logged once per lookup, with what applies instead.
 * Lookups of one domain that overlap share one fetch.
 */
#ifndef MTA_STS_H
#define MTA_STS_H

#include "sys_defs.h"

#include <time.h>

#include "argv.h"
#include "dns.h"
#include "vstr.h"

struct event_base;

#define MTA_STS_MAX_AGE_MAX 31557600L /* RFC 8461 3.2: one year */
#define MTA_STS_BODY_MAX (64 * 1024) /* a policy larger than this is bad */
#define MTA_STS_ID_MAX 32 /* RFC 8461 3.1: 1*32 alphanumerics */

typedef enum MTA_STS_MODE {
    MTA_STS_MODE_NONE,
    MTA_STS_MODE_TESTING,
    MTA_STS_MODE_ENFORCE,
} MTA_STS_MODE;

typedef struct MTA_STS_POLICY {
    MTA_STS_MODE mode;
    ARGV *mx; /* the mx: patterns, lower case, in policy order */
    long max_age; /* seconds, at most MTA_STS_MAX_AGE_MAX */
} MTA_STS_POLICY;

/*
 * The pure parts (unit tests, fuzz/fuzz_mta_sts.c).
 */

/* mta_sts_policy_parse - the policy text (LF or CRLF lines "key: value";
   version must say STSv1, mode and max_age must be there, mx at least
   once unless mode is none; unknown keys are ignored, a repeated
   version, mode or max_age is an error); 0 with policy filled, or -1
   with the reason in why and nothing to free */
extern int mta_sts_policy_parse(const char *text, size_t len,
                                MTA_STS_POLICY *policy, VSTR *why);
extern void mta_sts_policy_free(MTA_STS_POLICY *policy);
/* mta_sts_policy_text - the policy as its own canonical text */
extern void mta_sts_policy_text(const MTA_STS_POLICY *policy, VSTR *out);
extern const char *mta_sts_mode_name(MTA_STS_MODE mode);

/* mta_sts_txt_select - RFC 8461 3.1 over a name's TXT records: those that
   do not start with "v=STSv1;" (or are exactly "v=STSv1") are not ours;
   exactly one must remain, with an id of 1..32 letters and digits. 1
   with the id in id, 0 when no record is ours, -1 with why when the
   records are ambiguous or malformed (which counts as none) */
extern int mta_sts_txt_select(const ARGV *texts, VSTR *id, VSTR *why);

/* mta_sts_mx_match - does host match pattern ("mx.example.com", or
   "*.example.com": exactly one label more)? Case-insensitive; a final dot
   on host is ignored */
extern bool mta_sts_mx_match(const char *pattern, const char *host);
/* mta_sts_policy_allows - does host match one of the policy's mx? */
extern bool mta_sts_policy_allows(const MTA_STS_POLICY *policy,
                                  const char *host);
/* mta_sts_domain_ok - a domain name safe to use in a URL and as a file
   name: letters, digits, '-', '.', no empty label, at most 253 bytes */
extern bool mta_sts_domain_ok(const char *domain);

/*
 * The lookup.
 */
typedef struct MTA_STS_CTX MTA_STS_CTX;
typedef struct MTA_STS_LOOKUP MTA_STS_LOOKUP;

typedef struct MTA_STS_CONF {
    const char *cafile; /* "" or NULL: the system's CA store */
    const char *cache_dir; /* NULL: memory only */
    bool cache_read_only; /* read cache_dir, never write it (sluice tls) */
    int dns_timeout; /* seconds, each DNS step */
    int fetch_timeout; /* seconds, the HTTPS fetch as a whole */
    int https_port; /* 443 but in unit tests */
} MTA_STS_CONF;

/* What applies; valid during the callback only. */
typedef struct MTA_STS_RESULT {
    const MTA_STS_POLICY *policy; /* NULL: no policy */
    const char *id; /* the policy's id, or NULL */
    const char *source; /* "fetched", "cached", or why there is none */
} MTA_STS_RESULT;

typedef void (*MTA_STS_CALLBACK)(const MTA_STS_RESULT *result, void *arg);

/* mta_sts_ctx_create - libcurl's multi handle on base; cache_dir is made
   (0700) when missing; one that cannot be made or written is logged and
   the cache is kept in memory only. NULL with why when libcurl cannot be
   set up */
extern MTA_STS_CTX *mta_sts_ctx_create(struct event_base *base, DNS_CTX *dns,
                                       const MTA_STS_CONF *conf, VSTR *why);
/* mta_sts_ctx_free - cancel every lookup (no callbacks) and free; NULL */
extern MTA_STS_CTX *mta_sts_ctx_free(MTA_STS_CTX *ctx);
/* mta_sts_lookup - the policy of domain; the callback runs later from the
   event loop, never inside this call */
extern MTA_STS_LOOKUP *mta_sts_lookup(MTA_STS_CTX *ctx, const char *domain,
                                      MTA_STS_CALLBACK callback, void *arg);
/* mta_sts_lookup_cancel - its callback will not run (a shared fetch goes
   on and fills the cache) */
extern void mta_sts_lookup_cancel(MTA_STS_LOOKUP *lookup);

/* mta_sts_cache_parse - a policy file of cache_dir: "id: ...",
   "fetched: <time_t>", "expires: <time_t>", an empty line, the policy
   text. 0 with the parts filled, or -1 with why (the caller ignores
   that file) */
extern int mta_sts_cache_parse(const char *text, size_t len, VSTR *id,
                               time_t *fetched, time_t *expires,
                               MTA_STS_POLICY *policy, VSTR *why);

#endif
