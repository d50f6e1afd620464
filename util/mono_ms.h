/*
 * mono_ms - the monotonic clock in milliseconds
 */
#ifndef MONO_MS_H
#define MONO_MS_H

#include "sys_defs.h"

/* mono_ms - CLOCK_MONOTONIC in milliseconds, for deadlines and waits
   (never steps with the wall clock) */
extern long long mono_ms(void);

#endif
