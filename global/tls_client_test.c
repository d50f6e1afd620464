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
    assert_true(tls_level_supported(TLS_LEV_FPRINT));
    assert_false(tls_level_supported(TLS_LEV_INVALID));
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
                                      "sha256", &policy, why),
                     0);
    assert_int_equal(policy.level, TLS_LEV_SECURE);
    assert_int_equal(policy.match->argc, 2);
    assert_string_equal(policy.match->argv[1], ".b.test");
    assert_string_equal(policy.protocols, ">=TLSv1.2");
    tls_policy_free(&policy);

    assert_int_equal(tls_policy_parse("  may  ", "sha256", &policy, why), 0);
    assert_int_equal(policy.level, TLS_LEV_MAY);
    assert_null(policy.match);
    assert_null(policy.protocols);
    tls_policy_free(&policy);

    assert_int_equal(tls_policy_parse("dane", "sha256", &policy, why), 0);
    assert_int_equal(policy.level, TLS_LEV_DANE);
    tls_policy_free(&policy);

    assert_int_equal(tls_policy_parse("", "sha256", &policy, why), -1);
    assert_string_equal(vstr_str(why), "empty TLS policy");
    assert_int_equal(tls_policy_parse("sure", "sha256", &policy, why), -1);
    assert_string_equal(vstr_str(why), "invalid TLS security level \"sure\"");
    assert_int_equal(tls_policy_parse("verify match", "sha256", &policy, why),
                     -1);
    assert_string_equal(vstr_str(why),
                        "TLS policy attribute \"match\" has no value");
    assert_int_equal(
        tls_policy_parse("verify colour=red", "sha256", &policy, why), -1);
    assert_string_equal(vstr_str(why),
                        "unknown TLS policy attribute \"colour\"");
    assert_int_equal(
        tls_policy_parse("encrypt protocols=TLSv9", "sha256", &policy, why),
        -1);
    assert_null(policy.match);
    vstr_free(why);
}

/* test_fingerprints - fingerprint policies: '|' between fingerprints,
   colons optional, canonical upper case, the digest's length, match=
   adding up; bad ones refused with what is wrong */
static void test_fingerprints(void **state)
{
    static const char sha1_a[] =
        "0a:1b:2c:3d:4e:5f:60:71:82:93:a4:b5:c6:d7:e8:f9:00:11:22:33";
    static const char sha1_b[] = "FFEEDDCCBBAA99887766554433221100FFEEDDCC";
    TLS_POLICY policy;
    VSTR *why = vstr_alloc(64);
    VSTR *text = vstr_alloc(64);
    ARGV *list = argv_alloc(2);

    assert_int_equal(tls_fprint_digest_len("sha256"), 32);
    assert_int_equal(tls_fprint_digest_len("sha1"), 20);
    assert_int_equal(tls_fprint_digest_len("md5"), 16);
    assert_int_equal(tls_fprint_digest_len("sha999"), 0);
    assert_int_equal(tls_fprint_digest_len(""), 0);

    vstr_sprintf(text, "fingerprint match=%s|%s match=%s", sha1_a, sha1_b,
                 sha1_a);
    assert_int_equal(tls_policy_parse(vstr_str(text), "sha1", &policy, why), 0);
    assert_int_equal(policy.level, TLS_LEV_FPRINT);
    assert_int_equal(policy.match->argc, 3);
    assert_string_equal(
        policy.match->argv[0],
        "0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:00:11:22:33");
    assert_string_equal(
        policy.match->argv[1],
        "FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00:FF:EE:DD:CC");
    tls_policy_free(&policy);

    /* A sha1 fingerprint where sha256 is configured: the wrong length. */
    vstr_sprintf(text, "fingerprint match=%s", sha1_a);
    assert_int_equal(tls_policy_parse(vstr_str(text), "sha256", &policy, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "20 bytes, the digest has 32"));
    assert_int_equal(policy.level, TLS_LEV_INVALID);
    assert_int_equal(
        tls_policy_parse("fingerprint match=AA:BB:XY", "sha1", &policy, why),
        -1);
    assert_non_null(strstr(vstr_str(why), "bad fingerprint \"AA:BB:XY\""));
    assert_int_equal(
        tls_policy_parse("fingerprint match=AA:BBC", "sha1", &policy, why), -1);
    assert_int_equal(
        tls_policy_parse("fingerprint match=AA:", "sha1", &policy, why), -1);
    assert_int_equal(
        tls_policy_parse("fingerprint match=AA", "sha999", &policy, why), -1);
    assert_string_equal(vstr_str(why), "unknown fingerprint digest \"sha999\"");
    /* Without match=: the level alone (smtp_tls_fingerprint_cert_match). */
    assert_int_equal(tls_policy_parse("fingerprint", "sha256", &policy, why),
                     0);
    assert_null(policy.match);
    tls_policy_free(&policy);

    /* main.cf's list: white space or commas between them. */
    vstr_sprintf(text, "%s, %s", sha1_b, sha1_a);
    assert_int_equal(tls_fprint_list(vstr_str(text), " \t,|", 20, list, why),
                     0);
    assert_int_equal(list->argc, 2);
    assert_int_equal(tls_fprint_list("zz", " ", 20, list, why), -1);
    argv_free(list);
    vstr_free(text);
    vstr_free(why);
}

/* test_dns_support - smtp_dns_support_level, and the old rule when it
   is empty */
static void test_dns_support(void **state)
{
    VSTR *why = vstr_alloc(64);
    const char *anchor;

    assert_int_equal(tls_dns_support("", true, "/a.key", &anchor, why),
                     TLS_DNS_DISABLED);
    assert_int_equal(tls_dns_support("", false, "/a.key", &anchor, why),
                     TLS_DNS_DNSSEC);
    assert_string_equal(anchor, "/a.key");
    assert_int_equal(tls_dns_support("", false, "", &anchor, why),
                     TLS_DNS_ENABLED);
    assert_string_equal(anchor, "");
    /* Set: it wins over disable_dns_lookups, and the anchor is not used
       below dnssec. */
    assert_int_equal(tls_dns_support("enabled", true, "/a.key", &anchor, why),
                     TLS_DNS_ENABLED);
    assert_string_equal(anchor, "");
    assert_int_equal(tls_dns_support("Disabled", false, "", &anchor, why),
                     TLS_DNS_DISABLED);
    assert_int_equal(tls_dns_support("dnssec", true, "/a.key", &anchor, why),
                     TLS_DNS_DNSSEC);
    assert_string_equal(anchor, "/a.key");
    assert_int_equal(tls_dns_support("yes", false, "", &anchor, why),
                     TLS_DNS_INVALID);
    assert_string_equal(vstr_str(why),
                        "smtp_dns_support_level: unknown value \"yes\" "
                        "(disabled, enabled or dnssec)");
    assert_string_equal(tls_dns_support_name(TLS_DNS_DNSSEC), "dnssec");
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
        cmocka_unit_test(test_levels),       cmocka_unit_test(test_policy),
        cmocka_unit_test(test_protocols),    cmocka_unit_test(test_match_names),
        cmocka_unit_test(test_summary),      cmocka_unit_test(test_cafile),
        cmocka_unit_test(test_fingerprints), cmocka_unit_test(test_dns_support),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
