/*
 * psl_test - organizational domains by the Public Suffix List: normal,
 * wildcard and exception rules, the default rule "*", case, a domain that
 * is a public suffix, no list (the last two labels); lists refused with
 * the line named; Debian's list itself when it is installed
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "psl.h"
#include "vstr.h"

#define DEBIAN_LIST "/usr/share/publicsuffix/public_suffix_list.dat"

static const char small_list[] =
    "// a list in the format of publicsuffix.org\n"
    "\n"
    "// ===BEGIN ICANN DOMAINS===\n"
    "com\n"
    "uk\n"
    "co.uk   trailing words are not part of the rule\n"
    "*.ck\n"
    "!www.ck\n"
    "jp\n"
    "*.kawasaki.jp\n"
    "!city.kawasaki.jp\r\n"
    "\t  // an indented comment\n"
    "// ===BEGIN PRIVATE DOMAINS===\n"
    "BlogSpot.com\n"
    "m\xc3\xbcnchen.test\n"
    "b\xc3\xbc"
    "cher-\xc3\xa4.test\n"
    "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
    "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc.test\n"
    "*.\xe3\x83\x89\xe3\x83\xa1\xe3\x82\xa4\xe3\x83\xb3"
    "\xe5\x90\x8d\xe4\xbe\x8b\n"
    "\xe5\x85\xac\xe5\x8f\xb8.cn"; /* Unicode rules; no last newline */

/* org - psl_org_domain of domain */
static const char *org(const PSL *psl, const char *domain, VSTR *out)
{
    psl_org_domain(psl, domain, out);
    return vstr_str(out);
}

static void test_rules(void **state)
{
    VSTR *why = vstr_alloc(10);
    VSTR *out = vstr_alloc(10);
    PSL *psl = psl_parse(small_list, strlen(small_list), why);

    assert_non_null(psl);
    assert_int_equal(psl_rules(psl), 14);
    /* normal rules: the longest that matches, plus one label */
    assert_string_equal(org(psl, "mail.example.co.uk", out), "example.co.uk");
    assert_string_equal(org(psl, "example.co.uk", out), "example.co.uk");
    assert_string_equal(org(psl, "a.example.uk", out), "example.uk");
    assert_string_equal(org(psl, "A.B.Example.COM", out), "example.com");
    /* a public suffix is its own organizational domain */
    assert_string_equal(org(psl, "co.uk", out), "co.uk");
    assert_string_equal(org(psl, "uk", out), "uk");
    /* wildcard and exception rules */
    assert_string_equal(org(psl, "a.b.c.ck", out), "b.c.ck");
    assert_string_equal(org(psl, "c.ck", out), "c.ck");
    assert_string_equal(org(psl, "ck", out), "ck");
    assert_string_equal(org(psl, "www.ck", out), "www.ck");
    assert_string_equal(org(psl, "a.www.ck", out), "www.ck");
    assert_string_equal(org(psl, "x.y.z.kawasaki.jp", out), "y.z.kawasaki.jp");
    assert_string_equal(org(psl, "x.city.kawasaki.jp", out),
                        "city.kawasaki.jp");
    assert_string_equal(org(psl, "a.example.jp", out), "example.jp");
    /* the private section counts too */
    assert_string_equal(org(psl, "a.me.blogspot.com", out), "me.blogspot.com");
    /* no rule: "*" */
    assert_string_equal(org(psl, "a.b.example.test", out), "example.test");
    assert_string_equal(org(psl, "test", out), "test");
    /* Unicode rules match the A-labels of a From: domain */
    assert_string_equal(org(psl, "a.b.xn--55qx5d.cn", out), "b.xn--55qx5d.cn");
    assert_string_equal(org(psl, "a.b.XN--MNCHEN-3YA.test", out),
                        "b.xn--mnchen-3ya.test");
    assert_string_equal(org(psl, "a.b.c.xn--eckwd4c7cu47r2wf", out),
                        "b.c.xn--eckwd4c7cu47r2wf");
    assert_string_equal(org(psl, "x.y.xn--bcher--gua0q.test", out),
                        "y.xn--bcher--gua0q.test");
    assert_string_equal(org(psl, "x.y.xn--tdaaaaaaaaaaaaaaaaaaaa.test", out),
                        "y.xn--tdaaaaaaaaaaaaaaaaaaaa.test");
    assert_string_equal(org(psl, "", out), "");
    psl_free(psl);
    vstr_free(why);
    vstr_free(out);
}

static void test_no_list(void **state)
{
    VSTR *out = vstr_alloc(10);

    assert_string_equal(org(NULL, "mail.example.co.uk", out), "co.uk");
    assert_string_equal(org(NULL, "A.Example.Test", out), "example.test");
    assert_string_equal(org(NULL, "test", out), "test");
    vstr_free(out);
}

