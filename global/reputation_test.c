/*
 * reputation_test - unit tests of the reputation circuit breaker: the
 * reply classifier on real provider replies, the window (expiry, minimum
 * attempts, both ratios), pause -> probe -> resume, a failed probe and its
 * doubled (capped) pause, the last usable source, the operator's pause,
 * asynchronous bounces, a clock that goes backwards, and the state file
 * (round trip, a real file, corrupt input). Times are exact seconds.
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <stdlib.h>
#include <cmocka.h>

#include "mymalloc.h"
#include "reputation.h"
#include "vstr.h"

#define T0 1800000000LL /* a round time: buckets of 10s start on it */

/* test_conf - window 600s (10s buckets), 10 attempts, 10% and 5%, pause
   100s (cap 350s), probes 1/m, 4 clean answers to resume */
static REPUTATION *test_rep(void)
{
    REPUTATION_CONF conf;
    VSTR *why = vstr_alloc(100);

    assert_int_equal(reputation_conf_parse(&conf, "10m", 10, "10%", "0.05",
                                           "100s", "1/m", 4, why),
                     0);
    conf.max_pause_time = 350;
    vstr_free(why);
    return reputation_alloc(&conf);
}

/* record - n outcomes of key at when (= now), not the last source */
static REPUTATION_VERDICT record(REPUTATION *rep, const char *key,
                                 REPUTATION_OUTCOME outcome, int n,
                                 long long when)
{
    VSTR *why = vstr_alloc(100);
    REPUTATION_VERDICT verdict = REPUTATION_NOTHING;

    for (int i = 0; i < n; i++) {
        verdict =
            reputation_record(rep, key, outcome, false, when, when, false, why);
        if (verdict != REPUTATION_NOTHING && i < n - 1)
            fail_msg("verdict %d after %d of %d: %s", (int) verdict, i + 1, n,
                     vstr_str(why));
    }
    vstr_free(why);
    return verdict;
}

