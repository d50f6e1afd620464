/*
 * qmgr_source - which source IP a delivery leaves from
 *
 * smtp_source_pools (global/source_pool.h) is read once at start; a
 * malformed table is fatal (master restarts qmgr with a back-off, and
 * `sluice check` names the line): sending marketing mail from the
 * transactional addresses because a table had a typo would be worse than
 * waiting. Empty: no pools, no source is chosen, and smtp binds to
 * smtp_bind_address as before.
 *
 * A message's pool is its queue file's "pool" attribute (cleanup chose it
 * at commit); none, or a name that is not (or no longer) a pool, gives
 * default_source_pool (the name logged once per message when unknown).
 * Mail of local_transport has no source.
 *
 * Within the pool, each message gets one source per destination
 * (transport, next hop) by smooth weighted round robin, with one round
 * robin per (pool, destination): source_pool_wrr_next. Sources that are
 * not usable now are skipped; qmgr_source_usable is the one place that
 * says so -- today a source whose bind failed within
 * smtp_source_retry_time; warm-up caps and the reputation circuit breaker
 * go there too. A pool with no usable source: the recipient is deferred
 * ("pool NAME has no usable source"); it is never sent from another pool
 * (there is no spill-over rule yet).
 *
 * A source whose bind fails (the smtp agent says source_failed in DONE:
 * the address is not this machine's) is left out for
 * smtp_source_retry_time, logged, and what waited for it is queued again
 * through qmgr_dest_add, which picks another source of the pool.
 *
 * Destinations (qmgr_dest.c) are per source as well, and so are shaping
 * buckets (qmgr_shaping.c: "name@source"): limits are per provider x
 * source IP.
 */
#include "sys_defs.h"

#include <time.h>

#include "htable.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "source_pool.h"
#include "vstr.h"

#define QMGR_SOURCE_WRR_MAX 10000 /* round robins kept before a reset */

/* What qmgr knows of one source address. */
typedef struct QMGR_SOURCE {
    time_t unusable_until; /* bind failed: left out until then, 0: no */
    char *reason; /* of the last bind failure, NULL: none */
} QMGR_SOURCE;

/* One message's choice for one destination. */
struct QMGR_SOURCE_PICK {
    char *dest; /* "transport:nexthop" */
    long index; /* into its pool's sources */
};

/* qmgr_source_init - read smtp_source_pools and default_source_pool */
void qmgr_source_init(QMGR_CTX *ctx, const MAIL_CONF *mc)
{
    VSTR *why = vstr_alloc(100);
    const char *def = mail_conf_str(mc, "default_source_pool");

    ctx->conf.source_retry = mail_conf_time(mc, "smtp_source_retry_time");
    ctx->conf.pools = source_pools_load(
        "smtp_source_pools", mail_conf_str(mc, "smtp_source_pools"), why);
    if (ctx->conf.pools == NULL && vstr_len(why) > 0)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
    if (ctx->conf.pools == NULL)
        return;
    if (*def == 0)
        ctx->conf.default_pool = &ctx->conf.pools->pools[0];
    else if ((ctx->conf.default_pool =
                  source_pools_find(ctx->conf.pools, def)) == NULL)
        msg_fatal("default_source_pool = %s: no such pool in "
                  "smtp_source_pools",
                  def);
    ctx->source_table = htable_alloc(0);
    ctx->wrr_table = htable_alloc(0);
    msg_info("smtp_source_pools: %zu pool%s, default %s",
             ctx->conf.pools->count, ctx->conf.pools->count == 1 ? "" : "s",
             ctx->conf.default_pool->name);
}

/* qmgr_source_state - the state of an address, made if new */
static QMGR_SOURCE *qmgr_source_state(QMGR_CTX *ctx, const char *address)
{
    QMGR_SOURCE *state = htable_find(ctx->source_table, address);

    if (state == NULL) {
        state = mycalloc(1, sizeof(*state));
        htable_enter(ctx->source_table, address, state);
    }
    return state;
}

/* qmgr_source_usable - may this source be chosen now? The one place that
   decides: a bind failure within smtp_source_retry_time says no; warm-up
   caps and reputation pauses (#18 items 3-4) are asked here too. */
bool qmgr_source_usable(QMGR_CTX *ctx, const SOURCE_POOL *pool, size_t index)
{
    const SOURCE_POOL_SOURCE *source = &pool->sources[index];
    QMGR_SOURCE *state = htable_find(ctx->source_table, source->address);

    if (state != NULL && state->unusable_until != 0) {
        if (time(NULL) < state->unusable_until)
            return false;
        msg_info("source %s: usable again", source->address);
        state->unusable_until = 0;
    }
    return true;
}

/* qmgr_source_usable_fn - qmgr_source_usable for source_pool_wrr_next */
static bool qmgr_source_usable_fn(const SOURCE_POOL *pool, size_t index,
                                  void *arg)
{
    return qmgr_source_usable(arg, pool, index);
}

