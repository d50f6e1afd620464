/*
 * mta_sts_test - unit tests for the pure parts of mta_sts: the policy
 * parser (RFC 8461 3.2), the TXT record choice (3.1), mx patterns (4.1),
 * domain names, the cache file format
 *
 * No DNS query and no HTTPS fetch is made here (tests/test_mta_sts.py
 * drives those end to end).
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"
#include "mta_sts.h"
#include "vstr.h"

/* parse_ok - text must parse; the policy's canonical text must be want */
static void parse_ok(const char *text, const char *want)
{
    MTA_STS_POLICY policy;
    VSTR *why = vstr_alloc(10);
    VSTR *out = vstr_alloc(10);

    if (mta_sts_policy_parse(text, strlen(text), &policy, why) != 0)
        fail_msg("\"%s\": %s", text, vstr_str(why));
    mta_sts_policy_text(&policy, out);
    assert_string_equal(vstr_str(out), want);
    mta_sts_policy_free(&policy);
    vstr_free(why);
    vstr_free(out);
}

/* parse_bad - text must be refused with a reason containing want */
static void parse_bad(const char *text, size_t len, const char *want)
{
    MTA_STS_POLICY policy;
    VSTR *why = vstr_alloc(10);

    assert_int_equal(mta_sts_policy_parse(text, len, &policy, why), -1);
    if (strstr(vstr_str(why), want) == NULL)
        fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", text, vstr_str(why),
                 want);
    assert_null(policy.mx);
    vstr_free(why);
}

static void test_policy_parse(void **state)
{
    /* RFC 8461's example, CRLF */
    parse_ok("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
             "mx: *.example.net\r\nmx: backupmx.example.com\r\n"
             "max_age: 604800\r\n",
             "version: STSv1\nmode: enforce\nmx: mail.example.com\n"
             "mx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n");
    /* LF only (errata 7282), no final newline, any order, white space
       after the colon and at the end, unknown keys, upper case mx */
    parse_ok("mode:testing\nmax_age: 86400 \nfoo: bar\nmx:\tMX.Example.COM\n"
             "version: STSv1",
             "version: STSv1\nmode: testing\nmx: mx.example.com\n"
             "max_age: 86400\n");
    /* none needs no mx; max_age above one year is one year */
    parse_ok("version: STSv1\nmode: none\nmax_age: 9999999999\n",
             "version: STSv1\nmode: none\nmax_age: 31557600\n");
    /* blank lines are skipped */
    parse_ok("\nversion: STSv1\n\nmode: none\nmax_age: 0\n\n",
             "version: STSv1\nmode: none\nmax_age: 0\n");
}

static void test_policy_parse_bad(void **state)
{
#define BAD(text, want) parse_bad(text, sizeof(text) - 1, want)
    BAD("version: STSv1\nmode: enforce\nmax_age: 1\n",
        "mode enforce without any mx");
    BAD("version: STSv2\nmode: none\nmax_age: 1\n", "line 1: version is not");
    BAD("Version: STSv1\nmode: none\nmax_age: 1\n", "no version field");
    BAD("version: STSv1\nmax_age: 1\n", "no mode field");
    BAD("version: STSv1\nmode: none\n", "no max_age field");
    BAD("version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1\n",
        "line 2: unknown mode \"Enforce\"");
    BAD("version: STSv1\nmode: none\nmax_age: -1\n",
        "line 3: max_age is not a number");
    BAD("version: STSv1\nmode: none\nmax_age: 12345678901\n",
        "line 3: max_age is not 1 to 10 digits");
    BAD("version: STSv1\nmode: none\nmax_age:\n", "max_age is not 1 to 10");
    BAD("version: STSv1\nmode: enforce\nmx: *.\nmax_age: 1\n",
        "line 3: bad mx pattern \"*.\"");
    BAD("version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n",
        "bad mx pattern");
    BAD("version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n",
        "bad mx pattern");
    BAD("version: STSv1\nmode: enforce\nmx: ../etc\nmax_age: 1\n",
        "bad mx pattern");
    BAD("version: STSv1\nmode: none\nmode: enforce\nmax_age: 1\n",
        "line 3: mode given twice");
    BAD("version: STSv1\nversion: STSv1\nmode: none\nmax_age: 1\n",
        "version given twice");
    BAD("version: STSv1\nmode: none\nmax_age: 1\nmax_age: 2\n",
        "max_age given twice");
    BAD("version: STSv1\nmode none\nmax_age: 1\n",
        "line 2: no \"key: value\": \"mode none\"");
    BAD("version: STSv1\nmode: none\x01\nmax_age: 1\n", "unknown mode");
    BAD("version: STSv1\nmode: none\nmax_age: 1\n\0", "NUL byte");
    BAD("<html>\n", "no \"key: value\": \"<html>\"");
#undef BAD
    {
        /* larger than 64 KB */
        size_t len = MTA_STS_BODY_MAX + 1;
        char *big = malloc(len);

        assert_non_null(big);
        memset(big, '\n', len);
        parse_bad(big, len, "larger than");
        free(big);
    }
}