/* Replies as providers send them (research notes 1.2, 3.2, 7.3). */
static void test_classify(void **state)
{
    static const struct {
        int code;
        const char *dsn;
        const char *text;
        REPUTATION_OUTCOME want;
    } cases[] = {
        {250, "2.0.0", "OK 1700000000 x1si.42 - gsmtp", REPUTATION_OK},
        {550, "5.7.1",
         "[192.0.2.3] Our system has detected that this message is likely "
         "unsolicited mail. To reduce the amount of spam sent to Gmail, this "
         "message has been blocked.",
         REPUTATION_BLOCK},
        {421, "4.7.28",
         "[192.0.2.3] Our system has detected an unusual rate of unsolicited "
         "mail originating from your IP address.",
         REPUTATION_BLOCK},
        {421, "4.7.0",
         "[TSS04] Messages from 192.0.2.3 temporarily deferred due to "
         "unexpected volume or user complaints - 4.16.55.1",
         REPUTATION_BLOCK},
        {421, NULL,
         "[TS04] Messages from 192.0.2.3 temporarily deferred due to user "
         "complaints",
         REPUTATION_BLOCK},
        {554, "5.7.9", "Message not accepted for policy reasons.",
         REPUTATION_BLOCK},
        {550, "5.7.1",
         "Unfortunately, messages from [192.0.2.3] weren't sent. Please "
         "contact your Internet service provider since part of their network "
         "is on our block list (S3150).",
         REPUTATION_BLOCK},
        {554, "5.7.1",
         "Service unavailable; Client host [192.0.2.3] blocked using "
         "zen.spamhaus.org",
         REPUTATION_BLOCK},
        {554, NULL,
         "resimta-h1p-028598.sys.comcast.net comcast 192.0.2.3 found on one "
         "or more DNSBLs, see http://postmaster.comcast.net/smtp-error-"
         "codes.php#BL000001",
         REPUTATION_BLOCK},
        {450, NULL, "RL0000 too many messages, slow down", REPUTATION_BLOCK},
        {421, NULL,
         "192.0.2.3 has been temporarily rate limited due to IP reputation",
         REPUTATION_BLOCK},
        {554, "5.7.1", "[CS01] Message rejected due to local policy.",
         REPUTATION_BLOCK},
        {451, "4.7.1", "Please try again later", REPUTATION_BLOCK},
        {550, "5.1.1",
         "The email account that you tried to reach does not exist. Please "
         "try double-checking the recipient's email address for typos",
         REPUTATION_HARD},
        {550, "5.1.1",
         "<nobody@example.test>: Recipient address rejected: User unknown in "
         "virtual mailbox table",
         REPUTATION_HARD},
        {550, "5.2.1", "The email account that you tried to reach is disabled.",
         REPUTATION_HARD},
        {550, NULL, "Requested action not taken: mailbox unavailable",
         REPUTATION_HARD},
        {550, "5.5.0",
         "Requested action not taken: mailbox unavailable (S2017)",
         REPUTATION_HARD},
        {552, "5.2.2",
         "The email account that you tried to reach is over quota.",
         REPUTATION_OK},
        {552, "5.3.4", "Message size exceeds fixed limit", REPUTATION_OK},
        {452, "4.2.2",
         "The email account that you tried to reach is over quota.",
         REPUTATION_NONE},
        {450, "4.7.1",
         "<a@example.test>: Recipient address rejected: Greylisted, see "
         "http://postgrey.schweikert.ch/help/example.test.html",
         REPUTATION_NONE},
        {451, "4.7.1", "Greylisting in action, please come back later",
         REPUTATION_NONE},
        {454, "4.7.0", "TLS not available due to local problem",
         REPUTATION_NONE},
        {550, "5.7.26",
         "Unauthenticated email from example.test is not accepted due to "
         "domain's DMARC policy.",
         REPUTATION_OK},
        {421, "4.4.2", "example.test Error: timeout exceeded", REPUTATION_NONE},
        {0, NULL, "connect to 192.0.2.9[192.0.2.9]:25: Connection refused",
         REPUTATION_NONE},
        {550, "5.7.1", NULL, REPUTATION_BLOCK},
        {550, NULL, NULL, REPUTATION_HARD},
        {999, NULL, "nonsense", REPUTATION_NONE},
    };

    (void) state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        REPUTATION_OUTCOME got =
            reputation_classify(cases[i].code, cases[i].dsn, cases[i].text);

        if (got != cases[i].want)
            fail_msg("case %zu (%d %s %s): got %d, want %d", i, cases[i].code,
                     cases[i].dsn ? cases[i].dsn : "-",
                     cases[i].text ? cases[i].text : "-", (int) got,
                     (int) cases[i].want);
    }
    assert_int_equal(reputation_classify_diagnostic(
                         "smtp; 550 5.7.1 Service unavailable; Client host "
                         "[192.0.2.3] blocked using zen.spamhaus.org"),
                     REPUTATION_BLOCK);
    assert_int_equal(reputation_classify_diagnostic(
                         "smtp; 550 5.1.1 <x@example.test>: user unknown"),
                     REPUTATION_HARD);
    assert_int_equal(reputation_classify_diagnostic("smtp; 250 2.0.0 Ok"),
                     REPUTATION_OK);
    assert_int_equal(reputation_classify_diagnostic(
                         "connect to example.test: Connection refused"),
                     REPUTATION_NONE);
    assert_int_equal(reputation_classify_diagnostic(NULL), REPUTATION_NONE);
}

static void test_conf_parse(void **state)
{
    REPUTATION_CONF conf;
    VSTR *why = vstr_alloc(100);
    double ratio;

    (void) state;
    assert_int_equal(reputation_conf_parse(&conf, "1h", 100, "10%", "5%", "1h",
                                           "1/m", 20, why),
                     0);
    assert_int_equal(conf.window, 3600);
    assert_int_equal(conf.pause_time, 3600);
    assert_int_equal(conf.max_pause_time, REPUTATION_MAX_PAUSE);
    assert_true(conf.hard_ratio > 0.0999 && conf.hard_ratio < 0.1001);
    assert_true(conf.block_ratio > 0.0499 && conf.block_ratio < 0.0501);
    assert_int_equal(conf.probe_rate.count, 1);
    assert_int_equal(reputation_ratio_parse("2.5%", &ratio, why), 0);
    assert_true(ratio > 0.0249 && ratio < 0.0251);
    assert_int_equal(reputation_ratio_parse("1", &ratio, why), 0);
    assert_int_equal(reputation_ratio_parse("0%", &ratio, why), -1);
    assert_int_equal(reputation_ratio_parse("101%", &ratio, why), -1);
    assert_int_equal(reputation_ratio_parse("-5%", &ratio, why), -1);
    assert_int_equal(reputation_ratio_parse("10%%", &ratio, why), -1);
    assert_int_equal(reputation_ratio_parse("ten", &ratio, why), -1);
    assert_int_equal(reputation_ratio_parse("", &ratio, why), -1);
    assert_int_equal(reputation_conf_parse(&conf, "1h", 100, "10", "5%", "1h",
                                           "1/m", 20, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "reputation_hard_bounce_ratio"));
    assert_int_equal(reputation_conf_parse(&conf, "0s", 100, "10%", "5%", "1h",
                                           "1/m", 20, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "reputation_window"));
    assert_int_equal(reputation_conf_parse(&conf, "1h", 100, "10%", "5%", "1h",
                                           "1/week", 20, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "reputation_probe_rate"));
    assert_int_equal(reputation_conf_parse(&conf, "1h", 0, "10%", "5%", "1h",
                                           "1/m", 20, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "reputation_min_attempts"));
    assert_int_equal(reputation_conf_parse(&conf, "1h", 100, "10%", "5%", "2d",
                                           "1/m", 20, why),
                     0);
    assert_int_equal(conf.max_pause_time, 2 * 86400); /* never below */
    vstr_free(why);
}

