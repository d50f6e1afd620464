/*
 * shaping_auto_test - unit tests of response automation: the rules
 * parser, reply matching, triggers (first match, N in a window), actions
 * that expire, renewed matches that extend, and how the lowered limits
 * change the start decision; exact times in microseconds
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <stdlib.h>
#include <cmocka.h>

#include "shaping.h"
#include "shaping_auto.h"
#include "vstr.h"

#define SEC 1000000LL

/* load_text - text as a texthash file; the rules, or NULL with why */
static SHAPING_AUTO_RULES *load_text(const char *text, VSTR *why)
{
    char path[] = "/tmp/shaping_auto_test.XXXXXX";
    VSTR *spec = vstr_alloc(50);
    SHAPING_AUTO_RULES *rules;
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);
    vstr_sprintf(spec, "texthash:%s", path);
    rules =
        shaping_auto_load("smtp_shaping_automation_maps", vstr_str(spec), why);
    unlink(path);
    vstr_free(spec);
    if (rules == NULL && getenv("SHAPING_AUTO_TEST_DEBUG"))
        fprintf(stderr, "load: %s\n", vstr_str(why));
    return rules;
}

/* refused - the rule text is refused with a reason containing expect */
static void refused(const char *value, const char *expect)
{
    SHAPING_AUTO_RULE rule;
    VSTR *why = vstr_alloc(100);

    if (shaping_auto_rule_parse("r", value, &rule, why) == 0)
        fail_msg("accepted \"%s\"", value);
    if (strstr(vstr_str(why), expect) == NULL)
        fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", value, vstr_str(why),
                 expect);
    vstr_free(why);
}

static void test_rule_parse(void **state)
{
    SHAPING_AUTO_RULE rule;
    VSTR *why = vstr_alloc(100);

    assert_int_equal(
        shaping_auto_rule_parse("yahoo-ts04",
                                "provider=Yahoo action=suspend duration=2h "
                                "trigger=3/10m regex=\\[TSS?04\\] temporarily",
                                &rule, why),
        0);
    assert_string_equal(rule.provider, "provider:yahoo");
    assert_int_equal(rule.action, SHAPING_AUTO_SUSPEND);
    assert_true(rule.duration == 2 * 3600 * SEC);
    assert_int_equal(rule.trigger_count, 3);
    assert_true(rule.trigger_window == 600 * SEC);
    assert_string_equal(rule.regex_text, "\\[TSS?04\\] temporarily");
    shaping_auto_rule_done(&rule);

    assert_int_equal(
        shaping_auto_rule_parse(
            "g", "code=421 dsn=4.7.28 action=backoff duration=90m", &rule, why),
        0);
    assert_int_equal(rule.code, 421);
    assert_string_equal(rule.dsn, "4.7.28");
    assert_int_equal(rule.connections, 1);
    assert_true(rule.rate.count == 1 && rule.rate.period_usec == 60 * SEC);
    assert_int_equal(rule.trigger_count, 1);
    shaping_auto_rule_done(&rule);

    assert_int_equal(
        shaping_auto_rule_parse("m", "dsn=4.7.650 action=rate:10/m duration=1h",
                                &rule, why),
        0);
    assert_int_equal(rule.action, SHAPING_AUTO_RATE);
    assert_true(rule.rate.count == 10);
    shaping_auto_rule_done(&rule);

    refused("action=suspend duration=1h", "needs code=, dsn= or regex=");
    refused("dsn=4.7.28 duration=1h", "needs action= and duration=");
    refused("dsn=4.7.28 action=suspend", "needs action= and duration=");
    refused("dsn=4.7 action=suspend duration=1h", "dsn=4.7: not an enhanced");
    refused("dsn=4.7.28 action=pause duration=1h", "action=pause: unknown");
    refused("dsn=4.7.28 action=rate:5/day duration=1h", "action=rate: ");
    refused("dsn=4.7.28 action=connections:0 duration=1h", "connections=0");
    refused("dsn=4.7.28 action=suspend duration=soon", "duration=soon");
    refused("dsn=4.7.28 action=suspend duration=1h trigger=3", "trigger=3");
    refused("dsn=4.7.28 action=suspend duration=1h trigger=0/1m", "trigger=0");
    refused("dsn=4.7.28 action=suspend duration=1h colour=red",
            "unknown setting \"colour\"");
    refused("dsn=4.7.28 dsn=4.7.29 action=suspend duration=1h",
            "dsn given twice");
    refused("action=suspend duration=1h regex=([", "regex=([: ");
    refused("regex=x action=suspend duration=1h", "regex= must come last");
    refused("code=99 action=suspend duration=1h", "code=99");
    vstr_free(why);
}

