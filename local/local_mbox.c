/*
 * local_mbox - mbox files and Maildirs
 *
 * mbox: the file is opened for append (never through a symlink); when
 * root writes it for a user (uid given), a file that was there already
 * must be that user's, with one link (else the delivery is deferred). It
 * is opened O_NONBLOCK and must be a regular file (a FIFO or a device
 * never blocks us: the delivery is deferred). It is locked with a dot lock
 * (path.lock, created O_EXCL; a lock older than LOCAL_DOTLOCK_STALE
 * seconds is renamed aside and removed) and an fcntl lock, both within
 * lock_wait seconds (else deferred: "mailbox is locked"), then one message
 * is written: a From_ line, Delivered-To and Return-Path, the content with
 * ">From " quoting, an empty line. The file (and its folder, when the file
 * is new) is fsynced before the result says "sent"; after a failed write
 * it is truncated back to its old size, so a reader never sees half a
 * message.
 *
 * Maildir: the message is written to tmp/UNIQUE, fsynced, renamed into
 * new/, and new/ is fsynced; folders made on the way are fsynced into
 * their parents.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "local.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define LOCAL_DOTLOCK_STALE 300 /* seconds: a dead writer's lock */
#define LOCAL_LOCK_POLL_USEC 20000

/* local_msg_text - the optional delivery headers, then the content */
void local_msg_text(const LOCAL_MSG *msg, VSTR *out)
{
    vstr_reset(out);
    if (msg->delivered_to)
        vstr_sprintf(out, "Delivered-To: %s\nReturn-Path: <%s>\n",
                     msg->recipient, msg->sender);
    vstr_ncat(out, msg->content, msg->len);
}

/* local_now - CLOCK_MONOTONIC seconds, for lock deadlines */
static double local_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* local_dotlock_break - remove a stale dot lock without removing a fresh
   one that replaced it meanwhile: rename it aside, make sure the inode
   moved is the one judged stale, then unlink it (else put it back) */
static void local_dotlock_break(const char *lock, const struct stat *stale)
{
    static unsigned long count;
    VSTR *aside = vstr_alloc(100);
    struct stat st;

    vstr_sprintf(aside, "%s.stale.%ld.%lu", lock, (long) getpid(), ++count);
    if (rename(lock, vstr_str(aside)) == 0) {
        if (lstat(vstr_str(aside), &st) == 0 &&
            (st.st_dev != stale->st_dev || st.st_ino != stale->st_ino))
            (void) link(vstr_str(aside), lock); /* not ours to break */
        (void) unlink(vstr_str(aside));
    }
    vstr_free(aside);
}

/* local_dotlock_take - create path.lock before deadline; 0, 1 when the
   folder does not let us (the fcntl lock alone then), or -1 with the
   reason in res */
static int local_dotlock_take(const char *lock, double deadline,
                              LOCAL_RESULT *res)
{
    int fd;

    for (;;) {
        struct stat st;

        if ((fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) >=
            0) {
            (void) close(fd);
            return 0;
        }
        if (errno == EACCES || errno == EROFS || errno == EPERM)
            return 1;
        if (errno != EEXIST) {
            local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                             "cannot create lock file %s: %s", lock,
                             strerror(errno));
            return -1;
        }
        if (lstat(lock, &st) == 0 &&
            st.st_mtime + LOCAL_DOTLOCK_STALE < time(NULL)) {
            local_dotlock_break(lock, &st); /* its writer is gone */
            continue;
        }
        if (local_now() > deadline) {
            local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                             "mailbox is locked: cannot lock %s: the lock "
                             "file is held",
                             lock);
            return -1;
        }
        usleep(LOCAL_LOCK_POLL_USEC);
    }
}

/* local_fcntl_lock - an fcntl write lock on fd before deadline; 0, or -1
   with the reason in res */
static int local_fcntl_lock(int fd, const char *path, double deadline,
                            LOCAL_RESULT *res)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(fd, F_SETLK, &fl) < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != EACCES) {
            local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                             "cannot lock mailbox %s: %s", path,
                             strerror(errno));
            return -1;
        }
        if (local_now() > deadline) {
            local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                             "mailbox is locked: %s", path);
            return -1;
        }
        usleep(LOCAL_LOCK_POLL_USEC);
    }
    return 0;
}

