/*
 * mail_queue - the queue directories and where a queue file lives
 *
 * Moving a file between queues is how its state changes, so
 * mail_queue_move() is durable before it returns: a missing hash
 * subdirectory is created and its parent fsynced, then safe_file_rename()
 * renames and fsyncs both directories. mail_queue_rename() skips the
 * fsyncs, for the moves a crash may undo harmlessly (incoming -> active,
 * active -> deferred: the file is found again where it was). A move takes
 * only known queue names and well-formed queue IDs, so no caller can be
 * talked into a path outside queue_directory.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "mail_queue.h"
#include "msg.h"
#include "qid.h"
#include "safe_file.h"
#include "vstr.h"

/* The 32 hash subdirectory names: the queue ID alphabet. */
const char mail_queue_hash_chars[] = "0123456789ABCDEFGHJKLMNPQRSTVWXY";

const char *const mail_queue_names[] = {
    MAIL_QUEUE_MAILDROP, MAIL_QUEUE_INCOMING,
    MAIL_QUEUE_ACTIVE,   MAIL_QUEUE_DEFERRED,
    MAIL_QUEUE_HOLD,     MAIL_QUEUE_CORRUPT,
    MAIL_QUEUE_DEFER,    MAIL_QUEUE_BOUNCE,
    MAIL_QUEUE_PRIVATE,  MAIL_QUEUE_PUBLIC,
    MAIL_QUEUE_PID,      MAIL_QUEUE_EVENTS,
    MAIL_QUEUE_API,      MAIL_QUEUE_STATS,
    MAIL_QUEUE_REUSE,    NULL,
};

/* mail_queue_hashed - is this queue hashed one level deep? */
bool mail_queue_hashed(const char *queue_name)
{
    return strcmp(queue_name, MAIL_QUEUE_DEFERRED) == 0 ||
           strcmp(queue_name, MAIL_QUEUE_DEFER) == 0 ||
           strcmp(queue_name, MAIL_QUEUE_BOUNCE) == 0;
}

/* mail_queue_known - is this one of mail_queue_names? */
bool mail_queue_known(const char *queue_name)
{
    if (queue_name == NULL)
        return false;
    for (const char *const *name = mail_queue_names; *name; name++)
        if (strcmp(*name, queue_name) == 0)
            return true;
    return false;
}

/* mail_queue_of_messages - is this a queue that holds queue files? */
bool mail_queue_of_messages(const char *queue_name)
{
    static const char *const message_queues[] = {
        MAIL_QUEUE_MAILDROP, MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE,
        MAIL_QUEUE_DEFERRED, MAIL_QUEUE_HOLD,     MAIL_QUEUE_CORRUPT,
    };

    if (queue_name == NULL)
        return false;
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(message_queues); i++)
        if (strcmp(message_queues[i], queue_name) == 0)
            return true;
    return false;
}

/* mail_queue_path - buf = queue_dir/queue_name[/H]/qid; returns buf */
VSTR *mail_queue_path(VSTR *buf, const char *queue_dir, const char *queue_name,
                      const char *qid)
{
    if (mail_queue_hashed(queue_name))
        return vstr_sprintf(buf, "%s/%s/%c/%s", queue_dir, queue_name,
                            qid_hash_char(qid), qid);
    return vstr_sprintf(buf, "%s/%s/%s", queue_dir, queue_name, qid);
}

/* mail_queue_service - buf = queue_dir/private/name or queue_dir/public/name */
VSTR *mail_queue_service(VSTR *buf, const char *queue_dir,
                         const char *service_class, const char *name)
{
    if (strcmp(service_class, MAIL_QUEUE_PRIVATE) != 0 &&
        strcmp(service_class, MAIL_QUEUE_PUBLIC) != 0)
        msg_panic("%s: \"%s\" is not a service class", __func__, service_class);
    return vstr_sprintf(buf, "%s/%s/%s", queue_dir, service_class, name);
}

/* mail_queue_make_hash_dir - create queue_dir/queue_name/H if missing */
static int mail_queue_make_hash_dir(const char *queue_dir,
                                    const char *queue_name, char hash)
{
    VSTR *parent = vstr_alloc(100);
    VSTR *dir = vstr_alloc(100);
    struct stat st;
    int ret = -1;
    int saved_errno;

    vstr_sprintf(parent, "%s/%s", queue_dir, queue_name);
    vstr_sprintf(dir, "%s/%c", vstr_str(parent), hash);
    if (stat(vstr_str(parent), &st) < 0)
        goto done;
    if (mkdir(vstr_str(dir), st.st_mode & 07777) < 0) {
        if (errno == EEXIST)
            ret = 0;
        goto done;
    }
    /* Same mode as its parent, whatever the umask; then make it durable. */
    if (chmod(vstr_str(dir), st.st_mode & 07777) < 0 ||
        safe_file_fsync_dir(vstr_str(parent)) < 0)
        goto done;
    ret = 0;

done:
    saved_errno = errno;
    vstr_free(parent);
    vstr_free(dir);
    errno = saved_errno;
    return ret;
}

