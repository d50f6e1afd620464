/*
 * cleanup_dkim - sign the committed content with libopendkim
 *
 * The filter's end hook runs after the last content byte is written and
 * before the commit. It reads the content back from the queue file being
 * written (qfile_out_content: exactly the bytes that will be delivered,
 * headers cleanup added included), takes the header block first, finds
 * the signing domain and its keys, feeds headers and body to one
 * libopendkim handle per key, and puts the DKIM-Signature: headers before
 * the content (qfile_out_prepend_content). The spool's lines end in LF:
 * DKIM_LIBFLAGS_FIXCRLF has the library canonicalize them as CRLF, and the
 * library's "\r\n\t" folding becomes "\n\t" in the file.
 *
 * Keys are read from their PEM files for each message, so a rotated key
 * takes effect at once and an unreadable one defers that message. The
 * key's type comes from the PEM (OpenSSL): RSA signs rsa-sha256, Ed25519
 * ed25519-sha256 (libopendkim 2.11 on Debian 12 does both).
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <dkim.h>

#include "argv.h"
#include "cleanup.h"
#include "cleanup_dkim.h"
#include "mail_conf.h"
#include "maps.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "smtp_addr.h"
#include "vstr.h"

#define CLEANUP_DKIM_KEY_MAX (64 * 1024) /* a PEM file larger is no key */
#define CLEANUP_DKIM_HEADER "DKIM-Signature: "
#define CLEANUP_DKIM_TEMPFAIL "4.3.0 DKIM signing key unavailable"
#define CLEANUP_DKIM_TABLEFAIL "4.3.0 DKIM signing table lookup failed"
#define CLEANUP_DKIM_SIGNFAIL "4.3.0 DKIM signing failed"

/* A key file already checked: its type, while the file is the same. */
typedef struct CLEANUP_DKIM_KEYCACHE {
    char *path; /* NULL: unused */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime; /* a chmod or chown shows here */
    CLEANUP_DKIM_KEYTYPE type;
} CLEANUP_DKIM_KEYCACHE;

#define CLEANUP_DKIM_KEYCACHE_SIZE 16

struct CLEANUP_DKIM {
    DKIM_LIB *lib;
    MAPS *maps; /* dkim_signing_maps */
    int header_canon; /* DKIM_CANON_* */
    int body_canon;
    /* OpenSSL 3 takes long to decode a PEM key (and libopendkim decodes
       it once more for each signature): a file that has not changed since
       it was last checked is not checked again. It is still opened and
       read for every message. */
    CLEANUP_DKIM_KEYCACHE keycache[CLEANUP_DKIM_KEYCACHE_SIZE];
    size_t keycache_next; /* the entry to reuse next */
};

/* Per message: the header block, then one handle per key. */
typedef struct CLEANUP_DKIM_STATE {
    CLEANUP_DKIM *dkim;
    CLEANUP_MSG *msg;
    VSTR *head; /* the header block, lines with LF */
    bool in_body;
    bool at_line_start;
    bool skip; /* nothing to sign, or failed */
    DKIM *handles[CLEANUP_DKIM_MAX_KEYS];
    size_t handle_count;
    char *domain;
    const char *fail_reason; /* defer with this, or NULL */
    bool seen_from; /* the first From: header went by */
    char *from_domain; /* its domain, or NULL */
    char *keys; /* the table's value for domain, or NULL: no signing */
} CLEANUP_DKIM_STATE;

/* cleanup_dkim_maps - the table list of dkim_signing_maps */
static MAPS *cleanup_dkim_maps(const char *value)
{
    VSTR *why = vstr_alloc(100);
    MAPS *maps;

    if ((maps = maps_create("dkim_signing_maps", value, MAP_FLAG_NONE, why)) ==
        NULL)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
    return maps;
}

