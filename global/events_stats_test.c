/*
 * events_stats_test - unit tests for the store's pure helpers: the domain
 * of an address and the Unix time of an event's time stamp
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "events_stats.h"
#include "vstr.h"

static void test_domain(void **state)
{
    VSTR *domain = vstr_alloc(10);

    assert_true(events_stats_domain("Bob@Dest.TEST", domain));
    assert_string_equal(vstr_str(domain), "dest.test");
    assert_true(events_stats_domain("\"a@b\"@c.test", domain));
    assert_string_equal(vstr_str(domain), "c.test");
    assert_false(events_stats_domain("postmaster", domain));
    assert_string_equal(vstr_str(domain), "");
    assert_false(events_stats_domain("bob@", domain));
    assert_false(events_stats_domain("", domain));
    assert_false(events_stats_domain(NULL, domain));
    vstr_free(domain);
}

static void test_time(void **state)
{
    assert_int_equal(events_stats_time("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(events_stats_time("2026-12-05T04:00:00.000007Z"),
                     1796443200);
    assert_int_equal(events_stats_time("2026-12-05T04:00:01.5Z"), 1796443201);
    assert_int_equal(events_stats_time("2026-12-05T04:00:00"), -1);
    assert_int_equal(events_stats_time("2026-12-05 04:00:00Z"), -1);
    assert_int_equal(events_stats_time("2026-13-05T04:00:00Z"), -1);
    assert_int_equal(events_stats_time("2026-12-05T24:00:00Z"), -1);
    assert_int_equal(events_stats_time("2026-12-05T04:00:00.Zx"), -1);
    assert_int_equal(events_stats_time("yesterday"), -1);
    assert_int_equal(events_stats_time(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain),
        cmocka_unit_test(test_time),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
