/*
 * qmgr - the queue manager: the one scheduler of an instance
 *
 * Exactly one qmgr runs per instance (maxproc 1), listening on public/qmgr
 * for one-byte wake-ups: 'W' from cleanup (something arrived) and master
 * (every `wakeup` seconds), 'A' from `sluice flush` and `sendmail -q`
 * (every deferred message is due now, and no destination is left alone).
 *
 * Files move into active/ by a non-durable rename (a crash only leaves the
 * file where it was, or in active/, which is taken back at start). At most
 * qmgr_message_active_limit messages are in memory; the rest wait where
 * they are until room frees. Scans are resumable and bounded: a pass moves
 * at most QMGR_SCAN_BATCH files, then yields to the event loop, and a
 * burst of triggers while a scan runs asks for one more scan, not one per
 * trigger. On start qmgr first takes back active/, then incoming/, then
 * the due part of deferred/. deferred/ is scanned every queue_run_delay and
 * at the earliest next try qmgr knows of (a file's mtime is its next try).
 * private/qmgr-admin takes the administrator's requests about messages in
 * active/ (qmgr_admin.c). The modules are listed in qmgr.h.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>

#include "events.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "qid.h"
#include "qmgr.h"
#include "trigger.h"
#include "vstr.h"

#define QMGR_TICK 60 /* seconds between incoming/ scans */
#define QMGR_SCAN_BATCH 100 /* files moved per loop pass */
#define QMGR_COMMIT_DELAY 1 /* seconds a received event may wait alone */
#define QMGR_COMMIT_GAP_USEC 5000 /* least time between two commits */
#define QMGR_SCAN_SETTLE_USEC 2000 /* a scan held up by unsettled files */
#define QMGR_COMMIT_MAX_BACKOFF 8 /* seconds between tries of a failed one */

/* qmgr_scan_want - ask for a scan of this queue (again, if it runs);
   all: deferred/ files are due whatever their time */
static void qmgr_scan_want(QMGR_SCAN *scan, bool all)
{
    if (scan->running) {
        scan->again = true;
        scan->all_next |= all;
        return;
    }
    scan->pending = true;
    scan->all |= all;
}

/* qmgr_scan_incoming - something was put in incoming/: scan it soon */
void qmgr_scan_incoming(QMGR_CTX *ctx)
{
    qmgr_scan_want(&ctx->incoming_scan, false);
    qmgr_scan_kick(ctx);
}

/* qmgr_scan_kick - run a scan pass soon, when one is wanted and fits */
void qmgr_scan_kick(QMGR_CTX *ctx)
{
    if (ctx->scan_ev == NULL)
        return;
    if (!(ctx->active_scan.pending || ctx->incoming_scan.pending ||
          ctx->deferred_scan.pending))
        return;
    if ((long long) ctx->active_count >= ctx->conf.active_limit)
        return;
    /* The journal cannot be written: no new message, whose events could
       not be either (qmgr_commit_failed); the commit that works kicks. */
    if (ctx->commit_backoff > 0)
        return;
    /* One pass per loop pass, however many wake-ups came. */
    event_active(ctx->scan_ev, EV_TIMEOUT, 0);
}

/* qmgr_commit_event - the journal's group commit (qmgr_message.c) */
static void qmgr_commit_event(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;

    ctx->commit_last_usec = qmgr_shaping_now();
    qmgr_message_commit(ctx, false);
}

/* qmgr_commit_soon - a commit at the end of this loop pass: event_active
   puts it behind every callback the loop already has in hand (the results
   that came in together), and waking it again meanwhile is a no-op. Two
   commits are QMGR_COMMIT_GAP_USEC apart at least: under load a pass
   holds few results, and a commit per pass would have the loop wait for
   an fdatasync every few messages; the results meanwhile wait in the
   batch (agents do not: they are free once their result is read). */
void qmgr_commit_soon(QMGR_CTX *ctx)
{
    long long wait;

    /* After a failure the back-off timer brings the next try. */
    if (ctx->commit_backoff > 0 ||
        event_pending(ctx->commit_ev, EV_TIMEOUT, NULL))
        return;
    wait = ctx->commit_last_usec + QMGR_COMMIT_GAP_USEC - qmgr_shaping_now();
    if (wait <= 0 || wait > QMGR_COMMIT_GAP_USEC) {
        event_active(ctx->commit_ev, EV_TIMEOUT, 0);
    } else {
        struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t) wait};

        if (event_add(ctx->commit_ev, &tv) < 0)
            msg_fatal("cannot add the journal commit event");
    }
}

