/*
 * feedback_journal_test - unit tests for the journal window of a short
 * mailto unsubscribe (feedback_journal_rcpts): the window main.cf makes
 * (the longer queue lifetime, 30 days of send_at, the longest retry
 * step, queue_run_delay), a delivered event in a segment begun at its far
 * edge found, one begun a second beyond it never read, and at the near
 * edge a segment last written just before the arrival less the slack
 * passed over; a repeat in a segment begun before the delivered event's
 * found; and the journal lock (feedback_journal_lock): a second
 * copy of a report searches only once the first has written its event,
 * so it finds the repeat
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <cmocka.h>

#include "argv.h"
#include "events.h"
#include "feedback.h"
#include "mail_conf.h"
#include "qid.h"
#include "testlib.h"
#include "vstr.h"

#define DAY 86400LL

static const char qid_chars[] = "0123456789ABCDEFGHJKLMNPQRSTVWXY";

/* journal_test_qid - a queue ID that arrived at sec (qid.h's layout:
   7 characters of seconds, 4 of microseconds, 5 of pid) */
static void journal_test_qid(char buf[QID_SIZE], long long sec)
{
    unsigned long long fields[3] = {(unsigned long long) sec, 12345, 4242};
    static const int widths[3] = {7, 4, 5};
    char *cp = buf;

    for (int f = 0; f < 3; cp += widths[f], f++)
        for (int i = widths[f] - 1; i >= 0; i--) {
            cp[i] = qid_chars[fields[f] & 31];
            fields[f] >>= 5;
        }
    buf[QID_LEN] = 0;
}

/* journal_test_segment - a segment begun at start, written at mtime,
   with a delivered event of qid to rcpt and an unrelated line */
static void journal_test_segment(TESTLIB_DIR *dir, long long start,
                                 long long mtime, long pid, const char *qid,
                                 const char *rcpt)
{
    struct timeval tv = {(time_t) start, 500};
    struct timeval times[2] = {{(time_t) mtime, 0}, {(time_t) mtime, 0}};
    VSTR *name = vstr_alloc(64);
    VSTR *text = vstr_alloc(200);
    const char *path;

    events_segment_name(name, &tv, pid, "qmgr");
    vstr_sprintf(text,
                 "{\"id\":\"n/00000000000000AA/queued/0\",\"kind\":\"queued\","
                 "\"qid\":\"00000000000000AA\"}\n"
                 "{\"id\":\"n/%s/delivered/280\",\"kind\":\"%s\","
                 "\"qid\":\"%s\",\"recipient\":\"%s\",\"tenant\":\"t1\"}\n",
                 qid, EVENTS_DELIVERED, qid, rcpt);
    path = testlib_write(dir, vstr_str(name), vstr_str(text));
    assert_int_equal(utimes(path, times), 0);
    vstr_free(name);
    vstr_free(text);
}

/* journal_test_complaint - a segment of a feedback process begun at
   start, written at mtime, with a complained event for recipient offset
   280 of qid (an earlier copy of a report) */
static void journal_test_complaint(TESTLIB_DIR *dir, long long start,
                                   long long mtime, long pid, const char *qid)
{
    struct timeval tv = {(time_t) start, 700};
    struct timeval times[2] = {{(time_t) mtime, 0}, {(time_t) mtime, 0}};
    VSTR *name = vstr_alloc(64);
    VSTR *text = vstr_alloc(200);
    const char *path;

    events_segment_name(name, &tv, pid, "feedback");
    vstr_sprintf(text,
                 "{\"id\":\"n/%s/complained/280\",\"kind\":\"%s\","
                 "\"qid\":\"%s\",\"recipient\":\"rep@dest.test\"}\n",
                 qid, EVENTS_COMPLAINED, qid);
    path = testlib_write(dir, vstr_str(name), vstr_str(text));
    assert_int_equal(utimes(path, times), 0);
    vstr_free(name);
    vstr_free(text);
}

/* journal_test_conf - main.cf text read */
static MAIL_CONF *journal_test_conf(TESTLIB_DIR *dir, const char *text)
{
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf;

    (void) testlib_write(dir, "main.cf", text);
    if ((conf = mail_conf_read(dir->path, why)) == NULL)
        fail_msg("main.cf: %s", vstr_str(why));
    vstr_free(why);
    return conf;
}

