/*
 * raceshim - LD_PRELOAD stand-in for a mail_owner that wins a race
 *
 * Before the first chown or chmod call of any kind (chown, lchown, fchown,
 * fchownat, chmod, fchmod, fchmodat) the process makes, the directory
 * RACE_DIR is renamed to RACE_DIR.real and a symbolic link RACE_DIR ->
 * RACE_TARGET put in its place: what a mail_owner process that owns the
 * parent directory can do at any moment between root's look at RACE_DIR
 * and root's change of it. Then the real call runs. A program that
 * changes what it looked at through a path follows the link to
 * RACE_TARGET; one that changes it through the descriptor it opened does
 * not.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int race_done;

/* race_swap - once: RACE_DIR becomes a symbolic link to RACE_TARGET */
static void race_swap(void)
{
    const char *dir = getenv("RACE_DIR");
    const char *target = getenv("RACE_TARGET");
    char moved[4096];

    if (race_done || dir == NULL || target == NULL)
        return;
    race_done = 1;
    if (snprintf(moved, sizeof(moved), "%s.real", dir) >= (int) sizeof(moved))
        return;
    if (rename(dir, moved) == 0)
        (void) symlink(target, dir);
}

#define RACE_REAL(name, type)                                                  \
    static type real_##name;                                                   \
    if (real_##name == NULL)                                                   \
    real_##name = (type) dlsym(RTLD_NEXT, #name)

typedef int (*race_chown_fn)(const char *, uid_t, gid_t);
typedef int (*race_fchown_fn)(int, uid_t, gid_t);
typedef int (*race_fchownat_fn)(int, const char *, uid_t, gid_t, int);
typedef int (*race_chmod_fn)(const char *, mode_t);
typedef int (*race_fchmod_fn)(int, mode_t);
typedef int (*race_fchmodat_fn)(int, const char *, mode_t, int);

int chown(const char *path, uid_t uid, gid_t gid)
{
    RACE_REAL(chown, race_chown_fn);
    race_swap();
    return real_chown(path, uid, gid);
}

int lchown(const char *path, uid_t uid, gid_t gid)
{
    RACE_REAL(lchown, race_chown_fn);
    race_swap();
    return real_lchown(path, uid, gid);
}

int fchown(int fd, uid_t uid, gid_t gid)
{
    RACE_REAL(fchown, race_fchown_fn);
    race_swap();
    return real_fchown(fd, uid, gid);
}

int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
{
    RACE_REAL(fchownat, race_fchownat_fn);
    race_swap();
    return real_fchownat(dirfd, path, uid, gid, flags);
}

int chmod(const char *path, mode_t mode)
{
    RACE_REAL(chmod, race_chmod_fn);
    race_swap();
    return real_chmod(path, mode);
}

int fchmod(int fd, mode_t mode)
{
    RACE_REAL(fchmod, race_fchmod_fn);
    race_swap();
    return real_fchmod(fd, mode);
}

int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
{
    RACE_REAL(fchmodat, race_fchmodat_fn);
    race_swap();
    return real_fchmodat(dirfd, path, mode, flags);
}
