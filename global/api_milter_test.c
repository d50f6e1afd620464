/*
 * api_milter_test - unit tests for the API's milter children: the answer
 * on the pipe and what the parent makes of it (each verdict's code and
 * words, the changes of an accept, every malformed or endless answer a
 * temporary failure), the deadline (a child that never answers is killed
 * and reaped: no zombie), and api_milter_process_limit (a message beyond
 * it waits its turn, in order)
 *
 * The module is included with a child body of the test's own
 * (API_MILTER_CHILD, api_milter.c's one test hook): the child writes the
 * message's content as its answer, byte for byte, or stalls, or writes
 * without end, as the sender asks. The fork, the pipe, the parent's
 * reading, parsing, deadline, killing, reaping and waiting are the
 * module's own, on a real event loop. What the real child does with real
 * milters (and that it closes the parent's descriptors) is
 * tests/test_api_milter.py's.
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <cmocka.h>

struct API_MILTER;
static void api_milter_test_child(const struct API_MILTER *am, int fd);
#define API_MILTER_CHILD api_milter_test_child

#include "api_milter.c"
#include "testlib.h"

/* The sender tells the test's child what to do. */
#define TEST_STALL "stall@x.test" /* never answer */
#define TEST_FLOOD "flood@x.test" /* write without end */
#define TEST_SLOW "slow@x.test" /* the content, after 200 ms */
#define TEST_SENDER "s@x.test" /* the content at once */

#define TEST_MAX 12 /* messages a test submits */
#define TEST_WATCHDOG 15 /* seconds a test's loop may run at most */

/* api_milter_test_child - in the child: answer as the sender asks */
static void api_milter_test_child(const API_MILTER *am, int fd)
{
    const char *sender = am->msg->sender;
    int null = open("/dev/null", O_RDWR);

    /* Not the test's output: a child left running (when the module under
       test is broken) must not hold it open; and not for ever either. */
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
        _exit(2);
    (void) alarm(2 * TEST_WATCHDOG);
    if (strcmp(sender, TEST_STALL) == 0) {
        for (;;)
            (void) pause();
    }
    if (strcmp(sender, TEST_FLOOD) == 0) {
        char buf[4096];

        memset(buf, '9', sizeof(buf));
        for (;;)
            if (write(fd, buf, sizeof(buf)) < 0)
                _exit(1);
    }
    if (strcmp(sender, TEST_SLOW) == 0)
        (void) usleep(200 * 1000);
    _exit(safe_file_write_all(fd, vstr_str(am->msg->content),
                              vstr_len(am->msg->content)) < 0
              ? 1
              : 0);
}

typedef struct TEST_FIXTURE TEST_FIXTURE;

/* One submitted message and what its done said. */
typedef struct TEST_SLOT {
    TEST_FIXTURE *fx;
    API_MESSAGE msg;
    bool done;
    int order; /* 1 for the first done, ... */
    int code;
    VSTR *why;
    VSTR *milter; /* "" with has_milter false: NULL */
    bool has_milter;
    bool discarded;
    VSTR *hold; /* msg.hold when done was called ("": none) */
} TEST_SLOT;

struct TEST_FIXTURE {
    TESTLIB_DIR *dir;
    MAIL_CONF *conf;
    struct event_base *base;
    API_MILTERS *ams;
    TEST_SLOT slots[TEST_MAX];
    int submitted;
    int done;
    int most_children; /* seen between loop passes */
    bool watchdog_fired;
};

/* test_setup - a loop, and milters configured (never reached: the
   test's child answers for them) */
static int test_setup(void **state)
{
    TEST_FIXTURE *fx = mycalloc(1, sizeof(*fx));
    VSTR *why = vstr_alloc(100);
    VSTR *text = vstr_alloc(200);

    if ((fx->dir = testlib_dir_create("api_milter")) == NULL)
        return -1;
    vstr_sprintf(text,
                 "non_smtpd_milters = unix:%s\n"
                 "message_size_limit = 100000\n",
                 testlib_path(fx->dir, "milter"));
    (void) testlib_write(fx->dir, "main.cf", vstr_str(text));
    if ((fx->conf = mail_conf_read(fx->dir->path, why)) == NULL ||
        (fx->ams = api_milter_open(fx->conf)) == NULL ||
        (fx->base = event_base_new()) == NULL)
        return -1;
    vstr_free(why);
    vstr_free(text);
    *state = fx;
    return 0;
}

/* test_teardown - every slot freed; no child of ours may be left */
static int test_teardown(void **state)
{
    TEST_FIXTURE *fx = *state;

    api_milter_close(fx->ams);
    event_base_free(fx->base);
    for (int i = 0; i < fx->submitted; i++) {
        TEST_SLOT *slot = fx->slots + i;

        myfree(slot->msg.sender);
        argv_free(slot->msg.rcpts);
        vstr_free(slot->msg.content);
        vstr_free(slot->why);
        vstr_free(slot->milter);
        vstr_free(slot->hold);
    }
    mail_conf_free(fx->conf);
    (void) testlib_dir_remove(fx->dir);
    myfree(fx);
    return 0;
}

