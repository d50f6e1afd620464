/*
 * pool_proto - the protocol between `sluice pool` and qmgr, and the text
 * both use to show the state of sources
 *
 * qmgr listens on queue_directory/private/qmgr-pool (POOL_PROTO_SERVICE,
 * mode 0600, made by qmgr itself). A connection carries any number of
 * requests, each answered by one REPLY before the next is read:
 *
 *   qmgr -> sluice  HELLO    at once on accept (global/proto_hello.h)
 *   sluice -> qmgr  HELLO    first, before any REQUEST
 *   sluice -> qmgr  REQUEST  (pool_proto_request_spec)
 *   qmgr -> sluice  REPLY    (pool_proto_reply_spec); for "list" its
 *                            "state" is the text below
 *
 * Requests: "list"; "pause" NAME (the operator's pause of a source
 * address: no expiry); "resume" NAME (ends a manual or automatic pause or
 * a probe); "feedback" NAME KIND (a late bounce, KIND "bounce", or a
 * complaint, KIND "complaint", about a message sent from NAME, which is
 * SOURCE or SOURCE/PROVIDER: the entry point for asynchronous feedback,
 * global/reputation.h).
 *
 * The state text (pool_state_format, pool_state_find): one line per
 * reputation key and per source address with a warm-up rule,
 *
 *   KEY STATE UNTIL ATTEMPTS HARD BLOCK DAY CAP SENT
 *
 * KEY a source address or SOURCE/PROVIDER, STATE active, paused, probing
 * or manual, UNTIL the end of a pause (seconds since the epoch, 0: none),
 * then the reputation window's counts, the warm-up day (-1: no schedule),
 * today's cap (-1: none) and the messages sent today.
 */
#ifndef POOL_PROTO_H
#define POOL_PROTO_H

#include "attr.h"
#include "proto_hello.h"
#include "reputation.h"
#include "source_pool.h"
#include "vstr.h"
#include "warmup.h"

#define POOL_PROTO_SERVICE "qmgr-pool" /* private/qmgr-pool */
#define POOL_PROTO_LIST_MAX (1024 * 1024) /* largest list either side sends */
#define POOL_PROTO_NAME "qmgr_pool" /* HELLO protocol= */
#define POOL_PROTO_VERSION 1 /* HELLO version=: bump on any change */

#define POOL_PROTO_REQ_LIST "list"
#define POOL_PROTO_REQ_PAUSE "pause"
#define POOL_PROTO_REQ_RESUME "resume"
#define POOL_PROTO_REQ_FEEDBACK "feedback"
#define POOL_PROTO_KIND_BOUNCE "bounce"
#define POOL_PROTO_KIND_COMPLAINT "complaint"

#define POOL_PROTO_STAT_OK 0
#define POOL_PROTO_STAT_FAIL 1 /* see reason */

#define POOL_PROTO_ATTR_REQUEST PROTO_HELLO_ATTR_REQUEST
#define POOL_PROTO_ATTR_NAME "name"
#define POOL_PROTO_ATTR_KIND "kind"
#define POOL_PROTO_ATTR_STATUS "status"
#define POOL_PROTO_ATTR_REASON "reason"
#define POOL_PROTO_ATTR_STATE "state"

static const ATTR_SPEC pool_proto_hello_spec[] = {
    {POOL_PROTO_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {PROTO_HELLO_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"qmgr_pool\""},
    {PROTO_HELLO_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "POOL_PROTO_VERSION of the sender"},
};

static const ATTR_SPEC pool_proto_request_spec[] = {
    {POOL_PROTO_ATTR_REQUEST, ATTR_TYPE_STR, true, false,
     "list | pause | resume | feedback"},
    {POOL_PROTO_ATTR_NAME, ATTR_TYPE_STR, false, false,
     "pause, resume: a source address; feedback: SOURCE or SOURCE/PROVIDER"},
    {POOL_PROTO_ATTR_KIND, ATTR_TYPE_STR, false, false,
     "feedback: bounce | complaint"},
};

static const ATTR_SPEC pool_proto_reply_spec[] = {
    {POOL_PROTO_ATTR_STATUS, ATTR_TYPE_INT, true, false, "0 ok, 1 failed"},
    {POOL_PROTO_ATTR_REASON, ATTR_TYPE_STR, false, false, "why it failed"},
    {POOL_PROTO_ATTR_STATE, ATTR_TYPE_STR, false, false,
     "list: the state text (pool_state_format)"},
};

typedef struct POOL_PROTO_REQUEST {
    const char *request; /* POOL_PROTO_REQ_* */
    const char *name; /* NULL for list */
    const char *kind; /* feedback only */
} POOL_PROTO_REQUEST;

typedef struct POOL_PROTO_REPLY {
    int status;
    const char *reason; /* NULL: none */
    const char *state; /* list: the state text; NULL: none */
} POOL_PROTO_REPLY;

/* Readers (*_take) return 0, or -1 with why; strings are borrowed from
   the list. Writers (*_list) return a new list. */
extern int pool_proto_hello_take(const ATTR_LIST *list, VSTR *why);
extern ATTR_LIST *pool_proto_hello_list(void);
extern int pool_proto_request_take(const ATTR_LIST *list,
                                   POOL_PROTO_REQUEST *req, VSTR *why);
extern ATTR_LIST *pool_proto_request_list(const POOL_PROTO_REQUEST *req);
extern int pool_proto_reply_take(const ATTR_LIST *list, POOL_PROTO_REPLY *reply,
                                 VSTR *why);
extern ATTR_LIST *pool_proto_reply_list(const POOL_PROTO_REPLY *reply);

/* One line of the state text. */
typedef struct POOL_STATE_LINE {
    char key[REPUTATION_KEY_MAX + 1];
    char state[16];
    long long until;
    long long attempts;
    long long hard;
    long long block;
    long long day;
    long long cap;
    long long sent;
} POOL_STATE_LINE;

/* pool_state_format - the state text of every reputation key rep holds
   and of every source of pools (may be NULL) at now */
extern void pool_state_format(VSTR *out, REPUTATION *rep, WARMUP *w,
                              const SOURCE_POOLS *pools, long long now);
/* pool_state_find - the line of key in text (state "active", nothing
   counted, no warm-up when it is not there); false: not there */
extern bool pool_state_find(const char *text, const char *key,
                            POOL_STATE_LINE *line);

#endif
