/*
 * tls_server - the server side of TLS (smtpd's STARTTLS and smtps)
 *
 * One TLS_SERVER per process holds the OpenSSL context built from main.cf
 * (Postfix's names): the certificate and key from smtpd_tls_chain_files
 * or smtpd_tls_cert_file / smtpd_tls_key_file, the protocol range of
 * smtpd_tls_protocols (smtpd_tls_mandatory_protocols at level encrypt),
 * the cipher grade of smtpd_tls_ciphers (smtpd_tls_mandatory_ciphers).
 * Sessions resume with OpenSSL's session tickets (per process keys).
 */
#ifndef TLS_SERVER_H
#define TLS_SERVER_H

#include "sys_defs.h"

#include <openssl/ssl.h>
#include <time.h>

#include "mail_conf.h"
#include "vstr.h"

typedef struct TLS_SERVER TLS_SERVER;

/* tls_server_create - the context of smtpd's main.cf; NULL with why when
   a certificate or key cannot be loaded or a setting is bad */
extern TLS_SERVER *tls_server_create(const MAIL_CONF *conf, bool mandatory,
                                     VSTR *why);
extern TLS_SERVER *tls_server_free(TLS_SERVER *tls);
/* tls_server_expiry - the earliest notAfter of the context's certificates
   (one per chain file or key type); -1 when it has none or it cannot be
   read */
extern time_t tls_server_expiry(TLS_SERVER *tls);
/* tls_server_ssl - a new SSL for one session; NULL when OpenSSL fails */
extern SSL *tls_server_ssl(TLS_SERVER *tls);
/* tls_server_protocols - a protocol list (">=TLSv1.2", "TLSv1.2 TLSv1.3",
   "!SSLv3, !TLSv1") as the lowest and highest version; -1 with why */
extern int tls_server_protocols(const char *spec, int *min, int *max,
                                VSTR *why);
/* tls_server_summary - "TLSv1.3 with cipher X (256/256 bits)" */
extern void tls_server_summary(SSL *ssl, VSTR *out);
/* tls_server_errors - OpenSSL's error queue as text ("" when empty), the
   queue emptied; err: a first error taken elsewhere (0: none) */
extern void tls_server_errors(unsigned long err, VSTR *out);

#endif
