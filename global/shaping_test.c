/*
 * shaping_test - unit tests of the shaping rules parser, GCRA and the
 * start decision, with exact times in microseconds
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <stdlib.h>
#include <cmocka.h>

#include "shaping.h"
#include "vstr.h"

#define SEC 1000000LL

/* test_file - write text to a temporary file; its path (static) */
static const char *test_file(const char *text)
{
    static char path[] = "/tmp/shaping_test.XXXXXX";
    int fd;

    memcpy(path + strlen(path) - 6, "XXXXXX", 6);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);
    return path;
}

/* test_load - load text as texthash:; NULL with why */
static SHAPING_RULES *test_load(const char *text, VSTR *why)
{
    const char *path = test_file(text);
    VSTR *spec = vstr_alloc(100);
    SHAPING_RULES *rules;

    vstr_sprintf(spec, "texthash:%s", path);
    rules = shaping_rules_load("smtp_shaping_maps", vstr_str(spec), why);
    unlink(path);
    vstr_free(spec);
    return rules;
}

static void test_rate_parse(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_RATE rate;
    static const struct {
        const char *text;
        long long count;
        long long period;
    } good[] = {
        {"5/s", 5, SEC},
        {"100/m", 100, 60 * SEC},
        {"1/h", 1, 3600 * SEC},
        {"1000000000/s", 1000000000, SEC},
    };
    static const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"5", "\"5\": a rate is N/s, N/m or N/h"},
        {"5/d", "\"5/d\": unknown unit \"d\" (s, m or h)"},
        {"0/s", "\"0/s\": a rate is N/s, N/m or N/h with N from 1 to "
                "1000000000"},
        {"/s", "\"/s\": a rate is N/s, N/m or N/h with N from 1 to "
               "1000000000"},
        {"x/s", "\"x/s\": a rate is N/s, N/m or N/h with N from 1 to "
                "1000000000"},
        {"1000000001/s", "\"1000000001/s\": a rate is N/s, N/m or N/h with N "
                         "from 1 to 1000000000"},
        {"5/", "\"5/\": unknown unit \"\" (s, m or h)"},
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(shaping_rate_parse(good[i].text, &rate, why), 0);
        assert_int_equal(rate.count, good[i].count);
        assert_int_equal(rate.period_usec, good[i].period);
        assert_string_equal(shaping_rate_format(&rate, why), good[i].text);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(shaping_rate_parse(bad[i].text, &rate, why), -1);
        assert_string_equal(vstr_str(why), bad[i].why);
    }
    vstr_free(why);
}

static void test_rule_parse(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_RULE rule;

    assert_int_equal(
        shaping_rule_parse("Provider:Google",
                           "mx_suffix=.Google.com,.googlemail.com, .x.test "
                           "max_connections=5, message_rate=10/s "
                           "connection_rate=100/m burst=3 "
                           "messages_per_connection=50",
                           &rule, why),
        0);
    assert_string_equal(rule.key, "provider:google");
    assert_int_equal(rule.kind, SHAPING_KIND_PROVIDER);
    assert_int_equal(rule.mx_suffix->argc, 3);
    assert_string_equal(rule.mx_suffix->argv[0], ".google.com");
    assert_string_equal(rule.mx_suffix->argv[1], ".googlemail.com");
    assert_string_equal(rule.mx_suffix->argv[2], ".x.test");
    assert_int_equal(rule.max_connections, 5);
    assert_int_equal(rule.message_rate.count, 10);
    assert_int_equal(rule.message_rate.period_usec, SEC);
    assert_int_equal(rule.connection_rate.count, 100);
    assert_int_equal(rule.connection_rate.period_usec, 60 * SEC);
    assert_int_equal(rule.burst, 3);
    assert_int_equal(rule.messages_per_connection, 50);
    shaping_rule_done(&rule);

    assert_int_equal(
        shaping_rule_parse("a.test", "max_connections=2", &rule, why), 0);
    assert_int_equal(rule.kind, SHAPING_KIND_DOMAIN);
    assert_int_equal(rule.burst, 1); /* the default */
    assert_int_equal(rule.message_rate.count, 0); /* no limit */
    assert_null(rule.mx_suffix);
    shaping_rule_done(&rule);

    assert_int_equal(
        shaping_rule_parse("DEFAULT", "message_rate=1/h", &rule, why), 0);
    assert_int_equal(rule.kind, SHAPING_KIND_DEFAULT);
    shaping_rule_done(&rule);
    vstr_free(why);
}

