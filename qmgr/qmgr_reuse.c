/*
 * qmgr_reuse - finished queue files go to reuse/ instead of being removed
 *
 * A message that is done (every recipient delivered, or bounced with its
 * DSN out) leaves active/ by a rename to reuse/ret.QID instead of an
 * unlink, when its file is cleanup's (mode 0600, qmgr's owner) and came
 * from incoming/ in this qmgr's life: its names were then a free file's
 * or incoming/.tmp.QID, incoming/QID and active/QID, all known. A file
 * moved back into incoming/ from another queue (release, requeue, flush)
 * has mode 0640 (global/mail_queue.h): an old name of it in a folder
 * nobody fsynced may come back after a crash. Those, files that came
 * from deferred/ or hold/, and files a start found in active/ are removed
 * as before.
 *
 * The returned files are made free in batches (global/qfile_reuse.h): at
 * most QMGR_REUSE_DELAY_MS after the first of a batch, or at once when
 * QMGR_REUSE_BATCH are waiting, qmgr fsyncs active/ and incoming/ and
 * renames each to free.QID while reuse/ holds fewer than
 * queue_file_reuse_limit free files. The fsyncs are the price: two per
 * batch, not per message (qmgr's own, not shared with cleanup's through
 * dir_sync: a qmgr killed in its fsync would fail the cleanup commits
 * waiting on it); none when reuse/ is full already. At start every ret.*
 * left by a crash is removed; at exit the batch in hand is published.
 *
 * The renames out of active/ and the unlinks are a thread's (QMGR_REMOVER
 * below), so that the event loop, which decides the whole drain's pace,
 * waits for neither: a rename between two large folders and an unlink
 * (the inode and its blocks freed) cost the file system more than all the
 * loop does for a message besides. The loop hands the thread the queue ID
 * of each finished file (its events are committed, so the message is
 * settled whether the rename is done or not: a crash before it leaves the
 * file in active/, and the next qmgr delivers it again, as a crash between
 * the commit and the removal always did: at least once, never lost); the
 * thread renames it to reuse/ret.QID and reports it back, the loop logs
 * it "removed" then (at the next hand-over or publish: the line comes
 * when the file has left active/, as it does for a removal in the loop),
 * and the loop's publish makes the reported ones free. What a publish leaves over
 * (reuse/ full: a queue that drains with nothing arriving) goes back to
 * the thread to be unlinked; and while the last count found reuse/ full
 * (a publish's, or a count every QMGR_REUSE_DELAY_MS while files are
 * handed over and none comes back), the thread unlinks finished files
 * from active/ at once: a return would only be surplus (one unlink, not a
 * rename, a count of reuse/ and an unlink). At most QMGR_SETTLE_BACKLOG
 * files wait for the thread; past that (or without the thread) the loop
 * renames itself.
 * A file whose defer log is to go with it is the loop's (the log must not
 * go first). The thread logs nothing: its failures are counted and logged
 * from the loop; a finished file it can neither rename nor unlink stays
 * in active/ and is delivered again at the next start, ret.* names it
 * cannot unlink are swept at the next start.
 */
#include "sys_defs.h"

#include <pthread.h>
#include <signal.h>

#include <event2/event.h>

#include "argv.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mono_ms.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile_reuse.h"
#include "qmgr.h"
#include "vstr.h"

#define QMGR_REUSE_DELAY_MS 200 /* a returned file waits at most this */
#define QMGR_REUSE_BATCH 256 /* ... or until this many wait */
#define QMGR_SETTLE_BACKLOG 256 /* most finished files the thread holds */

