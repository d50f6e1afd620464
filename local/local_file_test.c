/*
 * local_file_test - which .forward and :include: files are obeyed
 *
 * Real files under a fresh mkdtemp() folder that is removed afterwards:
 * a good file, a missing one, group- and world-writable ones, a FIFO (no
 * hang: an alarm fails the test if the read blocks), a file of another
 * user (when the test runs as root) and one that is too large.
 */
#include "sys_defs.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/stat.h>

#include "local.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

static char test_dir[64];

/* test_path - a file in the test folder */
static const char *test_path(VSTR *buf, const char *name)
{
    vstr_sprintf(buf, "%s/%s", test_dir, name);
    return vstr_str(buf);
}

/* test_make - a file with text and mode */
static const char *test_make(VSTR *buf, const char *name, const char *text,
                             mode_t mode)
{
    test_path(buf, name);
    assert_int_equal(safe_file_write(vstr_str(buf), text, strlen(text), mode),
                     0);
    assert_int_equal(chmod(vstr_str(buf), mode), 0);
    return vstr_str(buf);
}

/* test_read - local_file_read for our own uid */
static char *test_read(const char *path, uid_t owner, LOCAL_FILE_STAT *stat,
                       VSTR *why)
{
    char *data;

    alarm(10); /* a blocking open fails the test */
    data = local_file_read(path, owner, 1000, stat, why);
    alarm(0);
    return data;
}

/* test_good_and_missing - a safe file is read, a missing one says so */
static void test_good_and_missing(void **state)
{
    VSTR *path = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    LOCAL_FILE_STAT stat;
    char *data;

    test_make(path, "good", "bob@remote.test\n", 0644);
    data = test_read(vstr_str(path), getuid(), &stat, why);
    assert_non_null(data);
    assert_int_equal(stat, LOCAL_FILE_OK);
    assert_string_equal(data, "bob@remote.test\n");
    myfree(data);
    unlink(vstr_str(path));

    assert_null(test_read(test_path(path, "none"), getuid(), &stat, why));
    assert_int_equal(stat, LOCAL_FILE_MISSING);

    test_make(path, "big", "", 0600);
    {
        VSTR *big = vstr_alloc(2000);

        for (int i = 0; i < 1500; i++)
            vstr_addch(big, 'x');
        assert_int_equal(
            safe_file_write(vstr_str(path), vstr_str(big), vstr_len(big), 0600),
            0);
        vstr_free(big);
    }
    assert_null(test_read(vstr_str(path), getuid(), &stat, why));
    assert_int_equal(stat, LOCAL_FILE_ERROR);
    unlink(vstr_str(path));
    vstr_free(path);
    vstr_free(why);
}

/* test_writable - group or world write: not obeyed */
static void test_writable(void **state)
{
    static const mode_t modes[] = {0666, 0620, 0602};
    VSTR *path = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    LOCAL_FILE_STAT stat;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(modes); i++) {
        test_make(path, "ww", "|touch /tmp/never\n", modes[i]);
        assert_null(test_read(vstr_str(path), getuid(), &stat, why));
        assert_int_equal(stat, LOCAL_FILE_UNSAFE);
        assert_non_null(strstr(vstr_str(why), "writable"));
        unlink(vstr_str(path));
    }
    vstr_free(path);
    vstr_free(why);
}

/* test_fifo - a FIFO is refused at once, not read (which would block) */
static void test_fifo(void **state)
{
    VSTR *path = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    LOCAL_FILE_STAT stat;

    assert_int_equal(mkfifo(test_path(path, "fifo"), 0600), 0);
    assert_null(test_read(vstr_str(path), getuid(), &stat, why));
    assert_int_equal(stat, LOCAL_FILE_UNSAFE);
    assert_non_null(strstr(vstr_str(why), "not a regular file"));
    unlink(vstr_str(path));
    vstr_free(path);
    vstr_free(why);
}

/* test_owner - another user's file is refused; root's is accepted */
static void test_owner(void **state)
{
    VSTR *path = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    LOCAL_FILE_STAT stat;
    char *data;

    if (geteuid() != 0) {
        /* Without root we cannot make a file of someone else's: our own
           file, read for another uid, is the same check. */
        test_make(path, "own", "x@remote.test\n", 0600);
        assert_null(test_read(vstr_str(path), getuid() + 1, &stat, why));
        assert_int_equal(stat, LOCAL_FILE_UNSAFE);
        unlink(vstr_str(path));
        vstr_free(path);
        vstr_free(why);
        return;
    }
    test_make(path, "theirs", "|id\n", 0644);
    assert_int_equal(chown(vstr_str(path), 1, 1), 0);
    assert_null(test_read(vstr_str(path), 0, &stat, why));
    assert_int_equal(stat, LOCAL_FILE_UNSAFE);
    assert_non_null(strstr(vstr_str(why), "owned by uid 1"));
    assert_null(test_read(vstr_str(path), 2, &stat, why));
    assert_int_equal(stat, LOCAL_FILE_UNSAFE);
    data = test_read(vstr_str(path), 1, &stat, why); /* uid 1's own */
    assert_non_null(data);
    myfree(data);
    assert_int_equal(chown(vstr_str(path), 0, 0), 0);
    data = test_read(vstr_str(path), 1, &stat, why); /* root's is fine */
    assert_non_null(data);
    assert_int_equal(stat, LOCAL_FILE_OK);
    myfree(data);
    unlink(vstr_str(path));
    vstr_free(path);
    vstr_free(why);
}

/* setup - a fresh folder */
static int setup(void **state)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/local_file_test.XXXXXX");
    return mkdtemp(test_dir) ? 0 : -1;
}

/* teardown - remove it (every test cleans up after itself) */
static int teardown(void **state)
{
    return rmdir(test_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_and_missing),
        cmocka_unit_test(test_writable),
        cmocka_unit_test(test_fifo),
        cmocka_unit_test(test_owner),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
