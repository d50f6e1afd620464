/*
 * proc_pid_test - unit tests for the kept process ID: the kernel's
 * answer, and in a fork()ed child (and its own child) the child's ID,
 * not the parent's kept one
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "proc_pid.h"

/* test_parent - the kernel's ID, the same on every call */
static void test_parent(void **state)
{
    assert_int_equal(proc_pid(), getpid());
    assert_int_equal(proc_pid(), getpid());
}

/* proc_pid_test_child - in a child: exit 0 when proc_pid() is the
   child's own ID (not parent's), 1 otherwise */
static int proc_pid_test_child(pid_t parent)
{
    pid_t mine = proc_pid();

    return mine == getpid() && mine != parent && proc_pid() == mine ? 0 : 1;
}

/* proc_pid_test_wait - the exit status of child pid (-1: not exited) */
static int proc_pid_test_wait(pid_t pid)
{
    int status;

    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* test_fork - the parent has kept its ID; a fork()ed child gets its own,
   and so does the child's child; the parent still has its own after */
static void test_fork(void **state)
{
    pid_t parent = proc_pid();
    pid_t pid;

    assert_int_equal(parent, getpid()); /* kept now */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pid_t child = proc_pid();
        pid_t grandchild;

        if (proc_pid_test_child(parent) != 0)
            _exit(1);
        /* The child has kept its own: its child forgets that one too. */
        if ((grandchild = fork()) < 0)
            _exit(3);
        if (grandchild == 0)
            _exit(proc_pid_test_child(child) == 0 && proc_pid() != parent ? 0
                                                                          : 1);
        _exit(proc_pid_test_wait(grandchild) == 0 ? 0 : 2);
    }
    assert_int_equal(proc_pid_test_wait(pid), 0);
    assert_int_equal(proc_pid(), parent);
    assert_int_equal(proc_pid(), getpid());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parent),
        cmocka_unit_test(test_fork),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
