/*
 * qmgr_shaping - traffic shaping buckets: which recipients share limits,
 * and when a held-back destination is woken
 *
 * smtp_shaping_maps (global/shaping.h) is read once, at start; a reload
 * starts a new qmgr, and master refuses a reload whose rules file is
 * malformed, so the rules of the running qmgr stay in force until a good
 * file is reloaded. A qmgr that starts on a malformed file all the same
 * (master restarts it after a crash or a kill, and the file was changed
 * meanwhile) logs why, with file and line, once, and runs without
 * shaping rules: mail keeps flowing, unshaped, rather than not at all.
 * `sluice shaping` shows the refusal (conf.shaping_refused).
 *
 * Response automation (smtp_shaping_automation_maps, global/
 * shaping_auto.h): qmgr_deliver.c hands every remote reply that did not
 * deliver (a result with a diagnostic: deferrals and bounces sluice makes
 * itself carry none) to qmgr_shaping_reply, which asks the pure functions
 * whether a rule matches and triggers, applies the action to the
 * delivery's bucket and logs it; what expires is logged when the bucket
 * is next looked at (qmgr_shaping_expire). A destination without any
 * shaping rule has no bucket, so automation acts on shaped destinations
 * only (a default rule shapes them all). A recipient of a transport other than
 * local_transport is shaped by its domain: the domain's own rule, else
 * the default (each domain then has its own bucket of that shape). Every
 * recipient of one bucket goes to destinations (qmgr_dest.c) that name
 * the bucket in their key, so one delivery never mixes buckets, and the
 * bucket holds the count of deliveries in flight and the GCRA states.
 *
 * Decisions are shaping.c's pure functions; this file keeps the buckets
 * (a util/htable by name), reads the clock (CLOCK_MONOTONIC,
 * microseconds) and keeps one timer: the earliest moment a bucket that
 * was held back by a rate has its next token, when qmgr_dest_schedule
 * runs again. A bucket at max_connections needs no timer: the end of a
 * delivery schedules. A held-back entry stays at the head of its queue:
 * no deferral, no attempt counted.
 *
 * With source pools (qmgr_source.c) a bucket is per source too:
 * "name@source", limits per provider x source IP; a suspension of name
 * (`sluice shaping suspend`) holds all of its sources' buckets.
 *
 * Which bucket: a domain's own rule first (no DNS). Else, when there are
 * provider rules and DNS lookups are on, the domain's MX hosts decide:
 * when every one of them ends in one of a provider's mx_suffix, the
 * domain shares the bucket "provider:NAME" with every other domain of
 * that provider; else the default rule applies to the domain alone. The
 * MX hosts are looked up here, asynchronously (global/dns.c, dns_servers),
 * and the answer is kept QMGR_SHAPING_MX_CACHE seconds (dns.c does not
 * pass the records' TTL on), a failed lookup QMGR_SHAPING_MX_RETRY seconds
 * (its domain gets the default meanwhile: a broken DNS never stops mail).
 * While the lookup runs, the domain's recipients wait in a bucket of
 * their own ("?domain") that never starts anything; the answer moves
 * them, in their order, to the right bucket.
 */
#include "sys_defs.h"

#include <time.h>

#include <event2/event.h>

#include "dns.h"
#include "htable.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "shaping.h"
#include "shaping_auto.h"
#include "shaping_redis.h"
#include "smtp_addr.h"
#include "vstr.h"

#define QMGR_SHAPING_MX_CACHE 3600 /* seconds an MX answer is kept */
#define QMGR_SHAPING_MX_RETRY 60 /* ... a failed lookup */
#define QMGR_SHAPING_USEC 1000000LL
#define QMGR_SHAPING_RESOLVING '?' /* bucket name prefix while looking up */

/* What the MX hosts of a domain say. */
typedef struct QMGR_SHAPING_MX {
    QMGR_CTX *ctx;
    char *domain;
    const SHAPING_RULE *provider; /* NULL: none (the default applies) */
    long long expires; /* monotonic usec */
    DNS_LOOKUP *lookup; /* running, NULL: the answer is in */
} QMGR_SHAPING_MX;

#define QMGR_SHAPING_GRANT_LIFE 1000000LL /* usec a grant may wait unused */

static void qmgr_shaping_expire(QMGR_SHAPE *shape, long long now);
static void qmgr_shaping_grants_drop(QMGR_SHAPE *shape);

