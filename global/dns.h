/*
 * dns - asynchronous mail exchanger and address lookups on libunbound
 *
 * One DNS_CTX per process, tied to its libevent base: libunbound resolves
 * in a thread of its own and its descriptor (ub_fd) is watched by an event,
 * so a lookup never blocks the loop. The configuration is read once:
 *   dns_servers           ip, ip:port, [ip]:port or [ip] per entry: the
 *                         forwarders asked (empty: /etc/resolv.conf)
 *   disable_dns_lookups   yes: every lookup of a name fails at once with a
 *                         temporary "DNS lookups are disabled" error
 *   dns_trust_anchor_file DNSSEC trust anchors (DS or DNSKEY records in
 *                         zone file form): libunbound validates every
 *                         answer under them. A bogus answer is a
 *                         temporary failure; DNS_ADDR.dnssec and
 *                         DNS_REPLY.secure say what was validated (empty:
 *                         nothing is, nothing is checked)
 * Loopback forwarders are allowed (tests run their own server).
 *
 * dns_lookup() finds where mail for a name goes: with mx set, the MX
 * records sorted by preference (equal preferences shuffled), each MX host
 * resolved to A (and AAAA when this machine has IPv6), or the name's own
 * A/AAAA when it has no MX (RFC 5321 5.1); without mx, the name's own
 * addresses. An IP address is answered without DNS. The outcome:
 *   DNS_OK    the ordered address list
 *   DNS_PERM  NXDOMAIN (5.1.2), null MX (RFC 7505, 5.1.10), no address
 *             record at all (5.4.4): return the mail to its sender
 *   DNS_TEMP  SERVFAIL, timeout, lookups disabled (4.4.3): try again later
 * A host that is an alias (CNAME) gets the expanded name in
 * DNS_ADDR.cname; when its address records are not validated but its own
 * CNAME record is (asked for only then, and only with a trust anchor),
 * DNS_ADDR.alias_secure says so (DANE looks for TLSA records at the
 * host's own name in that case).
 * dns_lookup_txt() gets a name's TXT records, each record's strings
 * joined (reply->texts; none is DNS_OK with no texts, NXDOMAIN is
 * DNS_PERM).
 * dns_lookup_ptr() finds a client's host name as Postfix's smtpd does: the
 * PTR name counts only when its own addresses include the client's.
 * The callback always runs later from the event loop, never inside
 * dns_lookup(); the lookup is freed after it returns.
 */
#ifndef DNS_H
#define DNS_H

#include "sys_defs.h"

#include <netinet/in.h>
#include <arpa/inet.h>

#include "argv.h"
#include "mail_conf.h"
#include "vstr.h"

struct event_base;

typedef enum DNS_STATUS {
    DNS_OK,
    DNS_TEMP,
    DNS_PERM,
} DNS_STATUS;

#define DNS_NAME_SIZE 256 /* a name in text, its dot and the null */

typedef struct DNS_ADDR {
    char *host; /* the MX host (or the name itself) */
    int pref; /* MX preference; 0 without MX */
    int family; /* AF_INET or AF_INET6 */
    char ip[INET6_ADDRSTRLEN]; /* numeric */
    bool dnssec; /* the MX records (when asked) and the host's address
                    records were DNSSEC-validated */
    char cname[DNS_NAME_SIZE]; /* host is an alias: the name its address
                                  records came from ("": not an alias) */
    bool alias_secure; /* host is an alias, the MX records (when asked)
                          and host's own CNAME record were validated, the
                          chain's end (address records) maybe not: RFC
                          7672 2.2.2 looks for TLSA at host then */
} DNS_ADDR;

/* One record's rdata as it came (dns_lookup_tlsa). */
typedef struct DNS_RR {
    unsigned char *data;
    size_t len;
} DNS_RR;

typedef struct DNS_REPLY {
    DNS_STATUS status;
    char dsn[16]; /* "4.4.3", "5.1.2", "2.0.0" */
    VSTR *reason; /* for the log and the bounce */
    DNS_ADDR *addrs; /* in the order to try */
    size_t count;
    char *name; /* dns_lookup_ptr: the forward-confirmed name, or NULL */
    char *ptr_name; /* dns_lookup_ptr: what the PTR said, or NULL */
    ARGV *texts; /* dns_lookup_txt: one string per TXT record, or NULL */
    bool secure; /* dns_lookup_tlsa: the answer was DNSSEC-validated */
    bool bogus; /* ... it failed validation (status DNS_TEMP) */
    DNS_RR *rrs; /* dns_lookup_tlsa: the records (none: no such name or
                    no record of the type) */
    size_t rr_count;
} DNS_REPLY;

typedef void (*DNS_CALLBACK)(const DNS_REPLY *reply, void *arg);

typedef struct DNS_CTX DNS_CTX;
typedef struct DNS_LOOKUP DNS_LOOKUP;

/* dns_ctx_create - read dns_servers and disable_dns_lookups; NULL with the
   reason in why when libunbound cannot be set up that way */
