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
 * (transport, next hop) and provider (its shaping bucket's, known before
 * the source: qmgr_shaping_provider) by smooth weighted round robin, with
 * one round robin per (pool, destination): source_pool_wrr_next. A
 * message with recipients at providers P and Q on one next hop so has a
 * choice for each, and each is counted against its own provider's
 * warm-up cap; the message counts once in a source's daily total when
 * both choices fell on it (qmgr_source_shared). Deliveries were split per
 * provider already (a destination is per shaping bucket); what this adds
 * is that the Q recipients may leave from another source than the P ones
 * (another connection, the body sent once more). Sources that are
 * not usable now are skipped; qmgr_source_usable is the one place that
 * says so: a source whose bind failed within smtp_source_retry_time, a
 * source the reputation circuit breaker paused (global/reputation.h; a
 * probing one when its probe token is there), a source at its warm-up
 * cap of the day (global/warmup.h). qmgr_dest_add asks with the
 * recipient's provider (qmgr_source_provider_ok: the SOURCE/PROVIDER key,
 * the provider's cap), and again if its bucket names another one;
 * the probe tokens and warm-up counts are taken when the choice is final
 * (qmgr_source_take). A pool with no usable source: the recipient is
 * deferred ("pool NAME has no usable source: ADDRESS paused for Ns more,
 * ..."); it is never sent from another pool (there is no spill-over rule
 * yet).
 *
 * Each recipient's result with a remote reply is recorded for the source
 * it was tried from (the agent's RESULT names it) and for SOURCE/PROVIDER
 * (qmgr_source_result); a pause is logged, saved at once in
 * data_directory/sources/reputation, and what waited for the source is
 * queued again (qmgr_dest_resource). A pause that would leave the
 * message's pool without a usable source is not taken (logged). A tick a
 * second ends pauses (probing); warm-up counts are saved every minute
 * and at exit. Late bounces and complaints enter through
 * qmgr_source_feedback (sluice pool feedback; nothing parses inbound DSNs
 * yet).
 *
 * With shaping_redis_server set (the shaping link, qmgr_redis.c), pauses
 * are shared by every node (keys: global/shaping_redis.h): each automatic
 * pause, operator's pause and resume taken here is published at once
 * (qmgr_source_publish), and every tick polls what is paused in Redis
 * (qmgr_source_poll): a pause another node took is taken here with the
 * same end (logged, saved, what waited for the source goes elsewhere);
 * a key that was paused in Redis at the last poll and is gone before its
 * pause ended was resumed elsewhere: resumed here too. A pause ends by
 * itself on every node at its end (Redis expires the key then) and each
 * node probes on its own; a repause is published again. While Redis is
 * away each node pauses on its own; a pause taken then is not published
 * later (the next one is).
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

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "deliver_proto.h"
#include "htable.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "reputation.h"
#include "shaping_redis.h"
#include "source_pool.h"
#include "vstr.h"
#include "warmup.h"

#define QMGR_SOURCE_WRR_MAX 10000 /* round robins kept before a reset */

/* What qmgr knows of one source address. */
typedef struct QMGR_SOURCE {
    time_t unusable_until; /* bind failed: left out until then, 0: no */
    char *reason; /* of the last bind failure, NULL: none */
} QMGR_SOURCE;

/* One message's choice for one destination and provider. */
struct QMGR_SOURCE_PICK {
    char *dest; /* "transport:nexthop" */
    char *provider; /* "": none */
    long index; /* into its pool's sources */
};

#define QMGR_SOURCE_TICK 1 /* seconds between ticks: pauses end */
#define QMGR_SOURCE_WARMUP_SAVE 60 /* seconds between warm-up saves */

static void qmgr_source_tick(evutil_socket_t fd, short what, void *arg);

/* qmgr_source_reputation_init - the circuit breaker and the warm-up
   counts, with their state files under data_directory */
static void qmgr_source_reputation_init(QMGR_CTX *ctx, const MAIL_CONF *mc)
{
    const char *data_dir = mail_conf_str(mc, "data_directory");
    REPUTATION_CONF rconf;
    WARMUP_CONF wconf;
    WARMUP_RULES *rules;
    VSTR *why = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    long long now = (long long) time(NULL);
    struct timeval tick = {QMGR_SOURCE_TICK, 0};

    if (reputation_conf_parse(&rconf, mail_conf_str(mc, "reputation_window"),
                              mail_conf_int(mc, "reputation_min_attempts"),
                              mail_conf_str(mc, "reputation_hard_bounce_ratio"),
                              mail_conf_str(mc, "reputation_block_ratio"),
                              mail_conf_str(mc, "reputation_pause_time"),
                              mail_conf_str(mc, "reputation_probe_rate"),
                              mail_conf_int(mc, "reputation_probe_attempts"),
                              why) < 0)
        msg_fatal("%s", vstr_str(why));
    rules =
        warmup_rules_load("smtp_source_warmup_maps",
                          mail_conf_str(mc, "smtp_source_warmup_maps"), why);
    if (rules == NULL && vstr_len(why) > 0)
        msg_fatal("%s", vstr_str(why));
    wconf.hard_ratio = rconf.hard_ratio;
    wconf.block_ratio = rconf.block_ratio;
    ctx->reputation = reputation_alloc(&rconf);
    ctx->warmup = warmup_alloc(&wconf, rules);
    vstr_sprintf(path, "%s/sources/reputation", data_dir);
    ctx->reputation_path = mystrdup(vstr_str(path));
    vstr_sprintf(path, "%s/sources/warmup", data_dir);
    ctx->warmup_path = mystrdup(vstr_str(path));
    /* A state file that cannot be read: start clean, say so loudly. */
    if (reputation_load(ctx->reputation, ctx->reputation_path, now, why) < 0)
        msg_warn("%s: starting without the saved pauses", vstr_str(why));
    if (warmup_load(ctx->warmup, ctx->warmup_path, why) < 0)
        msg_warn("%s: starting without the saved warm-up counts",
                 vstr_str(why));
    for (size_t i = 0; i < ctx->conf.pools->count; i++) {
        const SOURCE_POOL *pool = &ctx->conf.pools->pools[i];

        for (size_t j = 0; j < pool->count; j++) {
            long long until;
            REPUTATION_STATE state = reputation_state(
                ctx->reputation, pool->sources[j].address, &until);

            if (state != REPUTATION_ACTIVE)
                msg_info("source %s: %s%s (saved state)",
                         pool->sources[j].address, reputation_state_name(state),
                         state == REPUTATION_PAUSED ? " until its pause ends"
                                                    : "");
        }
    }
    ctx->warmup_saved = time(NULL);
    ctx->source_tick_ev =
        event_new(ctx->base, -1, EV_PERSIST, qmgr_source_tick, ctx);
    if (ctx->source_tick_ev == NULL ||
        event_add(ctx->source_tick_ev, &tick) < 0)
        msg_fatal("cannot create the source tick event");
    vstr_free(why);
    vstr_free(path);
}

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
    qmgr_source_reputation_init(ctx, mc);
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

/* qmgr_source_bound - false while a bind failure leaves address out */
static bool qmgr_source_bound(QMGR_CTX *ctx, const char *address)
{
    QMGR_SOURCE *state = htable_find(ctx->source_table, address);

    if (state != NULL && state->unusable_until != 0) {
        if (time(NULL) < state->unusable_until)
            return false;
        msg_info("source %s: usable again", address);
        state->unusable_until = 0;
    }
    return true;
}

/* qmgr_source_paused - is address paused (automatically or by hand)? A
   probing source is not: it sends at its trickle. */
static bool qmgr_source_paused(QMGR_CTX *ctx, const char *address)
{
    REPUTATION_STATE state = reputation_state(ctx->reputation, address, NULL);

    return state == REPUTATION_PAUSED || state == REPUTATION_MANUAL;
}

/* qmgr_source_usable - may this source be chosen now? The one place that
   decides: a bind failure within smtp_source_retry_time says no; so do a
   reputation pause (a probing source only when its probe token is
   there) and a warm-up cap reached today. Nothing is taken here:
   qmgr_source_choose takes the probe token and counts the message. */
bool qmgr_source_usable(QMGR_CTX *ctx, const SOURCE_POOL *pool, size_t index)
{
    const char *address = pool->sources[index].address;
    long long now = (long long) time(NULL);

    if (!qmgr_source_bound(ctx, address))
        return false;
    if (!reputation_usable(ctx->reputation, address, now, NULL))
        return false;
    if (warmup_over_cap(ctx->warmup, address, NULL, now))
        return false;
    return true;
}

/* qmgr_source_kept - may a message keep the source it already has for a
   destination? Its warm-up count and probe token were taken when it was
   chosen: only a bind failure or a pause since then say no. */
static bool qmgr_source_kept(QMGR_CTX *ctx, const SOURCE_POOL *pool,
                             size_t index)
{
    const char *address = pool->sources[index].address;

    return qmgr_source_bound(ctx, address) && !qmgr_source_paused(ctx, address);
}

/* qmgr_source_provider_ok - may address go to provider? (see qmgr.h) */
bool qmgr_source_provider_ok(QMGR_CTX *ctx, const char *address,
                             const char *provider, bool fresh)
{
    long long now = (long long) time(NULL);
    REPUTATION_STATE state;
    VSTR *key;
    bool ok;

    if (provider == NULL || *provider == 0 || ctx->reputation == NULL)
        return true;
    key = vstr_alloc(100);
    reputation_key(key, address, provider);
    if (fresh) {
        ok = reputation_usable(ctx->reputation, vstr_str(key), now, NULL) &&
             !warmup_over_cap(ctx->warmup, address, provider, now);
    } else {
        state = reputation_state(ctx->reputation, vstr_str(key), NULL);
        ok = state != REPUTATION_PAUSED && state != REPUTATION_MANUAL;
    }
    vstr_free(key);
    return ok;
}

/* qmgr_source_why_not - why no source of pool is usable, for the
   deferral: each source with its pause or cap */
static void qmgr_source_why_not(QMGR_CTX *ctx, const SOURCE_POOL *pool,
                                const char *provider, VSTR *why)
{
    long long now = (long long) time(NULL);
    const char *sep = ": ";
    VSTR *key = vstr_alloc(100);

    vstr_sprintf(why, "pool %s has no usable source", pool->name);
    for (size_t i = 0; i < pool->count; i++) {
        const char *address = pool->sources[i].address;
        long long until = 0;
        REPUTATION_STATE state;

        if (pool->sources[i].weight == 0)
            continue;
        state = reputation_state(ctx->reputation, address, &until);
        if (!qmgr_source_bound(ctx, address))
            vstr_sprintf_append(why, "%s%s bind failed", sep, address);
        else if (state == REPUTATION_PAUSED)
            vstr_sprintf_append(why, "%s%s paused for %llds more", sep, address,
                                until > now ? until - now : 0);
        else if (state == REPUTATION_MANUAL)
            vstr_sprintf_append(why, "%s%s paused by the operator", sep,
                                address);
        else if (state == REPUTATION_PROBING)
            vstr_sprintf_append(why, "%s%s probing (one message at a time)",
                                sep, address);
        else if (warmup_over_cap(ctx->warmup, address, NULL, now))
            vstr_sprintf_append(
                why, "%s%s reached its warm-up cap of %lld today", sep, address,
                warmup_cap(ctx->warmup, address, NULL, now));
        else if (provider != NULL &&
                 warmup_over_cap(ctx->warmup, address, provider, now))
            vstr_sprintf_append(
                why, "%s%s reached its warm-up cap of %lld today for %s", sep,
                address, warmup_cap(ctx->warmup, address, provider, now),
                provider);
        else if (provider != NULL &&
                 !qmgr_source_provider_ok(ctx, address, provider, true))
            vstr_sprintf_append(why, "%s%s %s", sep,
                                reputation_key(key, address, provider),
                                reputation_state(ctx->reputation, vstr_str(key),
                                                 NULL) == REPUTATION_PROBING
                                    ? "probing (one message at a time)"
                                    : "paused");
        else
            continue;
        sep = ", ";
    }
    vstr_free(key);
}

/* What qmgr_source_usable_fn is asked about. */
typedef struct QMGR_SOURCE_ASK {
    QMGR_CTX *ctx;
    const char *provider; /* NULL: any */
} QMGR_SOURCE_ASK;

/* qmgr_source_usable_fn - qmgr_source_usable (and, with a provider,
   qmgr_source_provider_ok) for source_pool_wrr_next */
static bool qmgr_source_usable_fn(const SOURCE_POOL *pool, size_t index,
                                  void *arg)
{
    QMGR_SOURCE_ASK *ask = arg;

    return qmgr_source_usable(ask->ctx, pool, index) &&
           qmgr_source_provider_ok(ask->ctx, pool->sources[index].address,
                                   ask->provider, true);
}

/* qmgr_source_take - a fresh choice: probe tokens, warm-up counts (the
   message in the source's daily total only when count_message) */
void qmgr_source_take(QMGR_CTX *ctx, const char *address, const char *provider,
                      bool count_message)
{
    long long now = (long long) time(NULL);

    if (ctx->reputation == NULL)
        return;
    reputation_started(ctx->reputation, address, now);
    if (provider != NULL && *provider != 0) {
        VSTR *key = vstr_alloc(100);

        reputation_started(ctx->reputation,
                           reputation_key(key, address, provider), now);
        vstr_free(key);
    }
    if (count_message)
        warmup_count(ctx->warmup, address, provider, now);
    else
        warmup_count_provider(ctx->warmup, address, provider, now);
}

/* qmgr_source_find_pick - msg's choice for dest and provider, or NULL */
static struct QMGR_SOURCE_PICK *qmgr_source_find_pick(QMGR_MESSAGE *msg,
                                                      const char *dest,
                                                      const char *provider)
{
    for (size_t i = 0; i < msg->pick_count; i++)
        if (strcmp(msg->picks[i].dest, dest) == 0 &&
            strcmp(msg->picks[i].provider, provider ? provider : "") == 0)
            return &msg->picks[i];
    return NULL;
}

/* qmgr_source_shared - another provider's choice, same source? */
bool qmgr_source_shared(QMGR_MESSAGE *msg, const char *transport,
                        const char *nexthop, const char *provider,
                        const char *address)
{
    const SOURCE_POOL *pool = qmgr_source_pool(msg);
    VSTR *dest;
    bool shared = false;

    if (pool == NULL)
        return false;
    dest = vstr_alloc(100);
    vstr_sprintf(dest, "%s:%s", transport, nexthop);
    for (size_t i = 0; i < msg->pick_count && !shared; i++)
        shared =
            strcmp(msg->picks[i].dest, vstr_str(dest)) == 0 &&
            strcmp(msg->picks[i].provider, provider ? provider : "") != 0 &&
            strcmp(pool->sources[msg->picks[i].index].address, address) == 0;
    vstr_free(dest);
    return shared;
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
                                             const char *nexthop,
                                             const char *provider, bool *fresh,
                                             VSTR *why)
{
    QMGR_CTX *ctx = msg->ctx;
    QMGR_SOURCE_ASK ask = {ctx, provider};
    const SOURCE_POOL *pool;
    VSTR *dest;
    struct QMGR_SOURCE_PICK *pick = NULL;
    long index;

    vstr_reset(why);
    *fresh = false;
    if (ctx->conf.pools == NULL ||
        strcmp(transport, ctx->conf.route.local_transport) == 0)
        return NULL;
    pool = qmgr_source_pool(msg);
    dest = vstr_alloc(100);
    vstr_sprintf(dest, "%s:%s", transport, nexthop);
    pick = qmgr_source_find_pick(msg, vstr_str(dest), provider);
    /* One choice per message, destination and provider, while it stays
       usable: the recipients of another provider on the same next hop
       have their own (counted against their own provider's cap). */
    if (pick != NULL && qmgr_source_kept(ctx, pool, (size_t) pick->index) &&
        qmgr_source_provider_ok(ctx, pool->sources[pick->index].address,
                                provider, false)) {
        vstr_free(dest);
        return &pool->sources[pick->index];
    }
    index =
        source_pool_wrr_next(pool, qmgr_source_wrr(ctx, pool, vstr_str(dest)),
                             qmgr_source_usable_fn, &ask);
    if (index < 0) {
        qmgr_source_why_not(ctx, pool, provider, why);
        vstr_free(dest);
        return NULL;
    }
    *fresh = true;
    if (pick == NULL) {
        msg->picks = myrealloc_array(msg->picks, msg->pick_count + 1,
                                     sizeof(*msg->picks));
        pick = &msg->picks[msg->pick_count++];
        pick->dest = vstr_export(dest);
        pick->provider = mystrdup(provider ? provider : "");
    } else {
        vstr_free(dest);
    }
    pick->index = index;
    return &pool->sources[index];
}

/* qmgr_source_unpick - drop msg's choice for (transport, nexthop,
   provider) */
void qmgr_source_unpick(QMGR_MESSAGE *msg, const char *transport,
                        const char *nexthop, const char *provider)
{
    VSTR *dest = vstr_alloc(100);
    struct QMGR_SOURCE_PICK *pick;

    vstr_sprintf(dest, "%s:%s", transport, nexthop);
    if ((pick = qmgr_source_find_pick(msg, vstr_str(dest), provider)) != NULL) {
        myfree(pick->dest);
        myfree(pick->provider);
        *pick = msg->picks[--msg->pick_count];
    }
    vstr_free(dest);
}

/* qmgr_source_forget - release msg's choices */
void qmgr_source_forget(QMGR_MESSAGE *msg)
{
    for (size_t i = 0; i < msg->pick_count; i++) {
        myfree(msg->picks[i].dest);
        myfree(msg->picks[i].provider);
    }
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
    qmgr_dest_resource(ctx, address, NULL);
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

/* qmgr_source_save - write the reputation state when it changed (a
   failure is logged: the pauses then live in memory only) */
static void qmgr_source_save(QMGR_CTX *ctx)
{
    VSTR *why;

    if (ctx->reputation == NULL || !reputation_dirty(ctx->reputation))
        return;
    why = vstr_alloc(100);
    /* Tried again each tick while it fails (data_directory/sources must
       belong to the mail owner: sluice init makes it); logged once a
       minute. */
    if (reputation_save(ctx->reputation, ctx->reputation_path, why) < 0 &&
        time(NULL) - ctx->save_warned >= QMGR_SOURCE_WARMUP_SAVE) {
        msg_warn("%s: pauses are not kept across a restart", vstr_str(why));
        ctx->save_warned = time(NULL);
    }
    vstr_free(why);
}

/* qmgr_source_warmup_save - write the warm-up counts when they changed */
static void qmgr_source_warmup_save(QMGR_CTX *ctx)
{
    VSTR *why;

    if (ctx->warmup == NULL || !warmup_dirty(ctx->warmup))
        return;
    why = vstr_alloc(100);
    if (warmup_save(ctx->warmup, ctx->warmup_path, why) < 0)
        msg_warn("%s", vstr_str(why));
    vstr_free(why);
    ctx->warmup_saved = time(NULL);
}

/* qmgr_source_pool_of - the first pool that has address, NULL: none */
static const SOURCE_POOL *qmgr_source_pool_of(QMGR_CTX *ctx,
                                              const char *address)
{
    for (size_t i = 0; ctx->conf.pools && i < ctx->conf.pools->count; i++)
        for (size_t j = 0; j < ctx->conf.pools->pools[i].count; j++)
            if (strcmp(ctx->conf.pools->pools[i].sources[j].address, address) ==
                0)
                return &ctx->conf.pools->pools[i];
    return NULL;
}

/* qmgr_source_last - would pausing address (provider not NULL: its
   SOURCE/PROVIDER key) leave pool without a usable source (for that
   provider)? Another source of weight above 0 that is bound, not paused
   and under its cap keeps it going -- for a provider, one whose own key
   for that provider is not paused and under that provider's cap too. */
static bool qmgr_source_last(QMGR_CTX *ctx, const SOURCE_POOL *pool,
                             const char *address, const char *provider)
{
    long long now = (long long) time(NULL);

    if (pool == NULL)
        return false;
    if (provider != NULL && *provider == 0)
        provider = NULL;
    for (size_t i = 0; i < pool->count; i++) {
        const char *other = pool->sources[i].address;

        if (pool->sources[i].weight == 0 || strcmp(other, address) == 0)
            continue;
        if (!qmgr_source_bound(ctx, other) || qmgr_source_paused(ctx, other) ||
            warmup_over_cap(ctx->warmup, other, NULL, now))
            continue;
        if (provider != NULL &&
            (!qmgr_source_provider_ok(ctx, other, provider, false) ||
             warmup_over_cap(ctx->warmup, other, provider, now)))
            continue;
        return false;
    }
    return true;
}

/* qmgr_source_publish - tell the other nodes, through Redis, of key's
   pause (or, when it is not paused, that it has none) */
static void qmgr_source_publish(QMGR_CTX *ctx, const char *key)
{
    VSTR *value;
    VSTR *rkey;
    VSTR *px;
    VSTR *score;
    long long until = 0;
    long long now = (long long) time(NULL);
    const char *argv[9];

    if (!qmgr_redis_up(ctx->redis))
        return;
    value = vstr_alloc(64);
    rkey = vstr_alloc(64);
    px = vstr_alloc(20);
    score = vstr_alloc(20);
    ctx->source_gen++;
    argv[2] = "2";
    argv[3] = SHAPING_REDIS_SOURCE_INDEX;
    argv[4] = shaping_redis_source_key(rkey, key);
    argv[5] = key;
    argv[0] = "EVAL";
    if (reputation_shared_value(ctx->reputation, key, value)) {
        if (reputation_state(ctx->reputation, key, &until) == REPUTATION_PAUSED)
            vstr_sprintf(px, "%lld", (until > now ? until - now : 1) * 1000);
        else
            vstr_cpy(px, "0");
        vstr_sprintf(score, "%lld", until);
        argv[1] = shaping_redis_source_set_lua;
        argv[6] = vstr_str(value);
        argv[7] = vstr_str(px);
        argv[8] = vstr_str(score);
        (void) qmgr_redis_call(ctx->redis, "source pause", 9, argv, NULL, NULL);
    } else {
        argv[1] = shaping_redis_source_del_lua;
        (void) qmgr_redis_call(ctx->redis, "source resume", 6, argv, NULL,
                               NULL);
        if (ctx->source_shared != NULL)
            (void) htable_delete(ctx->source_shared, key);
    }
    vstr_free(value);
    vstr_free(rkey);
    vstr_free(px);
    vstr_free(score);
}

/* qmgr_source_key_split - a reputation key's address and provider (NULL:
   none) into address and provider, which the caller frees */
static void qmgr_source_key_split(const char *key, char **address,
                                  char **provider)
{
    const char *slash = strchr(key, '/');

    *address = slash ? mystrndup(key, (size_t) (slash - key)) : mystrdup(key);
    *provider = slash ? mystrdup(slash + 1) : NULL;
}

/* qmgr_source_polled - what Redis says is paused: take the pauses of
   other nodes, resume what was resumed elsewhere */
static void qmgr_source_polled(QMGR_CTX *ctx, const struct redisReply *r,
                               void *arg)
{
    const redisReply *reply = (const redisReply *) r;
    unsigned long gen = (unsigned long) (uintptr_t) arg;
    long long now = (long long) time(NULL);
    struct HTABLE *seen;
    HTABLE_ITER iter;
    const char *key;
    void *value;
    VSTR *why;
    bool resumed = false;

    ctx->source_poll_out = false;
    /* A pause or resume published after the poll was sent: stale. */
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements % 2 != 0 || gen != ctx->source_gen)
        return;
    seen = htable_alloc(0);
    why = vstr_alloc(100);
    for (size_t i = 0; i < reply->elements; i += 2) {
        const redisReply *k = reply->element[i];
        const redisReply *v = reply->element[i + 1];
        char *address;
        char *provider;
        int changed;

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            strlen(k->str) != k->len || strlen(v->str) != v->len)
            continue;
        qmgr_source_key_split(k->str, &address, &provider);
        if (qmgr_source_pool_of(ctx, address) != NULL) {
            if (htable_find(seen, k->str) == NULL)
                htable_enter(seen, k->str, (void *) "shared");
            changed = reputation_apply_shared(ctx->reputation, k->str, v->str,
                                              now, why);
            if (changed < 0) {
                msg_warn("redis: shared pause ignored: %s", vstr_str(why));
            } else if (changed > 0) {
                msg_warn("source %s paused by another node (%s)", k->str,
                         v->str);
                qmgr_dest_resource(ctx, address, provider);
            }
        }
        myfree(address);
        myfree(provider);
    }
    /* Paused in Redis at the last poll, gone now before its end: another
       node resumed it. */
    if (ctx->source_shared != NULL) {
        htable_iter_init(&iter, ctx->source_shared);
        while (htable_iter_next(&iter, &key, &value)) {
            long long until = 0;
            REPUTATION_STATE state;

            if (htable_find(seen, key) != NULL)
                continue;
            state = reputation_state(ctx->reputation, key, &until);
            if (state == REPUTATION_MANUAL ||
                (state == REPUTATION_PAUSED && until > now + 1)) {
                reputation_resume(ctx->reputation, key, now);
                msg_info("source %s resumed by another node", key);
                resumed = true;
            }
        }
        htable_free(ctx->source_shared, NULL);
    }
    ctx->source_shared = seen;
    vstr_free(why);
    qmgr_source_save(ctx);
    if (resumed)
        qmgr_dest_schedule(ctx);
}

