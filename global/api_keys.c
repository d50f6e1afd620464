/*
 * api_keys - the HTTP API's keys, stored hashed in api_keys_file
 *
 * Keys are random, so one SHA-256 of the key is enough to store: nobody
 * can guess 192 random bits from their hash. The key's ID is part of the
 * key so a lookup finds its line without comparing against every hash.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include "api_keys.h"
#include "argv.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

static const char *const api_keys_scope_list[] = {"send", "read", "templates",
                                                  "admin"};

/* api_keys_hex - is text exactly len lowercase hex digits? */
static bool api_keys_hex(const char *text, size_t len)
{
    if (strlen(text) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((text[i] >= '0' && text[i] <= '9') ||
              (text[i] >= 'a' && text[i] <= 'f')))
            return false;
    return true;
}

/* api_keys_hash - the SHA-256 of key as 64 lowercase hex digits */
static void api_keys_hash(const char *key,
                          char out[2 * SHA256_DIGEST_LENGTH + 1])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *) key, strlen(key), digest);
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/* api_keys_tenant_ok - 1 to API_KEYS_TENANT_MAX of [A-Za-z0-9._-], not "."
   or ".." (the name is a folder: api_limits' usage/TENANT) */
bool api_keys_tenant_ok(const char *tenant)
{
    size_t len = strlen(tenant);

    if (len == 0 || len > API_KEYS_TENANT_MAX || strcmp(tenant, ".") == 0 ||
        strcmp(tenant, "..") == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char) tenant[i]) && tenant[i] != '.' &&
            tenant[i] != '_' && tenant[i] != '-')
            return false;
    return true;
}

/* api_keys_scopes - parse "send,read" into API_SCOPE_* bits */
int api_keys_scopes(const char *text)
{
    ARGV *words = argv_split(text, ",");
    int scopes = 0;

    for (size_t i = 0; i < words->argc && scopes >= 0; i++) {
        size_t j;

        for (j = 0; j < SLUICE_ARRAY_LEN(api_keys_scope_list); j++)
            if (strcmp(words->argv[i], api_keys_scope_list[j]) == 0)
                break;
        scopes =
            j < SLUICE_ARRAY_LEN(api_keys_scope_list) ? scopes | (1 << j) : -1;
    }
    argv_free(words);
    return scopes == 0 ? -1 : scopes;
}

/* api_keys_scope_names - append "send,read,..." for bits to out */
void api_keys_scope_names(VSTR *out, int scopes)
{
    bool first = true;

    for (size_t j = 0; j < SLUICE_ARRAY_LEN(api_keys_scope_list); j++) {
        if (scopes & (1 << j)) {
            vstr_sprintf_append(out, "%s%s", first ? "" : ",",
                                api_keys_scope_list[j]);
            first = false;
        }
    }
}

/* API_KEYS_LINE - one parsed line of the file */
typedef struct API_KEYS_LINE {
    ARGV *words;
    int scopes;
} API_KEYS_LINE;

/* api_keys_parse_line - split and check one line; false when it is no
   key line (comment, empty, malformed: *malformed says which) */
static bool api_keys_parse_line(const char *line, API_KEYS_LINE *out,
                                bool *malformed)
{
    out->words = argv_split(line, " \t");
    *malformed = false;
    if (out->words->argc == 0 || out->words->argv[0][0] == '#')
        return false;
    *malformed = true;
    if (out->words->argc != 4 ||
        !api_keys_hex(out->words->argv[0], API_KEYS_ID_LEN) ||
        !api_keys_tenant_ok(out->words->argv[1]) ||
        (out->scopes = api_keys_scopes(out->words->argv[2])) < 0 ||
        !api_keys_hex(out->words->argv[3], 2 * SHA256_DIGEST_LENGTH))
        return false;
    *malformed = false;
    return true;
}

/* api_keys_read - the file's lines; NULL (why) when it cannot be read;
   a missing file is empty */
static ARGV *api_keys_read(const char *path, VSTR *why)
{
    size_t len;
    char *data = safe_file_read(path, API_KEYS_FILE_MAX, &len);
    ARGV *lines;

    if (data == NULL) {
        if (errno == ENOENT)
            return argv_alloc(1);
        vstr_sprintf(why, "read %s: %s", path, strerror(errno));
        return NULL;
    }
    lines = argv_split(data, "\n");
    myfree(data);
    return lines;
}

