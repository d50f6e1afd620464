/*
 * feedback - internals shared by the feedback service's modules
 *
 * feedback.c          the daemon: one request from qmgr per connection,
 *                     each recipient's mail parsed and recorded
 * feedback_journal.c  what the events journal knows of the original
 *                     message: its recipient, tenant, pool, source;
 *                     its recipients and tenants (mailto unsubscribe)
 */
#ifndef FEEDBACK_H
#define FEEDBACK_H

#include "sys_defs.h"

#include "argv.h"
#include "vstr.h"

#include "api_request.h"
#include "mail_conf.h"

/* What the journal says of one recipient of an original message. */
typedef struct FEEDBACK_ORIG {
    VSTR *recipient; /* "" when not found */
    VSTR *orig_recipient;
    VSTR *tenant;
    VSTR *pool;
    VSTR *source_ip;
    VSTR *provider;
    bool found; /* the delivered event was there */
    bool repeated; /* the event this report makes is there already */
} FEEDBACK_ORIG;

/* feedback_orig_alloc, feedback_orig_free - an empty FEEDBACK_ORIG */
extern FEEDBACK_ORIG *feedback_orig_alloc(void);
extern FEEDBACK_ORIG *feedback_orig_free(FEEDBACK_ORIG *orig);

/* feedback_journal_find - the delivered (else bounced) event
   of recipient offset of message qid in the journal in dir, into orig;
   orig->repeated when an event KIND with seq repeat_seq of that message
   (the one this report makes: an earlier copy of the same report) is
   there too. The segments are read newest first; past the end of the
   segment with the delivered event only segments last written since
   that one began are read, and only while no repeat is found (a repeat
   is newer than the delivery, but may be in a segment its writer began
   earlier); bounded by FEEDBACK_JOURNAL_MAX_BYTES read */
extern void feedback_journal_find(const char *dir, const char *qid,
                                  long long offset, const char *repeat_kind,
                                  const char *repeat_seq, FEEDBACK_ORIG *orig);

/* feedback_journal_lock - an exclusive lock on message qid's reports,
   held by one report from its search (feedback_journal_find) until its
   event is written: two copies of one report handled at once by two
   feedback processes would otherwise both find no earlier copy and both
   be counted. One byte (by a hash of qid) of dir's
   FEEDBACK_JOURNAL_LOCK_FILE, an open file description lock, so reports
   on other messages rarely wait. Returns the descriptor to give
   feedback_journal_unlock, or -1 (the report goes on unlocked; warned,
   unless dir does not exist yet: no journal, nothing to find) */
extern int feedback_journal_lock(const char *dir, const char *qid);
extern void feedback_journal_unlock(int fd);

/* feedback_journal_rcpts - every recipient (and original recipient) that
   events of message qid in the journal in dir name, each paired with the
   tenant of the same event: rcpts[i] with tenants[i] (at most
   FEEDBACK_JOURNAL_MAX_NAMES pairs, each once); true when the journal has
   any event of qid. Newest segment first; only segments that may hold the
   delivered event are opened: begun at most window seconds after qid's
   arrival (FEEDBACK_JOURNAL_SLACK more) and last written at or after it
   (less the slack). A queue ID that arrives in the future reads nothing.
   Stops after the segment with a delivered event, or when
   FEEDBACK_JOURNAL_MAX_BYTES were read */
extern bool feedback_journal_rcpts(const char *dir, const char *qid,
                                   long long window, ARGV *rcpts,
                                   ARGV *tenants);

/* feedback_journal_window - the window of feedback_journal_rcpts: how
   long after its arrival a message's delivered event may be written: the
   longer of maximal_queue_lifetime and bounce_queue_lifetime, plus
   FEEDBACK_JOURNAL_SEND_AHEAD (send_at), the longest retry_schedule step
   and queue_run_delay (an attempt that ends past the lifetime) */
extern long long feedback_journal_window(const MAIL_CONF *conf);

#define FEEDBACK_JOURNAL_LOCK_FILE "feedback.lock" /* in the journal's dir */
#define FEEDBACK_JOURNAL_LOCK_SLOTS 65536 /* bytes a qid hashes to */
#define FEEDBACK_JOURNAL_MAX_BYTES (512LL * 1024 * 1024)
#define FEEDBACK_JOURNAL_MAX_NAMES 100
#define FEEDBACK_JOURNAL_SLACK 300 /* seconds: clock steps */
/* How long after its arrival a message may be delivered, besides the queue
   lifetime: an api message's send_at may be API_REQUEST_SEND_AHEAD
   ahead (api_request.h). A message held in hold/ and released later than
   that is past the window: its unsubscribe mail must come from the
   recipient (or keep the mailto's subject). */
#define FEEDBACK_JOURNAL_SEND_AHEAD ((long long) API_REQUEST_SEND_AHEAD)

#endif