/* Below min_attempts nothing pauses, however bad; at it, the ratio counts
   with >= (exactly 10% pauses). */
static void test_min_attempts(void **state)
{
    REPUTATION *rep = test_rep();

    (void) state;
    assert_int_equal(record(rep, "a", REPUTATION_HARD, 9, T0),
                     REPUTATION_NOTHING);
    assert_int_equal(reputation_state(rep, "a", NULL), REPUTATION_ACTIVE);
    assert_int_equal(record(rep, "a", REPUTATION_OK, 1, T0),
                     REPUTATION_PAUSED_NOW);

    assert_int_equal(record(rep, "b", REPUTATION_OK, 9, T0), 0);
    assert_int_equal(record(rep, "b", REPUTATION_HARD, 1, T0),
                     REPUTATION_PAUSED_NOW);

    assert_int_equal(record(rep, "c", REPUTATION_OK, 90, T0), 0);
    assert_int_equal(record(rep, "c", REPUTATION_HARD, 9, T0),
                     REPUTATION_NOTHING); /* 9/99 */
    assert_int_equal(record(rep, "c", REPUTATION_HARD, 1, T0),
                     REPUTATION_PAUSED_NOW); /* 10/100 */
    reputation_free(rep);
}

static void test_block_ratio(void **state)
{
    REPUTATION *rep = test_rep();
    VSTR *why = vstr_alloc(100);
    long long until;

    (void) state;
    assert_int_equal(record(rep, "s/gmail", REPUTATION_OK, 19, T0), 0);
    assert_int_equal(reputation_record(rep, "s/gmail", REPUTATION_BLOCK, false,
                                       T0 + 5, T0 + 5, false, why),
                     REPUTATION_PAUSED_NOW);
    assert_string_equal(vstr_str(why), "source s/gmail paused for 100s: block "
                                       "5.0% (1/20) >= 5.0%");
    assert_int_equal(reputation_state(rep, "s/gmail", &until),
                     REPUTATION_PAUSED);
    assert_int_equal(until, T0 + 105);
    /* The other key of the same source is another window. */
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_ACTIVE);
    assert_true(reputation_usable(rep, "s", T0 + 5, NULL));
    vstr_free(why);
    reputation_free(rep);
}

/* Outcomes older than the window stop counting, bucket by bucket. */
static void test_window_expiry(void **state)
{
    REPUTATION *rep = test_rep();
    long long attempts, hard, block;

    (void) state;
    /* Before T0 left the window, 5 of 10 pauses. */
    assert_int_equal(record(rep, "b", REPUTATION_HARD, 5, T0), 0);
    assert_int_equal(record(rep, "b", REPUTATION_OK, 4, T0 + 300), 0);
    assert_int_equal(record(rep, "b", REPUTATION_OK, 1, T0 + 599),
                     REPUTATION_PAUSED_NOW);
    assert_int_equal(record(rep, "a", REPUTATION_HARD, 5, T0), 0);
    assert_int_equal(record(rep, "a", REPUTATION_OK, 4, T0 + 300), 0);
    reputation_counts(rep, "a", T0 + 599, &attempts, &hard, &block);
    assert_int_equal(attempts, 9);
    assert_int_equal(hard, 5);
    reputation_counts(rep, "a", T0 + 600, &attempts, &hard, &block);
    assert_int_equal(attempts, 4); /* T0's bucket is out */
    assert_int_equal(hard, 0);
    /* So the 10th attempt, after T0 left the window, pauses nothing. */
    assert_int_equal(record(rep, "a", REPUTATION_OK, 6, T0 + 600), 0);
    assert_int_equal(reputation_state(rep, "a", NULL), REPUTATION_ACTIVE);
    /* An idle key is forgotten by the tick; memory stays bounded. */
    assert_int_equal(reputation_count(rep), 2);
    reputation_counts(rep, "a", T0 + 2000, &attempts, &hard, &block);
    assert_int_equal(attempts, 0);
    assert_int_equal(reputation_tick(rep, T0 + 2000, NULL, NULL), 1); /* b */
    assert_int_equal(reputation_count(rep), 1);
    assert_int_equal(reputation_state(rep, "b", NULL), REPUTATION_PROBING);
    reputation_free(rep);
}

