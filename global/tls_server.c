/*
 * tls_server - the server side of TLS (smtpd's STARTTLS and smtps)
 *
 * The context is built once per process, before any client: a missing or
 * unreadable certificate is found here, so smtpd can stop offering
 * STARTTLS (level may) or refuse to run (level encrypt) with a clear
 * message, rather than fail each client's handshake.
 *
 * A client that closes without close_notify (a truncated session) is an
 * error as OpenSSL 3 reports it (SSL_R_UNEXPECTED_EOF_WHILE_READING); the
 * caller names it in its log line.
 */
#include "sys_defs.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <errno.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "argv.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "tls_server.h"
#include "vstr.h"

struct TLS_SERVER {
    SSL_CTX *ctx;
};

/* The protocol names of smtpd_tls_protocols, lowest first. */
static const struct {
    const char *name;
    int version;
} tls_server_versions[] = {
    {"SSLv3", SSL3_VERSION},     {"TLSv1", TLS1_VERSION},
    {"TLSv1.1", TLS1_1_VERSION}, {"TLSv1.2", TLS1_2_VERSION},
    {"TLSv1.3", TLS1_3_VERSION},
};

#define TLS_SERVER_NVERSIONS SLUICE_ARRAY_LEN(tls_server_versions)

/* tls_server_version - the index of a protocol name; -1 when unknown */
static int tls_server_version(const char *name)
{
    for (size_t i = 0; i < TLS_SERVER_NVERSIONS; i++)
        if (strcasecmp(name, tls_server_versions[i].name) == 0)
            return (int) i;
    return -1;
}

/* tls_server_protocols - a protocol list as the lowest and highest version */
int tls_server_protocols(const char *spec, int *min, int *max, VSTR *why)
{
    ARGV *words = argv_split(spec, ", \t\r\n:");
    unsigned enabled = (1u << TLS_SERVER_NVERSIONS) - 1;
    bool listed = false;
    unsigned named = 0;
    int lo = -1, hi = -1;

    for (size_t i = 0; i < words->argc; i++) {
        const char *word = words->argv[i];
        int index;

        if (strcasecmp(word, "SSLv2") == 0 || strcasecmp(word, "!SSLv2") == 0)
            continue; /* gone from OpenSSL: nothing to enable or exclude */
        if (strncmp(word, ">=", 2) == 0 || strncmp(word, "<=", 2) == 0)
            index = tls_server_version(word + 2);
        else if (*word == '!')
            index = tls_server_version(word + 1);
        else
            index = tls_server_version(word);
        if (index < 0) {
            vstr_sprintf(why, "unknown TLS protocol \"%s\"", word);
            argv_free(words);
            return -1;
        }
        if (strncmp(word, ">=", 2) == 0) {
            for (int v = 0; v < index; v++)
                enabled &= ~(1u << v);
        } else if (strncmp(word, "<=", 2) == 0) {
            for (int v = index + 1; v < (int) TLS_SERVER_NVERSIONS; v++)
                enabled &= ~(1u << v);
        } else if (*word == '!') {
            enabled &= ~(1u << index);
        } else {
            listed = true;
            named |= 1u << index;
        }
    }
    argv_free(words);
    if (listed)
        enabled &= named;
    for (int v = 0; v < (int) TLS_SERVER_NVERSIONS; v++) {
        if (!(enabled & (1u << v)))
            continue;
        if (lo < 0)
            lo = v;
        else if (hi != v - 1) {
            vstr_sprintf(why, "TLS protocols \"%s\" leave a gap (%s)", spec,
                         tls_server_versions[v - 1].name);
            return -1;
        }
        hi = v;
    }
    if (lo < 0) {
        vstr_sprintf(why, "TLS protocols \"%s\" exclude every protocol", spec);
        return -1;
    }
    *min = tls_server_versions[lo].version;
    *max = tls_server_versions[hi].version;
    return 0;
}

/* tls_server_errors - OpenSSL's error queue as text, the queue emptied */
void tls_server_errors(unsigned long err, VSTR *out)
{
    char buf[256];

    vstr_reset(out);
    if (err == 0)
        err = ERR_get_error();
    for (int n = 0; err != 0 && n < 8; err = ERR_get_error(), n++) {
        ERR_error_string_n(err, buf, sizeof(buf));
        vstr_sprintf_append(out, "%s%s", vstr_len(out) ? "; " : "", buf);
    }
    ERR_clear_error();
}

/* tls_server_ciphers - Postfix's cipher grade as an OpenSSL cipher list */
static const char *tls_server_ciphers(const char *grade)
{
    if (strcasecmp(grade, "high") == 0)
        return "HIGH:!aNULL:!eNULL:!MD5:!RC4:!3DES";
    if (strcasecmp(grade, "medium") == 0)
        return "HIGH:MEDIUM:!aNULL:!eNULL:!MD5:!RC4:!3DES";
    return NULL;
}

