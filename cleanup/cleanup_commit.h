/*
 * cleanup_commit - group commit: many messages, one directory fsync
 *
 * The daemon does not commit a message the moment its END arrives: it
 * queues it, and once the event loop has handled every request that was
 * ready, it commits all the queued messages together
 * (global/qfile.h: qfile_commit_group): each file is written out, fsynced
 * and renamed into incoming/ (or hold/), then incoming/ is fsynced once,
 * which makes every rename before it durable. Only then does each client
 * get its answer, so the order of DESIGN.md's invariant 1 holds for every
 * message: file fsync, rename, directory fsync, answer. The ENDs that
 * arrive while a group is committing wait in their sockets and make the
 * next group, so the busier cleanup is, the more messages share an fsync.
 * A failed directory fsync fails every message of the group renamed into
 * that directory (each file is taken back, each client told 4xx).
 */
#ifndef CLEANUP_COMMIT_H
#define CLEANUP_COMMIT_H

#include "sys_defs.h"

#include "cleanup.h"
#include "dir_sync.h"

struct event_base;

typedef struct CLEANUP_COMMIT CLEANUP_COMMIT;

/* A queued message is committed (status 0) or failed (4xx, its reason in
   msg->reason); the callback answers the client. */
typedef void (*CLEANUP_COMMIT_DONE)(CLEANUP_MSG *msg, int status, void *arg);

/* cleanup_commit_create - a commit queue run from base's loop; its
   groups share incoming/'s fsync with the other cleanup processes of
   queue_dir (global/dir_sync.h) */
extern CLEANUP_COMMIT *cleanup_commit_create(struct event_base *base,
                                             const char *queue_dir);
/* cleanup_commit_free - release the queue (messages still in it are
   forgotten, not committed); NULL */
extern CLEANUP_COMMIT *cleanup_commit_free(CLEANUP_COMMIT *queue);
/* cleanup_commit_add - queue msg, which cleanup_msg_end() left with
   msg->commit_pending set; done(msg, status, arg) runs from the loop after
   the group's commit */
extern void cleanup_commit_add(CLEANUP_COMMIT *queue, CLEANUP_MSG *msg,
                               CLEANUP_COMMIT_DONE done, void *arg);
/* cleanup_commit_cancel - forget msg (its client went away before the
   commit); the caller frees it, which removes its file */
extern void cleanup_commit_cancel(CLEANUP_COMMIT *queue, CLEANUP_MSG *msg);
/* cleanup_commit_group - commit count messages (each left pending by
   cleanup_msg_end()) together; each one's status afterwards is
   msg->status (0: committed). shared (may be NULL): incoming/'s fsync
   shared with other processes */
extern void cleanup_commit_group(CLEANUP_MSG **msgs, size_t count,
                                 DIR_SYNC *shared);

#endif
