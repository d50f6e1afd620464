/*
 * vstr_test - unit tests for growable strings
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "vstr.h"

static void test_grow_and_cat(void **state)
{
    VSTR *vs = vstr_alloc(1);

    for (int i = 0; i < 1000; i++)
        vstr_cat(vs, "abc");
    assert_int_equal(vstr_len(vs), 3000);
    assert_int_equal(strlen(vstr_str(vs)), 3000);
    assert_memory_equal(vstr_str(vs) + 2997, "abc", 4);
    vs = vstr_free(vs);
    assert_null(vs);
}

static void test_binary_content(void **state)
{
    VSTR *vs = vstr_alloc(4);

    vstr_ncat(vs, "a\0b", 3);
    vstr_addch(vs, 0);
    assert_int_equal(vstr_len(vs), 4);
    assert_memory_equal(vstr_str(vs), "a\0b\0", 5);
    vstr_free(vs);
}

static void test_sprintf(void **state)
{
    VSTR *vs = vstr_alloc(2);
    char big[5000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    vstr_sprintf(vs, "%d-%s", 42, "ok");
    assert_string_equal(vstr_str(vs), "42-ok");
    vstr_sprintf_append(vs, "[%s]", big);
    assert_int_equal(vstr_len(vs), 5 + 2 + sizeof(big) - 1);
    assert_int_equal(vstr_str(vs)[vstr_len(vs)], 0);
    vstr_sprintf(vs, "%s", "");
    assert_int_equal(vstr_len(vs), 0);
    vstr_free(vs);
}

static void test_truncate_trim_lower(void **state)
{
    VSTR *vs = vstr_alloc(0);

    vstr_cpy(vs, "Hello World \t\r\n");
    vstr_trim(vs);
    assert_string_equal(vstr_str(vs), "Hello World");
    vstr_lower(vs);
    assert_string_equal(vstr_str(vs), "hello world");
    vstr_truncate(vs, 5);
    assert_string_equal(vstr_str(vs), "hello");
    vstr_truncate(vs, 100);
    assert_string_equal(vstr_str(vs), "hello");
    vstr_reset(vs);
    assert_string_equal(vstr_str(vs), "");
    vstr_free(vs);
}

static void test_export(void **state)
{
    VSTR *vs = vstr_alloc(0);
    char *s;

    vstr_cpy(vs, "kept");
    s = vstr_export(vs);
    assert_string_equal(s, "kept");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow_and_cat),
        cmocka_unit_test(test_binary_content),
        cmocka_unit_test(test_sprintf),
        cmocka_unit_test(test_truncate_trim_lower),
        cmocka_unit_test(test_export),
    };

    return cmocka_run_group_tests_name("vstr", tests, NULL, NULL);
}
