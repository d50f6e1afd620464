/*
 * qmgr_shaping - traffic shaping buckets: which recipients share limits,
 * and when a held-back destination is woken
 *
 * smtp_shaping_maps (global/shaping.h) is read once, at start; a reload
 * starts a new qmgr, and master refuses a reload whose rules file is
 * malformed, so the rules of the running qmgr stay in force until a good
 * file is reloaded. A recipient of a transport other than
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
 * Provider rules (provider:NAME with mx_suffix) are parsed and checked but
 * not matched yet: that needs the MX hosts of each domain, which qmgr does
 * not resolve today (the smtp agent does).
 */
#include "sys_defs.h"

#include <time.h>

#include <event2/event.h>

#include "htable.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "shaping.h"
#include "smtp_addr.h"
#include "vstr.h"

/* qmgr_shaping_now - the monotonic clock in microseconds */
long long qmgr_shaping_now(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        msg_fatal("clock_gettime: %m");
    return (long long) ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* qmgr_shaping_init - read smtp_shaping_maps (a malformed file is fatal,
   as a malformed transport_maps is: master refuses to reload one) */
void qmgr_shaping_init(QMGR_CTX *ctx, const MAIL_CONF *mc)
{
    VSTR *why = vstr_alloc(100);
    const SHAPING_RULES *rules;

    ctx->conf.shaping = shaping_rules_load(
        "smtp_shaping_maps", mail_conf_str(mc, "smtp_shaping_maps"), why);
    if (ctx->conf.shaping == NULL && vstr_len(why) > 0)
        msg_fatal("%s", vstr_str(why));
    rules = ctx->conf.shaping;
    for (size_t i = 0; i < shaping_rules_count(rules); i++) {
        const SHAPING_RULE *rule = shaping_rules_at(rules, i);

        if (rule->messages_per_connection > 0)
            msg_warn("smtp_shaping_maps: %s: messages_per_connection is not "
                     "enforced yet (smtp_connection_reuse_count_limit "
                     "applies)",
                     rule->key);
        if (rule->kind == SHAPING_KIND_PROVIDER)
            msg_warn("smtp_shaping_maps: %s: provider rules are not matched "
                     "yet (no MX lookups in qmgr): its domains get their own "
                     "or the default rule",
                     rule->key);
    }
    if (rules)
        msg_info("smtp_shaping_maps: %zu rule%s", shaping_rules_count(rules),
                 shaping_rules_count(rules) == 1 ? "" : "s");
    vstr_free(why);
}

/* qmgr_shaping_find - the bucket of one recipient, made if new; NULL when
   it is not shaped */
QMGR_SHAPE *qmgr_shaping_find(QMGR_CTX *ctx, const char *transport,
                              const char *address)
{
    const char *domain = smtp_addr_domain(address);
    const SHAPING_RULE *rule;
    QMGR_SHAPE *shape;
    VSTR *name;

    if (ctx->conf.shaping == NULL || domain == NULL || *domain == 0 ||
        strcmp(transport, ctx->conf.route.local_transport) == 0)
        return NULL;
    if ((rule = shaping_rules_domain(ctx->conf.shaping, domain)) == NULL)
        return NULL;
    name = vstr_lower(vstr_cpy(vstr_alloc(50), domain));
    if (ctx->shape_table == NULL)
        ctx->shape_table = htable_alloc(0);
    if ((shape = htable_find(ctx->shape_table, vstr_str(name))) == NULL) {
        shape = mycalloc(1, sizeof(*shape));
        shape->name = mystrdup(vstr_str(name));
        shape->rule = rule;
        if (!htable_enter(ctx->shape_table, shape->name, shape))
            msg_panic("%s: %s: entered twice", __func__, shape->name);
    }
    vstr_free(name);
    return shape;
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

/* qmgr_shaping_may_start - may a delivery of this bucket start now? When
   a rate holds it back, the timer is set for its next token */
bool qmgr_shaping_may_start(QMGR_CTX *ctx, QMGR_SHAPE *shape, long long now)
{
    long long wait;

    if (shape == NULL)
        return true;
    switch (shaping_may_start(shape->rule, &shape->state, now, &wait)) {
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

/* qmgr_shaping_start - a delivery of the bucket starts now */
void qmgr_shaping_start(QMGR_SHAPE *shape, long long now)
{
    if (shape)
        shaping_start(shape->rule, &shape->state, now);
}

/* qmgr_shaping_end - a delivery of the bucket ended (or never began) */
void qmgr_shaping_end(QMGR_SHAPE *shape)
{
    if (shape)
        shaping_end(&shape->state);
}

/* qmgr_shaping_sweep - forget buckets no destination uses that remember
   nothing: a limit is never loosened by forgetting */
void qmgr_shaping_sweep(QMGR_CTX *ctx)
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

        if (shape->dests > 0 || !shaping_idle(&shape->state, now))
            continue;
        htable_delete(ctx->shape_table, shape->name);
        myfree(shape->name);
        myfree(shape);
    }
}