/* mail_queue_holds - the same inode under one of qid's queue names */
bool mail_queue_holds(const char *queue_dir, const char *qid, int fd)
{
    static const char *const places[] = {
        MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE,   MAIL_QUEUE_DEFERRED,
        MAIL_QUEUE_HOLD,     MAIL_QUEUE_MAILDROP, MAIL_QUEUE_CORRUPT};
    struct stat by_fd, by_name;
    VSTR *path;
    bool found = false;

    if (fstat(fd, &by_fd) < 0)
        return false;
    path = vstr_alloc(100);
    /* Twice: a move to a queue looked at before, between two looks. */
    for (int pass = 0; !found && pass < 2; pass++) {
        for (size_t i = 0; !found && i < SLUICE_ARRAY_LEN(places); i++) {
            mail_queue_path(path, queue_dir, places[i], qid);
            found = stat(vstr_str(path), &by_name) == 0 &&
                    by_name.st_ino == by_fd.st_ino &&
                    by_name.st_dev == by_fd.st_dev;
        }
    }
    vstr_free(path);
    return found;
}

/* mail_queue_do_rename - rename(2), with the directory fsyncs or not */
static int mail_queue_do_rename(const VSTR *from_path, const VSTR *to_path,
                                bool durable)
{
    if (durable)
        return safe_file_rename(vstr_str(from_path), vstr_str(to_path));
    return rename(vstr_str(from_path), vstr_str(to_path));
}

/* mail_queue_mark_moved - give a 0600 regular file at path the mode of
   a file moved back into incoming/, durably; 0 also when there is nothing
   to mark (another mode, not a regular file, gone: the rename decides) */
static int mail_queue_mark_moved(const char *path)
{
    struct stat st;
    int ret = 0;
    int saved_errno;
    int fd;

    if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
        return 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (st.st_mode & 07777) == 0600 &&
        (fchmod(fd, MAIL_QUEUE_MOVED_MODE) < 0 || fsync(fd) < 0))
        ret = -1;
    saved_errno = errno;
    (void) close(fd);
    errno = saved_errno;
    return ret;
}

/* mail_queue_rename_how - rename qid between queues, durably or not */
static int mail_queue_rename_how(const char *queue_dir, const char *from_queue,
                                 const char *to_queue, const char *qid,
                                 bool durable)
{
    VSTR *from_path;
    VSTR *to_path;
    int ret;
    int saved_errno;

    if (!qid_valid(qid) || !mail_queue_known(from_queue) ||
        !mail_queue_known(to_queue)) {
        errno = EINVAL;
        return -1;
    }
    from_path = mail_queue_path(vstr_alloc(100), queue_dir, from_queue, qid);
    to_path = mail_queue_path(vstr_alloc(100), queue_dir, to_queue, qid);
    /* Back into incoming/ (release, requeue, flush): marked, so that its
       file is not reused while its old name may come back after a crash,
       nor taken by qmgr for a new message of cleanup's (whose defer and
       bounce logs it does not read). Only a file that could be reused,
       cleanup's 0600, is marked, and the mark only adds a bit: a file of
       another mode (a user's maildrop file, read by qmgr through its
       "other" bits) is never reused and keeps what it has. The mark is
       fsynced before the move (a power cut must not keep the move and
       lose the mode), and a file that cannot be marked is not moved. */
    if (strcmp(to_queue, MAIL_QUEUE_INCOMING) == 0 &&
        strcmp(from_queue, MAIL_QUEUE_INCOMING) != 0 &&
        mail_queue_mark_moved(vstr_str(from_path)) < 0) {
        saved_errno = errno;
        vstr_free(from_path);
        vstr_free(to_path);
        errno = saved_errno;
        return -1;
    }
    ret = mail_queue_do_rename(from_path, to_path, durable);
    /* A hash subdirectory is made only when missing: rarely. */
    if (ret < 0 && errno == ENOENT && mail_queue_hashed(to_queue) &&
        access(vstr_str(from_path), F_OK) == 0 &&
        mail_queue_make_hash_dir(queue_dir, to_queue, qid_hash_char(qid)) == 0)
        ret = mail_queue_do_rename(from_path, to_path, durable);
    saved_errno = errno;
    vstr_free(from_path);
    vstr_free(to_path);
    errno = saved_errno;
    return ret;
}

/* mail_queue_sync - fsync the folders of the queues named, in order */
int mail_queue_sync(const char *queue_dir, const char *const *queues,
                    size_t count, VSTR *failed)
{
    VSTR *dir = vstr_alloc(100);
    int saved_errno;

    for (size_t i = 0; i < count; i++) {
        vstr_sprintf(dir, "%s/%s", queue_dir, queues[i]);
        if (safe_file_fsync_dir(vstr_str(dir)) < 0) {
            saved_errno = errno;
            if (failed)
                vstr_cpy(failed, vstr_str(dir));
            vstr_free(dir);
            errno = saved_errno;
            return -1;
        }
    }
    vstr_free(dir);
    return 0;
}