/* The thread's share: everything below lock is guarded by it. */
typedef struct QMGR_REMOVER {
    pthread_t thread;
    bool running; /* the thread was started */
    const char *queue_dir;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* work for the thread, or stop */
    pthread_cond_t idle; /* the thread holds no settle any more */
    ARGV *settle; /* queue IDs of finished files in active/ */
    size_t busy; /* settles the thread has taken and not reported */
    ARGV *renamed; /* ... now reuse/ret.QID: for the loop's publish */
    ARGV *gone; /* ... out of active/ (renamed or removed): logged */
    ARGV *paths; /* reuse/ret.* to unlink */
    bool full; /* reuse/ was full at the last count: settle unlinks */
    bool stop; /* exit once settle and paths are empty */
    long failed; /* unlinks of ret.* that failed (not ENOENT) */
    int failed_errno; /* ... the last one's errno */
    long stuck; /* finished files left in active/ (rename and unlink failed) */
    int stuck_errno;
} QMGR_REMOVER;

struct QMGR_REUSE {
    long limit; /* queue_file_reuse_limit */
    ARGV *returned; /* queue IDs of reuse/ret.* not yet free */
    bool full; /* the last count found limit free files or more */
    long long counted_ms; /* when (mono_ms) */
    ARGV *handing; /* queue IDs for the thread, handed together at the
                      end of the loop pass that settled them (hand_ev):
                      one wake-up, not one per file */
    struct event *hand_ev;
    struct event *publish_ev;
    QMGR_REMOVER remover;
};

/* qmgr_remover_settle - finished file qid out of active/: to ret.QID
   (added to done), or removed (reuse/ full); false when it stays (errno
   set) */
static bool qmgr_remover_settle(QMGR_REMOVER *rm, const char *qid, bool full,
                                VSTR *from, VSTR *to, ARGV *done)
{
    (void) mail_queue_path(from, rm->queue_dir, MAIL_QUEUE_ACTIVE, qid);
    if (full)
        return unlink(vstr_str(from)) == 0 || errno == ENOENT;
    vstr_sprintf(to, "%s/%s/%s%s", rm->queue_dir, MAIL_QUEUE_REUSE,
                 QFILE_REUSE_RETURNED, qid);
    if (rename(vstr_str(from), vstr_str(to)) == 0) {
        argv_add(done, qid);
        return true;
    }
    if (errno == ENOENT)
        return true;
    /* Not reused, then: removed, as without reuse. */
    return unlink(vstr_str(from)) == 0 || errno == ENOENT;
}

/* qmgr_remover_main - the thread: settle and unlink what is handed over */
static void *qmgr_remover_main(void *arg)
{
    QMGR_REMOVER *rm = arg;
    VSTR *from = vstr_alloc(100);
    VSTR *to = vstr_alloc(100);

    for (;;) {
        ARGV *settle;
        ARGV *paths;
        ARGV *done;
        ARGV *out;
        bool full;
        long failed = 0;
        int failed_errno = 0;
        long stuck = 0;
        int stuck_errno = 0;

        (void) pthread_mutex_lock(&rm->lock);
        while (rm->settle->argc == 0 && rm->paths->argc == 0 && !rm->stop)
            (void) pthread_cond_wait(&rm->wake, &rm->lock);
        if (rm->settle->argc == 0 && rm->paths->argc == 0) {
            (void) pthread_mutex_unlock(&rm->lock);
            break;
        }
        settle = rm->settle;
        rm->settle = argv_alloc(QMGR_REUSE_BATCH);
        rm->busy = settle->argc;
        full = rm->full;
        paths = rm->paths;
        rm->paths = argv_alloc(QMGR_REUSE_BATCH);
        (void) pthread_mutex_unlock(&rm->lock);

        done = argv_alloc(settle->argc + 1);
        out = argv_alloc(settle->argc + 1);
        for (size_t i = 0; i < settle->argc; i++) {
            if (!qmgr_remover_settle(rm, settle->argv[i], full, from, to,
                                     done)) {
                stuck++;
                stuck_errno = errno;
            } else {
                argv_add(out, settle->argv[i]);
            }
        }
        for (size_t i = 0; i < paths->argc; i++) {
            if (unlink(paths->argv[i]) < 0 && errno != ENOENT) {
                failed++;
                failed_errno = errno;
            }
        }
        argv_free(settle);
        argv_free(paths);

        (void) pthread_mutex_lock(&rm->lock);
        for (size_t i = 0; i < done->argc; i++)
            argv_add(rm->renamed, done->argv[i]);
        for (size_t i = 0; i < out->argc; i++)
            argv_add(rm->gone, out->argv[i]);
        rm->busy = 0;
        if (rm->settle->argc == 0)
            (void) pthread_cond_broadcast(&rm->idle);
        if (failed > 0) {
            rm->failed += failed;
            rm->failed_errno = failed_errno;
        }
        if (stuck > 0) {
            rm->stuck += stuck;
            rm->stuck_errno = stuck_errno;
        }
        (void) pthread_mutex_unlock(&rm->lock);
        argv_free(done);
        argv_free(out);
    }
    vstr_free(from);
    vstr_free(to);
    return NULL;
}

