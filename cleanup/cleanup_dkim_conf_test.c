/*
 * cleanup_dkim_conf_test - unit tests for the pure parsers of DKIM signing:
 * a dkim_signing_maps value (selector:path lists, dual keys, type hints,
 * refusals), dkim_signed_headers (oversigning, from always signed, bad
 * names), dkim_canonicalization, and the domain of a From: value
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"
#include "cleanup.h"
#include "cleanup_dkim.h"
#include "mymalloc.h"
#include "vstr.h"

/* One key, several keys with both separators, type hints. */
static void test_keys_good(void **state)
{
    CLEANUP_DKIM_KEYSPEC *specs;
    VSTR *why = vstr_alloc(64);
    ssize_t n;

    n = cleanup_dkim_keys_parse("sel:/etc/dkim/k.pem", &specs, why);
    assert_int_equal(n, 1);
    assert_string_equal(specs[0].selector, "sel");
    assert_string_equal(specs[0].path, "/etc/dkim/k.pem");
    assert_int_equal(specs[0].type, CLEANUP_DKIM_KEY_ANY);
    specs = cleanup_dkim_keys_free(specs, (size_t) n);
    assert_null(specs);

    n = cleanup_dkim_keys_parse(" rsa-2026.a:/k/rsa.pem,ed_1:/k/ed.pem:ed25519 "
                                "old:/k/old.pem:RSA",
                                &specs, why);
    assert_int_equal(n, 3);
    assert_string_equal(specs[0].selector, "rsa-2026.a");
    assert_string_equal(specs[0].path, "/k/rsa.pem");
    assert_string_equal(specs[1].selector, "ed_1");
    assert_string_equal(specs[1].path, "/k/ed.pem");
    assert_int_equal(specs[1].type, CLEANUP_DKIM_KEY_ED25519);
    assert_string_equal(specs[2].path, "/k/old.pem");
    assert_int_equal(specs[2].type, CLEANUP_DKIM_KEY_RSA);
    cleanup_dkim_keys_free(specs, (size_t) n);
    vstr_free(why);
}

/* Each refusal says why, and nothing is left allocated. */
static void test_keys_bad(void **state)
{
    static const char *const bad[] = {
        "",
        " , ",
        "sel",
        "sel:",
        "sel:relative.pem",
        ":/k.pem",
        "-sel:/k.pem",
        "sel-:/k.pem",
        "a..b:/k.pem",
        "s/l:/k.pem",
        "sel:/k.pem other",
        "sel:rsa",
        "sel::rsa",
        "a:/1 b:/2 c:/3 d:/4 e:/5 f:/6 g:/7 h:/8 i:/9",
    };
    CLEANUP_DKIM_KEYSPEC *specs;
    VSTR *why = vstr_alloc(64);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        vstr_reset(why);
        assert_int_equal(cleanup_dkim_keys_parse(bad[i], &specs, why), -1);
        assert_null(specs);
        assert_true(vstr_len(why) > 0);
    }
    vstr_free(why);
}

/* dkim_signed_headers: lower case, once each; '+' oversigns; from is
   always there; the default of mail_params.c parses. */