/* qmgr_commit_later - a commit within QMGR_COMMIT_DELAY: a received event
   waits for the message's first outcome to share its fdatasync, but not
   for ever (nothing changes in the queue meanwhile: its message waits) */
void qmgr_commit_later(QMGR_CTX *ctx)
{
    struct timeval tv = {.tv_sec = QMGR_COMMIT_DELAY, .tv_usec = 0};

    if (evtimer_pending(ctx->commit_timer_ev, NULL))
        return;
    if (evtimer_add(ctx->commit_timer_ev, &tv) < 0)
        msg_fatal("cannot add the journal commit timer");
}

/* qmgr_commit_failed - the journal could not be written: the events stay
   pending (events_retain), so do the queue changes that wait for them;
   the commit is tried again after 1, 2, 4 ... QMGR_COMMIT_MAX_BACKOFF
   seconds, and no new message is taken until it works */
void qmgr_commit_failed(QMGR_CTX *ctx, const char *why)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 0};

    /* The back-off timer alone brings the next try. */
    (void) event_del(ctx->commit_ev);
    if (ctx->commit_backoff == 0) {
        msg_warn("events: the journal cannot be written: %s: queue changes"
                 " and new messages wait until it can",
                 why);
        ctx->commit_backoff = 1;
    } else if (ctx->commit_backoff < QMGR_COMMIT_MAX_BACKOFF) {
        ctx->commit_backoff *= 2;
    }
    tv.tv_sec = ctx->commit_backoff;
    if (evtimer_add(ctx->commit_timer_ev, &tv) < 0)
        msg_fatal("cannot add the journal commit timer");
}

/* qmgr_deferred_arm - set the timer of the next deferred/ scan */
static void qmgr_deferred_arm(QMGR_CTX *ctx)
{
    time_t now = time(NULL);
    time_t when = ctx->deferred_last + (time_t) ctx->conf.sched.queue_run_delay;
    struct timeval tv;

    if (ctx->deferred_next != 0 && ctx->deferred_next < when)
        when = ctx->deferred_next;
    /* At least a second: a due file blocked by the active limit must not
       spin the timer; the scan resumes when room frees anyway. */
    tv.tv_sec = when > now ? when - now : 1;
    tv.tv_usec = 0;
    if (evtimer_add(ctx->deferred_ev, &tv) < 0)
        msg_fatal("cannot add the deferred scan timer");
}

/* qmgr_deferred_note - a message waits in deferred/ until next_try */
void qmgr_deferred_note(QMGR_CTX *ctx, time_t next_try)
{
    if (ctx->deferred_next == 0 || next_try < ctx->deferred_next) {
        ctx->deferred_next = next_try;
        if (!ctx->deferred_scan.pending)
            qmgr_deferred_arm(ctx);
    }
}

/* qmgr_scan_due - deferred/: is this file due now? Else note its time. */
static bool qmgr_scan_due(QMGR_CTX *ctx, QMGR_SCAN *scan, const char *name)
{
    struct stat st;
    time_t now = time(NULL);

    if (fstatat(dirfd(scan->dir), name, &st, 0) < 0)
        return false;
    if (st.st_mtime <= now)
        return true;
    /* No next try is ever set further ahead than the longest retry step
       (plus slack): a file beyond that was stamped before the clock went
       back, and would otherwise wait for the clock to catch up. */
    if (st.st_mtime - now > 2 * qmgr_sched_retry_max(&ctx->conf.sched) + 60)
        return true;
    /* A flush takes every file that was there when it began. */
    if (scan->all && (st.st_ctim.tv_sec < scan->started.tv_sec ||
                      (st.st_ctim.tv_sec == scan->started.tv_sec &&
                       st.st_ctim.tv_nsec < scan->started.tv_nsec)))
        return true;
    if (ctx->deferred_next == 0 || st.st_mtime < ctx->deferred_next)
        ctx->deferred_next = st.st_mtime;
    return false;
}