/* test_field - one field of an answer */
static void test_field(VSTR *out, const char *data)
{
    vstr_sprintf_append(out, "%zu\n%s", strlen(data), data);
}

/* test_answer - a whole answer as api_milter_child writes it */
static void test_answer(VSTR *out, int status, const char *reply,
                        const char *hold, const char *const *rcpts,
                        const char *content)
{
    char digit[2] = {(char) ('0' + status), 0};
    size_t count = 0;

    while (rcpts != NULL && rcpts[count] != NULL)
        count++;
    vstr_cpy(out, "");
    test_field(out, digit);
    test_field(out, "END-OF-MESSAGE");
    test_field(out, reply);
    test_field(out, hold);
    vstr_sprintf_append(out, "%zu\n", count);
    for (size_t i = 0; i < count; i++)
        test_field(out, rcpts[i]);
    test_field(out, content);
}

/* test_done - the module's done: keep what it said */
static void test_done(const API_HANDOFF_RESULT *result, void *arg)
{
    TEST_SLOT *slot = arg;

    if (slot->done)
        fail_msg("done called twice");
    slot->done = true;
    slot->order = ++slot->fx->done;
    slot->code = result->code;
    vstr_cpy(slot->why, result->why ? result->why : "");
    slot->has_milter = result->milter != NULL;
    vstr_cpy(slot->milter, result->milter ? result->milter : "");
    slot->discarded = result->discarded;
    vstr_cpy(slot->hold, slot->msg.hold ? slot->msg.hold : "");
}

/* test_submit - a message from sender whose child answers answer */
static TEST_SLOT *test_submit(TEST_FIXTURE *fx, const char *sender,
                              const char *answer, size_t answer_len)
{
    TEST_SLOT *slot;
    VSTR *why = vstr_alloc(100);

    assert_true(fx->submitted < TEST_MAX);
    slot = fx->slots + fx->submitted++;
    slot->fx = fx;
    slot->msg.sender = mystrdup(sender);
    slot->msg.rcpts = argv_alloc(2);
    argv_add(slot->msg.rcpts, "r@x.test");
    slot->msg.content = vstr_alloc(answer_len + 1);
    vstr_ncpy(slot->msg.content, answer, answer_len);
    slot->why = vstr_alloc(100);
    slot->milter = vstr_alloc(100);
    slot->hold = vstr_alloc(100);
    if (api_submit_start(fx->base, fx->ams, testlib_path(fx->dir, "cleanup"), 5,
                         &slot->msg, "", test_done, slot, why) < 0)
        fail_msg("api_submit_start: %s", vstr_str(why));
    vstr_free(why);
    return slot;
}

/* test_watchdog - the loop has run too long */
static void test_watchdog(evutil_socket_t fd, short what, void *arg)
{
    TEST_FIXTURE *fx = arg;

    fx->watchdog_fired = true;
}

/* test_run - run the loop until every message is done and every child
   reaped (at most TEST_WATCHDOG seconds); then no child of this
   process may exist, not even a zombie */
