/*
 * verp_test - unit tests for VERP return paths: the round trip of (queue
 * ID, offset), the local part's length, forged and foreign tokens, and
 * which addresses are the feedback service's
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verp.h"
#include "vstr.h"

/* test_key - a fixed 32-byte key */
static VSTR *test_key(const char *text)
{
    return vstr_ncpy(vstr_alloc(32), text, 32);
}

/* test_roundtrip - what verp_make puts in comes back; the local part is
   within 64 characters */
static void test_roundtrip(void **state)
{
    VSTR *key = test_key("0123456789abcdef0123456789abcdef");
    VSTR *addr = vstr_alloc(100);
    VSTR *why = vstr_alloc(10);
    static const long long offsets[] = {0, 97, 1LL << 40,
                                        9223372036854775807LL};
    char qid[QID_SIZE];
    long long offset;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(offsets); i++) {
        vstr_reset(addr);
        verp_make(addr, key, "verp.test", "1MH8C6HFN1R00P7H", offsets[i]);
        assert_true(strchr(vstr_str(addr), '@') - vstr_str(addr) <= 64);
        assert_int_equal(strncmp(vstr_str(addr), "bounce+", 7), 0);
        assert_true(verp_addr_is_ours(vstr_str(addr), "VERP.test"));
        assert_int_equal(verp_check(key, vstr_str(addr), qid, &offset, why), 0);
        assert_string_equal(qid, "1MH8C6HFN1R00P7H");
        assert_true(offset == offsets[i]);
    }
    vstr_free(key);
    vstr_free(addr);
    vstr_free(why);
}

/* test_forged - a changed character, another key, no token */
static void test_forged(void **state)
{
    VSTR *key = test_key("0123456789abcdef0123456789abcdef");
    VSTR *other = test_key("fedcba9876543210fedcba9876543210");
    VSTR *addr = vstr_alloc(100);
    VSTR *why = vstr_alloc(10);
    char qid[QID_SIZE];
    long long offset;
    char *p;

    verp_make(addr, key, "verp.test", "1MH8C6HFN1R00P7H", 4242);
    p = vstr_str(addr) + 30;
    *p = *p == 'a' ? 'b' : 'a';
    assert_int_equal(verp_check(key, vstr_str(addr), qid, &offset, why), -1);
    assert_non_null(strstr(vstr_str(why), "forged"));
    vstr_reset(addr);
    verp_make(addr, other, "verp.test", "1MH8C6HFN1R00P7H", 4242);
    assert_int_equal(verp_check(key, vstr_str(addr), qid, &offset, why), -1);
    assert_int_equal(verp_check(key, "someone@verp.test", qid, &offset, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "not a VERP address"));
    vstr_free(key);
    vstr_free(other);
    vstr_free(addr);
    vstr_free(why);
}

/* test_kind - which recipients go to the feedback service */
static void test_kind(void **state)
{
    const char *fbl = "fbl@fbl.test, Abuse-Reports@isp.test\tx@y.test";

    assert_int_equal(
        verp_addr_kind("bounce+abc@verp.test", "verp.test", NULL, fbl),
        VERP_ADDR_DSN);
    assert_int_equal(
        verp_addr_kind("BOUNCE+abc@Verp.Test", "verp.test", NULL, NULL),
        VERP_ADDR_DSN);
    assert_int_equal(
        verp_addr_kind("bounce+@verp.test", "verp.test", NULL, fbl),
        VERP_ADDR_NONE);
    assert_int_equal(
        verp_addr_kind("bounce+abc@other.test", "verp.test", NULL, fbl),
        VERP_ADDR_NONE);
    assert_int_equal(verp_addr_kind("bounce+abc@verp.test", "", NULL, fbl),
                     VERP_ADDR_NONE);
    assert_int_equal(verp_addr_kind("abuse-reports@ISP.test", "", NULL, fbl),
                     VERP_ADDR_ARF);
    assert_int_equal(verp_addr_kind("x@y.test", NULL, NULL, fbl),
                     VERP_ADDR_ARF);
    assert_int_equal(verp_addr_kind("fbl@fbl.tes", "", NULL, fbl),
                     VERP_ADDR_NONE);
    assert_int_equal(verp_addr_kind("bl@fbl.test", "", NULL, fbl),
                     VERP_ADDR_NONE);
    assert_int_equal(verp_addr_kind("fbl@fbl.test", NULL, NULL, NULL),
                     VERP_ADDR_NONE);
}

/* test_kind_unsub - unsubscribe+TOKEN@unsubscribe_mailto_domain, also
   when it is the VERP domain too (its default) */
static void test_kind_unsub(void **state)
{
    const char *fbl = "fbl@fbl.test, unsubscribe+x@fbl.test";

    assert_int_equal(
        verp_addr_kind("unsubscribe+abc@u.test", "verp.test", "u.test", fbl),
        VERP_ADDR_UNSUB);
    assert_int_equal(
        verp_addr_kind("UnSubscribe+ABC@U.Test", NULL, "u.test", NULL),
        VERP_ADDR_UNSUB);
    /* the same domain for both: the prefix tells them apart */
    assert_int_equal(
        verp_addr_kind("unsubscribe+abc@v.test", "v.test", "v.test", fbl),
        VERP_ADDR_UNSUB);
    assert_int_equal(
        verp_addr_kind("bounce+abc@v.test", "v.test", "v.test", fbl),
        VERP_ADDR_DSN);
    /* no token, another domain, no domain set: not ours */
    assert_int_equal(
        verp_addr_kind("unsubscribe+@u.test", "verp.test", "u.test", fbl),
        VERP_ADDR_NONE);
    assert_int_equal(
        verp_addr_kind("unsubscribe@u.test", "verp.test", "u.test", fbl),
        VERP_ADDR_NONE);
    assert_int_equal(
        verp_addr_kind("unsubscribe+abc@verp.test", "verp.test", "u.test", fbl),
        VERP_ADDR_NONE);
    assert_int_equal(
        verp_addr_kind("unsubscribe+abc@u.test", "verp.test", "", fbl),
        VERP_ADDR_NONE);
    assert_int_equal(
        verp_addr_kind("unsubscribe+abc@u.test", "verp.test", NULL, NULL),
        VERP_ADDR_NONE);
    assert_int_equal(verp_addr_kind("unsubscribe+abc", NULL, "u.test", NULL),
                     VERP_ADDR_NONE);
    /* a complaint address that looks like one stays a complaint address
       while unsubscribe_mailto_domain is another */
    assert_int_equal(
        verp_addr_kind("unsubscribe+x@fbl.test", "verp.test", "u.test", fbl),
        VERP_ADDR_ARF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_forged),
        cmocka_unit_test(test_kind),
        cmocka_unit_test(test_kind_unsub),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
