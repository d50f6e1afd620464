/*
 * warmup_test - unit tests of warm-up schedules: the rules parser and the
 * table loader (errors name the line), caps by day and by provider, the
 * day boundary (UTC), before the start and after the end of a schedule,
 * held days (bounce ratio, block ratio, a pause; too few attempts hold
 * nothing; nothing is held after the end), a clock that goes backwards,
 * and the state file (round trip, a real file, corrupt input).
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <stdlib.h>
#include <cmocka.h>

#include "vstr.h"
#include "warmup.h"

#define DAY 86400LL
#define START 20788LL /* 2026-12-01 */
#define AT(d) ((START + (d)) * DAY + 3600) /* 01:00 UTC of day d */

static const char rules_text[] =
    "# warm-up schedules\n"
    "127.0.0.3 start=2026-12-01 caps=50,100,200,500,1000,2000 "
    "gmail=20,40,80\n"
    "127.0.0.4 start=2026-12-05 caps=10\n";

/* load_text - text as a texthash file; the rules, or NULL with why */
static WARMUP_RULES *load_text(const char *text, VSTR *why)
{
    char path[] = "/tmp/warmup_test.XXXXXX";
    VSTR *spec = vstr_alloc(50);
    WARMUP_RULES *rules;
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);
    vstr_sprintf(spec, "texthash:%s", path);
    rules = warmup_rules_load("smtp_source_warmup_maps", vstr_str(spec), why);
    unlink(path);
    vstr_free(spec);
    return rules;
}

/* test_warmup - the rules above, thresholds 10% and 5% */
static WARMUP *test_warmup(void)
{
    WARMUP_CONF conf = {0.10, 0.05};
    VSTR *why = vstr_alloc(100);
    WARMUP_RULES *rules = load_text(rules_text, why);

    if (rules == NULL)
        fail_msg("%s", vstr_str(why));
    vstr_free(why);
    return warmup_alloc(&conf, rules);
}

/* refused - the value is refused with a reason containing expect */
static void refused(const char *key, const char *value, const char *expect)
{
    WARMUP_RULE rule;
    VSTR *why = vstr_alloc(100);

    if (warmup_rule_parse(key, value, &rule, why) == 0)
        fail_msg("accepted \"%s %s\"", key, value);
    if (strstr(vstr_str(why), expect) == NULL)
        fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", value, vstr_str(why),
                 expect);
    vstr_free(why);
}

static void test_date(void **state)
{
    long long day;

    (void) state;
    assert_true(warmup_date_parse("1970-01-01", &day));
    assert_int_equal(day, 0);
    assert_true(warmup_date_parse("2026-12-01", &day));
    assert_int_equal(day, START);
    assert_true(warmup_date_parse("2024-02-29", &day));
    assert_int_equal(day, 19782);
    assert_true(warmup_date_parse("9999-12-31", &day));
    assert_int_equal(day, 2932896);
    assert_false(warmup_date_parse("2023-02-29", &day));
    assert_false(warmup_date_parse("2100-02-29", &day));
    assert_true(warmup_date_parse("2000-02-29", &day));
    assert_false(warmup_date_parse("2026-13-01", &day));
    assert_false(warmup_date_parse("2026-04-31", &day));
    assert_false(warmup_date_parse("2026-00-10", &day));
    assert_false(warmup_date_parse("2026-1-01", &day));
    assert_false(warmup_date_parse("1969-12-31", &day));
    assert_false(warmup_date_parse("2026-12-01x", &day));
    assert_false(warmup_date_parse("2026/12/01", &day));
    assert_false(warmup_date_parse("", &day));
}