static void test_headers(void **state)
{
    ARGV *sign, *over;
    VSTR *why = vstr_alloc(64);

    assert_int_equal(cleanup_dkim_headers_parse("+From, +Subject to To date "
                                                "+to",
                                                &sign, &over, why),
                     0);
    assert_int_equal(sign->argc, 4);
    assert_string_equal(sign->argv[0], "from");
    assert_string_equal(sign->argv[1], "subject");
    assert_string_equal(sign->argv[2], "to");
    assert_string_equal(sign->argv[3], "date");
    assert_int_equal(over->argc, 3);
    assert_string_equal(over->argv[2], "to");
    argv_free(sign);
    argv_free(over);

    assert_int_equal(cleanup_dkim_headers_parse("subject", &sign, &over, why),
                     0);
    assert_int_equal(sign->argc, 2);
    assert_string_equal(sign->argv[1], "from");
    assert_int_equal(over->argc, 0);
    argv_free(sign);
    argv_free(over);

    assert_int_equal(cleanup_dkim_headers_parse(
                         "+from, +subject, +to, +date, cc, reply-to, sender, "
                         "message-id, list-unsubscribe-post, feedback-id",
                         &sign, &over, why),
                     0);
    argv_free(sign);
    argv_free(over);

    assert_int_equal(cleanup_dkim_headers_parse("from to:", &sign, &over, why),
                     -1);
    assert_null(sign);
    assert_non_null(strstr(vstr_str(why), "to:"));
    assert_int_equal(cleanup_dkim_headers_parse("from sub*", &sign, &over, why),
                     -1);
    assert_int_equal(cleanup_dkim_headers_parse("from +", &sign, &over, why),
                     -1);
    assert_int_equal(
        cleanup_dkim_headers_parse("DKIM-Signature", &sign, &over, why), -1);
    vstr_free(why);
}

/* dkim_canonicalization */
static void test_canon(void **state)
{
    VSTR *why = vstr_alloc(64);
    int h, b;

    assert_int_equal(cleanup_dkim_canon_parse("relaxed/relaxed", &h, &b, why),
                     0);
    assert_int_equal(h, CLEANUP_DKIM_CANON_RELAXED);
    assert_int_equal(b, CLEANUP_DKIM_CANON_RELAXED);
    assert_int_equal(cleanup_dkim_canon_parse("Relaxed/simple", &h, &b, why),
                     0);
    assert_int_equal(h, CLEANUP_DKIM_CANON_RELAXED);
    assert_int_equal(b, CLEANUP_DKIM_CANON_SIMPLE);
    assert_int_equal(cleanup_dkim_canon_parse("relaxed", &h, &b, why), 0);
    assert_int_equal(b, CLEANUP_DKIM_CANON_SIMPLE);
    assert_int_equal(cleanup_dkim_canon_parse("simple/", &h, &b, why), -1);
    assert_int_equal(cleanup_dkim_canon_parse("loose/relaxed", &h, &b, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "loose/relaxed"));
    assert_int_equal(cleanup_dkim_canon_parse("", &h, &b, why), -1);
    vstr_free(why);
}

/* The From: domain: display names, comments, several addresses (the
   first), nothing to find; never the domain inside a quoted local part. */
static void test_from_domain(void **state)
{
    static const struct {
        const char *value;
        const char *domain;
    } cases[] = {
        {" alice@Example.TEST", "example.test"},
        {" Alice <alice@example.test>", "example.test"},
        {" \"Doe, J\" <j@sub.example.test> (work)", "sub.example.test"},
        /* A quoted local part is beyond cleanup_rewrite_addr_spans (which
           this shares): no domain, so the envelope sender's is used. */
        {" \"a@evil.test\"@good.test", NULL},
        {" a@one.test, b@two.test", "one.test"},
        {" undisclosed", NULL},
        {" \"a@evil.test\"", NULL},
        {" group: a@x.test;", NULL},
        {" <a@x.test", NULL},
        {"", NULL},
        {" a@[192.0.2.1]", NULL}, /* no d= for an address literal */
        {" a@bad..domain", NULL},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        char *got = cleanup_dkim_from_domain(cases[i].value);

        if (cases[i].domain == NULL) {
            if (got != NULL) {
                print_error("\"%s\" gave \"%s\"\n", cases[i].value, got);
                fail();
            }
        } else {
            if (got == NULL)
                print_error("\"%s\" gave nothing\n", cases[i].value);
            assert_non_null(got);
            assert_string_equal(got, cases[i].domain);
        }
        myfree(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_good),   cmocka_unit_test(test_keys_bad),
        cmocka_unit_test(test_headers),     cmocka_unit_test(test_canon),
        cmocka_unit_test(test_from_domain),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
