/*
 * tls_client - the TLS client side of SMTP: levels, policies, OpenSSL
 *
 * Postfix's names and meanings:
 *   none      no TLS
 *   may       STARTTLS when offered; the certificate is not checked; a
 *             failed handshake is retried in plain text
 *   encrypt   TLS required, the certificate is not checked
 *   verify    TLS required, the certificate must chain to smtp_tls_CAfile
 *             and name the server (match list, default its host name)
 *   secure    as verify, the names default to the next-hop domain
 *   dane      RFC 7672 (global/dane.h): an MX host with usable
 *             DNSSEC-validated TLSA records must present a certificate
 *             that matches one (tls_client_dane); without DNSSEC or TLSA
 *             records, as may; secure TLSA records none usable: encrypt
 *   dane-only as dane, but a host without usable validated TLSA records
 *             is not used
 *   fingerprint   TLS required; no CA and no name is checked: the
 *             digest (smtp_tls_fingerprint_digest) of the server's
 *             certificate, or of its public key (the DER
 *             SubjectPublicKeyInfo, DANE's selector 1), must be one of the
 *             fingerprints of the policy's match= or, without one, of
 *             smtp_tls_fingerprint_cert_match (tls_client_fprint)
 * A policy (smtp_tls_policy_maps value) is "level [attr=value ...]" with
 * match=name:name (a name, ".domain" for any subdomain, or the words
 * hostname, nexthop, dot-nexthop; at fingerprint, fingerprints joined by
 * '|') and protocols=... (Postfix's syntax). As in Postfix, several
 * match= attributes add up.
 *
 * A fingerprint is the digest in hexadecimal, its bytes separated by ':'
 * ("AA:BB:...") as `openssl x509 -fingerprint` prints it; the colons may
 * be left out and case does not matter. Fingerprints are kept in that
 * canonical form (upper case, colons), so equal ones compare equal.
 *
 * The log line (tls_client_summary) is Postfix's: "Trusted TLS connection
 * established to host[ip]:port: TLSv1.3 with cipher X (256/256 bits)
 * key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest
 * SHA256", its first word Anonymous (no certificate), Untrusted (a
 * certificate that does not chain to a trusted CA), Trusted (it does) or
 * Verified (it does and names what the policy asked for, or it matches a
 * DANE TLSA record).
 */
#ifndef TLS_CLIENT_H
#define TLS_CLIENT_H

#include "sys_defs.h"

#include "argv.h"
#include "dane.h"
#include "vstr.h"

typedef struct ssl_st SSL;

typedef enum TLS_LEVEL {
    TLS_LEV_INVALID = -1,
    TLS_LEV_NONE,
    TLS_LEV_MAY,
    TLS_LEV_ENCRYPT,
    TLS_LEV_FPRINT,
    TLS_LEV_DANE,
    TLS_LEV_DANE_ONLY,
    TLS_LEV_VERIFY,
    TLS_LEV_SECURE,
} TLS_LEVEL;

/* tls_level_parse - "may" etc. (case-insensitive), or TLS_LEV_INVALID */
extern TLS_LEVEL tls_level_parse(const char *name);
extern const char *tls_level_name(TLS_LEVEL level);
/* tls_level_supported - implemented here (every valid level) */
extern bool tls_level_supported(TLS_LEVEL level);
/* tls_level_required - no delivery without TLS */
extern bool tls_level_required(TLS_LEVEL level);
/* tls_level_verifies - the certificate must chain and match */
extern bool tls_level_verifies(TLS_LEVEL level);

/* One destination's policy. */
typedef struct TLS_POLICY {
    TLS_LEVEL level;
    ARGV *match; /* NULL: the level's default */
    char *protocols; /* NULL: the parameter's */
} TLS_POLICY;

/* tls_policy_parse - "secure match=a:.b protocols=>=TLSv1.2"; 0, or -1
   with the reason in why (an unknown level or attribute, a bad value).
   digest (smtp_tls_fingerprint_digest) is what fingerprints of a
   fingerprint policy must be the length of. */
extern int tls_policy_parse(const char *value, const char *digest,
                            TLS_POLICY *policy, VSTR *why);
extern void tls_policy_free(TLS_POLICY *policy);

/* tls_protocols_parse - Postfix's protocol list ("!SSLv2, !SSLv3",
   ">=TLSv1.2", "TLSv1.2 TLSv1.3", "<=TLSv1.2") to the lowest and highest
   version allowed (OpenSSL's TLS1_VERSION etc.); 0, or -1 with why */
extern int tls_protocols_parse(const char *spec, int *min_version,
                               int *max_version, VSTR *why);

/* tls_match_names - the names a certificate must carry: each word of
   match (default "hostname" at verify, "nexthop:dot-nexthop" at secure)
   with hostname, nexthop and dot-nexthop replaced by host, nexthop_domain
   and "." nexthop_domain */
extern ARGV *tls_match_names(TLS_LEVEL level, const ARGV *match,
                             const char *host, const char *nexthop_domain);

/* tls_fprint_digest_len - the length in bytes of a digest OpenSSL knows
   by that name (sha256, sha1, md5, sha512 ...), or 0 */
