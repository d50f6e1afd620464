/*
 * argv_test - unit tests for argv
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"

static void test_split_drops_empty_fields(void **state)
{
    (void) state;
    ARGV *av = argv_split("  a, b,,c  ", ", ");

    assert_int_equal(av->argc, 3);
    assert_string_equal(av->argv[0], "a");
    assert_string_equal(av->argv[1], "b");
    assert_string_equal(av->argv[2], "c");
    assert_null(av->argv[3]);
    argv_free(av);
}

static void test_split_empty(void **state)
{
    (void) state;
    ARGV *av = argv_split(" \t ", " \t");

    assert_int_equal(av->argc, 0);
    assert_null(av->argv[0]);
    argv_free(av);
}

static void test_grows(void **state)
{
    (void) state;
    ARGV *av = argv_alloc(1);
    char buf[16];

    for (int i = 0; i < 100; i++) {
        snprintf(buf, sizeof(buf), "w%d", i);
        argv_add(av, buf);
    }
    argv_addn(av, "abcdef", 3);
    assert_int_equal(av->argc, 101);
    assert_string_equal(av->argv[99], "w99");
    assert_string_equal(av->argv[100], "abc");
    assert_null(av->argv[101]);
    assert_null(argv_free(av));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_drops_empty_fields),
        cmocka_unit_test(test_split_empty),
        cmocka_unit_test(test_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