/* cleanup_dkim_lib_list - set a NULL-terminated name list option */
static void cleanup_dkim_lib_list(DKIM_LIB *lib, int option, const ARGV *av,
                                  const char *what)
{
    const char **names = mycalloc((size_t) av->argc + 1, sizeof(char *));

    for (size_t i = 0; i < (size_t) av->argc; i++)
        names[i] = av->argv[i];
    if (dkim_options(lib, DKIM_OP_SETOPT, option, (void *) names,
                     sizeof(names)) != DKIM_STAT_OK)
        msg_fatal("libopendkim refuses the %s list", what);
    myfree(names);
}

/* cleanup_dkim_create - libopendkim set up from the dkim_* parameters */
CLEANUP_DKIM *cleanup_dkim_create(const MAIL_CONF *conf)
{
    const char *maps_value = mail_conf_str(conf, "dkim_signing_maps");
    CLEANUP_DKIM *dkim;
    VSTR *why;
    ARGV *sign;
    ARGV *oversign;
    int header_canon, body_canon;
    unsigned int flags;
    long long ttl;

    if (*maps_value == 0)
        return NULL;
    why = vstr_alloc(100);
    if (cleanup_dkim_canon_parse(mail_conf_str(conf, "dkim_canonicalization"),
                                 &header_canon, &body_canon, why) < 0 ||
        cleanup_dkim_headers_parse(mail_conf_str(conf, "dkim_signed_headers"),
                                   &sign, &oversign, why) < 0)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
    dkim = mycalloc(1, sizeof(*dkim));
    dkim->maps = cleanup_dkim_maps(maps_value);
    dkim->header_canon = header_canon == CLEANUP_DKIM_CANON_RELAXED
                             ? DKIM_CANON_RELAXED
                             : DKIM_CANON_SIMPLE;
    dkim->body_canon = body_canon == CLEANUP_DKIM_CANON_RELAXED
                           ? DKIM_CANON_RELAXED
                           : DKIM_CANON_SIMPLE;
    if ((dkim->lib = dkim_init(NULL, NULL)) == NULL)
        msg_fatal("libopendkim: cannot initialize");
    if (dkim_options(dkim->lib, DKIM_OP_GETOPT, DKIM_OPTS_FLAGS, &flags,
                     sizeof(flags)) != DKIM_STAT_OK)
        msg_fatal("libopendkim: cannot read its flags");
    flags |= DKIM_LIBFLAGS_FIXCRLF;
    if (dkim_options(dkim->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
                     sizeof(flags)) != DKIM_STAT_OK)
        msg_fatal("libopendkim: cannot set its flags");
    cleanup_dkim_lib_list(dkim->lib, DKIM_OPTS_SIGNHDRS, sign,
                          "dkim_signed_headers");
    if (oversign->argc > 0)
        cleanup_dkim_lib_list(dkim->lib, DKIM_OPTS_OVERSIGNHDRS, oversign,
                              "oversigned dkim_signed_headers");
    argv_free(sign);
    argv_free(oversign);
    ttl = mail_conf_time(conf, "dkim_expiration");
    if (ttl > 0) {
        uint64_t value = (uint64_t) ttl;

        if (dkim_options(dkim->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNATURETTL,
                         &value, sizeof(value)) != DKIM_STAT_OK)
            msg_fatal("libopendkim refuses dkim_expiration");
    }
    return dkim;
}

/* cleanup_dkim_free - release the signer; NULL */
CLEANUP_DKIM *cleanup_dkim_free(CLEANUP_DKIM *dkim)
{
    if (dkim == NULL)
        return NULL;
    dkim_close(dkim->lib);
    maps_free(dkim->maps);
    for (size_t i = 0; i < CLEANUP_DKIM_KEYCACHE_SIZE; i++)
        myfree(dkim->keycache[i].path);
    myfree(dkim);
    return NULL;
}

/* cleanup_dkim_no_passphrase - never prompt for a key's passphrase */
static int cleanup_dkim_no_passphrase(char *buf, int size, int rwflag,
                                      void *arg)
{
    return -1;
}

