/*
 * pool_proto - the codec of the `sluice pool` <-> qmgr protocol, and the
 * state text of sources (global/pool_proto.h)
 *
 * Readers are strict: the list must pass its table and carry a known
 * request with the arguments it needs.
 */
#include "sys_defs.h"

#include <stdio.h>

#include "attr.h"
#include "htable.h"
#include "pool_proto.h"
#include "proto_hello.h"
#include "reputation.h"
#include "source_pool.h"
#include "vstr.h"
#include "warmup.h"

/* pool_proto_hello_take - the peer's HELLO */
int pool_proto_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, POOL_PROTO_NAME, POOL_PROTO_VERSION,
                            pool_proto_hello_spec,
                            SLUICE_ARRAY_LEN(pool_proto_hello_spec), why);
}

/* pool_proto_hello_list - our HELLO */
ATTR_LIST *pool_proto_hello_list(void)
{
    return proto_hello_list(POOL_PROTO_NAME, POOL_PROTO_VERSION);
}

/* pool_proto_request_take - a REQUEST list */
int pool_proto_request_take(const ATTR_LIST *list, POOL_PROTO_REQUEST *req,
                            VSTR *why)
{
    bool list_req, feedback;

    memset(req, 0, sizeof(*req));
    if (attr_list_check(list, pool_proto_request_spec,
                        SLUICE_ARRAY_LEN(pool_proto_request_spec), why) < 0)
        return -1;
    req->request = attr_get_str(list, POOL_PROTO_ATTR_REQUEST);
    req->name = attr_get_str(list, POOL_PROTO_ATTR_NAME);
    req->kind = attr_get_str(list, POOL_PROTO_ATTR_KIND);
    list_req = strcmp(req->request, POOL_PROTO_REQ_LIST) == 0;
    feedback = strcmp(req->request, POOL_PROTO_REQ_FEEDBACK) == 0;
    if (!list_req && !feedback &&
        strcmp(req->request, POOL_PROTO_REQ_PAUSE) != 0 &&
        strcmp(req->request, POOL_PROTO_REQ_RESUME) != 0) {
        vstr_sprintf(why, "unknown request \"%s\"", req->request);
        return -1;
    }
    if (list_req) {
        if (req->name != NULL || req->kind != NULL) {
            vstr_sprintf(why, "list takes no name and no kind");
            return -1;
        }
        return 0;
    }
    if (req->name == NULL || *req->name == 0 ||
        strlen(req->name) > REPUTATION_KEY_MAX ||
        strpbrk(req->name, " \t\r\n") != NULL) {
        vstr_sprintf(why, "%s: needs a source address", req->request);
        return -1;
    }
    if (feedback != (req->kind != NULL)) {
        vstr_sprintf(why, "%s: %s", req->request,
                     feedback ? "needs a kind" : "takes no kind");
        return -1;
    }
    if (feedback && strcmp(req->kind, POOL_PROTO_KIND_BOUNCE) != 0 &&
        strcmp(req->kind, POOL_PROTO_KIND_COMPLAINT) != 0) {
        vstr_sprintf(why, "feedback: kind \"%s\": not bounce or complaint",
                     req->kind);
        return -1;
    }
    return 0;
}

/* pool_proto_request_list - the REQUEST list of req */
ATTR_LIST *pool_proto_request_list(const POOL_PROTO_REQUEST *req)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, POOL_PROTO_ATTR_REQUEST, req->request);
    if (req->name)
        attr_add_str(list, POOL_PROTO_ATTR_NAME, req->name);
    if (req->kind)
        attr_add_str(list, POOL_PROTO_ATTR_KIND, req->kind);
    return list;
}

