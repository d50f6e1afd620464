/*
 * cleanup - internals shared by the cleanup daemon's modules
 *
 * cleanup.c         the daemon: configuration, connections, the protocol of
 *                   global/cleanup_proto.h, waking qmgr
 * cleanup_commit.c  group commit: the messages whose END came together
 *                   share one fsync of incoming/ (cleanup_commit.h)
 * cleanup_message.c one message: the queue file under a temporary name in
 *                   incoming/ (the queue-file producer, global/qfile.h),
 *                   envelope records, commit (fsync, rename, fsync
 *                   incoming/: qfile_commit) or removal; unit tested by
 *                   cleanup_message_test.c
 * cleanup_content.c the content: header block parsing and fixes (missing
 *                   Message-ID, Date, From), the filter seam, body records
 * cleanup_checks.c  header_checks and body_checks: REJECT, DISCARD, HOLD,
 *                   WARN, INFO, REPLACE, PREPEND, IGNORE, DUNNO/OK; unit
 *                   tested by cleanup_checks_test.c
 * cleanup_rewrite.c canonical_maps, sender_canonical_maps and
 *                   recipient_canonical_maps on the envelope and on the
 *                   address headers; bare addresses in the address
 *                   headers of local mail get @myorigin; then
 *                   virtual_alias_maps on each envelope recipient
 * cleanup_pool.c    the message's source pool (rules, X-Sluice-Pool, the
 *                   default), written as the pool attribute; the header
 *                   removed (a filter)
 * cleanup_dkim.c    DKIM signing at the end of the content (a filter);
 *                   cleanup_dkim_conf.c parses its parameters
 * cleanup_track.c   open and click tracking, List-Unsubscribe (a filter
 *                   before DKIM's: its changes are signed)
 * cleanup_suppress.c the suppression list (global/suppress.h): each
 *                   recipient, as it will be queued, is looked up for the
 *                   message's tenant (the API key's; SMTP and local mail
 *                   have none: the global list only); a suppressed one is
 *                   never written to the queue file, and its "suppressed"
 *                   event is made durable before the commit
 *
 * Filters are the seam for header/body checks and later DKIM signing: a
 * table of CLEANUP_FILTER, each called for every header (which it may
 * rewrite or drop), for every body chunk, and at the end of the message;
 * any may reject the message with an SMTP status.
 */
#ifndef CLEANUP_H
#define CLEANUP_H

#include "sys_defs.h"

#include <sys/time.h>

#include "argv.h"
#include "cleanup_proto.h"
#include "maps.h"
#include "match_list.h"
#include "qfile.h"
#include "vstr.h"

#define CLEANUP_TMP_PREFIX ".tmp." /* incoming/.tmp.QID until commit */

/* What the daemon reads from main.cf once. */
typedef struct CLEANUP_CONF {
    char *queue_dir;
    char *myhostname;
    char *myorigin;
    long long message_size_limit; /* bytes of content; 0: none */
    long long header_size_limit; /* header block beyond: body */
    long long body_checks_size_limit; /* body bytes body_checks see */
    /* Tables; NULL (or empty) when the parameter is empty. */
    MAPS *canonical_maps;
    MAPS *sender_canonical_maps;
    MAPS *recipient_canonical_maps;
    MAPS *virtual_alias_maps;
    MAPS *header_checks;
    MAPS *body_checks;
    MATCH_LIST *mydestination; /* NULL: only myorigin is ours */
    char *recipient_delimiter; /* NULL or "": none */
    int virtual_recursion_limit; /* virtual_alias_recursion_limit */
    int virtual_expansion_limit; /* virtual_alias_expansion_limit */
    struct CLEANUP_DKIM *dkim; /* cleanup_dkim.c; NULL: no signing */
    struct EVENTS *events; /* the journal (global/events.h), NULL: off */
    struct SOURCE_POOLS *pools; /* smtp_source_pools, NULL: none */
    const char *default_pool; /* its default pool's name (in pools) */
    MAPS *pool_maps; /* smtp_source_pool_maps, NULL: none */
    MAPS *pool_allow_maps; /* smtp_source_pool_allow_maps, NULL: none */
    MATCH_LIST *mynetworks; /* who may name a pool by header */
    double trace_ratio; /* otel_traces_sampler_ratio (cleanup_trace.c) */
    MATCH_LIST *trace_mynetworks; /* who may give a traceparent header */
    struct CLEANUP_TRACK *track; /* cleanup_track.c; NULL: off */
    struct SUPPRESS *suppress; /* the suppression list, NULL: off */
    struct QFILE_REUSE *reuse; /* free queue files (global/qfile_reuse.h),
                                  NULL: queue_file_reuse_limit is 0 */
} CLEANUP_CONF;

