/*
 * smtp_addr_test - unit tests for RFC 5321 envelope address parsing: valid
 * and invalid paths, quoting, source routes, literals, domain rules
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "smtp_addr.h"
#include "vstr.h"

typedef struct CASE {
    const char *arg; /* argument after "FROM:" / "TO:" */
    int flags;
    int want; /* 0 or -1 */
    const char *addr; /* expected address on success */
    const char *rest; /* expected parameters */
} CASE;

static const CASE cases[] = {
    {"<user@example.test>", 0, 0, "user@example.test", ""},
    {"  <user@example.test>  SIZE=10", 0, 0, "user@example.test", "SIZE=10"},
    {"<user@example.test>\tBODY=8BITMIME", 0, 0, "user@example.test",
     "BODY=8BITMIME"},
    {"user@example.test SIZE=1", 0, 0, "user@example.test", "SIZE=1"},
    {"<postmaster>", 0, 0, "postmaster", ""},
    {"<>", SMTP_ADDR_FLAG_NULL_OK, 0, "", ""},
    {"<> SIZE=5", SMTP_ADDR_FLAG_NULL_OK, 0, "", "SIZE=5"},
    {"<>", 0, -1, NULL, NULL},
    {"", SMTP_ADDR_FLAG_NULL_OK, -1, NULL, NULL},
    {"<\"john doe\"@example.test>", 0, 0, "\"john doe\"@example.test", ""},
    {"<\"a>b\"@example.test>", 0, 0, "\"a>b\"@example.test", ""},
    {"<\"a\\\"b\"@example.test>", 0, 0, "\"a\\\"b\"@example.test", ""},
    {"<\"a\\\\\"@example.test>", 0, 0, "\"a\\\\\"@example.test", ""},
    {"<\"unterminated@example.test>", 0, -1, NULL, NULL},
    {"<\"a\"b@example.test>", 0, -1, NULL, NULL},
    {"<a b@example.test>", 0, -1, NULL, NULL},
    {"<user@example.test", 0, -1, NULL, NULL},
    {"<user@example.test>x", 0, -1, NULL, NULL},
    {"<@relay.test:user@example.test>", 0, 0, "user@example.test", ""},
    {"<@a.test,@b.test:user@example.test>", 0, 0, "user@example.test", ""},
    {"<@a.test,user@example.test>", 0, -1, NULL, NULL},
    {"<@bad..test:user@example.test>", 0, -1, NULL, NULL},
    {"<@:user@example.test>", 0, -1, NULL, NULL},
    {"<user@[192.0.2.1]>", 0, 0, "user@[192.0.2.1]", ""},
    {"<user@[IPv6:2001:db8::1]>", 0, 0, "user@[IPv6:2001:db8::1]", ""},
    {"<user@[ipv6:::1]>", 0, 0, "user@[ipv6:::1]", ""},
    {"<user@[192.0.2.256]>", 0, -1, NULL, NULL},
    {"<user@[2001:db8::1]>", 0, -1, NULL, NULL},
    {"<user@[IPv6:zz::1]>", 0, -1, NULL, NULL},
    {"<user@[]>", 0, -1, NULL, NULL},
    {"<user@[192.0.2.1>", 0, -1, NULL, NULL},
    {"<user@>", 0, -1, NULL, NULL},
    {"<@example.test>", 0, -1, NULL, NULL},
    {"<user@@example.test>", 0, -1, NULL, NULL},
    {"<user@example..test>", 0, -1, NULL, NULL},
    {"<user@.example.test>", 0, -1, NULL, NULL},
    {"<user@example.test.>", 0, -1, NULL, NULL},
    {"<user@-example.test>", 0, -1, NULL, NULL},
    {"<user@example-.test>", 0, -1, NULL, NULL},
    {"<user@ex-ample.test>", 0, 0, "user@ex-ample.test", ""},
    {"<user@ex_ample.test>", 0, 0, "user@ex_ample.test", ""},
    {"<user@exa mple.test>", 0, -1, NULL, NULL},
    {"<us\ter@example.test>", 0, -1, NULL, NULL},
    {"<us\rer@example.test>", 0, -1, NULL, NULL},
    {"<us\xc3\xa9r@example.test>", 0, -1, NULL, NULL},
    {"<user@ex\xc3\xa9mple.test>", 0, -1, NULL, NULL},
    {"<\"us\x01r\"@example.test>", 0, -1, NULL, NULL},
    {"<a+tag@example.test>", 0, 0, "a+tag@example.test", ""},
    {"<!#$%&'*+-/=?^_`{|}~@example.test>", 0, 0,
     "!#$%&'*+-/=?^_`{|}~@example.test", ""},
    {"<first.last@example.test>", 0, 0, "first.last@example.test", ""},
    {"<user@example.test> ", 0, 0, "user@example.test", ""},
};