static void test_rule_parse(void **state)
{
    WARMUP_RULE rule;
    VSTR *why = vstr_alloc(100);
    VSTR *many = vstr_alloc(2000);

    (void) state;
    assert_int_equal(warmup_rule_parse("127.0.0.3",
                                       "start=2026-12-01 caps=50,100,200 "
                                       "gmail=20,40 outlook.com=5",
                                       &rule, why),
                     0);
    assert_string_equal(rule.source, "127.0.0.3");
    assert_int_equal(rule.start_day, START);
    assert_int_equal(rule.all.count, 3);
    assert_int_equal(rule.all.caps[2], 200);
    assert_int_equal(rule.provider_count, 2);
    assert_string_equal(rule.providers[0].provider, "gmail");
    assert_int_equal(rule.providers[0].count, 2);
    assert_int_equal(rule.providers[1].caps[0], 5);
    warmup_rule_done(&rule);
    /* IPv6 in the form inet_ntop writes. */
    assert_int_equal(
        warmup_rule_parse("0:0::1", "caps=1 start=2026-12-01", &rule, why), 0);
    assert_string_equal(rule.source, "::1");
    warmup_rule_done(&rule);

    refused("127.0.0.3", "caps=50", "start=YYYY-MM-DD is required");
    refused("127.0.0.3", "start=2026-12-01", "caps=N,N,... is required");
    refused("127.0.0.3", "start=2026-12-01 gmail=5",
            "caps=N,N,... is required");
    refused("127.0.0.3", "start=2026-02-30 caps=1", "not a date");
    refused("127.0.0.3", "start=2026-12-01 caps=0", "step 1");
    refused("127.0.0.3", "start=2026-12-01 caps=5,,6", "step 2");
    refused("127.0.0.3", "start=2026-12-01 caps=5,", "step 2");
    refused("127.0.0.3", "start=2026-12-01 caps=5;6", "N,N,");
    refused("127.0.0.3", "start=2026-12-01 caps=-5", "step 1");
    refused("127.0.0.3", "start=2026-12-01 caps=1000000001", "step 1");
    refused("127.0.0.3", "start=2026-12-01 caps=99999999999999999999",
            "step 1");
    refused("127.0.0.3", "start=2026-12-01 caps=5 caps=6", "caps given twice");
    refused("127.0.0.3", "start=2026-12-01 caps=5 Gmail=6", "\"Gmail\"");
    refused("127.0.0.3", "start=2026-12-01 caps=5 gmail", "not name=value");
    refused("127.0.0.3", "start=2026-12-01 caps=5 =6", "not name=value");
    refused("127.0.0.3", "start=2026-12-01 caps=5 gmail=", "step 1");
    refused("mta1.example.test", "start=2026-12-01 caps=5",
            "not an IPv4 or IPv6 address");
    refused("127.0.0.300", "start=2026-12-01 caps=5", "not an IPv4");
    vstr_cpy(many, "start=2026-12-01 caps=1");
    for (int i = 0; i < WARMUP_MAX_STEPS; i++)
        vstr_cat(many, ",1");
    refused("127.0.0.3", vstr_str(many), "more than 366 steps");
    vstr_free(many);
    vstr_free(why);
}

static void test_load(void **state)
{
    VSTR *why = vstr_alloc(100);
    WARMUP_RULES *rules = load_text(rules_text, why);

    (void) state;
    assert_non_null(rules);
    assert_int_equal(warmup_rules_count(rules), 2);
    assert_non_null(warmup_rules_find(rules, "127.0.0.4"));
    assert_null(warmup_rules_find(rules, "127.0.0.5"));
    warmup_rules_free(rules);

    assert_null(load_text("127.0.0.3 start=2026-12-01 caps=5\n"
                          "127.0.0.4 start=2026-12-01 caps=5 x=\n",
                          why));
    assert_non_null(strstr(vstr_str(why), "smtp_source_warmup_maps: "));
    assert_non_null(strstr(vstr_str(why), ", line 2: x=: step 1"));
    assert_null(load_text("127.0.0.3 start=2026-12-01 caps=5\n"
                          "\n"
                          "127.0.0.3 start=2026-12-02 caps=6\n",
                          why));
    assert_non_null(strstr(vstr_str(why),
                           "line 3: 127.0.0.3 given again (first on line "
                           "1)"));
    assert_null(warmup_rules_load("smtp_source_warmup_maps", "", why));
    assert_int_equal(vstr_len(why), 0);
    assert_null(
        warmup_rules_load("smtp_source_warmup_maps", "regexp:/etc/x", why));
    assert_non_null(strstr(vstr_str(why), "read whole"));
    vstr_free(why);
}

