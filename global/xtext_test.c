/*
 * xtext_test - unit tests for RFC 3461 xtext: round trips of every byte,
 * strict decoding of bad hex and forbidden characters
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "vstr.h"
#include "xtext.h"

/* test_roundtrip_all_bytes - every byte value survives encode + decode */
static void test_roundtrip_all_bytes(void **state)
{
    char data[256];
    VSTR *enc = vstr_alloc(10);
    VSTR *dec = vstr_alloc(10);

    for (int i = 0; i < 256; i++)
        data[i] = (char) i;
    xtext_encode(enc, data, sizeof(data));
    for (size_t i = 0; i < vstr_len(enc); i++) {
        int ch = (unsigned char) vstr_str(enc)[i];

        assert_true(ch >= 33 && ch <= 126 && ch != '=');
    }
    assert_true(xtext_valid(vstr_str(enc)));
    assert_int_equal(xtext_decode(dec, vstr_str(enc)), 0);
    assert_int_equal(vstr_len(dec), sizeof(data));
    assert_memory_equal(vstr_str(dec), data, sizeof(data));
    vstr_free(enc);
    vstr_free(dec);
}

/* test_known - examples from RFC 3461 and plain text */
static void test_known(void **state)
{
    VSTR *out = vstr_alloc(10);

    xtext_encode(out, "a+b=c d", 7);
    assert_string_equal(vstr_str(out), "a+2Bb+3Dc+20d");
    assert_int_equal(xtext_decode(out, "rfc822;user+40example.test"), 0);
    assert_string_equal(vstr_str(out), "rfc822;user@example.test");
    assert_int_equal(xtext_decode(out, "plain"), 0);
    assert_string_equal(vstr_str(out), "plain");
    assert_int_equal(xtext_decode(out, ""), 0);
    assert_int_equal(vstr_len(out), 0);
    /* appending: encode does not reset */
    vstr_cpy(out, "x");
    xtext_encode(out, "+", 1);
    assert_string_equal(vstr_str(out), "x+2B");
    vstr_free(out);
}

/* test_bad - malformed xtext is refused */
static void test_bad(void **state)
{
    static const char *bad[] = {
        "+",   "a+",  "+4",   "a+4",   "+G0",      "+0G", "+2b",  "+zz",
        "a=b", "a b", "a\tb", "a\x7f", "\xc3\xa9", "+ 4", "++20",
    };
    VSTR *out = vstr_alloc(10);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (xtext_decode(out, bad[i]) != -1)
            fail_msg("\"%s\" decoded", bad[i]);
        assert_false(xtext_valid(bad[i]));
    }
    assert_true(xtext_valid("+2B+3D"));
    vstr_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all_bytes),
        cmocka_unit_test(test_known),
        cmocka_unit_test(test_bad),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
