/*
 * dsn_log_test - unit tests for the defer and bounce logs: append and read
 * back, a record cut at the end, latest/count, remove, bad names, in a
 * fresh temp directory
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dsn_log.h"
#include "mail_queue.h"
#include "qid.h"
#include "testlib.h"
#include "vstr.h"

/* test_setup - a fresh queue directory with defer/ and bounce/ */
static int test_setup(void **state)
{
    TESTLIB_DIR *tmp = testlib_dir_create("dsn_log_test");

    if (tmp == NULL)
        return -1;
    *state = tmp;
    if (mkdir(testlib_path(tmp, DSN_LOG_DEFER), 0700) < 0 ||
        mkdir(testlib_path(tmp, DSN_LOG_BOUNCE), 0700) < 0)
        return -1;
    return 0;
}

/* test_teardown - remove the temp directory and all below it */
static int test_teardown(void **state)
{
    return testlib_dir_remove(*state);
}

/* test_rec - a record with the fields that vary between tests */
static DSN_LOG_REC test_rec(const char *action, const char *address,
                            const char *reason, long long when)
{
    DSN_LOG_REC rec = {
        .action = action,
        .address = address,
        .orcpt = "rfc822;x@y.test",
        .notify = "FAILURE,DELAY",
        .offset = 123,
        .status = "4.2.2",
        .reason = reason,
        .diagnostic = "smtp; 452 4.2.2 mailbox full",
        .remote_mta = "dns; mx.dest.test",
        .time = when,
        .category = "mailbox_full",
    };

    return rec;
}

static void test_round_trip(void **state)
{
    const char *dir = ((TESTLIB_DIR *) *state)->path;
    VSTR *why = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    char qid[QID_SIZE];
    /* A reason with a newline, an '=' and a NUL-free binary byte. */
    static const char odd_reason[] = "line one\nline=two \xff end";
    DSN_LOG_REC rec =
        test_rec(DSN_ACTION_DELAYED, "a@dest.test", odd_reason, 1700000000);
    DSN_LOG_REC empty = {
        .action = DSN_ACTION_ATTEMPT, .offset = -1, .time = 1700000001};
    DSN_LOG *dlog;
    struct stat st;

    qid_new(qid);
    assert_int_equal(dsn_log_append(dir, DSN_LOG_DEFER, qid, &rec, true, why),
                     0);
    /* NULL strings are written as empty ones. */
    assert_int_equal(
        dsn_log_append(dir, DSN_LOG_DEFER, qid, &empty, false, why), 0);
    mail_queue_path(path, dir, DSN_LOG_DEFER, qid);
    assert_int_equal(stat(vstr_str(path), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_true(dsn_log_exists(dir, DSN_LOG_DEFER, qid));
    assert_false(dsn_log_exists(dir, DSN_LOG_BOUNCE, qid));

    dlog = dsn_log_read(dir, DSN_LOG_DEFER, qid, why);
    assert_non_null(dlog);
    assert_int_equal(dlog->count, 2);
    assert_string_equal(dlog->recs[0].action, DSN_ACTION_DELAYED);
    assert_string_equal(dlog->recs[0].address, "a@dest.test");
    assert_string_equal(dlog->recs[0].orcpt, "rfc822;x@y.test");
    assert_string_equal(dlog->recs[0].notify, "FAILURE,DELAY");
    assert_int_equal(dlog->recs[0].offset, 123);
    assert_string_equal(dlog->recs[0].status, "4.2.2");
    assert_string_equal(dlog->recs[0].reason, odd_reason);
    assert_string_equal(dlog->recs[0].diagnostic,
                        "smtp; 452 4.2.2 mailbox full");
    assert_string_equal(dlog->recs[0].remote_mta, "dns; mx.dest.test");
    assert_int_equal(dlog->recs[0].time, 1700000000);
    assert_string_equal(dlog->recs[0].category, "mailbox_full");
    assert_string_equal(dlog->recs[1].action, DSN_ACTION_ATTEMPT);
    /* No category: none written, NULL when read (older logs alike). */
    assert_null(dlog->recs[1].category);
    assert_string_equal(dlog->recs[1].address, "");
    assert_string_equal(dlog->recs[1].reason, "");
    assert_int_equal(dlog->recs[1].offset, -1);
    assert_int_equal(dlog->recs[1].time, 1700000001);
    assert_null(dsn_log_free(dlog));

    /* An absent log reads as empty, not as an error. */
    dlog = dsn_log_read(dir, DSN_LOG_BOUNCE, qid, why);
    assert_non_null(dlog);
    assert_int_equal(dlog->count, 0);
    dsn_log_free(dlog);

    vstr_free(why);
    vstr_free(path);
}

static void test_cut_record_ignored(void **state)
{
    const char *dir = ((TESTLIB_DIR *) *state)->path;
    VSTR *why = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    char qid[QID_SIZE];
    DSN_LOG_REC rec = test_rec(DSN_ACTION_FAILED, "b@dest.test", "gone", 5);
    static const char cut[] = "action=6:failed\naddress=3:b@";
    DSN_LOG *dlog;
    int fd;

    qid_new(qid);
    assert_int_equal(dsn_log_append(dir, DSN_LOG_BOUNCE, qid, &rec, true, why),
                     0);
    /* A crash mid-append leaves half a record at the end. */
    mail_queue_path(path, dir, DSN_LOG_BOUNCE, qid);
    fd = open(vstr_str(path), O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, cut, sizeof(cut) - 1), sizeof(cut) - 1);
    close(fd);
    dlog = dsn_log_read(dir, DSN_LOG_BOUNCE, qid, why);
    assert_non_null(dlog);
    assert_int_equal(dlog->count, 1);
    assert_string_equal(dlog->recs[0].address, "b@dest.test");
    dsn_log_free(dlog);

    /* Garbage that is a whole but malformed record is an error. */
    fd = open(vstr_str(path), O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "action=6:failed\n\n", 17), 17);
    close(fd);
    vstr_reset(why);
    assert_null(dsn_log_read(dir, DSN_LOG_BOUNCE, qid, why));
    assert_non_null(strstr(vstr_str(why), "offset 0"));

    vstr_free(why);
    vstr_free(path);
}