/* qmgr_remover_report - log the thread's failures since the last look */
static void qmgr_remover_report(long failed, int failed_errno, long stuck,
                                int stuck_errno)
{
    if (failed > 0)
        msg_warn("%ld finished queue file%s could not be removed from %s/: "
                 "%s (removed at the next start)",
                 failed, failed == 1 ? "" : "s", MAIL_QUEUE_REUSE,
                 strerror(failed_errno));
    if (stuck > 0)
        msg_warn("%ld finished queue file%s could be neither moved to %s/ nor "
                 "removed from %s/: %s (delivered again at the next start)",
                 stuck, stuck == 1 ? "" : "s", MAIL_QUEUE_REUSE,
                 MAIL_QUEUE_ACTIVE, strerror(stuck_errno));
}

/* qmgr_remover_take - under rm's lock: the list for the caller, a new
   empty one in its place; NULL when it is empty (it stays: collect runs
   at every hand-over, mostly to find nothing) */
static ARGV *qmgr_remover_take(ARGV **list)
{
    ARGV *taken = *list;

    if (taken->argc == 0)
        return NULL;
    *list = argv_alloc(QMGR_REUSE_BATCH);
    return taken;
}

/* qmgr_remover_collect - what the thread has renamed, into returned;
   true while it still holds settles */
static bool qmgr_remover_collect(QMGR_REMOVER *rm, ARGV *returned)
{
    long failed;
    int failed_errno;
    long stuck;
    int stuck_errno;
    bool pending;
    ARGV *renamed;
    ARGV *gone;

    (void) pthread_mutex_lock(&rm->lock);
    renamed = qmgr_remover_take(&rm->renamed);
    gone = qmgr_remover_take(&rm->gone);
    failed = rm->failed;
    failed_errno = rm->failed_errno;
    stuck = rm->stuck;
    stuck_errno = rm->stuck_errno;
    rm->failed = rm->stuck = 0;
    pending = rm->settle->argc + rm->busy > 0;
    (void) pthread_mutex_unlock(&rm->lock);
    for (size_t i = 0; renamed != NULL && i < renamed->argc; i++)
        argv_add(returned, renamed->argv[i]);
    argv_free(renamed);
    for (size_t i = 0; gone != NULL && i < gone->argc; i++)
        msg_info("%s: removed", gone->argv[i]);
    argv_free(gone);
    qmgr_remover_report(failed, failed_errno, stuck, stuck_errno);
    return pending;
}

/* qmgr_remover_add - hand the paths of surplus over (copied) */
static void qmgr_remover_add(QMGR_REMOVER *rm, ARGV *surplus)
{
    if (surplus->argc == 0)
        return;
    (void) pthread_mutex_lock(&rm->lock);
    for (size_t i = 0; i < surplus->argc; i++)
        argv_add(rm->paths, surplus->argv[i]);
    (void) pthread_cond_signal(&rm->wake);
    (void) pthread_mutex_unlock(&rm->lock);
}

/* qmgr_remover_room - whether the thread holds fewer than
   QMGR_SETTLE_BACKLOG files, with waiting more to come */
