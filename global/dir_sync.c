/*
 * dir_sync - one directory fsync shared by the processes renaming into it
 *
 * See dir_sync.h. The shared file holds DIR_SYNC_SHARED at offset 0; its
 * counters are lock-free 64-bit atomics (address-free, so they work in a
 * mapping shared between processes). Tickets are taken without the lock,
 * so a caller never waits to be counted; everything else changes only
 * under the lock.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "dir_sync.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"

#define DIR_SYNC_MAGIC 0x73796e32u /* "syn2" */
#define DIR_SYNC_SIZE 4096
#define DIR_SYNC_RANGES 16 /* failed ranges kept apart before merging */
#define DIR_SYNC_TICKET_MAX (1ULL << 62) /* more: a damaged file, reset */

/*
 * A failed fsync marks the tickets from just past synced (as it was then)
 * to the last one taken (when it returned) as failed, whatever any later
 * fsync says: their entries are not known to be durable, and a later fsync
 * may succeed without writing what the failed one could not. Tickets up
 * to synced were covered by a success first and stay durable. The failed
 * ranges accumulate (a later failure's range starts higher and must not
 * replace an earlier one while its tickets may still wait for the lock);
 * beyond DIR_SYNC_RANGES the two oldest merge, failing the tickets
 * between them too (conservative).
 */
typedef struct DIR_SYNC_RANGE {
    _Atomic uint64_t above; /* tickets > above ... */
    _Atomic uint64_t upto; /* ... and <= upto: failed */
} DIR_SYNC_RANGE;

typedef struct DIR_SYNC_SHARED {
    _Atomic uint32_t magic;
    _Atomic uint64_t tickets; /* callers counted so far */
    _Atomic uint64_t synced; /* tickets up to this covered by a success */
    _Atomic uint64_t busy; /* nonzero while the lock holder fsyncs */
    _Atomic uint32_t nfailed; /* ranges in failed[], oldest first */
    DIR_SYNC_RANGE failed[DIR_SYNC_RANGES];
} DIR_SYNC_SHARED;

struct DIR_SYNC {
    char *dir;
    int fd; /* the shared file, also the lock */
    DIR_SYNC_SHARED *shared;
};

/* dir_sync_raise - shared counter = max(counter, value) */
static void dir_sync_raise(_Atomic uint64_t *counter, uint64_t value)
{
    uint64_t old = atomic_load(counter);

    while (old < value && !atomic_compare_exchange_weak(counter, &old, value))
        ;
}

/* dir_sync_lock - flock(how), despite EINTR */
static int dir_sync_lock(int fd, int how)
{
    int ret;

    while ((ret = flock(fd, how)) < 0 && errno == EINTR)
        ;
    return ret;
}

/* dir_sync_fail_all - one failed range: every ticket taken so far */
static void dir_sync_fail_all(DIR_SYNC_SHARED *shared)
{
    atomic_store(&shared->failed[0].above, 0);
    atomic_store(&shared->failed[0].upto, atomic_load(&shared->tickets));
    atomic_store(&shared->nfailed, 1);
}

/* dir_sync_damaged - counters no run of this code can reach (a ticket
   could wrap to 0 and pass for synced): the file is damaged */
static bool dir_sync_damaged(DIR_SYNC_SHARED *shared)
{
    uint32_t count = atomic_load(&shared->nfailed);

    if (atomic_load(&shared->tickets) >= DIR_SYNC_TICKET_MAX ||
        atomic_load(&shared->synced) >= DIR_SYNC_TICKET_MAX)
        return true;
    for (uint32_t i = 0; i < count && i < DIR_SYNC_RANGES; i++)
        if (atomic_load(&shared->failed[i].upto) >= DIR_SYNC_TICKET_MAX)
            return true;
    return false;
}

/* dir_sync_repair - under the lock: failed ranges that are not ascending
   and within the tickets taken, or an fsync its caller never saw return
   (it died holding the lock): fail every ticket so far */