/* pool_proto_reply_take - the REPLY list */
int pool_proto_reply_take(const ATTR_LIST *list, POOL_PROTO_REPLY *reply,
                          VSTR *why)
{
    long long status;

    memset(reply, 0, sizeof(*reply));
    if (attr_list_check(list, pool_proto_reply_spec,
                        SLUICE_ARRAY_LEN(pool_proto_reply_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, POOL_PROTO_ATTR_STATUS, &status);
    if (status != POOL_PROTO_STAT_OK && status != POOL_PROTO_STAT_FAIL) {
        vstr_sprintf(why, "status %lld: not 0 or 1", status);
        return -1;
    }
    reply->status = (int) status;
    reply->reason = attr_get_str(list, POOL_PROTO_ATTR_REASON);
    reply->state = attr_get_str(list, POOL_PROTO_ATTR_STATE);
    return 0;
}

/* pool_proto_reply_list - the REPLY list of reply */
ATTR_LIST *pool_proto_reply_list(const POOL_PROTO_REPLY *reply)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_int(list, POOL_PROTO_ATTR_STATUS, reply->status);
    if (reply->reason)
        attr_add_str(list, POOL_PROTO_ATTR_REASON, reply->reason);
    if (reply->state)
        attr_add_str(list, POOL_PROTO_ATTR_STATE, reply->state);
    return list;
}

typedef struct POOL_STATE_CTX {
    VSTR *out;
    REPUTATION *rep;
    WARMUP *w;
    struct HTABLE *seen;
    long long now;
} POOL_STATE_CTX;

/* pool_state_line - the line of one key, once */
static void pool_state_line(POOL_STATE_CTX *sc, const char *key)
{
    long long until = 0, attempts = 0, hard = 0, block = 0;
    long long day = -1, cap = -1, sent = 0;
    REPUTATION_STATE state = REPUTATION_ACTIVE;

    if (htable_find(sc->seen, key) != NULL)
        return;
    htable_enter(sc->seen, key, sc);
    if (sc->rep != NULL) {
        state = reputation_state(sc->rep, key, &until);
        reputation_counts(sc->rep, key, sc->now, &attempts, &hard, &block);
    }
    if (sc->w != NULL && strchr(key, '/') == NULL) {
        day = warmup_day(sc->w, key, sc->now);
        cap = warmup_cap(sc->w, key, NULL, sc->now);
        sent = warmup_sent(sc->w, key, NULL, sc->now);
    }
    vstr_sprintf_append(sc->out, "%s %s %lld %lld %lld %lld %lld %lld %lld\n",
                        key, reputation_state_name(state),
                        state == REPUTATION_PAUSED ? until : 0, attempts, hard,
                        block, day, cap, sent);
}

/* pool_state_each - reputation_each's callback */
static void pool_state_each(void *ctx, const char *key, REPUTATION_STATE state,
                            long long until, long long attempts, long long hard,
                            long long block)
{
    (void) state;
    (void) until;
    (void) attempts;
    (void) hard;
    (void) block;
    pool_state_line(ctx, key);
}

/* pool_state_format - the state text (see the header) */
void pool_state_format(VSTR *out, REPUTATION *rep, WARMUP *w,
                       const SOURCE_POOLS *pools, long long now)
{
    POOL_STATE_CTX sc = {out, rep, w, htable_alloc(0), now};

    vstr_reset(out);
    for (size_t i = 0; pools != NULL && i < pools->count; i++)
        for (size_t j = 0; j < pools->pools[i].count; j++)
            pool_state_line(&sc, pools->pools[i].sources[j].address);
    if (rep != NULL)
        reputation_each(rep, now, pool_state_each, &sc);
    htable_free(sc.seen, NULL);
}

/* pool_state_find - the line of key in text */
bool pool_state_find(const char *text, const char *key, POOL_STATE_LINE *line)
{
    size_t key_len = strlen(key);

    memset(line, 0, sizeof(*line));
    snprintf(line->key, sizeof(line->key), "%s", key);
    snprintf(line->state, sizeof(line->state), "active");
    line->day = -1;
    line->cap = -1;
    for (const char *cp = text; cp != NULL && *cp;) {
        const char *end = strchr(cp, '\n');
        size_t len = end ? (size_t) (end - cp) : strlen(cp);

        if (len > key_len && strncmp(cp, key, key_len) == 0 &&
            cp[key_len] == ' ') {
            char state[16];

            if (sscanf(cp + key_len + 1,
                       "%15s %lld %lld %lld %lld %lld %lld %lld", state,
                       &line->until, &line->attempts, &line->hard, &line->block,
                       &line->day, &line->cap, &line->sent) == 8) {
                snprintf(line->state, sizeof(line->state), "%s", state);
                return true;
            }
        }
        cp = end ? end + 1 : NULL;
    }
    return false;
}
