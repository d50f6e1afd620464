/*
 * trace_test - unit tests for W3C traceparent parsing, fresh traces,
 * the sampler's extremes and the derived span ids
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

/* test_parse_valid - the W3C example, flags, white space, a later
   version with more fields */
static void test_parse_valid(void **state)
{
    TRACE_CTX ctx;
    char text[TRACE_TEXT_LEN + 1];

    assert_true(trace_parse("00-" TID "-" PID "-01", &ctx));
    assert_string_equal(ctx.trace_id, TID);
    assert_string_equal(ctx.parent_id, PID);
    assert_true(ctx.sampled);
    assert_true(trace_has_parent(&ctx));
    trace_format(&ctx, text, sizeof(text));
    assert_string_equal(text, "00-" TID "-" PID "-01");
    assert_true(trace_parse(" 00-" TID "-" PID "-00\r\n", &ctx));
    assert_false(ctx.sampled);
    assert_true(trace_parse("01-" TID "-" PID "-03-extra", &ctx));
    assert_true(ctx.sampled);
}

/* test_parse_invalid - what W3C says to ignore */
static void test_parse_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        "00-" TID "-" PID,
        "00-" TID "-" PID "-01-extra", /* version 00 has four fields */
        "ff-" TID "-" PID "-01",
        "00-00000000000000000000000000000000-" PID "-01",
        "00-" TID "-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01",
        "00-" TID "-" PID "-0g",
        "00_" TID "-" PID "-01",
        "00-" TID "-" PID "-01 junk",
        "00-" TID "x" PID "-01",
    };
    TRACE_CTX ctx;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(trace_parse(bad[i], &ctx));
    /* The queue file's own root: a zero parent is valid there only. */
    assert_true(trace_parse_attr("00-" TID "-0000000000000000-01", &ctx));
    assert_false(trace_has_parent(&ctx));
    assert_false(trace_parse_attr("00-" TID "-" PID "-0x", &ctx));
}

/* test_new - fresh traces: random, rootless, sampled by the ratio */
static void test_new(void **state)
{
    TRACE_CTX a;
    TRACE_CTX b;
    TRACE_CTX c;
    char text[TRACE_TEXT_LEN + 1];
    int sampled = 0;

    trace_new(&a, 1.0);
    trace_new(&b, 0.0);
    assert_true(a.sampled);
    assert_false(b.sampled);
    assert_string_not_equal(a.trace_id, b.trace_id);
    assert_false(trace_has_parent(&a));
    trace_format(&a, text, sizeof(text));
    assert_true(trace_parse_attr(text, &c));
    assert_string_equal(c.trace_id, a.trace_id);
    for (int i = 0; i < 1000; i++) {
        trace_new(&c, 0.5);
        sampled += c.sampled;
    }
    /* Far outside these only with probability ~1e-20. */
    assert_true(sampled > 300 && sampled < 700);
}

/* test_fork_distinct - random bytes come from a pool filled in bulk: a
   fork()ed child must not hand out the trace IDs its parent will (it
   refills), and many IDs in a row are all different */
static void test_fork_distinct(void **state)
{
    TRACE_CTX mine;
    TRACE_CTX seen;
    int fds[2];
    pid_t pid;
    int status;

    trace_new(&mine, 1.0); /* the pool is filled and partly used */
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        TRACE_CTX child;

        trace_new(&child, 1.0);
        _exit(write(fds[1], child.trace_id, TRACE_ID_HEX) == TRACE_ID_HEX ? 0
                                                                          : 1);
    }
    (void) close(fds[1]);
    memset(seen.trace_id, 0, sizeof(seen.trace_id));
    assert_int_equal(read(fds[0], seen.trace_id, TRACE_ID_HEX), TRACE_ID_HEX);
    (void) close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    trace_new(&mine, 1.0); /* what the parent hands out next */
    assert_string_not_equal(seen.trace_id, mine.trace_id);
    for (int i = 0; i < 100; i++) {
        TRACE_CTX next;

        trace_new(&next, 1.0);
        assert_string_not_equal(next.trace_id, mine.trace_id);
        assert_string_not_equal(next.trace_id, seen.trace_id);
        mine = next;
    }
}

/* test_span_id - stable, 16 hex digits, different for different keys */
static void test_span_id(void **state)
{
    char a[TRACE_SPAN_HEX + 1];
    char b[TRACE_SPAN_HEX + 1];
    char c[TRACE_SPAN_HEX + 1];

    trace_span_id(TID, "Q1/receive", a, sizeof(a));
    trace_span_id(TID, "Q1/receive", b, sizeof(b));
    trace_span_id(TID, "n/Q1/delivered/280", c, sizeof(c));
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), TRACE_SPAN_HEX);
    assert_int_equal(strspn(a, "0123456789abcdef"), TRACE_SPAN_HEX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_span_id),
        cmocka_unit_test(test_fork_distinct),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
