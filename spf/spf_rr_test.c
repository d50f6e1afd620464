/*
 * spf_rr_test - DNS answers into libspf2's records: TXT character-strings
 * are joined without a separator (RFC 7208 3.3) and a NUL byte cannot cut
 * a record short; a string length past the rdata, an address of the wrong
 * size or a bad name is refused; an SPF record over SPF_RECORD_MAX is kept
 * from libspf2 and named; and libspf2 then evaluates what was filled in
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "spf.h"
#include "vstr.h"

static void test_txt_join(void **state)
{
    static const unsigned char two[] = "\x06v=spf1\x05 -all";
    static const unsigned char nul[] = "\x03"
                                       "a\0b";
    static const unsigned char over[] = "\x09short";
    VSTR *out = vstr_alloc(10);

    assert_true(spf_rr_txt(two, sizeof(two) - 1, out));
    assert_string_equal(vstr_str(out), "v=spf1 -all");
    assert_true(spf_rr_txt(nul, 4, out));
    assert_string_equal(vstr_str(out), "a?b");
    assert_false(spf_rr_txt(over, sizeof(over) - 1, out));
    assert_true(spf_rr_txt(two, 0, out));
    assert_string_equal(vstr_str(out), "");
    vstr_free(out);
}

static void test_fill(void **state)
{
    SPF_dns_rr_t *rr = SPF_dns_rr_new_init(NULL, "x.test", ns_t_a, 0, 0);
    VSTR *text = vstr_alloc(10);
    VSTR *oversize = vstr_alloc(10);
    static const unsigned char mx[] = "\x00\x0a\x04mail\x03x-y\x04test";
    static const unsigned char ptr[] = "\x02h1\x04test";

    assert_true(spf_rr_fill(rr, 0, ns_t_a, (const unsigned char *) "\x7f\0\0\1",
                            4, text, oversize));
    assert_int_equal(rr->rr[0]->a.s_addr, htonl(0x7f000001));
    assert_false(spf_rr_fill(rr, 1, ns_t_a, (const unsigned char *) "\1\2\3", 3,
                             text, oversize));
    assert_false(spf_rr_fill(rr, 1, ns_t_aaaa,
                             (const unsigned char *) "\1\2\3\4", 4, text,
                             oversize));
    assert_true(spf_rr_fill(rr, 1, ns_t_mx, mx, sizeof(mx), text, oversize));
    assert_string_equal(rr->rr[1]->mx, "mail.x-y.test");
    assert_false(spf_rr_fill(rr, 2, ns_t_mx, mx, 3, text, oversize));
    assert_true(spf_rr_fill(rr, 2, ns_t_ptr, ptr, sizeof(ptr), text, oversize));
    assert_string_equal(rr->rr[2]->ptr, "h1.test");
    assert_string_equal(vstr_str(oversize), "");
    SPF_dns_rr_free(rr);
    vstr_free(text);
    vstr_free(oversize);
}

static void test_oversize(void **state)
{
    SPF_dns_rr_t *rr = SPF_dns_rr_new_init(NULL, "big.test", ns_t_txt, 0, 0);
    VSTR *wire = vstr_alloc(5000);
    VSTR *text = vstr_alloc(10);
    VSTR *oversize = vstr_alloc(10);
    const char *record = "v=spf1 ";

    /* A record of SPF_RECORD_MAX bytes passes; one byte more does not. */
    for (size_t len = SPF_RECORD_MAX; len <= SPF_RECORD_MAX + 1; len++) {
        vstr_reset(wire);
        for (size_t at = 0; at < len; at += 255) {
            size_t piece = len - at > 255 ? 255 : len - at;

            vstr_addch(wire, (char) piece);
            for (size_t i = 0; i < piece; i++)
                vstr_addch(wire, at + i < 7 ? record[at + i] : 'a');
        }
        assert_true(spf_rr_fill(rr, 0, ns_t_txt,
                                (const unsigned char *) vstr_str(wire),
                                vstr_len(wire), text, oversize));
        if (len == SPF_RECORD_MAX) {
            assert_int_equal(strlen(rr->rr[0]->txt), SPF_RECORD_MAX);
            assert_string_equal(vstr_str(oversize), "");
        } else {
            assert_null(strstr(rr->rr[0]->txt, "v=spf1"));
            assert_string_equal(vstr_str(oversize), "big.test");
        }
    }
    SPF_dns_rr_free(rr);
    vstr_free(wire);
    vstr_free(text);
    vstr_free(oversize);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_join),
        cmocka_unit_test(test_fill),
        cmocka_unit_test(test_oversize),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
