/*
 * qmgr_reuse - finished queue files go to reuse/ instead of being removed
 *
 * A message that is done (every recipient delivered, or bounced with its
 * DSN out) leaves active/ by a rename to reuse/ret.QID instead of an
 * unlink, when its file came from incoming/ in this qmgr's life: its names
 * were then incoming/.tmp.QID or a free file's, incoming/QID and
 * active/QID, all known. Files that came back from deferred/ or hold/, or
 * that a start found in active/, are removed as before.
 *
 * The returned files are made free in batches (global/qfile_reuse.h): at
 * most QMGR_REUSE_DELAY_MS after the first of a batch, or at once when
 * QMGR_REUSE_BATCH are waiting, qmgr fsyncs active/ and incoming/
 * (incoming/'s through the fsync cleanup shares, which under load has
 * usually begun since) and renames each to free.QID. The fsyncs are the
 * price: two per batch, not per message. At start every ret.* left by a
 * crash is removed; at exit the batch in hand is made free.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <unistd.h>

#include <event2/event.h>

#include "argv.h"
#include "dir_sync.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile_reuse.h"
#include "qmgr.h"
#include "vstr.h"

#define QMGR_REUSE_DELAY_MS 200 /* a returned file waits at most this */
#define QMGR_REUSE_BATCH 256 /* ... or until this many wait */

struct QMGR_REUSE {
    long limit; /* queue_file_reuse_limit */
    int active_fd; /* open on active/ */
    DIR_SYNC *incoming_sync; /* shared with cleanup; NULL: fsync here */
    ARGV *returned; /* queue IDs of reuse/ret.* not yet free */
    struct event *publish_ev;
};

/* qmgr_reuse_publish - the batch in hand becomes free */
static void qmgr_reuse_publish(QMGR_CTX *ctx)
{
    QMGR_REUSE *reuse = ctx->reuse;

    if (reuse->returned->argc == 0)
        return;
    (void) qfile_reuse_publish(ctx->conf.queue_dir, reuse->active_fd,
                               reuse->incoming_sync, reuse->returned,
                               reuse->limit);
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
    VSTR *path;
    VSTR *state;
    VSTR *why;
    long limit = (long) mail_conf_int(conf, "queue_file_reuse_limit");

    if (limit <= 0) {
        /* No free file outlives the setting that made it. */
        (void) qfile_reuse_sweep(ctx->conf.queue_dir, true);
        return;
    }
    path = vstr_alloc(100);
    state = vstr_alloc(100);
    why = vstr_alloc(100);
    reuse = mycalloc(1, sizeof(*reuse));
    reuse->limit = limit;
    reuse->returned = argv_alloc(QMGR_REUSE_BATCH);
    vstr_sprintf(path, "%s/%s", ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE);
    if ((reuse->active_fd =
             open(vstr_str(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        msg_warn("open %s: %m: finished queue files are removed",
                 vstr_str(path));
        goto fail;
    }
    if ((reuse->publish_ev = evtimer_new(ctx->base, qmgr_reuse_event, ctx)) ==
        NULL)
        msg_fatal("cannot create the reuse event");
    vstr_sprintf(path, "%s/%s", ctx->conf.queue_dir, MAIL_QUEUE_INCOMING);
    vstr_sprintf(state, "%s/%s/%s", ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                 MAIL_QUEUE_INCOMING_SYNC);
    if ((reuse->incoming_sync =
             dir_sync_open(vstr_str(path), vstr_str(state), why)) == NULL)
        msg_warn("incoming/'s fsync is not shared: %s", vstr_str(why));
    if (qfile_reuse_sweep(ctx->conf.queue_dir, false) < 0) {
        msg_warn("no %s/ folder: finished queue files are removed",
                 MAIL_QUEUE_REUSE);
        goto fail;
    }
    ctx->reuse = reuse;
    goto out;

fail:
    if (reuse->active_fd >= 0)
        (void) close(reuse->active_fd);
    if (reuse->publish_ev)
        event_free(reuse->publish_ev);
    reuse->incoming_sync = dir_sync_free(reuse->incoming_sync);
    argv_free(reuse->returned);
    myfree(reuse);
out:
    vstr_free(path);
    vstr_free(state);
    vstr_free(why);
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

    if (reuse == NULL || !msg->from_incoming)
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
    event_free(reuse->publish_ev);
    (void) close(reuse->active_fd);
    reuse->incoming_sync = dir_sync_free(reuse->incoming_sync);
    argv_free(reuse->returned);
    myfree(reuse);
    ctx->reuse = NULL;
}