/* qmgr_source_poll - ask Redis what is paused (one poll at a time) */
static void qmgr_source_poll(QMGR_CTX *ctx)
{
    const char *argv[5] = {"EVAL", shaping_redis_source_poll_lua, "1",
                           SHAPING_REDIS_SOURCE_INDEX,
                           SHAPING_REDIS_SOURCE_PREFIX};

    if (ctx->source_poll_out || !qmgr_redis_up(ctx->redis))
        return;
    if (qmgr_redis_call(ctx->redis, "source poll", 5, argv, qmgr_source_polled,
                        (void *) (uintptr_t) ctx->source_gen))
        ctx->source_poll_out = true;
}

/* qmgr_source_publish_of - qmgr_source_publish of address (provider not
   NULL: of its SOURCE/PROVIDER key) */
static void qmgr_source_publish_of(QMGR_CTX *ctx, const char *address,
                                   const char *provider)
{
    VSTR *key = vstr_alloc(100);

    qmgr_source_publish(ctx, reputation_key(key, address, provider));
    vstr_free(key);
}

/* qmgr_source_verdict - log a verdict of the circuit breaker on address
   (provider not NULL: on its SOURCE/PROVIDER key) and act on it (a pause:
   what waits for the source, or for the source and that provider, goes
   to another one) */