/* qmgr_shaping_now - the monotonic clock in microseconds */
long long qmgr_shaping_now(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        msg_fatal("clock_gettime: %m");
    return (long long) ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* qmgr_shaping_init - read smtp_shaping_maps; a malformed (or unreadable)
   file is refused, logged and remembered, and qmgr runs without rules */
void qmgr_shaping_init(QMGR_CTX *ctx, const MAIL_CONF *mc)
{
    VSTR *why = vstr_alloc(100);
    const SHAPING_RULES *rules;

    ctx->conf.shaping = shaping_rules_load(
        "smtp_shaping_maps", mail_conf_str(mc, "smtp_shaping_maps"), why);
    if (ctx->conf.shaping == NULL && vstr_len(why) > 0) {
        msg_warn("%s; running without shaping rules", vstr_str(why));
        ctx->conf.shaping_refused = mystrdup(vstr_str(why));
    }
    ctx->conf.automation = shaping_auto_load(
        "smtp_shaping_automation_maps",
        mail_conf_str(mc, "smtp_shaping_automation_maps"), why);
    if (ctx->conf.automation == NULL && vstr_len(why) > 0) {
        msg_warn("%s; running without response automation", vstr_str(why));
        ctx->conf.automation_refused = mystrdup(vstr_str(why));
    } else if (ctx->conf.automation != NULL) {
        msg_info("smtp_shaping_automation_maps: %zu rule%s",
                 shaping_auto_count(ctx->conf.automation),
                 shaping_auto_count(ctx->conf.automation) == 1 ? "" : "s");
    }
    rules = ctx->conf.shaping;
    if (rules)
        msg_info("smtp_shaping_maps: %zu rule%s", shaping_rules_count(rules),
                 shaping_rules_count(rules) == 1 ? "" : "s");
    ctx->mx_timeout = (int) mail_conf_time(mc, "smtp_dns_timeout");
    if (shaping_rules_providers(rules) > 0) {
        if (mail_conf_bool(mc, "disable_dns_lookups"))
            msg_warn("smtp_shaping_maps: provider rules are not matched: "
                     "disable_dns_lookups = yes (their domains get their own "
                     "or the default rule)");
        else if ((ctx->dns = dns_ctx_create(ctx->base, mc, why)) == NULL)
            msg_warn("smtp_shaping_maps: provider rules are not matched: %s",
                     vstr_str(why));
    }
    /* Source pauses are shared through the same link (qmgr_source.c). */
    if (rules || *mail_conf_str(mc, "smtp_source_pools") != 0)
        ctx->redis = qmgr_redis_create(ctx, mc);
    vstr_free(why);
}

/* qmgr_shaping_bucket - the bucket called name, made if new */
static QMGR_SHAPE *qmgr_shaping_bucket(QMGR_CTX *ctx, const char *name,
                                       const SHAPING_RULE *rule, bool resolving)
{
    QMGR_SHAPE *shape;

    if (ctx->shape_table == NULL)
        ctx->shape_table = htable_alloc(0);
    if ((shape = htable_find(ctx->shape_table, name)) == NULL) {
        shape = mycalloc(1, sizeof(*shape));
        shape->name = mystrdup(name);
        shape->rule = rule;
        shape->resolving = resolving;
        if (ctx->redis != NULL && rule != NULL) {
            shape->redis = ctx->redis;
            shaping_redis_share(rule, qmgr_redis_nodes(ctx->redis),
                                &shape->share);
            shape->redis_leases = argv_alloc(1);
        }
        if (!htable_enter(ctx->shape_table, shape->name, shape))
            msg_panic("%s: %s: entered twice", __func__, shape->name);
    }
    return shape;
}

/* qmgr_shaping_mx_free - forget one MX answer (htable_free callback) */
static void qmgr_shaping_mx_free(void *arg)
{
    QMGR_SHAPING_MX *mx = arg;

    if (mx->lookup)
        dns_lookup_cancel(mx->lookup);
    myfree(mx->domain);
    myfree(mx);
}

/* qmgr_shaping_mx_done - the MX hosts of a domain are known (or not):
   its waiting recipients go to their bucket */
static void qmgr_shaping_mx_done(const DNS_REPLY *reply, void *arg)
{
    QMGR_SHAPING_MX *mx = arg;
    QMGR_CTX *ctx = mx->ctx;
    long long now = qmgr_shaping_now();
    VSTR *name = vstr_alloc(50);
    QMGR_SHAPE *waiting;

    mx->lookup = NULL;
    mx->provider = NULL;
    if (reply->status == DNS_OK) {
        const char **hosts = mymalloc_array(reply->count, sizeof(char *));

        for (size_t i = 0; i < reply->count; i++)
            hosts[i] = reply->addrs[i].host;
        mx->provider =
            shaping_rules_provider(ctx->conf.shaping, hosts, reply->count);
        myfree(hosts);
        mx->expires = now + QMGR_SHAPING_MX_CACHE * QMGR_SHAPING_USEC;
        msg_info("shaping: %s: %s (MX %s%s)", mx->domain,
                 mx->provider ? mx->provider->key : "no provider",
                 reply->count ? reply->addrs[0].host : "-",
                 reply->count > 1 ? ", ..." : "");
    } else {
        mx->expires =
            now + (reply->status == DNS_PERM ? QMGR_SHAPING_MX_CACHE
                                             : QMGR_SHAPING_MX_RETRY) *
                      QMGR_SHAPING_USEC;
        msg_info("shaping: %s: no provider (%s)", mx->domain,
                 vstr_str(reply->reason));
    }
    /* Move what waited, in order, to where it belongs now. */
    vstr_sprintf(name, "%c%s", QMGR_SHAPING_RESOLVING, mx->domain);
    if (ctx->shape_table &&
        (waiting = htable_find(ctx->shape_table, vstr_str(name))) != NULL) {
        waiting->resolving = false; /* the sweep may forget it */
        qmgr_dest_rebucket(ctx, waiting);
    }
    vstr_free(name);
    qmgr_dest_schedule(ctx);
}

/* qmgr_shaping_mx - what the MX hosts of domain (lowercase) say: the
   answer, or NULL while it is being looked up */
static QMGR_SHAPING_MX *qmgr_shaping_mx(QMGR_CTX *ctx, const char *domain)
{
    QMGR_SHAPING_MX *mx;
    long long now = qmgr_shaping_now();

    if (ctx->mx_cache == NULL)
        ctx->mx_cache = htable_alloc(0);
    if ((mx = htable_find(ctx->mx_cache, domain)) == NULL) {
        mx = mycalloc(1, sizeof(*mx));
        mx->ctx = ctx;
        mx->domain = mystrdup(domain);
        if (!htable_enter(ctx->mx_cache, domain, mx))
            msg_panic("%s: %s: entered twice", __func__, domain);
    } else if (mx->lookup == NULL && mx->expires > now) {
        return mx;
    }
    if (mx->lookup == NULL)
        mx->lookup = dns_lookup(ctx->dns, domain, true, ctx->mx_timeout,
                                qmgr_shaping_mx_done, mx);
    return NULL;
}

/* qmgr_shaping_find - the bucket of one recipient, made if new; NULL when
   it is not shaped (no rule applies and nobody suspended its domain) */
QMGR_SHAPE *qmgr_shaping_find(QMGR_CTX *ctx, const char *transport,
                              const char *address, const char *source)
{
    const char *domain = smtp_addr_domain(address);
    const SHAPING_RULE *rule;
    QMGR_SHAPING_MX *mx;
    QMGR_SHAPE *shape;
    VSTR *name;

    if (domain == NULL || *domain == 0 ||
        strcmp(transport, ctx->conf.route.local_transport) == 0)
        return NULL;
    /* No rules and nothing suspended: the common case costs nothing. */
    if (ctx->conf.shaping == NULL && ctx->shape_table == NULL)
        return NULL;
    name = vstr_lower(vstr_cpy(vstr_alloc(50), domain));
    if ((rule = shaping_rules_exact(ctx->conf.shaping, vstr_str(name))) ==
        NULL) {
        if (ctx->dns != NULL && *vstr_str(name) != '[') {
            if ((mx = qmgr_shaping_mx(ctx, vstr_str(name))) == NULL) {
                VSTR *waiting = vstr_alloc(50);

                vstr_sprintf(waiting, "%c%s", QMGR_SHAPING_RESOLVING,
                             vstr_str(name));
                shape = qmgr_shaping_bucket(ctx, vstr_str(waiting), NULL, true);
                vstr_free(waiting);
                vstr_free(name);
                return shape;
            }
            if ((rule = mx->provider) != NULL)
                vstr_cpy(name, rule->key);
        }
        if (rule == NULL)
            rule = shaping_rules_fallback(ctx->conf.shaping);
    }
    /* Limits are per provider (or domain) x source IP. */
    if (source != NULL && *source != 0)
        vstr_sprintf_append(name, "@%s", source);
    if (rule != NULL)
        shape = qmgr_shaping_bucket(ctx, vstr_str(name), rule, false);
    else if (ctx->shape_table != NULL)
        shape = htable_find(ctx->shape_table, vstr_str(name)); /* suspended */
    else
        shape = NULL;
    vstr_free(name);
    return shape;
}

/* qmgr_shaping_provider - a recipient's provider, no bucket made (see
   qmgr.h): the rule qmgr_shaping_find would pick */
const char *qmgr_shaping_provider(QMGR_CTX *ctx, const char *transport,
                                  const char *address)
{
    const char *domain = smtp_addr_domain(address);
    const SHAPING_RULE *rule;
    QMGR_SHAPING_MX *mx;
    VSTR *name;

    if (domain == NULL || *domain == 0 || ctx->conf.shaping == NULL ||
        strcmp(transport, ctx->conf.route.local_transport) == 0)
        return NULL;
    name = vstr_lower(vstr_cpy(vstr_alloc(50), domain));
    if ((rule = shaping_rules_exact(ctx->conf.shaping, vstr_str(name))) ==
        NULL) {
        if (ctx->dns != NULL && *vstr_str(name) != '[') {
            if ((mx = qmgr_shaping_mx(ctx, vstr_str(name))) == NULL) {
                vstr_free(name);
                return NULL;
            }
            rule = mx->provider;
        }
        if (rule == NULL)
            rule = shaping_rules_fallback(ctx->conf.shaping);
    }
    vstr_free(name);
    return qmgr_rule_provider(rule);
}

/* qmgr_shaping_rule_of - the rule a bucket called name (lowercase) has */
static const SHAPING_RULE *qmgr_shaping_rule_of(QMGR_CTX *ctx, const char *name)
{
    const SHAPING_RULES *rules = ctx->conf.shaping;

    if (strncmp(name, SHAPING_PROVIDER_PREFIX,
                strlen(SHAPING_PROVIDER_PREFIX)) != 0)
        return shaping_rules_domain(rules, name);
    for (size_t i = 0; i < shaping_rules_count(rules); i++)
        if (strcmp(shaping_rules_at(rules, i)->key, name) == 0)
            return shaping_rules_at(rules, i);
    return NULL;
}

/* qmgr_shaping_suspend - nothing of bucket name starts for seconds (0:
   resume now); -1 with why when there is no such provider */
int qmgr_shaping_suspend(QMGR_CTX *ctx, const char *name, long long seconds,
                         VSTR *why)
{
    VSTR *lower = vstr_lower(vstr_cpy(vstr_alloc(50), name));
    const SHAPING_RULE *rule = qmgr_shaping_rule_of(ctx, vstr_str(lower));
    QMGR_SHAPE *shape = NULL;

    if (rule == NULL && strncmp(vstr_str(lower), SHAPING_PROVIDER_PREFIX,
                                strlen(SHAPING_PROVIDER_PREFIX)) == 0) {
        vstr_sprintf(why, "%s: no such provider in smtp_shaping_maps", name);
        vstr_free(lower);
        return -1;
    }
    if (seconds > 0)
        shape = qmgr_shaping_bucket(ctx, vstr_str(lower), rule, false);
    else if (ctx->shape_table)
        shape = htable_find(ctx->shape_table, vstr_str(lower));
    if (seconds > 0) {
        shape->state.suspended_until =
            qmgr_shaping_now() + seconds * QMGR_SHAPING_USEC;
        shape->state.suspended_by = NULL;
        if (qmgr_redis_up(shape->redis))
            qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_SUSPEND,
                           "-", seconds * QMGR_SHAPING_USEC);
        msg_info("shaping: %s: suspended for %llds by the administrator",
                 shape->name, seconds);
    } else if (shape != NULL && (shape->state.suspended_until != 0 ||
                                 shape->state.auto_rate_by ||
                                 shape->state.auto_connections_by)) {
        /* Resume ends what automation set too. */
        shape->state.suspended_until = 0;
        shape->state.suspended_by = NULL;
        shape->state.auto_rate_until = 0;
        shape->state.auto_rate_by = NULL;
        shape->state.auto_connections_until = 0;
        shape->state.auto_connections_by = NULL;
        msg_info("shaping: %s: resumed by the administrator", shape->name);
    }
    if (seconds <= 0 && shape != NULL && qmgr_redis_up(shape->redis)) {
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_SUSPEND,
                       NULL, 0);
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_RATE, NULL,
                       0);
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_CONNMAX,
                       NULL, 0);
        /* and the TATs the lowered rates pushed ahead */
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_MSG, NULL,
                       0);
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_CONN, NULL,
                       0);
    }
    vstr_free(lower);
    qmgr_dest_schedule(ctx);
    return 0;
}