/* test_window - what main.cf makes of it */
static void test_window(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("fbwindow");
    MAIL_CONF *conf;

    assert_non_null(dir);
    conf = journal_test_conf(dir, "");
    /* 24h lifetimes, 1h the longest of 1m 5m 15m 1h, 300s scans */
    assert_int_equal(feedback_journal_window(conf),
                     DAY + 30 * DAY + 3600 + 300);
    mail_conf_free(conf);
    conf = journal_test_conf(dir, "maximal_queue_lifetime = 5d\n"
                                  "bounce_queue_lifetime = 2d\n"
                                  "retry_schedule = 10m 8h 2h\n"
                                  "queue_run_delay = 120s\n");
    assert_int_equal(feedback_journal_window(conf),
                     5 * DAY + 30 * DAY + 8 * 3600 + 120);
    mail_conf_free(conf);
    /* The null sender's lifetime when it is the longer one. */
    conf = journal_test_conf(dir, "maximal_queue_lifetime = 1d\n"
                                  "bounce_queue_lifetime = 3d\n");
    assert_int_equal(feedback_journal_window(conf),
                     3 * DAY + 30 * DAY + 3600 + 300);
    mail_conf_free(conf);
    assert_int_equal(testlib_dir_remove(dir), 0);
}

/* journal_test_rcpts - feedback_journal_rcpts of qid: the recipients
   found, space-separated, into out; its answer */
static bool journal_test_rcpts(TESTLIB_DIR *dir, const char *qid,
                               long long window, VSTR *out)
{
    ARGV *rcpts = argv_alloc(2);
    ARGV *tenants = argv_alloc(2);
    bool found = feedback_journal_rcpts(dir->path, qid, window, rcpts, tenants);

    vstr_cpy(out, "");
    for (size_t i = 0; i < rcpts->argc; i++) {
        vstr_sprintf_append(out, "%s%s", i ? " " : "", rcpts->argv[i]);
        assert_string_equal(tenants->argv[i], "t1");
    }
    argv_free(rcpts);
    argv_free(tenants);
    return found;
}

/* test_far_edge - the message arrived long ago (default main.cf's
   window and more); its delivered event in a segment begun exactly at
   the far edge (arrival + window + the slack) is found, while a newer
   segment begun a second later, which names another recipient and would
   be read first, is never read */
static void test_far_edge(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("fbedge");
    long long now = (long long) time(NULL);
    MAIL_CONF *conf;
    long long window;
    long long arrival;
    long long edge;
    char qid[QID_SIZE];
    VSTR *got = vstr_alloc(100);

    assert_non_null(dir);
    conf = journal_test_conf(dir, "");
    window = feedback_journal_window(conf);
    mail_conf_free(conf);
    arrival = now - window - 10 * DAY;
    journal_test_qid(qid, arrival);
    assert_true(qid_valid(qid));
    edge = arrival + window + FEEDBACK_JOURNAL_SLACK;

    /* Beyond the edge only: nothing of the message is read. */
    journal_test_segment(dir, edge + 1, now, 101, qid, "late@beyond.test");
    assert_false(journal_test_rcpts(dir, qid, window, got));
    assert_string_equal(vstr_str(got), "");

    /* At the edge: found; the newer one beyond still passed over. */
    journal_test_segment(dir, edge, edge + 60, 102, qid, "edge@within.test");
    assert_true(journal_test_rcpts(dir, qid, window, got));
    assert_string_equal(vstr_str(got), "edge@within.test");

    /* A shorter window (a smaller main.cf) leaves the edge one out too. */
    assert_false(journal_test_rcpts(dir, qid, window - 1, got));
    vstr_free(got);
    assert_int_equal(testlib_dir_remove(dir), 0);
}

/* test_near_edge - a segment begun before the arrival is read when last
   written no earlier than the arrival less the slack, passed over when
   written before that */
static void test_near_edge(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("fbnear");
    long long now = (long long) time(NULL);
    long long arrival = now - 3 * DAY;
    char qid[QID_SIZE];
    VSTR *got = vstr_alloc(100);

    assert_non_null(dir);
    journal_test_qid(qid, arrival);
    journal_test_segment(dir, arrival - DAY,
                         arrival - FEEDBACK_JOURNAL_SLACK - 1, 201, qid,
                         "stale@before.test");
    assert_false(journal_test_rcpts(dir, qid, 31 * DAY, got));
    journal_test_segment(dir, arrival - DAY + 1,
                         arrival - FEEDBACK_JOURNAL_SLACK, 202, qid,
                         "early@within.test");
    assert_true(journal_test_rcpts(dir, qid, 31 * DAY, got));
    assert_string_equal(vstr_str(got), "early@within.test");
    vstr_free(got);
    assert_int_equal(testlib_dir_remove(dir), 0);
}