/* Caps by day (UTC) and by provider; the counts start again each day. */
static void test_caps(void **state)
{
    WARMUP *w = test_warmup();

    (void) state;
    assert_int_equal(warmup_day(w, "127.0.0.3", AT(0)), 0);
    assert_int_equal(warmup_cap(w, "127.0.0.3", NULL, AT(0)), 50);
    assert_int_equal(warmup_cap(w, "127.0.0.3", "gmail", AT(0)), 20);
    assert_int_equal(warmup_cap(w, "127.0.0.3", "yahoo", AT(0)), -1);
    for (int i = 0; i < 20; i++) {
        assert_false(warmup_over_cap(w, "127.0.0.3", "gmail", AT(0)));
        warmup_count(w, "127.0.0.3", "gmail", AT(0));
    }
    assert_true(warmup_over_cap(w, "127.0.0.3", "gmail", AT(0)));
    assert_false(warmup_over_cap(w, "127.0.0.3", "yahoo", AT(0)));
    assert_false(warmup_over_cap(w, "127.0.0.3", NULL, AT(0)));
    for (int i = 0; i < 30; i++) {
        assert_false(warmup_over_cap(w, "127.0.0.3", "yahoo", AT(0)));
        warmup_count(w, "127.0.0.3", "yahoo", AT(0));
    }
    assert_true(warmup_over_cap(w, "127.0.0.3", "yahoo", AT(0)));
    assert_true(warmup_over_cap(w, "127.0.0.3", NULL, AT(0)));
    assert_int_equal(warmup_sent(w, "127.0.0.3", NULL, AT(0)), 50);
    assert_int_equal(warmup_sent(w, "127.0.0.3", "gmail", AT(0)), 20);
    assert_int_equal(warmup_sent(w, "127.0.0.3", "yahoo", AT(0)), 0);
    assert_true(warmup_over_cap(w, "127.0.0.3", NULL, AT(1) - 3601));
    /* 00:00 UTC: a new day, new counts, the next step. */
    assert_false(warmup_over_cap(w, "127.0.0.3", "gmail", AT(1) - 3600));
    assert_int_equal(warmup_sent(w, "127.0.0.3", NULL, AT(1) - 3600), 0);
    assert_int_equal(warmup_cap(w, "127.0.0.3", NULL, AT(1)), 100);
    assert_int_equal(warmup_cap(w, "127.0.0.3", "gmail", AT(1)), 40);
    assert_int_equal(warmup_day(w, "127.0.0.3", AT(1)), 1);
    assert_int_equal(warmup_held(w, "127.0.0.3", AT(1)), 0);
    /* A source without a schedule has no cap, but is counted. */
    assert_int_equal(warmup_cap(w, "127.0.0.2", NULL, AT(0)), -1);
    assert_int_equal(warmup_day(w, "127.0.0.2", AT(0)), -1);
    warmup_count(w, "127.0.0.2", "gmail", AT(0));
    assert_false(warmup_over_cap(w, "127.0.0.2", "gmail", AT(0)));
    assert_int_equal(warmup_sent(w, "127.0.0.2", NULL, AT(0)), 1);
    warmup_free(w);
}

/* A message to two providers from one source (qmgr chooses per
   provider): its second provider is counted against its own cap, the
   source's total counts the message once. */