/* What a walk's callback says of a bucket. */
typedef enum QMGR_SHAPING_WALK {
    QMGR_SHAPING_KEEP,
    QMGR_SHAPING_FORGET, /* remove it from the table and free it */
} QMGR_SHAPING_WALK;

typedef QMGR_SHAPING_WALK (*QMGR_SHAPING_WALK_FN)(QMGR_CTX *ctx,
                                                  QMGR_SHAPE *shape,
                                                  long long now, void *arg);

/* qmgr_shaping_walk - call fn for every bucket (one clock reading for all);
   a bucket fn says to forget is removed and freed here */
static void qmgr_shaping_walk(QMGR_CTX *ctx, QMGR_SHAPING_WALK_FN fn, void *arg)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;
    long long now = qmgr_shaping_now();

    if (ctx->shape_table == NULL)
        return;
    htable_iter_init(&iter, ctx->shape_table);
    while (htable_iter_next(&iter, &key, &value)) {
        QMGR_SHAPE *shape = value;

        if (fn(ctx, shape, now, arg) == QMGR_SHAPING_FORGET) {
            htable_delete(ctx->shape_table, shape->name);
            shaping_auto_hits_free(shape->hits);
            if (shape->redis_leases)
                argv_free(shape->redis_leases);
            myfree(shape->name);
            myfree(shape);
        }
    }
}

