/*
 * api_idem - the HTTP API's idempotency records (Idempotency-Key)
 *
 * Record age is the file's mtime: the record is written once and never
 * touched again, so the mtime is the time of the first answer.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <time.h>

#include "api_idem.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define API_IDEM_MAGIC "sluice-idempotency 1\n"
#define API_IDEM_FILE_MAX (16 * 1024 * 1024)
#define API_IDEM_HEX (2 * SHA256_DIGEST_LENGTH)

/* api_idem_key_ok - 1 to API_IDEM_KEY_MAX printable ASCII characters */
bool api_idem_key_ok(const char *key)
{
    size_t len = strlen(key);

    if (len == 0 || len > API_IDEM_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return false;
    return true;
}

/* api_idem_hex - SHA-256 of data as hex into out */
static void api_idem_hex(const void *data, size_t len,
                         char out[API_IDEM_HEX + 1])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    SHA256(data, len, digest);
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/* api_idem_path - DIR/HEX(tenant NUL key) into path */
static void api_idem_path(VSTR *path, const char *dir, const char *tenant,
                          const char *key)
{
    VSTR *name = vstr_alloc(100);
    char hex[API_IDEM_HEX + 1];

    vstr_cpy(name, tenant);
    vstr_addch(name, 0);
    vstr_cat(name, key);
    api_idem_hex(vstr_str(name), vstr_len(name), hex);
    vstr_sprintf(path, "%s/%s", dir, hex);
    vstr_free(name);
}

/* api_idem_lookup - the record of tenant's key, for a request body */
API_IDEM_STATUS api_idem_lookup(const char *dir, long long ttl,
                                const char *tenant, const char *key,
                                const char *request, size_t request_len,
                                int *status, VSTR *body, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    API_IDEM_STATUS result = API_IDEM_NONE;
    char hex[API_IDEM_HEX + 1];
    struct stat st;
    char *data = NULL;
    size_t len;
    const char *cp;
    char *end;
    long code;

    api_idem_path(path, dir, tenant, key);
    if (stat(vstr_str(path), &st) < 0) {
        /* No record, and a place to write one: else no promise is kept. */
        if (errno == ENOENT && stat(dir, &st) < 0) {
            vstr_sprintf(why, "stat %s: %s", dir, strerror(errno));
            result = API_IDEM_ERROR;
        } else if (errno != ENOENT) {
            vstr_sprintf(why, "stat %s: %s", vstr_str(path), strerror(errno));
            result = API_IDEM_ERROR;
        }
        goto out;
    }
    if (time(NULL) - st.st_mtime > ttl)
        goto out; /* expired: api_idem_expire removes it */
    if ((data = safe_file_read(vstr_str(path), API_IDEM_FILE_MAX, &len)) ==
        NULL) {
        vstr_sprintf(why, "read %s: %s", vstr_str(path), strerror(errno));
        result = API_IDEM_ERROR;
        goto out;
    }
    cp = data;
    if (strncmp(cp, API_IDEM_MAGIC, strlen(API_IDEM_MAGIC)) != 0 ||
        strncmp(cp += strlen(API_IDEM_MAGIC), "request ", 8) != 0 ||
        strlen(cp += 8) < API_IDEM_HEX + 1 || cp[API_IDEM_HEX] != '\n' ||
        strncmp(cp + API_IDEM_HEX + 1, "status ", 7) != 0) {
        vstr_sprintf(why, "%s: malformed idempotency record", vstr_str(path));
        result = API_IDEM_ERROR;
        goto out;
    }
    errno = 0;
    code = strtol(cp + API_IDEM_HEX + 8, &end, 10);
    if (errno || code < 100 || code > 599 || strncmp(end, "\n\n", 2) != 0) {
        vstr_sprintf(why, "%s: malformed idempotency record", vstr_str(path));
        result = API_IDEM_ERROR;
        goto out;
    }
    api_idem_hex(request, request_len, hex);
    if (strncmp(cp, hex, API_IDEM_HEX) != 0) {
        result = API_IDEM_MISMATCH;
        goto out;
    }
    *status = (int) code;
    vstr_ncpy(body, end + 2, len - (size_t) (end + 2 - data));
    result = API_IDEM_REPLAY;
out:
    myfree(data);
    vstr_free(path);
    return result;
}

/* api_idem_store - record the answer durably */
int api_idem_store(const char *dir, const char *tenant, const char *key,
                   const char *request, size_t request_len, int status,
                   const char *body, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    VSTR *text = vstr_alloc(256);
    char hex[API_IDEM_HEX + 1];
    int ret = 0;

    api_idem_path(path, dir, tenant, key);
    api_idem_hex(request, request_len, hex);
    vstr_sprintf(text, API_IDEM_MAGIC "request %s\nstatus %d\n\n%s", hex,
                 status, body);
    if (safe_file_write(vstr_str(path), vstr_str(text), vstr_len(text), 0600) <
        0) {
        vstr_sprintf(why, "write %s: %s", vstr_str(path), strerror(errno));
        ret = -1;
    }
    vstr_free(path);
    vstr_free(text);
    return ret;
}

/* api_idem_expire - remove the records older than ttl */
int api_idem_expire(const char *dir, long long ttl)
{
    VSTR *path = vstr_alloc(100);
    struct dirent *de;
    struct stat st;
    time_t now = time(NULL);
    int removed = 0;
    DIR *dp;

    if ((dp = opendir(dir)) == NULL) {
        vstr_free(path);
        return 0;
    }
    while ((de = readdir(dp)) != NULL) {
        if (strlen(de->d_name) != API_IDEM_HEX)
            continue;
        vstr_sprintf(path, "%s/%s", dir, de->d_name);
        if (stat(vstr_str(path), &st) == 0 && now - st.st_mtime > ttl &&
            unlink(vstr_str(path)) == 0)
            removed++;
    }
    closedir(dp);
    vstr_free(path);
    return removed;
}
