/*
 * sign_token - signed tokens for VERP return paths, tracking and
 * unsubscribe links
 *
 * The key file is made without a window in which another process could
 * read half a key: the bytes go to a private temporary file that is
 * fsynced and then link(2)ed to the final name. link fails with EEXIST
 * when another process won the race; both then read the winner's file.
 */
#include "sys_defs.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mail_conf.h"
#include "msg.h"
#include "safe_file.h"
#include "sign_token.h"
#include "vstr.h"

#define SIGN_TOKEN_FILE_MAX 4096 /* longest key file read */

static const char sign_token_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

/* sign_token_key_path - append feedback_key_file (or its default) to path */
void sign_token_key_path(const MAIL_CONF *conf, VSTR *path)
{
    const char *file = mail_conf_str(conf, "feedback_key_file");

    if (file && *file)
        vstr_cat(path, file);
    else
        vstr_sprintf_append(path, "%s/feedback.key",
                            mail_conf_str(conf, "data_directory"));
}

/* sign_token_read - read the key file at path into key; 0, 1 when it does
   not exist, -1 (why says) */
static int sign_token_read(const char *path, VSTR *key, VSTR *why)
{
    char buf[SIGN_TOKEN_FILE_MAX];
    ssize_t got;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        vstr_sprintf(why, "open %s: %s", path, strerror(errno));
        return -1;
    }
    while (len < sizeof(buf) &&
           (got = read(fd, buf + len, sizeof(buf) - len)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            vstr_sprintf(why, "read %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        len += (size_t) got;
    }
    close(fd);
    if (len < SIGN_TOKEN_KEY_MIN) {
        vstr_sprintf(why, "%s: a key needs at least %d bytes, the file has %zu",
                     path, SIGN_TOKEN_KEY_MIN, len);
        return -1;
    }
    vstr_ncpy(key, buf, len);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/* sign_token_create - make the key file at path (see the file comment);
   0, or -1 (why says) */
static int sign_token_create(const char *path, VSTR *why)
{
    unsigned char bytes[SIGN_TOKEN_KEY_LEN];
    VSTR *tmp = vstr_alloc(100);
    int fd;
    int ret = -1;

    if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
        vstr_sprintf(why, "%s: no random bytes for a new key", path);
        vstr_free(tmp);
        return -1;
    }
    vstr_sprintf(tmp, "%s.%ld.tmp", path, (long) getpid());
    (void) unlink(vstr_str(tmp));
    fd = open(vstr_str(tmp), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        vstr_sprintf(why, "create %s: %s", vstr_str(tmp), strerror(errno));
    } else if (safe_file_write_all(fd, bytes, sizeof(bytes)) < 0 ||
               safe_file_fsync(fd) < 0) {
        vstr_sprintf(why, "write %s: %s", vstr_str(tmp), strerror(errno));
        close(fd);
    } else {
        close(fd);
        if (link(vstr_str(tmp), path) == 0) {
            if (safe_file_fsync_parent(path) < 0)
                vstr_sprintf(why, "fsync the directory of %s: %s", path,
                             strerror(errno));
            else
                ret = 0;
        } else if (errno == EEXIST) {
            ret = 0; /* another process made it first: use theirs */
        } else {
            vstr_sprintf(why, "link %s: %s", path, strerror(errno));
        }
    }
    if (fd >= 0)
        (void) unlink(vstr_str(tmp));
    OPENSSL_cleanse(bytes, sizeof(bytes));
    vstr_free(tmp);
    return ret;
}

/* sign_token_key_load - the key in path, made when absent */
int sign_token_key_load(const char *path, VSTR *key, VSTR *why)
{
    int ret = sign_token_read(path, key, why);

    if (ret != 1)
        return ret;
    if (sign_token_create(path, why) < 0)
        return -1;
    ret = sign_token_read(path, key, why);
    if (ret == 1) {
        vstr_sprintf(why, "%s vanished after it was made", path);
        return -1;
    }
    return ret;
}

/* sign_token_tag - the HMAC of purpose and payload into tag */
static void sign_token_tag(unsigned char tag[EVP_MAX_MD_SIZE], const VSTR *key,
                           const char *purpose, const void *payload, size_t len)
{
    unsigned int taglen = 0;
    VSTR *msg = vstr_alloc(len + 32);

    vstr_cat(msg, "sluice-");
    vstr_cat(msg, purpose);
    vstr_addch(msg, '\0');
    vstr_ncat(msg, payload, len);
    if (HMAC(EVP_sha256(), vstr_str(key), (int) vstr_len(key),
             (const unsigned char *) vstr_str(msg), vstr_len(msg), tag,
             &taglen) == NULL)
        msg_fatal("HMAC-SHA256 failed");
    vstr_free(msg);
}

/* sign_token_base32 - append the base32 of data[0..len) to out */
static void sign_token_base32(VSTR *out, const unsigned char *data, size_t len)
{
    unsigned int acc = 0;
    int bits = 0;

    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | data[i];
        bits += 8;
        while (bits >= 5) {
            vstr_addch(out, sign_token_alphabet[(acc >> (bits - 5)) & 31]);
            bits -= 5;
        }
    }
    if (bits > 0)
        vstr_addch(out, sign_token_alphabet[(acc << (5 - bits)) & 31]);
}