/* qmgr_scan_open - open the directory (or hash subdirectory) in turn;
   false when the scan has none left */
static bool qmgr_scan_open(QMGR_CTX *ctx, QMGR_SCAN *scan)
{
    bool hashed = mail_queue_hashed(scan->queue_name);
    int count = hashed ? MAIL_QUEUE_HASH_COUNT : 1;
    VSTR *path = vstr_alloc(100);

    while (scan->dir == NULL && scan->hash_index < count) {
        if (hashed)
            vstr_sprintf(path, "%s/%s/%c", ctx->conf.queue_dir,
                         scan->queue_name,
                         mail_queue_hash_chars[scan->hash_index]);
        else
            vstr_sprintf(path, "%s/%s", ctx->conf.queue_dir, scan->queue_name);
        if ((scan->dir = opendir(vstr_str(path))) == NULL) {
            if (errno != ENOENT)
                msg_warn("open %s: %m", vstr_str(path));
            scan->hash_index++;
        }
    }
    vstr_free(path);
    return scan->dir != NULL;
}

/* qmgr_scan_done - the scan saw every entry: finished, or once more */
static void qmgr_scan_done(QMGR_CTX *ctx, QMGR_SCAN *scan)
{
    scan->running = false;
    scan->hash_index = 0;
    scan->all = false;
    if (scan->again) {
        scan->again = false;
        scan->all = scan->all_next;
        scan->all_next = false;
    } else {
        scan->pending = false;
    }
    if (strcmp(scan->queue_name, MAIL_QUEUE_DEFERRED) == 0 && !scan->pending)
        qmgr_deferred_arm(ctx);
}

/* qmgr_scan_run - move files of one queue into active/ within budget;
   true when the scan has finished */
static bool qmgr_scan_run(QMGR_CTX *ctx, QMGR_SCAN *scan, int *budget)
{
    bool deferred = strcmp(scan->queue_name, MAIL_QUEUE_DEFERRED) == 0;
    struct dirent *de;

    if (!scan->pending)
        return true;
    while (*budget > 0 &&
           (long long) (ctx->active_count + qmgr_reuse_unsettled(ctx)) <
               ctx->conf.active_limit) {
        if (!scan->running) {
            scan->running = true;
            scan->hash_index = 0;
            clock_gettime(CLOCK_REALTIME, &scan->started);
            if (deferred)
                ctx->deferred_next = 0; /* this scan finds it again */
        }
        if (scan->dir == NULL && !qmgr_scan_open(ctx, scan)) {
            qmgr_scan_done(ctx, scan);
            if (!scan->pending)
                return true;
            continue;
        }
        if ((de = readdir(scan->dir)) == NULL) {
            closedir(scan->dir);
            scan->dir = NULL;
            scan->hash_index++;
            continue;
        }
        /* Temporary files of cleanup (".tmp.QID") are not queue files. */
        if (!qid_valid(de->d_name))
            continue;
        if (deferred && !qmgr_scan_due(ctx, scan, de->d_name))
            continue;
        qmgr_message_activate(ctx, scan->queue_name, de->d_name);
        (*budget)--;
    }
    return false;
}

/* qmgr_scan_event - one scan pass: active/ first, then the others */
static void qmgr_scan_event(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;
    int budget = QMGR_SCAN_BATCH;

    /* What a crash left in active/ comes first, and alone: nothing else
       enters active/ until that scan is over. */
    if (qmgr_scan_run(ctx, &ctx->active_scan, &budget)) {
        /* Turns about, so a flood of new mail cannot starve retries. */
        QMGR_SCAN *first = &ctx->incoming_scan;
        QMGR_SCAN *second = &ctx->deferred_scan;

        ctx->scan_turn = !ctx->scan_turn;
        if (ctx->scan_turn) {
            first = &ctx->deferred_scan;
            second = &ctx->incoming_scan;
        }
        (void) qmgr_scan_run(ctx, first, &budget);
        (void) qmgr_scan_run(ctx, second, &budget);
    }
    qmgr_dest_schedule(ctx);
    /* More to do: yield to the loop (results, triggers), then go on. */
    if (budget == 0) {
        qmgr_scan_kick(ctx);
    } else if ((ctx->active_scan.pending || ctx->incoming_scan.pending ||
                ctx->deferred_scan.pending) &&
               (long long) ctx->active_count < ctx->conf.active_limit &&
               (long long) (ctx->active_count + qmgr_reuse_unsettled(ctx)) >=
                   ctx->conf.active_limit) {
        /* Stopped by finished files still on their way out of active/
           (qmgr_reuse.c's thread, which tells nobody when it is done):
           look again shortly. */
        struct timeval soon = {0, QMGR_SCAN_SETTLE_USEC};

        (void) event_add(ctx->scan_ev, &soon);
    }
}