/* cleanup_dkim_cache_same - st is the file that entry describes */
static bool cleanup_dkim_cache_same(const CLEANUP_DKIM_KEYCACHE *entry,
                                    const char *path, const struct stat *st)
{
    return entry->path != NULL && strcmp(entry->path, path) == 0 &&
           entry->dev == st->st_dev && entry->ino == st->st_ino &&
           entry->size == st->st_size &&
           entry->mtime.tv_sec == st->st_mtim.tv_sec &&
           entry->mtime.tv_nsec == st->st_mtim.tv_nsec &&
           entry->ctime.tv_sec == st->st_ctim.tv_sec &&
           entry->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

/* cleanup_dkim_cache_find - the entry of path as st shows it, or NULL */
static const CLEANUP_DKIM_KEYCACHE *cleanup_dkim_cache_find(
    const CLEANUP_DKIM *dkim, const char *path, const struct stat *st)
{
    for (size_t i = 0; i < CLEANUP_DKIM_KEYCACHE_SIZE; i++)
        if (cleanup_dkim_cache_same(&dkim->keycache[i], path, st))
            return &dkim->keycache[i];
    return NULL;
}

/* cleanup_dkim_cache_add - remember a checked key file (oldest goes) */
static void cleanup_dkim_cache_add(CLEANUP_DKIM *dkim, const char *path,
                                   const struct stat *st,
                                   CLEANUP_DKIM_KEYTYPE type)
{
    CLEANUP_DKIM_KEYCACHE *entry = NULL;

    for (size_t i = 0; i < CLEANUP_DKIM_KEYCACHE_SIZE && entry == NULL; i++)
        if (dkim->keycache[i].path != NULL &&
            strcmp(dkim->keycache[i].path, path) == 0)
            entry = &dkim->keycache[i];
    if (entry == NULL) {
        entry = &dkim->keycache[dkim->keycache_next];
        dkim->keycache_next =
            (dkim->keycache_next + 1) % CLEANUP_DKIM_KEYCACHE_SIZE;
    }
    myfree(entry->path);
    entry->path = mystrdup(path);
    entry->dev = st->st_dev;
    entry->ino = st->st_ino;
    entry->size = st->st_size;
    entry->mtime = st->st_mtim;
    entry->ctime = st->st_ctim;
    entry->type = type;
}

/* cleanup_dkim_key_type - the type of the PEM private key, ANY when there
   is none (or it is neither RSA nor Ed25519), with the reason in why */
static CLEANUP_DKIM_KEYTYPE cleanup_dkim_key_type(const VSTR *pem, VSTR *why)
{
    BIO *bio = BIO_new_mem_buf(vstr_str(pem), (int) vstr_len(pem));
    CLEANUP_DKIM_KEYTYPE type = CLEANUP_DKIM_KEY_ANY;
    EVP_PKEY *pkey;

    pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, cleanup_dkim_no_passphrase,
                                         NULL)
               : NULL;
    BIO_free(bio);
    if (pkey == NULL) {
        vstr_cpy(why, "no PEM private key in the file");
        return CLEANUP_DKIM_KEY_ANY;
    }
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        type = CLEANUP_DKIM_KEY_RSA;
        break;
    case EVP_PKEY_ED25519:
        type = CLEANUP_DKIM_KEY_ED25519;
        break;
    default:
        vstr_cpy(why, "the key is neither RSA nor Ed25519");
        break;
    }
    EVP_PKEY_free(pkey);
    return type;
}

/* cleanup_dkim_read_key - the PEM text of path and its type; NULL with
   the reason in why */
