/*
 * sluice_dkim - `sluice dkim keygen` and `sluice dkim check`
 *
 *   sluice dkim keygen DOMAIN SELECTOR [--ed25519] [--bits N] [--path FILE]
 *       makes a private key (RSA, 2048 bits unless --bits; or Ed25519) in
 *       FILE, by default data_directory/dkim/DOMAIN.SELECTOR.pem, created
 *       exclusively (never overwritten) with mode 0600 and, when root runs
 *       it, owned by mail_owner (cleanup runs as that user and reads it).
 *       Prints the file's name and the TXT record to publish:
 *           SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=..."
 *       (a record over 255 bytes as several quoted strings on one line).
 *   sluice dkim check DOMAIN [SELECTOR [--key FILE]] [--timeout SECONDS]
 *       asks dns_servers (libunbound, as the daemons do) for the TXT
 *       record of SELECTOR._domainkey.DOMAIN and compares its k= and p=
 *       with the public half of the key (the default file as above).
 *       Without SELECTOR: every selector:/path of DOMAIN in
 *       dkim_signing_maps, the keys cleanup signs with. Exit 0 when they
 *       match, 1 for a mismatch, a missing record or an error (for any
 *       one key), 2 when DNS gave no answer (try again) within the
 *       timeout (10 s).
 */
#include "sys_defs.h"

#include <ctype.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <time.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unbound.h>

#include "argv.h"
#include "dns.h"
#include "mail_conf.h"
#include "maps.h"
#include "mymalloc.h"
#include "sluice.h"
#include "vstr.h"

#define SLUICE_DKIM_DEF_BITS 2048
#define SLUICE_DKIM_MIN_BITS 1024 /* RFC 8301: less is not to be used */
#define SLUICE_DKIM_MAX_BITS 8192
#define SLUICE_DKIM_DNS_TIMEOUT 10

static const char sluice_dkim_usage[] =
    "usage: sluice dkim keygen DOMAIN SELECTOR [--ed25519] [--bits N] "
    "[--path FILE] | sluice dkim check DOMAIN [SELECTOR [--key FILE]] "
    "[--timeout SECONDS]";