typedef struct TICKS {
    int count;
    char key[64];
} TICKS;

static void tick_fn(void *ctx, const char *key, REPUTATION_STATE from,
                    REPUTATION_STATE to)
{
    TICKS *ticks = ctx;

    assert_int_equal(from, REPUTATION_PAUSED);
    assert_int_equal(to, REPUTATION_PROBING);
    ticks->count++;
    snprintf(ticks->key, sizeof(ticks->key), "%s", key);
}

/* PAUSED for pause_time, then probes at 1/m, then ACTIVE after 4 clean
   answers, with the window cleared. */
static void test_pause_probe_resume(void **state)
{
    REPUTATION *rep = test_rep();
    VSTR *why = vstr_alloc(100);
    TICKS ticks = {0, ""};
    long long wait, attempts, hard, block;

    (void) state;
    assert_int_equal(record(rep, "s", REPUTATION_HARD, 10, T0),
                     REPUTATION_PAUSED_NOW);
    assert_true(reputation_dirty(rep));
    assert_false(reputation_usable(rep, "s", T0 + 40, &wait));
    assert_int_equal(wait, 60);
    /* Outcomes of deliveries still under way count, but decide nothing. */
    assert_int_equal(record(rep, "s", REPUTATION_HARD, 3, T0 + 50), 0);
    assert_int_equal(reputation_tick(rep, T0 + 99, tick_fn, &ticks), 0);
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_PAUSED);
    assert_int_equal(reputation_tick(rep, T0 + 100, tick_fn, &ticks), 1);
    assert_int_equal(ticks.count, 1);
    assert_string_equal(ticks.key, "s");
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_PROBING);

    /* One probe per minute. */
    assert_true(reputation_usable(rep, "s", T0 + 100, &wait));
    reputation_started(rep, "s", T0 + 100);
    assert_false(reputation_usable(rep, "s", T0 + 130, &wait));
    assert_int_equal(wait, 30);
    assert_true(reputation_usable(rep, "s", T0 + 160, NULL));
    reputation_started(rep, "s", T0 + 160);

    assert_int_equal(record(rep, "s", REPUTATION_OK, 3, T0 + 170), 0);
    assert_int_equal(reputation_record(rep, "s", REPUTATION_OK, false, T0 + 280,
                                       T0 + 280, false, why),
                     REPUTATION_RESUMED);
    assert_non_null(strstr(vstr_str(why), "source s resumed"));
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_ACTIVE);
    reputation_counts(rep, "s", T0 + 280, &attempts, &hard, &block);
    assert_int_equal(attempts, 0); /* the spike does not pause it again */
    assert_true(reputation_usable(rep, "s", T0 + 281, NULL));
    vstr_free(why);
    reputation_free(rep);
}

/* A failed probe pauses again for twice as long, up to the cap; a
   deferral (NONE) is no probe answer. */
static void test_probe_failure(void **state)
{
    REPUTATION *rep = test_rep();
    VSTR *why = vstr_alloc(100);
    long long until;

    (void) state;
    assert_int_equal(record(rep, "s", REPUTATION_BLOCK, 10, T0),
                     REPUTATION_PAUSED_NOW);
    reputation_tick(rep, T0 + 100, NULL, NULL);
    assert_int_equal(record(rep, "s", REPUTATION_NONE, 5, T0 + 101), 0);
    assert_int_equal(record(rep, "s", REPUTATION_OK, 2, T0 + 110), 0);
    assert_int_equal(reputation_record(rep, "s", REPUTATION_HARD, false,
                                       T0 + 120, T0 + 120, false, why),
                     REPUTATION_REPAUSED);
    assert_non_null(strstr(vstr_str(why), "paused again for 200s"));
    assert_int_equal(reputation_state(rep, "s", &until), REPUTATION_PAUSED);
    assert_int_equal(until, T0 + 320);

    reputation_tick(rep, T0 + 320, NULL, NULL);
    assert_int_equal(record(rep, "s", REPUTATION_BLOCK, 1, T0 + 330),
                     REPUTATION_REPAUSED);
    assert_int_equal(reputation_state(rep, "s", &until), REPUTATION_PAUSED);
    assert_int_equal(until, T0 + 330 + 350); /* 400 capped at 350 */

    /* An asynchronous bounce of a probe fails it too. */
    reputation_tick(rep, T0 + 680, NULL, NULL);
    assert_int_equal(record(rep, "s", REPUTATION_OK, 1, T0 + 690), 0);
    assert_int_equal(reputation_record(rep, "s", REPUTATION_HARD, true,
                                       T0 + 695, T0 + 700, false, why),
                     REPUTATION_REPAUSED);
    vstr_free(why);
    reputation_free(rep);
}