static void test_many_labels(void **state)
{
    VSTR *name = vstr_alloc(10);
    VSTR *out = vstr_alloc(10);
    PSL *psl;
    VSTR *why = vstr_alloc(10);

    /* More labels than a DNS name holds: the last ones are searched. */
    for (int i = 0; i < 400; i++)
        vstr_cat(name, "a.");
    vstr_cat(name, "example.co.uk");
    psl = psl_parse("co.uk\n", 6, why);
    assert_non_null(psl);
    assert_string_equal(org(psl, vstr_str(name), out), "example.co.uk");
    assert_string_equal(org(NULL, vstr_str(name), out), "co.uk");
    psl_free(psl);
    vstr_free(name);
    vstr_free(out);
    vstr_free(why);
}

static void test_refused(void **state)
{
    static const struct {
        const char *text;
        size_t len;
        const char *why;
    } bad[] = {
        {"com\nco..uk\n", 11, "line 2: bad rule: an empty label"},
        {".uk\n", 4, "line 1: bad rule: an empty label"},
        {"uk.\n", 4, "line 1: bad rule: an empty label"},
        {"com\n\n*.*.uk\n", 12,
         "line 3: bad rule: '*' other than as the first label"},
        {"a*b.uk\n", 7, "line 1: bad rule: '*' inside a label"},
        {"!uk\n", 4, "line 1: bad rule: an exception rule of one label"},
        {"!*.uk\n", 6, "line 1: bad rule: '*' other than as the first label"},
        {"c\0m\n", 4, "line 1: bad rule: a NUL byte"},
        {"a.\x01.uk\n", 7, "line 1: bad rule: a character a DNS name has not"},
        {"a.\xc3.uk\n", 7,
         "line 1: bad rule: a label that is not UTF-8 (or far too long)"},
        {"\xc0\xaf.uk\n", 7,
         "line 1: bad rule: a label that is not UTF-8 (or far too long)"},
        {"\xed\xa0\x80.uk\n", 8,
         "line 1: bad rule: a label that is not UTF-8 (or far too long)"},
        {"", 0, "no rules"},
        {"// only\n\n// comments\n", 21, "no rules"},
    };
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        vstr_reset(why);
        assert_null(psl_parse(bad[i].text, bad[i].len, why));
        assert_string_equal(vstr_str(why), bad[i].why);
    }
    vstr_free(why);
}

static void test_long_label_refused(void **state)
{
    VSTR *text = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    for (int i = 0; i < 64; i++)
        vstr_addch(text, 'a');
    vstr_cat(text, ".uk\n");
    assert_null(psl_parse(vstr_str(text), vstr_len(text), why));
    assert_string_equal(vstr_str(why),
                        "line 1: bad rule: a label longer than 63 bytes");
    vstr_free(text);
    vstr_free(why);
}

static void test_load(void **state)
{
    VSTR *why = vstr_alloc(10);
    VSTR *out = vstr_alloc(10);
    PSL *psl;

    assert_null(psl_load("/nonexistent/psl.dat", why));
    assert_string_equal(vstr_str(why),
                        "/nonexistent/psl.dat: No such file or directory");
    assert_null(psl_load("/", why));
    assert_string_equal(vstr_str(why), "/: not a regular file");
    if (access(DEBIAN_LIST, R_OK) != 0) {
        vstr_free(why);
        vstr_free(out);
        skip(); /* publicsuffix is not installed (./install-deps.sh) */
    }
    psl = psl_load(DEBIAN_LIST, why);
    assert_non_null(psl);
    assert_true(psl_rules(psl) > 5000);
    assert_string_equal(org(psl, "mail.example.co.uk", out), "example.co.uk");
    assert_string_equal(org(psl, "a.b.example.com.au", out), "example.com.au");
    assert_string_equal(org(psl, "www.example.com", out), "example.com");
    assert_string_equal(org(psl, "a.b.c.kawasaki.jp", out), "b.c.kawasaki.jp");
    assert_string_equal(org(psl, "a.city.kawasaki.jp", out),
                        "city.kawasaki.jp");
    assert_string_equal(org(psl, "co.uk", out), "co.uk");
    /* its Unicode rules, as A-labels: 公司.cn, and the TLD of Russia */
    assert_string_equal(org(psl, "a.b.xn--55qx5d.cn", out), "b.xn--55qx5d.cn");
    assert_string_equal(org(psl, "a.b.xn--p1ai", out), "b.xn--p1ai");
    psl_free(psl);
    vstr_free(why);
    vstr_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_no_list),
        cmocka_unit_test(test_many_labels),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_long_label_refused),
        cmocka_unit_test(test_load),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
