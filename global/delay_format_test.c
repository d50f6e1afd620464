/*
 * delay_format_test - the numbers of delay= and delays= in log lines
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "delay_format.h"

/* test_check - one value and what it prints as */
static void test_check(double seconds, const char *want)
{
    char buf[32];

    delay_format(seconds, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

/* test_delay_format - Postfix's delay numbers */
static void test_delay_format(void **state)
{
    test_check(0.001, "0");
    test_check(0.0082, "0.01");
    test_check(0.05, "0.05");
    test_check(0.412, "0.41");
    test_check(3.14159, "3.1");
    test_check(12.4, "12");
    test_check(123.4, "123");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay_format),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
