/*
 * qmgr_dest - destinations: a queue, a window and a verdict per next hop
 *
 * A destination is (transport, next hop). Its pending entries wait in
 * arrival order; at most `window` of them are in flight. The window starts
 * at initial_destination_concurrency, grows by one per success up to
 * default_destination_concurrency_limit and shrinks by one per site
 * failure (never below 1). When a whole cohort fails (every delivery that
 * was in flight reported a site failure and none succeeded, or the window
 * was 1 and it failed) the destination is dead for destination_dead_time:
 * its entries, and any that arrive meanwhile, are deferred at once without
 * contacting it. Deliveries start round-robin over the destinations so one
 * slow domain cannot starve the others. The decisions are qmgr_sched.c's;
 * this file applies them (logs, defers, starts deliveries). Destinations
 * are found by name in a hash table and kept in a list for the
 * round-robin. A destination also names its shaping bucket
 * (qmgr_shaping.c): a delivery starts only when the bucket's limits allow
 * it too; one held back keeps its entries in place, unattempted.
 */
#include "sys_defs.h"

#include <time.h>

#include <event2/event.h>

#include "htable.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "source_pool.h"
#include "vstr.h"

#define QMGR_DEST_NO_REASON "destination failed"
#define QMGR_DEST_PAUSE 1 /* seconds to wait for a busy agent */

/* qmgr_entry_free - drop an entry; its message may complete; NULL */
QMGR_ENTRY *qmgr_entry_free(QMGR_ENTRY *entry)
{
    QMGR_MESSAGE *msg = entry->msg;

    myfree(entry->index);
    myfree(entry);
    if (msg->refs == 0)
        msg_panic("%s: %s: no references", __func__, msg->qid);
    msg->refs--;
    qmgr_message_check(msg);
    return NULL;
}

/* qmgr_dest_find - the destination for (transport, nexthop, shaping
   bucket, source), made if new */
static QMGR_DEST *qmgr_dest_find(QMGR_CTX *ctx, const char *transport,
                                 const char *nexthop, QMGR_SHAPE *shape,
                                 const SOURCE_POOL_SOURCE *source)
{
    VSTR *key = vstr_alloc(100);
    QMGR_DEST *dest;
    const char *shape_name = shape ? shape->name : "";

    /* The lengths make the key unambiguous whatever the names hold. */
    vstr_sprintf(key, "%zu:%s:%zu:%s:%zu:%s:%s", strlen(transport), transport,
                 strlen(nexthop), nexthop, strlen(shape_name), shape_name,
                 source ? source->address : "");
    if (ctx->dest_table == NULL)
        ctx->dest_table = htable_alloc(0);
    if ((dest = htable_find(ctx->dest_table, vstr_str(key))) != NULL) {
        vstr_free(key);
        return dest;
    }
    dest = mycalloc(1, sizeof(*dest));
    dest->transport = mystrdup(transport);
    dest->nexthop = mystrdup(nexthop);
    dest->key = vstr_export(key);
    dest->ctx = ctx;
    dest->source = source;
    if ((dest->shape = shape) != NULL)
        shape->dests++;
    qmgr_sched_dest_init(&dest->sched, &ctx->conf.sched);
    if (!htable_enter(ctx->dest_table, dest->key, dest))
        msg_panic("%s: %s: entered twice", __func__, dest->key);
    dest->next = ctx->dests;
    ctx->dests = dest;
    return dest;
}

/* qmgr_dest_apply - log what a decision on dest says happened */
static void qmgr_dest_apply(QMGR_DEST *dest, QMGR_SCHED_VERDICT verdict)
{
    if (verdict == QMGR_SCHED_REVIVED)
        msg_info("%s:%s: delivery resumed", dest->transport, dest->nexthop);
}

/* qmgr_dest_dead - is the destination left alone right now? */
static bool qmgr_dest_dead(QMGR_CTX *ctx, QMGR_DEST *dest)
{
    QMGR_SCHED_VERDICT verdict;
    bool alive = qmgr_sched_dest_alive(&dest->sched, &ctx->conf.sched,
                                       time(NULL), &verdict);

    qmgr_dest_apply(dest, verdict);
    return !alive;
}

/* qmgr_dest_suspended - defer one recipient of a dead destination */
static void qmgr_dest_suspended(QMGR_DEST *dest, QMGR_MESSAGE *msg,
                                size_t index)
{
    VSTR *reason = vstr_alloc(100);

    vstr_sprintf(reason, "delivery temporarily suspended: %s",
                 dest->last_reason ? dest->last_reason : QMGR_DEST_NO_REASON);
    qmgr_message_defer_self(msg, index, "4.4.1", vstr_str(reason));
    vstr_free(reason);
}

