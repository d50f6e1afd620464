/*
 * qfile_reuse - queue files written again instead of made anew
 *
 * The rules are in qfile_reuse.h. A producer reads the free names of
 * reuse/ once into a list and takes from it until it is used up; several
 * producers read the same folder, so each tries the files of its own
 * messages first, then the others in an order of its own, and passes
 * over a file another one took. When a
 * read finds nothing, the next one waits a while: a producer with no free
 * files creates them, as before, at no more cost than one readdir now and
 * then.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mono_ms.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile_reuse.h"
#include "qid.h"

#define QFILE_REUSE_BATCH 256 /* names read at once */
#define QFILE_REUSE_EMPTY_MS 200 /* after an empty read, none for this long */
#define QFILE_REUSE_STALE_MS 50 /* others' files of an older read: taken */

struct QFILE_REUSE {
    char *dir; /* queue_dir/reuse */
    ARGV *names; /* free names read last */
    size_t own; /* names[0, own) are of this process's messages */
    size_t done; /* names tried since */
    unsigned long long seed; /* qfile_reuse_random */
    long long empty_until; /* mono_ms: no read before */
    long long read_at; /* mono_ms of the last read */
    uid_t euid; /* a file to take is this process's */
};

/* qfile_reuse_name - prefix followed by a queue ID */
bool qfile_reuse_name(const char *name, const char *prefix, const char **qid)
{
    size_t len = strlen(prefix);

    if (strncmp(name, prefix, len) != 0 || !qid_valid(name + len))
        return false;
    if (qid)
        *qid = name + len;
    return true;
}

/* qfile_reuse_open - the producer's state */
QFILE_REUSE *qfile_reuse_open(const char *queue_dir)
{
    QFILE_REUSE *reuse = mycalloc(1, sizeof(*reuse));
    VSTR *path = vstr_alloc(100);

    vstr_sprintf(path, "%s/%s", queue_dir, QFILE_REUSE_DIR);
    reuse->dir = vstr_export(path);
    reuse->names = argv_alloc(QFILE_REUSE_BATCH);
    reuse->euid = geteuid();
    return reuse;
}

/* qfile_reuse_free - release */
QFILE_REUSE *qfile_reuse_free(QFILE_REUSE *reuse)
{
    if (reuse) {
        argv_free(reuse->names);
        myfree(reuse->dir);
        myfree(reuse);
    }
    return NULL;
}

/* qfile_reuse_random - xorshift64, seeded with the pid: an order per
   process, nothing secret */
static unsigned long long qfile_reuse_random(QFILE_REUSE *reuse)
{
    unsigned long long x = reuse->seed;

    if (x == 0)
        x = 0x9e3779b97f4a7c15ULL ^ (unsigned long long) getpid();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return reuse->seed = x;
}

/* qfile_reuse_shuffle - argv[from, to) in random order */
static void qfile_reuse_shuffle(QFILE_REUSE *reuse, size_t from, size_t to)
{
    char **argv = reuse->names->argv;

    for (size_t i = to; i > from + 1; i--) {
        size_t j = from + (size_t) (qfile_reuse_random(reuse) % (i - from));
        char *swap = argv[i - 1];

        argv[i - 1] = argv[j];
        argv[j] = swap;
    }
}

/* qfile_reuse_order - the files of this process's own messages first
   (the queue ID's pid part: nobody else looks at them first, so under a
   steady load each producer writes its own files again), then the rest;
   each part in an order of its own, since walks in one order would meet
   and try the same files in step, one failing each time */
static void qfile_reuse_order(QFILE_REUSE *reuse)
{
    char **argv = reuse->names->argv;
    size_t own = 0;
    const char *qid;

    for (size_t i = 0; i < reuse->names->argc; i++) {
        if (qfile_reuse_name(argv[i], QFILE_REUSE_FREE, &qid) &&
            qid_mine(qid)) {
            char *swap = argv[own];

            argv[own++] = argv[i];
            argv[i] = swap;
        }
    }
    qfile_reuse_shuffle(reuse, 0, own);
    qfile_reuse_shuffle(reuse, own, reuse->names->argc);
    reuse->own = own;
}

