/*
 * api_keys - the HTTP API's keys, stored hashed in api_keys_file
 *
 * A key is "sk_ID_SECRET": ID is 12 hex digits that name the key in logs,
 * `sluice api key list` and revoke; SECRET is 48 hex digits (192 random
 * bits). The file holds one line per key and never the key itself:
 *
 *     ID TENANT SCOPES SHA256-HEX-OF-THE-WHOLE-KEY
 *
 * SCOPES is a comma list of send, read, templates, admin (admin grants
 * every scope). Lines starting with '#' and empty lines are ignored; a
 * malformed line is skipped with a warning, it never grants anything. The
 * comparison of hashes takes the same time whatever they share. The file
 * is read at each lookup, so a revoked key stops working at once.
 */
#ifndef API_KEYS_H
#define API_KEYS_H

#include "sys_defs.h"
#include "vstr.h"

#define API_KEYS_ID_LEN 12
#define API_KEYS_SECRET_LEN 48
#define API_KEYS_FILE_MAX (16 * 1024 * 1024) /* bytes of api_keys_file */
#define API_KEYS_TENANT_MAX 64

#define API_SCOPE_SEND 0x01
#define API_SCOPE_READ 0x02
#define API_SCOPE_TEMPLATES 0x04
#define API_SCOPE_ADMIN 0x08
#define API_SCOPE_ALL 0x0f

typedef struct API_KEY {
    char id[API_KEYS_ID_LEN + 1];
    char tenant[API_KEYS_TENANT_MAX + 1];
    int scopes; /* API_SCOPE_* (admin implies all) */
} API_KEY;

typedef enum API_KEYS_STATUS {
    API_KEYS_OK, /* found: *key filled in */
    API_KEYS_UNKNOWN, /* malformed, unknown or revoked key */
    API_KEYS_ERROR, /* the file cannot be read (why) */
} API_KEYS_STATUS;

/* api_keys_lookup - the entry of a presented key */
extern API_KEYS_STATUS api_keys_lookup(const char *path, const char *presented,
                                       API_KEY *key, VSTR *why);

/* api_keys_scopes - parse "send,read" into API_SCOPE_* bits; -1 for an
   unknown scope or an empty list */
extern int api_keys_scopes(const char *text);

/* api_keys_scope_names - append "send,read,..." for bits to out */
extern void api_keys_scope_names(VSTR *out, int scopes);

/* api_keys_tenant_ok - 1 to API_KEYS_TENANT_MAX of [A-Za-z0-9._-] */
extern bool api_keys_tenant_ok(const char *tenant);

/* api_keys_create - a new key for tenant: its line is appended (and
   fsynced) to path, the key itself put in key_out; 0, or -1 with why */
extern int api_keys_create(const char *path, const char *tenant, int scopes,
                           VSTR *key_out, VSTR *why);

/* api_keys_revoke - remove every key of ID or of tenant (match either);
   the number removed, or -1 with why */
extern int api_keys_revoke(const char *path, const char *id_or_tenant,
                           VSTR *why);

/* api_keys_list - each valid line's ID, tenant and scopes into out, one
   "ID TENANT SCOPES\n" per key; 0, or -1 with why */
extern int api_keys_list(const char *path, VSTR *out, VSTR *why);

#endif