/* qmgr_deferred_event - time for a deferred/ scan */
static void qmgr_deferred_event(evutil_socket_t fd, short what, void *arg)
{
    QMGR_CTX *ctx = arg;

    ctx->deferred_last = time(NULL);
    ctx->deferred_next = 0;
    qmgr_scan_want(&ctx->deferred_scan, false);
    qmgr_deferred_arm(ctx);
    qmgr_scan_kick(ctx);
}

/* qmgr_conf_read - the configuration, once */
static void qmgr_conf_read(QMGR_CONF *conf, const MAIL_CONF *mc)
{
    VSTR *why = vstr_alloc(100);

    conf->queue_dir = mystrdup(mail_conf_str(mc, "queue_directory"));
    if ((conf->mydestination = match_list_create(
             "mydestination", mail_conf_str(mc, "mydestination"),
             MATCH_LIST_DOMAIN, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    if ((conf->transport_maps =
             maps_create("transport_maps", mail_conf_str(mc, "transport_maps"),
                         MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    if ((conf->sender_relayhost_maps =
             maps_create("sender_dependent_relayhost_maps",
                         mail_conf_str(mc, "sender_dependent_relayhost_maps"),
                         MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    conf->virtual_alias_domains_value =
        mystrdup(mail_conf_str(mc, "virtual_alias_domains"));
    conf->virtual_mailbox_domains_value =
        mystrdup(mail_conf_str(mc, "virtual_mailbox_domains"));
    conf->recipient_delimiter =
        mystrdup(mail_conf_str(mc, "recipient_delimiter"));
    conf->route.relayhost = mystrdup(mail_conf_str(mc, "relayhost"));
    conf->route.myhostname = mystrdup(mail_conf_str(mc, "myhostname"));
    conf->route.verp_domain = mystrdup(mail_conf_str(mc, "bounce_verp_domain"));
    conf->route.unsub_domain =
        mystrdup(mail_conf_str(mc, "unsubscribe_mailto_domain"));
    conf->route.complaint_addresses =
        mystrdup(mail_conf_str(mc, "complaint_addresses"));
    conf->route.default_transport =
        mystrdup(mail_conf_str(mc, "default_transport"));
    conf->route.local_transport =
        mystrdup(mail_conf_str(mc, "local_transport"));
    conf->route.virtual_transport =
        mystrdup(mail_conf_str(mc, "virtual_transport"));
    conf->active_limit = mail_conf_int(mc, "qmgr_message_active_limit");
    conf->rcpt_limit = mail_conf_int(mc, "default_destination_recipient_limit");
    conf->sched.initial_concurrency =
        mail_conf_int(mc, "initial_destination_concurrency");
    conf->sched.concurrency_limit =
        mail_conf_int(mc, "default_destination_concurrency_limit");
    conf->sched.dead_time = mail_conf_time(mc, "destination_dead_time");
    conf->sched.queue_run_delay = mail_conf_time(mc, "queue_run_delay");
    conf->sched.max_lifetime = mail_conf_time(mc, "maximal_queue_lifetime");
    conf->sched.bounce_lifetime = mail_conf_time(mc, "bounce_queue_lifetime");
    conf->sched.delay_warning = mail_conf_time(mc, "delay_warning_time");
    conf->job_timeout = mail_conf_time(mc, "daemon_timeout");
    conf->ipc_timeout = mail_conf_time(mc, "ipc_timeout");
    conf->events = events_open(mc, "qmgr");
    conf->bounce_classes = bounce_class_rules_conf(mc);
    /* A batch that cannot be written waits, with its queue changes. */
    events_retain(conf->events);
    /* The table bounds every number (the limits are at least 1, each step
       of retry_schedule at least 1s): nothing to check here. */
    conf->sched.retry_steps =
        mail_conf_time_list(mc, "retry_schedule", &conf->sched.retry_count);
    vstr_free(why);
}

/* qmgr_pre_loop - read the configuration, take back active/, start */
static void qmgr_pre_loop(MAIL_SERVER *server, void *arg)
{
    QMGR_CTX *ctx = arg;

    ctx->server = server;
    ctx->base = mail_server_base(server);
    qmgr_conf_read(&ctx->conf, mail_server_conf(server));
    qmgr_shaping_init(ctx, mail_server_conf(server));
    qmgr_source_init(ctx, mail_server_conf(server));
    qmgr_reuse_init(ctx, mail_server_conf(server));
    ctx->active_scan.queue_name = MAIL_QUEUE_ACTIVE;
    ctx->incoming_scan.queue_name = MAIL_QUEUE_INCOMING;
    ctx->deferred_scan.queue_name = MAIL_QUEUE_DEFERRED;
    ctx->scan_ev = event_new(ctx->base, -1, 0, qmgr_scan_event, ctx);
    ctx->deferred_ev = evtimer_new(ctx->base, qmgr_deferred_event, ctx);
    ctx->commit_ev = event_new(ctx->base, -1, 0, qmgr_commit_event, ctx);
    ctx->commit_timer_ev = evtimer_new(ctx->base, qmgr_commit_event, ctx);
    if (ctx->scan_ev == NULL || ctx->deferred_ev == NULL ||
        ctx->commit_ev == NULL || ctx->commit_timer_ev == NULL)
        msg_fatal("cannot create the scan events");
    /* Invariant 4: what a crash left in active/ is taken back first. */
    qmgr_scan_want(&ctx->active_scan, false);
    qmgr_scan_want(&ctx->incoming_scan, false);
    qmgr_scan_want(&ctx->deferred_scan, false);
    ctx->deferred_last = time(NULL);
    qmgr_admin_init(ctx);
    qmgr_shaping_admin_init(ctx);
    qmgr_pool_admin_init(ctx);
    qmgr_scan_kick(ctx);
}

/* qmgr_post_loop - the loop is over (stop, retire): what the journal has
   in hand goes to disk, with the done marks it allows, so that the next
   qmgr does not deliver again what this one finished */
static void qmgr_post_loop(MAIL_SERVER *server, void *arg)
{
    qmgr_message_commit(arg, true);
    qmgr_source_exit(arg);
    qmgr_reuse_exit(arg);
}

/* qmgr_trigger - a wake-up arrived */
static void qmgr_trigger(MAIL_SERVER *server, int byte, void *arg)
{
    QMGR_CTX *ctx = arg;

    if (byte == TRIGGER_WAKEUP) {
        qmgr_scan_want(&ctx->incoming_scan, false);
    } else if (byte == TRIGGER_SCAN_ALL) {
        qmgr_dest_revive_all(ctx);
        qmgr_scan_want(&ctx->incoming_scan, false);
        qmgr_scan_want(&ctx->deferred_scan, true);
    } else {
        if (msg_verbose_get())
            msg_info("ignoring trigger byte %d", byte);
        return;
    }
    qmgr_scan_kick(ctx);
}

/* qmgr_tick - the periodic scan that catches any lost trigger */
static void qmgr_tick(MAIL_SERVER *server, void *arg)
{
    QMGR_CTX *ctx = arg;

    qmgr_scan_want(&ctx->incoming_scan, false);
    qmgr_scan_kick(ctx);
}

/* main - the queue manager */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = qmgr_pre_loop,
        .on_trigger = qmgr_trigger,
        .on_tick = qmgr_tick,
        .tick_seconds = QMGR_TICK,
        .post_loop = qmgr_post_loop,
    };

    /*
     * Static, not on the stack: at exit the messages, destinations and
     * deliveries in flight stay reachable from here (the event base is
     * gone by then, so they cannot be freed one by one).
     */
    static QMGR_CTX ctx;

    return mail_server_main(argc, argv, "qmgr", &ops, &ctx);
}
