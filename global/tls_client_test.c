/*
 * tls_client_test - unit tests for the TLS client's policy pieces: level
 * names, policy map values, Postfix's protocol lists, the names a
 * certificate must carry, the summary line's first word. The handshake
 * itself is tested against real servers by tests/test_smtp_tls.py.
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include <openssl/ssl.h>

#include "argv.h"
#include "tls_client.h"
#include "vstr.h"

/* test_levels - names both ways; what is implemented, what is mandatory */
static void test_levels(void **state)
{
    assert_int_equal(tls_level_parse("none"), TLS_LEV_NONE);
    assert_int_equal(tls_level_parse("MAY"), TLS_LEV_MAY);
    assert_int_equal(tls_level_parse("encrypt"), TLS_LEV_ENCRYPT);
    assert_int_equal(tls_level_parse("dane-only"), TLS_LEV_DANE_ONLY);
    assert_int_equal(tls_level_parse("verify"), TLS_LEV_VERIFY);
    assert_int_equal(tls_level_parse("secure"), TLS_LEV_SECURE);
    assert_int_equal(tls_level_parse("maybe"), TLS_LEV_INVALID);
    assert_int_equal(tls_level_parse(""), TLS_LEV_INVALID);
    assert_string_equal(tls_level_name(TLS_LEV_DANE), "dane");
    assert_true(tls_level_supported(TLS_LEV_MAY));
    assert_true(tls_level_supported(TLS_LEV_SECURE));
    assert_true(tls_level_supported(TLS_LEV_DANE));
    assert_true(tls_level_supported(TLS_LEV_DANE_ONLY));
    assert_false(tls_level_supported(TLS_LEV_FPRINT));
    assert_false(tls_level_required(TLS_LEV_MAY));
    assert_true(tls_level_required(TLS_LEV_ENCRYPT));
    assert_true(tls_level_required(TLS_LEV_VERIFY));
    assert_false(tls_level_verifies(TLS_LEV_ENCRYPT));
    assert_true(tls_level_verifies(TLS_LEV_SECURE));
}

/* test_policy - "level attr=value ..." and its errors */
static void test_policy(void **state)
{
    TLS_POLICY policy;
    VSTR *why = vstr_alloc(64);

    assert_int_equal(tls_policy_parse("secure match=a.test:.b.test "
                                      "protocols=>=TLSv1.2",
                                      &policy, why),
                     0);
    assert_int_equal(policy.level, TLS_LEV_SECURE);
    assert_int_equal(policy.match->argc, 2);
    assert_string_equal(policy.match->argv[1], ".b.test");
    assert_string_equal(policy.protocols, ">=TLSv1.2");
    tls_policy_free(&policy);

    assert_int_equal(tls_policy_parse("  may  ", &policy, why), 0);
    assert_int_equal(policy.level, TLS_LEV_MAY);
    assert_null(policy.match);
    assert_null(policy.protocols);
    tls_policy_free(&policy);

    assert_int_equal(tls_policy_parse("dane", &policy, why), 0);
    assert_int_equal(policy.level, TLS_LEV_DANE);
    tls_policy_free(&policy);

    assert_int_equal(tls_policy_parse("", &policy, why), -1);
    assert_string_equal(vstr_str(why), "empty TLS policy");
    assert_int_equal(tls_policy_parse("sure", &policy, why), -1);
    assert_string_equal(vstr_str(why), "invalid TLS security level \"sure\"");
    assert_int_equal(tls_policy_parse("verify match", &policy, why), -1);
    assert_string_equal(vstr_str(why),
                        "TLS policy attribute \"match\" has no value");
    assert_int_equal(tls_policy_parse("verify colour=red", &policy, why), -1);
    assert_string_equal(vstr_str(why),
                        "unknown TLS policy attribute \"colour\"");
    assert_int_equal(tls_policy_parse("encrypt protocols=TLSv9", &policy, why),
                     -1);
    assert_null(policy.match);
    vstr_free(why);
}

