/*
 * safe_file_test - unit tests for crash-safe file operations
 *
 * Real files in a fresh directory under /tmp. A directory that may not be
 * written is tested from a child that gives up root first, since root
 * writes anywhere.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <setjmp.h>
#include <cmocka.h>

#include "safe_file.h"
#include "testlib.h"

#define TEST_UID_NOBODY 65534

typedef struct SAFE_TEST {
    TESTLIB_DIR *tmp;
    const char *dir; /* fresh temporary directory: tmp->path */
    char path[PATH_MAX]; /* "dir/file" */
} SAFE_TEST;

static int safe_test_setup(void **state)
{
    SAFE_TEST *t = calloc(1, sizeof(*t));

    if (t == NULL || (t->tmp = testlib_dir_create("safe_file_test")) == NULL) {
        free(t);
        return -1;
    }
    t->dir = t->tmp->path;
    snprintf(t->path, sizeof(t->path), "%s/file", t->dir);
    *state = t;
    return 0;
}

/* safe_test_teardown - remove the folder (testlib opens a folder a test
   made read-only first) */
static int safe_test_teardown(void **state)
{
    SAFE_TEST *t = *state;
    int ret = testlib_dir_remove(t->tmp);

    free(t);
    return ret;
}

/* count_entries - names in dir other than . and .. */
static int count_entries(const char *dir)
{
    DIR *dp = opendir(dir);
    struct dirent *de;
    int count = 0;

    assert_non_null(dp);
    while ((de = readdir(dp)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            count++;
    closedir(dp);
    return count;
}

/* assert_file - path holds exactly want, with the given mode */
static void assert_file(const char *path, const char *want, mode_t mode)
{
    char buf[4096];
    struct stat st;
    ssize_t len;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    assert_true(fd >= 0);
    len = read(fd, buf, sizeof(buf));
    close(fd);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, strlen(want));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, mode);
}

static void test_write_create_replace(void **state)
{
    SAFE_TEST *t = *state;
    struct stat st1;
    struct stat st2;
    mode_t old_umask;

    assert_int_equal(safe_file_write(t->path, "hello\n", 6, 0640), 0);
    assert_file(t->path, "hello\n", 0640);
    assert_int_equal(count_entries(t->dir), 1);
    assert_int_equal(stat(t->path, &st1), 0);

    /* Replaced by rename: a new inode, and the umask has no say. */
    old_umask = umask(077);
    assert_int_equal(safe_file_write(t->path, "new content", 11, 0644), 0);
    umask(old_umask);
    assert_file(t->path, "new content", 0644);
    assert_int_equal(stat(t->path, &st2), 0);
    assert_true(st1.st_ino != st2.st_ino);
    assert_int_equal(count_entries(t->dir), 1);

    /* Empty content is a file too. */
    assert_int_equal(safe_file_write(t->path, "", 0, 0600), 0);
    assert_file(t->path, "", 0600);
    assert_int_equal(count_entries(t->dir), 1);
}

static void test_write_stale_temp(void **state)
{
    SAFE_TEST *t = *state;
    char tmp[PATH_MAX];
    int fd;

    /* A temporary file left by a crashed process with our pid. */
    snprintf(tmp, sizeof(tmp), "%s/.file.tmp.%ld", t->dir, (long) getpid());
    fd = open(tmp, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "garbage-garbage", 15), 15);
    close(fd);
    assert_int_equal(safe_file_write(t->path, "ok", 2, 0600), 0);
    assert_file(t->path, "ok", 0600);
    assert_int_equal(count_entries(t->dir), 1);
}

