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

/*
 * A kept trigger connection: one connect for many wake-ups (a sender that
 * wakes the same receiver per message). A connection the receiver closed
 * (restart, its idle timeout) is made anew; one idle for
 * TRIGGER_CONN_IDLE seconds is made anew before use, so it is never the
 * receiver's idle timeout (10 s in mail_server) that closes it under a
 * byte in flight.
 */
#define TRIGGER_CONN_IDLE 5

typedef struct TRIGGER_CONN TRIGGER_CONN;

/* trigger_conn_create - a kept connection to path (connects on first use) */
extern TRIGGER_CONN *trigger_conn_create(const char *path);

/* trigger_conn_send - send byte; 0 or -1 (errno) */
extern int trigger_conn_send(TRIGGER_CONN *conn, int byte);

/* trigger_conn_free - close and free; NULL */
extern TRIGGER_CONN *trigger_conn_free(TRIGGER_CONN *conn);

#endif
