/*
 * shaping_proto - the codec of the `sluice shaping` <-> qmgr protocol
 *
 * Every list of global/shaping_proto.h is read and written here and
 * nowhere else. Readers are strict: the list must pass its table and
 * carry sane values (a known request, a plausible name, a suspension
 * within bounds, counts that are not negative).
 */
#include "sys_defs.h"

#include <ctype.h>
#include <stddef.h>

#include "attr.h"
#include "proto_hello.h"
#include "shaping.h"
#include "shaping_proto.h"
#include "vstr.h"

#define SHAPING_PROTO_NAME_MAX 255

/* shaping_proto_name_ok - a domain or provider:NAME */
bool shaping_proto_name_ok(const char *name)
{
    size_t prefix_len = strlen(SHAPING_PROVIDER_PREFIX);
    size_t len = strlen(name);

    if (len == 0 || len > SHAPING_PROTO_NAME_MAX)
        return false;
    if (strncasecmp(name, SHAPING_PROVIDER_PREFIX, prefix_len) == 0)
        name += prefix_len;
    if (*name == 0 || *name == '.' || *name == '-')
        return false;
    for (const char *cp = name; *cp; cp++)
        if (!isalnum((unsigned char) *cp) && *cp != '.' && *cp != '-' &&
            *cp != '_')
            return false;
    return true;
}

/* shaping_proto_hello_take - the peer's HELLO */
int shaping_proto_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, SHAPING_PROTO_NAME, SHAPING_PROTO_VERSION,
                            shaping_proto_hello_spec,
                            SLUICE_ARRAY_LEN(shaping_proto_hello_spec), why);
}

/* shaping_proto_hello_list - our HELLO */
ATTR_LIST *shaping_proto_hello_list(void)
{
    return proto_hello_list(SHAPING_PROTO_NAME, SHAPING_PROTO_VERSION);
}

/* shaping_proto_request_take - a REQUEST list */
int shaping_proto_request_take(const ATTR_LIST *list,
                               SHAPING_PROTO_REQUEST *req, VSTR *why)
{
    bool list_req, suspend;

    memset(req, 0, sizeof(*req));
    if (attr_list_check(list, shaping_proto_request_spec,
                        SLUICE_ARRAY_LEN(shaping_proto_request_spec), why) < 0)
        return -1;
    req->request = attr_get_str(list, SHAPING_PROTO_ATTR_REQUEST);
    req->name = attr_get_str(list, SHAPING_PROTO_ATTR_NAME);
    list_req = strcmp(req->request, SHAPING_PROTO_REQ_LIST) == 0;
    suspend = strcmp(req->request, SHAPING_PROTO_REQ_SUSPEND) == 0;
    if (!list_req && !suspend &&
        strcmp(req->request, SHAPING_PROTO_REQ_RESUME) != 0) {
        vstr_sprintf(why, "unknown request \"%s\"", req->request);
        return -1;
    }
    if (list_req) {
        if (req->name != NULL ||
            attr_get_int(list, SHAPING_PROTO_ATTR_SECONDS, &req->seconds)) {
            vstr_sprintf(why, "list takes no name and no seconds");
            return -1;
        }
        return 0;
    }
    if (req->name == NULL || !shaping_proto_name_ok(req->name)) {
        vstr_sprintf(why, "%s: \"%s\" is not a domain or provider:NAME",
                     req->request, req->name ? req->name : "");
        return -1;
    }
    if (attr_get_int(list, SHAPING_PROTO_ATTR_SECONDS, &req->seconds) !=
        suspend) {
        vstr_sprintf(why, "%s: %s", req->request,
                     suspend ? "needs seconds" : "takes no seconds");
        return -1;
    }
    if (suspend &&
        (req->seconds < 1 || req->seconds > SHAPING_PROTO_MAX_SECONDS)) {
        vstr_sprintf(why, "suspend: %lld seconds: not from 1 to %lld",
                     req->seconds, SHAPING_PROTO_MAX_SECONDS);
        return -1;
    }
    return 0;
}

/* shaping_proto_request_list - the REQUEST list of req */
ATTR_LIST *shaping_proto_request_list(const SHAPING_PROTO_REQUEST *req)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, SHAPING_PROTO_ATTR_REQUEST, req->request);
    if (req->name)
        attr_add_str(list, SHAPING_PROTO_ATTR_NAME, req->name);
    if (strcmp(req->request, SHAPING_PROTO_REQ_SUSPEND) == 0)
        attr_add_int(list, SHAPING_PROTO_ATTR_SECONDS, req->seconds);
    return list;
}

/* shaping_proto_is_bucket - a BUCKET list? */
bool shaping_proto_is_bucket(const ATTR_LIST *list)
{
    return attr_get_str(list, SHAPING_PROTO_ATTR_BUCKET) != NULL;
}

