/*
 * shaping_proto - the protocol between `sluice shaping` and qmgr
 *
 * qmgr listens on queue_directory/private/qmgr-shaping
 * (SHAPING_PROTO_SERVICE, mode 0600, made by qmgr itself). A connection
 * carries any number of requests, each answered before the next is read.
 * Attribute lists (global/attr.h), in order:
 *
 *   qmgr -> sluice  HELLO    at once on accept (global/proto_hello.h)
 *   sluice -> qmgr  HELLO    first, before any REQUEST
 *   sluice -> qmgr  REQUEST  (shaping_proto_request_spec)
 *   qmgr -> sluice  BUCKET   (shaping_proto_bucket_spec), one per active
 *                            bucket, for "list" only
 *   qmgr -> sluice  REPLY    (shaping_proto_reply_spec), last; its
 *                            "refused" says that qmgr found the rules
 *                            file malformed when it started (why, with
 *                            file and line) and runs without rules
 *
 * Requests: "list" (every bucket qmgr holds: its rule, its limits, what is
 * in flight, the tokens at hand, a suspension); "suspend" name seconds
 * (nothing of the bucket starts for that long; a bucket that does not
 * exist yet is made, so mail that arrives later waits too); "resume" name
 * (the suspension ends now). A name is a recipient domain or
 * provider:NAME. A mismatched HELLO ends the connection before any
 * request is acted on; a malformed REQUEST gets status
 * SHAPING_PROTO_STAT_FAIL with its reason and the connection stays.
 */
#ifndef SHAPING_PROTO_H
#define SHAPING_PROTO_H

#include "attr.h"
#include "proto_hello.h"
#include "vstr.h"

#define SHAPING_PROTO_SERVICE "qmgr-shaping" /* private/qmgr-shaping */
#define SHAPING_PROTO_LIST_MAX 4096 /* largest list either side sends */
#define SHAPING_PROTO_NAME "qmgr_shaping" /* HELLO protocol= */
#define SHAPING_PROTO_VERSION 2 /* HELLO version=: bump on any change */
#define SHAPING_PROTO_MAX_SECONDS (366LL * 86400) /* longest suspension */

#define SHAPING_PROTO_REQ_LIST "list"
#define SHAPING_PROTO_REQ_SUSPEND "suspend"
#define SHAPING_PROTO_REQ_RESUME "resume"

#define SHAPING_PROTO_STAT_OK 0
#define SHAPING_PROTO_STAT_FAIL 1 /* see reason */

#define SHAPING_PROTO_ATTR_REQUEST PROTO_HELLO_ATTR_REQUEST
#define SHAPING_PROTO_ATTR_NAME "name"
#define SHAPING_PROTO_ATTR_SECONDS "seconds"
#define SHAPING_PROTO_ATTR_BUCKET "bucket"
#define SHAPING_PROTO_ATTR_RULE "rule"
#define SHAPING_PROTO_ATTR_MAX_CONN "max_connections"
#define SHAPING_PROTO_ATTR_CONN "connections"
#define SHAPING_PROTO_ATTR_MSG_RATE "message_rate"
#define SHAPING_PROTO_ATTR_MSG_TOKENS "message_tokens"
#define SHAPING_PROTO_ATTR_CONN_RATE "connection_rate"
#define SHAPING_PROTO_ATTR_CONN_TOKENS "connection_tokens"
#define SHAPING_PROTO_ATTR_SUSPENDED "suspended"
#define SHAPING_PROTO_ATTR_QUEUED "queued"
#define SHAPING_PROTO_ATTR_AUTOMATION "automation"
#define SHAPING_PROTO_ATTR_STATUS "status"
#define SHAPING_PROTO_ATTR_REASON "reason"
#define SHAPING_PROTO_ATTR_REFUSED "refused"
#define SHAPING_PROTO_ATTR_REDIS "redis"