static void test_count_provider(void **state)
{
    WARMUP *w = test_warmup();

    (void) state;
    for (int i = 0; i < 20; i++) {
        assert_false(warmup_over_cap(w, "127.0.0.3", "gmail", AT(0)));
        warmup_count(w, "127.0.0.3", "yahoo", AT(0));
        warmup_count_provider(w, "127.0.0.3", "gmail", AT(0));
    }
    assert_true(warmup_over_cap(w, "127.0.0.3", "gmail", AT(0)));
    assert_int_equal(warmup_sent(w, "127.0.0.3", "gmail", AT(0)), 20);
    assert_int_equal(warmup_sent(w, "127.0.0.3", NULL, AT(0)), 20);
    assert_true(warmup_dirty(w));
    /* No list of its own, no schedule, no provider: nothing to count. */
    warmup_count_provider(w, "127.0.0.3", "yahoo", AT(0));
    warmup_count_provider(w, "127.0.0.3", NULL, AT(0));
    warmup_count_provider(w, "127.0.0.2", "gmail", AT(0));
    assert_int_equal(warmup_sent(w, "127.0.0.3", NULL, AT(0)), 20);
    assert_int_equal(warmup_sent(w, "127.0.0.3", "yahoo", AT(0)), 0);
    assert_int_equal(warmup_sent(w, "127.0.0.2", NULL, AT(0)), 0);
    warmup_free(w);
}

/* Before its start a source sends nothing; after the last step of a list
   that list caps nothing. */
static void test_start_and_end(void **state)
{
    WARMUP *w = test_warmup();

    (void) state;
    assert_int_equal(warmup_day(w, "127.0.0.4", AT(3)), -1);
    assert_int_equal(warmup_cap(w, "127.0.0.4", NULL, AT(3)), 0);
    assert_true(warmup_over_cap(w, "127.0.0.4", NULL, AT(3)));
    assert_int_equal(warmup_cap(w, "127.0.0.4", NULL, AT(4)), 10);
    assert_int_equal(warmup_cap(w, "127.0.0.4", NULL, AT(5)), -1);

    assert_int_equal(warmup_cap(w, "127.0.0.3", NULL, AT(3)), 500);
    assert_int_equal(warmup_cap(w, "127.0.0.3", "gmail", AT(3)), -1);
    assert_int_equal(warmup_cap(w, "127.0.0.3", NULL, AT(5)), 2000);
    assert_int_equal(warmup_cap(w, "127.0.0.3", NULL, AT(6)), -1);
    for (int i = 0; i < 5000; i++)
        warmup_count(w, "127.0.0.3", "gmail", AT(6));
    assert_false(warmup_over_cap(w, "127.0.0.3", "gmail", AT(6)));
    assert_int_equal(warmup_cap(w, "127.0.0.3", NULL, AT(400)), -1);
    warmup_free(w);
}

/* outcomes - n outcomes of source on day d */
static void outcomes(WARMUP *w, const char *source, REPUTATION_OUTCOME outcome,
                     int n, int d)
{
    for (int i = 0; i < n; i++)
        warmup_record(w, source, outcome, false, AT(d));
}

