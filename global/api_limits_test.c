/*
 * api_limits_test - the API's per-tenant limits: the daily count refuses
 * past the limit with the seconds to midnight, is read back by a new
 * state (a restart) from its file, starts again on a new day and takes
 * back what was given; the rate bucket lets a second's worth through,
 * then asks to wait, refills with time, and lets a batch larger than a
 * second's worth through once, paid for by the next requests
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "api_limits.h"
#include "mymalloc.h"
#include "testlib.h"

#define DAY0 (20000.0 * 86400.0) /* a UTC midnight */

/* test_daily_survives_restart - count, refuse, read back, new day */
static void test_daily_survives_restart(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("api_limits");
    const char *usage = mystrdup(testlib_path(dir, "usage"));
    API_LIMITS_STATE *lim = api_limits_create(usage, 5, 0);
    const char *which = "";
    long long day = 0;

    assert_int_equal(api_limits_take(lim, "acme", 3, DAY0 + 10, &day, &which),
                     0);
    assert_int_equal(day, 20000);
    assert_int_equal(api_limits_take(lim, "acme", 2, DAY0 + 11, &day, &which),
                     0);
    /* full: the wait is the rest of the day */
    assert_int_equal(api_limits_take(lim, "acme", 1, DAY0 + 100, &day, &which),
                     86400 - 100 + 1);
    assert_string_equal(which, "daily");
    /* another tenant has its own count */
    assert_int_equal(api_limits_take(lim, "other", 5, DAY0 + 100, &day, &which),
                     0);
    api_limits_give(lim, "acme", 1, 20000);
    assert_int_equal(api_limits_count(lim, "acme", 20000), 4);
    api_limits_free(lim);

    /* a restart: the counts come back from the files */
    lim = api_limits_create(usage, 5, 0);
    assert_int_equal(api_limits_take(lim, "acme", 1, DAY0 + 200, &day, &which),
                     0);
    assert_int_not_equal(
        api_limits_take(lim, "acme", 1, DAY0 + 201, &day, &which), 0);
    assert_int_not_equal(
        api_limits_take(lim, "other", 1, DAY0 + 201, &day, &which), 0);
    /* the next day starts at 0 */
    assert_int_equal(
        api_limits_take(lim, "acme", 5, DAY0 + 86400 + 1, &day, &which), 0);
    assert_int_equal(day, 20001);
    /* a give for the day before changes nothing */
    api_limits_give(lim, "acme", 5, 20000);
    assert_int_equal(api_limits_count(lim, "acme", 20001), 5);
    api_limits_free(lim);

    /* a restart on the next day reads a count of that day only */
    lim = api_limits_create(usage, 5, 0);
    assert_int_not_equal(
        api_limits_take(lim, "acme", 1, DAY0 + 86400 + 2, &day, &which), 0);
    api_limits_free(lim);
    lim = api_limits_create(usage, 5, 0);
    assert_int_equal(
        api_limits_take(lim, "acme", 1, DAY0 + 2 * 86400 + 2, &day, &which), 0);
    api_limits_free(lim);
    myfree((char *) usage);
    testlib_dir_remove(dir);
}

/* test_rate - a second's worth, then waits; a big batch once */
static void test_rate(void **state)
{
    API_LIMITS_STATE *lim = api_limits_create("/nonexistent", 0, 10);
    const char *which = "";
    long long day = 0;
    double t = DAY0 + 5;

    for (int i = 0; i < 10; i++)
        assert_int_equal(api_limits_take(lim, "acme", 1, t, &day, &which), 0);
    assert_int_equal(api_limits_take(lim, "acme", 1, t, &day, &which), 1);
    assert_string_equal(which, "rate");
    /* 0.5 s later: 5 more */
    t += 0.5;
    assert_int_equal(api_limits_take(lim, "acme", 5, t, &day, &which), 0);
    assert_int_not_equal(api_limits_take(lim, "acme", 1, t, &day, &which), 0);
    /* a full bucket lets 50 through; the debt then holds others 5 s */
    t += 10;
    assert_int_equal(api_limits_take(lim, "acme", 50, t, &day, &which), 0);
    assert_int_equal(api_limits_take(lim, "acme", 1, t + 1, &day, &which), 4);
    assert_int_equal(api_limits_take(lim, "acme", 1, t + 4.2, &day, &which), 0);
    /* no rate limit for another tenant's count */
    assert_int_equal(api_limits_take(lim, "b", 10, t, &day, &which), 0);
    api_limits_free(lim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daily_survives_restart),
        cmocka_unit_test(test_rate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