/* test_protocols - Postfix's protocol lists to an OpenSSL range */
static void test_protocols(void **state)
{
    static const struct {
        const char *spec;
        int lo;
        int hi;
    } good[] = {
        {"!SSLv2, !SSLv3", TLS1_VERSION, TLS1_3_VERSION},
        {">=TLSv1", TLS1_VERSION, TLS1_3_VERSION},
        {">=TLSv1.2", TLS1_2_VERSION, TLS1_3_VERSION},
        {"<=TLSv1.2", SSL3_VERSION, TLS1_2_VERSION},
        {"TLSv1.2 TLSv1.3", TLS1_2_VERSION, TLS1_3_VERSION},
        {"TLSv1.3", TLS1_3_VERSION, TLS1_3_VERSION},
        {"!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", TLS1_2_VERSION, TLS1_3_VERSION},
        {"", SSL3_VERSION, TLS1_3_VERSION},
    };
    static const char *const bad[] = {"TLSv9", ">=SSLv4", "!tlsv1.4", "SSLv2",
                                      ">=TLSv1.3 <=TLSv1.2"};
    VSTR *why = vstr_alloc(64);
    int lo, hi;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (tls_protocols_parse(good[i].spec, &lo, &hi, why) != 0)
            fail_msg("\"%s\": %s", good[i].spec, vstr_str(why));
        assert_int_equal(lo, good[i].lo);
        assert_int_equal(hi, good[i].hi);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (tls_protocols_parse(bad[i], &lo, &hi, why) != -1)
            fail_msg("\"%s\" accepted", bad[i]);
    vstr_free(why);
}

/* test_match_names - the level's default and the words replaced */
static void test_match_names(void **state)
{
    ARGV *match = argv_split("hostname:nexthop:dot-nexthop:x.test", ":");
    ARGV *names;

    names = tls_match_names(TLS_LEV_VERIFY, NULL, "mx.d.test", "d.test");
    assert_int_equal(names->argc, 1);
    assert_string_equal(names->argv[0], "mx.d.test");
    argv_free(names);
    names = tls_match_names(TLS_LEV_SECURE, NULL, "mx.d.test", "d.test");
    assert_int_equal(names->argc, 2);
    assert_string_equal(names->argv[0], "d.test");
    assert_string_equal(names->argv[1], ".d.test");
    argv_free(names);
    names = tls_match_names(TLS_LEV_SECURE, match, "mx.d.test", "d.test");
    assert_int_equal(names->argc, 4);
    assert_string_equal(names->argv[0], "mx.d.test");
    assert_string_equal(names->argv[2], ".d.test");
    assert_string_equal(names->argv[3], "x.test");
    argv_free(names);
    argv_free(match);
}

/* test_summary - Postfix's words and line */
static void test_summary(void **state)
{
    TLS_STATUS status;
    VSTR *line = vstr_alloc(64);

    tls_status_init(&status);
    snprintf(status.protocol, sizeof(status.protocol), "TLSv1.3");
    snprintf(status.cipher, sizeof(status.cipher), "TLS_AES_256_GCM_SHA384");
    status.bits = status.alg_bits = 256;
    assert_string_equal(tls_status_word(&status), "Anonymous");
    status.peer_cert = true;
    assert_string_equal(tls_status_word(&status), "Untrusted");
    status.trusted = true;
    assert_string_equal(tls_status_word(&status), "Trusted");
    status.matched = true;
    tls_client_summary(line, &status, "mx.d.test[192.0.2.1]:25");
    assert_string_equal(vstr_str(line),
                        "Verified TLS connection established to "
                        "mx.d.test[192.0.2.1]:25: TLSv1.3 with cipher "
                        "TLS_AES_256_GCM_SHA384 (256/256 bits)");
    tls_status_free(&status);
    vstr_free(line);
}

/* test_cafile - a CAfile that cannot be read is an error with its name */
static void test_cafile(void **state)
{
    VSTR *why = vstr_alloc(64);
    TLS_CLIENT *tls;

    assert_null(tls_client_create("/nonexistent/ca.pem", why));
    assert_non_null(
        strstr(vstr_str(why), "smtp_tls_CAfile /nonexistent/ca.pem"));
    tls = tls_client_create("", why);
    assert_non_null(tls);
    assert_null(tls_client_ssl(tls, ">=TLSv9", why));
    tls_client_free(tls);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),    cmocka_unit_test(test_policy),
        cmocka_unit_test(test_protocols), cmocka_unit_test(test_match_names),
        cmocka_unit_test(test_summary),   cmocka_unit_test(test_cafile),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