/* test_repeat_in_an_older_segment - the earlier copy's event is in a
   segment begun before the one with the delivered event (its feedback
   process opened it first) but written since: found, a repeat; one
   written last before the delivered event's segment began (less the
   slack) is not read */
static void test_repeat_in_an_older_segment(void **state)
{
    long long now = (long long) time(NULL);
    char qid[QID_SIZE];

    for (int recent = 1; recent >= 0; recent--) {
        TESTLIB_DIR *dir = testlib_dir_create("fbolder");
        FEEDBACK_ORIG *orig = feedback_orig_alloc();

        assert_non_null(dir);
        journal_test_qid(qid, now - 100);
        journal_test_complaint(
            dir, now - 2000,
            recent ? now : now - 90 - FEEDBACK_JOURNAL_SLACK - 1, 303, qid);
        journal_test_segment(dir, now - 90, now - 80, 301, qid,
                             "rep@dest.test");
        feedback_journal_find(dir->path, qid, 280, EVENTS_COMPLAINED, "280",
                              orig);
        assert_true(orig->found);
        assert_string_equal(vstr_str(orig->recipient), "rep@dest.test");
        assert_int_equal(orig->repeated, recent);
        feedback_orig_free(orig);
        assert_int_equal(testlib_dir_remove(dir), 0);
    }
}

/* test_lock_orders_repeats - the first copy of a report holds its
   message's lock (a report on another message takes its own at once)
   while the second copy waits for it; the first's complained event is written
   (a segment of another feedback process), the lock let go: only then
   does the second search, and it finds the event a repeat */
static void test_lock_orders_repeats(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("fblock");
    long long now = (long long) time(NULL);
    struct timeval tv = {(time_t) now, 600};
    struct timespec pause = {0, 200 * 1000000L};
    VSTR *name = vstr_alloc(64);
    VSTR *text = vstr_alloc(200);
    char qid[QID_SIZE];
    char other[QID_SIZE];
    int ready[2];
    int status;
    char byte;
    pid_t pid;
    int lock;

    assert_non_null(dir);
    journal_test_qid(qid, now - 5);
    journal_test_segment(dir, now - 10, now, 301, qid, "rep@dest.test");
    assert_true((lock = feedback_journal_lock(dir->path, qid)) >= 0);
    /* Another message's reports do not wait for this one's. */
    journal_test_qid(other, now - 6);
    if ((pid = fork()) == 0) {
        (void) alarm(5);
        (void) close(lock);
        _exit(feedback_journal_lock(dir->path, other) >= 0 ? 0 : 1);
    }
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(pipe(ready), 0);
    if ((pid = fork()) == 0) {
        FEEDBACK_ORIG *orig = feedback_orig_alloc();
        int fd;

        (void) alarm(20); /* a lock never let go fails the test */
        /* The parent's descriptor (and its lock) is not ours to keep. */
        (void) close(lock);
        (void) close(ready[0]);
        (void) write(ready[1], "x", 1);
        fd = feedback_journal_lock(dir->path, qid);
        feedback_journal_find(dir->path, qid, 280, EVENTS_COMPLAINED, "280",
                              orig);
        _exit(fd >= 0 && orig->found && orig->repeated ? 0 : 1);
    }
    assert_true(pid > 0);
    (void) close(ready[1]);
    assert_int_equal(read(ready[0], &byte, 1), 1);
    (void) nanosleep(&pause, NULL);
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0); /* it waits */
    events_segment_name(name, &tv, 302, "feedback");
    vstr_sprintf(text,
                 "{\"id\":\"n/%s/complained/280\",\"kind\":\"%s\","
                 "\"qid\":\"%s\",\"recipient\":\"rep@dest.test\"}\n",
                 qid, EVENTS_COMPLAINED, qid);
    (void) testlib_write(dir, vstr_str(name), vstr_str(text));
    feedback_journal_unlock(lock);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    (void) close(ready[0]);
    vstr_free(name);
    vstr_free(text);
    assert_int_equal(testlib_dir_remove(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_far_edge),
        cmocka_unit_test(test_near_edge),
        cmocka_unit_test(test_repeat_in_an_older_segment),
        cmocka_unit_test(test_lock_orders_repeats),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
