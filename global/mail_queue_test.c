/*
 * mail_queue_test - unit tests for queue directories: names, paths, the
 * directory tree, durable moves between queues, in a fresh temp directory
 */
#include "sys_defs.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "mail_queue.h"
#include "qid.h"
#include "testlib.h"
#include "vstr.h"

static const char test_hash_chars[] = "0123456789ABCDEFGHJKLMNPQRSTVWXY";

/* test_setup - a fresh temp directory in *state */
static int test_setup(void **state)
{
    TESTLIB_DIR *tmp = testlib_dir_create("mail_queue_test");

    if (tmp == NULL)
        return -1;
    *state = tmp;
    return 0;
}

/* test_teardown - remove the temp directory and all below it */
static int test_teardown(void **state)
{
    return testlib_dir_remove(*state);
}

/* test_is_dir_mode - is path a directory with exactly mode? */
static bool test_is_dir_mode(const char *path, mode_t mode)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) &&
           (st.st_mode & 07777) == mode;
}

static void test_names_and_paths(void **state)
{
    VSTR *buf = vstr_alloc(0);
    size_t count = 0;
    static const char *const expect[] = {
        "maildrop", "incoming", "active", "deferred", "hold",
        "corrupt",  "defer",    "bounce", "private",  "public",
        "pid",      "events",   "api",    "stats",    "reuse",
    };

    while (mail_queue_names[count] != NULL)
        count++;
    assert_int_equal(count, SLUICE_ARRAY_LEN(expect));
    for (size_t i = 0; i < count; i++)
        assert_string_equal(mail_queue_names[i], expect[i]);
    assert_true(mail_queue_hashed("deferred"));
    assert_true(mail_queue_hashed("defer"));
    assert_true(mail_queue_hashed("bounce"));
    assert_false(mail_queue_hashed("incoming"));
    assert_false(mail_queue_hashed("active"));
    assert_false(mail_queue_hashed("hold"));
    assert_false(mail_queue_hashed("deferredx"));

    assert_ptr_equal(mail_queue_path(buf, "/q", "incoming", "0123456789ABCDEF"),
                     buf);
    assert_string_equal(vstr_str(buf), "/q/incoming/0123456789ABCDEF");
    mail_queue_path(buf, "/q", "deferred", "0123456789ABCDEF");
    assert_string_equal(vstr_str(buf), "/q/deferred/7/0123456789ABCDEF");
    mail_queue_path(buf, "/q", "bounce", "0000010X00000000");
    assert_string_equal(vstr_str(buf), "/q/bounce/X/0000010X00000000");

    /* A service's socket, whatever buf held before. */
    assert_ptr_equal(
        mail_queue_service(buf, "/q", MAIL_QUEUE_PRIVATE, "cleanup"), buf);
    assert_string_equal(vstr_str(buf), "/q/private/cleanup");
    mail_queue_service(buf, "/q", MAIL_QUEUE_PUBLIC, "qmgr");
    assert_string_equal(vstr_str(buf), "/q/public/qmgr");
    vstr_free(buf);
}

/* the queue checks a request's queue name passes */
static void test_known(void **state)
{
    for (const char *const *name = mail_queue_names; *name; name++)
        assert_true(mail_queue_known(*name));
    assert_true(mail_queue_of_messages("active"));
    assert_true(mail_queue_of_messages("deferred"));
    assert_true(mail_queue_of_messages("hold"));
    assert_true(mail_queue_known("private"));
    assert_false(mail_queue_of_messages("private"));
    assert_false(mail_queue_of_messages("pid"));
    assert_false(mail_queue_of_messages("defer"));
    assert_false(mail_queue_of_messages(".."));
    assert_false(mail_queue_of_messages("active/.."));
    assert_false(mail_queue_of_messages(""));
    assert_false(mail_queue_of_messages(NULL));
    assert_false(mail_queue_known("Active"));
    assert_false(mail_queue_known(NULL));
}