static void dir_sync_repair(DIR_SYNC_SHARED *shared)
{
    uint32_t count = atomic_load(&shared->nfailed);
    uint64_t prev = 0;
    bool sane = count <= DIR_SYNC_RANGES;

    for (uint32_t i = 0; sane && i < count; i++) {
        uint64_t above = atomic_load(&shared->failed[i].above);
        uint64_t upto = atomic_load(&shared->failed[i].upto);

        sane = (i == 0 || above >= prev) && above < upto;
        prev = upto;
    }
    dir_sync_raise(&shared->tickets, prev);
    if (!sane || atomic_load(&shared->busy) != 0) {
        dir_sync_fail_all(shared);
        atomic_store(&shared->busy, 0);
    }
}

/* dir_sync_is_failed - ticket lies in a failed range */
static bool dir_sync_is_failed(DIR_SYNC_SHARED *shared, uint64_t ticket)
{
    uint32_t count = atomic_load(&shared->nfailed);

    for (uint32_t i = 0; i < count && i < DIR_SYNC_RANGES; i++)
        if (ticket > atomic_load(&shared->failed[i].above) &&
            ticket <= atomic_load(&shared->failed[i].upto))
            return true;
    return false;
}

/* dir_sync_add_failed - under the lock, after a failed fsync: tickets in
   (above, upto] failed; joins the newest range when they meet */
static void dir_sync_add_failed(DIR_SYNC_SHARED *shared, uint64_t above,
                                uint64_t upto)
{
    uint32_t count = atomic_load(&shared->nfailed);

    if (above >= upto)
        return;
    if (count > 0 && above <= atomic_load(&shared->failed[count - 1].upto)) {
        dir_sync_raise(&shared->failed[count - 1].upto, upto);
        return;
    }
    if (count == DIR_SYNC_RANGES) {
        /* Merge the two oldest: the tickets between them fail too. */
        atomic_store(&shared->failed[0].upto,
                     atomic_load(&shared->failed[1].upto));
        for (uint32_t i = 1; i + 1 < count; i++) {
            atomic_store(&shared->failed[i].above,
                         atomic_load(&shared->failed[i + 1].above));
            atomic_store(&shared->failed[i].upto,
                         atomic_load(&shared->failed[i + 1].upto));
        }
        count--;
    }
    atomic_store(&shared->failed[count].above, above);
    atomic_store(&shared->failed[count].upto, upto);
    atomic_store(&shared->nfailed, count + 1);
}

/* dir_sync_open - share the fsyncs of dir through state_path */
DIR_SYNC *dir_sync_open(const char *dir, const char *state_path, VSTR *why)
{
    DIR_SYNC *sync;
    DIR_SYNC_SHARED *shared;
    struct stat st;
    void *map;
    int fd;

    if ((fd = open(state_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                   0600)) < 0) {
        vstr_sprintf(why, "open %s: %m", state_path);
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (st.st_size < DIR_SYNC_SIZE && ftruncate(fd, DIR_SYNC_SIZE) < 0)) {
        vstr_sprintf(why, "%s: %s", state_path,
                     S_ISREG(st.st_mode) ? strerror(errno)
                                         : "not a regular file");
        (void) close(fd);
        return NULL;
    }
    map = mmap(NULL, DIR_SYNC_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        vstr_sprintf(why, "mmap %s: %m", state_path);
        (void) close(fd);
        return NULL;
    }
    shared = map;

    /*
     * A fresh file is all zeros, which is a valid state. One that claims
     * more synced than tickets taken (torn by a crash, or written by
     * something else) would let a caller skip its fsync: repair it under
     * the lock before anyone relies on it. Failed ranges that make no
     * sense are replaced by one failing every ticket so far.
     */
    if (dir_sync_lock(fd, LOCK_EX) < 0) {
        vstr_sprintf(why, "lock %s: %m", state_path);
        (void) munmap(map, DIR_SYNC_SIZE);
        (void) close(fd);
        return NULL;
    }
    if (atomic_load(&shared->magic) != DIR_SYNC_MAGIC ||
        dir_sync_damaged(shared)) {
        atomic_store(&shared->tickets, 0);
        atomic_store(&shared->synced, 0);
        atomic_store(&shared->busy, 0);
        atomic_store(&shared->nfailed, 0);
        atomic_store(&shared->magic, DIR_SYNC_MAGIC);
    }
    dir_sync_raise(&shared->tickets, atomic_load(&shared->synced));
    dir_sync_repair(shared);
    (void) dir_sync_lock(fd, LOCK_UN);

    sync = mymalloc(sizeof(*sync));
    sync->dir = mystrdup(dir);
    sync->fd = fd;
    sync->shared = shared;
    return sync;
}

