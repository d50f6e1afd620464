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
 * What a batch leaves over (reuse/ full: a queue that drains with nothing
 * arriving) is removed by a thread of its own: an unlink costs a file
 * system more than a rename (the inode and its blocks freed), and the
 * event loop need not wait for it; the rename to ret.QID has settled the
 * message already. The thread does nothing but unlink those ret.* names;
 * what it could not remove is logged from the loop and swept at the next
 * start. Without the thread (it could not be started) the loop unlinks.
 */
#include "sys_defs.h"

#include <pthread.h>
#include <signal.h>

#include <event2/event.h>

#include "argv.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile_reuse.h"
#include "qmgr.h"
#include "vstr.h"

#define QMGR_REUSE_DELAY_MS 200 /* a returned file waits at most this */
#define QMGR_REUSE_BATCH 256 /* ... or until this many wait */

/* The remover thread's share: everything below lock is guarded by it. */
typedef struct QMGR_REMOVER {
    pthread_t thread;
    bool running; /* the thread was started */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    ARGV *paths; /* reuse/ret.* to unlink */
    bool stop; /* exit once paths is empty */
    long failed; /* unlinks that failed (not ENOENT) since the last look */
    int failed_errno; /* ... the last one's errno */
} QMGR_REMOVER;

struct QMGR_REUSE {
    long limit; /* queue_file_reuse_limit */
    ARGV *returned; /* queue IDs of reuse/ret.* not yet free */
    struct event *publish_ev;
    QMGR_REMOVER remover;
};

/* qmgr_remover_main - the thread: unlink what is handed over */
static void *qmgr_remover_main(void *arg)
{
    QMGR_REMOVER *rm = arg;

    for (;;) {
        ARGV *paths;
        long failed = 0;
        int failed_errno = 0;

        (void) pthread_mutex_lock(&rm->lock);
        while (rm->paths->argc == 0 && !rm->stop)
            (void) pthread_cond_wait(&rm->wake, &rm->lock);
        if (rm->paths->argc == 0) {
            (void) pthread_mutex_unlock(&rm->lock);
            return NULL;
        }
        paths = rm->paths;
        rm->paths = argv_alloc(QMGR_REUSE_BATCH);
        (void) pthread_mutex_unlock(&rm->lock);
        for (size_t i = 0; i < paths->argc; i++) {
            if (unlink(paths->argv[i]) < 0 && errno != ENOENT) {
                failed++;
                failed_errno = errno;
            }
        }
        argv_free(paths);
        if (failed > 0) {
            (void) pthread_mutex_lock(&rm->lock);
            rm->failed += failed;
            rm->failed_errno = failed_errno;
            (void) pthread_mutex_unlock(&rm->lock);
        }
    }
}

/* qmgr_remover_add - hand the paths of surplus over (copied) */
static void qmgr_remover_add(QMGR_REMOVER *rm, ARGV *surplus)
{
    long failed;
    int failed_errno;

    if (surplus->argc == 0)
        return;
    (void) pthread_mutex_lock(&rm->lock);
    for (size_t i = 0; i < surplus->argc; i++)
        argv_add(rm->paths, surplus->argv[i]);
    failed = rm->failed;
    failed_errno = rm->failed_errno;
    rm->failed = 0;
    (void) pthread_cond_signal(&rm->wake);
    (void) pthread_mutex_unlock(&rm->lock);
    if (failed > 0)
        msg_warn("%ld finished queue file%s could not be removed from %s/: "
                 "%s (removed at the next start)",
                 failed, failed == 1 ? "" : "s", MAIL_QUEUE_REUSE,
                 strerror(failed_errno));
}

/* qmgr_remover_start - the thread, or none (the loop unlinks) */
static void qmgr_remover_start(QMGR_REMOVER *rm)
{
    sigset_t all;
    sigset_t old;
    int ret;

    rm->paths = argv_alloc(QMGR_REUSE_BATCH);
    if (pthread_mutex_init(&rm->lock, NULL) != 0 ||
        pthread_cond_init(&rm->wake, NULL) != 0) {
        msg_warn("no thread to remove finished queue files: the loop does");
        return;
    }
    /* Signals stay the loop's: the thread starts with every one blocked. */
    (void) sigfillset(&all);
    (void) pthread_sigmask(SIG_SETMASK, &all, &old);
    ret = pthread_create(&rm->thread, NULL, qmgr_remover_main, rm);
    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret != 0) {
        msg_warn("no thread to remove finished queue files: %s: the loop "
                 "does",
                 strerror(ret));
        return;
    }
    rm->running = true;
}

/* qmgr_remover_stop - let the thread finish what it has, and end */
static void qmgr_remover_stop(QMGR_REMOVER *rm)
{
    if (rm->running) {
        (void) pthread_mutex_lock(&rm->lock);
        rm->stop = true;
        (void) pthread_cond_signal(&rm->wake);
        (void) pthread_mutex_unlock(&rm->lock);
        (void) pthread_join(rm->thread, NULL);
        rm->running = false;
    }
    argv_free(rm->paths);
    rm->paths = NULL;
}

/* qmgr_reuse_publish - the batch in hand becomes free */
static void qmgr_reuse_publish(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;

    if (reuse->returned->argc == 0)
        return;
    /* Without the thread, the publish removes what it leaves over. */
    ARGV *surplus =
        reuse->remover.running ? argv_alloc(QMGR_REUSE_BATCH) : NULL;

    (void) qfile_reuse_publish(ctx->conf.queue_dir, reuse->returned,
                               reuse->limit, NULL, surplus);
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
    if ((reuse->publish_ev = evtimer_new(ctx->base, qmgr_reuse_event, ctx)) ==
        NULL)
        msg_fatal("cannot create the reuse event");
    qmgr_remover_start(&reuse->remover);
    ctx->reuse = reuse;
}

/* qmgr_reuse_return - move the finished file of msg to reuse/; false when
   it is not to be reused or cannot be (the caller removes it) */
bool qmgr_reuse_return(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;
    QMGR_REUSE *reuse = ctx->reuse;
    VSTR *from;
    VSTR *to;
    bool moved;

    if (reuse == NULL || !msg->reusable)
        return false;
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
        return false;
    argv_add(reuse->returned, msg->qid);
    if (reuse->returned->argc >= QMGR_REUSE_BATCH) {
        event_del(reuse->publish_ev);
        qmgr_reuse_publish(ctx);
    } else if (reuse->returned->argc == 1) {
        struct timeval delay = {0, QMGR_REUSE_DELAY_MS * 1000};

        evtimer_add(reuse->publish_ev, &delay);
    }
    return true;
}

/* qmgr_reuse_exit - the batch in hand becomes free; release */
void qmgr_reuse_exit(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;

    if (reuse == NULL)
        return;
    qmgr_reuse_publish(ctx);
    qmgr_remover_stop(&reuse->remover);
    event_free(reuse->publish_ev);
    argv_free(reuse->returned);
    myfree(reuse);
    ctx->reuse = NULL;
}
