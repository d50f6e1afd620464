/*
 * dir_sync - one directory fsync shared by the processes renaming into it
 *
 * Several cleanup processes rename queue files into incoming/ and each must
 * see incoming/ fsynced after its renames before it answers (DESIGN.md
 * invariant 1). An fsync of a directory makes durable every change made to
 * it before the fsync began, whoever made it, so one process's fsync can
 * stand for another's: a group commit across processes.
 *
 * The processes share a small file (mapped) of counters and an flock(2)
 * on it. A caller, after its renames have returned, takes a ticket (the
 * count of callers so far, plus one), then the lock. Holding it: the
 * first fsync to cover the ticket (one that began after it was taken)
 * decides. When that one failed, the caller fails, whatever any later
 * fsync says (its entries are not known to be durable, and a later fsync
 * may succeed without writing what the first could not); when it
 * succeeded, the caller is done without an fsync of its own, whatever
 * failed later; when none has yet, the caller notes the count of tickets
 * taken so far, fsyncs the directory itself and records that count as
 * synced, or on failure every ticket not yet synced, up to those taken
 * while it ran, as failed. Failed ranges accumulate (the tickets of an old
 * failure may wait for the lock long: flock is not first-come
 * first-served); past a few the oldest merge, failing the tickets between
 * them too. The lock is held across the fsync, so the callers that arrive
 * meanwhile share the next one. A process that dies holding the lock
 * releases it; when it died in its fsync, every ticket taken so far fails
 * (the fsync's outcome is unknown).
 *
 * The counters need not survive a reboot (after one every caller is new);
 * a file found inconsistent (synced beyond the tickets taken, failed
 * ranges out of order) is repaired before use. When the shared file cannot be opened or locked the caller
 * just fsyncs the directory itself.
 */
#ifndef DIR_SYNC_H
#define DIR_SYNC_H

#include "sys_defs.h"

#include "vstr.h"

typedef struct DIR_SYNC DIR_SYNC;

/* dir_sync_open - share the fsyncs of dir through the file state_path
   (created mode 0600 when missing); NULL with the reason in why */
extern DIR_SYNC *dir_sync_open(const char *dir, const char *state_path,
                               VSTR *why);
/* dir_sync_dir - the directory it syncs */
extern const char *dir_sync_dir(const DIR_SYNC *sync);
/* dir_sync - call after renames into the directory have returned: 0 when
   the first fsync of it to begin after this call (this process's or
   another's) succeeded, -1 with errno when it failed (or may have) */
extern int dir_sync(DIR_SYNC *sync);
/* dir_sync_tickets - how many calls of dir_sync() all processes have made
   (for tests and logs) */
extern unsigned long long dir_sync_tickets(const DIR_SYNC *sync);
/* dir_sync_free - unmap and close; NULL. NULL is a no-op */
extern DIR_SYNC *dir_sync_free(DIR_SYNC *sync);

#endif