/* tls_server_load - the certificate(s) and key(s) */
static int tls_server_load(SSL_CTX *ctx, const MAIL_CONF *conf, VSTR *why,
                           VSTR *err)
{
    ARGV *chain = mail_conf_list(conf, "smtpd_tls_chain_files");
    const char *cert = mail_conf_str(conf, "smtpd_tls_cert_file");
    const char *key = mail_conf_str(conf, "smtpd_tls_key_file");
    int status = 0;

    if (chain->argc == 0 && *cert == 0) {
        vstr_sprintf(why, "no certificate: set smtpd_tls_chain_files (or "
                          "smtpd_tls_cert_file and smtpd_tls_key_file)");
        argv_free(chain);
        return -1;
    }
    /* Each chain file holds a key and its certificate chain (PEM). */
    for (size_t i = 0; i < chain->argc && status == 0; i++) {
        const char *file = chain->argv[i];

        if (access(file, R_OK) < 0) {
            vstr_sprintf(why, "smtpd_tls_chain_files: cannot read %s: %s", file,
                         strerror(errno));
            status = -1;
        } else if (SSL_CTX_use_PrivateKey_file(ctx, file, SSL_FILETYPE_PEM) !=
                       1 ||
                   SSL_CTX_use_certificate_chain_file(ctx, file) != 1) {
            tls_server_errors(0, err);
            vstr_sprintf(why,
                         "smtpd_tls_chain_files: cannot load the key and"
                         " certificate chain of %s: %s",
                         file, vstr_str(err));
            status = -1;
        }
    }
    argv_free(chain);
    if (status < 0 || *cert == 0)
        return status;
    if (*key == 0)
        key = cert;
    if (access(cert, R_OK) < 0) {
        vstr_sprintf(why, "smtpd_tls_cert_file: cannot read %s: %s", cert,
                     strerror(errno));
        return -1;
    }
    if (access(key, R_OK) < 0) {
        vstr_sprintf(why, "smtpd_tls_key_file: cannot read %s: %s", key,
                     strerror(errno));
        return -1;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tls_server_errors(0, err);
        vstr_sprintf(why, "smtpd_tls_cert_file: cannot load %s: %s", cert,
                     vstr_str(err));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        tls_server_errors(0, err);
        vstr_sprintf(why, "smtpd_tls_key_file: cannot load %s: %s", key,
                     vstr_str(err));
        return -1;
    }
    return 0;
}

/* tls_server_expiry - the earliest notAfter of the certificates */
time_t tls_server_expiry(TLS_SERVER *tls)
{
    time_t earliest = -1;
    int more = SSL_CTX_set_current_cert(tls->ctx, SSL_CERT_SET_FIRST);

    while (more == 1) {
        X509 *cert = SSL_CTX_get0_certificate(tls->ctx);
        const ASN1_TIME *end = cert ? X509_get0_notAfter(cert) : NULL;
        struct tm tm;

        if (end != NULL && ASN1_TIME_to_tm(end, &tm) == 1) {
            time_t when = timegm(&tm);

            if (earliest < 0 || when < earliest)
                earliest = when;
        }
        more = SSL_CTX_set_current_cert(tls->ctx, SSL_CERT_SET_NEXT);
    }
    ERR_clear_error();
    return earliest;
}

/* tls_server_create - the context of smtpd's main.cf */
TLS_SERVER *tls_server_create(const MAIL_CONF *conf, bool mandatory, VSTR *why)
{
    static const unsigned char sid_ctx[] = "sluice-smtpd";
    const char *proto_param =
        mandatory ? "smtpd_tls_mandatory_protocols" : "smtpd_tls_protocols";
    const char *cipher_param =
        mandatory ? "smtpd_tls_mandatory_ciphers" : "smtpd_tls_ciphers";
    const char *ciphers = tls_server_ciphers(mail_conf_str(conf, cipher_param));
    VSTR *err = vstr_alloc(100);
    TLS_SERVER *tls;
    SSL_CTX *ctx;
    int min, max;

    if (tls_server_protocols(mail_conf_str(conf, proto_param), &min, &max,
                             err) < 0) {
        vstr_sprintf(why, "%s: %s", proto_param, vstr_str(err));
        vstr_free(err);
        return NULL;
    }
    if (ciphers == NULL) {
        vstr_sprintf(why,
                     "%s: unknown cipher grade \"%s\" (use medium or"
                     " high)",
                     cipher_param, mail_conf_str(conf, cipher_param));
        vstr_free(err);
        return NULL;
    }
    if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        tls_server_errors(0, err);
        vstr_sprintf(why, "cannot create a TLS context: %s", vstr_str(err));
        vstr_free(err);
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, max) != 1 ||
        SSL_CTX_set_cipher_list(ctx, ciphers) != 1 ||
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) !=
            1) {
        tls_server_errors(0, err);
        vstr_sprintf(why, "cannot configure the TLS context: %s",
                     vstr_str(err));
        SSL_CTX_free(ctx);
        vstr_free(err);
        return NULL;
    }
    /* No renegotiation (a client-initiated one costs us, gains nothing). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    if (tls_server_load(ctx, conf, why, err) < 0) {
        SSL_CTX_free(ctx);
        vstr_free(err);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_server_errors(0, err);
        vstr_sprintf(why,
                     "the TLS private key does not match the"
                     " certificate: %s",
                     vstr_str(err));
        SSL_CTX_free(ctx);
        vstr_free(err);
        return NULL;
    }
    vstr_free(err);
    tls = mymalloc(sizeof(*tls));
    tls->ctx = ctx;
    return tls;
}

/* tls_server_free - release the context; returns NULL */
TLS_SERVER *tls_server_free(TLS_SERVER *tls)
{
    if (tls == NULL)
        return NULL;
    SSL_CTX_free(tls->ctx);
    myfree(tls);
    return NULL;
}

/* tls_server_ssl - a new SSL for one session */
SSL *tls_server_ssl(TLS_SERVER *tls)
{
    SSL *ssl = SSL_new(tls->ctx);

    if (ssl == NULL)
        ERR_clear_error();
    return ssl;
}

/* tls_server_summary - "TLSv1.3 with cipher X (256/256 bits)" */
void tls_server_summary(SSL *ssl, VSTR *out)
{
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    int alg_bits = 0;
    int bits = cipher ? SSL_CIPHER_get_bits(cipher, &alg_bits) : 0;

    vstr_sprintf(out, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
                 cipher ? SSL_CIPHER_get_name(cipher) : "unknown", bits,
                 alg_bits);
}
