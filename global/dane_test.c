/*
 * dane_test - unit tests for TLSA parsing, usability and the RFC 7672
 * decision (dane and dane-only)
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "dane.h"
#include "mymalloc.h"
#include "vstr.h"

/* test_parse - a 3 1 1 record, and one too short to be a record */
static void test_parse(void **state)
{
    unsigned char rdata[3 + 32];
    DANE_TLSA tlsa;

    rdata[0] = 3;
    rdata[1] = 1;
    rdata[2] = 1;
    for (int i = 0; i < 32; i++)
        rdata[3 + i] = (unsigned char) i;
    assert_int_equal(dane_tlsa_parse(rdata, sizeof(rdata), &tlsa), 0);
    assert_int_equal(tlsa.usage, 3);
    assert_int_equal(tlsa.selector, 1);
    assert_int_equal(tlsa.mtype, 1);
    assert_int_equal(tlsa.len, 32);
    assert_memory_equal(tlsa.data, rdata + 3, 32);
    assert_true(dane_tlsa_usable(&tlsa));
    myfree(tlsa.data);
    assert_int_equal(dane_tlsa_parse(rdata, 3, &tlsa), -1);
}

/* test_usable - PKIX-TA/EE ignored, bad selectors, types and lengths */
static void test_usable(void **state)
{
    unsigned char data[64] = {0};
    DANE_TLSA t = {3, 1, 1, data, 32};

    assert_true(dane_tlsa_usable(&t));
    t.usage = 2;
    assert_true(dane_tlsa_usable(&t));
    t.usage = 1;
    assert_false(dane_tlsa_usable(&t));
    t.usage = 0;
    assert_false(dane_tlsa_usable(&t));
    t.usage = 3;
    t.selector = 2;
    assert_false(dane_tlsa_usable(&t));
    t.selector = 0;
    t.len = 31;
    assert_false(dane_tlsa_usable(&t));
    t.mtype = 2;
    t.len = 64;
    assert_true(dane_tlsa_usable(&t));
    t.mtype = 3;
    assert_false(dane_tlsa_usable(&t));
    t.mtype = 0;
    t.len = 10;
    assert_true(dane_tlsa_usable(&t));
}

/* test_name - the owner name, a final dot dropped */
static void test_name(void **state)
{
    VSTR *out = vstr_alloc(10);

    dane_tlsa_name(out, "mx.example.test.", 25);
    assert_string_equal(vstr_str(out), "_25._tcp.mx.example.test");
    dane_tlsa_name(out, "mx.test", 587);
    assert_string_equal(vstr_str(out), "_587._tcp.mx.test");
    vstr_free(out);
}

/* test_decide - every row of RFC 7672 2.2 at dane and dane-only */
static void test_decide(void **state)
{
    VSTR *why = vstr_alloc(10);

    /* Insecure MX or address records: no TLSA lookup. */
    assert_int_equal(
        dane_decide(false, false, DANE_TLSA_SECURE, 1, 1, "h", why), DANE_MAY);
    assert_non_null(strstr(vstr_str(why), "not DNSSEC-validated"));
    assert_int_equal(dane_decide(true, false, DANE_TLSA_SECURE, 1, 1, "h", why),
                     DANE_DEFER);
    /* A bogus or failed TLSA lookup: never tried, at either level. */
    assert_int_equal(dane_decide(false, true, DANE_TLSA_FAILED, 0, 0, "h", why),
                     DANE_DEFER);
    assert_int_equal(dane_decide(true, true, DANE_TLSA_FAILED, 0, 0, "h", why),
                     DANE_DEFER);
    /* Insecure TLSA. */
    assert_int_equal(
        dane_decide(false, true, DANE_TLSA_INSECURE, 1, 1, "h", why), DANE_MAY);
    assert_int_equal(
        dane_decide(true, true, DANE_TLSA_INSECURE, 1, 1, "h", why),
        DANE_DEFER);
    /* Securely none. */
    assert_int_equal(dane_decide(false, true, DANE_TLSA_SECURE, 0, 0, "h", why),
                     DANE_MAY);
    assert_int_equal(dane_decide(true, true, DANE_TLSA_SECURE, 0, 0, "h", why),
                     DANE_DEFER);
    /* Records, none usable: mandatory unauthenticated TLS. */
    assert_int_equal(dane_decide(false, true, DANE_TLSA_SECURE, 2, 0, "h", why),
                     DANE_ENCRYPT);
    assert_non_null(strstr(vstr_str(why), "usable"));
    /* Usable records. */
    assert_int_equal(dane_decide(false, true, DANE_TLSA_SECURE, 2, 1, "h", why),
                     DANE_USE_TLSA);
    assert_int_equal(dane_decide(true, true, DANE_TLSA_SECURE, 2, 1, "h", why),
                     DANE_USE_TLSA);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_usable),
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_decide),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
