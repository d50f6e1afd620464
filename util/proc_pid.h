/*
 * proc_pid - this process's ID without a system call per use
 */
#ifndef PROC_PID_H
#define PROC_PID_H

#include "sys_defs.h"

/* proc_pid - getpid(), asked of the kernel once per process (a fork()ed
   child asks again) */
extern pid_t proc_pid(void);

#endif