/* qmgr_dest_add - queue one recipient of msg for a destination */
void qmgr_dest_add(QMGR_MESSAGE *msg, const char *transport,
                   const char *nexthop, size_t index)
{
    QMGR_CTX *ctx = msg->ctx;
    VSTR *why = vstr_alloc(100);
    const char *address = msg->info->rcpts[index].address;
    bool fresh = false;
    /* The provider is known before the source (it does not depend on it):
       the choice is per message, next hop and provider, so recipients of
       two providers on one next hop are each counted against their own
       provider's warm-up cap. */
    const char *provider0 = qmgr_shaping_provider(ctx, transport, address);
    const SOURCE_POOL_SOURCE *source =
        qmgr_source_choose(msg, transport, nexthop, provider0, &fresh, why);
    const char *provider;
    QMGR_SHAPE *shape;
    QMGR_DEST *dest;
    QMGR_ENTRY *entry;

    if (source == NULL && vstr_len(why) > 0) {
        /* Its pool has no usable source: wait; never another pool. */
        qmgr_message_defer_self(msg, index, "4.3.0", vstr_str(why));
        vstr_free(why);
        return;
    }
    shape = qmgr_shaping_find(ctx, transport, address,
                              source ? source->address : NULL);
    /* The bucket names the provider: a source paused (or at its warm-up
       cap) for that provider alone gives way to another one. The same
       provider as above, unless the MX lookup ended in between. */
    provider = qmgr_shape_provider(shape);
    if (source != NULL && provider != NULL &&
        (provider0 == NULL || strcmp(provider, provider0) != 0 ||
         !qmgr_source_provider_ok(ctx, source->address, provider, fresh))) {
        /* A choice made just now and refused for the provider is not
           kept: the next one is fresh (and taken), never this one. */
        if (fresh)
            qmgr_source_unpick(msg, transport, nexthop, provider0);
        source =
            qmgr_source_choose(msg, transport, nexthop, provider, &fresh, why);
        if (source == NULL) {
            qmgr_message_defer_self(msg, index, "4.3.0", vstr_str(why));
            vstr_free(why);
            return;
        }
        shape = qmgr_shaping_find(ctx, transport, address, source->address);
    }
    vstr_free(why);
    if (source != NULL && fresh)
        qmgr_source_take(ctx, source->address, provider,
                         !qmgr_source_shared(msg, transport, nexthop, provider,
                                             source->address));
    dest = qmgr_dest_find(ctx, transport, nexthop, shape, source);
    entry = dest->tail;
    if (qmgr_dest_dead(ctx, dest)) {
        qmgr_dest_suspended(dest, msg, index);
        return;
    }
    /* VERP: one recipient per delivery, so that smtp's MAIL FROM token
       names it (global/verp.h); mail with a null sender is not VERPed. */
    if (entry == NULL || entry->msg != msg ||
        (long long) entry->count >= ctx->conf.rcpt_limit ||
        (*ctx->conf.route.verp_domain && *msg->info->sender)) {
        entry = mycalloc(1, sizeof(*entry));
        entry->msg = msg;
        entry->dest = dest;
        entry->index =
            mymalloc_array((size_t) ctx->conf.rcpt_limit, sizeof(size_t));
        msg->refs++;
        if (dest->tail)
            dest->tail->next = entry;
        else
            dest->head = entry;
        dest->tail = entry;
    }
    entry->index[entry->count++] = index;
}

/* qmgr_dest_pop - take the first pending entry */
static QMGR_ENTRY *qmgr_dest_pop(QMGR_DEST *dest)
{
    QMGR_ENTRY *entry = dest->head;

    if ((dest->head = entry->next) == NULL)
        dest->tail = NULL;
    entry->next = NULL;
    return entry;
}

/* qmgr_dest_kill - a whole cohort failed: leave the destination alone */
static void qmgr_dest_kill(QMGR_CTX *ctx, QMGR_DEST *dest)
{
    msg_warn("%s:%s: delivery temporarily suspended for %llds: %s",
             dest->transport, dest->nexthop, ctx->conf.sched.dead_time,
             dest->last_reason ? dest->last_reason : QMGR_DEST_NO_REASON);
    while (dest->head) {
        QMGR_ENTRY *entry = qmgr_dest_pop(dest);

        for (size_t i = 0; i < entry->count; i++)
            qmgr_dest_suspended(dest, entry->msg, entry->index[i]);
        qmgr_entry_free(entry);
    }
}

