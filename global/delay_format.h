/*
 * delay_format - a delay in seconds as Postfix's log lines print it
 *
 * Delivery agents log "delay=D, delays=a/b/c/d" with each number given to
 * two significant digits and no exponent ("0.41", "3.1", "123"), and "0"
 * for anything under 5 ms.
 */
#ifndef DELAY_FORMAT_H
#define DELAY_FORMAT_H

#include "sys_defs.h"

/* delay_format - seconds into buf ("0", "0.01", "0.41", "3.1", "123") */
extern void delay_format(double seconds, char *buf, size_t len);

#endif