/* sluice_dkim_name_ok - a DNS name of letters, digits, '-', '_' labels */
static bool sluice_dkim_name_ok(const char *name)
{
    size_t label = 0;

    if (*name == 0 || strlen(name) > 253)
        return false;
    for (const char *cp = name; *cp; cp++) {
        if (*cp == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (isalnum((unsigned char) *cp) || *cp == '-' || *cp == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* sluice_dkim_b64 - base64 of data */
static char *sluice_dkim_b64(const unsigned char *data, size_t len)
{
    size_t out_len = 4 * ((len + 2) / 3) + 1;
    unsigned char *out = mymalloc(out_len);

    EVP_EncodeBlock(out, data, (int) len);
    return (char *) out;
}

/* sluice_dkim_pubtxt - "k=...; p=..." of a key; NULL when not RSA/Ed25519 */
static char *sluice_dkim_public(EVP_PKEY *pkey, const char **type)
{
    unsigned char *der = NULL;
    unsigned char raw[64];
    size_t raw_len = sizeof(raw);
    char *b64;
    int len;

    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        *type = "rsa";
        if ((len = i2d_PUBKEY(pkey, &der)) <= 0)
            return NULL;
        b64 = sluice_dkim_b64(der, (size_t) len);
        OPENSSL_free(der);
        return b64;
    case EVP_PKEY_ED25519:
        *type = "ed25519";
        if (EVP_PKEY_get_raw_public_key(pkey, raw, &raw_len) != 1)
            return NULL;
        return sluice_dkim_b64(raw, raw_len);
    default:
        return NULL;
    }
}

/* sluice_dkim_conf - main.cf, or NULL after one line */
static MAIL_CONF *sluice_dkim_conf(const char *config_dir)
{
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf = mail_conf_read(config_dir, why);

    if (conf == NULL)
        sluice_fail("%s", vstr_str(why));
    vstr_free(why);
    return conf;
}

/* sluice_dkim_default_path - data_directory/dkim/DOMAIN.SELECTOR.pem */
static char *sluice_dkim_default_path(const MAIL_CONF *conf, const char *domain,
                                      const char *selector)
{
    VSTR *path = vstr_alloc(100);

    vstr_sprintf(path, "%s/dkim/%s.%s.pem",
                 mail_conf_str(conf, "data_directory"), domain, selector);
    return vstr_export(path);
}

/* sluice_dkim_owner - mail_owner when root runs us (uid/gid), else none */
static int sluice_dkim_owner(const MAIL_CONF *conf, uid_t *uid, gid_t *gid)
{
    const struct passwd *pw;
    VSTR *why;

    *uid = (uid_t) -1;
    *gid = (gid_t) -1;
    if (geteuid() != 0)
        return 0;
    why = vstr_alloc(100);
    if ((pw = mail_conf_owner(conf, why)) == NULL) {
        sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        return -1;
    }
    vstr_free(why);
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

/* sluice_dkim_mkdir - the key's folder (data_directory/dkim), 0700 */
static int sluice_dkim_mkdir(const char *path, uid_t uid, gid_t gid)
{
    char *dir = mystrdup(path);
    char *slash = strrchr(dir, '/');
    int ret = 0;

    if (slash != NULL && slash != dir) {
        *slash = 0;
        if (mkdir(dir, 0700) == 0) {
            if (uid != (uid_t) -1 && chown(dir, uid, gid) < 0)
                ret = sluice_fail("chown %s: %m", dir);
        } else if (errno != EEXIST) {
            ret = sluice_fail("mkdir %s: %m", dir);
        }
    }
    myfree(dir);
    return ret;
}

/* sluice_dkim_record - print the TXT record, 255-byte strings */
static void sluice_dkim_record(const char *domain, const char *selector,
                               const char *type, const char *p)
{
    VSTR *txt = vstr_alloc(512);

    vstr_sprintf(txt, "v=DKIM1; k=%s; p=%s", type, p);
    printf("%s._domainkey.%s. IN TXT", selector, domain);
    for (size_t off = 0; off < vstr_len(txt); off += 255) {
        size_t part = vstr_len(txt) - off > 255 ? 255 : vstr_len(txt) - off;

        printf(" \"%.*s\"", (int) part, vstr_str(txt) + off);
    }
    printf("\n");
    vstr_free(txt);
}

/* sluice_dkim_make - make a key in path (created exclusively, 0600,
   owned by uid/gid unless -1) and print its name and TXT record; 0, or 1
   after one line */
int sluice_dkim_make(const char *path, const char *domain, const char *selector,
                     bool ed25519, int bits, uid_t uid, gid_t gid)
{
    EVP_PKEY *pkey;
    const char *type = "";
    char *pub;
    BIO *bio;
    int fd, ret = 0;

    if (sluice_dkim_mkdir(path, uid, gid) != 0)
        return 1;
    pkey = ed25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                   : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
    if (pkey == NULL)
        return sluice_fail("dkim keygen: OpenSSL cannot make the key");
    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                   0600)) < 0) {
        ret = errno == EEXIST
                  ? sluice_fail("dkim keygen: %s exists (a key is never "
                                "overwritten)",
                                path)
                  : sluice_fail("dkim keygen: create %s: %m", path);
        goto out;
    }
    if (uid != (uid_t) -1 && fchown(fd, uid, gid) < 0) {
        ret = sluice_fail("dkim keygen: chown %s: %m", path);
        (void) close(fd);
        (void) unlink(path);
        goto out;
    }
    bio = BIO_new_fd(fd, BIO_CLOSE);
    if (bio == NULL ||
        !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) ||
        BIO_flush(bio) != 1 || fsync(fd) < 0) {
        ret = sluice_fail("dkim keygen: write %s failed", path);
        if (bio != NULL)
            BIO_free(bio);
        else
            (void) close(fd);
        (void) unlink(path);
        goto out;
    }
    BIO_free(bio);
    if ((pub = sluice_dkim_public(pkey, &type)) == NULL) {
        ret = sluice_fail("dkim keygen: cannot encode the public key");
        goto out;
    }
    printf("private key: %s\n", path);
    sluice_dkim_record(domain, selector, type, pub);
    myfree(pub);

out:
    EVP_PKEY_free(pkey);
    return ret;
}