static char *cleanup_dkim_read_key(CLEANUP_DKIM *dkim, const char *path,
                                   CLEANUP_DKIM_KEYTYPE hint,
                                   CLEANUP_DKIM_KEYTYPE *type, VSTR *why)
{
    const CLEANUP_DKIM_KEYCACHE *cached;
    VSTR *pem = vstr_alloc(4096);
    char buf[4096];
    struct stat st;
    ssize_t n;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
        vstr_sprintf(why, "open: %s", strerror(errno));
        vstr_free(pem);
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        vstr_cpy(why, "not a regular file");
        (void) close(fd);
        vstr_free(pem);
        return NULL;
    }
    while ((n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            vstr_sprintf(why, "read: %s", strerror(errno));
            break;
        }
        vstr_ncat(pem, buf, (size_t) n);
        if (vstr_len(pem) > CLEANUP_DKIM_KEY_MAX) {
            vstr_sprintf(why, "larger than %d bytes", CLEANUP_DKIM_KEY_MAX);
            n = -1;
            break;
        }
    }
    (void) close(fd);
    if (n < 0) {
        vstr_free(pem);
        return NULL;
    }
    if ((cached = cleanup_dkim_cache_find(dkim, path, &st)) != NULL) {
        *type = cached->type;
    } else if ((*type = cleanup_dkim_key_type(pem, why)) !=
               CLEANUP_DKIM_KEY_ANY) {
        cleanup_dkim_cache_add(dkim, path, &st, *type);
    } else {
        vstr_free(pem);
        return NULL;
    }
    if (hint != CLEANUP_DKIM_KEY_ANY && hint != *type) {
        vstr_sprintf(why, "the table says %s, the file holds an %s key",
                     hint == CLEANUP_DKIM_KEY_RSA ? "rsa" : "ed25519",
                     *type == CLEANUP_DKIM_KEY_RSA ? "RSA" : "Ed25519");
        vstr_free(pem);
        return NULL;
    }
    return vstr_export(pem);
}

/* cleanup_dkim_begin - per-message state when signing is configured */
static void *cleanup_dkim_begin(CLEANUP_MSG *msg)
{
    CLEANUP_DKIM_STATE *state;

    if (msg->conf->dkim == NULL)
        return NULL;
    state = mycalloc(1, sizeof(*state));
    state->dkim = msg->conf->dkim;
    state->msg = msg;
    state->head = vstr_alloc(4096);
    state->at_line_start = true;
    return state;
}

/* cleanup_dkim_state_free - release the handles and the state */
static void cleanup_dkim_state_free(void *arg)
{
    CLEANUP_DKIM_STATE *state = arg;

    if (state == NULL)
        return;
    for (size_t i = 0; i < state->handle_count; i++)
        (void) dkim_free(state->handles[i]);
    vstr_free(state->head);
    myfree(state->domain);
    myfree(state->from_domain);
    myfree(state->keys);
    myfree(state);
}

/* cleanup_dkim_fail - the message is to be deferred (the log line is
   written by the caller); done after the content walk, which must not see
   the file go */
static void cleanup_dkim_fail(CLEANUP_DKIM_STATE *state, const char *reason)
{
    state->skip = true;
    if (state->fail_reason == NULL)
        state->fail_reason = reason;
}

/* cleanup_dkim_header_value - a header's value, unfolded, or NULL when
   the header [start, end) of the block is not name */
static char *cleanup_dkim_header_value(const char *start, const char *end,
                                       const char *name)
{
    size_t len = strlen(name);
    VSTR *value;

    if ((size_t) (end - start) <= len || start[len] != ':' ||
        strncasecmp(start, name, len) != 0)
        return NULL;
    value = vstr_alloc(64);
    for (const char *cp = start + len + 1; cp < end; cp++)
        if (*cp != '\n' && *cp != '\r')
            vstr_addch(value, *cp);
    return vstr_export(value);
}

/* cleanup_dkim_header - the filter's header hook: note the domain of the
   first From: header (as it will be queued: after header_checks and
   address rewriting). A From: that cleanup adds for a local submission
   carries the envelope sender, which is the fallback anyway. */