/* mail_queue_move - durably rename qid from one queue to another */
int mail_queue_move(const char *queue_dir, const char *from_queue,
                    const char *to_queue, const char *qid)
{
    return mail_queue_rename_how(queue_dir, from_queue, to_queue, qid, true);
}

/* mail_queue_rename - rename qid between queues, no fsync */
int mail_queue_rename(const char *queue_dir, const char *from_queue,
                      const char *to_queue, const char *qid)
{
    return mail_queue_rename_how(queue_dir, from_queue, to_queue, qid, false);
}

/* mail_queue_make_dir - create one directory with exactly mode, or accept
   an existing one; *created tells which */
static int mail_queue_make_dir(const char *path, mode_t mode, bool *created,
                               VSTR *why)
{
    struct stat st;

    *created = false;
    if (mkdir(path, mode) == 0) {
        *created = true;
        if (chmod(path, mode) < 0) {
            vstr_sprintf(why, "chmod %s: %m", path);
            return -1;
        }
        return 0;
    }
    if (errno != EEXIST) {
        vstr_sprintf(why, "mkdir %s: %m", path);
        return -1;
    }
    if (stat(path, &st) < 0) {
        vstr_sprintf(why, "stat %s: %m", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        vstr_sprintf(why, "%s exists and is not a directory", path);
        return -1;
    }
    return 0;
}

/* mail_queue_sync_dir - fsync a directory whose entries changed */
static int mail_queue_sync_dir(const char *dir, VSTR *why)
{
    if (safe_file_fsync_dir(dir) < 0) {
        vstr_sprintf(why, "fsync directory %s: %m", dir);
        return -1;
    }
    return 0;
}

/* mail_queue_create_dirs - make every queue subdirectory (and the hash
   subdirectories) under queue_dir with mode */
int mail_queue_create_dirs(const char *queue_dir, mode_t mode, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    VSTR *hash_path = vstr_alloc(100);
    bool created;
    bool queue_dir_changed = false;
    int ret = -1;

    if (mail_queue_make_dir(queue_dir, mode, &created, why) < 0)
        goto done;
    if (created && safe_file_fsync_parent(queue_dir) < 0) {
        vstr_sprintf(why, "fsync the parent of %s: %m", queue_dir);
        goto done;
    }
    for (const char *const *name = mail_queue_names; *name; name++) {
        bool hash_changed = false;

        vstr_sprintf(path, "%s/%s", queue_dir, *name);
        if (mail_queue_make_dir(vstr_str(path), mode, &created, why) < 0)
            goto done;
        queue_dir_changed |= created;
        if (!mail_queue_hashed(*name))
            continue;
        for (const char *hash = mail_queue_hash_chars; *hash; hash++) {
            vstr_sprintf(hash_path, "%s/%c", vstr_str(path), *hash);
            if (mail_queue_make_dir(vstr_str(hash_path), mode, &created, why) <
                0)
                goto done;
            hash_changed |= created;
        }
        if (hash_changed && mail_queue_sync_dir(vstr_str(path), why) < 0)
            goto done;
    }
    if (queue_dir_changed && mail_queue_sync_dir(queue_dir, why) < 0)
        goto done;
    ret = 0;

done:
    vstr_free(path);
    vstr_free(hash_path);
    return ret;
}

/* mail_queue_dir_mode - the mode of one queue directory */
mode_t mail_queue_dir_mode(const char *queue_name, bool group)
{
    if (group && strcmp(queue_name, MAIL_QUEUE_MAILDROP) == 0)
        return 01730;
    if (group && strcmp(queue_name, MAIL_QUEUE_PUBLIC) == 0)
        return 0710;
    return 0700;
}

/* mail_queue_create_at - create one directory by descriptor, durably */
int mail_queue_create_at(int parent_fd, const char *name, const char *path,
                         bool follow, mode_t mode, uid_t uid, gid_t gid,
                         VSTR *why)
{
    int saved_errno;
    int fd;

    if (mkdirat(parent_fd, name, mode) < 0) {
        saved_errno = errno;
        vstr_sprintf(why, "create %s: %m", path);
        errno = saved_errno;
        return -1;
    }
    fd = openat(parent_fd, name,
                O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0 || fchmod(fd, mode) < 0 ||
        (((uid != (uid_t) -1 && uid != geteuid()) || gid != (gid_t) -1) &&
         fchown(fd, uid, gid) < 0) ||
        (parent_fd == AT_FDCWD ? safe_file_fsync_parent(path)
                               : fsync(parent_fd)) < 0) {
        saved_errno = errno;
        vstr_sprintf(why, "create %s: %m", path);
        if (fd >= 0)
            (void) close(fd);
        /* EEXIST is kept for what existed before */
        errno = saved_errno == EEXIST ? EIO : saved_errno;
        return -1;
    }
    return fd;
}