static void test_latest_and_count(void **state)
{
    const char *dir = ((TESTLIB_DIR *) *state)->path;
    VSTR *why = vstr_alloc(100);
    char qid[QID_SIZE];
    DSN_LOG_REC recs[] = {
        test_rec(DSN_ACTION_DELAYED, "a@dest.test", "first a", 1),
        test_rec(DSN_ACTION_DELAYED, "b@dest.test", "first b", 2),
        test_rec(DSN_ACTION_ATTEMPT, "", "", 3),
        test_rec(DSN_ACTION_DELAYED, "a@dest.test", "second a", 4),
        test_rec(DSN_ACTION_ATTEMPT, "", "", 5),
    };
    const DSN_LOG_REC *got;
    DSN_LOG *dlog;

    qid_new(qid);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(recs); i++)
        assert_int_equal(
            dsn_log_append(dir, DSN_LOG_DEFER, qid, recs + i, false, why), 0);
    dlog = dsn_log_read(dir, DSN_LOG_DEFER, qid, why);
    assert_non_null(dlog);
    assert_int_equal(dlog->count, 5);
    assert_int_equal(dsn_log_count(dlog, DSN_ACTION_ATTEMPT), 2);
    assert_int_equal(dsn_log_count(dlog, DSN_ACTION_DELAYED), 3);
    assert_int_equal(dsn_log_count(dlog, DSN_ACTION_WARNED), 0);
    got = dsn_log_latest(dlog, DSN_ACTION_DELAYED, "a@dest.test");
    assert_non_null(got);
    assert_string_equal(got->reason, "second a");
    got = dsn_log_latest(dlog, DSN_ACTION_DELAYED, "b@dest.test");
    assert_non_null(got);
    assert_string_equal(got->reason, "first b");
    assert_null(dsn_log_latest(dlog, DSN_ACTION_DELAYED, "c@dest.test"));
    assert_null(dsn_log_latest(dlog, DSN_ACTION_FAILED, "a@dest.test"));
    dsn_log_free(dlog);
    vstr_free(why);
}

static void test_long_reason_cut(void **state)
{
    const char *dir = ((TESTLIB_DIR *) *state)->path;
    VSTR *why = vstr_alloc(100);
    char qid[QID_SIZE];
    char *big = malloc(DSN_LOG_REC_MAX * 2);
    DSN_LOG_REC rec;
    DSN_LOG *dlog;

    assert_non_null(big);
    memset(big, 'r', DSN_LOG_REC_MAX * 2 - 1);
    big[DSN_LOG_REC_MAX * 2 - 1] = 0;
    rec = test_rec(DSN_ACTION_FAILED, "a@dest.test", big, 9);
    qid_new(qid);
    assert_int_equal(dsn_log_append(dir, DSN_LOG_BOUNCE, qid, &rec, false, why),
                     0);
    dlog = dsn_log_read(dir, DSN_LOG_BOUNCE, qid, why);
    assert_non_null(dlog);
    assert_int_equal(dlog->count, 1);
    assert_true(strlen(dlog->recs[0].reason) <= 1024);
    assert_true(strlen(dlog->recs[0].reason) > 0);
    dsn_log_free(dlog);
    free(big);
    vstr_free(why);
}

static void test_remove_and_bad_names(void **state)
{
    const char *dir = ((TESTLIB_DIR *) *state)->path;
    VSTR *why = vstr_alloc(100);
    char qid[QID_SIZE];
    DSN_LOG_REC rec = test_rec(DSN_ACTION_FAILED, "a@dest.test", "x", 1);

    qid_new(qid);
    assert_int_equal(dsn_log_append(dir, DSN_LOG_BOUNCE, qid, &rec, true, why),
                     0);
    assert_true(dsn_log_exists(dir, DSN_LOG_BOUNCE, qid));
    assert_int_equal(dsn_log_remove(dir, DSN_LOG_BOUNCE, qid), 0);
    assert_false(dsn_log_exists(dir, DSN_LOG_BOUNCE, qid));
    /* Absent is fine. */
    assert_int_equal(dsn_log_remove(dir, DSN_LOG_BOUNCE, qid), 0);

    /* Neither a path in place of a queue ID nor another queue. */
    vstr_reset(why);
    assert_int_equal(
        dsn_log_append(dir, DSN_LOG_BOUNCE, "../x", &rec, false, why), -1);
    assert_true(vstr_len(why) > 0);
    assert_int_equal(dsn_log_append(dir, "deferred", qid, &rec, false, why),
                     -1);
    assert_null(dsn_log_read(dir, "incoming", qid, why));
    assert_int_equal(dsn_log_remove(dir, DSN_LOG_DEFER, "x/y"), -1);
    assert_int_equal(errno, EINVAL);
    assert_false(dsn_log_exists(dir, "active", qid));
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_cut_record_ignored, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_latest_and_count, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_long_reason_cut, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_remove_and_bad_names, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests_name("dsn_log", tests, NULL, NULL);
}