/* What qmgr_shaping_each passes through the walk. */
typedef struct QMGR_SHAPING_EACH {
    QMGR_SHAPING_EACH_FN fn;
    void *arg;
} QMGR_SHAPING_EACH;

/* qmgr_shaping_each_one - count what one bucket has queued, report it */
static QMGR_SHAPING_WALK qmgr_shaping_each_one(QMGR_CTX *ctx, QMGR_SHAPE *shape,
                                               long long now, void *arg)
{
    QMGR_SHAPING_EACH *each = arg;
    size_t queued = 0;

    qmgr_shaping_expire(shape, now);
    for (QMGR_DEST *dest = ctx->dests; dest; dest = dest->next)
        if (dest->shape == shape)
            for (QMGR_ENTRY *entry = dest->head; entry; entry = entry->next)
                queued++;
    each->fn(shape, queued, now, each->arg);
    return QMGR_SHAPING_KEEP;
}

/* qmgr_shaping_each - call fn for every bucket, with what it has queued */
void qmgr_shaping_each(QMGR_CTX *ctx, QMGR_SHAPING_EACH_FN fn, void *arg)
{
    QMGR_SHAPING_EACH each = {fn, arg};

    qmgr_shaping_walk(ctx, qmgr_shaping_each_one, &each);
}