/* The last usable source is not paused: a distinct verdict, once per
   window, and the key stays usable. */
static void test_last_source(void **state)
{
    REPUTATION *rep = test_rep();
    VSTR *why = vstr_alloc(100);

    (void) state;
    assert_int_equal(record(rep, "s", REPUTATION_OK, 8, T0), 0);
    assert_int_equal(
        reputation_record(rep, "s", REPUTATION_HARD, false, T0, T0, true, why),
        REPUTATION_NOTHING);
    assert_int_equal(
        reputation_record(rep, "s", REPUTATION_HARD, false, T0, T0, true, why),
        REPUTATION_HELD_LAST);
    assert_non_null(strstr(vstr_str(why), "NOT paused"));
    assert_non_null(strstr(vstr_str(why), "hard-bounce 20.0% (2/10)"));
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_ACTIVE);
    assert_true(reputation_usable(rep, "s", T0, NULL));
    assert_false(reputation_dirty(rep));
    /* Not again within the window... */
    assert_int_equal(reputation_record(rep, "s", REPUTATION_HARD, false,
                                       T0 + 10, T0 + 10, true, why),
                     REPUTATION_NOTHING);
    /* ... but when another source is back, the pause is taken. */
    assert_int_equal(reputation_record(rep, "s", REPUTATION_HARD, false,
                                       T0 + 20, T0 + 20, false, why),
                     REPUTATION_PAUSED_NOW);
    vstr_free(why);
    reputation_free(rep);
}

typedef struct SEEN {
    int keys;
    long long until;
    long long attempts;
} SEEN;

static void each_fn(void *ctx, const char *key, REPUTATION_STATE state,
                    long long until, long long attempts, long long hard,
                    long long block)
{
    SEEN *seen = ctx;

    seen->keys++;
    if (strcmp(key, "p") == 0) {
        assert_int_equal(state, REPUTATION_PAUSED);
        seen->until = until;
        seen->attempts = attempts;
        assert_int_equal(hard, 10);
        assert_int_equal(block, 0);
    }
}

/* What sluice pool would list: every key, its state and its window. */
static void test_each(void **state)
{
    REPUTATION *rep = test_rep();
    SEEN seen = {0, 0, 0};

    (void) state;
    assert_int_equal(record(rep, "p", REPUTATION_HARD, 10, T0),
                     REPUTATION_PAUSED_NOW);
    assert_int_equal(record(rep, "q", REPUTATION_OK, 3, T0), 0);
    reputation_each(rep, T0 + 1, each_fn, &seen);
    assert_int_equal(seen.keys, 2);
    assert_int_equal(seen.until, T0 + 100);
    assert_int_equal(seen.attempts, 10);
    reputation_free(rep);
}

/* The operator's pause has no end of its own; resume clears everything. */
static void test_manual(void **state)
{
    REPUTATION *rep = test_rep();
    long long wait;

    (void) state;
    reputation_pause(rep, "s", T0);
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_MANUAL);
    assert_false(reputation_usable(rep, "s", T0, &wait));
    assert_int_equal(wait, -1);
    assert_int_equal(reputation_tick(rep, T0 + 10 * 86400, NULL, NULL), 0);
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_MANUAL);
    /* A spike while paused by hand decides nothing. */
    assert_int_equal(record(rep, "s", REPUTATION_HARD, 20, T0 + 10 * 86400), 0);
    reputation_resume(rep, "s", T0 + 10 * 86400);
    assert_int_equal(reputation_state(rep, "s", NULL), REPUTATION_ACTIVE);
    assert_true(reputation_usable(rep, "s", T0 + 10 * 86400, NULL));
    /* Resume also ends an automatic pause. */
    assert_int_equal(record(rep, "t", REPUTATION_HARD, 10, T0 + 10 * 86400),
                     REPUTATION_PAUSED_NOW);
    reputation_resume(rep, "t", T0 + 10 * 86400 + 1);
    assert_true(reputation_usable(rep, "t", T0 + 10 * 86400 + 1, NULL));
    /* A manual pause of a paused key holds after its until passes. */
    assert_int_equal(record(rep, "u", REPUTATION_HARD, 10, T0 + 10 * 86400),
                     REPUTATION_PAUSED_NOW);
    reputation_pause(rep, "u", T0 + 10 * 86400);
    reputation_tick(rep, T0 + 11 * 86400, NULL, NULL);
    assert_int_equal(reputation_state(rep, "u", NULL), REPUTATION_MANUAL);
    reputation_free(rep);
}

