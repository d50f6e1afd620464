/*
 * dane - DANE for SMTP (RFC 7672): TLSA records and what they mean for
 * one MX host
 *
 * The smtp agent at smtp_tls_security_level = dane or dane-only looks up
 * the TLSA records of "_port._tcp.host" (dns_lookup_tlsa) for an MX host
 * whose MX and address records were DNSSEC-validated, and asks
 * dane_decide() what to do with the connection:
 *   DANE_USE_TLSA  TLS is required and the server's certificate must
 *                  match one of the usable records (tls_client_dane)
 *   DANE_ENCRYPT   secure TLSA records, none usable: mandatory TLS
 *                  without authentication (RFC 7672 2.2)
 *   DANE_MAY       DANE does not apply (insecure DNS, no TLSA record):
 *                  opportunistic TLS; at dane-only this is DANE_DEFER
 *   DANE_DEFER     this host is not tried (a bogus or failed lookup, or
 *                  dane-only without DANE); the next one is
 * Usable records are DANE-TA(2) and DANE-EE(3) with selector 0 or 1 and
 * matching type 0, 1 (SHA2-256) or 2 (SHA2-512) of the right length;
 * PKIX-TA(0) and PKIX-EE(1) are ignored, as RFC 7672 3.1.3 says.
 */
#ifndef DANE_H
#define DANE_H

#include "sys_defs.h"

#include "vstr.h"

typedef struct DANE_TLSA {
    unsigned usage;
    unsigned selector;
    unsigned mtype;
    unsigned char *data;
    size_t len;
} DANE_TLSA;

/* What the TLSA lookup of one host gave. */
typedef enum DANE_TLSA_STATE {
    DANE_TLSA_SECURE, /* validated: records (maybe none) */
    DANE_TLSA_INSECURE, /* answered, not validated */
    DANE_TLSA_FAILED, /* bogus, server failure, timeout */
} DANE_TLSA_STATE;

typedef enum DANE_ACTION {
    DANE_USE_TLSA,
    DANE_ENCRYPT,
    DANE_MAY,
    DANE_DEFER,
} DANE_ACTION;

/* dane_tlsa_parse - one TLSA rdata; 0 with tlsa->data allocated, or -1
   when it is shorter than 4 bytes */
extern int dane_tlsa_parse(const unsigned char *rdata, size_t len,
                           DANE_TLSA *tlsa);
/* dane_tlsa_usable - DANE-TA or DANE-EE that OpenSSL can match */
extern bool dane_tlsa_usable(const DANE_TLSA *tlsa);
/* dane_tlsa_free - the records and the array; NULL */
extern DANE_TLSA *dane_tlsa_free(DANE_TLSA *tlsa, size_t count);
/* dane_tlsa_name - "_25._tcp.host" */
extern void dane_tlsa_name(VSTR *out, const char *host, int port);
/* dane_decide - what a connection to a host gets: addr_secure says its
   MX and address records were validated (no TLSA lookup is made when
   not: state and the counts are then ignored); why says so for the log
   and a deferral */
extern DANE_ACTION dane_decide(bool dane_only, bool addr_secure,
                               DANE_TLSA_STATE state, size_t total,
                               size_t usable, const char *host, VSTR *why);

#endif
