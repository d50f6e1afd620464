/*
 * tls_client - the TLS client side of SMTP: levels, policies, OpenSSL
 *
 * Everything but the I/O: the smtp agent hands the SSL this makes to a
 * libevent filter on its connection after STARTTLS, and asks
 * tls_client_status() what the finished handshake proved. Certificates
 * are never checked during the handshake (SSL_VERIFY_NONE): at "may" and
 * "encrypt" an untrusted certificate is fine, and at "verify"/"secure"
 * the agent wants to say why it gives up, in its own log line, after the
 * summary line Postfix logs too.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "argv.h"
#include "msg.h"
#include "mymalloc.h"
#include "tls_client.h"
#include "vstr.h"

/* clang-format off */
static const struct {
    const char *name;
    TLS_LEVEL level;
} tls_level_tab[] = {
    {"none", TLS_LEV_NONE},
    {"may", TLS_LEV_MAY},
    {"encrypt", TLS_LEV_ENCRYPT},
    {"fingerprint", TLS_LEV_FPRINT},
    {"dane", TLS_LEV_DANE},
    {"dane-only", TLS_LEV_DANE_ONLY},
    {"verify", TLS_LEV_VERIFY},
    {"secure", TLS_LEV_SECURE},
};

static const struct {
    const char *name;
    int version;
} tls_proto_tab[] = {
    {"SSLv2", 0},                   /* never offered; accepted in lists */
    {"SSLv3", SSL3_VERSION},
    {"TLSv1", TLS1_VERSION},
    {"TLSv1.1", TLS1_1_VERSION},
    {"TLSv1.2", TLS1_2_VERSION},
    {"TLSv1.3", TLS1_3_VERSION},
};
/* clang-format on */

#define TLS_PROTO_COUNT SLUICE_ARRAY_LEN(tls_proto_tab)

/* tls_level_parse - a level's name to its value */
TLS_LEVEL tls_level_parse(const char *name)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(tls_level_tab); i++)
        if (strcasecmp(name, tls_level_tab[i].name) == 0)
            return tls_level_tab[i].level;
    return TLS_LEV_INVALID;
}

/* tls_level_name - a level's name */
const char *tls_level_name(TLS_LEVEL level)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(tls_level_tab); i++)
        if (tls_level_tab[i].level == level)
            return tls_level_tab[i].name;
    return "invalid";
}

/* tls_level_supported - what this code implements: every valid level */
bool tls_level_supported(TLS_LEVEL level)
{
    return level >= TLS_LEV_NONE && level <= TLS_LEV_SECURE;
}

/* tls_level_required - no plain text delivery */
bool tls_level_required(TLS_LEVEL level)
{
    return level >= TLS_LEV_ENCRYPT;
}

/* tls_level_verifies - chain and name checked */
bool tls_level_verifies(TLS_LEVEL level)
{
    return level == TLS_LEV_VERIFY || level == TLS_LEV_SECURE;
}

/* tls_policy_free - release a policy's parts */
void tls_policy_free(TLS_POLICY *policy)
{
    if (policy->match)
        policy->match = argv_free(policy->match);
    myfree(policy->protocols);
    policy->protocols = NULL;
}

/* tls_policy_fprints - a fingerprint policy's match= value */
static int tls_policy_fprints(const char *val, const char *digest, ARGV *list,
                              VSTR *why)
{
    size_t len = tls_fprint_digest_len(digest);

    if (len == 0) {
        vstr_sprintf(why, "unknown fingerprint digest \"%s\"", digest);
        return -1;
    }
    return tls_fprint_list(val, "|", len, list, why);
}

