/*
 * msg_test - unit tests for logging: the line format and the file target
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <setjmp.h>
#include <time.h>
#include <cmocka.h>

#include <sys/stat.h>

#include "msg.h"
#include "testlib.h"

static jmp_buf fatal_jmp;

static void fatal_hook(int status)
{
    longjmp(fatal_jmp, status);
}

static void test_line_format(void **state)
{
    char buf[256];
    struct tm tm = {.tm_year = 126,
                    .tm_mon = 10,
                    .tm_mday = 8,
                    .tm_hour = 10,
                    .tm_min = 0,
                    .tm_sec = 5,
                    .tm_isdst = -1};
    time_t when = mktime(&tm);
    size_t len;

    len = msg_format_line(buf, sizeof(buf), when, "host", "sluice/smtpd", 123,
                          MSG_WARN, "bad thing");
    assert_string_equal(
        buf, "Nov  8 10:00:05 host sluice/smtpd[123]: warning: bad thing\n");
    assert_int_equal(len, strlen(buf));
}

/* The stamp is kept from one line to the next: it must follow the time. */
static void test_line_stamp_follows_time(void **state)
{
    struct tm tm = {.tm_year = 126,
                    .tm_mon = 11,
                    .tm_mday = 31,
                    .tm_hour = 23,
                    .tm_min = 59,
                    .tm_sec = 59,
                    .tm_isdst = -1};
    time_t when = mktime(&tm);
    char buf[256];
    size_t len;

    msg_format_line(buf, sizeof(buf), when, "h", "t", 7, MSG_INFO, "a");
    assert_string_equal(buf, "Dec 31 23:59:59 h t[7]: a\n");
    msg_format_line(buf, sizeof(buf), when + 1, "h", "t", 7, MSG_INFO, "b");
    assert_string_equal(buf, "Jan  1 00:00:00 h t[7]: b\n");
    msg_format_line(buf, sizeof(buf), when, "h", "t", -42, MSG_PANIC, "c");
    assert_string_equal(buf, "Dec 31 23:59:59 h t[-42]: panic: c\n");
    /* A line that just fits, and one a byte longer. */
    len = msg_format_line(buf, 29, when, "h", "t", 7, MSG_INFO, "abc");
    assert_int_equal(len, 28);
    assert_string_equal(buf, "Dec 31 23:59:59 h t[7]: abc\n");
    len = msg_format_line(buf, 28, when, "h", "t", 7, MSG_INFO, "abc");
    assert_int_equal(len, 27);
    assert_string_equal(buf, "Dec 31 23:59:59 h t[7]: ab\n");
}

static void test_line_truncated(void **state)
{
    char buf[40];
    char text[200];

    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = 0;
    msg_format_line(buf, sizeof(buf), 0, "h", "t", 1, MSG_INFO, text);
    assert_int_equal(strlen(buf), sizeof(buf) - 1);
    assert_int_equal(buf[sizeof(buf) - 2], '\n');
}

static void test_file_target(void **state)
{
    char path[] = "/tmp/msg_test.XXXXXX";
    int fd = mkstemp(path);
    char buf[1024];
    ssize_t len;
    char expect[64];

    assert_true(fd >= 0);
    msg_init("sluice", "/some/dir/tester");
    msg_log_stderr(false);
    assert_int_equal(msg_log_file(path), 0);
    errno = ENOENT;
    msg_info("hello %s", "world");
    msg_info("100%% sure, %%m stays");
    msg_warn("open %s: %m", "x");
    msg_exit_hook(fatal_hook);
    if (setjmp(fatal_jmp) == 0) {
        msg_fatal("cannot go on");
        fail();
    }
    len = read(fd, buf, sizeof(buf) - 1);
    assert_true(len > 0);
    buf[len] = 0;
    snprintf(expect, sizeof(expect), " sluice/tester[%ld]: hello world\n",
             (long) getpid());
    assert_non_null(strstr(buf, expect));
    assert_non_null(
        strstr(buf, "]: warning: open x: No such file or directory\n"));
    assert_non_null(strstr(buf, "]: fatal: cannot go on\n"));
    assert_non_null(strstr(buf, "]: 100% sure, %m stays\n"));
    assert_string_equal(msg_progname(), "tester");
    close(fd);
    unlink(path);
}