extern size_t tls_fprint_digest_len(const char *digest);
/* tls_fprint_list - the fingerprints of text (separated by any of seps)
   appended to list in canonical form; each must be a digest of len bytes
   (tls_fprint_digest_len). 0, or -1 with the bad one and why in why */
extern int tls_fprint_list(const char *text, const char *seps, size_t len,
                           ARGV *list, VSTR *why);

/*
 * smtp_dns_support_level (Postfix's name and values), resolved:
 *   disabled  smtp makes no DNS lookup (next hops must be [ip] literals),
 *             whatever disable_dns_lookups says
 *   enabled   lookups, nothing DNSSEC-validated: dane acts as may (with a
 *             warning), dane-only defers
 *   dnssec    lookups validated under dns_trust_anchor_file, or, when that
 *             is empty, TLS_DNS_ROOT_ANCHOR (Debian's dns-root-data); one
 *             of them must be readable
 *   empty     (the default) as before the parameter existed: disabled
 *             with disable_dns_lookups = yes, else dnssec when
 *             dns_trust_anchor_file is set, else enabled
 */
typedef enum TLS_DNS_SUPPORT {
    TLS_DNS_INVALID = -1,
    TLS_DNS_DISABLED,
    TLS_DNS_ENABLED,
    TLS_DNS_DNSSEC,
} TLS_DNS_SUPPORT;

#define TLS_DNS_ROOT_ANCHOR "/usr/share/dns/root.key"

/* tls_dns_support - the level from smtp_dns_support_level (value),
   disable_dns_lookups (disable) and dns_trust_anchor_file (anchor_file);
   *anchor is the trust anchor file to load ("" below dnssec).
   TLS_DNS_INVALID with why for an unknown value, or dnssec asked for
   with no dns_trust_anchor_file and TLS_DNS_ROOT_ANCHOR unreadable */
extern TLS_DNS_SUPPORT tls_dns_support(const char *value, bool disable,
                                       const char *anchor_file,
                                       const char **anchor, VSTR *why);
extern const char *tls_dns_support_name(TLS_DNS_SUPPORT level);

typedef struct TLS_CLIENT TLS_CLIENT;

/* tls_client_create - one OpenSSL context for every connection: cafile
   (may be empty: nothing is trusted) loaded; NULL with why */
extern TLS_CLIENT *tls_client_create(const char *cafile, VSTR *why);
extern TLS_CLIENT *tls_client_free(TLS_CLIENT *tls);
/* tls_client_ssl - a connection's SSL, protocols limited to spec; NULL
   with why */
extern SSL *tls_client_ssl(TLS_CLIENT *tls, const char *protocols, VSTR *why);

/* tls_client_dane - DANE on ssl before its handshake: the usable ones of
   the count TLSA records of host (the TLSA base domain, also the SNI
   name); a certificate matched through a DANE-TA record must name host
   or nexthop (the next-hop domain, RFC 7672 3.2.2; NULL: host alone).
   0, or -1 with why when OpenSSL takes none of the records */
extern int tls_client_dane(SSL *ssl, const char *host, const char *nexthop,
                           const DANE_TLSA *tlsa, size_t count, VSTR *why);

/* What a finished handshake gave. */
typedef struct TLS_STATUS {
    char protocol[32];
    char cipher[64];
    int bits;
    int alg_bits;
    bool peer_cert; /* the server showed a certificate */
    bool trusted; /* it chains to a trusted CA */
    bool matched; /* ... and names one of the match names */
    bool dane; /* set by the caller when tls_client_dane was used:
                  trusted and matched then mean a TLSA record matched */
    VSTR *verify_error; /* why not trusted (OpenSSL's words) */
    VSTR *peer_names; /* the certificate's DNS names, for a mismatch */
    VSTR *kex; /* " key-exchange ... server-digest ...", may be "" */
    bool fprint; /* tls_client_fprint was asked: trusted and matched
                    then mean a fingerprint matched */
    VSTR *cert_fprint; /* at fingerprint: the certificate's digest */
    VSTR *pkey_fprint; /* ... and its public key's */
} TLS_STATUS;

extern void tls_status_init(TLS_STATUS *status);
extern void tls_status_free(TLS_STATUS *status);
/* tls_client_status - after the handshake: version, cipher, trust and
   whether the certificate names one of names (NULL: not checked), or
   with status->dane set, whether a TLSA record matched */
extern void tls_client_status(SSL *ssl, const ARGV *names, TLS_STATUS *status);
/* tls_client_fprint - at fingerprint, after tls_client_status: is the
   digest (a name tls_fprint_digest_len knows) of the server's certificate
   or of its public key one of fprints (canonical form)? Then trusted and
   matched (Verified), else neither, with both fingerprints in
   verify_error. No CA and no name is looked at. */
extern void tls_client_fprint(SSL *ssl, const char *digest, const ARGV *fprints,
                              TLS_STATUS *status);
/* tls_status_word - Anonymous, Untrusted, Trusted or Verified */
extern const char *tls_status_word(const TLS_STATUS *status);
/* tls_client_summary - Postfix's log line; relay is "host[ip]:port" */
extern void tls_client_summary(VSTR *out, const TLS_STATUS *status,
                               const char *relay);
/* tls_error_text - OpenSSL's error queue as one line (emptied), or
   fallback when it is empty */
extern void tls_error_text(VSTR *out, const char *fallback);

#endif