/* tls_policy_parse - "level attr=value ..." */
int tls_policy_parse(const char *value, const char *digest, TLS_POLICY *policy,
                     VSTR *why)
{
    ARGV *words = argv_split(value, " \t\r\n");
    int ret = -1;

    policy->level = TLS_LEV_INVALID;
    policy->match = NULL;
    policy->protocols = NULL;
    if (words->argc == 0) {
        vstr_cpy(why, "empty TLS policy");
        goto out;
    }
    if ((policy->level = tls_level_parse(words->argv[0])) == TLS_LEV_INVALID) {
        vstr_sprintf(why, "invalid TLS security level \"%s\"", words->argv[0]);
        goto out;
    }
    for (size_t i = 1; i < words->argc; i++) {
        const char *word = words->argv[i];
        const char *eq = strchr(word, '=');
        const char *val = eq ? eq + 1 : "";
        size_t klen = eq ? (size_t) (eq - word) : strlen(word);

        if (eq == NULL || *val == 0) {
            vstr_sprintf(why, "TLS policy attribute \"%s\" has no value", word);
            goto out;
        }
        if (klen == 5 && strncasecmp(word, "match", 5) == 0) {
            if (policy->match == NULL)
                policy->match = argv_alloc(4);
            if (policy->level != TLS_LEV_FPRINT) {
                ARGV *names = argv_split(val, ":");

                for (size_t j = 0; j < names->argc; j++)
                    argv_add(policy->match, names->argv[j]);
                argv_free(names);
            } else if (tls_policy_fprints(val, digest, policy->match, why) <
                       0) {
                goto out;
            }
        } else if (klen == 9 && strncasecmp(word, "protocols", 9) == 0) {
            int lo, hi;

            if (tls_protocols_parse(val, &lo, &hi, why) < 0)
                goto out;
            myfree(policy->protocols);
            policy->protocols = mystrdup(val);
        } else if ((klen == 7 && strncasecmp(word, "ciphers", 7) == 0) ||
                   (klen == 7 && strncasecmp(word, "exclude", 7) == 0) ||
                   (klen == 10 && strncasecmp(word, "servername", 10) == 0) ||
                   (klen == 16 &&
                    strncasecmp(word, "connection_reuse", 16) == 0)) {
            /* Postfix's; accepted, not acted on yet. */
        } else {
            vstr_sprintf(why, "unknown TLS policy attribute \"%.*s\"",
                         (int) klen, word);
            goto out;
        }
    }
    ret = 0;
out:
    argv_free(words);
    if (ret < 0) {
        tls_policy_free(policy);
        policy->level = TLS_LEV_INVALID;
    }
    return ret;
}

/* tls_proto_index - a protocol's index in tls_proto_tab, or -1 */
static int tls_proto_index(const char *name)
{
    for (size_t i = 0; i < TLS_PROTO_COUNT; i++)
        if (strcasecmp(name, tls_proto_tab[i].name) == 0)
            return (int) i;
    return -1;
}

/* tls_protocols_parse - Postfix's protocol list to a version range */
int tls_protocols_parse(const char *spec, int *min_version, int *max_version,
                        VSTR *why)
{
    ARGV *words = argv_split(spec, " \t,:");
    bool allowed[TLS_PROTO_COUNT];
    bool any_plain = false;
    int lo = -1;
    int hi = -1;

    for (size_t i = 0; i < TLS_PROTO_COUNT; i++)
        allowed[i] = true;
    /* Named ones alone, when any is named without '!'. */
    for (size_t i = 0; i < words->argc; i++)
        if (words->argv[i][0] != '!' && words->argv[i][0] != '>' &&
            words->argv[i][0] != '<')
            any_plain = true;
    if (any_plain)
        for (size_t i = 0; i < TLS_PROTO_COUNT; i++)
            allowed[i] = false;
    for (size_t i = 0; i < words->argc; i++) {
        const char *word = words->argv[i];
        int idx;

        if (strncmp(word, ">=", 2) == 0 || strncmp(word, "<=", 2) == 0) {
            if ((idx = tls_proto_index(word + 2)) < 0)
                goto bad;
            for (int j = 0; j < (int) TLS_PROTO_COUNT; j++)
                if (word[0] == '>' ? j < idx : j > idx)
                    allowed[j] = false;
        } else if (word[0] == '!') {
            if ((idx = tls_proto_index(word + 1)) < 0)
                goto bad;
            allowed[idx] = false;
        } else {
            if ((idx = tls_proto_index(word)) < 0)
                goto bad;
            allowed[idx] = true;
        }
        continue;
    bad:
        vstr_sprintf(why, "unknown TLS protocol \"%s\" in \"%s\"", word, spec);
        argv_free(words);
        return -1;
    }
    argv_free(words);
    allowed[0] = false; /* SSLv2: OpenSSL 3 has none */
    for (size_t i = 0; i < TLS_PROTO_COUNT; i++) {
        if (!allowed[i])
            continue;
        if (lo < 0)
            lo = (int) i;
        hi = (int) i;
    }
    if (lo < 0) {
        vstr_sprintf(why, "TLS protocol list \"%s\" allows no protocol", spec);
        return -1;
    }
    *min_version = tls_proto_tab[lo].version;
    *max_version = tls_proto_tab[hi].version;
    return 0;
}

