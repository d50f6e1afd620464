/*
 * qmgr_sched_test - tables of cases for each scheduling decision
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "qmgr_sched.h"

#define T0 ((time_t) 1700000000)

static long long test_steps[] = {60, 300, 900, 3600};

/* initial 2, limit 4, dead 600s; the default retry schedule */
static const QMGR_SCHED_CONF test_conf = {
    .initial_concurrency = 2,
    .concurrency_limit = 4,
    .dead_time = 600,
    .queue_run_delay = 300,
    .max_lifetime = 86400,
    .bounce_lifetime = 3600,
    .delay_warning = 14400,
    .retry_steps = test_steps,
    .retry_count = 4,
};

static void test_initial_window(void **state)
{
    (void) state;
    static const struct {
        long long initial, limit, want;
    } cases[] = {
        {1, 20, 1},   {5, 20, 5},
        {20, 20, 20}, {30, 20, 20}, /* never above the limit */
        {5, 1, 1},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        QMGR_SCHED_CONF conf = test_conf;
        QMGR_SCHED_DEST dest;

        conf.initial_concurrency = cases[i].initial;
        conf.concurrency_limit = cases[i].limit;
        assert_int_equal(qmgr_sched_initial_window(&conf), cases[i].want);
        qmgr_sched_dest_init(&dest, &conf);
        assert_int_equal(dest.window, cases[i].want);
        assert_int_equal(dest.busy, 0);
        assert_int_equal(dest.dead_until, 0);
        assert_int_equal(dest.paused_until, 0);
        assert_false(dest.cohort_ok);
    }
}

/*
 * A script of events on one destination and the state after each:
 * 'S' start one delivery (it must be allowed: may_start, then busy++),
 * 'F' full (may_start refuses), 'o' a success, 'x' a site failure,
 * 'n' not attempted, 'p' a pause of 1s, 'r' a flush (revive).
 */
typedef struct WINDOW_STEP {
    char event;
    time_t at; /* seconds after T0 */
    long long window; /* after the event */
    size_t busy;
    bool dead; /* dead_until set */
    QMGR_SCHED_VERDICT verdict; /* of the event */
} WINDOW_STEP;

typedef struct WINDOW_SCRIPT {
    const char *name;
    WINDOW_STEP steps[16];
} WINDOW_SCRIPT;

#define END                                                                    \
    {                                                                          \
        0, 0, 0, 0, false, QMGR_SCHED_NONE                                     \
    }
#define NONE QMGR_SCHED_NONE
#define KILLED QMGR_SCHED_KILLED
#define REVIVED QMGR_SCHED_REVIVED

static const WINDOW_SCRIPT window_scripts[] = {
    {"slow start grows by one per success up to the limit",
     {{'S', 0, 2, 1, false, NONE},
      {'S', 0, 2, 2, false, NONE},
      {'F', 0, 2, 2, false, NONE},
      {'o', 1, 3, 1, false, NONE},
      {'S', 1, 3, 2, false, NONE},
      {'S', 1, 3, 3, false, NONE},
      {'o', 2, 4, 2, false, NONE},
      {'o', 2, 4, 1, false, NONE}, /* at the limit: stays */
      {'S', 2, 4, 2, false, NONE},
      {'S', 2, 4, 3, false, NONE},
      {'S', 2, 4, 4, false, NONE},
      {'F', 2, 4, 4, false, NONE},
      END}},
    {"a failure after a success in the cohort shrinks, does not kill",
     {{'S', 0, 2, 1, false, NONE},
      {'S', 0, 2, 2, false, NONE},
      {'o', 1, 3, 1, false, NONE},
      {'x', 2, 2, 0, false, NONE},
      /* A new cohort: one failure alone is not all of it ... */
      {'S', 3, 2, 1, false, NONE},
      {'S', 3, 2, 2, false, NONE},
      {'x', 4, 1, 1, false, NONE},
      /* ... but when the rest fails too, it is. */
      {'x', 5, 1, 0, true, KILLED},
      {'F', 6, 1, 0, true, NONE},
      END}},
    {"window 1 and one failure: dead; its dead time over: from the start",
     {{'S', 0, 2, 1, false, NONE},
      {'x', 1, 1, 0, true, KILLED},
      {'F', 300, 1, 0, true, NONE},
      {'F', 600, 1, 0, true, NONE}, /* dead until T0 + 1 + 600 */
      {'S', 601, 2, 1, false, REVIVED},
      {'o', 602, 3, 0, false, NONE},
      END}},
    {"at window 1 a failure kills, even after a success in the cohort",
     {{'S', 0, 2, 1, false, NONE},
      {'S', 0, 2, 2, false, NONE},
      {'o', 1, 3, 1, false, NONE},
      {'S', 1, 3, 2, false, NONE},
      {'S', 1, 3, 3, false, NONE},
      {'x', 2, 2, 2, false, NONE},
      {'x', 2, 1, 1, false, NONE},
      {'x', 2, 1, 0, true, KILLED},
      END}},
    {"a whole cohort of two fails",
     {{'S', 0, 2, 1, false, NONE},
      {'S', 0, 2, 2, false, NONE},
      {'x', 1, 1, 1, false, NONE},
      {'x', 1, 1, 0, true, KILLED},
      END}},
    {"not attempted moves nothing, but ends a cohort",
     {{'S', 0, 2, 1, false, NONE},
      {'S', 0, 2, 2, false, NONE},
      {'o', 1, 3, 1, false, NONE},
      {'n', 1, 3, 0, false, NONE},
      {'S', 2, 3, 1, false, NONE},
      {'S', 2, 3, 2, false, NONE},
      {'x', 3, 2, 1, false, NONE},
      {'x', 3, 1, 0, true, KILLED}, /* the earlier success is forgotten */
      END}},
    {"a flush revives a dead destination at once",
     {{'S', 0, 2, 1, false, NONE},
      {'x', 0, 1, 0, true, KILLED},
      {'r', 1, 2, 0, false, NONE},
      {'S', 1, 2, 1, false, NONE},
      END}},
    {"a pause holds starts for its time",
     {{'S', 0, 2, 1, false, NONE},
      {'p', 0, 2, 0, false, NONE},
      {'F', 0, 2, 0, false, NONE},
      {'S', 1, 2, 1, false, NONE},
      END}},
};