/* qfile_reuse_read - a new list of free names; false when none */
static bool qfile_reuse_read(QFILE_REUSE *reuse)
{
    struct dirent *entry;
    DIR *dir;

    argv_free(reuse->names);
    reuse->names = argv_alloc(QFILE_REUSE_BATCH);
    reuse->done = reuse->own = 0;
    if ((reuse->read_at = mono_ms()) < reuse->empty_until)
        return false;
    if ((dir = opendir(reuse->dir)) == NULL) {
        if (errno != ENOENT)
            msg_warn("open directory %s: %m", reuse->dir);
    } else {
        while (reuse->names->argc < QFILE_REUSE_BATCH &&
               (entry = readdir(dir)) != NULL)
            if (qfile_reuse_name(entry->d_name, QFILE_REUSE_FREE, NULL))
                argv_add(reuse->names, entry->d_name);
        closedir(dir);
    }
    if (reuse->names->argc == 0) {
        reuse->empty_until = mono_ms() + QFILE_REUSE_EMPTY_MS;
        return false;
    }
    qfile_reuse_order(reuse);
    return true;
}

/* qfile_reuse_lock - an OFD write lock on the whole file, not waiting */
int qfile_reuse_lock(int fd)
{
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET};

    return fcntl(fd, F_OFD_SETLK, &lock);
}

/* qfile_reuse_try - take the free file name; its fd, -1 when not that
   one, -2 when none can be taken now */