static CLEANUP_FILTER_ACT cleanup_dkim_header(void *arg, CLEANUP_MSG *msg,
                                              VSTR *header)
{
    CLEANUP_DKIM_STATE *state = arg;
    char *value;

    if (state == NULL || state->seen_from)
        return CLEANUP_FILTER_KEEP;
    value = cleanup_dkim_header_value(
        vstr_str(header), vstr_str(header) + vstr_len(header), "from");
    if (value != NULL) {
        state->seen_from = true;
        state->from_domain = cleanup_dkim_from_domain(value);
        myfree(value);
    }
    return CLEANUP_FILTER_KEEP;
}

/* cleanup_dkim_next_header - the end of the header that starts at cp
   (past its last LF) */
static const char *cleanup_dkim_next_header(const char *cp, const char *end)
{
    while (cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            return end;
        cp = nl + 1;
        if (cp >= end || (*cp != ' ' && *cp != '\t'))
            return cp;
    }
    return end;
}

/* cleanup_dkim_lookup - the keys of the signing domain: the From:
   domain's, else the envelope sender's, into state->keys (NULL: the
   message is not signed); a failed lookup defers the message */
static void cleanup_dkim_lookup(CLEANUP_DKIM_STATE *state)
{
    const char *candidates[2];
    const char *value = NULL;
    int error = MAP_OK;

    candidates[0] = state->from_domain;
    candidates[1] = smtp_addr_domain(state->msg->sender);
    for (size_t i = 0; i < 2 && value == NULL; i++) {
        if (candidates[i] == NULL || *candidates[i] == 0)
            continue;
        value = maps_find(state->dkim->maps, candidates[i], &error);
        if (value == NULL && error != MAP_NOTFOUND && error != MAP_OK) {
            msg_warn("%s: dkim_signing_maps lookup of %s failed; message "
                     "deferred",
                     state->msg->qid, candidates[i]);
            cleanup_dkim_fail(state, CLEANUP_DKIM_TABLEFAIL);
            return;
        }
        if (value != NULL) {
            VSTR *lower = vstr_alloc(64);

            vstr_cpy(lower, candidates[i]);
            vstr_lower(lower);
            state->domain = vstr_export(lower);
            state->keys = mystrdup(value);
        }
    }
}

/* cleanup_dkim_start - the keys of the domain, one handle each, fed the
   header block; false when the message is not signed (or failed) */
