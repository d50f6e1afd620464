/*
 * conn_stats - counts of SMTP connections shared through one file
 *
 * See conn_stats.h. Every word of a slot is read and written with the
 * compiler's atomic builtins: processes share the mapping, and only the
 * owner of a slot writes its counts.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "conn_stats.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"

#define CONN_STATS_MAGIC 0x736c7569636e7331ULL /* "sluicns1" */

const char *const conn_stats_tls_names[CONN_STATS_TLS_VERSIONS] = {
    "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "other",
};

typedef struct CONN_STATS_HEAD {
    uint64_t magic;
    uint64_t slots;
    uint64_t spare[14];
} CONN_STATS_HEAD;

typedef struct CONN_STATS_SLOT {
    int64_t pid; /* 0: free */
    int64_t dir; /* 0: never used, else CONN_STATS_DIR + 1 */
    int64_t active;
    uint64_t sessions;
    uint64_t tls[CONN_STATS_TLS_VERSIONS];
    uint64_t spare[6];
} CONN_STATS_SLOT;

#define CONN_STATS_SIZE                                                        \
    (sizeof(CONN_STATS_HEAD) + CONN_STATS_SLOTS * sizeof(CONN_STATS_SLOT))

struct CONN_STATS {
    void *map;
    CONN_STATS_SLOT *slot; /* ours */
    bool warned; /* the count went below zero once */
};

/* conn_stats_alive - does process pid exist? (EPERM: it does) */
static bool conn_stats_alive(long pid)
{
    return !(kill((pid_t) pid, 0) < 0 && errno == ESRCH);
}

/* conn_stats_path - QUEUE_DIR/stats/CONN_STATS_FILE into path */
static void conn_stats_path(VSTR *path, const char *queue_dir)
{
    vstr_sprintf(path, "%s/%s/%s", queue_dir, MAIL_QUEUE_STATS,
                 CONN_STATS_FILE);
}

/* conn_stats_check - is a mapped file ours? */
static bool conn_stats_check(const void *map)
{
    const CONN_STATS_HEAD *head = map;

    return head->magic == CONN_STATS_MAGIC && head->slots == CONN_STATS_SLOTS;
}

/* conn_stats_take - claim a slot of direction dir: first one of ours
   given back or left by a dead process, then a never used one */
static CONN_STATS_SLOT *conn_stats_take(void *map, CONN_STATS_DIR dir)
{
    CONN_STATS_SLOT *slots =
        (CONN_STATS_SLOT *) ((char *) map + sizeof(CONN_STATS_HEAD));
    int64_t me = (int64_t) getpid();
    int64_t want = (int64_t) dir + 1;

    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < CONN_STATS_SLOTS; i++) {
            CONN_STATS_SLOT *slot = &slots[i];
            int64_t d = __atomic_load_n(&slot->dir, __ATOMIC_ACQUIRE);
            int64_t p = __atomic_load_n(&slot->pid, __ATOMIC_ACQUIRE);

            if (pass == 0 &&
                (d != want || (p != 0 && conn_stats_alive((long) p))))
                continue;
            if (pass == 1 && (d != 0 || p != 0))
                continue;
            if (!__atomic_compare_exchange_n(&slot->pid, &p, me, false,
                                             __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE))
                continue;
            __atomic_store_n(&slot->active, 0, __ATOMIC_RELEASE);
            __atomic_store_n(&slot->dir, want, __ATOMIC_RELEASE);
            return slot;
        }
    }
    return NULL;
}