/* qmgr_source_pool - the pool of msg (looked up once) */
const SOURCE_POOL *qmgr_source_pool(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;
    const char *name;

    if (ctx->conf.pools == NULL)
        return NULL;
    if (msg->pool != NULL)
        return msg->pool;
    name = qfile_info_attr(msg->info, SOURCE_POOL_ATTR);
    if (name == NULL || *name == 0) {
        msg->pool = ctx->conf.default_pool;
    } else if ((msg->pool = source_pools_find(ctx->conf.pools, name)) == NULL) {
        msg_warn("%s: pool %s is not in smtp_source_pools: using the "
                 "default pool %s",
                 msg->qid, name, ctx->conf.default_pool->name);
        msg->pool = ctx->conf.default_pool;
    }
    return msg->pool;
}

/* qmgr_source_wrr_free - htable_free's callback */
static void qmgr_source_wrr_free(void *current)
{
    myfree(current);
}

/* qmgr_source_wrr - the round robin of (pool, destination) */
static long long *qmgr_source_wrr(QMGR_CTX *ctx, const SOURCE_POOL *pool,
                                  const char *dest)
{
    VSTR *key = vstr_alloc(100);
    long long *current;

    vstr_sprintf(key, "%s\n%s", pool->name, dest);
    if ((current = htable_find(ctx->wrr_table, vstr_str(key))) == NULL) {
        /* Bounded memory: forgetting every round robin only restarts
           them (the shares hold within each). */
        if (ctx->wrr_count >= QMGR_SOURCE_WRR_MAX) {
            htable_free(ctx->wrr_table, qmgr_source_wrr_free);
            ctx->wrr_table = htable_alloc(0);
            ctx->wrr_count = 0;
        }
        ctx->wrr_count++;
        current = mycalloc(pool->count, sizeof(*current));
        htable_enter(ctx->wrr_table, vstr_str(key), current);
    }
    vstr_free(key);
    return current;
}

/* qmgr_source_choose - the source of msg's recipients of (transport,
   nexthop): NULL with why empty when no source is chosen (no pools, local
   mail), NULL with why when the pool has no usable source */
const SOURCE_POOL_SOURCE *qmgr_source_choose(QMGR_MESSAGE *msg,
                                             const char *transport,
                                             const char *nexthop, VSTR *why)
{
    QMGR_CTX *ctx = msg->ctx;
    const SOURCE_POOL *pool;
    VSTR *dest;
    struct QMGR_SOURCE_PICK *pick = NULL;
    long index;

    vstr_reset(why);
    if (ctx->conf.pools == NULL ||
        strcmp(transport, ctx->conf.route.local_transport) == 0)
        return NULL;
    pool = qmgr_source_pool(msg);
    dest = vstr_alloc(100);
    vstr_sprintf(dest, "%s:%s", transport, nexthop);
    for (size_t i = 0; i < msg->pick_count; i++) {
        if (strcmp(msg->picks[i].dest, vstr_str(dest)) == 0) {
            pick = &msg->picks[i];
            break;
        }
    }
    /* One choice per message and destination, while it stays usable. */
    if (pick != NULL && qmgr_source_usable(ctx, pool, (size_t) pick->index)) {
        vstr_free(dest);
        return &pool->sources[pick->index];
    }
    index =
        source_pool_wrr_next(pool, qmgr_source_wrr(ctx, pool, vstr_str(dest)),
                             qmgr_source_usable_fn, ctx);
    if (index < 0) {
        vstr_sprintf(why, "pool %s has no usable source", pool->name);
        vstr_free(dest);
        return NULL;
    }
    if (pick == NULL) {
        msg->picks = myrealloc_array(msg->picks, msg->pick_count + 1,
                                     sizeof(*msg->picks));
        pick = &msg->picks[msg->pick_count++];
        pick->dest = vstr_export(dest);
    } else {
        vstr_free(dest);
    }
    pick->index = index;
    return &pool->sources[index];
}

/* qmgr_source_forget - release msg's choices */
void qmgr_source_forget(QMGR_MESSAGE *msg)
{
    for (size_t i = 0; i < msg->pick_count; i++)
        myfree(msg->picks[i].dest);
    msg->picks = myfree(msg->picks);
    msg->pick_count = 0;
}

/* qmgr_source_failed - address could not be bound: leave it out for
   smtp_source_retry_time and send what waits for it from another source */
void qmgr_source_failed(QMGR_CTX *ctx, const char *address, const char *reason)
{
    QMGR_SOURCE *state;

    if (ctx->source_table == NULL)
        return;
    state = qmgr_source_state(ctx, address);
    if (state->unusable_until == 0 || time(NULL) >= state->unusable_until)
        msg_warn("source %s: unusable for %llds: %s", address,
                 ctx->conf.source_retry, reason ? reason : "bind failed");
    state->unusable_until = time(NULL) + (time_t) ctx->conf.source_retry;
    myfree(state->reason);
    state->reason = mystrdup(reason ? reason : "bind failed");
    qmgr_dest_resource(ctx, address);
}

/* qmgr_source_status - "usable", or why not (for `sluice pool`) */
const char *qmgr_source_status(QMGR_CTX *ctx, const char *address,
                               long long *until)
{
    QMGR_SOURCE *state =
        ctx->source_table ? htable_find(ctx->source_table, address) : NULL;

    *until = 0;
    if (state == NULL || state->unusable_until == 0 ||
        time(NULL) >= state->unusable_until)
        return "usable";
    *until = (long long) state->unusable_until;
    return state->reason;
}