static void test_rule_errors(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_RULE rule;
    static const struct {
        const char *key;
        const char *value;
        const char *why;
    } bad[] = {
        {"a.test", "max_connections=0",
         "max_connections=0: must be at least 1"},
        {"a.test", "max_connections=-1",
         "max_connections=-1: not a whole number"},
        {"a.test", "max_connections=", "max_connections: empty value"},
        {"a.test", "max_connection=3",
         "unknown setting \"max_connection\" (mx_suffix, max_connections, "
         "message_rate, connection_rate, burst, messages_per_connection)"},
        {"a.test", "burst=2 burst=3", "burst given twice"},
        {"a.test", "message_rate=5/d",
         "message_rate: \"5/d\": unknown unit \"d\" (s, m or h)"},
        {"a.test", "message_rate=5/s 7", "\"7\": expected name=value"},
        {"a.test", "mx_suffix=.x.test",
         "mx_suffix is for provider:NAME entries only"},
        {"default", "mx_suffix=.x.test",
         "mx_suffix is for provider:NAME entries only"},
        {"provider:x", "max_connections=2",
         "provider:x: a provider needs mx_suffix=..."},
        {"provider:", "mx_suffix=.x.test",
         "\"provider:\": a provider is provider:NAME"},
        {"provider:x", "mx_suffix=.x.test,bad/host",
         "mx_suffix: \"bad/host\" is not a host name suffix"},
        {"a test", "burst=1",
         "\"a test\": not a domain, provider:NAME or default"},
        {"a.test", "", "a.test: no settings"},
        {"a.test", "burst=1000000001",
         "burst=1000000001: larger than 1000000000"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (shaping_rule_parse(bad[i].key, bad[i].value, &rule, why) != -1)
            fail_msg("%s %s: accepted", bad[i].key, bad[i].value);
        assert_string_equal(vstr_str(why), bad[i].why);
        assert_null(rule.key);
        assert_null(rule.mx_suffix);
    }
    vstr_free(why);
}

static void test_load_file(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_RULES *rules = test_load("# comment\n"
                                     "slow.test  max_connections=2\n"
                                     "    message_rate=5/s\n"
                                     "\n"
                                     "provider:big mx_suffix=.mx.big.test\n"
                                     "default    max_connections=10\n",
                                     why);
    const SHAPING_RULE *rule;
    const char *hosts_big[] = {"a.mx.big.test", "B.MX.BIG.TEST."};
    const char *hosts_mixed[] = {"a.mx.big.test", "mx.other.test"};
    const char *hosts_lookalike[] = {"notmx.big.test"};

    assert_non_null(rules);
    assert_int_equal(shaping_rules_count(rules), 3);
    rule = shaping_rules_domain(rules, "SLOW.test");
    assert_string_equal(rule->key, "slow.test");
    assert_int_equal(rule->lineno, 2);
    assert_int_equal(rule->message_rate.count, 5); /* continuation line */
    assert_string_equal(shaping_rules_domain(rules, "other.test")->key,
                        "default");
    /* a provider or the default is never a domain's own rule */
    assert_string_equal(shaping_rules_domain(rules, "provider:big")->key,
                        "default");
    assert_null(shaping_rules_exact(rules, "other.test"));
    assert_string_equal(shaping_rules_exact(rules, "Slow.Test")->key,
                        "slow.test");
    assert_string_equal(shaping_rules_fallback(rules)->key, "default");
    assert_int_equal(shaping_rules_providers(rules), 1);
    rule = shaping_rules_provider(rules, hosts_big, 2);
    assert_non_null(rule);
    assert_string_equal(rule->key, "provider:big");
    assert_null(shaping_rules_provider(rules, hosts_mixed, 2));
    assert_null(shaping_rules_provider(rules, hosts_lookalike, 1));
    shaping_rules_free(rules);

    /* no default: a domain without a rule has none */
    rules = test_load("slow.test max_connections=2\n", why);
    assert_null(shaping_rules_domain(rules, "other.test"));
    shaping_rules_free(rules);
    vstr_free(why);
}

static void test_load_errors(void **state)
{
    VSTR *why = vstr_alloc(100);
    const char *needle;

    assert_null(test_load("a.test max_connections=2\n"
                          "# fine so far\n"
                          "b.test message_rate=fast\n",
                          why));
    needle = strstr(vstr_str(why), ", line 3: message_rate: \"fast\": a rate "
                                   "is N/s, N/m or N/h");
    if (needle == NULL ||
        strncmp(vstr_str(why), "smtp_shaping_maps: /tmp/", 24) != 0)
        fail_msg("why: %s", vstr_str(why));

    assert_null(test_load("a.test max_connections=2\n"
                          "A.TEST max_connections=3\n",
                          why));
    if (strstr(vstr_str(why), ", line 2: a.test given again (first on line "
                              "1)") == NULL)
        fail_msg("why: %s", vstr_str(why));

    assert_null(
        shaping_rules_load("smtp_shaping_maps", "pcre:/nonexistent", why));
    assert_string_equal(vstr_str(why),
                        "smtp_shaping_maps: \"pcre:/nonexistent\": shaping "
                        "rules are read whole: use texthash:/path (or hash:, "
                        "btree:)");
    assert_null(shaping_rules_load("smtp_shaping_maps",
                                   "texthash:/nonexistent/x", why));
    assert_non_null(strstr(vstr_str(why), "/nonexistent/x"));
    /* an empty value: no rules, no error */
    assert_null(shaping_rules_load("smtp_shaping_maps", "", why));
    assert_string_equal(vstr_str(why), "");
    vstr_free(why);
}

static void test_gcra_exact(void **state)
{
    SHAPING_RATE rate = {5, SEC}; /* T = 200000 us */
    SHAPING_GCRA gcra = {0};
    long long now = 1000 * SEC;

    assert_int_equal(shaping_gcra_interval(&rate), 200000);
    /* burst 1: one now, the next exactly T later */
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 1, now), 0);
    shaping_gcra_take(&gcra, &rate, now);
    assert_int_equal(gcra.tat, now + 200000);
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 1, now), 200000);
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 1, now + 199999), 1);
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 1, now + 200000), 0);
    shaping_gcra_take(&gcra, &rate, now + 200000);
    assert_int_equal(gcra.tat, now + 400000);
    /* idle a long time: no credit beyond the burst */
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 1, now + 10 * SEC), 0);
    shaping_gcra_take(&gcra, &rate, now + 10 * SEC);
    assert_int_equal(gcra.tat, now + 10 * SEC + 200000);
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 1, now + 10 * SEC),
                     200000);

    /* burst 3: three at once, then one per T */
    gcra.tat = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(shaping_gcra_tokens(&gcra, &rate, 3, now), 3 - i);
        assert_int_equal(shaping_gcra_wait(&gcra, &rate, 3, now), 0);
        shaping_gcra_take(&gcra, &rate, now);
    }
    assert_int_equal(shaping_gcra_tokens(&gcra, &rate, 3, now), 0);
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 3, now), 200000);
    assert_int_equal(shaping_gcra_tokens(&gcra, &rate, 3, now + 200000), 1);
    assert_int_equal(shaping_gcra_tokens(&gcra, &rate, 3, now + 600000), 3);

    /* a period that does not divide: T rounds up, never faster */
    rate = (SHAPING_RATE){7, SEC};
    assert_int_equal(shaping_gcra_interval(&rate), 142858);
    rate = (SHAPING_RATE){100, 3600 * SEC};
    assert_int_equal(shaping_gcra_interval(&rate), 36 * SEC);
    /* no limit */
    rate = (SHAPING_RATE){0, 0};
    gcra.tat = 0;
    shaping_gcra_take(&gcra, &rate, now);
    assert_int_equal(gcra.tat, 0);
    assert_int_equal(shaping_gcra_wait(&gcra, &rate, 1, now), 0);
}