static void test_load_file(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_AUTO_RULES *rules =
        load_text("# automation\n"
                  "a dsn=4.7.28 action=suspend duration=1h\n"
                  "b action=rate:1/m duration=2h regex=RL0000\n",
                  why);

    assert_non_null(rules);
    assert_int_equal(shaping_auto_count(rules), 2);
    assert_string_equal(shaping_auto_at(rules, 1)->name, "b");
    assert_int_equal(shaping_auto_at(rules, 1)->lineno, 3);
    shaping_auto_free(rules);

    assert_null(load_text("a dsn=4.7.28 action=suspend duration=1h\n"
                          "b dsn=4.7.28 action=stop duration=1h\n",
                          why));
    assert_non_null(strstr(vstr_str(why), ", line 2: action=stop: unknown"));
    assert_int_equal(
        strncmp(vstr_str(why), "smtp_shaping_automation_maps: ", 30), 0);
    assert_null(load_text("a dsn=4.7.28 action=suspend duration=1h\n"
                          "a dsn=4.7.29 action=suspend duration=1h\n",
                          why));
    assert_non_null(strstr(vstr_str(why), "a given again (first on line 1)"));
    /* empty: no rules, no error */
    assert_null(shaping_auto_load("p", "", why));
    assert_int_equal(vstr_len(why), 0);
    vstr_free(why);
}

static void test_reply_match(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_AUTO_RULES *rules = load_text(
        "yahoo provider=yahoo action=suspend duration=2h regex=\\[TSS?04\\]\n"
        "gmail dsn=4.7.28 action=suspend duration=30m\n"
        "any421 code=421 action=backoff duration=10m\n",
        why);
    SHAPING_AUTO_REPLY reply;

    assert_non_null(rules);
    assert_true(shaping_auto_reply_parse(
        "smtp; 421 4.7.28 unusual rate of unsolicited mail", &reply));
    assert_int_equal(reply.code, 421);
    assert_string_equal(reply.dsn, "4.7.28");
    assert_int_equal(shaping_auto_match(rules, "provider:google", &reply), 1);
    /* the provider restriction, and the regex on the text */
    assert_true(shaping_auto_reply_parse(
        "smtp; 421 4.7.0 [TSS04] Messages temporarily deferred", &reply));
    assert_int_equal(shaping_auto_match(rules, "provider:yahoo", &reply), 0);
    assert_int_equal(shaping_auto_match(rules, "example.com", &reply), 2);
    /* a reply without an enhanced code; one of another class */
    assert_true(shaping_auto_reply_parse("421 busy", &reply));
    assert_string_equal(reply.dsn, "");
    assert_int_equal(shaping_auto_match(rules, "x.test", &reply), 2);
    assert_true(shaping_auto_reply_parse("smtp; 450 4.7.28 x", &reply));
    assert_int_equal(shaping_auto_match(rules, "x.test", &reply), 1);
    assert_true(shaping_auto_reply_parse("smtp; 451 5.7.28 x", &reply));
    assert_string_equal(reply.dsn, "");
    assert_int_equal(shaping_auto_match(rules, "x.test", &reply), -1);
    /* not a reply at all */
    assert_false(shaping_auto_reply_parse("connect refused", &reply));
    assert_false(shaping_auto_reply_parse(NULL, &reply));
    shaping_auto_free(rules);
    vstr_free(why);
}