static bool cleanup_dkim_start(CLEANUP_DKIM_STATE *state)
{
    CLEANUP_MSG *msg = state->msg;
    CLEANUP_DKIM_KEYSPEC *specs;
    VSTR *hdr;
    ssize_t count;
    VSTR *why = vstr_alloc(100);
    bool ok = true;

    if ((count = cleanup_dkim_keys_parse(state->keys, &specs, why)) < 0) {
        msg_warn("%s: dkim_signing_maps value for %s: %s; message deferred",
                 msg->qid, state->domain, vstr_str(why));
        cleanup_dkim_fail(state, CLEANUP_DKIM_TABLEFAIL);
        vstr_free(why);
        return false;
    }
    for (size_t i = 0; ok && i < (size_t) count; i++) {
        CLEANUP_DKIM_KEYTYPE type;
        char *pem = cleanup_dkim_read_key(state->dkim, specs[i].path,
                                          specs[i].type, &type, why);
        DKIM_STAT stat = DKIM_STAT_OK;
        DKIM *handle;

        if (pem == NULL) {
            msg_warn("%s: DKIM key file %s (selector %s, domain %s): %s; "
                     "message deferred",
                     msg->qid, specs[i].path, specs[i].selector, state->domain,
                     vstr_str(why));
            cleanup_dkim_fail(state, CLEANUP_DKIM_TEMPFAIL);
            ok = false;
            break;
        }
        handle = dkim_sign(
            state->dkim->lib, (const unsigned char *) msg->qid, NULL,
            (dkim_sigkey_t) pem, (const unsigned char *) specs[i].selector,
            (const unsigned char *) state->domain, state->dkim->header_canon,
            state->dkim->body_canon,
            type == CLEANUP_DKIM_KEY_RSA ? DKIM_SIGN_RSASHA256
                                         : DKIM_SIGN_ED25519SHA256,
            -1, &stat);
        myfree(pem);
        if (handle == NULL) {
            msg_warn("%s: DKIM key file %s (selector %s, domain %s): "
                     "libopendkim: %s; message deferred",
                     msg->qid, specs[i].path, specs[i].selector, state->domain,
                     dkim_getresultstr(stat));
            cleanup_dkim_fail(state, CLEANUP_DKIM_TEMPFAIL);
            ok = false;
            break;
        }
        /* libopendkim folds the signature it hashes with b= still empty
           and the one it returns with b= filled in, so their line breaks
           can differ: harmless for relaxed header canonicalization, fatal
           for simple. Unfolded, both are the same. */
        if (state->dkim->header_canon == DKIM_CANON_SIMPLE)
            (void) dkim_set_margin(handle, 0);
        state->handles[state->handle_count++] = handle;
    }
    cleanup_dkim_keys_free(specs, (size_t) count);
    vstr_free(why);
    if (!ok)
        return false;

    /* The header block, one header at a time, without its last LF; the
       line breaks of a folded header as CRLF (libopendkim's FIXCRLF mends
       the body only, and simple canonicalization hashes them as sent). */
    hdr = vstr_alloc(256);
    for (const char *cp = vstr_str(state->head),
                    *end = cp + vstr_len(state->head);
         cp < end;) {
        const char *next = cleanup_dkim_next_header(cp, end);

        vstr_reset(hdr);
        for (const char *hp = cp; hp < next; hp++) {
            if (*hp == '\n' && (hp == cp || hp[-1] != '\r'))
                vstr_addch(hdr, '\r');
            vstr_addch(hdr, *hp);
        }
        if (vstr_len(hdr) >= 2 && vstr_str(hdr)[vstr_len(hdr) - 1] == '\n')
            vstr_truncate(hdr, vstr_len(hdr) - 2);
        for (size_t i = 0; i < state->handle_count; i++) {
            DKIM_STAT stat = dkim_header(
                state->handles[i], (u_char *) vstr_str(hdr), vstr_len(hdr));

            if (stat != DKIM_STAT_OK) {
                msg_warn("%s: DKIM signing: header: %s; message deferred",
                         msg->qid,
                         dkim_geterror(state->handles[i])
                             ? dkim_geterror(state->handles[i])
                             : dkim_getresultstr(stat));
                cleanup_dkim_fail(state, CLEANUP_DKIM_SIGNFAIL);
                vstr_free(hdr);
                return false;
            }
        }
        cp = next;
    }
    vstr_free(hdr);
    for (size_t i = 0; i < state->handle_count; i++) {
        DKIM_STAT stat = dkim_eoh(state->handles[i]);

        if (stat != DKIM_STAT_OK) {
            msg_warn("%s: DKIM signing: end of headers: %s; message deferred",
                     msg->qid,
                     dkim_geterror(state->handles[i])
                         ? dkim_geterror(state->handles[i])
                         : dkim_getresultstr(stat));
            cleanup_dkim_fail(state, CLEANUP_DKIM_SIGNFAIL);
            return false;
        }
    }
    return true;
}

/* cleanup_dkim_body - body bytes to every handle */
static int cleanup_dkim_body(CLEANUP_DKIM_STATE *state, const char *data,
                             size_t len)
{
    for (size_t i = 0; i < state->handle_count && len > 0; i++) {
        DKIM_STAT stat = dkim_body(state->handles[i], (u_char *) data, len);

        if (stat != DKIM_STAT_OK && stat != DKIM_STAT_KEYFAIL) {
            msg_warn("%s: DKIM signing: body: %s; message deferred",
                     state->msg->qid, dkim_getresultstr(stat));
            cleanup_dkim_fail(state, CLEANUP_DKIM_SIGNFAIL);
            return -1;
        }
    }
    return 0;
}