/* The envelope of BEGIN: CLEANUP_BEGIN of global/cleanup_proto.h. */

typedef struct CLEANUP_MSG CLEANUP_MSG;

/* A filter's answer for a header. */
typedef enum CLEANUP_FILTER_ACT {
    CLEANUP_FILTER_KEEP, /* keep the (maybe rewritten) header */
    CLEANUP_FILTER_DROP, /* remove the header */
} CLEANUP_FILTER_ACT;

typedef struct CLEANUP_FILTER {
    const char *name;
    /* A message begins: per-message state, or NULL. */
    void *(*begin)(CLEANUP_MSG *msg);
    /* One header, all its lines, each ending in LF; may rewrite it. */
    CLEANUP_FILTER_ACT (*header)(void *state, CLEANUP_MSG *msg, VSTR *header);
    /* The header block is complete (missing headers added). */
    void (*end_headers)(void *state, CLEANUP_MSG *msg);
    /* A chunk of the body, as it is written. */
    void (*body)(void *state, CLEANUP_MSG *msg, const char *data, size_t len);
    /* The content is complete, before commit (a DKIM signer signs here). */
    void (*end)(void *state, CLEANUP_MSG *msg);
    void (*free)(void *state);
} CLEANUP_FILTER;

/*
 * One message. Every failure is recorded in the message (status, reason)
 * and later calls do nothing more than count, so the protocol code only
 * asks for the status at BEGIN and END.
 */
struct CLEANUP_MSG {
    const CLEANUP_CONF *conf;
    const CLEANUP_FILTER *const *filters; /* NULL-terminated */
    void **filter_state;
    size_t filter_count;
    char qid[64];
    char *tmp_path; /* incoming/.tmp.QID */
    char *final_path; /* incoming/QID */
    QFILE_OUT *out; /* the file being written, NULL when none */
    QFILE_WRITER *writer; /* out's writer, NULL with it */
    int status; /* 0 or an SMTP reply code */
    VSTR *reason; /* "4.3.0 queue file write error" */
    bool committed;
    const char *prepend_end; /* END's prepend (header lines), during
                                cleanup_msg_end only; NULL: none */
    bool defer_commit; /* the daemon commits it in a group (END returns
                          with commit_pending set) */
    bool commit_pending; /* ready, waiting for its group commit */
    long long content_size; /* as committed */
    long long flags;
    char *sender; /* qualified */
    char *full_name; /* sendmail -F, or NULL */
    char *tenant; /* api mail: the API key's tenant, else NULL */
    char *tags; /* api mail: JSON array text, else NULL */
    char *metadata; /* api mail: JSON object text, else NULL */
    struct timeval arrival;
    int rcpt_count;
    long long received; /* content bytes received */
    /* Content state (cleanup_content.c). */
    bool in_content; /* M record written */
    bool in_body;
    VSTR *line; /* partial line while in headers */
    VSTR *header; /* current header, with its lines */
    long long header_bytes;
    bool seen_message_id;
    bool seen_date;
    bool seen_from;
    char *message_id; /* for the log */
    int last_byte; /* of the content written, or -1 */
    /* For the log lines of the content checks. */
    char *client_info; /* "name[addr]" or "local" */
    char *protocol; /* or NULL */
    char *helo_name; /* or NULL */
    char *first_rcpt; /* as queued, or NULL */
    /* Content checks (cleanup_checks.c). */
    bool hold; /* commit into hold/, do not wake qmgr */
    bool discard; /* answer success, queue nothing */
    bool sender_rewrite_failed; /* reported at the first recipient */
    VSTR *body_line; /* partial body line while body_checks run */
    VSTR *prepend; /* PREPEND text of the current header or line */
    long long body_checked; /* body bytes seen by body_checks */
    /* Source pool (cleanup_pool.c). */
    bool pool_mynetworks; /* the client is in mynetworks */
    bool pool_local; /* local submission */
    char *pool_sasl; /* the SASL login, NULL: none */
    char *pool; /* the pool chosen, NULL: no pools */
    /* Trace (cleanup_trace.c). */
    bool trace_trusted; /* a traceparent header is honoured */
    char *traceparent; /* the attribute written, NULL: none yet */
    /* Tracking (cleanup_track.c): the body kept in memory to be rewritten
       at the end instead of streamed; past body_hold_limit (0: none)
       cleanup_content writes it out and drops the pointer. */
    VSTR *body_hold; /* NULL: streamed (the filter owns the VSTR) */
    long long body_hold_limit;
    /* Suppression (cleanup_suppress.c). */
    int queued_rcpts; /* recipient records written */
    ARGV *suppressed; /* address, reason, address, reason ...; NULL: none */
};