/* A day at half a threshold, or paused, holds the schedule back. */
static void test_held(void **state)
{
    WARMUP *w = test_warmup();
    const char *src = "127.0.0.3";

    (void) state;
    /* Day 0: 2 hard of 40 = 5%, half of 10%: held. */
    outcomes(w, src, REPUTATION_OK, 38, 0);
    outcomes(w, src, REPUTATION_HARD, 2, 0);
    assert_int_equal(warmup_day(w, src, AT(1)), 0);
    assert_int_equal(warmup_held(w, src, AT(1)), 1);
    assert_int_equal(warmup_cap(w, src, NULL, AT(1)), 50);
    /* Day 1: 1 hard of 40 = 2.5%: clean. */
    outcomes(w, src, REPUTATION_OK, 39, 1);
    outcomes(w, src, REPUTATION_HARD, 1, 1);
    assert_int_equal(warmup_day(w, src, AT(2)), 1);
    /* Day 2: 1 block of 40 = 2.5%, half of 5%: held. */
    outcomes(w, src, REPUTATION_OK, 39, 2);
    outcomes(w, src, REPUTATION_BLOCK, 1, 2);
    assert_int_equal(warmup_day(w, src, AT(3)), 1);
    /* Day 3: a late complaint on top of 40 clean attempts: held. */
    outcomes(w, src, REPUTATION_OK, 40, 3);
    warmup_record(w, src, REPUTATION_BLOCK, true, AT(3));
    assert_int_equal(warmup_day(w, src, AT(4)), 1);
    /* Day 4: paused a while: held. */
    outcomes(w, src, REPUTATION_OK, 40, 4);
    warmup_paused(w, src, AT(4));
    assert_int_equal(warmup_day(w, src, AT(5)), 1);
    /* Day 5: 5 hard of 5: too few attempts to say anything. */
    outcomes(w, src, REPUTATION_HARD, 5, 5);
    assert_int_equal(warmup_day(w, src, AT(6)), 2);
    assert_int_equal(warmup_held(w, src, AT(6)), 4);
    assert_int_equal(warmup_cap(w, src, NULL, AT(6)), 200);
    assert_int_equal(warmup_cap(w, src, "gmail", AT(6)), 80);
    /* Days with no traffic at all are clean. */
    assert_int_equal(warmup_day(w, src, AT(8)), 4);
    assert_int_equal(warmup_cap(w, src, NULL, AT(8)), 1000);
    /* A deferral (NONE) counts as nothing. */
    outcomes(w, src, REPUTATION_NONE, 100, 8);
    outcomes(w, src, REPUTATION_OK, 10, 8);
    assert_int_equal(warmup_day(w, src, AT(9)), 5);
    /* After the end of the schedule nothing is held any more. */
    assert_int_equal(warmup_day(w, src, AT(10)), 6);
    outcomes(w, src, REPUTATION_HARD, 40, 10);
    warmup_paused(w, src, AT(10));
    assert_int_equal(warmup_held(w, src, AT(11)), 4);
    assert_int_equal(warmup_cap(w, src, NULL, AT(11)), -1);
    warmup_free(w);
}

/* A clock that goes back keeps the latest day's counts and cap. */
static void test_clock_backwards(void **state)
{
    WARMUP *w = test_warmup();

    (void) state;
    for (int i = 0; i < 150; i++)
        warmup_count(w, "127.0.0.3", NULL, AT(2));
    assert_false(warmup_over_cap(w, "127.0.0.3", NULL, AT(2)));
    assert_int_equal(warmup_cap(w, "127.0.0.3", NULL, AT(1)), 200);
    assert_int_equal(warmup_sent(w, "127.0.0.3", NULL, AT(1)), 150);
    for (int i = 0; i < 50; i++)
        warmup_count(w, "127.0.0.3", NULL, AT(1));
    assert_true(warmup_over_cap(w, "127.0.0.3", NULL, AT(1)));
    assert_true(warmup_over_cap(w, "127.0.0.3", NULL, AT(2)));
    assert_int_equal(warmup_sent(w, "127.0.0.3", NULL, AT(2)), 200);
    assert_int_equal(warmup_held(w, "127.0.0.3", 0), 0);
    warmup_free(w);
}

/* The state file: what is written reads back the same; held days and
   today's counts survive a restart. */
static void test_round_trip(void **state)
{
    WARMUP *w = test_warmup();
    WARMUP *again = test_warmup();
    VSTR *text = vstr_alloc(100);
    VSTR *text2 = vstr_alloc(100);

    (void) state;
    outcomes(w, "127.0.0.3", REPUTATION_HARD, 20, 0);
    for (int i = 0; i < 7; i++)
        warmup_count(w, "127.0.0.3", "gmail", AT(1));
    warmup_count(w, "127.0.0.3", "yahoo", AT(1));
    outcomes(w, "127.0.0.3", REPUTATION_OK, 3, 1);
    warmup_record(w, "127.0.0.3", REPUTATION_BLOCK, true, AT(1));
    warmup_paused(w, "127.0.0.4", AT(1));
    assert_true(warmup_dirty(w));
    warmup_format(w, text);
    assert_string_equal(vstr_str(text), "sluice-warmup 1\n"
                                        "127.0.0.3 20789 1 0 3 0 1 8 gmail=7\n"
                                        "127.0.0.4 20789 0 1 0 0 0 0\n");
    assert_int_equal(warmup_parse(again, vstr_str(text), vstr_len(text), "t"),
                     0);
    assert_false(warmup_dirty(again));
    warmup_format(again, text2);
    assert_string_equal(vstr_str(text2), vstr_str(text));
    assert_int_equal(warmup_day(again, "127.0.0.3", AT(1)), 0);
    assert_int_equal(warmup_sent(again, "127.0.0.3", "gmail", AT(1)), 7);
    assert_int_equal(warmup_cap(again, "127.0.0.3", "gmail", AT(1)), 20);
    /* A pause before the start holds nothing. */
    assert_int_equal(warmup_day(again, "127.0.0.4", AT(4)), 0);
    assert_int_equal(warmup_held(again, "127.0.0.4", AT(4)), 0);
    vstr_free(text);
    vstr_free(text2);
    warmup_free(w);
    warmup_free(again);
}