/* Late bounces count with their own time, add no attempt, and an
   asynchronous success is nothing. */
static void test_async(void **state)
{
    REPUTATION *rep = test_rep();
    VSTR *why = vstr_alloc(100);
    long long attempts, hard, block;

    (void) state;
    assert_int_equal(record(rep, "s", REPUTATION_OK, 20, T0), 0);
    assert_int_equal(
        reputation_record(rep, "s", REPUTATION_OK, true, T0, T0, false, why),
        0);
    assert_int_equal(reputation_record(rep, "s", REPUTATION_HARD, true,
                                       T0 - 700, T0 + 100, false, why),
                     0); /* older than the window: ignored */
    assert_int_equal(reputation_record(rep, "s", REPUTATION_BLOCK, true,
                                       T0 + 50, T0 + 100, false, why),
                     REPUTATION_PAUSED_NOW); /* 1/20 */
    reputation_counts(rep, "s", T0 + 100, &attempts, &hard, &block);
    assert_int_equal(attempts, 20);
    assert_int_equal(hard, 0);
    assert_int_equal(block, 1);
    vstr_free(why);
    reputation_free(rep);
}

/* A clock that goes back neither forgets the window nor lengthens a
   pause; a time in the future counts as now. */
static void test_clock_backwards(void **state)
{
    REPUTATION *rep = test_rep();
    long long attempts, hard, block, wait;

    (void) state;
    assert_int_equal(record(rep, "s", REPUTATION_HARD, 5, T0 + 1000), 0);
    reputation_counts(rep, "s", T0 + 900, &attempts, &hard, &block);
    assert_int_equal(attempts, 5);
    assert_int_equal(record(rep, "s", REPUTATION_OK, 4, T0 + 900), 0);
    reputation_counts(rep, "s", T0 + 900, &attempts, &hard, &block);
    assert_int_equal(attempts, 9);
    assert_int_equal(record(rep, "s", REPUTATION_OK, 1, T0 + 800),
                     REPUTATION_PAUSED_NOW);
    assert_false(reputation_usable(rep, "s", T0 + 900, &wait));
    assert_int_equal(wait, 100); /* until T0+1100, not T0+1000 */
    assert_int_equal(reputation_tick(rep, T0 + 1099, NULL, NULL), 0);
    assert_int_equal(reputation_tick(rep, T0 + 1100, NULL, NULL), 1);
    /* The future: counted at now. */
    assert_int_equal(record(rep, "f", REPUTATION_OK, 1, T0 + 1100), 0);
    {
        VSTR *why = vstr_alloc(10);

        assert_int_equal(reputation_record(rep, "f", REPUTATION_OK, false,
                                           T0 + 99999, T0 + 1100, false, why),
                         0);
        vstr_free(why);
    }
    reputation_counts(rep, "f", T0 + 1100, &attempts, &hard, &block);
    assert_int_equal(attempts, 2);
    reputation_free(rep);
}

