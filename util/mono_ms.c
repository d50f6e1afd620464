/*
 * mono_ms - the monotonic clock in milliseconds (see mono_ms.h)
 */
#include "sys_defs.h"

#include <time.h>

#include "mono_ms.h"
#include "msg.h"

/* mono_ms - see mono_ms.h */
long long mono_ms(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        msg_fatal("clock_gettime: %m");
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
