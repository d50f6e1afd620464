/*
 * sign_token - signed tokens for VERP return paths, tracking and
 * unsubscribe links (issue #17 / tracker #22)
 *
 * A token is the lower-case base32 (RFC 4648 alphabet, no padding) of
 * PAYLOAD followed by the first SIGN_TOKEN_TAG_LEN bytes of
 * HMAC-SHA256(key, "sluice-" PURPOSE NUL PAYLOAD). It is safe both in an
 * address's local part (letters and digits only, so it survives case
 * folding by sign_token_check accepting either case) and in a URL path.
 * PURPOSE keeps a token made for one use ("verp", "click", ...) from being
 * accepted for another.
 *
 * The key lives in feedback_key_file (default
 * $data_directory/feedback.key): 32 random bytes made by the first process
 * that needs it (sign_token_key_load). Every node that should accept
 * another node's tokens (a DSN may come back to any MX) needs the same
 * file: copy it.
 */
#ifndef SIGN_TOKEN_H
#define SIGN_TOKEN_H

#include "sys_defs.h"

#include "mail_conf.h"
#include "vstr.h"

#define SIGN_TOKEN_TAG_LEN 10 /* HMAC bytes kept: 80 bits */
#define SIGN_TOKEN_KEY_LEN 32 /* bytes of a key made by sign_token_key_load */
#define SIGN_TOKEN_KEY_MIN 16 /* shortest key accepted from a file */

/* sign_token_key_path - append feedback_key_file (or its default) to path */
extern void sign_token_key_path(const MAIL_CONF *conf, VSTR *path);

/* sign_token_key_load - the key in path, made (SIGN_TOKEN_KEY_LEN random
   bytes, mode 0600) when the file does not exist; 0, or -1 (why says) when
   it cannot be read or made, or is shorter than SIGN_TOKEN_KEY_MIN */
extern int sign_token_key_load(const char *path, VSTR *key, VSTR *why);

/* sign_token_make - append the token of payload[0..len) for purpose */
extern void sign_token_make(VSTR *out, const VSTR *key, const char *purpose,
                            const void *payload, size_t len);

/* sign_token_check - 0 with the payload in payload when token is one that
   sign_token_make made with key for purpose (either letter case); -1 when
   it is malformed, too short, or its tag does not match */
extern int sign_token_check(const VSTR *key, const char *purpose,
                            const char *token, VSTR *payload);

/* sign_token_mac - append the base32 (lower case) of the first tag_len
   (at most 32) bytes of HMAC-SHA256(key, "sluice-" PURPOSE NUL PAYLOAD):
   a MAC alone, for a token whose payload travels (or is found) apart */
extern void sign_token_mac(VSTR *out, const VSTR *key, const char *purpose,
                           const void *payload, size_t len, size_t tag_len);

/* sign_token_mac_check - is text (either letter case) what sign_token_mac
   makes for these? Compared in constant time */
extern bool sign_token_mac_check(const VSTR *key, const char *purpose,
                                 const void *payload, size_t len,
                                 size_t tag_len, const char *text);

#endif