static bool qmgr_remover_room(QMGR_REMOVER *rm, size_t waiting)
{
    bool room;

    (void) pthread_mutex_lock(&rm->lock);
    room = rm->settle->argc + rm->busy + waiting < QMGR_SETTLE_BACKLOG;
    (void) pthread_mutex_unlock(&rm->lock);
    return room;
}

/* qmgr_remover_hand - the finished files of qids to the thread */
static void qmgr_remover_hand(QMGR_REMOVER *rm, const ARGV *qids)
{
    (void) pthread_mutex_lock(&rm->lock);
    for (size_t i = 0; i < qids->argc; i++)
        argv_add(rm->settle, qids->argv[i]);
    (void) pthread_cond_signal(&rm->wake);
    (void) pthread_mutex_unlock(&rm->lock);
}

/* qmgr_remover_start - the thread, or none (the loop does its work) */
static void qmgr_remover_start(QMGR_REMOVER *rm, const char *queue_dir)
{
    sigset_t all;
    sigset_t old;
    int ret;

    rm->queue_dir = queue_dir;
    rm->settle = argv_alloc(QMGR_REUSE_BATCH);
    rm->renamed = argv_alloc(QMGR_REUSE_BATCH);
    rm->gone = argv_alloc(QMGR_REUSE_BATCH);
    rm->paths = argv_alloc(QMGR_REUSE_BATCH);
    if (pthread_mutex_init(&rm->lock, NULL) != 0 ||
        pthread_cond_init(&rm->wake, NULL) != 0 ||
        pthread_cond_init(&rm->idle, NULL) != 0) {
        msg_warn("no thread to settle finished queue files: the loop does");
        return;
    }
    /* Signals stay the loop's: the thread starts with every one blocked. */
    (void) sigfillset(&all);
    (void) pthread_sigmask(SIG_SETMASK, &all, &old);
    ret = pthread_create(&rm->thread, NULL, qmgr_remover_main, rm);
    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret != 0) {
        msg_warn("no thread to settle finished queue files: %s: the loop "
                 "does",
                 strerror(ret));
        return;
    }
    rm->running = true;
}

/* qmgr_remover_stop - let the thread finish what it has, and end; what it
   renamed goes into returned */
static void qmgr_remover_stop(QMGR_REMOVER *rm, ARGV *returned)
{
    if (rm->running) {
        (void) pthread_mutex_lock(&rm->lock);
        rm->stop = true;
        (void) pthread_cond_signal(&rm->wake);
        (void) pthread_mutex_unlock(&rm->lock);
        (void) pthread_join(rm->thread, NULL);
        rm->running = false;
        (void) qmgr_remover_collect(rm, returned);
    }
    argv_free(rm->settle);
    argv_free(rm->renamed);
    argv_free(rm->gone);
    argv_free(rm->paths);
    rm->settle = rm->renamed = rm->gone = rm->paths = NULL;
}

/* qmgr_reuse_full - count free files (-1: unknown) were found in reuse/:
   at the limit, the thread removes finished files rather than return them
   (a return would be removed as surplus at the next publish anyway) */
static void qmgr_reuse_full(QMGR_REUSE *reuse, long count)
{
    reuse->counted_ms = mono_ms();
    reuse->full = count >= reuse->limit;
    if (reuse->remover.running) {
        (void) pthread_mutex_lock(&reuse->remover.lock);
        reuse->remover.full = reuse->full;
        (void) pthread_mutex_unlock(&reuse->remover.lock);
    }
}