/* tls_match_names - the names to look for in the certificate */
ARGV *tls_match_names(TLS_LEVEL level, const ARGV *match, const char *host,
                      const char *nexthop_domain)
{
    ARGV *names = argv_alloc(4);
    ARGV *defaults = NULL;

    if (match == NULL || match->argc == 0) {
        defaults = argv_split(
            level == TLS_LEV_SECURE ? "nexthop:dot-nexthop" : "hostname", ":");
        match = defaults;
    }
    for (size_t i = 0; i < match->argc; i++) {
        const char *word = match->argv[i];

        if (strcasecmp(word, "hostname") == 0) {
            argv_add(names, host);
        } else if (strcasecmp(word, "nexthop") == 0) {
            argv_add(names, nexthop_domain);
        } else if (strcasecmp(word, "dot-nexthop") == 0) {
            VSTR *dot = vstr_alloc(64);

            vstr_sprintf(dot, ".%s", nexthop_domain);
            argv_add(names, vstr_str(dot));
            vstr_free(dot);
        } else if (*word) {
            argv_add(names, word);
        }
    }
    if (defaults)
        argv_free(defaults);
    return names;
}

/* tls_fprint_digest_len - a digest's length, 0 when OpenSSL lacks it */
size_t tls_fprint_digest_len(const char *digest)
{
    const EVP_MD *md = *digest ? EVP_get_digestbyname(digest) : NULL;
    int size = md ? EVP_MD_get_size(md) : 0;

    return size > 0 ? (size_t) size : 0;
}

/* tls_fprint_hexval - one hexadecimal digit's value, or -1 */
static int tls_fprint_hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* tls_fprint_one - one fingerprint of len bytes to "AA:BB:..." in out;
   the colons, all or none, between bytes */
static int tls_fprint_one(const char *text, size_t len, VSTR *out, VSTR *why)
{
    size_t bytes = 0;
    bool colons = strchr(text, ':') != NULL;
    const char *cp = text;

    vstr_reset(out);
    while (*cp) {
        int hi = tls_fprint_hexval((unsigned char) cp[0]);
        int lo = hi < 0 ? -1 : tls_fprint_hexval((unsigned char) cp[1]);

        if (lo < 0) {
            vstr_sprintf(why,
                         "bad fingerprint \"%s\": pairs of hexadecimal "
                         "digits expected (AA:BB:...)",
                         text);
            return -1;
        }
        vstr_sprintf_append(out, "%s%c%c", bytes ? ":" : "", toupper(cp[0]),
                            toupper(cp[1]));
        bytes++;
        cp += 2;
        if (colons && *cp == ':' && cp[1] != 0)
            cp++;
        else if (colons && *cp != 0) {
            vstr_sprintf(why,
                         "bad fingerprint \"%s\": pairs of hexadecimal "
                         "digits expected (AA:BB:...)",
                         text);
            return -1;
        }
    }
    if (bytes != len) {
        vstr_sprintf(why,
                     "bad fingerprint \"%s\": %zu bytes, the digest has "
                     "%zu (smtp_tls_fingerprint_digest)",
                     text, bytes, len);
        return -1;
    }
    return 0;
}

/* tls_fprint_list - fingerprints separated by seps to canonical form */
int tls_fprint_list(const char *text, const char *seps, size_t len, ARGV *list,
                    VSTR *why)
{
    ARGV *words = argv_split(text, seps);
    VSTR *one = vstr_alloc(3 * len + 1);
    int ret = 0;

    for (size_t i = 0; i < words->argc && ret == 0; i++) {
        if ((ret = tls_fprint_one(words->argv[i], len, one, why)) == 0)
            argv_add(list, vstr_str(one));
    }
    argv_free(words);
    vstr_free(one);
    return ret;
}