/* qmgr_dest_job_done - a delivery to dest ended with outcome (reason: why
   the site failed, when it did) */
void qmgr_dest_job_done(QMGR_DEST *dest, QMGR_SCHED_OUTCOME outcome,
                        const char *reason)
{
    QMGR_CTX *ctx = dest->ctx;

    if (dest->sched.busy == 0)
        msg_panic("%s: %s: not busy", __func__, dest->nexthop);
    qmgr_shaping_end(dest->shape);
    if (outcome == QMGR_SCHED_SITE_FAILED) {
        myfree(dest->last_reason);
        dest->last_reason =
            mystrdup(reason && *reason ? reason : QMGR_DEST_NO_REASON);
    }
    if (qmgr_sched_dest_result(&dest->sched, &ctx->conf.sched, outcome,
                               time(NULL)) == QMGR_SCHED_KILLED)
        qmgr_dest_kill(ctx, dest);
}

static void qmgr_dest_resume_event(evutil_socket_t fd, short what, void *arg);

/* qmgr_dest_resume_arm - look at paused destinations again in
   QMGR_DEST_PAUSE seconds, unless a look is already due */
static void qmgr_dest_resume_arm(QMGR_CTX *ctx)
{
    struct timeval tv = {QMGR_DEST_PAUSE, 0};

    if (ctx->resume_ev == NULL &&
        (ctx->resume_ev =
             evtimer_new(ctx->base, qmgr_dest_resume_event, ctx)) == NULL)
        msg_fatal("cannot create a timer");
    if (!evtimer_pending(ctx->resume_ev, NULL) &&
        evtimer_add(ctx->resume_ev, &tv) < 0)
        msg_fatal("cannot add a timer");
}

/* qmgr_dest_resume_event - paused destinations may go on. A pause ends
   at a whole second of time(), and the one timer serves every paused
   destination: it can fire before some pause is over (one paused after
   the timer was set; or the loop's cached time, from which the timer
   counts, lagging into the previous second). While a destination with
   entries waiting is still paused, look again: nothing else would before
   qmgr's periodic scan. */
static void qmgr_dest_resume_event(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;
    time_t now;

    qmgr_dest_schedule(ctx);
    now = time(NULL);
    for (QMGR_DEST *dest = ctx->dests; dest; dest = dest->next) {
        if (dest->head != NULL && dest->sched.paused_until > now) {
            qmgr_dest_resume_arm(ctx);
            break;
        }
    }
}

/* qmgr_dest_push_back - an entry could not start (the agent is at its
   limit): back to the head of its queue, the destination paused briefly */
void qmgr_dest_push_back(QMGR_DEST *dest, QMGR_ENTRY *entry)
{
    if (dest->sched.busy == 0)
        msg_panic("%s: %s: not busy", __func__, dest->nexthop);
    qmgr_sched_dest_pause(&dest->sched, time(NULL), QMGR_DEST_PAUSE);
    qmgr_shaping_end(dest->shape);
    if ((entry->next = dest->head) == NULL)
        dest->tail = entry;
    dest->head = entry;
    qmgr_dest_resume_arm(dest->ctx);
}

/* qmgr_dest_sweep - forget idle destinations (memory stays bounded by
   what is queued; a dead one is kept until its dead time is over) */
static void qmgr_dest_sweep(QMGR_CTX *ctx)
{
    QMGR_DEST **link = &ctx->dests;
    QMGR_DEST *dest;
    time_t now = time(NULL);

    while ((dest = *link) != NULL) {
        if (dest->head || !qmgr_sched_dest_idle(&dest->sched, now)) {
            link = &dest->next;
            continue;
        }
        *link = dest->next;
        if (ctx->dest_rr == dest)
            ctx->dest_rr = dest->next;
        if (htable_delete(ctx->dest_table, dest->key) != dest)
            msg_panic("%s: %s: not in the table", __func__, dest->key);
        myfree(dest->key);
        myfree(dest->transport);
        myfree(dest->nexthop);
        myfree(dest->last_reason);
        if (dest->shape)
            dest->shape->dests--;
        myfree(dest);
    }
    qmgr_shaping_sweep(ctx);
}