/* qmgr_reuse_publish - what is returned becomes free */
static void qmgr_reuse_publish(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;
    bool pending = false;

    if (reuse->remover.running)
        pending = qmgr_remover_collect(&reuse->remover, reuse->returned);
    if (pending) {
        /* Those the thread still holds go with the next publish. */
        struct timeval again = {0, QMGR_REUSE_DELAY_MS * 1000};

        evtimer_add(reuse->publish_ev, &again);
    }
    if (reuse->returned->argc == 0) {
        /* While full the thread removes, nothing comes back: look again
           whether cleanup has taken free files meanwhile. */
        /* (half the delay: the timer that brings this may run early) */
        if (reuse->full &&
            mono_ms() - reuse->counted_ms >= QMGR_REUSE_DELAY_MS / 2)
            qmgr_reuse_full(reuse, qfile_reuse_free_count(ctx->conf.queue_dir));
        return;
    }
    /* Without the thread, the publish removes what it leaves over. */
    ARGV *surplus =
        reuse->remover.running ? argv_alloc(QMGR_REUSE_BATCH) : NULL;
    long free_now;

    (void) qfile_reuse_publish(ctx->conf.queue_dir, reuse->returned,
                               reuse->limit, &free_now, surplus);
    qmgr_reuse_full(reuse, free_now);
    if (surplus != NULL) {
        qmgr_remover_add(&reuse->remover, surplus);
        argv_free(surplus);
    }
    argv_free(reuse->returned);
    reuse->returned = argv_alloc(QMGR_REUSE_BATCH);
}

/* qmgr_reuse_event - the batch's time is up */
static void qmgr_reuse_event(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    qmgr_reuse_publish(arg);
}

/* qmgr_reuse_wait - one more returned (or handed over): publish at once
   when a batch is full, else make sure the timer runs */
static void qmgr_reuse_wait(QMGR_CTX *ctx, size_t waiting)
{
    QMGR_REUSE *reuse = ctx->reuse;

    if (waiting >= QMGR_REUSE_BATCH) {
        event_del(reuse->publish_ev);
        qmgr_reuse_publish(ctx);
    } else if (!evtimer_pending(reuse->publish_ev, NULL)) {
        struct timeval delay = {0, QMGR_REUSE_DELAY_MS * 1000};

        evtimer_add(reuse->publish_ev, &delay);
    }
}

/* qmgr_reuse_hand - what this loop pass settled, to the thread at once */
static void qmgr_reuse_hand(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;

    if (reuse == NULL || reuse->handing->argc == 0)
        return;
    qmgr_remover_hand(&reuse->remover, reuse->handing);
    argv_free(reuse->handing);
    reuse->handing = argv_alloc(QMGR_REUSE_BATCH);
    /* What the thread finished meanwhile is logged now. */
    (void) qmgr_remover_collect(&reuse->remover, reuse->returned);
    /* The thread's renames are published by the timer, every
       QMGR_REUSE_DELAY_MS (a publish at a full hand-over would find few
       of them done yet); while full the timer counts reuse/ again. */
    qmgr_reuse_wait(ctx, 0);
}

/* qmgr_reuse_hand_event - the end of the loop pass */
static void qmgr_reuse_hand_event(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    qmgr_reuse_hand(arg);
}

/* qmgr_reuse_init - read the limit, open what the batches need, sweep */
void qmgr_reuse_init(QMGR_CTX *ctx, const MAIL_CONF *conf)
{
    QMGR_REUSE *reuse;
    long limit = (long) mail_conf_int(conf, "queue_file_reuse_limit");

    if (limit <= 0) {
        /* No free file outlives the setting that made it. */
        (void) qfile_reuse_sweep(ctx->conf.queue_dir, true);
        return;
    }
    if (qfile_reuse_sweep(ctx->conf.queue_dir, false) < 0) {
        msg_warn("no %s/ folder: finished queue files are removed",
                 MAIL_QUEUE_REUSE);
        return;
    }
    reuse = mycalloc(1, sizeof(*reuse));
    reuse->limit = limit;
    reuse->returned = argv_alloc(QMGR_REUSE_BATCH);
    reuse->handing = argv_alloc(QMGR_REUSE_BATCH);
    if ((reuse->publish_ev = evtimer_new(ctx->base, qmgr_reuse_event, ctx)) ==
            NULL ||
        (reuse->hand_ev =
             event_new(ctx->base, -1, 0, qmgr_reuse_hand_event, ctx)) == NULL)
        msg_fatal("cannot create the reuse events");
    qmgr_remover_start(&reuse->remover, ctx->conf.queue_dir);
    ctx->reuse = reuse;
}