/* sluice_dkim_keygen - make a key, print its record */
static int sluice_dkim_keygen(const char *config_dir, int argc, char **argv)
{
    const char *domain = NULL, *selector = NULL, *path_arg = NULL;
    bool ed25519 = false;
    long bits = SLUICE_DKIM_DEF_BITS;
    MAIL_CONF *conf;
    char *path;
    uid_t uid;
    gid_t gid;
    int ret;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ed25519") == 0) {
            ed25519 = true;
        } else if (strcmp(argv[i], "--bits") == 0 && i + 1 < argc) {
            char *end;

            errno = 0;
            bits = strtol(argv[++i], &end, 10);
            if (errno || *end || end == argv[i] ||
                bits < SLUICE_DKIM_MIN_BITS || bits > SLUICE_DKIM_MAX_BITS)
                return sluice_fail("dkim keygen: --bits %s: RSA bits must be "
                                   "%d to %d",
                                   argv[i], SLUICE_DKIM_MIN_BITS,
                                   SLUICE_DKIM_MAX_BITS);
        } else if (strcmp(argv[i], "--path") == 0 && i + 1 < argc) {
            path_arg = argv[++i];
        } else if (argv[i][0] == '-') {
            return sluice_fail("dkim keygen: unknown option \"%s\" (%s)",
                               argv[i], sluice_dkim_usage);
        } else if (domain == NULL) {
            domain = argv[i];
        } else if (selector == NULL) {
            selector = argv[i];
        } else {
            return sluice_fail("%s", sluice_dkim_usage);
        }
    }
    if (domain == NULL || selector == NULL)
        return sluice_fail("%s", sluice_dkim_usage);
    if (!sluice_dkim_name_ok(domain))
        return sluice_fail("dkim keygen: bad domain \"%s\"", domain);
    if (!sluice_dkim_name_ok(selector))
        return sluice_fail("dkim keygen: bad selector \"%s\"", selector);
    if (path_arg != NULL && path_arg[0] != '/')
        return sluice_fail("dkim keygen: --path %s: not an absolute path",
                           path_arg);
    if ((conf = sluice_dkim_conf(config_dir)) == NULL)
        return 1;
    path = path_arg ? mystrdup(path_arg)
                    : sluice_dkim_default_path(conf, domain, selector);
    if (sluice_dkim_owner(conf, &uid, &gid) < 0) {
        myfree(path);
        mail_conf_free(conf);
        return 1;
    }
    mail_conf_free(conf);
    ret =
        sluice_dkim_make(path, domain, selector, ed25519, (int) bits, uid, gid);
    myfree(path);
    return ret;
}

/* sluice_dkim_load - the public half of the key in path; NULL after one
   line */
static char *sluice_dkim_load(const char *path, const char **type)
{
    FILE *fp = fopen(path, "re");
    EVP_PKEY *pkey;
    char *pub;

    if (fp == NULL) {
        sluice_fail("dkim check: open %s: %m", path);
        return NULL;
    }
    pkey = PEM_read_PrivateKey(fp, NULL, NULL, (void *) "");
    fclose(fp);
    if (pkey == NULL) {
        sluice_fail("dkim check: %s: no PEM private key", path);
        return NULL;
    }
    if ((pub = sluice_dkim_public(pkey, type)) == NULL)
        sluice_fail("dkim check: %s: neither an RSA nor an Ed25519 key", path);
    EVP_PKEY_free(pkey);
    return pub;
}

/* sluice_dkim_tag - the value of tag name in a tag=value list (RFC 6376
   3.2), white space removed; NULL when absent */
static char *sluice_dkim_tag(const char *txt, const char *name)
{
    ARGV *parts = argv_split(txt, ";");
    char *found = NULL;

    for (size_t i = 0; i < (size_t) parts->argc && found == NULL; i++) {
        const char *cp = parts->argv[i];
        const char *eq = strchr(cp, '=');
        size_t len;

        if (eq == NULL)
            continue;
        while (isspace((unsigned char) *cp))
            cp++;
        len = (size_t) (eq - cp);
        while (len > 0 && isspace((unsigned char) cp[len - 1]))
            len--;
        if (len == strlen(name) && strncmp(cp, name, len) == 0) {
            VSTR *value = vstr_alloc(64);

            for (const char *vp = eq + 1; *vp; vp++)
                if (!isspace((unsigned char) *vp))
                    vstr_addch(value, *vp);
            found = vstr_export(value);
        }
    }
    argv_free(parts);
    return found;
}

/* sluice_dkim_resolver - libunbound set up from dns_servers; NULL after
   one line */
static struct ub_ctx *sluice_dkim_resolver(const MAIL_CONF *conf)
{
    struct ub_ctx *ub;
    ARGV *servers;
    VSTR *fwd, *why;
    int err;