static void qmgr_source_verdict(QMGR_CTX *ctx, const SOURCE_POOL *pool,
                                const char *address, const char *provider,
                                REPUTATION_VERDICT verdict, const char *text)
{
    switch (verdict) {
    case REPUTATION_NOTHING:
        return;
    case REPUTATION_HELD_LAST:
        if (provider != NULL)
            msg_warn("%s (would leave pool %s without a source for %s)", text,
                     pool ? pool->name : "?", provider);
        else
            msg_warn("%s (would leave pool %s empty)", text,
                     pool ? pool->name : "?");
        return;
    case REPUTATION_PAUSED_NOW:
    case REPUTATION_REPAUSED:
        msg_warn("%s", text);
        qmgr_source_save(ctx);
        qmgr_source_publish_of(ctx, address, provider);
        qmgr_dest_resource(ctx, address, provider);
        return;
    case REPUTATION_RESUMED:
        msg_info("%s", text);
        qmgr_source_save(ctx);
        qmgr_source_publish_of(ctx, address, provider);
        return;
    }
}

/* qmgr_source_outcome - what a recipient's result counts as: a remote
   answer only (a delivery sluice failed itself counts nothing) */
static REPUTATION_OUTCOME qmgr_source_outcome(const char *action,
                                              const char *diagnostic,
                                              const char *remote_mta)
{
    if (strcmp(action, DELIVER_ACTION_SENT) == 0)
        return remote_mta != NULL && *remote_mta ? REPUTATION_OK
                                                 : REPUTATION_NONE;
    return reputation_classify_diagnostic(diagnostic);
}

