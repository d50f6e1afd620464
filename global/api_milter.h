/*
 * api_milter - non_smtpd_milters for the API's mail, off the event loop
 *
 * Postfix shows mail that does not come from smtpd to non_smtpd_milters;
 * the API's messages (direct, batched in the api, and rendered by the
 * render service) are such mail. The milter client of non-SMTP mail
 * (global/pickup_milter.h) is blocking, and the api and render daemons
 * are event-driven, so api_submit_start() runs it in a child process of
 * its own (fork, no exec: the child only talks to the milters, writes
 * what they decided into a pipe and exits) while the loop serves others.
 * When the child has spoken, the message (changed as the milters asked:
 * headers, body, added recipients, a quarantine into hold/) goes on to
 * cleanup through api_handoff_start(). The milters see it as pickup shows
 * sendmail's mail: from "localhost" [127.0.0.1]; the queue ID (macro i)
 * is not known yet and is "NOQUEUE".
 *
 * A milter's verdict comes back through the same done callback as
 * cleanup's, with result->milter set (its reply, "5.7.1 text"; the
 * milter's own three-digit code is not kept, only its class):
 *
 *   reject           code 550 (any 5xx reply of the milter), why
 *                    "rejected by a milter: REPLY"
 *   tempfail, a      code 451 (any 4xx reply), why "a milter said try
 *   failed milter    again later: REPLY" (milter_default_action)
 *   discard          code 550, why "discarded by a milter", discarded
 *   quarantine       queued into hold/ (code 0), result->quarantine set
 *
 * A child that cannot be made or that ends without a whole answer is a
 * temporary failure (code -1). So is a child that takes longer than the
 * milters' timeouts added up (each milter's milter_connect_timeout,
 * milter_command_timeout and milter_content_timeout, and some slack: a
 * milter that keeps sending progress, or a child stuck in the kernel):
 * it is killed, and reaped off the loop. The child closes every
 * descriptor of its parent's but its pipe and the log, so that a
 * connection the parent closes ends at once. At most
 * api_milter_process_limit children run at once per process; a message
 * beyond them waits its turn (in order) for API_MILTER_WAIT seconds, then
 * fails with code -1. Without milters (NULL) this is api_handoff_start()
 * itself.
 */
#ifndef API_MILTER_H
#define API_MILTER_H

#include "sys_defs.h"

#include <event2/event.h>

#include "api_handoff.h"
#include "api_request.h"
#include "pickup_milter.h"
#include "vstr.h"

#define API_MILTER_WAIT 10 /* seconds a message waits for a child */

typedef struct API_MILTERS API_MILTERS;

/* api_milter_open - non_smtpd_milters and api_milter_process_limit;
   NULL when there are no milters */
extern API_MILTERS *api_milter_open(const MAIL_CONF *conf);
/* api_milter_close - after the loop: waiting messages are dropped
   without their done, children not yet reaped are left to init; NULL */
extern API_MILTERS *api_milter_close(API_MILTERS *ams);

/* api_submit_start - msg through the milters of ams (NULL: none), then
   to cleanup at path; msg (changed in place) must live until done is
   called, which happens exactly once, from the loop. -1 with why when
   nothing could be started (done is then never called), else 0. */
extern int api_submit_start(struct event_base *base, API_MILTERS *ams,
                            const char *path, int timeout_sec, API_MESSAGE *msg,
                            const char *tenant, API_HANDOFF_DONE done,
                            void *arg, VSTR *why);

#endif
