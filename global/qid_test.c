/*
 * qid_test - unit tests for queue IDs: order, validity, uniqueness across a
 * fork, the encoded time
 */
#include "sys_defs.h"

#include <sys/time.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <cmocka.h>

#include "qid.h"

#define TEST_COUNT 10000

static void test_increasing(void **state)
{
    char prev[QID_SIZE];
    char next[QID_SIZE];

    qid_new(prev);
    assert_true(qid_valid(prev));
    for (int i = 0; i < TEST_COUNT; i++) {
        qid_new(next);
        assert_int_equal(strlen(next), QID_LEN);
        if (!qid_valid(next))
            fail_msg("invalid ID \"%s\"", next);
        if (strcmp(prev, next) >= 0)
            fail_msg("\"%s\" does not follow \"%s\"", next, prev);
        memcpy(prev, next, QID_SIZE);
    }
}

static void test_fork(void **state)
{
    char parent_id[QID_SIZE];
    char child_id[QID_SIZE];
    int pipe_fd[2];
    pid_t pid;
    int status;

    qid_new(parent_id);
    assert_int_equal(pipe(pipe_fd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char id[QID_SIZE];

        qid_new(id);
        _exit(write(pipe_fd[1], id, QID_SIZE) == QID_SIZE ? 0 : 1);
    }
    qid_new(parent_id);
    assert_int_equal(read(pipe_fd[0], child_id, QID_SIZE), QID_SIZE);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(pipe_fd[0]);
    close(pipe_fd[1]);
    assert_true(qid_valid(child_id));
    assert_string_not_equal(parent_id, child_id);
    /* The pid part differs. */
    assert_memory_not_equal(parent_id + 11, child_id + 11, 5);
    /* Each process knows its own IDs (qfile_reuse.c prefers their files). */
    assert_true(qid_mine(parent_id));
    assert_false(qid_mine(child_id));
}

static void test_valid(void **state)
{
    char id[QID_SIZE];
    char bad[QID_SIZE];
    static const char *const invalid[] = {
        "",
        "../x",
        ".tmp.X",
        "0123456789ABCDE",
        "0123456789ABCDEFG",
        "0123456789abcdef", /* lower case */
        "0123456789ABCDEI", /* I is not in the alphabet */
        "0123456789ABCDEO",
        "0123456789ABCDEU",
        "0123456789ABCDEZ",
        "0123456789ABCDE/",
        "0000000YYYY00000", /* microseconds > 999999 */
        NULL,
    };

    qid_new(id);
    assert_true(qid_valid(id));
    assert_true(qid_valid("0123456789ABCDEF"));
    for (const char *const *cp = invalid; *cp; cp++)
        if (qid_valid(*cp))
            fail_msg("accepted \"%s\"", *cp);
    assert_false(qid_valid(NULL));
    memcpy(bad, id, QID_SIZE);
    bad[3] = '.';
    assert_false(qid_valid(bad));
}

static void test_time(void **state)
{
    char id[QID_SIZE];
    struct timeval before;
    struct timeval after;
    time_t sec;
    long usec;
    long long id_us;

    gettimeofday(&before, NULL);
    qid_new(id);
    gettimeofday(&after, NULL);
    qid_time(id, &sec, &usec);
    assert_true(usec >= 0 && usec < 1000000);
    id_us = (long long) sec * 1000000 + usec;
    assert_true(id_us >= (long long) before.tv_sec * 1000000 + before.tv_usec);
    assert_true(id_us <= (long long) after.tv_sec * 1000000 + after.tv_usec);

    /* A known value. */
    qid_time("0000010100100000", &sec, &usec);
    assert_int_equal(sec, 32);
    assert_int_equal(usec, 32768 + 1);
    assert_int_equal(qid_hash_char("0000010100100000"), '1');
    assert_int_equal(qid_hash_char("0000010X00000000"), 'X');
    qid_time("0000010X00000000", &sec, &usec);
    assert_int_equal(usec, 30 * 32768);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_increasing),
        cmocka_unit_test(test_fork),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_time),
    };

    return cmocka_run_group_tests_name("qid", tests, NULL, NULL);
}