    if (mail_conf_bool(conf, "disable_dns_lookups")) {
        sluice_fail("dkim check: DNS lookups are disabled "
                    "(disable_dns_lookups = yes)");
        return NULL;
    }
    if ((ub = ub_ctx_create()) == NULL) {
        sluice_fail("dkim check: libunbound cannot start");
        return NULL;
    }
    /* As global/dns.c: forwarders on loopback are allowed, and the RFC
       6761 name "test." is theirs to answer, not libunbound's. */
    if ((err = ub_ctx_set_option(ub, "do-not-query-localhost:", "no")) != 0 ||
        (err = ub_ctx_set_option(ub, "local-zone:", "test. transparent")) !=
            0) {
        sluice_fail("dkim check: libunbound: %s", ub_strerror(err));
        ub_ctx_delete(ub);
        return NULL;
    }
    servers = mail_conf_list(conf, "dns_servers");
    fwd = vstr_alloc(64);
    why = vstr_alloc(64);
    for (size_t i = 0; i < (size_t) servers->argc; i++) {
        if (dns_server_parse(servers->argv[i], fwd, why) < 0 ||
            (err = ub_ctx_set_fwd(ub, vstr_str(fwd))) != 0) {
            sluice_fail("dkim check: dns_servers: %s: %s", servers->argv[i],
                        vstr_len(why) ? vstr_str(why)
                                      : "libunbound refuses it");
            ub_ctx_delete(ub);
            ub = NULL;
            break;
        }
    }
    if (ub != NULL && servers->argc == 0 &&
        (err = ub_ctx_resolvconf(ub, NULL)) != 0) {
        sluice_fail("dkim check: /etc/resolv.conf: %s", ub_strerror(err));
        ub_ctx_delete(ub);
        ub = NULL;
    }
    /* Asynchronous (a thread), so that a lookup can be given up on time;
       set once, before the first lookup finalizes the context. */
    if (ub != NULL && (err = ub_ctx_async(ub, 1)) != 0) {
        sluice_fail("dkim check: libunbound: %s", ub_strerror(err));
        ub_ctx_delete(ub);
        ub = NULL;
    }
    argv_free(servers);
    vstr_free(fwd);
    vstr_free(why);
    return ub;
}

/* The outcome of one lookup, given to sluice_dkim_answer. */
typedef struct SLUICE_DKIM_ANSWER {
    bool done;
    int err;
    struct ub_result *result;
} SLUICE_DKIM_ANSWER;

#define SLUICE_DKIM_TIMEOUT (-1000) /* not a libunbound error code */

/* sluice_dkim_answer - libunbound's callback */
static void sluice_dkim_answer(void *arg, int err, struct ub_result *result)
{
    SLUICE_DKIM_ANSWER *answer = arg;

    answer->done = true;
    answer->err = err;
    answer->result = result;
}

/* sluice_dkim_resolve - the TXT records of name, within timeout seconds:
   0 with *result, a libunbound error, or SLUICE_DKIM_TIMEOUT */
static int sluice_dkim_resolve(struct ub_ctx *ub, const char *name, int timeout,
                               struct ub_result **result)
{
    SLUICE_DKIM_ANSWER answer = {false, 0, NULL};
    struct timespec start, now;
    int async_id, err;

    if ((err = ub_resolve_async(ub, name, 16 /* TXT */, 1 /* IN */, &answer,
                                sluice_dkim_answer, &async_id)) != 0)
        return err;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (!answer.done) {
        struct pollfd pfd = {ub_fd(ub), POLLIN, 0};
        long long left_ms;

        clock_gettime(CLOCK_MONOTONIC, &now);
        left_ms = (long long) timeout * 1000 -
                  ((long long) (now.tv_sec - start.tv_sec) * 1000 +
                   (now.tv_nsec - start.tv_nsec) / 1000000);
        if (left_ms <= 0) {
            (void) ub_cancel(ub, async_id);
            return SLUICE_DKIM_TIMEOUT;
        }
        if (poll(&pfd, 1, (int) left_ms) > 0 && (err = ub_process(ub)) != 0)
            return err;
    }
    *result = answer.result;
    return answer.err;
}

/* sluice_dkim_check_one - compare the record of selector._domainkey.
   domain with the key in path: 0 match, 1 mismatch, no record or an
   error, 2 try again */