/* qmgr_source_record - one outcome for address and address/provider */
static void qmgr_source_record(QMGR_CTX *ctx, const SOURCE_POOL *pool,
                               const char *address, const char *provider,
                               REPUTATION_OUTCOME outcome, bool async,
                               long long when)
{
    long long now = (long long) time(NULL);
    bool last = qmgr_source_last(ctx, pool, address, NULL);
    VSTR *key = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    REPUTATION_VERDICT verdict;

    verdict = reputation_record(ctx->reputation, address, outcome, async, when,
                                now, last, why);
    qmgr_source_verdict(ctx, pool, address, NULL, verdict, vstr_str(why));
    if (provider != NULL && *provider != 0) {
        reputation_key(key, address, provider);
        vstr_reset(why);
        /* The last usable source for this provider is not paused for it
           either: its mail would wait with nowhere to go. */
        verdict = reputation_record(
            ctx->reputation, vstr_str(key), outcome, async, when, now,
            qmgr_source_last(ctx, pool, address, provider), why);
        qmgr_source_verdict(ctx, pool, address, provider, verdict,
                            vstr_str(why));
    }
    warmup_record(ctx->warmup, address, outcome, async, now);
    vstr_free(key);
    vstr_free(why);
}

/* qmgr_source_result - a recipient's result (see qmgr.h) */
void qmgr_source_result(QMGR_MESSAGE *msg, const char *source,
                        const char *provider, const char *action,
                        const char *dsn, const char *diagnostic,
                        const char *remote_mta)
{
    QMGR_CTX *ctx = msg->ctx;
    REPUTATION_OUTCOME outcome;

    (void) dsn;
    if (ctx->reputation == NULL || source == NULL || *source == 0)
        return;
    outcome = qmgr_source_outcome(action, diagnostic, remote_mta);
    if (outcome == REPUTATION_NONE)
        return;
    qmgr_source_record(ctx, qmgr_source_pool(msg), source, provider, outcome,
                       false, (long long) time(NULL));
}