/* tls_dns_support - smtp_dns_support_level with what it replaces */
TLS_DNS_SUPPORT tls_dns_support(const char *value, bool disable,
                                const char *anchor_file, const char **anchor,
                                VSTR *why)
{
    *anchor = "";
    if (*value == 0) {
        if (disable)
            return TLS_DNS_DISABLED;
        if (*anchor_file == 0)
            return TLS_DNS_ENABLED;
        *anchor = anchor_file;
        return TLS_DNS_DNSSEC;
    }
    if (strcasecmp(value, "disabled") == 0)
        return TLS_DNS_DISABLED;
    if (strcasecmp(value, "enabled") == 0)
        return TLS_DNS_ENABLED;
    if (strcasecmp(value, "dnssec") != 0) {
        vstr_sprintf(why,
                     "smtp_dns_support_level: unknown value \"%s\" "
                     "(disabled, enabled or dnssec)",
                     value);
        return TLS_DNS_INVALID;
    }
    if (*anchor_file) {
        *anchor = anchor_file;
    } else if (access(TLS_DNS_ROOT_ANCHOR, R_OK) == 0) {
        *anchor = TLS_DNS_ROOT_ANCHOR;
    } else {
        vstr_sprintf(why,
                     "smtp_dns_support_level = dnssec needs a DNSSEC trust "
                     "anchor: dns_trust_anchor_file is empty and %s cannot "
                     "be read (%s)",
                     TLS_DNS_ROOT_ANCHOR, strerror(errno));
        return TLS_DNS_INVALID;
    }
    return TLS_DNS_DNSSEC;
}

/* tls_dns_support_name - Postfix's word for a level */
const char *tls_dns_support_name(TLS_DNS_SUPPORT level)
{
    switch (level) {
    case TLS_DNS_DISABLED:
        return "disabled";
    case TLS_DNS_ENABLED:
        return "enabled";
    case TLS_DNS_DNSSEC:
        return "dnssec";
    default:
        return "invalid";
    }
}

struct TLS_CLIENT {
    SSL_CTX *ctx;
};

/* tls_error_text - drain OpenSSL's error queue into one line */
void tls_error_text(VSTR *out, const char *fallback)
{
    unsigned long err;
    char buf[256];

    vstr_reset(out);
    while ((err = ERR_get_error()) != 0) {
        ERR_error_string_n(err, buf, sizeof(buf));
        if (vstr_len(out) > 0)
            vstr_cat(out, "; ");
        vstr_cat(out, buf);
    }
    if (vstr_len(out) == 0)
        vstr_cpy(out, fallback);
}