/* qmgr_shaping_wake_event - a token is due: schedule again */
static void qmgr_shaping_wake_event(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;

    ctx->shape_wake_at = 0;
    qmgr_dest_schedule(ctx);
}

/* qmgr_shaping_wake - run the scheduler again at now + wait (the earliest
   such moment wins) */
static void qmgr_shaping_wake(QMGR_CTX *ctx, long long now, long long wait)
{
    long long at = now + wait;
    struct timeval tv;

    if (ctx->shape_wake_at != 0 && ctx->shape_wake_at <= at)
        return;
    if (ctx->shape_ev == NULL &&
        (ctx->shape_ev =
             evtimer_new(ctx->base, qmgr_shaping_wake_event, ctx)) == NULL)
        msg_fatal("cannot create a timer");
    ctx->shape_wake_at = at;
    tv.tv_sec = (time_t) (wait / 1000000LL);
    tv.tv_usec = (suseconds_t) (wait % 1000000LL);
    if (evtimer_add(ctx->shape_ev, &tv) < 0)
        msg_fatal("cannot add a timer");
}

/* qmgr_shaping_expire - end (and log) what automation set that is over */
static void qmgr_shaping_expire(QMGR_SHAPE *shape, long long now)
{
    static const char *const what[3] = {"suspension", "message rate",
                                        "connection limit"};
    const char *by[3];
    int mask = shaping_auto_expire(&shape->state, now, by);

    for (int i = 0; i < 3; i++)
        if (mask & (1 << i))
            msg_info("shaping: %s: %s set by automation rule %s expired",
                     shape->name, what[i], by[i]);
}

