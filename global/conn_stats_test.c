/*
 * conn_stats_test - unit tests for the shared connection counts: a slot
 * per user, counters kept when a slot is given back and taken again, the
 * active count of a dead process left out, a file that is not ours
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "conn_stats.h"
#include "testlib.h"
#include "vstr.h"

/* test_setup - a fresh directory, the log captured there */
static int test_setup(void **state)
{
    TESTLIB_DIR *tmp = testlib_dir_create("conn_stats_test");

    if (tmp == NULL || testlib_log_capture(tmp, "conn_stats_test") < 0)
        return -1;
    *state = tmp;
    return 0;
}

/* test_teardown - remove the temp directory */
static int test_teardown(void **state)
{
    return testlib_dir_remove(*state);
}

static bool dead(long pid)
{
    return false;
}

/* The queue directory of the test (the temp folder) with its stats/ */
static void data_dir(TESTLIB_DIR *tmp, VSTR *dir)
{
    const char *x = testlib_path(tmp, "x");

    vstr_ncpy(dir, x, strlen(x) - 2);
    (void) mkdir(testlib_path(tmp, "stats"), 0700);
}

static void test_counts(void **state)
{
    VSTR *dir = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    CONN_STATS *in;
    CONN_STATS *out;
    CONN_STATS_SUM sum;

    data_dir(*state, dir);
    /* No file yet: zeros. */
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, NULL, why), 0);
    assert_true(sum.sessions[CONN_STATS_IN] == 0);
    in = conn_stats_open(vstr_str(dir), CONN_STATS_IN, why);
    out = conn_stats_open(vstr_str(dir), CONN_STATS_OUT, why);
    assert_non_null(in);
    assert_non_null(out);
    conn_stats_connect(in);
    conn_stats_connect(in);
    conn_stats_tls(in, "TLSv1.3");
    conn_stats_tls(in, "TLSv9");
    conn_stats_disconnect(in);
    conn_stats_connect(out);
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, NULL, why), 0);
    assert_true(sum.active[CONN_STATS_IN] == 1);
    assert_true(sum.sessions[CONN_STATS_IN] == 2);
    assert_true(sum.tls[CONN_STATS_IN][4] == 1); /* TLSv1.3 */
    assert_true(sum.tls[CONN_STATS_IN][CONN_STATS_TLS_VERSIONS - 1] == 1);
    assert_true(sum.active[CONN_STATS_OUT] == 1);
    assert_true(sum.sessions[CONN_STATS_OUT] == 1);
    /* A process that died: its active count is not counted, its
       counters are. */
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, dead, why), 0);
    assert_true(sum.active[CONN_STATS_IN] == 0);
    assert_true(sum.sessions[CONN_STATS_IN] == 2);
    /* Given back and taken again: the counters go on. */
    in = conn_stats_close(in);
    assert_null(in);
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, NULL, why), 0);
    assert_true(sum.active[CONN_STATS_IN] == 0);
    assert_true(sum.sessions[CONN_STATS_IN] == 2);
    in = conn_stats_open(vstr_str(dir), CONN_STATS_IN, why);
    conn_stats_connect(in);
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, NULL, why), 0);
    assert_true(sum.sessions[CONN_STATS_IN] == 3);
    assert_true(sum.active[CONN_STATS_IN] == 1);
    /* NULL stats are ignored. */
    conn_stats_connect(NULL);
    conn_stats_tls(NULL, "TLSv1.2");
    conn_stats_close(in);
    conn_stats_close(out);
    vstr_free(dir);
    vstr_free(why);
}

static void test_not_ours(void **state)
{
    VSTR *dir = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    CONN_STATS_SUM sum;

    data_dir(*state, dir);
    testlib_write(*state, "stats/" CONN_STATS_FILE, "something else\n");
    assert_null(conn_stats_open(vstr_str(dir), CONN_STATS_OUT, why));
    assert_non_null(strstr(vstr_str(why), "not a file of connection counts"));
    vstr_reset(why);
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, NULL, why), -1);
    assert_non_null(strstr(vstr_str(why), "not a file of connection counts"));
    vstr_free(dir);
    vstr_free(why);
}

/* A file zeroed under a live process: more closes than opens are kept
   at zero with one warning, never an abort of the session */
static void test_zeroed(void **state)
{
    TESTLIB_DIR *tmp = *state;
    VSTR *dir = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    CONN_STATS *in;
    CONN_STATS_SUM sum;
    struct stat st;
    char *zero;
    int fd;

    data_dir(tmp, dir);
    in = conn_stats_open(vstr_str(dir), CONN_STATS_IN, why);
    assert_non_null(in);
    conn_stats_connect(in);
    /* Zero everything after the head (the slots): the shared mapping
       sees it at once. */
    fd = open(testlib_path(tmp, "stats/" CONN_STATS_FILE), O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    zero = calloc(1, (size_t) st.st_size);
    assert_non_null(zero);
    assert_true(pwrite(fd, zero, (size_t) st.st_size - 128, 128) ==
                st.st_size - 128);
    free(zero);
    (void) close(fd);
    conn_stats_disconnect(in);
    conn_stats_disconnect(in);
    assert_true(testlib_log_has(tmp, "more connections closed than opened"));
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, NULL, why), 0);
    assert_true(sum.active[CONN_STATS_IN] == 0);
    /* Counting goes on. */
    conn_stats_connect(in);
    conn_stats_disconnect(in);
    conn_stats_connect(in);
    assert_int_equal(conn_stats_read(vstr_str(dir), &sum, NULL, why), 0);
    conn_stats_close(in);
    vstr_free(dir);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counts, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_not_ours, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_zeroed, test_setup, test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