/* local_open_regular - open path for append without blocking on a FIFO
   or a device: O_NONBLOCK, fstat, then blocking again. Creates the file
   (O_EXCL) when missing; *created says so. -1 with the reason in res. */
static int local_open_regular(const char *path, struct stat *st, bool *created,
                              LOCAL_RESULT *res)
{
    int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd;

    /* Made here, or there before us: root must not append to (or chown)
       a file that someone else put in a shared spool for the user. */
    fd = open(path, flags | O_CREAT | O_EXCL, 0600);
    *created = fd >= 0;
    if (fd < 0 && errno == EEXIST)
        fd = open(path, flags);
    if (fd < 0 && errno == ENXIO) { /* a FIFO with no reader */
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "mailbox %s is not a regular file", path);
        return -1;
    }
    if (fd < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot open mailbox %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "mailbox %s is not a regular file", path);
        (void) close(fd);
        return -1;
    }
    if (fcntl(fd, F_SETFL, O_WRONLY | O_APPEND) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot open mailbox %s: fcntl: %s", path,
                         strerror(errno));
        (void) close(fd);
        return -1;
    }
    /* A new name in the folder must survive a crash once we say "sent". */
    if (*created && safe_file_fsync_parent(path) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot fsync the folder of %s: %s", path,
                         strerror(errno));
        (void) close(fd);
        return -1;
    }
    return fd;
}

/* local_mbox_deliver - append one message to an mbox file */
void local_mbox_deliver(const char *path, const LOCAL_MSG *msg,
                        long long size_limit, uid_t uid, gid_t gid,
                        int lock_wait, LOCAL_RESULT *res)
{
    VSTR *lock = vstr_alloc(100);
    VSTR *text = vstr_alloc(msg->len + 512);
    struct stat st;
    double deadline;
    bool bol = true;
    bool created;
    int dotlock;
    int fd;

    vstr_sprintf(lock, "%s.lock", path);
    deadline = local_now() + lock_wait;
    if ((dotlock = local_dotlock_take(vstr_str(lock), deadline, res)) < 0)
        goto out;
    if ((fd = local_open_regular(path, &st, &created, res)) < 0)
        goto unlock;
    if (local_fcntl_lock(fd, path, deadline, res) < 0)
        goto close;
    if (fstat(fd, &st) < 0) { /* its size under the lock */
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot stat mailbox %s: %s", path, strerror(errno));
        goto close;
    }
    /* An empty file of root's is one an earlier delivery made and could
       not give away: take it over. */
    if (uid != (uid_t) -1 && !created &&
        (st.st_nlink != 1 ||
         (st.st_uid != uid && !(st.st_uid == 0 && st.st_size == 0)))) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "mailbox %s: owner uid %ld, not %ld, or %ld links",
                         path, (long) st.st_uid, (long) uid,
                         (long) st.st_nlink);
        goto close;
    }
    if (st.st_size == 0 && (uid != (uid_t) -1 || gid != (gid_t) -1) &&
        fchown(fd, uid, gid) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot chown mailbox %s: %s", path, strerror(errno));
        goto close;
    }

    /* The whole message, then one write. */
    local_from_line(text, msg->sender, msg->arrival);
    if (msg->delivered_to) {
        vstr_sprintf_append(text, "Delivered-To: %s\n", msg->recipient);
        vstr_sprintf_append(text, "Return-Path: <%s>\n", msg->sender);
    }
    local_mbox_quote(msg->content, msg->len, &bol, text);
    if (!bol)
        vstr_addch(text, '\n');
    vstr_addch(text, '\n');
    if (size_limit > 0 &&
        (long long) st.st_size + (long long) vstr_len(text) > size_limit) {
        local_result_set(res, LOCAL_STAT_BOUNCE, "5.2.2",
                         "cannot update mailbox %s: mailbox full (limit "
                         "%lld bytes)",
                         path, size_limit);
        goto close;
    }
    if (safe_file_write_all(fd, vstr_str(text), vstr_len(text)) < 0 ||
        fsync(fd) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot update mailbox %s: %s", path, strerror(errno));
        if (ftruncate(fd, st.st_size) < 0 || fsync(fd) < 0)
            local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                             "cannot update mailbox %s, nor truncate it "
                             "back: %s",
                             path, strerror(errno));
        goto close;
    }
    local_result_set(res, LOCAL_STAT_SENT, "2.0.0", "mailbox");