static void test_create_dirs(void **state)
{
    const char *tmp = ((TESTLIB_DIR *) *state)->path;
    VSTR *queue_dir = vstr_alloc(0);
    VSTR *path = vstr_alloc(0);
    VSTR *why = vstr_alloc(0);
    mode_t old_umask;
    int fd;

    /* queue_dir is created too; the mode holds whatever the umask. */
    vstr_sprintf(queue_dir, "%s/queue", tmp);
    old_umask = umask(0777);
    assert_int_equal(mail_queue_create_dirs(vstr_str(queue_dir), 0750, why), 0);
    umask(old_umask);
    assert_true(test_is_dir_mode(vstr_str(queue_dir), 0750));
    for (const char *const *name = mail_queue_names; *name; name++) {
        vstr_sprintf(path, "%s/%s", vstr_str(queue_dir), *name);
        assert_true(test_is_dir_mode(vstr_str(path), 0750));
        for (const char *hash = test_hash_chars; *hash; hash++) {
            vstr_sprintf(path, "%s/%s/%c", vstr_str(queue_dir), *name, *hash);
            if (mail_queue_hashed(*name))
                assert_true(test_is_dir_mode(vstr_str(path), 0750));
            else
                assert_int_equal(access(vstr_str(path), F_OK), -1);
        }
    }

    /* Existing directories are fine; a missing one is made again. */
    vstr_sprintf(path, "%s/defer/Q", vstr_str(queue_dir));
    assert_int_equal(rmdir(vstr_str(path)), 0);
    assert_int_equal(mail_queue_create_dirs(vstr_str(queue_dir), 0750, why), 0);
    assert_true(test_is_dir_mode(vstr_str(path), 0750));

    /* A file where a directory belongs is an error with a reason. */
    vstr_sprintf(path, "%s/hold", vstr_str(queue_dir));
    assert_int_equal(rmdir(vstr_str(path)), 0);
    fd = open(vstr_str(path), O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    vstr_reset(why);
    assert_int_equal(mail_queue_create_dirs(vstr_str(queue_dir), 0750, why),
                     -1);
    assert_non_null(
        strstr(vstr_str(why), "hold exists and is not a directory"));

    /* A queue_dir whose parent is missing is not made (no mkdir -p). */
    vstr_sprintf(path, "%s/no/such", tmp);
    vstr_reset(why);
    assert_int_equal(mail_queue_create_dirs(vstr_str(path), 0700, why), -1);
    assert_non_null(strstr(vstr_str(why), "mkdir"));

    vstr_free(queue_dir);
    vstr_free(path);
    vstr_free(why);
}

/* fchmod - the C library's, or a failure while test_chmod_fails is set;
   fsync - counted, to see the mark made durable */
static bool test_chmod_fails;
static int test_fsyncs;

int fchmod(int fd, mode_t mode)
{
    static __typeof__(&fchmod) real;

    if (test_chmod_fails) {
        errno = EPERM;
        return -1;
    }
    if (real == NULL &&
        (real = (__typeof__(&fchmod)) dlsym(RTLD_NEXT, "fchmod")) == NULL)
        abort();
    return real(fd, mode);
}

int fsync(int fd)
{
    static __typeof__(&fsync) real;

    if (real == NULL &&
        (real = (__typeof__(&fsync)) dlsym(RTLD_NEXT, "fsync")) == NULL)
        abort();
    test_fsyncs++;
    return real(fd);
}

/* test_make_file - create path with content */
static void test_make_file(const char *path, const char *content)
{
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), strlen(content));
    close(fd);
}

/* test_file_is - does path exist with content? */
static bool test_file_is(const char *path, const char *content)
{
    char buf[100];
    int fd = open(path, O_RDONLY);
    ssize_t n;

    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf));
    close(fd);
    return n == (ssize_t) strlen(content) && memcmp(buf, content, n) == 0;
}