/* test_parse_cases - every case gives the expected result */
static void test_parse_cases(void **state)
{
    VSTR *addr = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const CASE *c = cases + i;
        const char *rest = NULL;
        int ret;

        vstr_reset(why);
        ret = smtp_addr_parse_path(c->arg, c->flags, addr, &rest, why);
        if (ret != c->want)
            fail_msg("case %zu \"%s\": got %d (%s), want %d", i, c->arg, ret,
                     vstr_str(why), c->want);
        if (ret == 0) {
            if (strcmp(vstr_str(addr), c->addr) != 0)
                fail_msg("case %zu \"%s\": address \"%s\", want \"%s\"", i,
                         c->arg, vstr_str(addr), c->addr);
            if (strcmp(rest, c->rest) != 0)
                fail_msg("case %zu \"%s\": rest \"%s\", want \"%s\"", i, c->arg,
                         rest, c->rest);
        } else if (vstr_len(why) == 0) {
            fail_msg("case %zu \"%s\": no reason given", i, c->arg);
        }
    }
    vstr_free(addr);
    vstr_free(why);
}

/* test_check_embedded_nul - a NUL inside the given length is an error */
static void test_check_embedded_nul(void **state)
{
    static const char with_nul[] = "us\0er@example.test";
    VSTR *why = vstr_alloc(10);

    assert_int_equal(smtp_addr_check(with_nul, sizeof(with_nul) - 1, why), -1);
    assert_int_equal(smtp_addr_check("user@example.test", 17, why), 0);
    /* the length decides, not the terminator */
    assert_int_equal(smtp_addr_check("user@example.test", 4, why), 0);
    assert_int_equal(smtp_addr_check("user@example.test", 5, why), -1);
    assert_int_equal(smtp_addr_check("", 0, why), -1);
    vstr_free(why);
}

/* test_lengths - the address and domain limits */
static void test_lengths(void **state)
{
    VSTR *why = vstr_alloc(10);
    VSTR *addr = vstr_alloc(10);
    char label[64];

    memset(label, 'a', 63);
    label[63] = 0;
    vstr_sprintf(addr, "u@%s.test", label);
    assert_int_equal(smtp_addr_check(vstr_str(addr), vstr_len(addr), why), 0);
    vstr_sprintf(addr, "u@%sa.test", label);
    assert_int_equal(smtp_addr_check(vstr_str(addr), vstr_len(addr), why), -1);
    /* a domain of 255 bytes is fine, 256 is not */
    vstr_reset(addr);
    while (vstr_len(addr) < 255 - 4)
        vstr_cat(addr, "a.");
    vstr_truncate(addr, 255 - 4);
    vstr_cat(addr, "test");
    if (vstr_str(addr)[250] == '.')
        vstr_str(addr)[250] = 'b';
    assert_int_equal(vstr_len(addr), 255);
    assert_true(smtp_addr_domain_ok(vstr_str(addr), vstr_len(addr)));
    vstr_cat(addr, "x");
    assert_false(smtp_addr_domain_ok(vstr_str(addr), vstr_len(addr)));
    /* the whole address */
    vstr_reset(addr);
    for (int i = 0; i < SMTP_ADDR_MAX; i++)
        vstr_addch(addr, 'a');
    assert_int_equal(smtp_addr_check(vstr_str(addr), vstr_len(addr), why), 0);
    vstr_addch(addr, 'a');
    assert_int_equal(smtp_addr_check(vstr_str(addr), vstr_len(addr), why), -1);
    assert_string_equal(vstr_str(why), "address too long");
    vstr_free(addr);
    vstr_free(why);
}

