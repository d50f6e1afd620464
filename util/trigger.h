/*
 * trigger - one-byte wake-ups over UNIX sockets
 *
 * A trigger is a connect, a one-byte write and a close, and never blocks the
 * sender for long. Nothing may depend on a trigger arriving: every receiver
 * also scans periodically.
 */
#ifndef TRIGGER_H
#define TRIGGER_H

#include "sys_defs.h"

#define TRIGGER_WAKEUP 'W' /* something may be waiting */
#define TRIGGER_SCAN_ALL 'A' /* e.g. flush: everything is due */

/* trigger_send - send byte to the service at path; 0 or -1 (errno) */
extern int trigger_send(const char *path, int byte);

#endif
