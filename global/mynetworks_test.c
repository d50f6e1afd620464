/*
 * mynetworks_test - unit tests for client network lists: IPv4 and IPv6
 * CIDR edges, brackets, negation, mapped addresses, bad entries
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "mynetworks.h"
#include "vstr.h"

/* match - compile list and match addr; the list must be valid */
static bool match(const char *list, const char *addr)
{
    VSTR *why = vstr_alloc(10);
    MYNETWORKS *nets = mynetworks_parse(list, why);
    bool ret;

    if (nets == NULL)
        fail_msg("\"%s\": %s", list, vstr_str(why));
    ret = mynetworks_match(nets, addr);
    mynetworks_free(nets);
    vstr_free(why);
    return ret;
}

/* test_ipv4 - prefixes and their edges */
static void test_ipv4(void **state)
{
    assert_true(match("127.0.0.0/8", "127.0.0.1"));
    assert_true(match("127.0.0.0/8", "127.255.255.255"));
    assert_false(match("127.0.0.0/8", "128.0.0.0"));
    assert_false(match("127.0.0.0/8", "126.255.255.255"));
    assert_true(match("127.0.0.1/32", "127.0.0.1"));
    assert_false(match("127.0.0.1/32", "127.0.0.2"));
    assert_true(match("127.0.0.1", "127.0.0.1"));
    assert_false(match("127.0.0.1", "127.0.0.2"));
    assert_true(match("0.0.0.0/0", "203.0.113.9"));
    assert_false(match("0.0.0.0/0", "2001:db8::1"));
    /* a /25 and a /23: the bits inside one byte */
    assert_true(match("192.0.2.128/25", "192.0.2.255"));
    assert_true(match("192.0.2.128/25", "192.0.2.128"));
    assert_false(match("192.0.2.128/25", "192.0.2.127"));
    assert_true(match("192.0.2.0/23", "192.0.3.1"));
    assert_false(match("192.0.2.0/23", "192.0.4.1"));
    assert_false(match("192.0.2.0/23", "192.0.1.255"));
    /* host bits set are masked away */
    assert_true(match("10.1.2.3/8", "10.200.0.1"));
    assert_true(match("[127.0.0.1]", "127.0.0.1"));
    assert_true(match("127.0.0.1", "[127.0.0.1]"));
}

/* test_ipv6 - prefixes, brackets, mapped IPv4 */
static void test_ipv6(void **state)
{
    assert_true(match("::1", "::1"));
    assert_true(match("[::1]/128", "::1"));
    assert_false(match("[::1]/128", "::2"));
    assert_true(match("[2001:db8::]/32", "2001:db8:ffff::1"));
    assert_false(match("[2001:db8::]/32", "2001:db9::1"));
    assert_true(match("2001:db8::/33", "2001:db8:7fff::1"));
    assert_false(match("2001:db8::/33", "2001:db8:8000::1"));
    assert_true(match("2001:db8::1/127", "2001:db8::0"));
    assert_false(match("2001:db8::1/127", "2001:db8::2"));
    assert_true(match("::/0", "2001:db8::1"));
    assert_false(match("::/0", "127.0.0.1"));
    assert_false(match("::1", "127.0.0.1"));
    assert_true(match("fe80::/10", "febf::1"));
    assert_false(match("fe80::/10", "fec0::1"));
    /* an IPv4-mapped client matches IPv4 networks */
    assert_true(match("127.0.0.0/8", "::ffff:127.0.0.1"));
    assert_true(match("127.0.0.0/8", "[::ffff:127.0.0.1]"));
    /* a mapped network written as IPv6 keeps its IPv4 bits */
    assert_true(match("::ffff:10.0.0.0/104", "10.1.2.3"));
    assert_false(match("::ffff:10.0.0.0/104", "11.1.2.3"));
    assert_true(match("[::ffff:192.0.2.1]", "192.0.2.1"));
    assert_true(match("[::ffff:192.0.2.0]/120", "::ffff:192.0.2.77"));
}

/* test_lists - separators, first match decides, negation */
static void test_lists(void **state)
{
    VSTR *why = vstr_alloc(10);
    MYNETWORKS *nets;

    nets = mynetworks_parse(" 127.0.0.0/8,[::1]/128\t10.0.0.0/8 ,\n", why);
    assert_non_null(nets);
    assert_int_equal(mynetworks_count(nets), 3);
    assert_true(mynetworks_match(nets, "10.9.9.9"));
    assert_true(mynetworks_match(nets, "::1"));
    assert_false(mynetworks_match(nets, "192.0.2.1"));
    assert_false(mynetworks_match(nets, "not an address"));
    assert_false(mynetworks_match(nets, ""));
    assert_false(mynetworks_match(nets, "fe80::1%eth0"));
    mynetworks_free(nets);

    assert_false(match("!127.0.0.2, 127.0.0.0/8", "127.0.0.2"));
    assert_true(match("!127.0.0.2, 127.0.0.0/8", "127.0.0.3"));
    assert_true(match("127.0.0.0/8, !127.0.0.2", "127.0.0.2"));

    nets = mynetworks_parse("", why);
    assert_non_null(nets);
    assert_int_equal(mynetworks_count(nets), 0);
    assert_false(mynetworks_match(nets, "127.0.0.1"));
    mynetworks_free(nets);
    nets = mynetworks_parse(NULL, why);
    assert_non_null(nets);
    mynetworks_free(nets);
    vstr_free(why);
}

/* test_bad - malformed entries refuse the whole list */
static void test_bad(void **state)
{
    static const char *bad[] = {
        "127.0.0.0/33",
        "::1/129",
        "127.0.0.0/",
        "127.0.0.0/-1",
        "127.0.0.0/+8",
        "127.0.0.0/ 8",
        "127.0.0.0/8x",
        "10/8",
        "127.1",
        "256.0.0.1",
        "!",
        "/8",
        "[]",
        "[127.0.0.1",
        "hash:/etc/nets",
        "localhost",
        "::ffff:10.0.0.0/95",
        "::ffff:10.0.0.0/129",
        "127.0.0.1, bogus",
        "1.2.3.4/99999999999999999999",
    };
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        MYNETWORKS *nets = mynetworks_parse(bad[i], why);

        if (nets != NULL)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_non_null(strstr(vstr_str(why), "bad network"));
    }
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_bad),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