/* The state file: written, read back the same, after a restart. */
static void test_round_trip(void **state)
{
    REPUTATION *rep = test_rep();
    REPUTATION *again = test_rep();
    VSTR *text = vstr_alloc(100);
    VSTR *text2 = vstr_alloc(100);
    long long until;

    (void) state;
    assert_int_equal(record(rep, "127.0.0.3", REPUTATION_HARD, 10, T0),
                     REPUTATION_PAUSED_NOW);
    assert_int_equal(record(rep, "127.0.0.2/gmail", REPUTATION_HARD, 10, T0),
                     REPUTATION_PAUSED_NOW);
    reputation_tick(rep, T0 + 100, NULL, NULL); /* both probing */
    assert_int_equal(
        record(rep, "127.0.0.2/gmail", REPUTATION_HARD, 1, T0 + 100),
        REPUTATION_REPAUSED);
    reputation_pause(rep, "[::1]", T0 + 100);
    assert_int_equal(record(rep, "127.0.0.4", REPUTATION_OK, 10, T0 + 100), 0);
    reputation_format(rep, text);
    assert_string_equal(vstr_str(text), "sluice-reputation 1\n"
                                        "127.0.0.2/gmail paused 1800000300 200 "
                                        "0\n"
                                        "127.0.0.3 probing 0 100 0\n"
                                        "[::1] paused 0 0 1\n");
    assert_int_equal(reputation_parse(again, vstr_str(text), vstr_len(text),
                                      "test", T0 + 200),
                     0);
    assert_false(reputation_dirty(again));
    reputation_format(again, text2);
    assert_string_equal(vstr_str(text2), vstr_str(text));
    assert_int_equal(reputation_state(again, "127.0.0.2/gmail", &until),
                     REPUTATION_PAUSED);
    assert_int_equal(until, T0 + 300);
    assert_int_equal(reputation_state(again, "127.0.0.3", NULL),
                     REPUTATION_PROBING);
    assert_true(reputation_usable(again, "127.0.0.3", T0 + 200, NULL));
    assert_int_equal(reputation_state(again, "[::1]", NULL), REPUTATION_MANUAL);
    assert_int_equal(reputation_state(again, "127.0.0.4", NULL),
                     REPUTATION_ACTIVE);
    /* The doubled pause goes on doubling after the restart. */
    reputation_tick(again, T0 + 300, NULL, NULL);
    assert_int_equal(
        record(again, "127.0.0.2/gmail", REPUTATION_BLOCK, 1, T0 + 301),
        REPUTATION_REPAUSED);
    assert_int_equal(reputation_state(again, "127.0.0.2/gmail", &until),
                     REPUTATION_PAUSED);
    assert_int_equal(until, T0 + 301 + 350);
    vstr_free(text);
    vstr_free(text2);
    reputation_free(rep);
    reputation_free(again);
}

/* A real file through safe_file_write; a missing one is empty. */
static void test_save_load(void **state)
{
    char dir[] = "/tmp/reputation_test.XXXXXX";
    char path[100];
    REPUTATION *rep = test_rep();
    REPUTATION *again = test_rep();
    VSTR *why = vstr_alloc(100);

    (void) state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/reputation", dir);
    assert_int_equal(reputation_load(again, path, T0, why), 0);
    reputation_pause(rep, "127.0.0.9", T0);
    assert_true(reputation_dirty(rep));
    assert_int_equal(reputation_save(rep, path, why), 0);
    assert_false(reputation_dirty(rep));
    assert_int_equal(reputation_load(again, path, T0, why), 0);
    assert_int_equal(reputation_state(again, "127.0.0.9", NULL),
                     REPUTATION_MANUAL);
    /* A directory that is gone: an error, not a crash. */
    snprintf(path, sizeof(path), "%s/no/such/reputation", dir);
    assert_int_equal(reputation_save(rep, path, why), -1);
    assert_non_null(strstr(vstr_str(why), "no/such"));
    snprintf(path, sizeof(path), "%s/reputation", dir);
    unlink(path);
    rmdir(dir);
    vstr_free(why);
    reputation_free(rep);
    reputation_free(again);
}

/* Each bad line is skipped and counted; the good ones are kept. */
static void test_corrupt(void **state)
{
    static const char text[] = "sluice-reputation 1\n"
                               "good1 paused 1800000100 100 0\n"
                               "bad1 paused 1800000100 100\n"
                               "bad2 paused 0 100 0\n"
                               "bad3 paused 5 0 0\n"
                               "bad4 sleeping 0 0 0\n"
                               "bad5 probing 7 100 0\n"
                               "bad6 paused 7 100 2\n"
                               "bad7  paused 7 100 0\n"
                               "bad8 paused 7 100 0 \n"
                               "bad9 paused 12345678901234567890 100 0\n"
                               "bad10 paused 7 -100 0\n"
                               "bad11 paused 5 99999999 0\n"
                               " lead paused 5 100 0\n"
                               "\n"
                               "bad12 paused 0 100 1 extra\n"
                               "good2 probing 0 0 0\n"
                               "bad13 paused 0x10 100 0\n"
                               "good3 paused 0 0 1\n"
                               "last paused 1800000100 100 0";
    REPUTATION *rep = test_rep();
    VSTR *text2 = vstr_alloc(100);
    static const char nul[] = "sluice-reputation 1\nx paused 0 0 1\0\n";

    (void) state;
    assert_int_equal(reputation_parse(rep, text, strlen(text), "test", T0), 16);
    reputation_format(rep, text2);
    assert_string_equal(vstr_str(text2), "sluice-reputation 1\n"
                                         "good1 paused 1800000100 100 0\n"
                                         "good2 probing 0 0 0\n"
                                         "good3 paused 0 0 1\n");
    reputation_free(rep);

    /* A pause until the year 2100 lasts max_pause_time from now. */
    rep = test_rep();
    assert_int_equal(reputation_parse(rep,
                                      "sluice-reputation 1\n"
                                      "far paused 4102444800 100 0\n",
                                      strlen("sluice-reputation 1\n"
                                             "far paused 4102444800 100 0\n"),
                                      "test", T0),
                     0);
    {
        long long until;

        assert_int_equal(reputation_state(rep, "far", &until),
                         REPUTATION_PAUSED);
        assert_int_equal(until, T0 + 350);
    }
    reputation_free(rep);

    rep = test_rep();
    assert_int_equal(reputation_parse(rep,
                                      "sluice-reputation 2\n"
                                      "a paused 0 0 1\n",
                                      strlen("sluice-reputation 2\n"
                                             "a paused 0 0 1\n"),
                                      "test", T0),
                     1);
    assert_int_equal(reputation_state(rep, "a", NULL), REPUTATION_ACTIVE);
    assert_int_equal(reputation_parse(rep, "", 0, "test", T0), 1);
    assert_int_equal(reputation_parse(rep, nul, sizeof(nul) - 1, "test", T0),
                     1);
    assert_int_equal(reputation_state(rep, "x", NULL), REPUTATION_ACTIVE);
    vstr_free(text2);
    reputation_free(rep);
}