static void run_window_script(const WINDOW_SCRIPT *script)
{
    QMGR_SCHED_DEST dest;

    qmgr_sched_dest_init(&dest, &test_conf);
    for (const WINDOW_STEP *step = script->steps; step->event; step++) {
        time_t now = T0 + step->at;
        QMGR_SCHED_VERDICT verdict = QMGR_SCHED_NONE;

        switch (step->event) {
        case 'S':
            if (!qmgr_sched_dest_may_start(&dest, &test_conf, now, &verdict))
                fail_msg("%s: step %zu: start refused", script->name,
                         (size_t) (step - script->steps));
            dest.busy++;
            break;
        case 'F':
            if (qmgr_sched_dest_may_start(&dest, &test_conf, now, &verdict))
                fail_msg("%s: step %zu: start allowed", script->name,
                         (size_t) (step - script->steps));
            break;
        case 'o':
            verdict = qmgr_sched_dest_result(&dest, &test_conf,
                                             QMGR_SCHED_SITE_OK, now);
            break;
        case 'x':
            verdict = qmgr_sched_dest_result(&dest, &test_conf,
                                             QMGR_SCHED_SITE_FAILED, now);
            break;
        case 'n':
            verdict = qmgr_sched_dest_result(&dest, &test_conf,
                                             QMGR_SCHED_NOT_ATTEMPTED, now);
            break;
        case 'p':
            qmgr_sched_dest_pause(&dest, now, 1);
            break;
        case 'r':
            qmgr_sched_dest_revive(&dest, &test_conf);
            break;
        default:
            fail_msg("bad event %c", step->event);
        }
        if (dest.window != step->window || dest.busy != step->busy ||
            (dest.dead_until != 0) != step->dead || verdict != step->verdict)
            fail_msg("%s: step %zu (%c): window %lld busy %zu dead %d "
                     "verdict %d; want %lld %zu %d %d",
                     script->name, (size_t) (step - script->steps), step->event,
                     dest.window, dest.busy, dest.dead_until != 0,
                     (int) verdict, step->window, step->busy, step->dead,
                     (int) step->verdict);
    }
}

static void test_window_scripts(void **state)
{
    (void) state;
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(window_scripts); i++)
        run_window_script(&window_scripts[i]);
}

