/*
 * qfile_reuse - queue files written again instead of made anew
 *
 * Creating and deleting an inode per message is the costliest thing the
 * queue does on a file system without a journal: ext4 then keeps a deleted
 * inode out of use for a minute or more and every create walks past the
 * recently deleted ones of its group (bench/PROFILE.md). So a finished
 * queue file is kept and written again with a later message.
 *
 * The files wait in queue_dir/reuse/, a folder no reader of queue files
 * looks at, under two kinds of names:
 *
 *   ret.QID    qmgr's: the file of the finished message QID, renamed there
 *              from active/. One of its old names may still be on disk
 *              (active/QID, incoming/QID), so it must not be written yet.
 *   free.QID   may be written: qmgr renames ret.QID to free.QID only after
 *              an fsync of active/ and one of incoming/ that began after
 *              the file left them, so no crash can bring back an old name
 *              for it. A file that carried a new message's content under
 *              an old name would be that message delivered twice, or a
 *              corrupt file.
 *
 * A producer (cleanup) takes a free file by opening it and taking an OFD
 * write lock on it (no other producer takes a locked file), then checks
 * that the name still leads to that file (it was not renamed into a queue
 * while the lock was being taken), that it is a regular file of the
 * producer's, mode 0600, with exactly one link (a crash on a file system
 * without a journal can leave a second name, which fsck counts). It
 * overwrites the file from offset 0, truncates what the old message left
 * beyond the new one, fsyncs it and renames it into incoming/ (qfile.h):
 * that one rename both publishes the message and takes the file out of
 * reuse/, so the directory fsync that makes the message durable makes its
 * leaving reuse/ durable with it (a rename is one change to the file
 * system; a file system without a journal may write the two directories
 * separately, which fsck shows as a second link, refused above). A
 * producer that fails leaves the file where it was, free, its content
 * of no meaning.
 *
 * Only cleanup's own files (mode 0600, its owner) that went straight from
 * it through incoming/ and active/ are returned: a file moved back into
 * incoming/ from another queue has mode 0640 (global/mail_queue.h), since
 * its old name there may not be durably gone.
 *
 * Nothing here holds a message that was acknowledged: a crash at any point
 * loses at most a file of reuse/ (qmgr removes every ret.* at start). On a
 * file system with a journal (ext4's default, XFS) a rename is one
 * change and an fsync commits every change before it, so no old name can
 * come back. Without a journal the two folders of a rename reach the disk
 * separately and after a crash a file may have two names; fsck (which
 * Debian runs at boot on such a file system) counts its links, and the
 * one-link check above refuses it.
 */
#ifndef QFILE_REUSE_H
#define QFILE_REUSE_H

#include "sys_defs.h"

#include <sys/types.h>

#include "argv.h"
#include "mail_queue.h"
#include "vstr.h"

#define QFILE_REUSE_DIR MAIL_QUEUE_REUSE /* under queue_directory */
#define QFILE_REUSE_RETURNED "ret." /* ret.QID: not to be written yet */
#define QFILE_REUSE_FREE "free." /* free.QID: may be written */
#define QFILE_REUSE_MODE 0600 /* cleanup's queue files */

typedef struct QFILE_REUSE QFILE_REUSE;

/* qfile_reuse_name - is name prefix followed by a queue ID? qid (may be
   NULL) gets the ID */
extern bool qfile_reuse_name(const char *name, const char *prefix,
                             const char **qid);

/*
 * The producer's side.
 */

/* qfile_reuse_open - the free files of queue_dir/reuse/, for one process */
extern QFILE_REUSE *qfile_reuse_open(const char *queue_dir);
/* qfile_reuse_take - a free file opened for writing at offset 0, locked
   until its descriptor is closed; path gets its name, *size its length
   now. -1 when there is none (the caller creates a file) */
extern int qfile_reuse_take(QFILE_REUSE *reuse, VSTR *path, off_t *size);
/* qfile_reuse_lock - lock fd as a taken file is (a file made to replace
   a taken one under its name); 0, or -1 with errno */
extern int qfile_reuse_lock(int fd);
/* qfile_reuse_free - release; NULL. NULL is a no-op */
extern QFILE_REUSE *qfile_reuse_free(QFILE_REUSE *reuse);

/*
 * The queue manager's side.
 */

/* qfile_reuse_publish - make the returned files of qids (ret.QID) free:
   when fewer than limit free files are there, fsync active/, then
   incoming/, then rename each ret.QID to free.QID while fewer than limit
   are; the rest are removed, or,
   with surplus not NULL, their paths added to it for the caller to
   remove. On a failed fsync every one is removed so. Returns how many
   were made free; *free_now (may be NULL) the free files there are after,
   -1 when unknown */
extern size_t qfile_reuse_publish(const char *queue_dir, const ARGV *qids,
                                  long limit, long *free_now, ARGV *surplus);
/* qfile_reuse_free_count - the free files in queue_dir's reuse/ now; -1
   when it cannot be read */
extern long qfile_reuse_free_count(const char *queue_dir);
/* qfile_reuse_sweep - remove every ret.* (at start: a crash may have left
   some whose old names are not known to be gone), and with all every
   free.* too (reuse turned off); returns how many free files are left,
   -1 when reuse/ cannot be read */
extern long qfile_reuse_sweep(const char *queue_dir, bool all);

#endif