/* test_domain - the domain part skips quoted '@' */
static void test_domain(void **state)
{
    assert_string_equal(smtp_addr_domain("user@example.test"), "example.test");
    assert_string_equal(smtp_addr_domain("\"a@b\"@example.test"),
                        "example.test");
    assert_string_equal(smtp_addr_domain("\"a\\\"@b\"@c.test"), "c.test");
    assert_null(smtp_addr_domain("postmaster"));
    assert_null(smtp_addr_domain("\"a@b\""));
    assert_null(smtp_addr_domain(""));
}

/* The relay-control cases: what RCPT TO: argument gives which local part
   and domain. The path parser and smtp_addr_split together decide; smtpd
   (relay check), cleanup (qualification) and qmgr (routing) all ask
   smtp_addr_split, so they cannot disagree. domain NULL: no domain (cleanup
   appends @$myorigin, so it is local wherever myorigin is). */
typedef struct SPLIT_CASE {
    const char *arg; /* RCPT TO: argument */
    int want; /* smtp_addr_parse_path: 0 or -1 */
    const char *local; /* local part */
    const char *domain; /* NULL: none */
} SPLIT_CASE;

static const SPLIT_CASE split_cases[] = {
    {"<user@example.test>", 0, "user", "example.test"},
    {"<postmaster>", 0, "postmaster", NULL},
    /* a quoted '@' is never a route: no domain at all */
    {"<\"v@outside.example\">", 0, "\"v@outside.example\"", NULL},
    {"<\"v@outside.example\"@localhost>", 0, "\"v@outside.example\"",
     "localhost"},
    {"<\"a\\\"@b.test\">", 0, "\"a\\\"@b.test\"", NULL},
    {"<\"a\\\\\"@b.test>", 0, "\"a\\\\\"", "b.test"},
    {"<\"@\"@localhost>", 0, "\"@\"", "localhost"},
    /* the percent hack and bang paths are local parts, not routes */
    {"<v%outside.example@localhost>", 0, "v%outside.example", "localhost"},
    {"<v%outside.example>", 0, "v%outside.example", NULL},
    {"<outside.example!v@localhost>", 0, "outside.example!v", "localhost"},
    /* a source route is dropped: the final domain decides */
    {"<@localhost:v@outside.example>", 0, "v", "outside.example"},
    {"<@a.test,@localhost:v@outside.example>", 0, "v", "outside.example"},
    {"<@outside.example:v@localhost>", 0, "v", "localhost"},
    {"<@outside.example:\"v@other.example\">", 0, "\"v@other.example\"", NULL},
    /* an unquoted '@' in the local part is a syntax error */
    {"<v@outside.example@localhost>", -1, NULL, NULL},
    {"<\"v@outside.example\"@>", -1, NULL, NULL},
    {"<\"v@outside.example>", -1, NULL, NULL},
    {"<v\\@outside.example@localhost>", -1, NULL, NULL},
    {"<\"v\"@outside.example\"@localhost>", -1, NULL, NULL},
};