/* qmgr_shaping_share_auto - what an automation rule set on shape goes to
   Redis too, for every node (while it is up) */
static void qmgr_shaping_share_auto(QMGR_SHAPE *shape,
                                    const SHAPING_AUTO_RULE *rule)
{
    VSTR *value;

    if (!qmgr_redis_up(shape->redis))
        return;
    value = vstr_alloc(50);
    switch (rule->action) {
    case SHAPING_AUTO_SUSPEND:
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_SUSPEND,
                       rule->name, rule->duration);
        break;
    case SHAPING_AUTO_BACKOFF:
    case SHAPING_AUTO_RATE:
        vstr_sprintf(value, "%lld %s", shaping_gcra_interval(&rule->rate),
                     rule->name);
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_RATE,
                       vstr_str(value), rule->duration);
        if (rule->action == SHAPING_AUTO_RATE)
            break;
        /* FALLTHROUGH */
    case SHAPING_AUTO_CONNECTIONS:
        vstr_sprintf(value, "%lld %s", rule->connections, rule->name);
        qmgr_redis_set(shape->redis, shape->name, SHAPING_REDIS_KEY_CONNMAX,
                       vstr_str(value), rule->duration);
        break;
    }
    vstr_free(value);
}

/* qmgr_shaping_reply - response automation on one remote reply */
void qmgr_shaping_reply(QMGR_CTX *ctx, QMGR_SHAPE *shape,
                        const char *diagnostic)
{
    const SHAPING_AUTO_RULES *rules = ctx->conf.automation;
    const SHAPING_AUTO_RULE *rule;
    SHAPING_AUTO_REPLY reply;
    SHAPING_AUTO_CHANGE change;
    long long now;
    long index;
    VSTR *rate;
    VSTR *what;

    if (rules == NULL || shape == NULL || shape->resolving ||
        !shaping_auto_reply_parse(diagnostic, &reply) ||
        (index = shaping_auto_match(rules, shape->name, &reply)) < 0)
        return;
    now = qmgr_shaping_now();
    qmgr_shaping_expire(shape, now);
    if (shape->hits == NULL)
        shape->hits = shaping_auto_hits_alloc(rules);
    rule = shaping_auto_at(rules, (size_t) index);
    if (!shaping_auto_hit(rules, (size_t) index, shape->hits, &shape->state,
                          now)) {
        msg_info("shaping: %s: automation rule %s matched (%s), not "
                 "triggered yet",
                 shape->name, rule->name, reply.text);
        return;
    }
    rate = vstr_alloc(20);
    what = vstr_alloc(50);
    switch (rule->action) {
    case SHAPING_AUTO_SUSPEND:
        vstr_cpy(what, "suspended");
        break;
    case SHAPING_AUTO_RATE:
        vstr_sprintf(what, "message rate lowered to %s",
                     shaping_rate_format(&rule->rate, rate));
        break;
    case SHAPING_AUTO_CONNECTIONS:
        vstr_sprintf(what, "connections lowered to %lld", rule->connections);
        break;
    case SHAPING_AUTO_BACKOFF:
        vstr_cpy(what, "backed off (1 connection, 1/m)");
        break;
    }
    change = shaping_auto_apply(rule, &shape->state, now);
    qmgr_shaping_share_auto(shape, rule);
    msg_info("shaping: %s: %s for %llds by automation rule %s (line %d)%s: "
             "%s",
             shape->name, vstr_str(what), rule->duration / QMGR_SHAPING_USEC,
             rule->name, rule->lineno,
             change == SHAPING_AUTO_EXTENDED ? ", extended" : "", reply.text);
    vstr_free(what);
    vstr_free(rate);
}

/* qmgr_shaping_local_rule - the rule the node applies alone: its share
   when the limits are shared through Redis */
static const SHAPING_RULE *qmgr_shaping_local_rule(const QMGR_SHAPE *shape)
{
    return shape->redis && shape->rule ? &shape->share : shape->rule;
}

/* qmgr_shaping_shared_rule - the rule Redis applies to shape (lower limits
   automation set reach Redis as keys of their own: the rule itself) */
static const SHAPING_RULE *qmgr_shaping_shared_rule(const QMGR_SHAPE *shape,
                                                    long long now)
{
    return shape->rule;
}