extern DNS_CTX *dns_ctx_create(struct event_base *base, const MAIL_CONF *conf,
                               VSTR *why);

/* What a program decides for itself (smtp: smtp_dns_support_level). */
typedef struct DNS_CTX_OPTS {
    bool disabled; /* no lookups, whatever disable_dns_lookups says */
    bool enabled; /* lookups, whatever disable_dns_lookups says */
    const char *anchor; /* the trust anchor file ("": none); NULL:
                           dns_trust_anchor_file */
} DNS_CTX_OPTS;

/* dns_ctx_create_opts - dns_ctx_create with opts (NULL: main.cf alone) */
extern DNS_CTX *dns_ctx_create_opts(struct event_base *base,
                                    const MAIL_CONF *conf,
                                    const DNS_CTX_OPTS *opts, VSTR *why);
/* dns_ctx_free - cancel every lookup (no callbacks) and free; NULL */
extern DNS_CTX *dns_ctx_free(DNS_CTX *ctx);

/* dns_lookup - start a lookup of name (MX first when mx is set), bounded
   by timeout seconds; the callback gets the outcome */
extern DNS_LOOKUP *dns_lookup(DNS_CTX *ctx, const char *name, bool mx,
                              int timeout, DNS_CALLBACK callback, void *arg);
/* dns_lookup_ptr - the host name of an IP address, forward-confirmed:
   the PTR of addr, then the A (or AAAA) of that name, bounded by timeout
   seconds as a whole. DNS_OK with reply->name only when one of the
   name's addresses is addr; DNS_PERM when there is no PTR or the name
   does not lead back to addr; DNS_TEMP when a server failed or did not
   answer in time (reply->ptr_name is set once the PTR was read) */
extern DNS_LOOKUP *dns_lookup_ptr(DNS_CTX *ctx, const char *addr, int timeout,
                                  DNS_CALLBACK callback, void *arg);
/* dns_lookup_txt - the TXT records of name, bounded by timeout seconds:
   DNS_OK with reply->texts (maybe empty: the name has no TXT record),
   DNS_PERM when the name does not exist, DNS_TEMP when a server failed or
   did not answer in time */
extern DNS_LOOKUP *dns_lookup_txt(DNS_CTX *ctx, const char *name, int timeout,
                                  DNS_CALLBACK callback, void *arg);
/* dns_lookup_tlsa - the TLSA records of name ("_25._tcp.host"), bounded
   by timeout seconds: DNS_OK with reply->rrs (none when the name or the
   records do not exist) and reply->secure; DNS_TEMP when a server failed,
   did not answer in time, or the answer is bogus (reply->bogus) */
extern DNS_LOOKUP *dns_lookup_tlsa(DNS_CTX *ctx, const char *name, int timeout,
                                   DNS_CALLBACK callback, void *arg);
/* dns_ctx_dnssec - a trust anchor is configured: answers can be secure */
extern bool dns_ctx_dnssec(const DNS_CTX *ctx);
/* dns_ctx_hosts - answer from a hosts file (NULL: /etc/hosts) before DNS,
   names and addresses alike; call before the first lookup. 0, or -1 with
   the reason in why */
extern int dns_ctx_hosts(DNS_CTX *ctx, const char *path, VSTR *why);
/* dns_lookup_cancel - forget a lookup; its callback will not run */
extern void dns_lookup_cancel(DNS_LOOKUP *lookup);

/*
 * The pure parts, exposed for unit tests.
 */
typedef struct DNS_MX {
    int pref;
    char *host; /* "." for the root (null MX) */
} DNS_MX;

/* dns_server_parse - "1.2.3.4", "1.2.3.4:53", "[::1]:53", "::1" into
   libunbound's "ip" or "ip@port"; 0, or -1 with the reason in why */
extern int dns_server_parse(const char *text, VSTR *out, VSTR *why);
/* dns_name_parse - a wire-format name (no compression) into dotted text
   without the final dot ("." for the root); bytes used, or -1 */
extern int dns_name_parse(const unsigned char *data, size_t len, VSTR *out);
/* dns_mx_parse - one MX rdata; 0 with mx->host allocated, or -1 */
extern int dns_mx_parse(const unsigned char *data, size_t len, DNS_MX *mx);
/* dns_txt_parse - one TXT rdata: its character-strings joined into out;
   0, or -1 when a length runs past the end */
extern int dns_txt_parse(const unsigned char *data, size_t len, VSTR *out);
/* dns_mx_null - RFC 7505: one MX, the root name (preference ignored) */
extern bool dns_mx_null(const DNS_MX *mx, size_t count);
/* dns_ptr_query - the reverse-lookup name of an address:
   "4.3.2.1.in-addr.arpa" or the nibbles under "ip6.arpa"; 0, or -1 when
   addr is not an IP address */
extern int dns_ptr_query(const char *addr, VSTR *out);
/* dns_mx_sort - order by preference, equal preferences in random order
   (rnd returns a random number) */
extern void dns_mx_sort(DNS_MX *mx, size_t count,
                        unsigned (*rnd)(void *rnd_arg), void *rnd_arg);

#endif