/* shaping_proto_bucket_take - a BUCKET list */
int shaping_proto_bucket_take(const ATTR_LIST *list,
                              SHAPING_PROTO_BUCKET *bucket, VSTR *why)
{
    static const struct {
        const char *name;
        size_t offset;
    } ints[] = {
        {SHAPING_PROTO_ATTR_MAX_CONN,
         offsetof(SHAPING_PROTO_BUCKET, max_connections)},
        {SHAPING_PROTO_ATTR_CONN, offsetof(SHAPING_PROTO_BUCKET, connections)},
        {SHAPING_PROTO_ATTR_MSG_TOKENS,
         offsetof(SHAPING_PROTO_BUCKET, message_tokens)},
        {SHAPING_PROTO_ATTR_CONN_TOKENS,
         offsetof(SHAPING_PROTO_BUCKET, connection_tokens)},
        {SHAPING_PROTO_ATTR_SUSPENDED,
         offsetof(SHAPING_PROTO_BUCKET, suspended)},
        {SHAPING_PROTO_ATTR_QUEUED, offsetof(SHAPING_PROTO_BUCKET, queued)},
    };

    memset(bucket, 0, sizeof(*bucket));
    if (attr_list_check(list, shaping_proto_bucket_spec,
                        SLUICE_ARRAY_LEN(shaping_proto_bucket_spec), why) < 0)
        return -1;
    bucket->bucket = attr_get_str(list, SHAPING_PROTO_ATTR_BUCKET);
    bucket->rule = attr_get_str(list, SHAPING_PROTO_ATTR_RULE);
    bucket->message_rate = attr_get_str(list, SHAPING_PROTO_ATTR_MSG_RATE);
    bucket->connection_rate = attr_get_str(list, SHAPING_PROTO_ATTR_CONN_RATE);
    bucket->automation = attr_get_str(list, SHAPING_PROTO_ATTR_AUTOMATION);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(ints); i++) {
        long long *value = (long long *) ((char *) bucket + ints[i].offset);

        (void) attr_get_int(list, ints[i].name, value);
        if (*value < 0) {
            vstr_sprintf(why, "%s: negative (%lld)", ints[i].name, *value);
            return -1;
        }
    }
    return 0;
}

/* shaping_proto_bucket_list - the BUCKET list of bucket */
ATTR_LIST *shaping_proto_bucket_list(const SHAPING_PROTO_BUCKET *bucket)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, SHAPING_PROTO_ATTR_BUCKET, bucket->bucket);
    attr_add_str(list, SHAPING_PROTO_ATTR_RULE, bucket->rule);
    attr_add_int(list, SHAPING_PROTO_ATTR_MAX_CONN, bucket->max_connections);
    attr_add_int(list, SHAPING_PROTO_ATTR_CONN, bucket->connections);
    attr_add_str(list, SHAPING_PROTO_ATTR_MSG_RATE, bucket->message_rate);
    attr_add_int(list, SHAPING_PROTO_ATTR_MSG_TOKENS, bucket->message_tokens);
    attr_add_str(list, SHAPING_PROTO_ATTR_CONN_RATE, bucket->connection_rate);
    attr_add_int(list, SHAPING_PROTO_ATTR_CONN_TOKENS,
                 bucket->connection_tokens);
    attr_add_int(list, SHAPING_PROTO_ATTR_SUSPENDED, bucket->suspended);
    attr_add_int(list, SHAPING_PROTO_ATTR_QUEUED, bucket->queued);
    attr_add_str(list, SHAPING_PROTO_ATTR_AUTOMATION,
                 bucket->automation ? bucket->automation : "-");
    return list;
}

/* shaping_proto_reply_take - a REPLY list */
int shaping_proto_reply_take(const ATTR_LIST *list, SHAPING_PROTO_REPLY *reply,
                             VSTR *why)
{
    long long status = -1;
    const char *reason;
    const char *refused;
    const char *redis;

    memset(reply, 0, sizeof(*reply));
    if (attr_list_check(list, shaping_proto_reply_spec,
                        SLUICE_ARRAY_LEN(shaping_proto_reply_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, SHAPING_PROTO_ATTR_STATUS, &status);
    if (status != SHAPING_PROTO_STAT_OK && status != SHAPING_PROTO_STAT_FAIL) {
        vstr_sprintf(why, "unknown status %lld", status);
        return -1;
    }
    reply->status = (int) status;
    reason = attr_get_str(list, SHAPING_PROTO_ATTR_REASON);
    reply->reason = reason && *reason ? reason : NULL;
    refused = attr_get_str(list, SHAPING_PROTO_ATTR_REFUSED);
    reply->refused = refused && *refused ? refused : NULL;
    redis = attr_get_str(list, SHAPING_PROTO_ATTR_REDIS);
    reply->redis = redis && *redis ? redis : NULL;
    return 0;
}

/* shaping_proto_reply_list - the REPLY list of reply */
ATTR_LIST *shaping_proto_reply_list(const SHAPING_PROTO_REPLY *reply)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_int(list, SHAPING_PROTO_ATTR_STATUS, reply->status);
    if (reply->reason != NULL && *reply->reason)
        attr_add_str(list, SHAPING_PROTO_ATTR_REASON, reply->reason);
    if (reply->refused != NULL && *reply->refused)
        attr_add_str(list, SHAPING_PROTO_ATTR_REFUSED, reply->refused);
    if (reply->redis != NULL && *reply->redis)
        attr_add_str(list, SHAPING_PROTO_ATTR_REDIS, reply->redis);
    return list;
}
