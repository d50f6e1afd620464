/*
 * testlib - temporary folder, file writer and log capture for unit tests
 *
 * The folder is made with mkdtemp and removed depth first with nftw
 * (symbolic links are removed, never followed), so a test that fails half
 * way leaves nothing behind once its teardown runs.
 */
#include "sys_defs.h"

#include <ftw.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "testlib.h"
#include "vstr.h"

#define TESTLIB_READ_MAX (64 * 1024 * 1024) /* a test file, not a corpus */

/* testlib_dir_create - a fresh folder under /tmp */
TESTLIB_DIR *testlib_dir_create(const char *prefix)
{
    TESTLIB_DIR *dir = mymalloc(sizeof(*dir));
    int len = snprintf(dir->path, sizeof(dir->path), "/tmp/%s.XXXXXX", prefix);

    if (len < 0 || (size_t) len >= sizeof(dir->path) ||
        mkdtemp(dir->path) == NULL) {
        myfree(dir);
        return NULL;
    }
    dir->scratch = vstr_alloc(100);
    return dir;
}

/* testlib_rm_one - nftw callback: remove one entry */
static int testlib_rm_one(const char *path, const struct stat *st, int flag,
                          struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    return remove(path);
}

/* testlib_open_one - nftw callback: a folder a test made read-only can
   be emptied again */
static int testlib_open_one(const char *path, const struct stat *st, int flag,
                            struct FTW *ftw)
{
    (void) ftw;
    if (flag == FTW_D || flag == FTW_DNR)
        (void) chmod(path, (st->st_mode & 07777) | 0700);
    return 0;
}

/* testlib_dir_remove - remove the folder and what it holds */
int testlib_dir_remove(TESTLIB_DIR *dir)
{
    int ret;

    if (dir == NULL)
        return 0;
    (void) msg_log_file("/dev/null");
    (void) chmod(dir->path, 0700);
    (void) nftw(dir->path, testlib_open_one, 16, FTW_PHYS);
    ret = nftw(dir->path, testlib_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    vstr_free(dir->scratch);
    myfree(dir);
    return ret;
}

/* testlib_path - DIR/name in the scratch string */
const char *testlib_path(TESTLIB_DIR *dir, const char *name)
{
    vstr_sprintf(dir->scratch, "%s/%s", dir->path, name);
    return vstr_str(dir->scratch);
}

/* testlib_write - DIR/name holds text */
const char *testlib_write(TESTLIB_DIR *dir, const char *name, const char *text)
{
    const char *path = testlib_path(dir, name);
    FILE *fp = fopen(path, "w");

    if (fp == NULL)
        fail_msg("open %s: %s", path, strerror(errno));
    if (fputs(text, fp) < 0 || fclose(fp) != 0)
        fail_msg("write %s: %s", path, strerror(errno));
    return path;
}

/* testlib_read - the whole file */
char *testlib_read(const char *path, size_t *len)
{
    return safe_file_read(path, TESTLIB_READ_MAX, len);
}

/* testlib_log_capture - the log goes to DIR/log */
int testlib_log_capture(TESTLIB_DIR *dir, const char *prog)
{
    msg_init("sluice", prog);
    return msg_log_file(testlib_path(dir, "log"));
}

/* testlib_log_has - DIR/log mentions text; then it is emptied */
bool testlib_log_has(TESTLIB_DIR *dir, const char *text)
{
    const char *path = testlib_path(dir, "log");
    char *log = testlib_read(path, NULL);
    bool found = log != NULL && strstr(log, text) != NULL;

    /* Each check sees only what was logged since the last one. */
    if (found && truncate(path, 0) < 0)
        found = false;
    myfree(log);
    return found;
}
