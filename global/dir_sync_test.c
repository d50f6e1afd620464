/*
 * dir_sync_test - unit tests for the directory fsync shared between
 * processes: two real processes wait while a third holds the lock (as one
 * in its fsync would), and between them they fsync the directory once;
 * a failed fsync fails both; a caller alone fsyncs for itself every time;
 * a state file of garbage is reset, never trusted.
 *
 * fsync() here stands in front of the C library's (the children inherit
 * it): it counts the calls in a shared mapping and fails them while
 * test_shared->fail is set (or ends the process while ->die is).
 */
#include "sys_defs.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <signal.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dir_sync.h"
#include "mymalloc.h"
#include "vstr.h"

typedef struct TEST_SHARED {
    _Atomic int fsyncs; /* fsync calls, all processes */
    _Atomic int fail; /* fail every fsync with EIO */
    _Atomic int die; /* _exit(3) in every fsync */
} TEST_SHARED;

static TEST_SHARED *test_shared;

int fsync(int fd)
{
    static int (*real)(int);

    if (real == NULL &&
        (real = (int (*)(int)) dlsym(RTLD_NEXT, "fsync")) == NULL)
        abort();
    if (test_shared) {
        atomic_fetch_add(&test_shared->fsyncs, 1);
        if (atomic_load(&test_shared->die))
            _exit(3);
        if (atomic_load(&test_shared->fail)) {
            errno = EIO;
            return -1;
        }
    }
    return real(fd);
}

typedef struct TEST_DIR {
    char dir[64];
    char state[96];
} TEST_DIR;

/* test_setup - a fresh directory and the shared counters */
static int test_setup(void **state)
{
    TEST_DIR *td = mycalloc(1, sizeof(*td));

    snprintf(td->dir, sizeof(td->dir), "/tmp/dir_sync_test.XXXXXX");
    assert_non_null(mkdtemp(td->dir));
    snprintf(td->state, sizeof(td->state), "%s/.sync", td->dir);
    test_shared = mmap(NULL, sizeof(*test_shared), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(test_shared != MAP_FAILED);
    *state = td;
    return 0;
}

static int test_teardown(void **state)
{
    TEST_DIR *td = *state;

    (void) unlink(td->state);
    (void) rmdir(td->dir);
    (void) munmap(test_shared, sizeof(*test_shared));
    test_shared = NULL;
    myfree(td);
    return 0;
}

/* test_open - a DIR_SYNC on td */
static DIR_SYNC *test_open(TEST_DIR *td)
{
    VSTR *why = vstr_alloc(40);
    DIR_SYNC *sync = dir_sync_open(td->dir, td->state, why);

    if (sync == NULL)
        fail_msg("dir_sync_open: %s", vstr_str(why));
    vstr_free(why);
    return sync;
}

typedef struct TEST_CHILD {
    pid_t pid;
    int go; /* write a byte: call dir_sync */
} TEST_CHILD;

/* test_child - a process that opens its DIR_SYNC (the open takes the
   lock for a moment: before the test holds it), says so, waits for the
   word, calls dir_sync once and exits 0 (success) or 1 (failure) */
static TEST_CHILD test_child(TEST_DIR *td)
{
    TEST_CHILD child;
    int ready[2];
    int go[2];
    char byte;

    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    child.pid = fork();
    assert_true(child.pid >= 0);
    if (child.pid == 0) {
        DIR_SYNC *sync = test_open(td);
        int ret;

        if (write(ready[1], "r", 1) != 1 || read(go[0], &byte, 1) != 1)
            _exit(2);
        ret = dir_sync(sync);
        dir_sync_free(sync);
        _exit(ret == 0 ? 0 : 1);
    }
    (void) close(ready[1]);
    (void) close(go[0]);
    assert_int_equal(read(ready[0], &byte, 1), 1);
    (void) close(ready[0]);
    child.go = go[1];
    return child;
}

/* test_go - let the child call dir_sync */
static void test_go(TEST_CHILD *child)
{
    assert_int_equal(write(child->go, "g", 1), 1);
    (void) close(child->go);
}

/* test_wait_tickets - until the callers have taken n tickets in all
   (each has "renamed" and now waits for the lock); bounded */
static void test_wait_tickets(DIR_SYNC *sync, unsigned long long n)
{
    struct timespec ts = {0, 10 * 1000 * 1000};

    for (int i = 0; i < 1000 && dir_sync_tickets(sync) < n; i++)
        nanosleep(&ts, NULL);
    assert_int_equal(dir_sync_tickets(sync), n);
}

/* test_exit_code - wait for pid, its exit code */
static int test_exit_code(pid_t pid)
{
    int status;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* test_hold_lock - the state file's lock, as a caller in its fsync holds
   it; returns its descriptor */
static int test_hold_lock(TEST_DIR *td)
{
    int fd = open(td->state, O_RDWR | O_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    return fd;
}

/* test_two_waiting - two processes call dir_sync while the lock is held
   (as by one in its fsync); fail: the fsync to come fails. Returns the
   exit codes of the two */
static void test_two_waiting(TEST_DIR *td, bool fail, int *code_one,
                             int *code_two)
{
    DIR_SYNC *watch = test_open(td);
    TEST_CHILD one = test_child(td);
    TEST_CHILD two = test_child(td);
    int lock_fd = test_hold_lock(td);

    test_go(&one);
    test_go(&two);
    /* Both have renamed (taken their tickets) and wait for the lock. */
    test_wait_tickets(watch, 2);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 0);
    atomic_store(&test_shared->fail, fail);
    assert_int_equal(flock(lock_fd, LOCK_UN), 0);
    *code_one = test_exit_code(one.pid);
    *code_two = test_exit_code(two.pid);
    atomic_store(&test_shared->fail, 0);
    (void) close(lock_fd);
    dir_sync_free(watch);
}

static void test_two_processes_one_fsync(void **state)
{
    int one, two;

    test_two_waiting(*state, false, &one, &two);
    assert_int_equal(one, 0);
    assert_int_equal(two, 0);
    /* The first to get the lock fsyncs for both. */
    assert_int_equal(atomic_load(&test_shared->fsyncs), 1);
}

static void test_failed_fsync_fails_both(void **state)
{
    TEST_DIR *td = *state;
    DIR_SYNC *sync;
    int one, two;

    /* The fsync that stood for both failed: neither entry is known to be
       durable, and the second does not try again (a retry may succeed
       without writing what the first could not). */
    test_two_waiting(td, true, &one, &two);
    assert_int_equal(one, 1);
    assert_int_equal(two, 1);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 1);

    /* A caller after the failure fsyncs for itself. */
    sync = test_open(td);
    assert_int_equal(dir_sync(sync), 0);
    dir_sync_free(sync);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 2);
}