/* test_shared - a pause as another node shares it: the value round
   trip, taken once (a second time changes nothing), a bad value changes
   nothing, an automatic pause keeps its end and ends by itself */
static void test_shared(void **state)
{
    REPUTATION *a = test_rep();
    REPUTATION *b = test_rep();
    VSTR *value = vstr_alloc(50);
    VSTR *why = vstr_alloc(100);
    long long until;

    assert_false(reputation_shared_value(a, "127.0.0.3", value));
    reputation_pause(a, "127.0.0.3", T0);
    assert_true(reputation_shared_value(a, "127.0.0.3", value));
    assert_string_equal(vstr_str(value), "paused 0 0 1");
    assert_int_equal(
        reputation_apply_shared(b, "127.0.0.3", vstr_str(value), T0, why), 1);
    assert_int_equal(reputation_state(b, "127.0.0.3", NULL), REPUTATION_MANUAL);
    assert_true(reputation_dirty(b));
    assert_int_equal(
        reputation_apply_shared(b, "127.0.0.3", vstr_str(value), T0, why), 0);
    /* an automatic pause of a source and provider, with its end */
    assert_int_equal(reputation_apply_shared(b, "127.0.0.2/gmail",
                                             "paused 1800000100 100 0", T0,
                                             why),
                     1);
    assert_int_equal(reputation_state(b, "127.0.0.2/gmail", &until),
                     REPUTATION_PAUSED);
    assert_int_equal(until, T0 + 100);
    assert_false(reputation_usable(b, "127.0.0.2/gmail", T0 + 50, NULL));
    assert_true(reputation_shared_value(b, "127.0.0.2/gmail", value));
    assert_string_equal(vstr_str(value), "paused 1800000100 100 0");
    assert_int_equal(reputation_tick(b, T0 + 100, NULL, NULL), 1);
    assert_int_equal(reputation_state(b, "127.0.0.2/gmail", NULL),
                     REPUTATION_PROBING);
    assert_false(reputation_shared_value(b, "127.0.0.2/gmail", value));
    /* a pause already over: nothing to take */
    assert_int_equal(reputation_apply_shared(
                         b, "127.0.0.5", "paused 1800000000 100 0", T0, why),
                     0);
    assert_int_equal(reputation_state(b, "127.0.0.5", NULL), REPUTATION_ACTIVE);
    /* bad values: nothing changes */
    static const char *const bad[] = {
        "probing 0 0 0",
        "paused 0 0 0",
        "paused x 1 0",
        "paused 1800000100 100",
        "paused  1800000100 100 0",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(
            reputation_apply_shared(b, "127.0.0.4", bad[i], T0, why), -1);
        assert_int_equal(reputation_state(b, "127.0.0.4", NULL),
                         REPUTATION_ACTIVE);
    }
    assert_int_equal(
        reputation_apply_shared(b, "bad key", "paused 0 0 1", T0, why), -1);
    vstr_free(value);
    vstr_free(why);
    reputation_free(a);
    reputation_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_shared),
        cmocka_unit_test(test_conf_parse),
        cmocka_unit_test(test_min_attempts),
        cmocka_unit_test(test_block_ratio),
        cmocka_unit_test(test_window_expiry),
        cmocka_unit_test(test_pause_probe_resume),
        cmocka_unit_test(test_probe_failure),
        cmocka_unit_test(test_last_source),
        cmocka_unit_test(test_manual),
        cmocka_unit_test(test_each),
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_clock_backwards),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_corrupt),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
