/*
 * delay_format - a delay in seconds as Postfix's log lines print it
 *
 * The numbers of the one delivery log line (global/deliver_log.c), which
 * smtp, local and qmgr all write, so they read the same.
 */
#include "sys_defs.h"

#include "delay_format.h"

/* delay_format - two significant digits, no exponent, "0" for tiny */
void delay_format(double seconds, char *buf, size_t len)
{
    if (seconds < 0.005)
        snprintf(buf, len, "0");
    else if (seconds < 0.1)
        snprintf(buf, len, "%.2f", seconds);
    else if (seconds < 10)
        snprintf(buf, len, "%.2g", seconds);
    else
        snprintf(buf, len, "%.0f", seconds);
}