/* txt - mta_sts_txt_select over records (NULL-terminated) */
static int txt(const char *want_id, const char *want_why, ...)
{
    ARGV *texts = argv_alloc(4);
    VSTR *id = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    const char *text;
    va_list ap;
    int ret;

    va_start(ap, want_why);
    while ((text = va_arg(ap, const char *)) != NULL)
        argv_add(texts, text);
    va_end(ap);
    ret = mta_sts_txt_select(texts, id, why);
    if (want_id)
        assert_string_equal(vstr_str(id), want_id);
    if (want_why && strstr(vstr_str(why), want_why) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", vstr_str(why), want_why);
    argv_free(texts);
    vstr_free(id);
    vstr_free(why);
    return ret;
}

static void test_txt_select(void **state)
{
    assert_int_equal(
        txt("20160831085700Z", NULL, "v=STSv1; id=20160831085700Z;", NULL), 1);
    assert_int_equal(txt("abc", NULL, "v=STSv1;id=abc", NULL), 1);
    assert_int_equal(txt("abc", NULL, "v=STSv1 ; ext=1; id=abc ;", NULL), 1);
    /* others are not ours: SPF, a later version, leading space */
    assert_int_equal(txt("x1", NULL, "v=spf1 -all", "v=STSv1; id=x1",
                         "v=STSv10; id=2", " v=STSv1; id=3", NULL),
                     1);
    assert_int_equal(txt(NULL, NULL, "v=spf1 -all", NULL), 0);
    assert_int_equal(txt(NULL, NULL, NULL), 0);
    assert_int_equal(
        txt(NULL, "2 TXT records", "v=STSv1; id=a", "v=STSv1; id=b", NULL), -1);
    assert_int_equal(txt(NULL, "no id", "v=STSv1;", NULL), -1);
    assert_int_equal(txt(NULL, "no id", "v=STSv1", NULL), -1);
    assert_int_equal(txt(NULL, "letters and digits", "v=STSv1; id=a-b", NULL),
                     -1);
    assert_int_equal(txt(NULL, "longer than 32",
                         "v=STSv1; id=123456789012345678901234567890123", NULL),
                     -1);
    assert_int_equal(txt("12345678901234567890123456789012", NULL,
                         "v=STSv1; id=12345678901234567890123456789012", NULL),
                     1);
    assert_int_equal(txt(NULL, "two ids", "v=STSv1; id=a; id=b", NULL), -1);
    assert_int_equal(txt(NULL, "without '='", "v=STSv1; id=a; junk", NULL), -1);
}

static void test_mx_match(void **state)
{
    MTA_STS_POLICY policy = {.mode = MTA_STS_MODE_ENFORCE};

    assert_true(mta_sts_mx_match("mail.example.com", "mail.example.com"));
    assert_true(mta_sts_mx_match("mail.example.com", "MAIL.Example.com."));
    assert_false(mta_sts_mx_match("mail.example.com", "mail.example.co"));
    assert_false(mta_sts_mx_match("mail.example.com", "xmail.example.com"));
    assert_true(mta_sts_mx_match("*.example.net", "mx1.example.net"));
    assert_true(mta_sts_mx_match("*.example.net", "MX1.EXAMPLE.NET."));
    /* the star is exactly one label */
    assert_false(mta_sts_mx_match("*.example.net", "example.net"));
    assert_false(mta_sts_mx_match("*.example.net", ".example.net"));
    assert_false(mta_sts_mx_match("*.example.net", "a.b.example.net"));
    assert_false(mta_sts_mx_match("*.example.net", "mx1.xexample.net"));
    assert_false(mta_sts_mx_match("*.example.net", "mx1example.net"));

    policy.mx = argv_split("mx.a.test *.b.test", " ");
    assert_true(mta_sts_policy_allows(&policy, "mx.a.test"));
    assert_true(mta_sts_policy_allows(&policy, "x.b.test"));
    assert_false(mta_sts_policy_allows(&policy, "mx.c.test"));
    mta_sts_policy_free(&policy);
}

static void test_domain_ok(void **state)
{
    assert_true(mta_sts_domain_ok("example.com"));
    assert_true(mta_sts_domain_ok("a-b.c0"));
    assert_false(mta_sts_domain_ok(""));
    assert_false(mta_sts_domain_ok("."));
    assert_false(mta_sts_domain_ok("a..b"));
    assert_false(mta_sts_domain_ok(".a"));
    assert_false(mta_sts_domain_ok("a."));
    assert_false(mta_sts_domain_ok("../x"));
    assert_false(mta_sts_domain_ok("a/b"));
    assert_false(mta_sts_domain_ok("a_b.c"));
    assert_false(mta_sts_domain_ok(
        "a234567890123456789012345678901234567890123456789012345678901234.c"));
}

static void test_cache_parse(void **state)
{
    static const char good[] = "sluice-mta-sts 1\nid: abc1\nfetched: 100\n"
                               "expires: 86500\n\nversion: STSv1\nmode: "
                               "enforce\nmx: mx.a.test\nmax_age: 86400\n";
    MTA_STS_POLICY policy;
    VSTR *id = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    time_t fetched = 0, expires = 0;

    assert_int_equal(mta_sts_cache_parse(good, sizeof(good) - 1, id, &fetched,
                                         &expires, &policy, why),
                     0);
    assert_string_equal(vstr_str(id), "abc1");
    assert_int_equal(fetched, 100);
    assert_int_equal(expires, 86500);
    assert_int_equal(policy.mode, MTA_STS_MODE_ENFORCE);
    assert_string_equal(policy.mx->argv[0], "mx.a.test");
    mta_sts_policy_free(&policy);

    /* cut short anywhere before the last field's first digit: refused
       (a cut inside the number leaves a smaller max_age, still valid) */
    {
        size_t digits = (size_t) (strstr(good, "max_age: ") - good) + 9 + 1;

        for (size_t len = 0; len < digits; len++)
            assert_int_equal(mta_sts_cache_parse(good, len, id, &fetched,
                                                 &expires, &policy, why),
                             -1);
    }
    assert_int_equal(mta_sts_cache_parse("sluice-mta-sts 2\n", 17, id, &fetched,
                                         &expires, &policy, why),
                     -1);
    vstr_free(id);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_parse),
        cmocka_unit_test(test_policy_parse_bad),
        cmocka_unit_test(test_txt_select),
        cmocka_unit_test(test_mx_match),
        cmocka_unit_test(test_domain_ok),
        cmocka_unit_test(test_cache_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