/* qmgr_source_feedback - a late bounce or complaint (see qmgr.h). sluice
   does not parse inbound DSNs or feedback reports yet (#17, #22): this is
   where they will enter; `sluice pool feedback` reaches it today. */
int qmgr_source_feedback(QMGR_CTX *ctx, const char *source,
                         const char *provider, bool complaint, long long when,
                         VSTR *why)
{
    if (ctx->reputation == NULL || qmgr_source_pool_of(ctx, source) == NULL) {
        vstr_sprintf(why, "%s: not a source of smtp_source_pools", source);
        return -1;
    }
    msg_info("source %s%s%s: %s reported", source, provider ? "/" : "",
             provider ? provider : "",
             complaint ? "a complaint" : "a late bounce");
    qmgr_source_record(ctx, qmgr_source_pool_of(ctx, source), source, provider,
                       complaint ? REPUTATION_BLOCK : REPUTATION_HARD, true,
                       when);
    return 0;
}

/* qmgr_source_pause - the operator pauses address (no expiry) */
int qmgr_source_pause(QMGR_CTX *ctx, const char *address, VSTR *why)
{
    if (ctx->reputation == NULL || qmgr_source_pool_of(ctx, address) == NULL) {
        vstr_sprintf(why, "%s: not a source of smtp_source_pools", address);
        return -1;
    }
    reputation_pause(ctx->reputation, address, (long long) time(NULL));
    msg_warn("source %s paused by the operator (until sluice pool resume)",
             address);
    qmgr_source_save(ctx);
    qmgr_source_publish(ctx, address);
    qmgr_dest_resource(ctx, address, NULL);
    return 0;
}

