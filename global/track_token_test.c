/*
 * track_token_test - unit tests for the mailto unsubscribe local part: the
 * short form stays within RFC 5321's 64 octets whatever the recipient and
 * tenant, its MAC binds queue ID, recipient and tenant, and the long form
 * of mail sent before is still read
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>

#include "qid.h"
#include "track_token.h"
#include "vstr.h"

/* test_key - a fixed 32-byte key */
static VSTR *test_key(const char *first)
{
    VSTR *key =
        vstr_ncpy(vstr_alloc(32), "0123456789abcdef0123456789abcdef", 32);

    vstr_str(key)[0] = first[0];
    return key;
}

/* test_long_names - a 200-octet local part and a 64-octet tenant */
static void test_long_names(VSTR *rcpt, VSTR *tenant)
{
    vstr_reset(rcpt);
    for (int i = 0; i < 200; i++)
        vstr_addch(rcpt, 'a' + i % 26);
    vstr_cat(rcpt, "@a-rather-long-subdomain.of.an.example.test");
    vstr_reset(tenant);
    for (int i = 0; i < 64; i++)
        vstr_addch(tenant, 'T');
}

/* test_short_form_length - the local part is 49 octets of [a-z0-9+-] for
   any recipient and tenant, and splits back into the queue ID */
static void test_short_form_length(void **state)
{
    VSTR *key = test_key("0");
    VSTR *rcpt = vstr_alloc(10);
    VSTR *tenant = vstr_alloc(10);
    VSTR *local = vstr_alloc(10);
    VSTR *mac = vstr_alloc(10);
    char qid[QID_SIZE];
    char back[QID_SIZE];

    qid_new(qid);
    test_long_names(rcpt, tenant);
    assert_int_equal(
        unsub_mailto_make(local, key, qid, vstr_str(rcpt), vstr_str(tenant)),
        0);
    assert_true(vstr_len(local) <= 64);
    assert_int_equal(vstr_len(local), 12 + QID_LEN + 1 + 20);
    assert_int_equal(strncmp(vstr_str(local), "unsubscribe+", 12), 0);
    for (const char *p = vstr_str(local) + 12; *p; p++)
        assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    *p == '-');
    vstr_cat(local, "@bounce.example.test");
    assert_int_equal(unsub_mailto_split(vstr_str(local), back, mac), 0);
    assert_string_equal(back, qid);
    assert_true(unsub_mailto_check(key, back, vstr_str(mac), vstr_str(rcpt),
                                   vstr_str(tenant)));
    /* the same with no recipient and no tenant */
    vstr_reset(local);
    assert_int_equal(unsub_mailto_make(local, key, qid, NULL, NULL), 0);
    assert_int_equal(vstr_len(local), 49);
    /* not a queue ID, a control character: nothing made */
    vstr_reset(local);
    assert_int_equal(unsub_mailto_make(local, key, "not-a-qid", "a@b", ""), -1);
    assert_int_equal(unsub_mailto_make(local, key, qid, "a\n@b", ""), -1);
    assert_int_equal(vstr_len(local), 0);
    vstr_free(key);
    vstr_free(rcpt);
    vstr_free(tenant);
    vstr_free(local);
    vstr_free(mac);
}

/* test_short_form_binds - the MAC fits only its own queue ID, recipient
   (in any letter case) and tenant under its own key; any altered
   character of the address is refused; upper case of the whole address
   is read */