static int qfile_reuse_try(QFILE_REUSE *reuse, const char *name, VSTR *path,
                           off_t *size)
{
    struct stat st, named;
    int fd;

    vstr_sprintf(path, "%s/%s", reuse->dir, name);
    if ((fd = open(vstr_str(path),
                   O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) < 0) {
        switch (errno) {
        case EACCES:
        case EPERM:
        case ELOOP:
        case EISDIR:
        case ENXIO:
        case ETXTBSY:
            /* Not ours to write (another owner, a symbolic link, a FIFO):
               the name goes, whatever it leads to stays. */
            msg_warn("%s: not a file to reuse: %m: removed", vstr_str(path));
            if (unlink(vstr_str(path)) < 0 && errno != ENOENT)
                msg_warn("remove %s: %m", vstr_str(path));
            return -1;
        case EMFILE:
        case ENFILE:
            return -2; /* no descriptor for any: create as before */
        default:
            return -1; /* ENOENT: another producer wrote it into a queue */
        }
    }
    if (qfile_reuse_lock(fd) < 0 || fstat(fd, &st) < 0 ||
        lstat(vstr_str(path), &named) < 0 || named.st_ino != st.st_ino ||
        named.st_dev != st.st_dev) {
        /* Taken by another producer, which holds it, or held and let go
           once the name led elsewhere. */
        (void) close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != reuse->euid ||
        (st.st_mode & 07777) != QFILE_REUSE_MODE) {
        /* Never ours to write: the name goes, the file keeps its others. */
        msg_warn("%s: not a file to reuse (links %lu, owner %lu, mode %04o): "
                 "removed",
                 vstr_str(path), (unsigned long) st.st_nlink,
                 (unsigned long) st.st_uid, (unsigned) (st.st_mode & 07777));
        if (unlink(vstr_str(path)) < 0 && errno != ENOENT)
            msg_warn("remove %s: %m", vstr_str(path));
        (void) close(fd);
        return -1;
    }
    *size = st.st_size;
    return fd;
}

/* qfile_reuse_take - a free file, or -1: the own files of the list in
   hand, else of a new list, else the others' files of that list (the
   others of a list older than QFILE_REUSE_STALE_MS are mostly taken by
   their own producers by then); when a new list gives none, none is read
   for a while */
int qfile_reuse_take(QFILE_REUSE *reuse, VSTR *path, off_t *size)
{
    bool fresh = false;
    int fd;

    for (;;) {
        bool others =
            fresh || mono_ms() < reuse->read_at + QFILE_REUSE_STALE_MS;

        while (reuse->done < reuse->names->argc &&
               (reuse->done < reuse->own || others)) {
            const char *name = reuse->names->argv[reuse->done++];

            if ((fd = qfile_reuse_try(reuse, name, path, size)) >= 0)
                return fd;
            if (fd == -2)
                return -1;
        }
        if (fresh) {
            reuse->empty_until = mono_ms() + QFILE_REUSE_EMPTY_MS;
            return -1;
        }
        if (!qfile_reuse_read(reuse))
            return -1;
        fresh = true;
    }
}

/* qfile_reuse_count_free - free files in dir now; -1 when unreadable */
static long qfile_reuse_count_free(const char *dir)
{
    struct dirent *entry;
    DIR *dp;
    long count = 0;

    if ((dp = opendir(dir)) == NULL)
        return -1;
    while ((entry = readdir(dp)) != NULL)
        if (qfile_reuse_name(entry->d_name, QFILE_REUSE_FREE, NULL))
            count++;
    closedir(dp);
    return count;
}

/* qfile_reuse_free_count - count_free of queue_dir's reuse/ */
long qfile_reuse_free_count(const char *queue_dir)
{
    VSTR *dir = vstr_alloc(100);
    long count;

    vstr_sprintf(dir, "%s/%s", queue_dir, QFILE_REUSE_DIR);
    count = qfile_reuse_count_free(vstr_str(dir));
    vstr_free(dir);
    return count;
}

/* qfile_reuse_publish - fsyncs first, then free names */
size_t qfile_reuse_publish(const char *queue_dir, const ARGV *qids, long limit,
                           long *free_now, ARGV *surplus)
{
    static const char *const old_places[] = {MAIL_QUEUE_ACTIVE,
                                             MAIL_QUEUE_INCOMING};
    VSTR *dir = vstr_alloc(100);
    VSTR *from = vstr_alloc(100);
    VSTR *to = vstr_alloc(100);
    size_t made = 0;
    long found;
    long count;
    bool synced;

    /* Counted first: none to make free, no fsync (qmgr alone makes free
       files; cleanup's takes meanwhile only leave room unused). */
    vstr_sprintf(dir, "%s/%s", queue_dir, QFILE_REUSE_DIR);
    found = qfile_reuse_count_free(vstr_str(dir));
    synced = found >= 0 && found < limit;

    /* Every old name of the batch's files durably gone: their folders'
       fsyncs begin after the renames out of them. */
    if (synced && mail_queue_sync(queue_dir, old_places,
                                  SLUICE_ARRAY_LEN(old_places), from) < 0) {
        msg_warn("fsync %s: %m: finished queue files are removed",
                 vstr_str(from));
        synced = false;
    }
    count = synced ? found : -1;
    for (size_t i = 0; i < qids->argc; i++) {
        vstr_sprintf(from, "%s/%s%s", vstr_str(dir), QFILE_REUSE_RETURNED,
                     qids->argv[i]);
        vstr_sprintf(to, "%s/%s%s", vstr_str(dir), QFILE_REUSE_FREE,
                     qids->argv[i]);
        if (count >= 0 && count < limit) {
            if (rename(vstr_str(from), vstr_str(to)) == 0) {
                count++;
                made++;
                continue;
            }
            if (errno == ENOENT)
                continue;
            msg_warn("rename %s to %s: %m", vstr_str(from), vstr_str(to));
        }
        if (surplus != NULL)
            argv_add(surplus, vstr_str(from));
        else if (unlink(vstr_str(from)) < 0 && errno != ENOENT)
            msg_warn("remove %s: %m", vstr_str(from));
    }
    if (free_now)
        *free_now = synced ? count : found;
    vstr_free(dir);
    vstr_free(from);
    vstr_free(to);
    return made;
}

/* qfile_reuse_sweep - no ret.* survives a start */
long qfile_reuse_sweep(const char *queue_dir, bool all)
{
    VSTR *dir = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    struct dirent *entry;
    DIR *dp;
    long count = 0;

    vstr_sprintf(dir, "%s/%s", queue_dir, QFILE_REUSE_DIR);
    if ((dp = opendir(vstr_str(dir))) == NULL) {
        if (errno != ENOENT)
            msg_warn("open directory %s: %m", vstr_str(dir));
        count = -1;
    } else {
        while ((entry = readdir(dp)) != NULL) {
            if (qfile_reuse_name(entry->d_name, QFILE_REUSE_FREE, NULL) &&
                !all) {
                count++;
                continue;
            }
            if (!qfile_reuse_name(entry->d_name, QFILE_REUSE_RETURNED, NULL) &&
                !qfile_reuse_name(entry->d_name, QFILE_REUSE_FREE, NULL))
                continue;
            vstr_sprintf(path, "%s/%s", vstr_str(dir), entry->d_name);
            if (unlink(vstr_str(path)) < 0 && errno != ENOENT)
                msg_warn("remove %s: %m", vstr_str(path));
        }
        closedir(dp);
    }
    vstr_free(dir);
    vstr_free(path);
    return count;
}