static const ATTR_SPEC shaping_proto_hello_spec[] = {
    {SHAPING_PROTO_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {PROTO_HELLO_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"qmgr_shaping\""},
    {PROTO_HELLO_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "SHAPING_PROTO_VERSION of the sender"},
};

static const ATTR_SPEC shaping_proto_request_spec[] = {
    {SHAPING_PROTO_ATTR_REQUEST, ATTR_TYPE_STR, true, false,
     "list | suspend | resume"},
    {SHAPING_PROTO_ATTR_NAME, ATTR_TYPE_STR, false, false,
     "suspend, resume: a domain or provider:NAME"},
    {SHAPING_PROTO_ATTR_SECONDS, ATTR_TYPE_INT, false, false,
     "suspend: for how long"},
};

static const ATTR_SPEC shaping_proto_bucket_spec[] = {
    {SHAPING_PROTO_ATTR_BUCKET, ATTR_TYPE_STR, true, false,
     "domain, provider:NAME, or ?domain while its MX is looked up"},
    {SHAPING_PROTO_ATTR_RULE, ATTR_TYPE_STR, true, false,
     "the rule's key, \"-\": none"},
    {SHAPING_PROTO_ATTR_MAX_CONN, ATTR_TYPE_INT, true, false, "0: no limit"},
    {SHAPING_PROTO_ATTR_CONN, ATTR_TYPE_INT, true, false, "in flight"},
    {SHAPING_PROTO_ATTR_MSG_RATE, ATTR_TYPE_STR, true, false,
     "N/s, N/m, N/h or \"-\""},
    {SHAPING_PROTO_ATTR_MSG_TOKENS, ATTR_TYPE_INT, true, false,
     "that could start at once"},
    {SHAPING_PROTO_ATTR_CONN_RATE, ATTR_TYPE_STR, true, false,
     "N/s, N/m, N/h or \"-\""},
    {SHAPING_PROTO_ATTR_CONN_TOKENS, ATTR_TYPE_INT, true, false,
     "that could start at once"},
    {SHAPING_PROTO_ATTR_SUSPENDED, ATTR_TYPE_INT, true, false,
     "seconds left, 0: not suspended"},
    {SHAPING_PROTO_ATTR_QUEUED, ATTR_TYPE_INT, true, false,
     "deliveries waiting"},
    {SHAPING_PROTO_ATTR_AUTOMATION, ATTR_TYPE_STR, true, false,
     "what response automation has in force (\"suspend:RULE\", "
     "\"rate=1/m:RULE\", \"connections=1:RULE\"), \"-\": nothing"},
};

static const ATTR_SPEC shaping_proto_reply_spec[] = {
    {SHAPING_PROTO_ATTR_STATUS, ATTR_TYPE_INT, true, false, "0 ok, 1 failed"},
    {SHAPING_PROTO_ATTR_REASON, ATTR_TYPE_STR, false, false, "why it failed"},
    {SHAPING_PROTO_ATTR_REFUSED, ATTR_TYPE_STR, false, false,
     "qmgr refused smtp_shaping_maps at start and runs without rules: why"},
    {SHAPING_PROTO_ATTR_REDIS, ATTR_TYPE_STR, false, false,
     "shaping_redis_server and its state (\"HOST:PORT up\", \"... down "
     "(each node keeps 1/N of the limits)\"); absent: node-local"},
};

typedef struct SHAPING_PROTO_REQUEST {
    const char *request; /* SHAPING_PROTO_REQ_* */
    const char *name; /* suspend, resume; NULL for list */
    long long seconds; /* suspend */
} SHAPING_PROTO_REQUEST;

typedef struct SHAPING_PROTO_BUCKET {
    const char *bucket;
    const char *rule;
    long long max_connections;
    long long connections;
    const char *message_rate;
    long long message_tokens;
    const char *connection_rate;
    long long connection_tokens;
    long long suspended;
    long long queued;
    const char *automation;
} SHAPING_PROTO_BUCKET;

typedef struct SHAPING_PROTO_REPLY {
    int status;
    const char *reason; /* NULL: none */
    const char *refused; /* NULL: qmgr runs with the rules file it read */
    const char *redis; /* shared limits: the server and its state; NULL:
                          node-local */
} SHAPING_PROTO_REPLY;

/* Readers (*_take) return 0, or -1 with why; strings are borrowed from
   the list. Writers (*_list) return a new list. */
extern int shaping_proto_hello_take(const ATTR_LIST *list, VSTR *why);
extern ATTR_LIST *shaping_proto_hello_list(void);
extern int shaping_proto_request_take(const ATTR_LIST *list,
                                      SHAPING_PROTO_REQUEST *req, VSTR *why);
extern ATTR_LIST *shaping_proto_request_list(const SHAPING_PROTO_REQUEST *req);
/* shaping_proto_is_bucket - a BUCKET list (else it should be the REPLY) */
extern bool shaping_proto_is_bucket(const ATTR_LIST *list);
extern int shaping_proto_bucket_take(const ATTR_LIST *list,
                                     SHAPING_PROTO_BUCKET *bucket, VSTR *why);
extern ATTR_LIST *shaping_proto_bucket_list(const SHAPING_PROTO_BUCKET *bucket);
extern int shaping_proto_reply_take(const ATTR_LIST *list,
                                    SHAPING_PROTO_REPLY *reply, VSTR *why);
extern ATTR_LIST *shaping_proto_reply_list(const SHAPING_PROTO_REPLY *reply);
/* shaping_proto_name_ok - a domain or provider:NAME (lowercase or not) */
extern bool shaping_proto_name_ok(const char *name);

#endif
