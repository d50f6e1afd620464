/*
 * qfile_reuse_test - unit tests for queue files written again: a free file
 * is taken by one producer at a time (the OFD lock), never after its name
 * has gone into a queue, never when it has a second link or is not the
 * producer's 0600 file; a reused file longer than the new message is cut
 * to it; a failed or aborted message leaves its file free; publishing
 * makes returned files free up to the limit and removes the rest; a sweep
 * removes every returned file.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qfile_reuse.h"
#include "vstr.h"

#define QID_A "0123456789ABCDEF"
#define QID_B "0123456789ABCDEG"
#define QID_C "0123456789ABCDEH"

/* When set, the next F_OFD_SETLK first renames test_lock_from to
   test_lock_to: another producer's commit between a take's open and its
   lock. fcntl() here stands in front of the C library's. */
static const char *test_lock_from;
static const char *test_lock_to;

int fcntl(int fd, int cmd, ...)
{
    static int (*real)(int, int, ...);
    va_list ap;
    void *arg;

    if (real == NULL &&
        (real = (int (*)(int, int, ...)) dlsym(RTLD_NEXT, "fcntl")) == NULL)
        abort();
    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (cmd == F_OFD_SETLK && test_lock_from != NULL) {
        if (rename(test_lock_from, test_lock_to) < 0)
            abort();
        test_lock_from = NULL;
    }
    return real(fd, cmd, arg);
}

typedef struct TEST_Q {
    char queue[64];
    char path[300];
} TEST_Q;

/* test_path - td->path = queue/fmt... */
static const char *test_path(TEST_Q *tq, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const char *test_path(TEST_Q *tq, const char *fmt, ...)
{
    char rel[100];
    va_list ap;

    va_start(ap, fmt);
    (void) vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    (void) snprintf(tq->path, sizeof(tq->path), "%s/%s", tq->queue, rel);
    return tq->path;
}

/* test_file - a file of size bytes of fill at queue/rel, mode */
static void test_file(TEST_Q *tq, const char *rel, size_t size, mode_t mode)
{
    char *data = mymalloc(size + 1);
    int fd;

    memset(data, 'x', size);
    fd = open(test_path(tq, "%s", rel), O_WRONLY | O_CREAT | O_EXCL, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, size), (ssize_t) size);
    assert_int_equal(fchmod(fd, mode), 0);
    (void) close(fd);
    myfree(data);
}

static bool test_exists(TEST_Q *tq, const char *rel)
{
    return access(test_path(tq, "%s", rel), F_OK) == 0;
}

/* test_count_free - the free.* names in reuse/ */
static int test_count_free(TEST_Q *tq)
{
    VSTR *dir = vstr_alloc(100);
    struct dirent *entry;
    int count = 0;
    DIR *dp;

    vstr_sprintf(dir, "%s/reuse", tq->queue);
    dp = opendir(vstr_str(dir));
    assert_non_null(dp);
    while ((entry = readdir(dp)) != NULL)
        count += strncmp(entry->d_name, "free.", 5) == 0;
    (void) closedir(dp);
    vstr_free(dir);
    return count;
}

static int test_setup(void **state)
{
    TEST_Q *tq = mycalloc(1, sizeof(*tq));
    static const char *const dirs[] = {"reuse", "incoming", "active"};

    (void) snprintf(tq->queue, sizeof(tq->queue), "/tmp/qfile_reuse.XXXXXX");
    assert_non_null(mkdtemp(tq->queue));
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(dirs); i++)
        assert_int_equal(mkdir(test_path(tq, "%s", dirs[i]), 0700), 0);
    *state = tq;
    return 0;
}

static int test_teardown(void **state)
{
    TEST_Q *tq = *state;
    VSTR *cmd = vstr_alloc(100);

    vstr_sprintf(cmd, "rm -rf '%s'", tq->queue);
    assert_int_equal(system(vstr_str(cmd)), 0);
    vstr_free(cmd);
    myfree(tq);
    return 0;
}

