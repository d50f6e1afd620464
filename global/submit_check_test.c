/*
 * submit_check_test - unit tests for the envelope rules of local
 * submission: control bytes, empty recipients, length limits, quoting
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "mymalloc.h"
#include "submit_check.h"
#include "vstr.h"

/* test_good - ordinary values pass */
static void test_good(void **state)
{
    static const char *good[] = {
        "user",
        "user@example.test",
        "\"a b\"@example.test",
        "user+ext@[127.0.0.1]",
        "\xc3\xa9t\xc3\xa9@example.test",
    };
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(good); i++) {
        assert_int_equal(submit_check_address(good[i], false, why), 0);
        assert_int_equal(submit_check_address(good[i], true, why), 0);
    }
    assert_int_equal(submit_check_address("", true, why), 0);
    assert_int_equal(submit_check_full_name("Some One", why), 0);
    assert_int_equal(submit_check_full_name("", why), 0);
    vstr_free(why);
}

/* test_control - every control byte is refused, and named */
static void test_control(void **state)
{
    VSTR *why = vstr_alloc(10);
    char text[8];

    for (int ch = 1; ch < 0x80; ch++) {
        bool bad = ch < 0x20 || ch == 0x7f;
        char want[64];

        (void) snprintf(text, sizeof(text), "a%cb@x", ch);
        (void) snprintf(want, sizeof(want),
                        "contains a control character (\\x%02x)", ch);
        assert_int_equal(submit_check_address(text, false, why), bad ? -1 : 0);
        if (bad)
            assert_string_equal(vstr_str(why), want);
        assert_int_equal(submit_check_address(text, true, why), bad ? -1 : 0);
        assert_int_equal(submit_check_full_name(text, why), bad ? -1 : 0);
    }
    vstr_free(why);
}

/* test_empty_and_long - an empty recipient; one byte over each limit */
static void test_empty_and_long(void **state)
{
    VSTR *why = vstr_alloc(10);
    char *text = mymalloc(SUBMIT_CHECK_FULL_NAME_MAX + 2);

    assert_int_equal(submit_check_address("", false, why), -1);
    assert_string_equal(vstr_str(why), "is empty");

    memset(text, 'a', SUBMIT_CHECK_ADDR_MAX);
    text[SUBMIT_CHECK_ADDR_MAX] = 0;
    assert_int_equal(submit_check_address(text, false, why), 0);
    text[SUBMIT_CHECK_ADDR_MAX] = 'a';
    text[SUBMIT_CHECK_ADDR_MAX + 1] = 0;
    assert_int_equal(submit_check_address(text, true, why), -1);
    assert_string_equal(vstr_str(why), "is 1001 bytes long; the limit is 1000");

    memset(text, 'n', SUBMIT_CHECK_FULL_NAME_MAX + 1);
    text[SUBMIT_CHECK_FULL_NAME_MAX + 1] = 0;
    assert_int_equal(submit_check_full_name(text, why), -1);
    text[SUBMIT_CHECK_FULL_NAME_MAX] = 0;
    assert_int_equal(submit_check_full_name(text, why), 0);
    myfree(text);
    vstr_free(why);
}

/* test_envid - RFC 3461: 1 to 100 printable characters, no space */
static void test_envid(void **state)
{
    VSTR *why = vstr_alloc(10);
    char text[SUBMIT_CHECK_ENVID_MAX + 2];

    assert_int_equal(submit_check_envid("QQ314159@host.test", why), 0);
    assert_int_equal(submit_check_envid("", why), -1);
    assert_string_equal(vstr_str(why), "does not have 1 to 100 characters");
    memset(text, 'e', SUBMIT_CHECK_ENVID_MAX);
    text[SUBMIT_CHECK_ENVID_MAX] = 0;
    assert_int_equal(submit_check_envid(text, why), 0);
    text[SUBMIT_CHECK_ENVID_MAX] = 'e';
    text[SUBMIT_CHECK_ENVID_MAX + 1] = 0;
    assert_int_equal(submit_check_envid(text, why), -1);
    static const char *const bad[] = {"has space", "tab\there", "del\x7f",
                                      "caf\xc3\xa9", "cr\r"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(submit_check_envid(bad[i], why), -1);
        assert_string_equal(vstr_str(why),
                            "is not printable ASCII without spaces");
    }
    vstr_free(why);
}

/* test_quote - escaped, in quotes, cut */
static void test_quote(void **state)
{
    VSTR *out = vstr_alloc(10);

    submit_check_quote(out, "a@x\r\nRCPT TO:<\"b\\c\">", 100);
    assert_string_equal(vstr_str(out),
                        "\"a@x\\x0d\\x0aRCPT TO:<\\\"b\\\\c\\\">\"");
    vstr_reset(out);
    submit_check_quote(out, "abcdef", 3);
    assert_string_equal(vstr_str(out), "\"abc\"...");
    vstr_reset(out);
    submit_check_quote(out, "abc", 3);
    assert_string_equal(vstr_str(out), "\"abc\"");
    vstr_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),           cmocka_unit_test(test_control),
        cmocka_unit_test(test_empty_and_long), cmocka_unit_test(test_envid),
        cmocka_unit_test(test_quote),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
