/*
 * api_idem - the HTTP API's idempotency records (Idempotency-Key)
 *
 * A request with an Idempotency-Key that got its 202 leaves a record: one
 * file per tenant and key (named by the SHA-256 of both, so a key's text
 * never reaches a file name), holding the SHA-256 of the request body, the
 * status and the body of the answer. It is written durably (temporary
 * file, fsync, rename, directory fsync) after cleanup committed the
 * message and before the 202 goes out, and read back for a retry within
 * the TTL (api_idempotency_ttl), across restarts. A retry whose body
 * differs is told so instead of replayed. Only a crash in the instant
 * between cleanup's commit and the record's rename can make a retry send
 * a second copy; a retry never loses the message.
 *
 * File format, strict: "sluice-idempotency 1\nrequest HEX\nstatus N\n\n"
 * then the answer's body.
 */
#ifndef API_IDEM_H
#define API_IDEM_H

#include "sys_defs.h"
#include "vstr.h"

#define API_IDEM_KEY_MAX 255 /* bytes of an Idempotency-Key */

typedef enum API_IDEM_STATUS {
    API_IDEM_NONE, /* no live record: go on and store one after commit */
    API_IDEM_REPLAY, /* the same request was answered: *status and body */
    API_IDEM_MISMATCH, /* the key was used for another request body */
    API_IDEM_ERROR, /* the store cannot be read (why) */
} API_IDEM_STATUS;

/* api_idem_key_ok - 1 to API_IDEM_KEY_MAX printable ASCII characters */
extern bool api_idem_key_ok(const char *key);

/* api_idem_lookup - the record of tenant's key in dir, for a request
   body; a record older than ttl seconds counts as none */
extern API_IDEM_STATUS api_idem_lookup(const char *dir, long long ttl,
                                       const char *tenant, const char *key,
                                       const char *request, size_t request_len,
                                       int *status, VSTR *body, VSTR *why);

/* api_idem_store - record the answer (status, body) durably; 0 or -1 */
extern int api_idem_store(const char *dir, const char *tenant, const char *key,
                          const char *request, size_t request_len, int status,
                          const char *body, VSTR *why);

/* api_idem_expire - remove the records older than ttl; how many */
extern int api_idem_expire(const char *dir, long long ttl);

#endif