/* api_keys_lookup - the entry of a presented key */
API_KEYS_STATUS api_keys_lookup(const char *path, const char *presented,
                                API_KEY *key, VSTR *why)
{
    char hash[2 * SHA256_DIGEST_LENGTH + 1];
    char id[API_KEYS_ID_LEN + 1];
    API_KEYS_STATUS status = API_KEYS_UNKNOWN;
    ARGV *lines;

    /* sk_ + ID + _ + SECRET */
    if (strlen(presented) != 3 + API_KEYS_ID_LEN + 1 + API_KEYS_SECRET_LEN ||
        strncmp(presented, "sk_", 3) != 0 ||
        presented[3 + API_KEYS_ID_LEN] != '_')
        return API_KEYS_UNKNOWN;
    memcpy(id, presented + 3, API_KEYS_ID_LEN);
    id[API_KEYS_ID_LEN] = 0;
    if (!api_keys_hex(id, API_KEYS_ID_LEN) ||
        !api_keys_hex(presented + 4 + API_KEYS_ID_LEN, API_KEYS_SECRET_LEN))
        return API_KEYS_UNKNOWN;
    if ((lines = api_keys_read(path, why)) == NULL)
        return API_KEYS_ERROR;
    api_keys_hash(presented, hash);
    for (size_t i = 0; i < lines->argc && status == API_KEYS_UNKNOWN; i++) {
        API_KEYS_LINE line;
        bool malformed;

        if (!api_keys_parse_line(lines->argv[i], &line, &malformed)) {
            if (malformed)
                msg_warn("%s: line %zu is malformed; skipped", path, i + 1);
        } else if (strcmp(line.words->argv[0], id) == 0 &&
                   CRYPTO_memcmp(line.words->argv[3], hash, sizeof(hash) - 1) ==
                       0) {
            snprintf(key->id, sizeof(key->id), "%s", id);
            snprintf(key->tenant, sizeof(key->tenant), "%s",
                     line.words->argv[1]);
            key->scopes =
                (line.scopes & API_SCOPE_ADMIN) ? API_SCOPE_ALL : line.scopes;
            status = API_KEYS_OK;
        }
        argv_free(line.words);
    }
    argv_free(lines);
    return status;
}

/* api_keys_random_hex - len random hex digits into out */
static int api_keys_random_hex(char *out, size_t len, VSTR *why)
{
    unsigned char bytes[64];
    size_t need = (len + 1) / 2;

    if (need > sizeof(bytes) || getrandom(bytes, need, 0) != (ssize_t) need) {
        vstr_sprintf(why, "getrandom: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        out[i] = "0123456789abcdef"[(bytes[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
    out[len] = 0;
    return 0;
}

/* api_keys_create - a new key for tenant, its hash appended to path */
int api_keys_create(const char *path, const char *tenant, int scopes,
                    VSTR *key_out, VSTR *why)
{
    char id[API_KEYS_ID_LEN + 1];
    char secret[API_KEYS_SECRET_LEN + 1];
    char hash[2 * SHA256_DIGEST_LENGTH + 1];
    VSTR *line;
    int fd;
    int ret = 0;

    if (!api_keys_tenant_ok(tenant)) {
        vstr_sprintf(why,
                     "bad tenant name (1 to %d of letters, digits, '.', "
                     "'_', '-'; not \".\" or \"..\")",
                     API_KEYS_TENANT_MAX);
        return -1;
    }
    if (api_keys_random_hex(id, API_KEYS_ID_LEN, why) < 0 ||
        api_keys_random_hex(secret, API_KEYS_SECRET_LEN, why) < 0)
        return -1;
    vstr_sprintf(key_out, "sk_%s_%s", id, secret);
    api_keys_hash(vstr_str(key_out), hash);
    line = vstr_alloc(128);
    vstr_sprintf(line, "%s %s ", id, tenant);
    api_keys_scope_names(line, scopes);
    vstr_sprintf_append(line, " %s\n", hash);
    if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) <
        0) {
        vstr_sprintf(why, "open %s: %s", path, strerror(errno));
        ret = -1;
    } else {
        if (safe_file_write_all(fd, vstr_str(line), vstr_len(line)) < 0 ||
            safe_file_fsync(fd) < 0) {
            vstr_sprintf(why, "write %s: %s", path, strerror(errno));
            ret = -1;
        }
        if (close(fd) < 0 && ret == 0) {
            vstr_sprintf(why, "close %s: %s", path, strerror(errno));
            ret = -1;
        }
        if (ret == 0 && safe_file_fsync_parent(path) < 0) {
            vstr_sprintf(why, "fsync the directory of %s: %s", path,
                         strerror(errno));
            ret = -1;
        }
    }
    vstr_free(line);
    return ret;
}

/* api_keys_revoke - remove every key of ID or of tenant */
int api_keys_revoke(const char *path, const char *id_or_tenant, VSTR *why)
{
    ARGV *lines = api_keys_read(path, why);
    VSTR *keep;
    int removed = 0;

    if (lines == NULL)
        return -1;
    keep = vstr_alloc(1024);
    for (size_t i = 0; i < lines->argc; i++) {
        API_KEYS_LINE line;
        bool malformed;

        if (api_keys_parse_line(lines->argv[i], &line, &malformed) &&
            (strcmp(line.words->argv[0], id_or_tenant) == 0 ||
             strcmp(line.words->argv[1], id_or_tenant) == 0)) {
            removed++;
        } else {
            vstr_sprintf_append(keep, "%s\n", lines->argv[i]);
        }
        argv_free(line.words);
    }
    if (removed > 0 &&
        safe_file_write(path, vstr_str(keep), vstr_len(keep), 0600) < 0) {
        vstr_sprintf(why, "write %s: %s", path, strerror(errno));
        removed = -1;
    }
    vstr_free(keep);
    argv_free(lines);
    return removed;
}

/* api_keys_list - "ID TENANT SCOPES\n" per valid key line */
int api_keys_list(const char *path, VSTR *out, VSTR *why)
{
    ARGV *lines = api_keys_read(path, why);

    if (lines == NULL)
        return -1;
    for (size_t i = 0; i < lines->argc; i++) {
        API_KEYS_LINE line;
        bool malformed;

        if (api_keys_parse_line(lines->argv[i], &line, &malformed))
            vstr_sprintf_append(out, "%s %s %s\n", line.words->argv[0],
                                line.words->argv[1], line.words->argv[2]);
        argv_free(line.words);
    }
    argv_free(lines);
    return 0;
}