/* qmgr_reuse_return - the finished file of msg to reuse/: handed to the
   thread, or moved here; QMGR_REUSE_NO when it is not to be reused or
   cannot be (the caller removes it) */
int qmgr_reuse_return(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;
    QMGR_REUSE *reuse = ctx->reuse;
    VSTR *from;
    VSTR *to;
    bool moved;

    if (reuse == NULL || !msg->reusable)
        return QMGR_REUSE_NO;
    if (reuse->remover.running && !msg->defer_log_maybe &&
        qmgr_remover_room(&reuse->remover, reuse->handing->argc)) {
        /* event_active puts the hand-over behind every callback the
           loop has in hand (the commit that settled the file among
           them); waking it again meanwhile is a no-op. */
        argv_add(reuse->handing, msg->qid);
        event_active(reuse->hand_ev, EV_TIMEOUT, 0);
        return QMGR_REUSE_HANDED;
    }
    from = mail_queue_path(vstr_alloc(100), ctx->conf.queue_dir,
                           MAIL_QUEUE_ACTIVE, msg->qid);
    to = vstr_alloc(100);
    vstr_sprintf(to, "%s/%s/%s%s", ctx->conf.queue_dir, MAIL_QUEUE_REUSE,
                 QFILE_REUSE_RETURNED, msg->qid);
    moved = rename(vstr_str(from), vstr_str(to)) == 0;
    if (!moved && errno != ENOENT)
        msg_warn("%s: rename %s to %s: %m", msg->qid, vstr_str(from),
                 vstr_str(to));
    vstr_free(from);
    vstr_free(to);
    if (!moved)
        return QMGR_REUSE_NO;
    argv_add(reuse->returned, msg->qid);
    qmgr_reuse_wait(ctx, reuse->returned->argc);
    return QMGR_REUSE_MOVED;
}

/* qmgr_reuse_settled - every finished file handed over is out of active/:
   the loop waits for the thread (an admin request about a file in active/
   that is not in memory must not meet one that waits to go, delivered
   already) */
void qmgr_reuse_settled(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;
    QMGR_REMOVER *rm;

    if (reuse == NULL || !reuse->remover.running)
        return;
    qmgr_reuse_hand(ctx);
    rm = &reuse->remover;
    (void) pthread_mutex_lock(&rm->lock);
    while (rm->settle->argc > 0 || rm->busy > 0)
        (void) pthread_cond_wait(&rm->idle, &rm->lock);
    (void) pthread_mutex_unlock(&rm->lock);
    (void) qmgr_remover_collect(rm, reuse->returned);
}

/* qmgr_reuse_unsettled - finished files handed over and not yet out of
   active/ (they count against qmgr_message_active_limit: files in active/) */
size_t qmgr_reuse_unsettled(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;
    size_t count;

    if (reuse == NULL || !reuse->remover.running)
        return 0;
    (void) pthread_mutex_lock(&reuse->remover.lock);
    count = reuse->remover.settle->argc + reuse->remover.busy;
    (void) pthread_mutex_unlock(&reuse->remover.lock);
    return count + reuse->handing->argc;
}

/* qmgr_reuse_exit - the thread's work done, what is returned becomes free;
   release */
void qmgr_reuse_exit(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;

    if (reuse == NULL)
        return;
    qmgr_reuse_hand(ctx);
    qmgr_remover_stop(&reuse->remover, reuse->returned);
    qmgr_reuse_publish(ctx);
    argv_free(reuse->handing);
    event_free(reuse->hand_ev);
    event_free(reuse->publish_ev);
    argv_free(reuse->returned);
    myfree(reuse);
    ctx->reuse = NULL;
}