/* sign_token_unbase32 - decode text (either case) into out; -1 on a
   character outside the alphabet or non-zero padding bits */
static int sign_token_unbase32(VSTR *out, const char *text)
{
    unsigned int acc = 0;
    int bits = 0;

    vstr_reset(out);
    for (const char *p = text; *p; p++) {
        int ch = (unsigned char) *p;
        int val;

        if (ch >= 'a' && ch <= 'z')
            val = ch - 'a';
        else if (ch >= 'A' && ch <= 'Z')
            val = ch - 'A';
        else if (ch >= '2' && ch <= '7')
            val = ch - '2' + 26;
        else
            return -1;
        acc = ((acc << 5) | (unsigned int) val) & 0xffff;
        bits += 5;
        if (bits >= 8) {
            vstr_addch(out, (int) ((acc >> (bits - 8)) & 0xff));
            bits -= 8;
        }
    }
    if (bits >= 5 || (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return 0;
}

/* sign_token_make - append the token of payload[0..len) for purpose */
void sign_token_make(VSTR *out, const VSTR *key, const char *purpose,
                     const void *payload, size_t len)
{
    unsigned char tag[EVP_MAX_MD_SIZE];
    VSTR *raw = vstr_alloc(len + SIGN_TOKEN_TAG_LEN);

    sign_token_tag(tag, key, purpose, payload, len);
    vstr_ncat(raw, payload, len);
    vstr_ncat(raw, (const char *) tag, SIGN_TOKEN_TAG_LEN);
    sign_token_base32(out, (const unsigned char *) vstr_str(raw),
                      vstr_len(raw));
    vstr_free(raw);
}

/* sign_token_check - the payload of a good token */
int sign_token_check(const VSTR *key, const char *purpose, const char *token,
                     VSTR *payload)
{
    unsigned char tag[EVP_MAX_MD_SIZE];
    VSTR *raw = vstr_alloc(strlen(token));
    size_t len;
    int ret = -1;

    if (sign_token_unbase32(raw, token) == 0 &&
        vstr_len(raw) >= SIGN_TOKEN_TAG_LEN) {
        len = vstr_len(raw) - SIGN_TOKEN_TAG_LEN;
        sign_token_tag(tag, key, purpose, vstr_str(raw), len);
        if (CRYPTO_memcmp(tag, vstr_str(raw) + len, SIGN_TOKEN_TAG_LEN) == 0) {
            vstr_ncpy(payload, vstr_str(raw), len);
            ret = 0;
        }
    }
    vstr_free(raw);
    return ret;
}

/* sign_token_mac - append the base32 of a truncated HMAC */
void sign_token_mac(VSTR *out, const VSTR *key, const char *purpose,
                    const void *payload, size_t len, size_t tag_len)
{
    unsigned char tag[EVP_MAX_MD_SIZE];

    if (tag_len > 32) /* bytes of a SHA-256 */
        msg_panic("sign_token_mac: tag_len %zu", tag_len);
    sign_token_tag(tag, key, purpose, payload, len);
    sign_token_base32(out, tag, tag_len);
}

/* sign_token_mac_check - is text the MAC of these? */
bool sign_token_mac_check(const VSTR *key, const char *purpose,
                          const void *payload, size_t len, size_t tag_len,
                          const char *text)
{
    VSTR *want = vstr_alloc(64);
    VSTR *got = vstr_alloc(64);
    bool ok;

    sign_token_mac(want, key, purpose, payload, len, tag_len);
    vstr_lower(vstr_cpy(got, text));
    ok = vstr_len(got) == vstr_len(want) &&
         CRYPTO_memcmp(vstr_str(got), vstr_str(want), vstr_len(want)) == 0;
    vstr_free(want);
    vstr_free(got);
    return ok;
}