static void test_run(TEST_FIXTURE *fx)
{
    struct timeval tv = {TEST_WATCHDOG, 0};
    struct event *watchdog = evtimer_new(fx->base, test_watchdog, fx);

    assert_non_null(watchdog);
    assert_int_equal(evtimer_add(watchdog, &tv), 0);
    while (!fx->watchdog_fired &&
           (fx->done < fx->submitted || fx->ams->children > 0 ||
            fx->ams->reaps != NULL)) {
        if (fx->ams->children > fx->most_children)
            fx->most_children = fx->ams->children;
        assert_int_equal(event_base_loop(fx->base, EVLOOP_ONCE), 0);
    }
    event_free(watchdog);
    if (fx->watchdog_fired)
        fail_msg("after %ds: %d of %d done, %d children, %s reaps",
                 TEST_WATCHDOG, fx->done, fx->submitted, fx->ams->children,
                 fx->ams->reaps ? "some" : "no");
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

/* The verdicts: code, why, the reply as result->milter. */
typedef struct VERDICT_CASE {
    int status;
    const char *reply;
    int code;
    const char *why;
    const char *milter;
    bool discarded;
} VERDICT_CASE;

/* clang-format off */
static const VERDICT_CASE verdict_cases[] = {
    {PICKUP_MILTER_REJECT, "5.7.1 spam here", 550,
     "rejected by a milter: 5.7.1 spam here", "5.7.1 spam here", false},
    /* the reply's class decides: a reject that says 4.x.x is 451 */
    {PICKUP_MILTER_REJECT, "4.7.1 greylisted", 451,
     "rejected by a milter: 4.7.1 greylisted", "4.7.1 greylisted", false},
    {PICKUP_MILTER_REJECT, "", 550, "rejected by a milter: ", "", false},
    {PICKUP_MILTER_TEMPFAIL, "4.3.0 milter down", 451,
     "a milter said try again later: 4.3.0 milter down",
     "4.3.0 milter down", false},
    {PICKUP_MILTER_TEMPFAIL, "", 451, "a milter said try again later: ", "",
     false},
    {PICKUP_MILTER_DISCARD, "", 550, "discarded by a milter",
     "discarded by a milter", true},
};
/* clang-format on */

/* test_verdicts - each verdict's code and words */
static void test_verdicts(void **state)
{
    TEST_FIXTURE *fx = *state;
    VSTR *answer = vstr_alloc(200);
    TEST_SLOT *slots[SLUICE_ARRAY_LEN(verdict_cases)];

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(verdict_cases); i++) {
        const VERDICT_CASE *vc = verdict_cases + i;

        test_answer(answer, vc->status, vc->reply, "", NULL, "x\n");
        slots[i] =
            test_submit(fx, TEST_SENDER, vstr_str(answer), vstr_len(answer));
    }
    test_run(fx);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(verdict_cases); i++) {
        const VERDICT_CASE *vc = verdict_cases + i;
        const TEST_SLOT *slot = slots[i];

        assert_true(slot->done);
        assert_int_equal(slot->code, vc->code);
        assert_string_equal(vstr_str(slot->why), vc->why);
        assert_true(slot->has_milter);
        assert_string_equal(vstr_str(slot->milter), vc->milter);
        assert_int_equal(slot->discarded, vc->discarded);
        /* the message is not changed by a verdict */
        assert_int_equal(slot->msg.rcpts->argc, 1);
        assert_string_equal(vstr_str(slot->hold), "");
    }
    vstr_free(answer);
}

/* test_accept_changes - an accept's changes reach the message before it
   goes to cleanup: the new content, the added recipients (a malformed
   one skipped), the quarantine as the hold reason. No cleanup listens:
   the handoff fails (code -1, not the milter's) */
static void test_accept_changes(void **state)
{
    TEST_FIXTURE *fx = *state;
    static const char *const added[] = {"new@x.test", "<other@y.test>",
                                        "not an address", NULL};
    VSTR *answer = vstr_alloc(200);
    TEST_SLOT *slot;

    test_answer(answer, PICKUP_MILTER_ACCEPT, "", "spam score 9", added,
                "Subject: changed\n\nnew body\n");
    slot = test_submit(fx, TEST_SENDER, vstr_str(answer), vstr_len(answer));
    test_run(fx);
    assert_true(slot->done);
    assert_int_equal(slot->code, -1);
    assert_false(slot->has_milter);
    assert_string_equal(vstr_str(slot->msg.content),
                        "Subject: changed\n\nnew body\n");
    assert_int_equal(slot->msg.rcpts->argc, 3);
    assert_string_equal(slot->msg.rcpts->argv[0], "r@x.test");
    assert_string_equal(slot->msg.rcpts->argv[1], "new@x.test");
    assert_string_equal(slot->msg.rcpts->argv[2], "other@y.test");
    assert_string_equal(vstr_str(slot->hold),
                        "milter quarantine: spam score 9");
    vstr_free(answer);
}

/* test_bad_answers - an answer cut short, with bad lengths or counts, or
   more than it says: a temporary failure (-1), never a verdict, never a
   message with half the changes */