/* A free file goes to one producer; the next finds none. */
static void test_one_taker(void **state)
{
    TEST_Q *tq = *state;
    QFILE_REUSE *one = qfile_reuse_open(tq->queue);
    QFILE_REUSE *two = qfile_reuse_open(tq->queue);
    VSTR *path = vstr_alloc(100);
    off_t size = -1;
    int fd;

    test_file(tq, "reuse/free." QID_A, 300, 0600);
    fd = qfile_reuse_take(one, path, &size);
    assert_true(fd >= 0);
    assert_int_equal(size, 300);
    assert_string_equal(vstr_str(path), test_path(tq, "reuse/free." QID_A));
    /* Another open file description: the lock keeps it out. */
    assert_int_equal(qfile_reuse_take(two, path, &size), -1);
    (void) close(fd);
    /* Let go while still under its free name: free again (a new reader:
       the empty read above holds back the next for a while). */
    two = qfile_reuse_free(two);
    two = qfile_reuse_open(tq->queue);
    fd = qfile_reuse_take(two, path, &size);
    assert_true(fd >= 0);
    (void) close(fd);
    qfile_reuse_free(one);
    qfile_reuse_free(two);
    vstr_free(path);
}

/* A file whose name went into a queue between a take's open and its lock
   (another producer committed it and let go) is not taken: the name no
   longer leads to it, though the lock was had. */
static void test_name_gone_under_lock(void **state)
{
    TEST_Q *tq = *state;
    QFILE_REUSE *reuse = qfile_reuse_open(tq->queue);
    VSTR *path = vstr_alloc(100);
    char from[300], queued[300];
    struct stat st;
    off_t size;

    test_file(tq, "reuse/free." QID_A, 10, 0600);
    (void) snprintf(from, sizeof(from), "%s",
                    test_path(tq, "reuse/free." QID_A));
    (void) snprintf(queued, sizeof(queued), "%s",
                    test_path(tq, "incoming/" QID_B));
    test_lock_from = from;
    test_lock_to = queued;
    assert_int_equal(qfile_reuse_take(reuse, path, &size), -1);
    assert_null(test_lock_from); /* the race happened */
    /* The committed file is untouched. */
    assert_int_equal(stat(queued, &st), 0);
    assert_int_equal(st.st_size, 10);
    qfile_reuse_free(reuse);
    vstr_free(path);
}

/* A second link, another mode or a directory: never written, the name
   goes, the file keeps its other name and its bytes. */
