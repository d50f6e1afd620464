/*
 * events_pos_test - unit tests for exporter positions: the file's parser
 * (strict) and writer, the floor's advance, which segments are finished,
 * and the listing of a real directory
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <cmocka.h>

#include "events_pos.h"
#include "mymalloc.h"
#include "testlib.h"
#include "vstr.h"

#define SEG_A "20261205T090000.000001Z-100-qmgr.jsonl"
#define SEG_B "20261205T090001.000001Z-200-cleanup.jsonl"
#define SEG_C "20261205T090002.000001Z-100-qmgr.jsonl"
#define SEG_D "20261205T090003.000001Z-300-cleanup.jsonl"

/* test_setup - a fresh directory, the log captured there */
static int test_setup(void **state)
{
    TESTLIB_DIR *tmp = testlib_dir_create("events_pos_test");

    if (tmp == NULL || testlib_log_capture(tmp, "events_pos_test") < 0)
        return -1;
    *state = tmp;
    return 0;
}

/* test_teardown - remove the temp directory */
static int test_teardown(void **state)
{
    return testlib_dir_remove(*state);
}

/* parse_ok - text parses, and formats back to itself */
static EVENTS_POS *parse_ok(const char *text)
{
    EVENTS_POS *pos = events_pos_alloc();
    VSTR *why = vstr_alloc(10);
    VSTR *out = vstr_alloc(10);

    assert_int_equal(events_pos_parse(pos, text, strlen(text), why), 0);
    events_pos_format(pos, out);
    assert_string_equal(vstr_str(out), text);
    vstr_free(why);
    vstr_free(out);
    return pos;
}

