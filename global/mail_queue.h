/*
 * mail_queue - the queue directories and where a queue file lives
 *
 * queue_directory holds maildrop/ incoming/ active/ deferred/ hold/
 * corrupt/ defer/ bounce/ private/ public/ pid/. deferred/, defer/ and
 * bounce/ are hashed one level deep by qid_hash_char(), so a million files
 * never sit in one directory: deferred/K/QID.
 */
#ifndef MAIL_QUEUE_H
#define MAIL_QUEUE_H

#include "sys_defs.h"
#include "vstr.h"

#define MAIL_QUEUE_MAILDROP "maildrop"
#define MAIL_QUEUE_INCOMING "incoming"
#define MAIL_QUEUE_ACTIVE "active"
#define MAIL_QUEUE_DEFERRED "deferred"
#define MAIL_QUEUE_HOLD "hold"
#define MAIL_QUEUE_CORRUPT "corrupt"
#define MAIL_QUEUE_DEFER "defer"
#define MAIL_QUEUE_BOUNCE "bounce"
#define MAIL_QUEUE_PRIVATE "private"
#define MAIL_QUEUE_PUBLIC "public"
#define MAIL_QUEUE_PID "pid"
#define MAIL_QUEUE_EVENTS "events" /* the event journal (global/events.h) */
#define MAIL_QUEUE_API "api" /* the HTTP API's records (global/api_idem.h) */
#define MAIL_QUEUE_STATS "stats" /* counts for the metrics (conn_stats.h) */
#define MAIL_QUEUE_REUSE                                                       \
    "reuse" /* queue files to write again (qfile_reuse.h) */
/* In private/: the shared state of incoming/'s fsync (global/dir_sync.h),
   cleanup's group commits */
#define MAIL_QUEUE_INCOMING_SYNC ".incoming-sync"
/* A file moved into incoming/ from another queue gets this mode: it may
   still have an old name in a folder nobody fsynced, so its file is never
   written again with another message (global/qfile_reuse.h, which takes
   only cleanup's 0600 files) */
#define MAIL_QUEUE_MOVED_MODE 0640

/* public/qmgr: the wake-up trigger of the queue manager */
#define MAIL_QUEUE_QMGR_SERVICE "qmgr"

/* The names of the hash subdirectories, in order (32 of them). */
#define MAIL_QUEUE_HASH_COUNT 32
extern const char mail_queue_hash_chars[];

/* Every queue subdirectory, NULL-terminated, in creation order. */
extern const char *const mail_queue_names[];

/* mail_queue_known - is this one of mail_queue_names (exactly)? */
extern bool mail_queue_known(const char *queue_name);
/* mail_queue_of_messages - one of the queues that hold queue files
   (maildrop incoming active deferred hold corrupt)? The check a request
   naming a queue file passes before the name goes into a path. */
extern bool mail_queue_of_messages(const char *queue_name);
/* mail_queue_hashed - is this queue hashed one level deep? */
extern bool mail_queue_hashed(const char *queue_name);
/* mail_queue_holds - is the file open on fd still a queue file of qid
   (in incoming/, active/, deferred/, hold/, maildrop/ or corrupt/)? A reader outside qmgr asks
   after its read: a message that left the queue meanwhile may have its
   file written again with another message (global/qfile_reuse.h), so
   what was read is not this one's; one that only moved is still it */
extern bool mail_queue_holds(const char *queue_dir, const char *qid, int fd);
/* mail_queue_path - buf = queue_dir/queue_name[/H]/qid; returns buf */
extern VSTR *mail_queue_path(VSTR *buf, const char *queue_dir,
                             const char *queue_name, const char *qid);
/* mail_queue_service - buf = queue_dir/CLASS/name, the UNIX socket of a
   service; CLASS is MAIL_QUEUE_PRIVATE or MAIL_QUEUE_PUBLIC (anything else
   is a panic: a bug of ours); returns buf */
extern VSTR *mail_queue_service(VSTR *buf, const char *queue_dir,
                                const char *service_class, const char *name);
/* mail_queue_sync - fsync the folders of the count queues named, in that
   order (every rename into or out of them done before is then durable);
   0, or -1 with errno and the folder that failed in failed (may be NULL) */
extern int mail_queue_sync(const char *queue_dir, const char *const *queues,
                           size_t count, VSTR *failed);
/* mail_queue_move - durably rename qid from one queue to another (creating
   the hash subdirectory when needed); 0 or -1 with errno */
extern int mail_queue_move(const char *queue_dir, const char *from_queue,
                           const char *to_queue, const char *qid);
/* mail_queue_rename - rename qid from one queue to another without any
   fsync (a missing hash subdirectory is still created durably). For moves
   whose loss in a crash only means the file is found again where it was:
   incoming -> active, active -> deferred. 0 or -1 with errno */
extern int mail_queue_rename(const char *queue_dir, const char *from_queue,
                             const char *to_queue, const char *qid);
/* mail_queue_create_dirs - make every queue subdirectory (and the hash
   subdirectories) under queue_dir with mode; 0 or -1 with the reason in why */
extern int mail_queue_create_dirs(const char *queue_dir, mode_t mode,
                                  VSTR *why);
/* mail_queue_dir_mode - the mode queue_name has (sluice init, sluice
   check): 0700, but maildrop/ 01730 and public/ 0710 when the group
   setgid_group exists (group: they are that group's) */
extern mode_t mail_queue_dir_mode(const char *queue_name, bool group);
/* mail_queue_create_at - create name in parent_fd (AT_FDCWD: name is a
   path; path: its full name, for why) as a directory with exactly mode,
   given to uid and gid ((uid_t) -1, (gid_t) -1: the creator's), and fsync
   its parent. Returns the new directory open (opened without following a
   symbolic link unless follow; caller closes), or -1 with errno and the
   reason in why; errno EEXIST: name exists, nothing was done */
extern int mail_queue_create_at(int parent_fd, const char *name,
                                const char *path, bool follow, mode_t mode,
                                uid_t uid, gid_t gid, VSTR *why);

#endif
