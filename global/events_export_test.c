/*
 * events_export_test - unit tests for events_export_display: what logs
 * and `sluice events status` may show of an exporter's target
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "events_export.h"

/* check - target shows as want */
static void check(const char *target, const char *want)
{
    VSTR *out = vstr_alloc(10);

    events_export_display(out, target);
    if (strcmp(vstr_str(out), want) != 0)
        fail_msg("\"%s\" shows as \"%s\", not \"%s\"", target, vstr_str(out),
                 want);
    vstr_free(out);
}

static void test_userinfo_and_query_hidden(void **state)
{
    check("http://user:pw@127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook");
    check("https://user:p@ss@hooks.test/x?token=abc#frag",
          "https://hooks.test/x?...");
    check("https://token@hooks.test", "https://hooks.test");
    check("http://hooks.test/a@b", "http://hooks.test/a@b");
    check("http://hooks.test?k=v", "http://hooks.test?...");
    check("http://hooks.test/x#frag", "http://hooks.test/x");
}

static void test_other_targets_unchanged(void **state)
{
    check("/var/lib/sluice/stats.db", "/var/lib/sluice/stats.db");
    check("broker1:9092,broker2:9092/mail-events",
          "broker1:9092,broker2:9092/mail-events");
    check("", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_userinfo_and_query_hidden),
        cmocka_unit_test(test_other_targets_unchanged),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