/* parse_bad - text is refused with why containing what */
static void parse_bad(const char *text, size_t len, const char *what)
{
    EVENTS_POS *pos = events_pos_alloc();
    VSTR *why = vstr_alloc(10);

    assert_int_equal(events_pos_parse(pos, text, len, why), -1);
    if (strstr(vstr_str(why), what) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", vstr_str(why), what);
    assert_null(pos->floor);
    assert_int_equal(pos->count, 0);
    events_pos_free(pos);
    vstr_free(why);
}

static void test_parse_format(void **state)
{
    EVENTS_POS *pos;

    pos = parse_ok("sluice-events-position 1\nfloor -\n");
    assert_null(pos->floor);
    assert_int_equal(events_pos_offset(pos, SEG_A), 0);
    events_pos_free(pos);

    pos = parse_ok("sluice-events-position 1\nfloor " SEG_A "\nsegment " SEG_B
                   " 0\nsegment " SEG_C " 9223372036854775807\n");
    assert_string_equal(pos->floor, SEG_A);
    assert_int_equal(events_pos_offset(pos, SEG_A), -1);
    assert_int_equal(events_pos_offset(pos, SEG_B), 0);
    assert_int_equal(events_pos_offset(pos, SEG_C), 9223372036854775807LL);
    assert_int_equal(events_pos_offset(pos, SEG_D), 0);
    events_pos_free(pos);
}

static void test_parse_rejects(void **state)
{
    static const char nul[] = "sluice-events-position 1\nfloor -\0\n";

    parse_bad("", 0, "is empty");
    parse_bad("sluice-events-position 1\nfloor -", 33, "newline");
    parse_bad("sluice-events-position 2\nfloor -\n", 33, "line 1");
    parse_bad("sluice-events-position 1\n", 25, "no floor");
    parse_bad("sluice-events-position 1\nfloor x\n", 33, "line 2 names no");
    parse_bad(nul, sizeof(nul) - 1, "NUL");
    parse_bad("sluice-events-position 1\nfloor -\nsegment " SEG_A "\n",
              strlen("sluice-events-position 1\nfloor -\nsegment " SEG_A "\n"),
              "line 3 is not");
    parse_bad("sluice-events-position 1\nfloor -\nsegment ../x 1\n",
              strlen("sluice-events-position 1\nfloor -\nsegment ../x 1\n"),
              "names no segment");
#define BAD_OFFSET(o, what)                                                    \
    parse_bad("sluice-events-position 1\nfloor -\nsegment " SEG_A " " o "\n",  \
              strlen("sluice-events-position 1\nfloor -\nsegment " SEG_A " " o \
                     "\n"),                                                    \
              what)
    BAD_OFFSET("-1", "offset");
    BAD_OFFSET("01", "offset");
    BAD_OFFSET("", "offset");
    BAD_OFFSET("12x", "offset");
    BAD_OFFSET("9223372036854775808", "offset");
    /* Out of order: not after the floor, or not ascending. */
    parse_bad("sluice-events-position 1\nfloor " SEG_B "\nsegment " SEG_A
              " 1\n",
              strlen("sluice-events-position 1\nfloor " SEG_B "\nsegment " SEG_A
                     " 1\n"),
              "line 3 is out of order");
    parse_bad("sluice-events-position 1\nfloor -\nsegment " SEG_B
              " 1\nsegment " SEG_A " 1\n",
              strlen("sluice-events-position 1\nfloor -\nsegment " SEG_B
                     " 1\nsegment " SEG_A " 1\n"),
              "line 4 is out of order");
    parse_bad("sluice-events-position 1\nfloor -\nsegment " SEG_A
              " 1\nsegment " SEG_A " 1\n",
              strlen("sluice-events-position 1\nfloor -\nsegment " SEG_A
                     " 1\nsegment " SEG_A " 1\n"),
              "out of order");
}

/* list_of - a listing of n segments */
static EVENTS_LIST *list_of(const char *const *names, const long long *sizes,
                            const bool *finished, size_t n)
{
    EVENTS_LIST *list = mycalloc(1, sizeof(*list));

    list->segs = mycalloc(n ? n : 1, sizeof(*list->segs));
    for (size_t i = 0; i < n; i++) {
        list->segs[i].name = mystrdup(names[i]);
        list->segs[i].size = sizes[i];
        list->segs[i].finished = finished[i];
    }
    list->count = n;
    return list;
}

static void test_advance(void **state)
{
    static const char *const names[] = {SEG_A, SEG_B, SEG_C, SEG_D};
    long long sizes[] = {10, 20, 30, 40};
    bool finished[] = {true, false, true, true};
    EVENTS_LIST *list = list_of(names, sizes, finished, 4);
    EVENTS_POS *pos = events_pos_alloc();

    /* Nothing read: nothing to pass. */
    assert_false(events_pos_advance(pos, list));
    assert_null(pos->floor);
    /* A read to its end and finished: passed; B read but live: the floor
       stops there, though C and D are read. */
    events_pos_set(pos, SEG_A, 10);
    events_pos_set(pos, SEG_B, 20);
    events_pos_set(pos, SEG_C, 30);
    events_pos_set(pos, SEG_D, 39);
    assert_true(events_pos_advance(pos, list));
    assert_string_equal(pos->floor, SEG_A);
    assert_int_equal(pos->count, 3);
    assert_int_equal(events_pos_offset(pos, SEG_B), 20);
    /* B finishes: the floor passes B and C, not D (one byte unread). */
    list->segs[1].finished = true;
    assert_true(events_pos_advance(pos, list));
    assert_string_equal(pos->floor, SEG_C);
    assert_int_equal(pos->count, 1);
    assert_int_equal(events_pos_offset(pos, SEG_B), -1);
    assert_int_equal(events_pos_offset(pos, SEG_D), 39);
    assert_false(events_pos_advance(pos, list));
    /* A segment that is gone is forgotten. */
    list->count = 3;
    assert_true(events_pos_advance(pos, list));
    assert_int_equal(pos->count, 0);
    list->count = 4;
    events_pos_free(pos);
    events_list_free(list);
}

/* alive_100 - only pid 100 lives */
static bool alive_100(long pid)
{
    return pid == 100;
}

static void test_mark_finished(void **state)
{
    static const char *const names[] = {SEG_A, SEG_B, SEG_C, SEG_D};
    long long sizes[] = {1, 1, 1, 1};
    bool finished[] = {false, false, false, false};
    EVENTS_LIST *list = list_of(names, sizes, finished, 4);

    events_list_mark_finished(list, alive_100);
    assert_true(list->segs[0].finished); /* 100 opened C later */
    assert_true(list->segs[1].finished); /* 200 is gone */
    assert_false(list->segs[2].finished); /* 100's current one */
    assert_true(list->segs[3].finished); /* 300 is gone */
    events_list_free(list);
}

static void test_list_and_save(void **state)
{
    TESTLIB_DIR *tmp = *state;
    VSTR *why = vstr_alloc(10);
    VSTR *name = vstr_alloc(10);
    EVENTS_POS *pos = events_pos_alloc();
    EVENTS_POS *back = events_pos_alloc();
    EVENTS_LIST *list;
    pid_t child;

    /* A gone writer (a reaped child), a live one (us), something else. */
    if ((child = fork()) == 0)
        _exit(0);
    assert_true(child > 0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    vstr_sprintf(name, "20261205T090000.000001Z-%ld-qmgr.jsonl", (long) child);
    testlib_write(tmp, vstr_str(name), "{}\n{}\n");
    vstr_sprintf(name, "20261205T090001.000001Z-%ld-qmgr.jsonl",
                 (long) getpid());
    testlib_write(tmp, vstr_str(name), "{}\n");
    testlib_write(tmp, "exporters.jsonl", "{}\n");
    assert_int_equal(mkdir(testlib_path(tmp, EVENTS_POS_DIR), 0700), 0);
    list = events_list(tmp->path, why);
    assert_non_null(list);
    assert_int_equal(list->count, 2);
    assert_int_equal(list->segs[0].size, 6);
    assert_true(list->segs[0].finished);
    assert_false(list->segs[1].finished);

    /* Saved and loaded back the same; a missing file is nothing read. */
    events_pos_set(pos, list->segs[0].name, 6);
    events_pos_set(pos, list->segs[1].name, 3);
    assert_true(events_pos_advance(pos, list));
    assert_int_equal(
        events_pos_save(pos, testlib_path(tmp, "exporters/w.pos"), why), 0);
    assert_int_equal(
        events_pos_load(back, testlib_path(tmp, "exporters/w.pos"), why), 0);
    assert_string_equal(back->floor, list->segs[0].name);
    assert_int_equal(events_pos_offset(back, list->segs[1].name), 3);
    assert_int_equal(
        events_pos_load(back, testlib_path(tmp, "exporters/none.pos"), why), 0);
    assert_null(back->floor);
    assert_int_equal(back->count, 0);
    /* A damaged file is an error naming it. */
    testlib_write(tmp, "exporters/bad.pos", "sluice-events-position 1\n");
    assert_int_equal(
        events_pos_load(back, testlib_path(tmp, "exporters/bad.pos"), why), -1);
    assert_non_null(strstr(vstr_str(why), "bad.pos: has no floor line"));
    events_list_free(list);

    /* A missing directory lists nothing. */
    list = events_list(testlib_path(tmp, "nowhere"), why);
    assert_non_null(list);
    assert_int_equal(list->count, 0);
    events_list_free(list);
    events_pos_free(pos);
    events_pos_free(back);
    vstr_free(why);
    vstr_free(name);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_format),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_advance),
        cmocka_unit_test(test_mark_finished),
        cmocka_unit_test_setup_teardown(test_list_and_save, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