/* test_split_cases - the relay-control table */
static void test_split_cases(void **state)
{
    VSTR *addr = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < sizeof(split_cases) / sizeof(split_cases[0]); i++) {
        const SPLIT_CASE *c = split_cases + i;
        const char *rest = NULL;
        const char *domain;
        size_t local_len = 12345;
        int ret;

        ret = smtp_addr_parse_path(c->arg, 0, addr, &rest, why);
        if (ret != c->want)
            fail_msg("case %zu %s: got %d (%s), want %d", i, c->arg, ret,
                     ret ? vstr_str(why) : vstr_str(addr), c->want);
        if (ret < 0)
            continue;
        domain = smtp_addr_split(vstr_str(addr), &local_len);
        if (local_len != strlen(c->local) ||
            strncmp(vstr_str(addr), c->local, local_len) != 0)
            fail_msg("case %zu %s: local part \"%.*s\", want \"%s\"", i, c->arg,
                     (int) local_len, vstr_str(addr), c->local);
        if (c->domain == NULL ? domain != NULL
                              : domain == NULL || strcmp(domain, c->domain))
            fail_msg("case %zu %s: domain %s, want %s", i, c->arg,
                     domain ? domain : "(none)",
                     c->domain ? c->domain : "(none)");
        if (smtp_addr_domain(vstr_str(addr)) != domain)
            fail_msg("case %zu %s: smtp_addr_domain disagrees", i, c->arg);
    }
    vstr_free(addr);
    vstr_free(why);
}

/* test_split_any_string - split is total: strings no parser accepted
   (queue files written by sendmail, table values) split the same way */
static void test_split_any_string(void **state)
{
    size_t len = 99;

    assert_null(smtp_addr_split("", &len));
    assert_int_equal(len, 0);
    assert_string_equal(smtp_addr_split("a@b@c.test", &len), "c.test");
    assert_int_equal(len, 3);
    /* an unbalanced quote runs to the end: nothing after it is a domain,
       so appending "@origin" (cleanup) still gives no domain */
    assert_null(smtp_addr_split("a\"b@c.test", &len));
    assert_int_equal(len, 10);
    assert_null(smtp_addr_split("a\"b@c.test@origin.test", NULL));
    assert_string_equal(smtp_addr_split("user@", &len), "");
    assert_int_equal(len, 4);
    assert_null(smtp_addr_split("\"trailing\\", &len));
    assert_int_equal(len, 10);
}

/* test_quote - dot-strings stay plain, anything else is quoted */
static void test_quote(void **state)
{
    static const struct {
        const char *local;
        const char *domain;
        const char *want;
    } quote_cases[] = {
        {"user", "example.test", "user@example.test"},
        {"first.last", "example.test", "first.last@example.test"},
        {"john doe", "example.test", "\"john doe\"@example.test"},
        {".user", "example.test", "\".user\"@example.test"},
        {"user.", "example.test", "\"user.\"@example.test"},
        {"a..b", "example.test", "\"a..b\"@example.test"},
        {"a\"b", "example.test", "\"a\\\"b\"@example.test"},
        {"a\\b", "example.test", "\"a\\\\b\"@example.test"},
        {"a@b", "example.test", "\"a@b\"@example.test"},
        {"", "example.test", "\"\"@example.test"},
        {"postmaster", NULL, "postmaster"},
    };
    VSTR *out = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < sizeof(quote_cases) / sizeof(quote_cases[0]); i++) {
        vstr_reset(out);
        smtp_addr_quote(out, quote_cases[i].local, strlen(quote_cases[i].local),
                        quote_cases[i].domain);
        assert_string_equal(vstr_str(out), quote_cases[i].want);
        /* what quote makes, check accepts (except the empty local part) */
        if (quote_cases[i].local[0])
            assert_int_equal(smtp_addr_check(vstr_str(out), vstr_len(out), why),
                             0);
    }
    /* a local part with a NUL inside its length is quoted, not cut */
    vstr_reset(out);
    smtp_addr_quote(out, "ab\0", 2, "x.test");
    assert_string_equal(vstr_str(out), "ab@x.test");
    vstr_free(out);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_cases),
        cmocka_unit_test(test_check_embedded_nul),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_domain),
        cmocka_unit_test(test_split_cases),
        cmocka_unit_test(test_split_any_string),
        cmocka_unit_test(test_quote),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