static int sluice_dkim_check_one(struct ub_ctx *ub, const char *domain,
                                 const char *selector, const char *path,
                                 int timeout)
{
    const char *type = "";
    struct ub_result *result = NULL;
    VSTR *name;
    char *pub;
    int err, ret = 1;
    bool any = false, match = false;

    if ((pub = sluice_dkim_load(path, &type)) == NULL)
        return 1;
    name = vstr_alloc(100);
    vstr_sprintf(name, "%s._domainkey.%s", selector, domain);
    err = sluice_dkim_resolve(ub, vstr_str(name), timeout, &result);
    if (err == SLUICE_DKIM_TIMEOUT) {
        printf("%s: DNS lookup timed out after %d s (try again)\n",
               vstr_str(name), timeout);
        ret = 2;
        goto out;
    }
    if (err != 0 || result->rcode == 2 /* SERVFAIL */) {
        printf("%s: DNS lookup failed: %s (try again)\n", vstr_str(name),
               err ? ub_strerror(err) : "server failure");
        ret = 2;
        goto out;
    }
    for (int i = 0; result->havedata && result->data[i] != NULL; i++) {
        const unsigned char *rd = (const unsigned char *) result->data[i];
        size_t len = (size_t) result->len[i];
        VSTR *txt = vstr_alloc(512);
        char *p, *k, *v;

        /* One TXT record: character-strings, each a length byte and data,
           concatenated (RFC 6376 3.6.2.2). */
        for (size_t off = 0; off < len;) {
            size_t part = rd[off++];

            if (part > len - off)
                part = len - off;
            vstr_ncat(txt, (const char *) rd + off, part);
            off += part;
        }
        v = sluice_dkim_tag(vstr_str(txt), "v");
        k = sluice_dkim_tag(vstr_str(txt), "k");
        p = sluice_dkim_tag(vstr_str(txt), "p");
        if ((v == NULL || strcmp(v, "DKIM1") == 0) && p != NULL) {
            any = true;
            if (strcmp(p, pub) == 0 && strcasecmp(k ? k : "rsa", type) == 0)
                match = true;
        }
        myfree(v);
        myfree(k);
        myfree(p);
        vstr_free(txt);
    }
    if (match) {
        printf("%s: OK: the published k=%s key is the key in %s\n",
               vstr_str(name), type, path);
        ret = 0;
    } else if (any) {
        printf("%s: mismatch: the published key is not the %s key in %s\n",
               vstr_str(name), type, path);
    } else {
        printf("%s: not found: no DKIM TXT record\n", vstr_str(name));
    }

out:
    if (result != NULL)
        ub_resolve_free(result);
    vstr_free(name);
    myfree(pub);
    return ret;
}

/* sluice_dkim_worse - the exit status of two checks: a mismatch or an
   error (1) before a "try again" (2) before OK (0) */
static int sluice_dkim_worse(int a, int b)
{
    return a == 1 || b == 1 ? 1 : a == 2 || b == 2 ? 2 : 0;
}

/* sluice_dkim_check_table - every selector:/path of domain in
   dkim_signing_maps, each checked; the worst exit status */
