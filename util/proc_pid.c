/*
 * proc_pid - this process's ID without a system call per use
 *
 * glibc no longer caches getpid(), and a log line or a queue ID costs one
 * call each. The ID is asked once and kept; a pthread_atfork() child
 * handler forgets it, so a fork()ed child (which logs and makes queue IDs
 * of its own) asks again. A child made by a raw clone() would keep the
 * parent's: sluice makes none (posix_spawn children exec at once).
 */
#include "sys_defs.h"

#include <pthread.h>

#include "proc_pid.h"

/* The kept ID (0: not asked yet) and whether the handler is registered. */
static pid_t proc_pid_cached;
static bool proc_pid_registered;

/* proc_pid_forget - in a fork()ed child: the parent's ID is not ours */
static void proc_pid_forget(void)
{
    proc_pid_cached = 0;
}

/* proc_pid - getpid(), asked of the kernel once per process */
pid_t proc_pid(void)
{
    if (proc_pid_cached == 0) {
        if (!proc_pid_registered &&
            pthread_atfork(NULL, NULL, proc_pid_forget) == 0)
            proc_pid_registered = true;
        if (!proc_pid_registered)
            return getpid(); /* no handler: never keep it */
        proc_pid_cached = getpid();
    }
    return proc_pid_cached;
}