/* qmgr_shaping_may_start - may a delivery of this bucket start now? When
   a rate holds it back, the timer is set for its next token */
bool qmgr_shaping_may_start(QMGR_CTX *ctx, QMGR_SHAPE *shape, long long now)
{
    long long wait;

    if (shape == NULL)
        return true;
    if (shape->resolving)
        return false;
    qmgr_shaping_expire(shape, now);
    /* A source's bucket ("name@source", qmgr_source.c): the
       administrator's suspension of name holds every source. */
    if (ctx->shape_table != NULL && strchr(shape->name, '@') != NULL) {
        VSTR *base = vstr_alloc(50);
        QMGR_SHAPE *whole;

        vstr_ncpy(base, shape->name,
                  (size_t) (strchr(shape->name, '@') - shape->name));
        whole = htable_find(ctx->shape_table, vstr_str(base));
        vstr_free(base);
        if (whole != NULL && whole->state.suspended_until > now) {
            qmgr_shaping_wake(ctx, now, whole->state.suspended_until - now);
            return false;
        }
    }
    if (qmgr_redis_up(shape->redis)) {
        /* Shared: Redis decides (what this node suspended holds too). */
        if (shape->state.suspended_until > now) {
            qmgr_shaping_wake(ctx, now, shape->state.suspended_until - now);
            return false;
        }
        /* A grant is a token of then: one unused for long is dropped
           (it would add to a later window), its token is lost. */
        if (shape->redis_grants > 0 &&
            now - shape->redis_granted_at > QMGR_SHAPING_GRANT_LIFE)
            qmgr_shaping_grants_drop(shape);
        if (shape->redis_grants > 0)
            return true;
        if (shape->redis_pending)
            return false;
        if (shape->redis_retry_at > now) {
            qmgr_shaping_wake(ctx, now, shape->redis_retry_at - now);
            return false;
        }
        if (qmgr_redis_take(shape->redis, shape,
                            qmgr_shaping_shared_rule(shape, now))) {
            shape->redis_pending = true;
            shape->redis_shared = true;
            return false;
        }
        /* Not sent: the link just broke; decide alone. */
    }
    if (shape->redis_shared) {
        shape->redis_shared = false;
        shaping_redis_fallback(&shape->share, &shape->state, now);
    }
    switch (shaping_may_start(qmgr_shaping_local_rule(shape), &shape->state,
                              now, &wait)) {
    case SHAPING_GO:
        return true;
    case SHAPING_WAIT:
        qmgr_shaping_wake(ctx, now, wait);
        return false;
    case SHAPING_FULL:
    default:
        return false;
    }
}

/* qmgr_shaping_start - a delivery of the bucket starts now: with a grant
   of Redis, or by the node alone (its share of the limits, while Redis is
   not up). The local states count either way (the full rule for what
   Redis granted: the node's own part of the shared rate) */
void qmgr_shaping_start(QMGR_SHAPE *shape, long long now)
{
    if (shape == NULL)
        return;
    if (shape->redis_grants > 0) {
        shape->redis_grants--;
        shaping_start(shape->rule, &shape->state, now);
    } else {
        shaping_start(qmgr_shaping_local_rule(shape), &shape->state, now);
    }
}

/* qmgr_shaping_lease_drop - let go of one lease (Redis forgets it, or it
   expires there by itself) */
static void qmgr_shaping_lease_drop(QMGR_SHAPE *shape)
{
    ARGV *leases = shape->redis_leases;

    if (leases == NULL || leases->argc == 0)
        return;
    leases->argc--;
    qmgr_redis_release(shape->redis, shape->name, leases->argv[leases->argc]);
    myfree(leases->argv[leases->argc]);
    leases->argv[leases->argc] = NULL;
}

/* qmgr_shaping_grants_drop - forget the grants not started, with as many
   leases */
static void qmgr_shaping_grants_drop(QMGR_SHAPE *shape)
{
    for (; shape->redis_grants > 0; shape->redis_grants--)
        qmgr_shaping_lease_drop(shape);
}

/* qmgr_shaping_end - a delivery of the bucket ended (or never began): a
   lease more than the grants not started yet was its lease (leases are
   all alike: one goes) */
void qmgr_shaping_end(QMGR_SHAPE *shape)
{
    if (shape == NULL)
        return;
    shaping_end(&shape->state);
    if (shape->redis_leases &&
        shape->redis_leases->argc > (size_t) shape->redis_grants)
        qmgr_shaping_lease_drop(shape);
}