static void test_save_load(void **state)
{
    char dir[] = "/tmp/warmup_test.XXXXXX";
    char path[100];
    WARMUP *w = test_warmup();
    WARMUP *again = test_warmup();
    VSTR *why = vstr_alloc(100);

    (void) state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/warmup", dir);
    assert_int_equal(warmup_load(again, path, why), 0);
    warmup_count(w, "127.0.0.3", "gmail", AT(0));
    assert_int_equal(warmup_save(w, path, why), 0);
    assert_false(warmup_dirty(w));
    assert_int_equal(warmup_load(again, path, why), 0);
    assert_int_equal(warmup_sent(again, "127.0.0.3", "gmail", AT(0)), 1);
    snprintf(path, sizeof(path), "%s/gone/warmup", dir);
    assert_int_equal(warmup_save(w, path, why), -1);
    assert_non_null(strstr(vstr_str(why), "gone/warmup"));
    snprintf(path, sizeof(path), "%s/warmup", dir);
    unlink(path);
    rmdir(dir);
    vstr_free(why);
    warmup_free(w);
    warmup_free(again);
}

static void test_corrupt(void **state)
{
    static const char text[] = "sluice-warmup 1\n"
                               "127.0.0.3 20789 1 0 3 0 1 8 gmail=7\n"
                               "a 20789 1 0 3 0 1\n"
                               "b 20789 1 2 3 0 1 8\n"
                               "c 20789 1 0 3 0 1 8 gmail\n"
                               "d 20789 1 0 3 0 1 8 Gmail=1\n"
                               "e 20789 1 0 3 0 1 8 gmail=1 gmail=2\n"
                               "f 99999999 1 0 3 0 1 8\n"
                               "g 20789 1 0 3 0 1 -8\n"
                               "h 20789  1 0 3 0 1 8\n"
                               "i 20789 1 0 3 0 1 8 \n"
                               "j 20789 1 0 3 0 1 99999999999999999\n"
                               "\n"
                               "127.0.0.4 20789 0 1 0 0 0 0\n"
                               "k 20789 1 0 3 0 1 8";
    WARMUP *w = test_warmup();
    VSTR *out = vstr_alloc(100);

    (void) state;
    assert_int_equal(warmup_parse(w, text, strlen(text), "t"), 12);
    warmup_format(w, out);
    assert_string_equal(vstr_str(out), "sluice-warmup 1\n"
                                       "127.0.0.3 20789 1 0 3 0 1 8 gmail=7\n"
                                       "127.0.0.4 20789 0 1 0 0 0 0\n");
    warmup_free(w);
    w = test_warmup();
    assert_int_equal(
        warmup_parse(w, "sluice-warmup 9\n127.0.0.3 20789 1 0 3 0 1 8\n",
                     strlen("sluice-warmup 9\n127.0.0.3 20789 1 0 3 0 1 8\n"),
                     "t"),
        1);
    assert_int_equal(warmup_held(w, "127.0.0.3", AT(1)), 0);
    assert_int_equal(warmup_parse(w, "", 0, "t"), 1);
    vstr_free(out);
    warmup_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_rule_parse),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_start_and_end),
        cmocka_unit_test(test_held),
        cmocka_unit_test(test_clock_backwards),
        cmocka_unit_test(test_count_provider),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_corrupt),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