static void test_move(void **state)
{
    const char *tmp = ((TESTLIB_DIR *) *state)->path;
    VSTR *queue_dir = vstr_alloc(0);
    VSTR *path = vstr_alloc(0);
    VSTR *why = vstr_alloc(0);
    char qid[QID_SIZE];
    char hash_dir[200];
    const char *q;

    vstr_sprintf(queue_dir, "%s/queue", tmp);
    q = vstr_str(queue_dir);
    assert_int_equal(mail_queue_create_dirs(q, 0700, why), 0);
    qid_new(qid);
    test_make_file(vstr_str(mail_queue_path(path, q, "incoming", qid)), "m1");

    /* Into a hashed queue whose hash directory is gone: it comes back. */
    assert_true(snprintf(hash_dir, sizeof(hash_dir), "%s/deferred/%c", q,
                         qid_hash_char(qid)) < (int) sizeof(hash_dir));
    assert_int_equal(rmdir(hash_dir), 0);
    assert_int_equal(mail_queue_move(q, "incoming", "deferred", qid), 0);
    assert_true(test_is_dir_mode(hash_dir, 0700));
    assert_true(test_file_is(
        vstr_str(mail_queue_path(path, q, "deferred", qid)), "m1"));
    assert_int_equal(
        access(vstr_str(mail_queue_path(path, q, "incoming", qid)), F_OK), -1);

    /* Out of a hashed queue, and between plain ones. */
    assert_int_equal(mail_queue_move(q, "deferred", "active", qid), 0);
    assert_true(
        test_file_is(vstr_str(mail_queue_path(path, q, "active", qid)), "m1"));
    assert_int_equal(mail_queue_move(q, "active", "hold", qid), 0);
    assert_true(
        test_file_is(vstr_str(mail_queue_path(path, q, "hold", qid)), "m1"));
    assert_int_equal(
        access(vstr_str(mail_queue_path(path, q, "active", qid)), F_OK), -1);

    /* Errors: a file that is not there, names that are not ours. */
    errno = 0;
    assert_int_equal(mail_queue_move(q, "incoming", "active", qid), -1);
    assert_int_equal(errno, ENOENT);
    errno = 0;
    assert_int_equal(mail_queue_move(q, "hold", "active", "../x"), -1);
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_int_equal(mail_queue_move(q, "hold", "../etc", qid), -1);
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_int_equal(mail_queue_move(q, "nosuch", "active", qid), -1);
    assert_int_equal(errno, EINVAL);
    assert_true(
        test_file_is(vstr_str(mail_queue_path(path, q, "hold", qid)), "m1"));

    /* Back into incoming/: marked (its file is never reused); moves
       elsewhere keep the mode. And a reader can tell it is still there. */
    {
        struct stat st;
        int marked_fsyncs;
        int fd;

        assert_int_equal(
            chmod(vstr_str(mail_queue_path(path, q, "hold", qid)), 0600), 0);
        fd = open(vstr_str(path), O_RDONLY);
        assert_true(fd >= 0);
        assert_true(mail_queue_holds(q, qid, fd));
        /* A file that cannot be marked stays where it is: unmarked in
           incoming/, it would pass for a new message of cleanup's (whose
           file qmgr may reuse, and reads no defer or bounce log of). */
        test_chmod_fails = true;
        errno = 0;
        assert_int_equal(mail_queue_rename(q, "hold", "incoming", qid), -1);
        assert_int_equal(errno, EPERM);
        test_chmod_fails = false;
        assert_int_equal(
            stat(vstr_str(mail_queue_path(path, q, "hold", qid)), &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        mail_queue_path(path, q, "hold", qid);
        test_fsyncs = 0;
        assert_int_equal(mail_queue_rename(q, "hold", "incoming", qid), 0);
        marked_fsyncs = test_fsyncs;
        assert_int_equal(
            stat(vstr_str(mail_queue_path(path, q, "incoming", qid)), &st), 0);
        assert_int_equal(st.st_mode & 07777, MAIL_QUEUE_MOVED_MODE);
        assert_true(mail_queue_holds(q, qid, fd));
        assert_int_equal(chmod(vstr_str(path), 0600), 0);
        test_fsyncs = 0;
        assert_int_equal(mail_queue_rename(q, "incoming", "active", qid), 0);
        /* The same durable move, plus the mark's own fsync. */
        assert_int_equal(marked_fsyncs, test_fsyncs + 1);
        assert_int_equal(
            stat(vstr_str(mail_queue_path(path, q, "active", qid)), &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_true(mail_queue_holds(q, qid, fd));
        /* A file of another mode (a user's maildrop file, read through
           its "other" bits) keeps its mode. */
        assert_int_equal(chmod(vstr_str(path), 0644), 0);
        assert_int_equal(mail_queue_rename(q, "active", "hold", qid), 0);
        assert_int_equal(mail_queue_move(q, "hold", "incoming", qid), 0);
        assert_int_equal(
            stat(vstr_str(mail_queue_path(path, q, "incoming", qid)), &st), 0);
        assert_int_equal(st.st_mode & 07777, 0644);
        /* Out of every queue (to reuse/, say): no longer this message. */
        assert_int_equal(unlink(vstr_str(path)), 0);
        assert_false(mail_queue_holds(q, qid, fd));
        (void) close(fd);
    }

    vstr_free(queue_dir);
    vstr_free(path);
    vstr_free(why);
}

/* mail_queue_create_at: exactly mode whatever the umask, the new directory
   returned open; what exists (a symbolic link too) is EEXIST, untouched */
static void test_create_at(void **state)
{
    const char *tmp = ((TESTLIB_DIR *) *state)->path;
    VSTR *path = vstr_alloc(0);
    VSTR *target = vstr_alloc(0);
    VSTR *why = vstr_alloc(0);
    struct stat st;
    mode_t old_umask;
    int top_fd;
    int fd;

    top_fd = open(tmp, O_RDONLY | O_DIRECTORY);
    assert_true(top_fd >= 0);
    vstr_sprintf(path, "%s/events", tmp);
    old_umask = umask(0777);
    fd = mail_queue_create_at(top_fd, "events", vstr_str(path), false, 0710,
                              (uid_t) -1, (gid_t) -1, why);
    umask(old_umask);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0710);
    assert_true(test_is_dir_mode(vstr_str(path), 0710));
    close(fd);

    /* An existing directory: EEXIST, its mode kept. */
    assert_int_equal(mail_queue_create_at(top_fd, "events", vstr_str(path),
                                          false, 0700, (uid_t) -1, (gid_t) -1,
                                          why),
                     -1);
    assert_int_equal(errno, EEXIST);
    assert_true(test_is_dir_mode(vstr_str(path), 0710));

    /* A symbolic link, even to nothing: EEXIST, nothing made through it. */
    vstr_sprintf(target, "%s/elsewhere", tmp);
    vstr_sprintf(path, "%s/link", tmp);
    assert_int_equal(symlink(vstr_str(target), vstr_str(path)), 0);
    assert_int_equal(mail_queue_create_at(top_fd, "link", vstr_str(path), false,
                                          0700, (uid_t) -1, (gid_t) -1, why),
                     -1);
    assert_int_equal(errno, EEXIST);
    assert_non_null(strstr(vstr_str(why), "create "));
    assert_int_equal(lstat(vstr_str(target), &st), -1);

    close(top_fd);
    vstr_free(path);
    vstr_free(target);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_paths),
        cmocka_unit_test(test_known),
        cmocka_unit_test_setup_teardown(test_create_dirs, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_create_at, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_move, test_setup, test_teardown),
    };

    return cmocka_run_group_tests_name("mail_queue", tests, NULL, NULL);
}
