/*
 * utf8_test - unit tests for utf8_char: each length decoded, and every
 * kind of byte sequence RFC 3629 refuses refused
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "utf8.h"

/* test_utf8_len - utf8_char of the len bytes of text (its end there) */
static size_t test_utf8_len(const char *text, size_t len, unsigned int *value)
{
    const unsigned char *cp = (const unsigned char *) text;

    *value = 0xffffffff;
    return utf8_char(cp, cp + len, value);
}

/* test_utf8 - utf8_char of text (its end at its NUL) */
static size_t test_utf8(const char *text, unsigned int *value)
{
    return test_utf8_len(text, strlen(text), value);
}

/* Each length, at the bounds of its range. */
static void test_decodes(void **state)
{
    static const struct {
        const char *text;
        size_t len;
        unsigned int value;
    } cases[] = {
        {"A", 1, 0x41},
        {"\x7f", 1, 0x7f},
        {"\xc2\x80", 2, 0x80},
        {"\xdf\xbf", 2, 0x7ff},
        {"\xc3\xa9x", 2, 0xe9},
        {"\xe0\xa0\x80", 3, 0x800},
        {"\xed\x9f\xbf", 3, 0xd7ff},
        {"\xee\x80\x80", 3, 0xe000},
        {"\xef\xbf\xbf", 3, 0xffff},
        {"\xf0\x90\x80\x80", 4, 0x10000},
        {"\xf0\x9f\x98\x80", 4, 0x1f600},
        {"\xf4\x8f\xbf\xbf", 4, 0x10ffff},
    };
    unsigned int value;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(test_utf8(cases[i].text, &value), cases[i].len);
        assert_int_equal(value, cases[i].value);
    }
    /* A NUL is a character of its own when end allows it. */
    assert_int_equal(test_utf8_len("", 1, &value), 1);
    assert_int_equal(value, 0);
}

/* What RFC 3629 refuses: 0, value untouched. */
static void test_refuses(void **state)
{
    static const char *const bad[] = {
        "\x80", /* a continuation byte alone */
        "\xbf", /* another */
        "\xc0\x80", /* C0: always overlong */
        "\xc1\xbf", /* C1 */
        "\xe0\x9f\xbf", /* overlong 3-byte form of U+07FF */
        "\xf0\x8f\xbf\xbf", /* overlong 4-byte form of U+FFFF */
        "\xed\xa0\x80", /* U+D800, a surrogate */
        "\xed\xbf\xbf", /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* F5: past the range */
        "\xff", /* never in UTF-8 */
        "\xc3", /* cut short by the NUL */
        "\xe2\x82", /* the same, 3 bytes */
        "\xc3\x41", /* not continued */
        "\xe2\x28\xa1", /* the second byte not a continuation */
    };
    unsigned int value;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(test_utf8(bad[i], &value), 0);
        assert_int_equal(value, 0xffffffff);
    }
    /* Whole bytes, but cut by end. */
    assert_int_equal(test_utf8_len("\xc3\xa9", 1, &value), 0);
    assert_int_equal(test_utf8_len("\xf0\x9f\x98\x80", 3, &value), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes),
        cmocka_unit_test(test_refuses),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
