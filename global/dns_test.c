/*
 * dns_test - unit tests for the pure parts of dns: server list entries, MX
 * record parsing, null MX detection, ordering by preference, reverse-lookup
 * names
 *
 * No DNS query is made here.
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "dns.h"
#include "mymalloc.h"
#include "vstr.h"

/* check_server - parse text and compare with want (NULL: must fail) */
static void check_server(const char *text, const char *want)
{
    VSTR *out = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    int ret = dns_server_parse(text, out, why);

    if (want == NULL) {
        assert_int_equal(ret, -1);
        assert_non_null(strstr(vstr_str(why), text));
    } else {
        assert_int_equal(ret, 0);
        assert_string_equal(vstr_str(out), want);
    }
    vstr_free(out);
    vstr_free(why);
}

static void test_server_parse(void **state)
{
    check_server("127.0.0.1", "127.0.0.1");
    check_server("127.0.0.1:5353", "127.0.0.1@5353");
    check_server("[127.0.0.1]:53", "127.0.0.1@53");
    check_server("::1", "::1");
    check_server("[::1]", "::1");
    check_server("[::1]:5353", "::1@5353");
    check_server("2001:db8::1", "2001:db8::1");
    check_server("127.0.0.1:0", NULL);
    check_server("127.0.0.1:65536", NULL);
    check_server("127.0.0.1:x", NULL);
    check_server("127.0.0.1:", NULL);
    check_server("dns.test", NULL);
    check_server("dns.test:53", NULL);
    check_server("[::1", NULL);
    check_server("[::1]x", NULL);
    check_server("", NULL);
    check_server("1.2.3.4.5", NULL);
}

static void test_name_parse(void **state)
{
    VSTR *out = vstr_alloc(10);

    assert_int_equal(
        dns_name_parse((const unsigned char *) "\3mx1\1a\4test\0", 12, out),
        12);
    assert_string_equal(vstr_str(out), "mx1.a.test");
    assert_int_equal(dns_name_parse((const unsigned char *) "\0", 1, out), 1);
    assert_string_equal(vstr_str(out), ".");
    /* cut short, a compression pointer, a dot inside a label */
    assert_int_equal(dns_name_parse((const unsigned char *) "\3mx", 3, out),
                     -1);
    assert_int_equal(dns_name_parse((const unsigned char *) "\300\14", 2, out),
                     -1);
    assert_int_equal(dns_name_parse((const unsigned char *) "\3a.b\0", 5, out),
                     -1);
    assert_int_equal(dns_name_parse((const unsigned char *) "", 0, out), -1);
    vstr_free(out);
}

static void test_mx_parse_and_null(void **state)
{
    DNS_MX mx[2];

    assert_int_equal(
        dns_mx_parse((const unsigned char *) "\0\12\2mx\4test\0", 11, mx), 0);
    assert_int_equal(mx[0].pref, 10);
    assert_string_equal(mx[0].host, "mx.test");
    assert_false(dns_mx_null(mx, 1));
    /* the null MX as dnsmasq serves it: --dns-rr=nullmx.test,15,000000 */
    assert_int_equal(dns_mx_parse((const unsigned char *) "\0\0\0", 3, mx + 1),
                     0);
    assert_int_equal(mx[1].pref, 0);
    assert_string_equal(mx[1].host, ".");
    assert_true(dns_mx_null(mx + 1, 1));
    /* "." among real hosts is not a null MX */
    assert_false(dns_mx_null(mx, 2));
    assert_false(dns_mx_null(mx, 0));
    assert_int_equal(dns_mx_parse((const unsigned char *) "\0\1", 2, mx), -1);
    myfree(mx[0].host);
    myfree(mx[1].host);
    assert_int_equal(dns_mx_parse((const unsigned char *) "\0\1\3ab", 5, mx),
                     -1);
}

/* seq_rnd - deterministic "random" numbers for the tests */
static unsigned seq_rnd(void *arg)
{
    unsigned *state = arg;

    *state = *state * 1103515245u + 12345u;
    return *state >> 8;
}

static void test_ptr_query(void **state)
{
    VSTR *out = vstr_alloc(10);

    assert_int_equal(dns_ptr_query("127.0.0.5", out), 0);
    assert_string_equal(vstr_str(out), "5.0.0.127.in-addr.arpa");
    assert_int_equal(dns_ptr_query("192.0.2.10", out), 0);
    assert_string_equal(vstr_str(out), "10.2.0.192.in-addr.arpa");
    assert_int_equal(dns_ptr_query("2001:db8::567:89ab", out), 0);
    assert_string_equal(vstr_str(out),
                        "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
                        "8.b.d.0.1.0.0.2.ip6.arpa");
    assert_int_equal(dns_ptr_query("host.test", out), -1);
    assert_int_equal(dns_ptr_query("127.0.0", out), -1);
    assert_int_equal(dns_ptr_query("", out), -1);
    vstr_free(out);
}

static void test_mx_sort(void **state)
{
    static const int prefs[] = {30, 10, 20, 10, 5, 20, 10};
    DNS_MX mx[SLUICE_ARRAY_LEN(prefs)];
    size_t n = SLUICE_ARRAY_LEN(prefs);
    bool first_seen[3] = {false, false, false};
    unsigned seed = 7;

    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < n; i++) {
            char name[16];

            snprintf(name, sizeof(name), "h%zu", i);
            mx[i].pref = prefs[i];
            mx[i].host = mystrdup(name);
        }
        dns_mx_sort(mx, n, seq_rnd, &seed);
        for (size_t i = 1; i < n; i++)
            assert_true(mx[i - 1].pref <= mx[i].pref);
        assert_int_equal(mx[0].pref, 5);
        assert_string_equal(mx[0].host, "h4");
        assert_int_equal(mx[n - 1].pref, 30);
        /* which of the three preference-10 hosts came first */
        if (strcmp(mx[1].host, "h1") == 0)
            first_seen[0] = true;
        else if (strcmp(mx[1].host, "h3") == 0)
            first_seen[1] = true;
        else if (strcmp(mx[1].host, "h6") == 0)
            first_seen[2] = true;
        else
            fail_msg("unexpected host %s at preference 10", mx[1].host);
        for (size_t i = 0; i < n; i++)
            myfree(mx[i].host);
    }
    /* equal preferences are shuffled: each one led at least once */
    assert_true(first_seen[0] && first_seen[1] && first_seen[2]);
    dns_mx_sort(mx, 0, seq_rnd, &seed); /* nothing to do, no crash */
}

static void test_txt_parse(void **state)
{
    VSTR *out = vstr_alloc(10);

    /* two character-strings are joined; an empty one adds nothing */
    assert_int_equal(
        dns_txt_parse((const unsigned char *) "\3abc\0\2de", 8, out), 0);
    assert_string_equal(vstr_str(out), "abcde");
    assert_int_equal(dns_txt_parse((const unsigned char *) "", 0, out), 0);
    assert_string_equal(vstr_str(out), "");
    /* a length past the end */
    assert_int_equal(dns_txt_parse((const unsigned char *) "\4abc", 4, out),
                     -1);
    vstr_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_parse),
        cmocka_unit_test(test_name_parse),
        cmocka_unit_test(test_mx_parse_and_null),
        cmocka_unit_test(test_mx_sort),
        cmocka_unit_test(test_ptr_query),
        cmocka_unit_test(test_txt_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