/* cleanup_message.c */
extern CLEANUP_MSG *cleanup_msg_begin(const CLEANUP_CONF *conf,
                                      const CLEANUP_BEGIN *req,
                                      const CLEANUP_FILTER *const *filters);
extern void cleanup_msg_rcpt(CLEANUP_MSG *msg, const char *address,
                             const char *orcpt, const char *notify);
extern void cleanup_msg_data(CLEANUP_MSG *msg, const char *data, size_t len);
/* cleanup_msg_end - commit (or abort): the status to send; with
   msg->defer_commit, a message ready to commit is left with
   msg->commit_pending set (status 0 so far) for cleanup_commit.h */
extern int cleanup_msg_end(CLEANUP_MSG *msg, bool abort);

/* cleanup_commit.c (the queue itself: cleanup_commit.h) */
/* cleanup_msg_commit - commit a message cleanup_msg_end() found ready (or
   leave it pending with msg->defer_commit); its status */
extern int cleanup_msg_commit(CLEANUP_MSG *msg);
/* cleanup_msg_commit_done - record the commit's outcome (step and errno
   from qfile_commit_group) and log it */
extern void cleanup_msg_commit_done(CLEANUP_MSG *msg, QFILE_STEP step, int err);
/* cleanup_msg_free - remove the file unless committed; returns NULL */
extern CLEANUP_MSG *cleanup_msg_free(CLEANUP_MSG *msg);
/* cleanup_msg_fail - record a failure (the first one wins) and remove the
   partial file at once */
extern void cleanup_msg_fail(CLEANUP_MSG *msg, int status, const char *reason);
/* cleanup_qualify - addr, or addr@myorigin when addr has no domain
   (smtp_addr_split: a quoted '@' is not one) */
extern char *cleanup_qualify(const CLEANUP_CONF *conf, const char *addr);
/* cleanup_remove_stale - remove temporary files older than max_age */
extern void cleanup_remove_stale(const CLEANUP_CONF *conf, time_t max_age);

/* cleanup_pool.c */
struct MAIL_CONF;
extern const CLEANUP_FILTER cleanup_pool_filter;
/* cleanup_pool_conf - read the pool parameters (fatal when bad) */
extern void cleanup_pool_conf(CLEANUP_CONF *cconf,
                              const struct MAIL_CONF *conf);
extern void cleanup_pool_conf_free(CLEANUP_CONF *cconf);
/* cleanup_pool_begin - the rules' pool, written as the pool attribute
   (tenant: the message's tenant, NULL: none) */
extern void cleanup_pool_begin(CLEANUP_MSG *msg, const CLEANUP_BEGIN *req,
                               const char *tenant);

/* cleanup_trace.c */
extern const CLEANUP_FILTER cleanup_trace_filter;
/* cleanup_trace_ratio - otel_traces_sampler_ratio as a number, NAN (why
   says) when it is not one from 0 to 1 */
extern double cleanup_trace_ratio(const char *text, VSTR *why);
/* cleanup_trace_conf - read the trace parameters (fatal when bad) */
extern void cleanup_trace_conf(CLEANUP_CONF *cconf,
                               const struct MAIL_CONF *conf);
extern void cleanup_trace_conf_free(CLEANUP_CONF *cconf);
/* cleanup_trace_begin - a fresh trace, written as the traceparent
   attribute; who may replace it by header */
extern void cleanup_trace_begin(CLEANUP_MSG *msg, const CLEANUP_BEGIN *req);

/* cleanup_track.c */
typedef struct CLEANUP_TRACK CLEANUP_TRACK;
extern const CLEANUP_FILTER cleanup_track_filter;
/* cleanup_track_conf - read the tracking parameters (fatal when bad);
   cconf->track stays NULL when no base URL or mailto domain is set */