/* qmgr_source_resume - the operator resumes address (ends any pause) */
int qmgr_source_resume(QMGR_CTX *ctx, const char *address, VSTR *why)
{
    if (ctx->reputation == NULL || qmgr_source_pool_of(ctx, address) == NULL) {
        vstr_sprintf(why, "%s: not a source of smtp_source_pools", address);
        return -1;
    }
    reputation_resume(ctx->reputation, address, (long long) time(NULL));
    msg_info("source %s resumed by the operator", address);
    qmgr_source_save(ctx);
    qmgr_source_publish(ctx, address);
    qmgr_dest_schedule(ctx);
    return 0;
}

/* qmgr_source_tick_change - reputation_tick's callback: log it */
static void qmgr_source_tick_change(void *arg, const char *key,
                                    REPUTATION_STATE from, REPUTATION_STATE to)
{
    (void) arg;
    msg_info("source %s: %s -> %s", key, reputation_state_name(from),
             reputation_state_name(to));
}

/* qmgr_source_tick - pauses that are over go probing; a paused source's
   day is not clean for warm-up; what changed is saved */
static void qmgr_source_tick(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;
    long long now = (long long) time(NULL);

    (void) fd;
    (void) what;
    if (reputation_tick(ctx->reputation, now, qmgr_source_tick_change, ctx) > 0)
        qmgr_dest_schedule(ctx);
    for (size_t i = 0; i < ctx->conf.pools->count; i++)
        for (size_t j = 0; j < ctx->conf.pools->pools[i].count; j++) {
            const char *address = ctx->conf.pools->pools[i].sources[j].address;

            if (reputation_state(ctx->reputation, address, NULL) !=
                REPUTATION_ACTIVE)
                warmup_paused(ctx->warmup, address, now);
        }
    qmgr_source_save(ctx);
    qmgr_source_poll(ctx);
    if (time(NULL) - ctx->warmup_saved >= QMGR_SOURCE_WARMUP_SAVE)
        qmgr_source_warmup_save(ctx);
}

/* qmgr_source_exit - save what is unsaved */
void qmgr_source_exit(QMGR_CTX *ctx)
{
    qmgr_source_save(ctx);
    qmgr_source_warmup_save(ctx);
}