/* qmgr_dest_schedule - start deliveries, round-robin over destinations */
void qmgr_dest_schedule(QMGR_CTX *ctx)
{
    bool progress;

    /* Starting a delivery may end one at once and call back here. */
    if (ctx->scheduling) {
        ctx->schedule_again = true;
        return;
    }
    ctx->scheduling = true;
    qmgr_dest_sweep(ctx);
    do {
        ctx->schedule_again = false;
        do {
            QMGR_DEST *start = ctx->dest_rr ? ctx->dest_rr : ctx->dests;
            QMGR_DEST *dest = start;

            progress = false;
            if (dest == NULL)
                break;
            do {
                QMGR_DEST *next = dest->next ? dest->next : ctx->dests;
                QMGR_SCHED_VERDICT verdict = QMGR_SCHED_NONE;
                long long now = qmgr_shaping_now();
                bool may_start =
                    dest->head &&
                    qmgr_sched_dest_may_start(&dest->sched, &ctx->conf.sched,
                                              time(NULL), &verdict);

                qmgr_dest_apply(dest, verdict);
                /* Held back by shaping: the entry keeps its place. */
                if (may_start && !qmgr_shaping_may_start(ctx, dest->shape, now))
                    may_start = false;
                if (may_start) {
                    dest->sched.busy++;
                    qmgr_shaping_start(dest->shape, now);
                    ctx->dest_rr = next;
                    qmgr_deliver_start(ctx, qmgr_dest_pop(dest));
                    progress = true;
                }
                dest = next;
            } while (dest != start);
        } while (progress);
    } while (ctx->schedule_again);
    ctx->scheduling = false;
}

/* qmgr_dest_revive_all - a flush: every destination may be tried now */
void qmgr_dest_revive_all(QMGR_CTX *ctx)
{
    for (QMGR_DEST *dest = ctx->dests; dest; dest = dest->next)
        qmgr_sched_dest_revive(&dest->sched, &ctx->conf.sched);
}

/* qmgr_dest_requeue - dest's pending entries go again through
   qmgr_dest_add. The list is taken off dest first: what comes back to
   dest (its choice still holds) waits there, and the loop ends. */
static void qmgr_dest_requeue(QMGR_DEST *dest)
{
    QMGR_ENTRY *entry = dest->head;

    dest->head = dest->tail = NULL;
    while (entry != NULL) {
        QMGR_ENTRY *next = entry->next;

        entry->next = NULL;
        for (size_t i = 0; i < entry->count; i++)
            qmgr_dest_add(entry->msg, dest->transport, dest->nexthop,
                          entry->index[i]);
        qmgr_entry_free(entry);
        entry = next;
    }
}

/* qmgr_dest_rebucket - the entries of shape's destinations, again */
void qmgr_dest_rebucket(QMGR_CTX *ctx, QMGR_SHAPE *shape)
{
    /* New destinations go to the front of the list: those left to visit
       are the ones that were there. */
    for (QMGR_DEST *dest = ctx->dests; dest; dest = dest->next)
        if (dest->shape == shape && dest->head != NULL)
            qmgr_dest_requeue(dest);
}

/* qmgr_dest_resource - the pending entries bound to a source (for one
   provider only when provider is not NULL), again */
void qmgr_dest_resource(QMGR_CTX *ctx, const char *address,
                        const char *provider)
{
    /* New destinations go to the front of the list: those left to visit
       are the ones that were there. */
    for (QMGR_DEST *dest = ctx->dests; dest; dest = dest->next) {
        const char *bucket;

        if (dest->head == NULL || dest->source == NULL ||
            strcmp(dest->source->address, address) != 0)
            continue;
        if (provider != NULL &&
            ((bucket = qmgr_shape_provider(dest->shape)) == NULL ||
             strcmp(bucket, provider) != 0))
            continue;
        qmgr_dest_requeue(dest);
    }
}

/* qmgr_dest_withdraw - take msg's pending (unstarted) entries back */
void qmgr_dest_withdraw(QMGR_MESSAGE *msg)
{
    if (msg->refs == 0)
        msg_panic("%s: %s: the caller holds no reference", __func__, msg->qid);
    for (QMGR_DEST *dest = msg->ctx->dests; dest; dest = dest->next) {
        QMGR_ENTRY **link = &dest->head;
        QMGR_ENTRY *prev = NULL;
        QMGR_ENTRY *entry;

        while ((entry = *link) != NULL) {
            if (entry->msg != msg) {
                prev = entry;
                link = &entry->next;
                continue;
            }
            *link = entry->next;
            if (dest->tail == entry)
                dest->tail = prev;
            for (size_t i = 0; i < entry->count; i++)
                qmgr_message_withdrawn(msg, entry->index[i]);
            qmgr_entry_free(entry);
        }
    }
}