extern void cleanup_track_conf(CLEANUP_CONF *cconf,
                               const struct MAIL_CONF *conf);
extern void cleanup_track_conf_free(CLEANUP_CONF *cconf);

/* cleanup_checks.c: each returns false when the item is to be dropped;
   text for before the item goes into prepend (which the caller resets) */
extern bool cleanup_check_header(CLEANUP_MSG *msg, VSTR *header, VSTR *prepend);
extern bool cleanup_check_body(CLEANUP_MSG *msg, VSTR *line, VSTR *prepend);
/* cleanup_check_action - apply one table value (exported for tests) */
extern bool cleanup_check_action(CLEANUP_MSG *msg, const char *class_name,
                                 const char *what, const char *value,
                                 VSTR *item, VSTR *prepend);

/* cleanup_rewrite.c */
/* cleanup_rewrite_sender - the envelope sender through sender_canonical_maps
   and canonical_maps: a new string, or NULL when a table failed */
extern char *cleanup_rewrite_sender(CLEANUP_MSG *msg, const char *sender);
/* cleanup_rewrite_recipient - the same with recipient_canonical_maps */
extern char *cleanup_rewrite_recipient(CLEANUP_MSG *msg, const char *rcpt);
/* cleanup_rewrite_virtual - a recipient (after canonical mapping) through
   virtual_alias_maps, recursively: the addresses to queue (the caller frees
   the ARGV), or NULL when the message has failed (a table failed, or the
   recursion or expansion limit was passed) */
extern ARGV *cleanup_rewrite_virtual(CLEANUP_MSG *msg, const char *rcpt);
/* cleanup_rewrite_result_split - the addresses of one table value:
   separated by commas or white space outside double quotes, each without
   its enclosing <>; empty elements dropped (exported for tests) */
extern ARGV *cleanup_rewrite_result_split(const char *value);
/* cleanup_rewrite_header - rewrite the addresses of a sender or recipient
   header in place; false when a table failed (the message has failed) */
extern bool cleanup_rewrite_header(CLEANUP_MSG *msg, VSTR *header);
/* cleanup_rewrite_addr_spans - parse an address header's value: start and
   end offsets (pairs, into spans) of the addresses it can rewrite; -1 when
   the header cannot be parsed (group syntax, unbalanced quotes) */
extern ssize_t cleanup_rewrite_addr_spans(const char *value, size_t *spans,
                                          size_t max_pairs);

/* cleanup_suppress.c */
/* cleanup_suppress_conf - open the list (lazily) when suppression_enable */
extern void cleanup_suppress_conf(CLEANUP_CONF *cconf,
                                  const struct MAIL_CONF *conf);
extern void cleanup_suppress_conf_free(CLEANUP_CONF *cconf);
/* cleanup_suppress_rcpt - is rcpt (as it will be queued) suppressed? true:
   recorded in msg->suppressed (and logged), not to be written; true also
   when the message has failed (a lookup error fails it with 451 4.3.0) */
extern bool cleanup_suppress_rcpt(CLEANUP_MSG *msg, const char *rcpt);
/* cleanup_suppress_events - the suppressed events of msg, durable: 0, or
   -1 (logged) when the journal could not take them */
extern int cleanup_suppress_events(const CLEANUP_MSG *msg);
/* cleanup_suppress_status - STATUS suppressed= of msg (caller frees), NULL
   when none was dropped */
extern char *cleanup_suppress_status(const CLEANUP_MSG *msg);

/* cleanup_content.c */
extern void cleanup_content_init(CLEANUP_MSG *msg);
extern void cleanup_content_data(CLEANUP_MSG *msg, const char *data,
                                 size_t len);
extern void cleanup_content_end(CLEANUP_MSG *msg);
extern void cleanup_content_free(CLEANUP_MSG *msg);
/* cleanup_from_header - append "From: ...\n" for sender (qualified, "" for
   the null sender) and an optional full name, quoted per RFC 5322 */
extern void cleanup_from_header(VSTR *out, const char *sender,
                                const char *full_name);
/* cleanup_content_write - content bytes into the queue file */
extern void cleanup_content_write(CLEANUP_MSG *msg, const char *data,
                                  size_t len);

#endif
