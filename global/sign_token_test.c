/*
 * sign_token_test - unit tests for signed tokens: round trips, tampering,
 * purpose separation, letter case, and the key file's making
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sign_token.h"
#include "vstr.h"

/* test_key - a fixed 32-byte key */
static VSTR *test_key(void)
{
    return vstr_ncpy(vstr_alloc(32), "0123456789abcdef0123456789abcdef", 32);
}

/* test_roundtrip - payloads of every length up to 40 come back whole,
   and the token holds only lower-case letters and digits 2-7 */
static void test_roundtrip(void **state)
{
    VSTR *key = test_key();
    VSTR *tok = vstr_alloc(10);
    VSTR *back = vstr_alloc(10);
    char data[40];

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char) (i * 37 + 5);
    for (size_t len = 0; len <= sizeof(data); len++) {
        vstr_reset(tok);
        sign_token_make(tok, key, "verp", data, len);
        for (const char *p = vstr_str(tok); *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || (*p >= '2' && *p <= '7'));
        assert_int_equal(sign_token_check(key, "verp", vstr_str(tok), back), 0);
        assert_int_equal(vstr_len(back), len);
        assert_memory_equal(vstr_str(back), data, len);
    }
    vstr_free(key);
    vstr_free(tok);
    vstr_free(back);
}

/* test_tamper - every one-character change, a cut, an extension, another
   purpose, another key and junk are all refused; upper case is accepted */
static void test_tamper(void **state)
{
    VSTR *key = test_key();
    VSTR *other =
        vstr_ncpy(vstr_alloc(32), "x123456789abcdef0123456789abcdef", 32);
    VSTR *tok = vstr_alloc(10);
    VSTR *bad = vstr_alloc(10);
    VSTR *back = vstr_alloc(10);

    sign_token_make(tok, key, "click", "QID123.4", 8);
    for (size_t i = 0; i < vstr_len(tok); i++) {
        vstr_cpy(bad, vstr_str(tok));
        vstr_str(bad)[i] = vstr_str(bad)[i] == 'a' ? 'b' : 'a';
        assert_int_equal(sign_token_check(key, "click", vstr_str(bad), back),
                         -1);
    }
    vstr_ncpy(bad, vstr_str(tok), vstr_len(tok) - 1);
    assert_int_equal(sign_token_check(key, "click", vstr_str(bad), back), -1);
    vstr_cpy(bad, vstr_str(tok));
    vstr_cat(bad, "aa");
    assert_int_equal(sign_token_check(key, "click", vstr_str(bad), back), -1);
    assert_int_equal(sign_token_check(key, "open", vstr_str(tok), back), -1);
    assert_int_equal(sign_token_check(other, "click", vstr_str(tok), back), -1);
    assert_int_equal(sign_token_check(key, "click", "", back), -1);
    assert_int_equal(sign_token_check(key, "click", "not/base32!", back), -1);
    vstr_cpy(bad, vstr_str(tok));
    for (char *p = vstr_str(bad); *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char) (*p - 'a' + 'A');
    assert_int_equal(sign_token_check(key, "click", vstr_str(bad), back), 0);
    assert_string_equal(vstr_str(back), "QID123.4");
    vstr_free(key);
    vstr_free(other);
    vstr_free(tok);
    vstr_free(bad);
    vstr_free(back);
}

/* test_key_file - the first load makes a 0600 file of 32 bytes, the next
   load reads the same key; a short file is refused with a reason */
static void test_key_file(void **state)
{
    char dir[] = "/tmp/sign_token_test.XXXXXX";
    VSTR *path = vstr_alloc(100);
    VSTR *k1 = vstr_alloc(10);
    VSTR *k2 = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct stat st;
    FILE *fp;

    assert_non_null(mkdtemp(dir));
    vstr_sprintf(path, "%s/feedback.key", dir);
    assert_int_equal(sign_token_key_load(vstr_str(path), k1, why), 0);
    assert_int_equal(vstr_len(k1), SIGN_TOKEN_KEY_LEN);
    assert_int_equal(stat(vstr_str(path), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(sign_token_key_load(vstr_str(path), k2, why), 0);
    assert_int_equal(vstr_len(k2), vstr_len(k1));
    assert_memory_equal(vstr_str(k1), vstr_str(k2), vstr_len(k1));
    assert_int_equal(unlink(vstr_str(path)), 0);
    fp = fopen(vstr_str(path), "w");
    assert_non_null(fp);
    fputs("short", fp);
    fclose(fp);
    assert_int_equal(sign_token_key_load(vstr_str(path), k2, why), -1);
    assert_non_null(strstr(vstr_str(why), "at least"));
    assert_int_equal(unlink(vstr_str(path)), 0);
    assert_int_equal(rmdir(dir), 0);
    vstr_free(path);
    vstr_free(k1);
    vstr_free(k2);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_key_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