static void test_bad_answers(void **state)
{
    TEST_FIXTURE *fx = *state;
    VSTR *good = vstr_alloc(200);
    VSTR *bad = vstr_alloc(200);
    const char *const one[] = {"a@x.test", NULL};
    TEST_SLOT *slots[TEST_MAX];
    int count = 0;

    test_answer(good, PICKUP_MILTER_ACCEPT, "", "", one, "Subject: s\n\nb\n");
#define BAD(text, len)                                                         \
    (slots[count++] = test_submit(fx, TEST_SENDER, text, len))
#define BAD_TEXT(text) BAD(text, sizeof(text) - 1)
    BAD("", 0); /* nothing at all */
    BAD(vstr_str(good), vstr_len(good) - 1); /* the content cut short */
    vstr_cpy(bad, vstr_str(good));
    vstr_cat(bad, "5\nextra");
    BAD(vstr_str(bad), vstr_len(bad)); /* more than it says */
    BAD_TEXT("x\n0\n"); /* a length that is no number */
    BAD_TEXT("2\n020\n0\n0\n0\n0\n"); /* a status of two bytes */
    BAD_TEXT("99999999999999999999999\n0"); /* a length beyond all */
    BAD_TEXT("1\n0\n"); /* the status alone */
    vstr_cpy(bad, "1\n0");
    test_field(bad, "END-OF-MESSAGE");
    test_field(bad, "");
    test_field(bad, "");
    vstr_cat(bad, "100000\n"); /* too many recipients */
    test_field(bad, "x\n");
    BAD(vstr_str(bad), vstr_len(bad));
    vstr_cpy(bad, "1\n0");
    test_field(bad, "END-OF-MESSAGE");
    test_field(bad, "");
    test_field(bad, "");
    vstr_cat(bad, "2\n"); /* two recipients said, one there */
    test_field(bad, "a@x.test");
    test_field(bad, "x\n");
    BAD(vstr_str(bad), vstr_len(bad));
#undef BAD
#undef BAD_TEXT
    test_run(fx);
    for (int i = 0; i < count; i++) {
        assert_true(slots[i]->done);
        if (slots[i]->code != -1 ||
            strcmp(vstr_str(slots[i]->why),
                   "the milter process ended without an answer") != 0)
            fail_msg("bad answer %d: code %d, why \"%s\"", i, slots[i]->code,
                     vstr_str(slots[i]->why));
        assert_false(slots[i]->has_milter);
        assert_int_equal(slots[i]->msg.rcpts->argc, 1); /* none added */
    }
    vstr_free(good);
    vstr_free(bad);
}

/* test_unknown_verdict - a whole answer with a status no verdict has */
static void test_unknown_verdict(void **state)
{
    TEST_FIXTURE *fx = *state;
    VSTR *answer = vstr_alloc(200);
    TEST_SLOT *slot;

    test_answer(answer, 7, "5.7.1 what", "", NULL, "x\n");
    slot = test_submit(fx, TEST_SENDER, vstr_str(answer), vstr_len(answer));
    test_run(fx);
    assert_int_equal(slot->code, -1);
    assert_string_equal(vstr_str(slot->why),
                        "the milter process gave an unknown verdict");
    assert_false(slot->has_milter);
    vstr_free(answer);
}

/* test_flood - a child that writes without end: refused past the limit,
   killed and reaped */
static void test_flood(void **state)
{
    TEST_FIXTURE *fx = *state;
    TEST_SLOT *slot = test_submit(fx, TEST_FLOOD, "x", 1);

    test_run(fx);
    assert_int_equal(slot->code, -1);
    assert_string_equal(vstr_str(slot->why),
                        "the milter process's answer is too long");
}

/* test_deadline - a child that never answers is killed at the deadline
   (its time made 1 s here), the message fails for now, the child is
   reaped (test_run: no child left, not even a zombie) */
static void test_deadline(void **state)
{
    TEST_FIXTURE *fx = *state;
    TEST_SLOT *slot;

    fx->ams->deadline = 1;
    slot = test_submit(fx, TEST_STALL, "x", 1);
    assert_int_equal(fx->ams->children, 1);
    test_run(fx);
    assert_int_equal(slot->code, -1);
    assert_string_equal(vstr_str(slot->why),
                        "the milters took longer than 1s (non_smtpd_milters);"
                        " try again later");
    assert_int_equal(fx->ams->children, 0);
}

/* test_cap - api_milter_process_limit = 1: one child at a time, the
   others wait and are served in the order they came, each when the one
   before is reaped */
static void test_cap(void **state)
{
    TEST_FIXTURE *fx = *state;
    VSTR *answer = vstr_alloc(200);
    TEST_SLOT *slots[4];
    int waiting = 0;

    fx->ams->process_limit = 1;
    for (int i = 0; i < 4; i++) {
        char reply[32];

        (void) snprintf(reply, sizeof(reply), "4.3.0 message %d", i);
        test_answer(answer, PICKUP_MILTER_TEMPFAIL, reply, "", NULL, "x\n");
        slots[i] =
            test_submit(fx, TEST_SLOW, vstr_str(answer), vstr_len(answer));
    }
    assert_int_equal(fx->ams->children, 1);
    for (const API_MILTER *am = fx->ams->wait_head; am != NULL;
         am = am->next_wait)
        waiting++;
    assert_int_equal(waiting, 3);
    test_run(fx);
    assert_int_equal(fx->most_children, 1);
    for (int i = 0; i < 4; i++) {
        char want[64];

        (void) snprintf(want, sizeof(want),
                        "a milter said try again later: 4.3.0 message %d", i);
        assert_int_equal(slots[i]->order, i + 1);
        assert_int_equal(slots[i]->code, 451);
        assert_string_equal(vstr_str(slots[i]->why), want);
    }
    vstr_free(answer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verdicts, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_accept_changes, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_bad_answers, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_verdict, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_flood, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_deadline, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_cap, test_setup, test_teardown),
    };

    /* The real child body is not run here; it is compiled all the same. */
    (void) api_milter_child;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