static int sluice_dkim_check_table(const MAIL_CONF *conf, struct ub_ctx *ub,
                                   const char *domain, int timeout)
{
    VSTR *why = vstr_alloc(64);
    VSTR *lower = vstr_alloc(64);
    MAPS *maps;
    ARGV *words = NULL;
    const char *value;
    int error = MAP_OK;
    int ret = 0;

    vstr_cpy(lower, domain);
    vstr_lower(lower);
    if ((maps = maps_create("dkim_signing_maps",
                            mail_conf_str(conf, "dkim_signing_maps"),
                            MAP_FLAG_NONE, why)) == NULL) {
        ret = sluice_fail("dkim check: dkim_signing_maps: %s", vstr_str(why));
        goto out;
    }
    value = maps_find(maps, vstr_str(lower), &error);
    if (value == NULL && error != MAP_NOTFOUND && error != MAP_OK) {
        ret = sluice_fail("dkim check: dkim_signing_maps: the lookup of %s "
                          "failed",
                          vstr_str(lower));
        goto out;
    }
    if (value == NULL) {
        ret = sluice_fail("dkim check: %s is not in dkim_signing_maps (name "
                          "a SELECTOR to check a key of data_directory/dkim/)",
                          vstr_str(lower));
        goto out;
    }
    words = argv_split(value, ", \t\r\n");
    if (words->argc == 0) {
        ret = sluice_fail("dkim check: dkim_signing_maps: no "
                          "selector:/path/to/key.pem for %s",
                          vstr_str(lower));
        goto out;
    }
    for (size_t i = 0; i < (size_t) words->argc; i++) {
        char *word = words->argv[i];
        char *colon = strchr(word, ':');
        size_t len;

        if (colon == NULL || colon == word || colon[1] != '/') {
            printf("%s: dkim_signing_maps: \"%s\" is not "
                   "selector:/path/to/key.pem\n",
                   vstr_str(lower), word);
            ret = 1;
            continue;
        }
        *colon = 0;
        /* The key's type may follow the path (:rsa, :ed25519); the PEM
           says it anyway. */
        len = strlen(colon + 1);
        if (len > 4 && strcasecmp(colon + 1 + len - 4, ":rsa") == 0)
            colon[1 + len - 4] = 0;
        else if (len > 8 && strcasecmp(colon + 1 + len - 8, ":ed25519") == 0)
            colon[1 + len - 8] = 0;
        if (!sluice_dkim_name_ok(word)) {
            printf("%s: dkim_signing_maps: bad selector \"%s\"\n",
                   vstr_str(lower), word);
            ret = 1;
            continue;
        }
        ret = sluice_dkim_worse(ret,
                                sluice_dkim_check_one(ub, vstr_str(lower), word,
                                                      colon + 1, timeout));
    }

out:
    if (words != NULL)
        argv_free(words);
    maps_free(maps);
    vstr_free(why);
    vstr_free(lower);
    return ret;
}

/* sluice_dkim_check - compare the published record with the key */
static int sluice_dkim_check(const char *config_dir, int argc, char **argv)
{
    const char *domain = NULL, *selector = NULL, *key_arg = NULL;
    struct ub_ctx *ub;
    MAIL_CONF *conf;
    char *path;
    int ret;
    int timeout = SLUICE_DKIM_DNS_TIMEOUT;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
            key_arg = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            long value;

            errno = 0;
            value = strtol(argv[++i], &end, 10);
            if (errno || *end || end == argv[i] || value < 1 || value > 300)
                return sluice_fail("dkim check: --timeout %s: seconds, 1 to "
                                   "300",
                                   argv[i]);
            timeout = (int) value;
        } else if (argv[i][0] == '-') {
            return sluice_fail("dkim check: unknown option \"%s\" (%s)",
                               argv[i], sluice_dkim_usage);
        } else if (domain == NULL) {
            domain = argv[i];
        } else if (selector == NULL) {
            selector = argv[i];
        } else {
            return sluice_fail("%s", sluice_dkim_usage);
        }
    }
    if (domain == NULL || (selector == NULL && key_arg != NULL))
        return sluice_fail("%s", sluice_dkim_usage);
    if (!sluice_dkim_name_ok(domain) ||
        (selector != NULL && !sluice_dkim_name_ok(selector)))
        return sluice_fail("dkim check: bad domain or selector");
    if ((conf = sluice_dkim_conf(config_dir)) == NULL)
        return 1;
    if ((ub = sluice_dkim_resolver(conf)) == NULL) {
        mail_conf_free(conf);
        return 1;
    }
    if (selector == NULL) {
        ret = sluice_dkim_check_table(conf, ub, domain, timeout);
    } else {
        path = key_arg ? mystrdup(key_arg)
                       : sluice_dkim_default_path(conf, domain, selector);
        ret = sluice_dkim_check_one(ub, domain, selector, path, timeout);
        myfree(path);
    }
    mail_conf_free(conf);
    ub_ctx_delete(ub);
    return ret;
}

/* sluice_dkim - `sluice dkim keygen|check ...`; argv[0] is dkim */
int sluice_dkim(const char *config_dir, int argc, char **argv)
{
    if (argc < 2)
        return sluice_fail("%s", sluice_dkim_usage);
    if (strcmp(argv[1], "keygen") == 0)
        return sluice_dkim_keygen(config_dir, argc - 1, argv + 1);
    if (strcmp(argv[1], "check") == 0)
        return sluice_dkim_check(config_dir, argc - 1, argv + 1);
    return sluice_fail("dkim: unknown subcommand \"%s\" (%s)", argv[1],
                       sluice_dkim_usage);
}
