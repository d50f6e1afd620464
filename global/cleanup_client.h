/*
 * cleanup_client - a blocking client of private/cleanup
 *
 * For programs that hand cleanup one message at a time and may wait for
 * it: local (forwarding), bounce (notices) and pickup (maildrop files).
 * The protocol is global/cleanup_proto.h: HELLO, BEGIN (answered with
 * cleanup's HELLO and the queue ID), RCPT lists, the content in DATA
 * chunks, END. A cleanup of another protocol version fails the open with
 * both versions in the reason and no code: the caller keeps its message. Every
 * read has a time limit. The message counts as queued only when
 * cleanup_client_commit() returns 0: cleanup has then fsynced the queue
 * file and incoming/. Closing in any other way (cleanup_client_abort, an
 * error) makes cleanup remove the partial file, so nothing half-sent is
 * ever queued.
 */
#ifndef CLEANUP_CLIENT_H
#define CLEANUP_CLIENT_H

#include "sys_defs.h"
#include "vstr.h"

typedef struct CLEANUP_CLIENT CLEANUP_CLIENT;

/* cleanup_client_open - connect to the cleanup socket at path and send
   BEGIN (flags: CLEANUP_FLAG_*; origin: "smtp", "local", "bounce" ...);
   NULL with the reason in why. cleanup_client_queue_id() has the new ID. */
extern CLEANUP_CLIENT *cleanup_client_open(const char *path, int timeout_ms,
                                           int flags, const char *sender,
                                           const char *origin, VSTR *why);
/* cleanup_client_begin - the same, with the sender's full name (sendmail
   -F; NULL or "": none) in BEGIN; when cleanup itself refuses, *code (when
   code is not NULL) gets its status (4xx, 5xx), else 0 */
extern CLEANUP_CLIENT *cleanup_client_begin(const char *path, int timeout_ms,
                                            int flags, const char *sender,
                                            const char *origin,
                                            const char *full_name, int *code,
                                            VSTR *why);
/* cleanup_client_begin_dsn - the same, with the message's DSN RET
   ("HDRS" or "FULL") and ENVID (NULL or "": none) in BEGIN, as smtpd
   passes MAIL FROM's RET= and ENVID= */
extern CLEANUP_CLIENT *cleanup_client_begin_dsn(
    const char *path, int timeout_ms, int flags, const char *sender,
    const char *origin, const char *full_name, const char *ret,
    const char *envid, int *code, VSTR *why);
extern const char *cleanup_client_queue_id(const CLEANUP_CLIENT *client);
/* cleanup_client_rcpt - one recipient; orcpt and notify may be NULL */
extern int cleanup_client_rcpt(CLEANUP_CLIENT *client, const char *address,
                               const char *orcpt, const char *notify,
                               VSTR *why);
/* cleanup_client_write - content bytes (LF lines: headers, empty line,
   body), buffered and sent in chunks of at most CLEANUP_CHUNK_MAX;
   0, or -1 with the reason in why (the client stays usable only for
   cleanup_client_abort) */
extern int cleanup_client_write(CLEANUP_CLIENT *client, const char *data,
                                size_t len, VSTR *why);
/* cleanup_client_commit - END; 0 when cleanup has queued the message, -1
   with the reason in why ("cleanup: 451 4.3.0 ..."). Frees the client. */
extern int cleanup_client_commit(CLEANUP_CLIENT *client, VSTR *why);
/* cleanup_client_end - the same; when cleanup refuses the message, *code
   (when code is not NULL) gets its status (4xx, 5xx), else 0 */
extern int cleanup_client_end(CLEANUP_CLIENT *client, int *code, VSTR *why);
/* cleanup_client_end_hold - the same; hold (NULL: none) is why cleanup
   commits the message into hold/ instead of incoming/ (a milter's
   quarantine: printable ASCII, at most CLEANUP_HOLD_MAX bytes) */
extern int cleanup_client_end_hold(CLEANUP_CLIENT *client, const char *hold,
                                   int *code, VSTR *why);
/* cleanup_client_abort - hang up without END: cleanup drops the message.
   Frees the client; returns NULL. */
extern CLEANUP_CLIENT *cleanup_client_abort(CLEANUP_CLIENT *client);

#endif