static void test_not_ours_is_refused(void **state)
{
    TEST_Q *tq = *state;
    QFILE_REUSE *reuse = qfile_reuse_open(tq->queue);
    VSTR *path = vstr_alloc(100);
    char queued[300];
    struct stat st;
    off_t size;

    test_file(tq, "active/" QID_A, 50, 0600);
    (void) snprintf(queued, sizeof(queued), "%s",
                    test_path(tq, "active/" QID_A));
    assert_int_equal(link(queued, test_path(tq, "reuse/free." QID_A)), 0);
    test_file(tq, "reuse/free." QID_B, 50, 0644);
    assert_int_equal(qfile_reuse_take(reuse, path, &size), -1);
    assert_false(test_exists(tq, "reuse/free." QID_A));
    assert_false(test_exists(tq, "reuse/free." QID_B));
    assert_int_equal(stat(queued, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    assert_int_equal(st.st_size, 50);
    /* Names that are no free file are not looked at. */
    test_file(tq, "reuse/ret." QID_C, 50, 0600);
    test_file(tq, "reuse/free." QID_C "+", 50, 0600);
    qfile_reuse_free(reuse);
    reuse = qfile_reuse_open(tq->queue);
    assert_int_equal(qfile_reuse_take(reuse, path, &size), -1);
    assert_true(test_exists(tq, "reuse/ret." QID_C));
    assert_true(test_exists(tq, "reuse/free." QID_C "+"));
    qfile_reuse_free(reuse);
    vstr_free(path);
}

/* test_records - one small message's records into out */
static void test_records(QFILE_OUT *out)
{
    QFILE_WRITER *writer = qfile_out_writer(out);
    struct timeval tv = {1700000000, 5};

    qfile_put_time(writer, &tv);
    qfile_put_sender(writer, "a@b.test");
    qfile_put_rcpt(writer, "c@d.test", NULL, NULL);
    qfile_put_content_begin(writer);
    qfile_put_content(writer, "Subject: t\n\nhi\n", 15);
}

/* test_write - one small message through the producer: reuse or create */
static int test_write(TEST_Q *tq, QFILE_REUSE *reuse, const char *qid,
                      bool fail_before_commit)
{
    char tmp[300], final[300];
    QFILE_OUT *out;

    (void) snprintf(tmp, sizeof(tmp), "%s",
                    test_path(tq, "incoming/.tmp.%s", qid));
    (void) snprintf(final, sizeof(final), "%s",
                    test_path(tq, "incoming/%s", qid));
    out = qfile_create_reuse(reuse, tmp, 0600);
    assert_non_null(out);
    test_records(out);
    if (fail_before_commit) {
        qfile_abort(out);
        return 0;
    }
    return qfile_commit(out, final, NULL);
}

/* A reused file holds exactly the new message: the old tail is cut. */
static void test_reused_file_is_cut(void **state)
{
    TEST_Q *tq = *state;
    QFILE_REUSE *reuse = qfile_reuse_open(tq->queue);
    VSTR *why = vstr_alloc(100);
    struct stat st, before;
    QFILE_INFO *info;
    int fd;

    test_file(tq, "reuse/free." QID_A, 70000, 0600);
    assert_int_equal(stat(test_path(tq, "reuse/free." QID_A), &before), 0);
    assert_int_equal(test_write(tq, reuse, QID_B, false), 0);
    assert_false(test_exists(tq, "reuse/free." QID_A));
    assert_false(test_exists(tq, "incoming/.tmp." QID_B));
    assert_int_equal(stat(test_path(tq, "incoming/" QID_B), &st), 0);
    assert_int_equal(st.st_ino, before.st_ino);
    assert_true(st.st_size < 1000);
    fd = open(test_path(tq, "incoming/" QID_B), O_RDONLY);
    assert_true(fd >= 0);
    info = qfile_info_read(fd, why);
    if (info == NULL)
        fail_msg("reused file unreadable: %s", vstr_str(why));
    assert_string_equal(info->sender, "a@b.test");
    qfile_info_free(info);
    (void) close(fd);
    /* None free: a file is created under the temporary name, as before. */
    assert_int_equal(test_write(tq, reuse, QID_C, false), 0);
    assert_int_equal(stat(test_path(tq, "incoming/" QID_C), &st), 0);
    assert_true(st.st_ino != before.st_ino);
    qfile_reuse_free(reuse);
    vstr_free(why);
}

/* A message that fails leaves its taken file free, the file stays. */
static void test_abort_keeps_it_free(void **state)
{
    TEST_Q *tq = *state;
    QFILE_REUSE *reuse = qfile_reuse_open(tq->queue);
    struct stat st, before;

    test_file(tq, "reuse/free." QID_A, 100, 0600);
    assert_int_equal(stat(test_path(tq, "reuse/free." QID_A), &before), 0);
    assert_int_equal(test_write(tq, reuse, QID_B, true), 0);
    assert_int_equal(stat(test_path(tq, "reuse/free." QID_A), &st), 0);
    assert_int_equal(st.st_ino, before.st_ino);
    assert_false(test_exists(tq, "incoming/" QID_B));
    /* A rename that fails (no such folder) leaves it free too. */
    assert_int_equal(rmdir(test_path(tq, "incoming")), 0);
    qfile_reuse_free(reuse);
    reuse = qfile_reuse_open(tq->queue);
    assert_int_equal(test_write(tq, reuse, QID_C, false), -1);
    assert_int_equal(stat(test_path(tq, "reuse/free." QID_A), &st), 0);
    assert_int_equal(st.st_ino, before.st_ino);
    qfile_reuse_free(reuse);
}

/* A taken file replaced by a copy (a header put before the content, as
   DKIM does) stays out of other producers' reach: the copy, now under
   the free name, is locked too; the commit holds the new content only. */
static void test_copy_stays_taken(void **state)
{
    TEST_Q *tq = *state;
    QFILE_REUSE *one = qfile_reuse_open(tq->queue);
    QFILE_REUSE *two;
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    char tmp[300], final[300];
    QFILE_INFO *info;
    QFILE_OUT *out;
    off_t size;
    int fd;

    test_file(tq, "reuse/free." QID_A, 5000, 0600);
    /* A copy a holder of that file left when it died. */
    test_file(tq, "reuse/free." QID_A "+", 10, 0600);
    (void) snprintf(tmp, sizeof(tmp), "%s",
                    test_path(tq, "incoming/.tmp." QID_B));
    (void) snprintf(final, sizeof(final), "%s",
                    test_path(tq, "incoming/" QID_B));
    out = qfile_create_reuse(one, tmp, 0600);
    assert_non_null(out);
    assert_string_equal(qfile_out_path(out),
                        test_path(tq, "reuse/free." QID_A));
    test_records(out);
    assert_int_equal(qfile_out_prepend_content(out, "X-Sig: 1\n", 9), 0);
    assert_int_equal(qfile_out_set_attr(out, "pool", "p1"), 0);
    two = qfile_reuse_open(tq->queue);
    assert_int_equal(qfile_reuse_take(two, path, &size), -1);
    assert_int_equal(qfile_commit(out, final, NULL), 0);
    assert_false(test_exists(tq, "reuse/free." QID_A));
    assert_false(test_exists(tq, "reuse/free." QID_A "+"));
    fd = open(final, O_RDONLY);
    assert_true(fd >= 0);
    info = qfile_info_read(fd, why);
    if (info == NULL)
        fail_msg("copied file unreadable: %s", vstr_str(why));
    assert_string_equal(qfile_info_attr(info, "pool"), "p1");
    assert_int_equal(info->content_size, 15 + 9);
    qfile_info_free(info);
    (void) close(fd);
    qfile_reuse_free(one);
    qfile_reuse_free(two);
    vstr_free(path);
    vstr_free(why);
}

/* Returned files become free up to the limit, the rest go. */
static void test_publish_and_sweep(void **state)
{
    TEST_Q *tq = *state;
    ARGV *qids = argv_alloc(3);

    test_file(tq, "reuse/free." QID_A, 10, 0600);
    test_file(tq, "reuse/ret." QID_B, 10, 0600);
    test_file(tq, "reuse/ret." QID_C, 10, 0600);
    argv_add(qids, QID_B);
    argv_add(qids, QID_C);
    argv_add(qids, "0123456789ABCDEJ"); /* gone meanwhile: passed over */
    long free_now = 0;

    assert_int_equal(qfile_reuse_publish(tq->queue, qids, 2, &free_now, NULL),
                     1);
    assert_int_equal(free_now, 2);
    assert_int_equal(test_count_free(tq), 2);
    assert_true(test_exists(tq, "reuse/free." QID_A));
    assert_true(test_exists(tq, "reuse/free." QID_B));
    assert_false(test_exists(tq, "reuse/ret." QID_B));
    assert_false(test_exists(tq, "reuse/ret." QID_C));
    assert_false(test_exists(tq, "reuse/free." QID_C));
    /* Past the limit with a surplus list: left for the caller, named. */
    {
        ARGV *one = argv_alloc(1);
        ARGV *surplus = argv_alloc(1);

        test_file(tq, "reuse/ret." QID_C, 10, 0600);
        argv_add(one, QID_C);
        assert_int_equal(
            qfile_reuse_publish(tq->queue, one, 2, &free_now, surplus), 0);
        assert_int_equal(free_now, 2);
        assert_int_equal(surplus->argc, 1);
        assert_non_null(strstr(surplus->argv[0], "/reuse/ret." QID_C));
        assert_true(test_exists(tq, "reuse/ret." QID_C));
        assert_int_equal(unlink(surplus->argv[0]), 0);
        argv_free(one);
        argv_free(surplus);
    }
    /* A start removes every ret.*, counts the free ones. */
    test_file(tq, "reuse/ret." QID_C, 10, 0600);
    assert_int_equal(qfile_reuse_sweep(tq->queue, false), 2);
    assert_false(test_exists(tq, "reuse/ret." QID_C));
    assert_true(test_exists(tq, "reuse/free." QID_A));
    /* Reuse turned off: the free ones go too. */
    assert_int_equal(qfile_reuse_sweep(tq->queue, true), 0);
    assert_false(test_exists(tq, "reuse/free." QID_A));
    assert_false(test_exists(tq, "reuse/free." QID_B));
    argv_free(qids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_taker, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_name_gone_under_lock, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_not_ours_is_refused, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_reused_file_is_cut, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_abort_keeps_it_free, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_copy_stays_taken, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_publish_and_sweep, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