static void test_short_form_binds(void **state)
{
    VSTR *key = test_key("0");
    VSTR *other = test_key("x");
    VSTR *local = vstr_alloc(10);
    VSTR *bad = vstr_alloc(10);
    VSTR *mac = vstr_alloc(10);
    char qid[QID_SIZE];
    char qid2[QID_SIZE];
    char back[QID_SIZE];

    qid_new(qid);
    qid_new(qid2);
    assert_string_not_equal(qid, qid2);
    assert_int_equal(
        unsub_mailto_make(local, key, qid, "Alice@Rcpt.test", "acme"), 0);
    assert_int_equal(unsub_mailto_split(vstr_str(local), back, mac), 0);
    assert_true(
        unsub_mailto_check(key, qid, vstr_str(mac), "alice@rcpt.test", "acme"));
    assert_true(
        unsub_mailto_check(key, qid, vstr_str(mac), "ALICE@RCPT.TEST", "acme"));
    assert_false(unsub_mailto_check(key, qid, vstr_str(mac),
                                    "mallory@rcpt.test", "acme"));
    assert_false(
        unsub_mailto_check(key, qid, vstr_str(mac), "alice@rcpt.test", ""));
    assert_false(
        unsub_mailto_check(key, qid, vstr_str(mac), "alice@rcpt.test", "ACME"));
    assert_false(unsub_mailto_check(key, qid2, vstr_str(mac), "alice@rcpt.test",
                                    "acme"));
    assert_false(unsub_mailto_check(other, qid, vstr_str(mac),
                                    "alice@rcpt.test", "acme"));
    /* every one-character change of the MAC */
    for (size_t i = 12 + QID_LEN + 1; i < vstr_len(local); i++) {
        vstr_cpy(bad, vstr_str(local));
        vstr_str(bad)[i] = vstr_str(bad)[i] == 'a' ? 'b' : 'a';
        if (unsub_mailto_split(vstr_str(bad), back, mac) == 0)
            assert_false(unsub_mailto_check(key, back, vstr_str(mac),
                                            "alice@rcpt.test", "acme"));
    }
    /* upper case, as some programs send it */
    vstr_cpy(bad, vstr_str(local));
    for (char *p = vstr_str(bad); *p; p++)
        *p = (char) toupper((unsigned char) *p);
    assert_int_equal(unsub_mailto_split(vstr_str(bad), back, mac), 0);
    assert_string_equal(back, qid);
    assert_true(unsub_mailto_check(key, back, vstr_str(mac), "alice@rcpt.test",
                                   "acme"));
    vstr_free(key);
    vstr_free(other);
    vstr_free(local);
    vstr_free(bad);
    vstr_free(mac);
}

/* test_short_form_split_refuses - what is not the short form */
static void test_short_form_split_refuses(void **state)
{
    static const char *const bad[] = {
        "",
        "unsubscribe+",
        "bounce+0000000000000000-aaaaaaaaaaaaaaaaaaaa",
        "unsubscribe+0000000000000000-aaaaaaaaaaaaaaaaaaa", /* short */
        "unsubscribe+0000000000000000-aaaaaaaaaaaaaaaaaaaaa", /* long */
        "unsubscribe+0000000000000000.aaaaaaaaaaaaaaaaaaaa", /* sep */
        "unsubscribe+000000000000000I-aaaaaaaaaaaaaaaaaaaa", /* qid */
        "unsubscribe+0000000000000000-aaaaaaaaaaaaaaaaaaa1@x", /* base32 */
    };
    VSTR *mac = vstr_alloc(10);
    char qid[QID_SIZE];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(unsub_mailto_split(bad[i], qid, mac), -1);
    assert_int_equal(
        unsub_mailto_split("unsubscribe+0000000000000000-aaaaaaaaaaaaaaaaaaaa",
                           qid, mac),
        0);
    vstr_free(mac);
}

/* test_long_form_still_read - the long form unsubscribe+TOKEN of mail
   sent before the short form names recipient, tenant and list */
static void test_long_form_still_read(void **state)
{
    VSTR *key = test_key("0");
    VSTR *token = vstr_alloc(10);
    VSTR *addr = vstr_alloc(10);
    VSTR *mac = vstr_alloc(10);
    TRACK_TOKEN tok;
    char qid[QID_SIZE];
    char back[QID_SIZE];

    qid_new(qid);
    assert_int_equal(track_token_make(token, key, TRACK_PURPOSE_UNSUB, qid,
                                      "alice@rcpt.test", "acme", "news"),
                     0);
    vstr_sprintf(addr, "unsubscribe+%s@bounce.test", vstr_str(token));
    assert_int_equal(unsub_mailto_split(vstr_str(addr), back, mac), -1);
    assert_int_equal(unsub_token_parse(key, vstr_str(addr), &tok), 0);
    assert_string_equal(tok.qid, qid);
    assert_string_equal(tok.recipient, "alice@rcpt.test");
    assert_string_equal(tok.tenant, "acme");
    assert_string_equal(tok.extra, "news");
    track_token_free(&tok);
    vstr_free(key);
    vstr_free(token);
    vstr_free(addr);
    vstr_free(mac);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_form_length),
        cmocka_unit_test(test_short_form_binds),
        cmocka_unit_test(test_short_form_split_refuses),
        cmocka_unit_test(test_long_form_still_read),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