static void test_dead_time(void **state)
{
    (void) state;
    QMGR_SCHED_DEST dest;
    QMGR_SCHED_VERDICT verdict;

    qmgr_sched_dest_init(&dest, &test_conf);
    dest.busy = 1;
    dest.window = 1;
    assert_int_equal(
        qmgr_sched_dest_result(&dest, &test_conf, QMGR_SCHED_SITE_FAILED, T0),
        QMGR_SCHED_KILLED);
    assert_int_equal(dest.dead_until, T0 + 600);
    /* Dead until the second it ends, alive from then on. */
    assert_false(qmgr_sched_dest_alive(&dest, &test_conf, T0, &verdict));
    assert_int_equal(verdict, QMGR_SCHED_NONE);
    assert_false(qmgr_sched_dest_alive(&dest, &test_conf, T0 + 599, &verdict));
    assert_false(qmgr_sched_dest_idle(&dest, T0 + 599));
    assert_true(qmgr_sched_dest_idle(&dest, T0 + 600));
    assert_true(qmgr_sched_dest_alive(&dest, &test_conf, T0 + 600, &verdict));
    assert_int_equal(verdict, QMGR_SCHED_REVIVED);
    assert_int_equal(dest.dead_until, 0);
    assert_int_equal(dest.window, 2);
    /* Once revived, asking again says nothing new. */
    assert_true(qmgr_sched_dest_alive(&dest, &test_conf, T0 + 601, &verdict));
    assert_int_equal(verdict, QMGR_SCHED_NONE);
    /* A late failure of a dead destination does not kill it again (the
       caller would log and defer twice) nor move its dead time. */
    dest.busy = 2;
    dest.window = 1;
    assert_int_equal(qmgr_sched_dest_result(&dest, &test_conf,
                                            QMGR_SCHED_SITE_FAILED, T0 + 700),
                     QMGR_SCHED_KILLED);
    assert_int_equal(qmgr_sched_dest_result(&dest, &test_conf,
                                            QMGR_SCHED_SITE_FAILED, T0 + 800),
                     QMGR_SCHED_NONE);
    assert_int_equal(dest.dead_until, T0 + 700 + 600);
    assert_int_equal(dest.busy, 0);
}

static void test_idle(void **state)
{
    (void) state;
    static const struct {
        size_t busy;
        time_t dead_until, paused_until, now;
        bool idle;
    } cases[] = {
        {0, 0, 0, T0, true},       {1, 0, 0, T0, false},
        {0, T0 + 1, 0, T0, false}, {0, T0, 0, T0, true},
        {0, 0, T0 + 1, T0, false}, {0, 0, T0 - 1, T0, true},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        QMGR_SCHED_DEST dest;

        qmgr_sched_dest_init(&dest, &test_conf);
        dest.busy = cases[i].busy;
        dest.dead_until = cases[i].dead_until;
        dest.paused_until = cases[i].paused_until;
        if (qmgr_sched_dest_idle(&dest, cases[i].now) != cases[i].idle)
            fail_msg("case %zu", i);
    }
}

static void test_outcome(void **state)
{
    (void) state;
    static const struct {
        bool done;
        long long status;
        bool site_failed;
        QMGR_SCHED_OUTCOME want;
    } cases[] = {
        {true, 0, false, QMGR_SCHED_SITE_OK},
        {true, 0, true, QMGR_SCHED_SITE_FAILED},
        {true, 1, true, QMGR_SCHED_SITE_FAILED},
        {true, 1, false, QMGR_SCHED_NOT_ATTEMPTED},
        {false, 0, false, QMGR_SCHED_NOT_ATTEMPTED}, /* died, timed out */
        {false, 0, true, QMGR_SCHED_NOT_ATTEMPTED},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++)
        if (qmgr_sched_outcome(cases[i].done, cases[i].status,
                               cases[i].site_failed) != cases[i].want)
            fail_msg("case %zu", i);
}

static void test_agent_retry(void **state)
{
    (void) state;
    static const struct {
        bool died, done, withdrawn;
        int deaths;
        bool want;
    } cases[] = {
        {true, false, false, 0, true},   {true, false, false, 2, true},
        {true, false, false, 3, false}, /* the limit is 3 */
        {true, true, false, 0, false}, /* DONE came: not a death */
        {false, false, false, 0, false}, /* timeout, protocol error */
        {true, false, true, 0, false}, /* held or deleted */
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++)
        if (qmgr_sched_agent_retry(cases[i].died, cases[i].done,
                                   cases[i].withdrawn, cases[i].deaths,
                                   3) != cases[i].want)
            fail_msg("case %zu", i);
}