static void test_no_newline_injection(void **state)
{
    char path[] = "/tmp/msg_test.XXXXXX";
    int fd = mkstemp(path);
    char buf[1024];
    ssize_t len;
    int lines = 0;

    assert_true(fd >= 0);
    msg_log_stderr(false);
    assert_int_equal(msg_log_file(path), 0);
    msg_info("a\nfake line\r\n");
    len = read(fd, buf, sizeof(buf) - 1);
    assert_true(len > 0);
    buf[len] = 0;
    for (char *cp = buf; *cp; cp++)
        lines += (*cp == '\n');
    assert_int_equal(lines, 1);
    close(fd);
    unlink(path);
}

/* A format too long for the line is cut as it always was: a "%%" that
   does not fit whole is dropped, not left as a lone '%'. */
static void test_long_format_cut(void **state)
{
    char path[] = "/tmp/msg_test.XXXXXX";
    int fd = mkstemp(path);
    static char fmt[4094 + 3];
    static char buf[8192];
    ssize_t len;
    char *text;

    assert_true(fd >= 0);
    memset(fmt, 'x', 4094);
    memcpy(fmt + 4094, "%%", 3);
    msg_log_stderr(false);
    assert_int_equal(msg_log_file(path), 0);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-security"
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    msg_info(fmt);
#pragma GCC diagnostic pop
    len = read(fd, buf, sizeof(buf) - 1);
    assert_true(len > 0);
    buf[len] = 0;
    assert_non_null(text = strstr(buf, "]: x"));
    text += 3;
    assert_int_equal(strspn(text, "x"), 4094);
    assert_string_equal(text + 4094, "\n");
    close(fd);
    unlink(path);
}

/* The log names clients, senders and recipients: not for every user. */
static void test_file_mode(void **state)
{
    TESTLIB_DIR *tmp = testlib_dir_create("msg_test");
    const char *path;
    struct stat st;
    mode_t old_mask;

    assert_non_null(tmp);
    path = testlib_path(tmp, "maillog");
    old_mask = umask(0);
    assert_int_equal(msg_log_file(path), 0);
    umask(old_mask);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(testlib_dir_remove(tmp), 0);
}

/* stderr_from: only lines of that level and worse are copied to stderr
   (a daemon under a detached master: its stderr is /dev/null) */
static void test_stderr_from(void **state)
{
    char path[] = "/tmp/msg_test.XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(STDERR_FILENO);
    char buf[1024];
    ssize_t len;

    assert_true(fd >= 0 && saved >= 0);
    msg_init("sluice", "tester");
    assert_int_equal(msg_log_file("/dev/null"), 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    msg_log_stderr_from(MSG_WARN);
    msg_info("quiet line");
    msg_warn("loud line");
    msg_log_stderr(true);
    msg_info("asked line");
    msg_log_stderr(false);
    msg_warn("silent line");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    (void) close(saved);
    len = pread(fd, buf, sizeof(buf) - 1, 0);
    assert_true(len > 0);
    buf[len] = 0;
    assert_null(strstr(buf, "quiet line"));
    assert_non_null(strstr(buf, "sluice/tester: warning: loud line\n"));
    assert_non_null(strstr(buf, "sluice/tester: asked line\n"));
    assert_null(strstr(buf, "silent line"));
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_format),
        cmocka_unit_test(test_line_truncated),
        cmocka_unit_test(test_line_stamp_follows_time),
        cmocka_unit_test(test_long_format_cut),
        cmocka_unit_test(test_file_target),
        cmocka_unit_test(test_no_newline_injection),
        cmocka_unit_test(test_file_mode),
        cmocka_unit_test(test_stderr_from),
    };

    return cmocka_run_group_tests_name("msg", tests, NULL, NULL);
}