/* conn_stats_open - map the file, take a slot */
CONN_STATS *conn_stats_open(const char *queue_dir, CONN_STATS_DIR dir,
                            VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    CONN_STATS *stats = NULL;
    struct stat st;
    void *map;
    int fd;

    conn_stats_path(path, queue_dir);
    if ((fd = open(vstr_str(path), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        vstr_sprintf(why, "open %s: %s", vstr_str(path), strerror(errno));
        goto out;
    }
    /* One maker of a new file at a time. */
    if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0) {
        vstr_sprintf(why, "lock %s: %s", vstr_str(path), strerror(errno));
        (void) close(fd);
        goto out;
    }
    if (st.st_size == 0) {
        CONN_STATS_HEAD head = {.magic = CONN_STATS_MAGIC,
                                .slots = CONN_STATS_SLOTS};

        if (ftruncate(fd, (off_t) CONN_STATS_SIZE) < 0 ||
            pwrite(fd, &head, sizeof(head), 0) != (ssize_t) sizeof(head)) {
            vstr_sprintf(why, "make %s: %s", vstr_str(path), strerror(errno));
            (void) close(fd);
            goto out;
        }
    } else if (st.st_size != (off_t) CONN_STATS_SIZE) {
        vstr_sprintf(why, "%s: not a file of connection counts (%lld bytes)",
                     vstr_str(path), (long long) st.st_size);
        (void) close(fd);
        goto out;
    }
    map =
        mmap(NULL, CONN_STATS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    /* Unlocked by hand: the mapping keeps the open file (and a flock on
       it) after the close. */
    (void) flock(fd, LOCK_UN);
    (void) close(fd);
    if (map == MAP_FAILED) {
        vstr_sprintf(why, "map %s: %s", vstr_str(path), strerror(errno));
        goto out;
    }
    if (!conn_stats_check(map)) {
        vstr_sprintf(why, "%s: not a file of connection counts",
                     vstr_str(path));
        (void) munmap(map, CONN_STATS_SIZE);
        goto out;
    }
    stats = mycalloc(1, sizeof(*stats));
    stats->map = map;
    if ((stats->slot = conn_stats_take(map, dir)) == NULL) {
        vstr_sprintf(why, "%s: all %d slots are taken by live processes",
                     vstr_str(path), CONN_STATS_SLOTS);
        (void) munmap(map, CONN_STATS_SIZE);
        myfree(stats);
        stats = NULL;
    }
out:
    vstr_free(path);
    return stats;
}

/* conn_stats_close - give the slot back, unmap */
CONN_STATS *conn_stats_close(CONN_STATS *stats)
{
    if (stats == NULL)
        return NULL;
    __atomic_store_n(&stats->slot->active, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&stats->slot->pid, 0, __ATOMIC_RELEASE);
    (void) munmap(stats->map, CONN_STATS_SIZE);
    myfree(stats);
    return NULL;
}

/* conn_stats_connect - a connection opened */
void conn_stats_connect(CONN_STATS *stats)
{
    if (stats == NULL)
        return;
    __atomic_add_fetch(&stats->slot->active, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&stats->slot->sessions, 1, __ATOMIC_RELAXED);
}

/* conn_stats_disconnect - a counted connection closed */
void conn_stats_disconnect(CONN_STATS *stats)
{
    if (stats == NULL)
        return;
    /* Only a counter: a file zeroed or made again under us must never
       stop a session. Down by one, never below zero. */
    int64_t now = __atomic_load_n(&stats->slot->active, __ATOMIC_RELAXED);

    do {
        if (now <= 0) {
            __atomic_store_n(&stats->slot->active, 0, __ATOMIC_RELAXED);
            if (!stats->warned)
                msg_warn("connection counts: more connections closed than "
                         "opened (was the stats file changed?): count kept "
                         "at zero");
            stats->warned = true;
            return;
        }
    } while (!__atomic_compare_exchange_n(&stats->slot->active, &now, now - 1,
                                          false, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
}

/* conn_stats_tls - a TLS session established */
void conn_stats_tls(CONN_STATS *stats, const char *version)
{
    size_t i;

    if (stats == NULL)
        return;
    for (i = 0; i + 1 < CONN_STATS_TLS_VERSIONS; i++)
        if (version != NULL && strcmp(version, conn_stats_tls_names[i]) == 0)
            break;
    __atomic_add_fetch(&stats->slot->tls[i], 1, __ATOMIC_RELAXED);
}

/* conn_stats_read - the sums over every slot */
int conn_stats_read(const char *queue_dir, CONN_STATS_SUM *sum,
                    bool (*alive)(long pid), VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    const CONN_STATS_SLOT *slots;
    struct stat st;
    void *map;
    int fd;

    memset(sum, 0, sizeof(*sum));
    if (alive == NULL)
        alive = conn_stats_alive;
    conn_stats_path(path, queue_dir);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        int ret = errno == ENOENT ? 0 : -1;

        if (ret < 0)
            vstr_sprintf(why, "open %s: %s", vstr_str(path), strerror(errno));
        vstr_free(path);
        return ret;
    }
    if (fstat(fd, &st) < 0 || st.st_size != (off_t) CONN_STATS_SIZE) {
        /* Being made (empty), or not ours. */
        (void) close(fd);
        if (st.st_size == 0) {
            vstr_free(path);
            return 0;
        }
        vstr_sprintf(why, "%s: not a file of connection counts",
                     vstr_str(path));
        vstr_free(path);
        return -1;
    }
    map = mmap(NULL, CONN_STATS_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    (void) close(fd);
    if (map == MAP_FAILED || !conn_stats_check(map)) {
        vstr_sprintf(why, "%s: %s", vstr_str(path),
                     map == MAP_FAILED ? strerror(errno)
                                       : "not a file of connection counts");
        if (map != MAP_FAILED)
            (void) munmap(map, CONN_STATS_SIZE);
        vstr_free(path);
        return -1;
    }
    slots = (const CONN_STATS_SLOT *) ((const char *) map +
                                       sizeof(CONN_STATS_HEAD));
    for (size_t i = 0; i < CONN_STATS_SLOTS; i++) {
        const CONN_STATS_SLOT *slot = &slots[i];
        int64_t d = __atomic_load_n(&slot->dir, __ATOMIC_ACQUIRE);
        int64_t p = __atomic_load_n(&slot->pid, __ATOMIC_ACQUIRE);
        int64_t active = __atomic_load_n(&slot->active, __ATOMIC_RELAXED);

        if (d < 1 || d > CONN_STATS_DIRS)
            continue;
        d--;
        if (p != 0 && active > 0 && alive((long) p))
            sum->active[d] += active;
        sum->sessions[d] += __atomic_load_n(&slot->sessions, __ATOMIC_RELAXED);
        for (size_t v = 0; v < CONN_STATS_TLS_VERSIONS; v++)
            sum->tls[d][v] += __atomic_load_n(&slot->tls[v], __ATOMIC_RELAXED);
    }
    (void) munmap(map, CONN_STATS_SIZE);
    vstr_free(path);
    return 0;
}