static void test_retry(void **state)
{
    (void) state;
    static const struct {
        size_t attempts;
        bool requeue;
        long long want; /* next try - now */
    } cases[] = {
        {0, false, 60}, /* no attempt counted (unreadable log): step 1 */
        {1, false, 60},      {2, false, 300},  {3, false, 900},
        {4, false, 3600},    {5, false, 3600}, /* the last step repeats */
        {1000, false, 3600}, {3, true, 0}, /* requeue: at once */
    };
    QMGR_SCHED_CONF empty = test_conf;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        time_t next = qmgr_sched_retry_next(&test_conf, cases[i].attempts, T0,
                                            cases[i].requeue);

        if ((long long) (next - T0) != cases[i].want)
            fail_msg("case %zu: %lld", i, (long long) (next - T0));
    }
    assert_int_equal(qmgr_sched_retry_max(&test_conf), 3600);
    /* An empty schedule: queue_run_delay every time. */
    empty.retry_count = 0;
    assert_int_equal(qmgr_sched_retry_delay(&empty, 1), 300);
    assert_int_equal(qmgr_sched_retry_delay(&empty, 7), 300);
    assert_int_equal(qmgr_sched_retry_max(&empty), 0);
}

/* Microseconds after T0. */
#define US(s) (((long long) T0 + (s)) * 1000000LL)

static void test_wait_start(void **state)
{
    (void) state;
    static const struct {
        long long entered, due, arrival, taken, want;
    } cases[] = {
        /* incoming/: committed 0.2s after arrival, taken 0.5s later */
        {US(0) + 200000, 0, US(0), US(0) + 700000, US(0) + 200000},
        /* a file time a coarse clock put before the arrival */
        {US(0) - 3000, 0, US(0), US(1), US(0)},
        /* deferred/ at 10, due at 70, taken at 75: waiting since 70 */
        {US(10), US(70), US(0), US(75), US(70)},
        /* a flush takes it at 30, before its next try: since 30 */
        {US(10), US(70), US(0), US(30), US(30)},
        /* due before it got there (a next try in the past): since 10 */
        {US(10), US(5), US(0), US(75), US(10)},
        /* released from hold/ into incoming/ at 500 */
        {US(500), 0, US(0), US(502), US(500)},
        /* a file time after qmgr took it (a clock that went back) */
        {US(90), 0, US(0), US(80), US(80)},
        /* not known (stat failed): since qmgr took it */
        {0, US(70), US(0), US(75), US(75)},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        long long got = qmgr_sched_wait_start(cases[i].entered, cases[i].due,
                                              cases[i].arrival, cases[i].taken);

        if (got != cases[i].want)
            fail_msg("case %zu: %lld, want %lld", i, got, cases[i].want);
    }
}

static void test_expired(void **state)
{
    (void) state;
    static const struct {
        long long age;
        bool null_sender;
        bool want;
    } cases[] = {
        {0, false, false},
        {86400, false, false}, /* exactly the lifetime: not yet */
        {86401, false, true},
        {3600, true, false},
        {3601, true, true}, /* <>: bounce_queue_lifetime */
        {3601, false, false},
        {-100, false, false}, /* the clock went back */
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++)
        if (qmgr_sched_expired(&test_conf, T0, T0 + cases[i].age,
                               cases[i].null_sender) != cases[i].want)
            fail_msg("case %zu", i);
    assert_int_equal(qmgr_sched_lifetime(&test_conf, false), 86400);
    assert_int_equal(qmgr_sched_lifetime(&test_conf, true), 3600);
}

static void test_warn_due(void **state)
{
    (void) state;
    static const struct {
        long long delay_warning, age;
        size_t deferred;
        bool warned, held, want;
    } cases[] = {
        {14400, 14401, 1, false, false, true},
        {14400, 14400, 1, false, false, false}, /* not past it yet */
        {14400, 14401, 0, false, false, false}, /* nothing deferred */
        {14400, 14401, 3, true, false, false}, /* once */
        {14400, 14401, 1, false, true, false}, /* held */
        {0, 99999, 1, false, false, false}, /* off */
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        QMGR_SCHED_CONF conf = test_conf;

        conf.delay_warning = cases[i].delay_warning;
        if (qmgr_sched_warn_due(&conf, T0, T0 + cases[i].age, cases[i].deferred,
                                cases[i].warned,
                                cases[i].held) != cases[i].want)
            fail_msg("case %zu", i);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_window),
        cmocka_unit_test(test_window_scripts),
        cmocka_unit_test(test_dead_time),
        cmocka_unit_test(test_idle),
        cmocka_unit_test(test_outcome),
        cmocka_unit_test(test_agent_retry),
        cmocka_unit_test(test_retry),
        cmocka_unit_test(test_wait_start),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_warn_due),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
