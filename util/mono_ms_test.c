/*
 * mono_ms_test - unit test for mono_ms: it never goes back, and a sleep
 * of 30 ms moves it on by at least that
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <time.h>
#include <cmocka.h>

#include "mono_ms.h"

/* test_moves_on - non-decreasing; a 30 ms sleep is seen */
static void test_moves_on(void **state)
{
    struct timespec pause = {0, 30 * 1000000L};
    long long before = mono_ms();
    long long after;

    assert_true(before > 0);
    assert_true(mono_ms() >= before);
    (void) nanosleep(&pause, NULL);
    after = mono_ms();
    assert_true(after - before >= 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moves_on),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