close:
    (void) close(fd); /* releases the fcntl lock */
unlock:
    if (dotlock == 0)
        (void) unlink(vstr_str(lock));
out:
    vstr_free(lock);
    vstr_free(text);
}

/* local_mkdir_p - mkdir with parents (mode 0700), each new folder made
   durable in its parent */
int local_mkdir_p(const char *dir)
{
    char *copy = mystrdup(dir);
    int ret = 0;

    for (char *cp = copy + 1;; cp++) {
        if (*cp == '/' || *cp == 0) {
            char saved = *cp;

            *cp = 0;
            if (mkdir(copy, 0700) == 0) {
                if (safe_file_fsync_parent(copy) < 0) {
                    ret = -1;
                    break;
                }
            } else if (errno != EEXIST) {
                ret = -1;
                break;
            }
            *cp = saved;
            if (saved == 0)
                break;
        }
    }
    myfree(copy);
    return ret;
}

/* local_maildir_deliver - one message into a Maildir */
void local_maildir_deliver(const char *dir, const LOCAL_MSG *msg,
                           long long size_limit, LOCAL_RESULT *res)
{
    static unsigned long count;
    static const char *const subdirs[] = {"tmp", "new", "cur"};
    VSTR *path = vstr_alloc(200);
    VSTR *name = vstr_alloc(100);
    VSTR *tmp = vstr_alloc(200);
    VSTR *text = vstr_alloc(msg->len + 256);
    struct timeval tv;
    char host[256];
    int fd;

    local_msg_text(msg, text);
    if (size_limit > 0 && (long long) vstr_len(text) > size_limit) {
        local_result_set(res, LOCAL_STAT_BOUNCE, "5.2.3",
                         "message is larger than the mailbox size limit "
                         "(%lld bytes)",
                         size_limit);
        goto out;
    }
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(subdirs); i++) {
        vstr_sprintf(path, "%s/%s", dir, subdirs[i]);
        if (local_mkdir_p(vstr_str(path)) < 0) {
            local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                             "cannot create Maildir %s: %s", vstr_str(path),
                             strerror(errno));
            goto out;
        }
    }
    if (gethostname(host, sizeof(host)) < 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = 0;
    gettimeofday(&tv, NULL);
    local_maildir_name(name, &tv, (long) getpid(), ++count, host);
    vstr_sprintf(tmp, "%s/tmp/%s", dir, vstr_str(name));
    vstr_sprintf(path, "%s/new/%s", dir, vstr_str(name));
    fd = open(vstr_str(tmp),
              O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot create Maildir file %s: %s", vstr_str(tmp),
                         strerror(errno));
        goto out;
    }
    if (safe_file_write_all(fd, vstr_str(text), vstr_len(text)) < 0 ||
        fsync(fd) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot write Maildir file %s: %s", vstr_str(tmp),
                         strerror(errno));
        (void) close(fd);
        (void) unlink(vstr_str(tmp));
        goto out;
    }
    (void) close(fd);
    if (rename(vstr_str(tmp), vstr_str(path)) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                         "cannot rename %s to %s: %s", vstr_str(tmp),
                         vstr_str(path), strerror(errno));
        (void) unlink(vstr_str(tmp));
        goto out;
    }
    vstr_sprintf(tmp, "%s/new", dir);
    if (safe_file_fsync_dir(vstr_str(tmp)) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.2.0", "cannot fsync %s: %s",
                         vstr_str(tmp), strerror(errno));
        goto out;
    }
    local_result_set(res, LOCAL_STAT_SENT, "2.0.0", "maildir");

out:
    vstr_free(path);
    vstr_free(name);
    vstr_free(tmp);
    vstr_free(text);
}