/* write_as_nobody - safe_file_write from a child without root; its errno */
static int write_as_nobody(const char *path)
{
    pid_t pid;
    int status;

    if ((pid = fork()) < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        if (geteuid() == 0 &&
            (setgroups(0, NULL) < 0 || setgid(TEST_UID_NOBODY) < 0 ||
             setuid(TEST_UID_NOBODY) < 0))
            _exit(200);
        if (safe_file_write(path, "new", 3, 0600) == 0)
            _exit(0);
        _exit(errno > 0 && errno < 200 ? errno : 201);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_write_unwritable_dir(void **state)
{
    SAFE_TEST *t = *state;

    assert_int_equal(safe_file_write(t->path, "old", 3, 0644), 0);
    assert_int_equal(chmod(t->dir, 0555), 0);
    assert_int_equal(write_as_nobody(t->path), EACCES);
    assert_int_equal(chmod(t->dir, 0700), 0);
    assert_file(t->path, "old", 0644);
    assert_int_equal(count_entries(t->dir), 1);
}

static void test_write_failures(void **state)
{
    SAFE_TEST *t = *state;
    char path[PATH_MAX];

    /* No such directory. */
    snprintf(path, sizeof(path), "%s/missing/file", t->dir);
    errno = 0;
    assert_int_equal(safe_file_write(path, "x", 1, 0600), -1);
    assert_int_equal(errno, ENOENT);

    /* The rename fails (a directory is in the way): no temporary left. */
    snprintf(path, sizeof(path), "%s/sub", t->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/sub/inner", t->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/sub", t->dir);
    errno = 0;
    assert_int_equal(safe_file_write(path, "x", 1, 0600), -1);
    assert_true(errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST);
    assert_int_equal(count_entries(t->dir), 1);

    /* Not a file name at all. */
    snprintf(path, sizeof(path), "%s/", t->dir);
    assert_int_equal(safe_file_write(path, "x", 1, 0600), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(safe_file_write("", "x", 1, 0600), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(count_entries(t->dir), 1);
}

static void test_read_limit(void **state)
{
    SAFE_TEST *t = *state;
    char data[20000];
    char *got;
    size_t len = 12345;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char) ('a' + i % 26);
    assert_int_equal(safe_file_write(t->path, data, sizeof(data), 0600), 0);

    got = safe_file_read(t->path, sizeof(data), &len);
    assert_non_null(got);
    assert_int_equal(len, sizeof(data));
    assert_memory_equal(got, data, sizeof(data));
    assert_int_equal(got[len], 0);
    free(got);

    errno = 0;
    assert_null(safe_file_read(t->path, sizeof(data) - 1, &len));
    assert_int_equal(errno, EFBIG);

    assert_int_equal(safe_file_write(t->path, "", 0, 0600), 0);
    got = safe_file_read(t->path, 0, NULL);
    assert_non_null(got);
    assert_string_equal(got, "");
    free(got);

    errno = 0;
    assert_null(safe_file_read(t->dir, 100, NULL));
    assert_int_equal(errno, EISDIR);
    unlink(t->path);
    errno = 0;
    assert_null(safe_file_read(t->path, 100, NULL));
    assert_int_equal(errno, ENOENT);
}

/* feed_fifo - child: open the FIFO and write len bytes of 'f' into it */
static pid_t feed_fifo(const char *path, size_t len)
{
    pid_t pid = fork();

    if (pid == 0) {
        char buf[1000];
        int fd = open(path, O_WRONLY);

        memset(buf, 'f', sizeof(buf));
        signal(SIGPIPE, SIG_IGN);
        while (fd >= 0 && len > 0) {
            size_t chunk = len < sizeof(buf) ? len : sizeof(buf);

            if (write(fd, buf, chunk) < 0)
                break;
            len -= chunk;
        }
        _exit(0);
    }
    return pid;
}

static void test_read_sizeless(void **state)
{
    SAFE_TEST *t = *state;
    char *got;
    size_t len = 0;
    pid_t pid;

    /* A FIFO has no size: the limit must hold while reading. */
    assert_int_equal(mkfifo(t->path, 0600), 0);
    pid = feed_fifo(t->path, 30000);
    assert_true(pid > 0);
    got = safe_file_read(t->path, 30000, &len);
    assert_non_null(got);
    assert_int_equal(len, 30000);
    assert_int_equal(got[0], 'f');
    assert_int_equal(got[29999], 'f');
    assert_int_equal(got[30000], 0);
    free(got);
    assert_int_equal(waitpid(pid, NULL, 0), pid);

    pid = feed_fifo(t->path, 30000);
    assert_true(pid > 0);
    errno = 0;
    assert_null(safe_file_read(t->path, 29999, &len));
    assert_int_equal(errno, EFBIG);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void on_alarm(int sig)
{
    /* Only here to interrupt write(2). */
}

static void test_write_all_pipe(void **state)
{
    const size_t big = 4 * 1024 * 1024;
    unsigned char *data = malloc(big);
    struct sigaction sa;
    struct sigaction old_sa;
    struct itimerval tick = {{0, 2000}, {0, 2000}};
    struct itimerval stop = {{0, 0}, {0, 0}};
    int fds[2];
    int status;
    pid_t pid;

    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (unsigned char) (i * 7 + i / 4096);
    assert_int_equal(pipe(fds), 0);

    /* The reader checks every byte, slowly at first. */
    if ((pid = fork()) == 0) {
        unsigned char buf[65536];
        size_t pos = 0;
        ssize_t count;

        close(fds[1]);
        usleep(50000);
        while ((count = read(fds[0], buf, sizeof(buf))) > 0) {
            if (pos + (size_t) count > big ||
                memcmp(buf, data + pos, (size_t) count) != 0)
                _exit(1);
            pos += (size_t) count;
            if (pos < big / 4)
                usleep(1000);
        }
        _exit(count == 0 && pos == big ? 0 : 2);
    }
    assert_true(pid > 0);
    close(fds[0]);

    /* Signals without SA_RESTART: writes get interrupted and cut short. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, &old_sa), 0);
    assert_int_equal(setitimer(ITIMER_REAL, &tick, NULL), 0);
    assert_int_equal(safe_file_write_all(fds[1], data, big), 0);
    assert_int_equal(setitimer(ITIMER_REAL, &stop, NULL), 0);
    assert_int_equal(sigaction(SIGALRM, &old_sa, NULL), 0);
    close(fds[1]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* Nobody reading: EPIPE, not a hang and not a death by SIGPIPE. */
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    signal(SIGPIPE, SIG_IGN);
    errno = 0;
    assert_int_equal(safe_file_write_all(fds[1], data, big), -1);
    assert_int_equal(errno, EPIPE);
    signal(SIGPIPE, SIG_DFL);
    close(fds[1]);
    assert_int_equal(safe_file_write_all(-1, data, 0), 0);
    free(data);
}

static void test_rename_and_sync(void **state)
{
    SAFE_TEST *t = *state;
    char from[PATH_MAX];
    char to[PATH_MAX];
    char sub[PATH_MAX];
    int fd;

    assert_int_equal(safe_file_write(t->path, "moved", 5, 0600), 0);
    snprintf(sub, sizeof(sub), "%s/sub", t->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(to, sizeof(to), "%s/sub/there", t->dir);
    assert_int_equal(safe_file_rename(t->path, to), 0);
    assert_file(to, "moved", 0600);
    assert_int_equal(access(t->path, F_OK), -1);
    snprintf(from, sizeof(from), "%s/sub/there", t->dir);
    snprintf(to, sizeof(to), "%s/sub/again", t->dir);
    assert_int_equal(safe_file_rename(from, to), 0);
    assert_file(to, "moved", 0600);
    errno = 0;
    assert_int_equal(safe_file_rename(from, to), -1);
    assert_int_equal(errno, ENOENT);

    assert_int_equal(safe_file_fsync_dir(t->dir), 0);
    assert_int_equal(safe_file_fsync_dir("/"), 0);
    assert_int_equal(safe_file_fsync_parent(to), 0);
    assert_int_equal(safe_file_fsync_parent("relative-name"), 0);
    assert_int_equal(safe_file_fsync_parent("/etc"), 0);
    errno = 0;
    assert_int_equal(safe_file_fsync_dir(from), -1);
    assert_int_equal(errno, ENOENT);
    errno = 0;
    assert_int_equal(safe_file_fsync_dir(to), -1);
    assert_int_equal(errno, ENOTDIR);

    fd = open(to, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(safe_file_fsync(fd), 0);
    close(fd);
    assert_int_equal(safe_file_fsync(fd), -1);
    assert_int_equal(errno, EBADF);
}

static void test_pwrite_all(void **state)
{
    SAFE_TEST *t = *state;
    int fd;

    assert_int_equal(safe_file_write(t->path, "0123456789", 10, 0600), 0);
    fd = open(t->path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    /* At the offset, without moving the file offset. */
    assert_int_equal(safe_file_pwrite_all(fd, "abc", 3, 4), 0);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 0);
    assert_int_equal(safe_file_pwrite_all(fd, "XY", 2, 10), 0);
    assert_int_equal(safe_file_pwrite_all(fd, "", 0, 0), 0);
    close(fd);
    assert_file(t->path, "0123abc789XY", 0600);
    errno = 0;
    assert_int_equal(safe_file_pwrite_all(fd, "x", 1, 0), -1);
    assert_int_equal(errno, EBADF);
}

/* sync_unreadable_dir - in a child without root, create a file in dir
   (writable, not readable) and sync the directory every way; 0, or the
   number of the check that failed */
static int sync_unreadable_dir(const char *dir, const char *path)
{
    pid_t pid;
    int status;

    if ((pid = fork()) < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd;

        if (setgroups(0, NULL) < 0 || setgid(TEST_UID_NOBODY) < 0 ||
            setuid(TEST_UID_NOBODY) < 0)
            _exit(200);
        if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) < 0)
            _exit(1);
        /* The plain directory fsync cannot open it. */
        if (safe_file_fsync_dir(dir) != -1 || errno != EACCES)
            _exit(2);
        /* Without a descriptor there is no fallback. */
        if (safe_file_fsync_dir_or_fs(dir, -1) != -1 || errno != EACCES)
            _exit(3);
        /* With one, its file system is synced instead. */
        if (safe_file_fsync_dir_or_fs(dir, fd) != 0)
            _exit(4);
        if (safe_file_fsync_parent_or_fs(path, fd) != 0)
            _exit(5);
        /* Another error is not papered over. */
        if (safe_file_fsync_parent_or_fs("/nonexistent/x", fd) != -1 ||
            errno != ENOENT)
            _exit(6);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* A directory a program may write but not read (maildrop/ for the setgid
   sendmail): syncfs on the file stands in for the directory fsync. */
static void test_sync_unreadable_dir(void **state)
{
    SAFE_TEST *t = *state;

    if (geteuid() != 0)
        skip();
    assert_int_equal(chmod(t->dir, 0733), 0);
    assert_int_equal(sync_unreadable_dir(t->dir, t->path), 0);
    assert_int_equal(chmod(t->dir, 0700), 0);
    /* Root reads it: the ordinary way works, fallback or not. */
    assert_int_equal(safe_file_fsync_dir_or_fs(t->dir, -1), 0);
    assert_int_equal(safe_file_fsync_parent_or_fs(t->path, -1), 0);
}

int main(void)
{
#define SAFE_TEST_CASE(fn)                                                     \
    cmocka_unit_test_setup_teardown(fn, safe_test_setup, safe_test_teardown)
    const struct CMUnitTest tests[] = {
        SAFE_TEST_CASE(test_write_create_replace),
        SAFE_TEST_CASE(test_write_stale_temp),
        SAFE_TEST_CASE(test_write_unwritable_dir),
        SAFE_TEST_CASE(test_write_failures),
        SAFE_TEST_CASE(test_read_limit),
        SAFE_TEST_CASE(test_read_sizeless),
        SAFE_TEST_CASE(test_rename_and_sync),
        SAFE_TEST_CASE(test_pwrite_all),
        SAFE_TEST_CASE(test_sync_unreadable_dir),
        cmocka_unit_test(test_write_all_pipe),
    };

    return cmocka_run_group_tests_name("safe_file", tests, NULL, NULL);
}
