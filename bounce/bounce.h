/*
 * bounce - the bounce daemon's shared internals
 *
 * bounce.c serves private/bounce (global/bounce_proto.h): it reads the
 * message and its log and composes the notice (bounce_dsn.c, I/O-free:
 * bounce_dsn.h, unit tested by bounce_dsn_test.c); bounce_cleanup.c hands
 * the notice to cleanup (global/cleanup_proto.h).
 */
#ifndef BOUNCE_H
#define BOUNCE_H

#include "sys_defs.h"
#include "vstr.h"

/* bounce_cleanup_submit - queue one message through cleanup_path: sender
   ("" for <>), one recipient, content (LF line ends, headers, empty line,
   body) from compose(arg, dsn_queue_id, content) once cleanup has named
   the new file. flags are CLEANUP_FLAG_* bits. 0 with the new queue ID in
   queue_id, or -1 with the reason in why; on failure nothing is queued. */
typedef void (*BOUNCE_COMPOSE)(void *arg, const char *dsn_queue_id,
                               VSTR *content);
extern int bounce_cleanup_submit(const char *cleanup_path, int timeout_ms,
                                 int flags, const char *sender,
                                 const char *recipient, BOUNCE_COMPOSE compose,
                                 void *arg, VSTR *queue_id, VSTR *why);

#endif
