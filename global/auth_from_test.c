/*
 * auth_from_test - the From: domain for DMARC: found in the usual forms
 * (bare address, display name, comments, quoted local part, folded,
 * any case), and an error, never a domain, for no From:, two of them,
 * several mailboxes or a group, no '@', and a domain a DNS name cannot be
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "auth_from.h"
#include "vstr.h"

/* domain_of - auth_from_domain of head: the domain, or "ERROR" */
static const char *domain_of(const char *head, VSTR *domain)
{
    VSTR *why = vstr_alloc(100);
    int ret = auth_from_domain(head, strlen(head), domain, why);

    if (ret < 0) {
        assert_true(vstr_len(why) > 0);
        assert_int_equal(vstr_len(domain), 0);
    }
    vstr_free(why);
    return ret < 0 ? "ERROR" : vstr_str(domain);
}

static void test_found(void **state)
{
    VSTR *d = vstr_alloc(10);

    assert_string_equal(domain_of("From: a@Example.TEST\n\nbody\n", d),
                        "example.test");
    assert_string_equal(
        domain_of("Subject: x\nfrom : \"A, B\" <a@x.test> (c@y.test)\n", d),
        "x.test");
    assert_string_equal(domain_of("FROM: Name\n\t<\"a@b\"@z.test.>\n", d),
                        "z.test");
    assert_string_equal(domain_of("From: (comment (nested) a@q.test) "
                                  "w@k.test\n",
                                  d),
                        "k.test");
    /* what follows the header section is not read */
    assert_string_equal(domain_of("From: a@one.test\n\nFrom: b@two.test\n", d),
                        "one.test");
    vstr_free(d);
}

static void test_refused(void **state)
{
    VSTR *d = vstr_alloc(10);
    static const char *const bad[] = {
        "Subject: none\n",
        "From: a@x.test\nFrom: b@x.test\n",
        "From: a@x.test, b@y.test\n",
        "From: group: a@x.test;\n",
        "From: nobody\n",
        "From: a@\n",
        "From: a@localhost\n",
        "From: a@x..test\n",
        "From: a@x..\n", /* found by fuzz_auth_from: "x." was accepted */
        "From: a@x.test/evil\n",
        "From: a@\xc3\xa9.test\n",
        "Fromage: a@x.test\n",
        "",
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++)
        assert_string_equal(domain_of(bad[i], d), "ERROR");
    vstr_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_found),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