/* test_stopped_waiter - a child that has renamed (taken its ticket, the
   n-th in all) and waits for the lock, stopped there (flock is not
   first-come-first-served: others may take the lock before it) */
static TEST_CHILD test_stopped_waiter(TEST_DIR *td, DIR_SYNC *watch,
                                      unsigned long long n)
{
    TEST_CHILD child = test_child(td);
    int lock_fd = test_hold_lock(td);
    int status;

    test_go(&child);
    test_wait_tickets(watch, n);
    assert_int_equal(kill(child.pid, SIGSTOP), 0);
    assert_int_equal(waitpid(child.pid, &status, WUNTRACED), child.pid);
    assert_true(WIFSTOPPED(status));
    assert_int_equal(flock(lock_fd, LOCK_UN), 0);
    (void) close(lock_fd);
    return child;
}

/* test_resume - let a stopped waiter go on; its exit code */
static int test_resume(TEST_CHILD *child)
{
    assert_int_equal(kill(child->pid, SIGCONT), 0);
    return test_exit_code(child->pid);
}

/* test_sync_as - one dir_sync of this process, its fsync failing or not */
static int test_sync_as(DIR_SYNC *sync, bool fail)
{
    int ret;

    atomic_store(&test_shared->fail, fail);
    ret = dir_sync(sync);
    atomic_store(&test_shared->fail, 0);
    return ret;
}

static void test_failure_then_success_fails_waiter(void **state)
{
    TEST_DIR *td = *state;
    DIR_SYNC *sync = test_open(td);
    TEST_CHILD waiter = test_stopped_waiter(td, sync, 1);

    /* The fsync that covers the waiter's rename fails; a later caller's
       fsync succeeds (it may without writing what the first could not):
       the waiter's entry is still not known to be durable. */
    assert_int_equal(test_sync_as(sync, true), -1);
    assert_int_equal(test_sync_as(sync, false), 0);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 2);
    assert_int_equal(test_resume(&waiter), 1);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 2);
    dir_sync_free(sync);
}

static void test_failures_accumulate(void **state)
{
    TEST_DIR *td = *state;
    DIR_SYNC *sync = test_open(td);
    TEST_CHILD waiter = test_stopped_waiter(td, sync, 1);

    /* Fail, succeed, fail again (covering only later tickets), succeed:
       the second failure must not wipe out the first. */
    assert_int_equal(test_sync_as(sync, true), -1);
    assert_int_equal(test_sync_as(sync, false), 0);
    assert_int_equal(test_sync_as(sync, true), -1);
    assert_int_equal(test_sync_as(sync, false), 0);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 4);
    assert_int_equal(test_resume(&waiter), 1);
    dir_sync_free(sync);
}