/* the property the system test measures: within any window W starting
   at the first unit, at most burst + W / T units pass, and a greedy sender
   gets exactly that many */
static void test_gcra_window(void **state)
{
    SHAPING_RATE rate = {5, SEC};
    SHAPING_GCRA gcra = {0};
    long long start = 42 * SEC + 123;
    long long now = start;
    long long passed = 0;
    long long window = 8 * SEC;

    while (now < start + window) {
        long long wait = shaping_gcra_wait(&gcra, &rate, 4, now);

        if (wait == 0) {
            shaping_gcra_take(&gcra, &rate, now);
            passed++;
        } else {
            now += wait; /* the timer: exactly when the token is due */
        }
    }
    /* at start: 4 (burst), then one at each of start + 200000 * k for
       k = 1 .. 39 (start + 8 s itself is outside the window) */
    assert_int_equal(passed, 4 + 39);
}

static void test_may_start(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_RULE rule;
    SHAPING_STATE st = {0};
    long long now = 5000 * SEC;
    long long wait;

    assert_int_equal(shaping_rule_parse("a.test",
                                        "max_connections=2 message_rate=2/s "
                                        "connection_rate=1/s burst=2",
                                        &rule, why),
                     0);
    assert_int_equal(shaping_may_start(&rule, &st, now, &wait), SHAPING_GO);
    shaping_start(&rule, &st, now);
    assert_int_equal(shaping_may_start(&rule, &st, now, &wait), SHAPING_GO);
    shaping_start(&rule, &st, now);
    /* two in flight: full, whatever the tokens */
    assert_int_equal(shaping_may_start(&rule, &st, now + 10 * SEC, &wait),
                     SHAPING_FULL);
    shaping_end(&st);
    /* the slower rate decides: connections 1/s with burst 2 */
    assert_int_equal(shaping_may_start(&rule, &st, now, &wait), SHAPING_WAIT);
    assert_int_equal(wait, SEC);
    assert_int_equal(shaping_may_start(&rule, &st, now + SEC, &wait),
                     SHAPING_GO);
    assert_false(shaping_idle(&st, now + 10 * SEC));
    shaping_end(&st);
    assert_false(shaping_idle(&st, now + SEC)); /* the rate remembers */
    assert_true(shaping_idle(&st, now + 2 * SEC));
    /* a suspension holds everything */
    st.suspended_until = now + 30 * SEC;
    assert_int_equal(shaping_may_start(&rule, &st, now + 10 * SEC, &wait),
                     SHAPING_WAIT);
    assert_int_equal(wait, 20 * SEC);
    /* no rule: never held (but counted) */
    st = (SHAPING_STATE){0};
    assert_int_equal(shaping_may_start(NULL, &st, now, &wait), SHAPING_GO);
    shaping_start(NULL, &st, now);
    assert_int_equal(st.connections, 1);
    shaping_rule_done(&rule);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_parse),  cmocka_unit_test(test_rule_parse),
        cmocka_unit_test(test_rule_errors), cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_errors), cmocka_unit_test(test_gcra_exact),
        cmocka_unit_test(test_gcra_window), cmocka_unit_test(test_may_start),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