/* cleanup_dkim_content - a QFILE_CONTENT_FN: header block, then body */
static int cleanup_dkim_content(void *ctx, const char *data, size_t len)
{
    CLEANUP_DKIM_STATE *state = ctx;

    if (state->skip)
        return 1; /* failed: stop reading */
    while (!state->in_body && len > 0) {
        int ch = (unsigned char) *data++;

        len--;
        if (state->at_line_start && ch == '\n') {
            /* The empty line ends the header block; it is no body byte. */
            state->in_body = true;
            if (!cleanup_dkim_start(state))
                return 1; /* stop reading */
            break;
        }
        vstr_addch(state->head, ch);
        state->at_line_start = ch == '\n';
    }
    if (state->in_body && len > 0 && cleanup_dkim_body(state, data, len) < 0)
        return 1;
    return 0;
}

/* cleanup_dkim_end - sign what is in the file, prepend the signatures */
static void cleanup_dkim_end(void *arg, CLEANUP_MSG *msg)
{
    CLEANUP_DKIM_STATE *state = arg;
    VSTR *sigs;
    int ret;

    if (state == NULL || msg->out == NULL)
        return;
    /* Only a message that is to be signed is read back. */
    cleanup_dkim_lookup(state);
    if (state->fail_reason != NULL) {
        cleanup_msg_fail(msg, 451, state->fail_reason);
        return;
    }
    if (state->keys == NULL)
        return;
    ret = qfile_out_content(msg->out, cleanup_dkim_content, state);
    if (ret < 0) {
        msg_warn("%s: read back queue file %s: %m", msg->qid, msg->tmp_path);
        cleanup_msg_fail(msg, 451, "4.3.0 queue file write error");
        return;
    }
    if (!state->in_body && !state->skip) {
        /* Headers only, no separator (cleanup always writes one). */
        state->in_body = true;
        (void) cleanup_dkim_start(state);
    }
    if (state->fail_reason != NULL) {
        cleanup_msg_fail(msg, 451, state->fail_reason);
        return;
    }
    if (state->skip || state->handle_count == 0)
        return;
    sigs = vstr_alloc(1024);
    for (size_t i = 0; i < state->handle_count; i++) {
        DKIM_STAT stat = dkim_eom(state->handles[i], NULL);
        u_char *sig = NULL;
        size_t sig_len = 0;

        if (stat == DKIM_STAT_OK)
            stat = dkim_getsighdr_d(state->handles[i],
                                    sizeof(CLEANUP_DKIM_HEADER) - 1, &sig,
                                    &sig_len);
        if (stat != DKIM_STAT_OK) {
            msg_warn("%s: DKIM signing for %s: %s; message deferred", msg->qid,
                     state->domain,
                     dkim_geterror(state->handles[i])
                         ? dkim_geterror(state->handles[i])
                         : dkim_getresultstr(stat));
            cleanup_msg_fail(msg, 451, CLEANUP_DKIM_SIGNFAIL);
            vstr_free(sigs);
            return;
        }
        vstr_cat(sigs, CLEANUP_DKIM_HEADER);
        for (size_t j = 0; j < sig_len; j++)
            if (sig[j] != '\r')
                vstr_addch(sigs, sig[j]);
        vstr_addch(sigs, '\n');
    }
    if (qfile_out_prepend_content(msg->out, vstr_str(sigs), vstr_len(sigs)) <
        0) {
        msg_warn("%s: add the DKIM signature to %s: %m", msg->qid,
                 msg->tmp_path);
        cleanup_msg_fail(msg, 451, "4.3.0 queue file write error");
    } else {
        msg_info("%s: DKIM-Signature added: d=%s, %zu signature%s", msg->qid,
                 state->domain, state->handle_count,
                 state->handle_count == 1 ? "" : "s");
    }
    vstr_free(sigs);
}

const CLEANUP_FILTER cleanup_dkim_filter = {
    .name = "dkim",
    .begin = cleanup_dkim_begin,
    .header = cleanup_dkim_header,
    .end = cleanup_dkim_end,
    .free = cleanup_dkim_state_free,
};