/* dir_sync_dir - the directory it syncs */
const char *dir_sync_dir(const DIR_SYNC *sync)
{
    return sync->dir;
}

/* dir_sync_tickets - callers counted so far, all processes */
unsigned long long dir_sync_tickets(const DIR_SYNC *sync)
{
    return atomic_load(&sync->shared->tickets);
}

/* dir_sync - an fsync of the directory begun after this call, shared */
int dir_sync(DIR_SYNC *sync)
{
    DIR_SYNC_SHARED *shared = sync->shared;
    uint64_t ticket = atomic_fetch_add(&shared->tickets, 1) + 1;
    uint64_t upto;
    int ret;
    int err;

    /* Beyond any real count (damaged after it was opened): alone. */
    if (ticket == 0 || ticket >= DIR_SYNC_TICKET_MAX)
        return safe_file_fsync_dir(sync->dir);
    if (dir_sync_lock(sync->fd, LOCK_EX) < 0) {
        msg_warn("lock the fsync state of %s: %m", sync->dir);
        if ((ret = safe_file_fsync_dir(sync->dir)) == 0 &&
            dir_sync_is_failed(shared, ticket)) {
            errno = EIO; /* read unlocked: a best effort */
            return -1;
        }
        return ret;
    }
    /* A caller that died in its fsync: not known to have succeeded. */
    if (atomic_load(&shared->busy) != 0)
        dir_sync_repair(shared);

    /*
     * The first fsync to cover the ticket decides: a failure fails it
     * whatever succeeds later; a success before any failure stands.
     */
    if (dir_sync_is_failed(shared, ticket)) {
        (void) dir_sync_lock(sync->fd, LOCK_UN);
        errno = EIO;
        return -1;
    }
    if (atomic_load(&shared->synced) >= ticket) {
        (void) dir_sync_lock(sync->fd, LOCK_UN);
        return 0;
    }

    /*
     * Every ticket up to upto was taken after its caller's renames had
     * returned, so before this fsync begins: it covers them all. When it
     * fails, so do the tickets taken while it ran (renames made during a
     * failing fsync are not known to be safe either); busy says, should
     * this process die before it records the outcome, that it is unknown.
     */
    upto = atomic_load(&shared->tickets);
    atomic_store(&shared->busy, upto);
    ret = safe_file_fsync_dir(sync->dir);
    err = errno;
    if (ret == 0)
        dir_sync_raise(&shared->synced, upto);
    else
        dir_sync_add_failed(shared, atomic_load(&shared->synced),
                            atomic_load(&shared->tickets));
    atomic_store(&shared->busy, 0);
    (void) dir_sync_lock(sync->fd, LOCK_UN);
    errno = err;
    return ret;
}

/* dir_sync_free - unmap and close */
DIR_SYNC *dir_sync_free(DIR_SYNC *sync)
{
    if (sync) {
        (void) munmap(sync->shared, DIR_SYNC_SIZE);
        (void) close(sync->fd);
        myfree(sync->dir);
        myfree(sync);
    }
    return NULL;
}