/* tls_client_create - the context every connection's SSL comes from */
TLS_CLIENT *tls_client_create(const char *cafile, VSTR *why)
{
    TLS_CLIENT *tls;
    SSL_CTX *ctx;

    ERR_clear_error();
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        tls_error_text(why, "SSL_CTX_new failed");
        return NULL;
    }
    /* SMTP's own framing shows a truncated session (research notes 4.4). */
    SSL_CTX_set_options(ctx,
                        SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (SSL_CTX_dane_enable(ctx) <= 0) {
        tls_error_text(why, "cannot enable DANE");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (cafile && *cafile &&
        SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
        VSTR *err = vstr_alloc(100);

        tls_error_text(err, "cannot read it");
        vstr_sprintf(why, "smtp_tls_CAfile %s: %s", cafile, vstr_str(err));
        vstr_free(err);
        SSL_CTX_free(ctx);
        return NULL;
    }
    tls = mycalloc(1, sizeof(*tls));
    tls->ctx = ctx;
    return tls;
}

/* tls_client_free - release the context; NULL */
TLS_CLIENT *tls_client_free(TLS_CLIENT *tls)
{
    if (tls) {
        SSL_CTX_free(tls->ctx);
        myfree(tls);
    }
    return NULL;
}

/* tls_client_ssl - one connection's SSL */
SSL *tls_client_ssl(TLS_CLIENT *tls, const char *protocols, VSTR *why)
{
    int lo, hi;
    SSL *ssl;

    if (tls_protocols_parse(protocols, &lo, &hi, why) < 0)
        return NULL;
    ERR_clear_error();
    if ((ssl = SSL_new(tls->ctx)) == NULL) {
        tls_error_text(why, "SSL_new failed");
        return NULL;
    }
    if (SSL_set_min_proto_version(ssl, lo) != 1 ||
        SSL_set_max_proto_version(ssl, hi) != 1) {
        tls_error_text(why, "cannot set the protocol versions");
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* tls_client_dane - the TLSA records OpenSSL matches the chain against */
int tls_client_dane(SSL *ssl, const char *host, const char *nexthop,
                    const DANE_TLSA *tlsa, size_t count, VSTR *why)
{
    int added = 0;

    ERR_clear_error();
    if (SSL_dane_enable(ssl, host) <= 0) {
        tls_error_text(why, "SSL_dane_enable failed");
        return -1;
    }
    if (nexthop && *nexthop && strcasecmp(nexthop, host) != 0 &&
        SSL_add1_host(ssl, nexthop) != 1) {
        tls_error_text(why, "SSL_add1_host failed");
        return -1;
    }
    /* RFC 7672 3.1.1: a DANE-EE(3) match authenticates the key alone,
       whatever names the certificate carries. */
    (void) SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    /* RFC 7672 8.1: SNI names the TLSA base domain. */
    (void) SSL_set_tlsext_host_name(ssl, host);
    for (size_t i = 0; i < count; i++) {
        if (!dane_tlsa_usable(tlsa + i))
            continue;
        if (SSL_dane_tlsa_add(
                ssl, (uint8_t) tlsa[i].usage, (uint8_t) tlsa[i].selector,
                (uint8_t) tlsa[i].mtype, tlsa[i].data, tlsa[i].len) > 0)
            added++;
    }
    ERR_clear_error(); /* a record OpenSSL refused is just not used */
    if (added == 0) {
        vstr_sprintf(why, "no usable TLSA record for %s", host);
        return -1;
    }
    return 0;
}

/* tls_status_init - an empty status */
void tls_status_init(TLS_STATUS *status)
{
    memset(status, 0, sizeof(*status));
    status->verify_error = vstr_alloc(64);
    status->peer_names = vstr_alloc(64);
    status->kex = vstr_alloc(64);
    status->cert_fprint = vstr_alloc(100);
    status->pkey_fprint = vstr_alloc(100);
}

/* tls_status_free - release a status's strings */
void tls_status_free(TLS_STATUS *status)
{
    vstr_free(status->verify_error);
    vstr_free(status->peer_names);
    vstr_free(status->kex);
    vstr_free(status->cert_fprint);
    vstr_free(status->pkey_fprint);
    memset(status, 0, sizeof(*status));
}

/* tls_peer_names - the certificate's DNS names, or its CN without any */
static void tls_peer_names(X509 *cert, VSTR *out)
{
    GENERAL_NAMES *sans =
        X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    char cn[256];

    vstr_reset(out);
    if (sans) {
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
            const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);

            if (gn->type != GEN_DNS)
                continue;
            if (vstr_len(out) > 0)
                vstr_cat(out, ", ");
            vstr_ncat(out, (const char *) ASN1_STRING_get0_data(gn->d.dNSName),
                      (size_t) ASN1_STRING_length(gn->d.dNSName));
        }
        GENERAL_NAMES_free(sans);
    }
    if (vstr_len(out) == 0 &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                  cn, sizeof(cn)) > 0)
        vstr_sprintf(out, "CN=%s", cn);
    /* Names come from the peer: no control characters in the log. */
    for (size_t i = 0; i < vstr_len(out); i++)
        if ((unsigned char) vstr_str(out)[i] < ' ' || vstr_str(out)[i] == 0x7f)
            vstr_str(out)[i] = '?';
}

/* tls_kex - Postfix's " key-exchange X server-signature Y (N bits)
   server-digest Z" */
static void tls_kex(SSL *ssl, X509 *cert, VSTR *out)
{
    int group = SSL_get_negotiated_group(ssl);
    int sig_type = NID_undef;
    int sig_digest = NID_undef;
    const char *name;

    vstr_reset(out);
    if (group != 0 && (name = SSL_group_to_name(ssl, group)) != NULL)
        vstr_sprintf_append(out, " key-exchange %s", name);
    if (cert == NULL)
        return;
    if (SSL_get_peer_signature_type_nid(ssl, &sig_type) == 1 &&
        sig_type != NID_undef) {
        EVP_PKEY *pkey = X509_get0_pubkey(cert);
        const char *sig = sig_type == EVP_PKEY_RSA_PSS ? "RSA-PSS"
                          : sig_type == EVP_PKEY_RSA   ? "RSA"
                                                       : OBJ_nid2sn(sig_type);

        vstr_sprintf_append(out, " server-signature %s", sig);
        if (pkey)
            vstr_sprintf_append(out, " (%d bits)", EVP_PKEY_get_bits(pkey));
    }
    if (SSL_get_peer_signature_nid(ssl, &sig_digest) == 1 &&
        sig_digest != NID_undef)
        vstr_sprintf_append(out, " server-digest %s", OBJ_nid2sn(sig_digest));
}