/* qmgr_shaping_redis_answer - Redis answered a take of shape */
void qmgr_shaping_redis_answer(QMGR_CTX *ctx, QMGR_SHAPE *shape, int verdict,
                               long long wait, const char *lease)
{
    long long now = qmgr_shaping_now();

    shape->redis_pending = false;
    switch (verdict) {
    case SHAPING_REDIS_GO:
        shape->redis_grants++;
        shape->redis_granted_at = now;
        shape->redis_retry_at = 0;
        if (lease)
            argv_add(shape->redis_leases, lease);
        qmgr_shaping_wake(ctx, now, 0);
        break;
    case SHAPING_REDIS_WAIT:
        shape->redis_retry_at = now + wait;
        qmgr_shaping_wake(ctx, now, wait);
        break;
    default:
        /* No answer: the node decides alone (the link is down). */
        shape->redis_retry_at = 0;
        qmgr_shaping_wake(ctx, now, 0);
        break;
    }
}

/* qmgr_shaping_redis_changed - the link went up or down */
void qmgr_shaping_redis_changed(QMGR_CTX *ctx)
{
    qmgr_shaping_wake(ctx, qmgr_shaping_now(), 0);
}

/* qmgr_shaping_renew_one - renew one bucket's leases */
static QMGR_SHAPING_WALK qmgr_shaping_renew_one(QMGR_CTX *ctx,
                                                QMGR_SHAPE *shape,
                                                long long now, void *arg)
{
    if (shape->redis_leases && shape->redis_leases->argc > 0)
        qmgr_redis_renew(shape->redis, shape->name, shape->redis_leases);
    return QMGR_SHAPING_KEEP;
}

/* qmgr_shaping_redis_renew - renew every bucket's leases */
void qmgr_shaping_redis_renew(QMGR_CTX *ctx)
{
    qmgr_shaping_walk(ctx, qmgr_shaping_renew_one, NULL);
}

/* qmgr_shaping_unused - a bucket no destination uses that remembers
   nothing may go: a limit is never loosened by forgetting */
static QMGR_SHAPING_WALK qmgr_shaping_unused(QMGR_CTX *ctx, QMGR_SHAPE *shape,
                                             long long now, void *arg)
{
    qmgr_shaping_expire(shape, now);
    /* Granted, but nothing left to start: the leases go back. */
    if (shape->dests == 0)
        qmgr_shaping_grants_drop(shape);
    if (shape->redis_pending ||
        (shape->redis_leases && shape->redis_leases->argc > 0))
        return QMGR_SHAPING_KEEP;
    if (shape->dests > 0 || shape->resolving ||
        !shaping_idle(&shape->state, now) ||
        shaping_auto_hits_recent(ctx->conf.automation, shape->hits, now))
        return QMGR_SHAPING_KEEP;
    return QMGR_SHAPING_FORGET;
}

/* qmgr_shaping_conn_messages - messages_per_connection of the bucket;
   1 when its max_connections is shared through Redis: a lease covers a
   delivery, not the idle connection the smtp agent would cache after it
   (it would stay open, unleased, while other nodes open theirs) */
long long qmgr_shaping_conn_messages(const QMGR_SHAPE *shape)
{
    if (shape == NULL || shape->rule == NULL)
        return 0;
    if (shape->redis && shape->rule->max_connections > 0)
        return 1;
    return shape->rule->messages_per_connection;
}

/* qmgr_shaping_conn_max - max_connections of the bucket */
long long qmgr_shaping_conn_max(const QMGR_SHAPE *shape)
{
    return shape && shape->rule ? shape->rule->max_connections : 0;
}

/* qmgr_shaping_sweep - forget unused buckets, and MX answers that expired */
void qmgr_shaping_sweep(QMGR_CTX *ctx)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;
    long long now;

    qmgr_shaping_walk(ctx, qmgr_shaping_unused, NULL);
    if (ctx->mx_cache == NULL)
        return;
    now = qmgr_shaping_now();
    htable_iter_init(&iter, ctx->mx_cache);
    while (htable_iter_next(&iter, &key, &value)) {
        QMGR_SHAPING_MX *mx = value;

        if (mx->lookup == NULL && mx->expires <= now) {
            htable_delete(ctx->mx_cache, mx->domain);
            qmgr_shaping_mx_free(mx);
        }
    }
}