static void test_trigger_expire_extend(void **state)
{
    VSTR *why = vstr_alloc(100);
    VSTR *text = vstr_alloc(50);
    SHAPING_AUTO_RULES *rules =
        load_text("first dsn=4.7.28 action=suspend duration=60s\n"
                  "third action=rate:1/m duration=100s trigger=3/10s "
                  "regex=RL0000\n",
                  why);
    SHAPING_AUTO_HITS *hits = shaping_auto_hits_alloc(rules);
    SHAPING_STATE st = {0};
    const char *by[3];
    long long t = 1000 * SEC;

    assert_non_null(rules);
    /* the first match acts: suspended for 60 s, by that rule */
    assert_true(shaping_auto_hit(rules, 0, hits, &st, t));
    assert_int_equal(shaping_auto_apply(shaping_auto_at(rules, 0), &st, t),
                     SHAPING_AUTO_STARTED);
    assert_true(st.suspended_until == t + 60 * SEC);
    assert_string_equal(shaping_auto_describe(&st, t, text), "suspend:first");
    /* a renewed match extends it to 60 s from then */
    assert_true(shaping_auto_hit(rules, 0, hits, &st, t + 30 * SEC));
    assert_int_equal(
        shaping_auto_apply(shaping_auto_at(rules, 0), &st, t + 30 * SEC),
        SHAPING_AUTO_EXTENDED);
    assert_true(st.suspended_until == t + 90 * SEC);
    /* nothing expires early; then it does, once, naming the rule */
    assert_int_equal(shaping_auto_expire(&st, t + 89 * SEC, by), 0);
    assert_int_equal(shaping_auto_expire(&st, t + 90 * SEC, by),
                     SHAPING_AUTO_EXPIRED_SUSPEND);
    assert_string_equal(by[0], "first");
    assert_true(st.suspended_until == 0 && st.suspended_by == NULL);
    assert_int_equal(shaping_auto_expire(&st, t + 91 * SEC, by), 0);
    assert_string_equal(shaping_auto_describe(&st, t, text), "-");

    /* three matches within 10 s: the first two do nothing */
    assert_false(shaping_auto_hits_recent(rules, hits, t));
    assert_false(shaping_auto_hit(rules, 1, hits, &st, t));
    assert_true(shaping_auto_hits_recent(rules, hits, t + 10 * SEC));
    assert_false(shaping_auto_hits_recent(rules, hits, t + 11 * SEC));
    assert_false(shaping_auto_hit(rules, 1, hits, &st, t + 6 * SEC));
    /* 11 s after the first: only two in the window */
    assert_false(shaping_auto_hit(rules, 1, hits, &st, t + 11 * SEC));
    /* the third within 10 s of the one two back acts */
    assert_true(shaping_auto_hit(rules, 1, hits, &st, t + 12 * SEC));
    shaping_auto_apply(shaping_auto_at(rules, 1), &st, t + 12 * SEC);
    assert_true(st.auto_rate_until == t + 112 * SEC);
    assert_string_equal(shaping_auto_describe(&st, t + 12 * SEC, text),
                        "rate=1/m:third");
    /* in force: one match extends it */
    assert_true(shaping_auto_hit(rules, 1, hits, &st, t + 50 * SEC));
    shaping_auto_apply(shaping_auto_at(rules, 1), &st, t + 50 * SEC);
    assert_true(st.auto_rate_until == t + 150 * SEC);
    assert_int_equal(shaping_auto_expire(&st, t + 150 * SEC, by),
                     SHAPING_AUTO_EXPIRED_RATE);
    assert_string_equal(by[1], "third");
    /* after the action the count starts again */
    assert_false(shaping_auto_hit(rules, 1, hits, &st, t + 151 * SEC));
    shaping_auto_hits_free(hits);
    shaping_auto_free(rules);
    vstr_free(text);
    vstr_free(why);
}

static void test_lowered_limits(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_RULE rule;
    SHAPING_AUTO_RULE backoff;
    SHAPING_STATE st = {0};
    long long t = 1000 * SEC;
    long long wait;
    const char *by[3];

    assert_int_equal(shaping_rule_parse("a.test",
                                        "max_connections=5 message_rate=10/s "
                                        "burst=5",
                                        &rule, why),
                     0);
    assert_int_equal(
        shaping_auto_rule_parse("b", "code=421 action=backoff duration=90s",
                                &backoff, why),
        0);
    shaping_auto_apply(&backoff, &st, t);
    /* one connection at most */
    assert_int_equal(shaping_may_start(&rule, &st, t, &wait), SHAPING_GO);
    shaping_start(&rule, &st, t);
    assert_int_equal(shaping_may_start(&rule, &st, t, &wait), SHAPING_FULL);
    shaping_end(&st);
    /* one message a minute, no burst */
    assert_int_equal(shaping_may_start(&rule, &st, t + SEC, &wait),
                     SHAPING_WAIT);
    assert_true(wait == 59 * SEC);
    assert_false(shaping_idle(&st, t + 89 * SEC));
    /* expired: the rule's own limits again (its bucket is still owed the
       minute the last message took) */
    assert_int_equal(shaping_auto_expire(&st, t + 90 * SEC, by),
                     SHAPING_AUTO_EXPIRED_RATE |
                         SHAPING_AUTO_EXPIRED_CONNECTIONS);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(shaping_may_start(&rule, &st, t + 90 * SEC, &wait),
                         SHAPING_GO);
        shaping_start(&rule, &st, t + 90 * SEC);
    }
    assert_int_equal(shaping_may_start(&rule, &st, t + 90 * SEC, &wait),
                     SHAPING_FULL);
    shaping_auto_rule_done(&backoff);
    shaping_rule_done(&rule);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule_parse),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_reply_match),
        cmocka_unit_test(test_trigger_expire_extend),
        cmocka_unit_test(test_lowered_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