/* tls_client_status - what the handshake proved */
void tls_client_status(SSL *ssl, const ARGV *names, TLS_STATUS *status)
{
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    X509 *cert = SSL_get1_peer_certificate(ssl);
    long result;

    snprintf(status->protocol, sizeof(status->protocol), "%s",
             SSL_get_version(ssl));
    snprintf(status->cipher, sizeof(status->cipher), "%s",
             cipher ? SSL_CIPHER_get_name(cipher) : "unknown");
    status->bits = cipher ? SSL_CIPHER_get_bits(cipher, &status->alg_bits) : 0;
    status->peer_cert = cert != NULL;
    status->trusted = false;
    status->matched = false;
    vstr_reset(status->verify_error);
    vstr_reset(status->peer_names);
    tls_kex(ssl, cert, status->kex);
    if (cert == NULL) {
        vstr_cpy(status->verify_error, "no server certificate");
        return;
    }
    tls_peer_names(cert, status->peer_names);
    result = SSL_get_verify_result(ssl);
    if (result == X509_V_OK) {
        status->trusted = true;
    } else {
        vstr_cpy(status->verify_error, X509_verify_cert_error_string(result));
    }
    if (status->dane) {
        /* OpenSSL checked the TLSA records (and for DANE-TA the name)
           during verification: X509_V_OK means one matched. */
        status->matched =
            status->trusted && SSL_get0_dane_authority(ssl, NULL, NULL) >= 0;
        if (status->trusted && !status->matched)
            vstr_cpy(status->verify_error, "no TLSA record matches");
    } else if (status->trusted && names != NULL) {
        for (size_t i = 0; i < names->argc && !status->matched; i++)
            status->matched =
                X509_check_host(cert, names->argv[i], 0,
                                X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                                NULL) == 1;
    }
    X509_free(cert);
}

/* tls_fprint_encode - bytes to "AA:BB:..." */
static void tls_fprint_encode(const unsigned char *data, size_t len, VSTR *out)
{
    vstr_reset(out);
    for (size_t i = 0; i < len; i++)
        vstr_sprintf_append(out, "%s%02X", i ? ":" : "", data[i]);
}

/* tls_client_fprint - the certificate's or its key's digest in fprints */
void tls_client_fprint(SSL *ssl, const char *digest, const ARGV *fprints,
                       TLS_STATUS *status)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    const EVP_MD *md = *digest ? EVP_get_digestbyname(digest) : NULL;
    unsigned char buf[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    unsigned char *der = NULL;
    int der_len;

    status->fprint = true;
    status->trusted = false;
    status->matched = false;
    vstr_reset(status->cert_fprint);
    vstr_reset(status->pkey_fprint);
    if (cert == NULL)
        return; /* verify_error says so */
    if (md == NULL) {
        vstr_sprintf(status->verify_error, "unknown fingerprint digest \"%s\"",
                     digest);
        return;
    }
    if (X509_digest(cert, md, buf, &len) == 1)
        tls_fprint_encode(buf, len, status->cert_fprint);
    /* Selector 1 of DANE: the DER SubjectPublicKeyInfo, as Postfix. */
    if ((der_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der)) > 0 &&
        EVP_Digest(der, (size_t) der_len, buf, &len, md, NULL) == 1)
        tls_fprint_encode(buf, len, status->pkey_fprint);
    OPENSSL_free(der);
    ERR_clear_error();
    for (size_t i = 0; fprints && i < fprints->argc && !status->matched; i++)
        status->matched =
            (vstr_len(status->cert_fprint) > 0 &&
             strcmp(fprints->argv[i], vstr_str(status->cert_fprint)) == 0) ||
            (vstr_len(status->pkey_fprint) > 0 &&
             strcmp(fprints->argv[i], vstr_str(status->pkey_fprint)) == 0);
    status->trusted = status->matched;
    if (status->matched)
        vstr_reset(status->verify_error);
    else
        vstr_sprintf(status->verify_error,
                     "no fingerprint matches: certificate %s, public key %s "
                     "(%s)",
                     vstr_str(status->cert_fprint),
                     vstr_str(status->pkey_fprint), digest);
}

/* tls_status_word - Postfix's first word of the summary */
const char *tls_status_word(const TLS_STATUS *status)
{
    if (!status->peer_cert)
        return "Anonymous";
    if (!status->trusted)
        return "Untrusted";
    return status->matched ? "Verified" : "Trusted";
}

/* tls_client_summary - the "... TLS connection established to ..." line */
void tls_client_summary(VSTR *out, const TLS_STATUS *status, const char *relay)
{
    vstr_sprintf(out,
                 "%s TLS connection established to %s: %s with cipher %s "
                 "(%d/%d bits)%s",
                 tls_status_word(status), relay, status->protocol,
                 status->cipher, status->bits, status->alg_bits,
                 vstr_str(status->kex));
}
