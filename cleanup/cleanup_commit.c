/*
 * cleanup_commit - group commit: many messages, one directory fsync
 *
 * See cleanup_commit.h. The queue is an array in arrival order; a
 * libevent event, made active when the first message is queued, runs the
 * commit after the requests that were ready with it have been handled.
 */
#include "sys_defs.h"

#include <event2/event.h>

#include "cleanup.h"
#include "cleanup_commit.h"
#include "dir_sync.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"

#define CLEANUP_COMMIT_ERROR "4.3.0 queue file write error"

typedef struct CLEANUP_COMMIT_ITEM {
    CLEANUP_MSG *msg;
    CLEANUP_COMMIT_DONE done;
    void *arg;
} CLEANUP_COMMIT_ITEM;

struct CLEANUP_COMMIT {
    struct event *ev; /* runs the commit */
    DIR_SYNC *shared; /* incoming/'s fsync, shared with the other cleanups */
    CLEANUP_COMMIT_ITEM *items;
    size_t count;
    size_t cap;
};

/* cleanup_msg_commit - the message is ready: commit it now, or leave it
   pending for the daemon's queue */
int cleanup_msg_commit(CLEANUP_MSG *msg)
{
    msg->commit_pending = true;
    if (msg->defer_commit)
        return 0; /* cleanup_commit_add() */
    cleanup_commit_group(&msg, 1, NULL);
    return msg->status;
}

/* cleanup_msg_commit_done - the outcome of the message's commit */
void cleanup_msg_commit_done(CLEANUP_MSG *msg, QFILE_STEP step, int err)
{
    msg->commit_pending = false;
    if (step != QFILE_STEP_NONE) {
        msg_warn("commit %s: %s: %s", msg->qid, qfile_step_name(step),
                 strerror(err));
        cleanup_msg_fail(msg, 451, CLEANUP_COMMIT_ERROR);
        return;
    }
    msg->committed = true;
    /* Postfix's cleanup line; qmgr logs from=, size=, nrcpt= when it takes
       the file. */
    msg_info("%s: message-id=%s", msg->qid,
             msg->message_id ? msg->message_id : "<>");
    if (msg_verbose_get())
        msg_info("%s: committed, size=%lld, nrcpt=%d", msg->qid,
                 msg->content_size, msg->rcpt_count);
}

/* cleanup_commit_group - commit the pending messages together */
void cleanup_commit_group(CLEANUP_MSG **msgs, size_t count, DIR_SYNC *shared)
{
    QFILE_COMMIT *items = mycalloc(count ? count : 1, sizeof(*items));

    for (size_t i = 0; i < count; i++) {
        if (!msgs[i]->commit_pending || msgs[i]->out == NULL)
            msg_panic("%s: message %s is not ready", __func__, msgs[i]->qid);
        items[i].out = msgs[i]->out;
        items[i].path = msgs[i]->final_path;
        msgs[i]->out = NULL;
        msgs[i]->writer = NULL;
    }
    qfile_commit_group_shared(items, count, shared);
    for (size_t i = 0; i < count; i++)
        cleanup_msg_commit_done(msgs[i], items[i].step, items[i].error);
    myfree(items);
}

/* cleanup_commit_event - commit every queued message, answer each */
static void cleanup_commit_event(evutil_socket_t fd, short what, void *arg)
{
    CLEANUP_COMMIT *queue = arg;
    CLEANUP_COMMIT_ITEM *items = queue->items;
    size_t count = queue->count;
    CLEANUP_MSG **msgs;

    (void) fd;
    (void) what;
    if (count == 0)
        return;
    /* The callbacks may queue again (not in this protocol, but cheaply
       safe): start a fresh array. */
    queue->items = NULL;
    queue->count = queue->cap = 0;
    msgs = mymalloc_array(count, sizeof(*msgs));
    for (size_t i = 0; i < count; i++)
        msgs[i] = items[i].msg;
    cleanup_commit_group(msgs, count, queue->shared);
    if (msg_verbose_get())
        msg_info("group commit of %zu message%s", count, count == 1 ? "" : "s");
    for (size_t i = 0; i < count; i++)
        items[i].done(items[i].msg, items[i].msg->status, items[i].arg);
    myfree(msgs);
    myfree(items);
}

/* cleanup_commit_create - a commit queue run from base's loop */
CLEANUP_COMMIT *cleanup_commit_create(struct event_base *base,
                                      const char *queue_dir)
{
    CLEANUP_COMMIT *queue = mycalloc(1, sizeof(*queue));
    VSTR *dir = vstr_alloc(100);
    VSTR *state = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);

    /* Not shared (each group fsyncs incoming/ itself) when the state file
       cannot be had: slower, as safe. */
    vstr_sprintf(dir, "%s/%s", queue_dir, MAIL_QUEUE_INCOMING);
    vstr_sprintf(state, "%s/%s/%s", queue_dir, MAIL_QUEUE_PRIVATE,
                 MAIL_QUEUE_INCOMING_SYNC);
    if ((queue->shared = dir_sync_open(vstr_str(dir), vstr_str(state), why)) ==
        NULL)
        msg_warn("incoming/'s fsync is not shared: %s", vstr_str(why));
    vstr_free(dir);
    vstr_free(state);
    vstr_free(why);

    if ((queue->ev = event_new(base, -1, 0, cleanup_commit_event, queue)) ==
        NULL)
        msg_fatal("cannot create the commit event");
    return queue;
}

/* cleanup_commit_free - release the queue */
CLEANUP_COMMIT *cleanup_commit_free(CLEANUP_COMMIT *queue)
{
    if (queue) {
        /* Messages still queued belong to connections abandoned at exit:
           never answered, their files are left for cleanup_remove_stale. */
        event_free(queue->ev);
        queue->shared = dir_sync_free(queue->shared);
        myfree(queue->items);
        myfree(queue);
    }
    return NULL;
}

/* cleanup_commit_add - queue msg; the first one schedules the commit */
void cleanup_commit_add(CLEANUP_COMMIT *queue, CLEANUP_MSG *msg,
                        CLEANUP_COMMIT_DONE done, void *arg)
{
    if (queue->count == queue->cap) {
        queue->cap = queue->cap ? queue->cap * 2 : 16;
        queue->items =
            myrealloc_array(queue->items, queue->cap, sizeof(*queue->items));
    }
    queue->items[queue->count].msg = msg;
    queue->items[queue->count].done = done;
    queue->items[queue->count].arg = arg;
    if (queue->count++ == 0)
        event_active(queue->ev, 0, 0);
}

/* cleanup_commit_cancel - forget msg */
void cleanup_commit_cancel(CLEANUP_COMMIT *queue, CLEANUP_MSG *msg)
{
    for (size_t i = 0; i < queue->count; i++) {
        if (queue->items[i].msg == msg) {
            memmove(queue->items + i, queue->items + i + 1,
                    (queue->count - i - 1) * sizeof(*queue->items));
            queue->count--;
            msg->commit_pending = false;
            return;
        }
    }
}
