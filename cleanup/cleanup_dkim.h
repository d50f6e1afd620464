/*
 * cleanup_dkim - DKIM signing of the content cleanup commits
 *
 * When dkim_signing_maps is set, the end of every message looks up the
 * domain of its From: header (then, when that finds nothing, the domain of
 * the envelope sender) and signs the content as it stands in the queue
 * file with each key the table names, one DKIM-Signature: per key, put
 * before the content before the commit. A message is signed once: requeue
 * and delivery read the file as committed. A key that cannot be read, or a
 * table that fails, defers the message (451 4.3.0) with a log line naming
 * the key file: nothing is committed unsigned that the table says to sign.
 *
 * The parsers of the parameters and of a table value are pure (unit tests
 * and a fuzz target use them without libopendkim).
 */
#ifndef CLEANUP_DKIM_H
#define CLEANUP_DKIM_H

#include "sys_defs.h"

#include "argv.h"
#include "cleanup.h"
#include "mail_conf.h"
#include "vstr.h"

/* A key's type, from its PEM file (or the optional ":rsa"/":ed25519"). */
typedef enum CLEANUP_DKIM_KEYTYPE {
    CLEANUP_DKIM_KEY_ANY, /* no hint: the PEM says */
    CLEANUP_DKIM_KEY_RSA,
    CLEANUP_DKIM_KEY_ED25519,
} CLEANUP_DKIM_KEYTYPE;

/* One "selector:/path/to/key.pem[:rsa|:ed25519]" of a table value. */
typedef struct CLEANUP_DKIM_KEYSPEC {
    char *selector;
    char *path;
    CLEANUP_DKIM_KEYTYPE type;
} CLEANUP_DKIM_KEYSPEC;

#define CLEANUP_DKIM_MAX_KEYS 8 /* signatures per message */

/* cleanup_dkim_keys_parse - a table value: a comma- or space-separated
   list of selector:path; the count (at least 1) and *specs, or -1 with
   the reason in why */
extern ssize_t cleanup_dkim_keys_parse(const char *value,
                                       CLEANUP_DKIM_KEYSPEC **specs, VSTR *why);
/* cleanup_dkim_keys_free - release what cleanup_dkim_keys_parse made; NULL */
extern CLEANUP_DKIM_KEYSPEC *cleanup_dkim_keys_free(CLEANUP_DKIM_KEYSPEC *specs,
                                                    size_t count);

/* cleanup_dkim_headers_parse - dkim_signed_headers: header names, a name
   with a leading '+' also oversigned (signed once more than it occurs, so
   no copy can be added on the way); from is always signed. *sign (every
   name, lower case, once) and *oversign; 0, or -1 with the reason in why */
extern int cleanup_dkim_headers_parse(const char *value, ARGV **sign,
                                      ARGV **oversign, VSTR *why);

/* Canonicalizations (RFC 6376 section 3.4). */
#define CLEANUP_DKIM_CANON_SIMPLE 0
#define CLEANUP_DKIM_CANON_RELAXED 1

/* cleanup_dkim_canon_parse - "header/body" or "header" (body simple), each
   simple or relaxed; 0, or -1 with the reason in why */
extern int cleanup_dkim_canon_parse(const char *value, int *header, int *body,
                                    VSTR *why);

/* cleanup_dkim_from_domain - the domain (lower case) of the first address
   of a From: value, unfolded; NULL when there is none to be found */
extern char *cleanup_dkim_from_domain(const char *value);

/* The signer (cleanup_dkim.c). */
typedef struct CLEANUP_DKIM CLEANUP_DKIM;

/* cleanup_dkim_create - the signer of main.cf's dkim_* parameters, or NULL
   when dkim_signing_maps is empty; bad settings are fatal */
extern CLEANUP_DKIM *cleanup_dkim_create(const MAIL_CONF *conf);
extern CLEANUP_DKIM *cleanup_dkim_free(CLEANUP_DKIM *dkim);

/* The filter that signs: conf->dkim set, it signs at the end of content. */
extern const CLEANUP_FILTER cleanup_dkim_filter;

#endif