static void test_success_before_failure_stands(void **state)
{
    TEST_DIR *td = *state;
    DIR_SYNC *sync = test_open(td);
    TEST_CHILD waiter;

    /* An old failure, then the waiter renames (ticket 2); an fsync that
       began after that succeeds, then another fails: the first fsync to
       cover the waiter's entry succeeded, so it is durable. */
    assert_int_equal(test_sync_as(sync, true), -1);
    waiter = test_stopped_waiter(td, sync, 2);
    assert_int_equal(test_sync_as(sync, false), 0);
    assert_int_equal(test_sync_as(sync, true), -1);
    assert_int_equal(test_resume(&waiter), 0);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 3);
    dir_sync_free(sync);
}

static void test_many_failures_merge_conservatively(void **state)
{
    TEST_DIR *td = *state;
    DIR_SYNC *sync = test_open(td);
    TEST_CHILD waiter = test_stopped_waiter(td, sync, 1);

    /* More separate failures than the shared file keeps apart: the
       oldest merge, and the first one's ticket still fails. */
    for (int i = 0; i < 40; i++) {
        assert_int_equal(test_sync_as(sync, true), -1);
        assert_int_equal(test_sync_as(sync, false), 0);
    }
    assert_int_equal(test_resume(&waiter), 1);
    assert_int_equal(test_sync_as(sync, false), 0);
    dir_sync_free(sync);
}

static void test_death_in_fsync_fails_waiters(void **state)
{
    TEST_DIR *td = *state;
    DIR_SYNC *sync = test_open(td);
    TEST_CHILD waiter = test_stopped_waiter(td, sync, 1);
    TEST_CHILD dying = test_child(td);

    /* A caller dies in the fsync that covers the waiter: its outcome is
       unknown, so the waiter fails, while a caller after that is fine. */
    atomic_store(&test_shared->die, 1);
    test_go(&dying);
    assert_int_equal(test_exit_code(dying.pid), 3);
    atomic_store(&test_shared->die, 0);
    assert_int_equal(test_resume(&waiter), 1);
    assert_int_equal(test_sync_as(sync, false), 0);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 2);
    dir_sync_free(sync);
}

static void test_alone_fsyncs_each_time(void **state)
{
    TEST_DIR *td = *state;
    DIR_SYNC *sync = test_open(td);

    assert_string_equal(dir_sync_dir(sync), td->dir);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(dir_sync(sync), 0);
        assert_int_equal(atomic_load(&test_shared->fsyncs), i);
    }
    dir_sync_free(sync);
}

static void test_garbage_state_is_not_trusted(void **state)
{
    TEST_DIR *td = *state;
    char junk[4096];
    int fd = open(td->state, O_RDWR | O_CREAT | O_TRUNC, 0600);
    DIR_SYNC *sync;

    /* All ones: "synced" and "failed" far beyond any ticket. */
    memset(junk, 0xff, sizeof(junk));
    assert_true(fd >= 0);
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t) sizeof(junk));
    (void) close(fd);
    sync = test_open(td);
    assert_int_equal(dir_sync(sync), 0);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 1);
    dir_sync_free(sync);
}

static void test_counters_near_wrap_are_damage(void **state)
{
    TEST_DIR *td = *state;
    unsigned char page[4096];
    uint32_t magic = 0x73796e32u; /* "syn2": a file of this layout */
    uint64_t most = UINT64_MAX;
    int fd = open(td->state, O_RDWR | O_CREAT | O_TRUNC, 0600);
    DIR_SYNC *sync;

    /* Right magic, tickets and synced at the top (x86-64 layout: magic,
       then tickets at 8, synced at 16): the next ticket would wrap to 0
       and pass for synced without an fsync. */
    memset(page, 0, sizeof(page));
    memcpy(page, &magic, sizeof(magic));
    memcpy(page + 8, &most, sizeof(most));
    memcpy(page + 16, &most, sizeof(most));
    assert_true(fd >= 0);
    assert_int_equal(write(fd, page, sizeof(page)), (ssize_t) sizeof(page));
    (void) close(fd);
    sync = test_open(td);
    assert_int_equal(dir_sync(sync), 0);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 1);
    assert_int_equal(dir_sync(sync), 0);
    assert_int_equal(atomic_load(&test_shared->fsyncs), 2);
    dir_sync_free(sync);
}

static void test_bad_state_path(void **state)
{
    TEST_DIR *td = *state;
    VSTR *why = vstr_alloc(40);
    char path[128];

    snprintf(path, sizeof(path), "%s/missing/.sync", td->dir);
    assert_null(dir_sync_open(td->dir, path, why));
    assert_non_null(strstr(vstr_str(why), "missing/.sync"));
    /* A directory in its place: not a regular file. */
    snprintf(path, sizeof(path), "%s", td->dir);
    assert_null(dir_sync_open(td->dir, path, why));
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_processes_one_fsync,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_failed_fsync_fails_both,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_failure_then_success_fails_waiter,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_failures_accumulate, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_success_before_failure_stands,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_many_failures_merge_conservatively,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_death_in_fsync_fails_waiters,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_alone_fsyncs_each_time, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_garbage_state_is_not_trusted,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_counters_near_wrap_are_damage,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_bad_state_path, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
