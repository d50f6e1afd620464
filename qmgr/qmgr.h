/*
 * qmgr - the queue manager's shared internals
 *
 * One process, one libevent loop:
 *
 * qmgr.c          main: the configuration, the wake-ups, the scans that
 *                 move files into active/
 * qmgr_message.c  a message: loading it, routing its recipients, recording
 *                 results, where the file goes when it is complete
 * qmgr_dest.c     the destinations (transport, next hop; found through a
 *                 util/htable) with their queues and windows; starts
 *                 deliveries round-robin
 * qmgr_sched.c    the scheduling decisions (windows, dead destinations,
 *                 retry steps, expiry, delay warnings) as pure functions
 *                 (qmgr_sched.h); unit tested by qmgr_sched_test.c
 * qmgr_route.c    routing an address to transport:nexthop, a pure function
 *                 (qmgr_route.h); unit tested by qmgr_route_test.c
 * qmgr_deliver.c  one delivery with an agent (global/deliver_proto.h)
 * qmgr_bounce.c   asking the bounce daemon for a DSN
 * qmgr_conn.c     the non-blocking attribute-list client those two use
 *                 (global/attr_conn with a deadline and qmgr's words
 *                 for the end)
 * qmgr_admin.c    `sluice hold|delete|requeue` about messages in active/,
 *                 on private/qmgr-admin (global/qmgr_admin_proto.h)
 * qmgr_listen.c   the listener both administrative services share:
 *                 accept, greetings, idle time, close
 * qmgr_shaping.c  smtp_shaping_maps: the buckets recipients share (limits
 *                 of global/shaping.h) and the timer that wakes a
 *                 destination whose next token is due; response
 *                 automation (global/shaping_auto.h) on remote replies
 * qmgr_source.c   smtp_source_pools: a message's pool, its source per
 *                 destination (weighted round robin), which sources are
 *                 usable now (bind failures, reputation pauses, warm-up
 *                 caps), results recorded per source
 * qmgr_shaping_admin.c  `sluice shaping` on private/qmgr-shaping
 *                 (global/shaping_proto.h): list, suspend, resume
 * qmgr_pool_admin.c  `sluice pool` on private/qmgr-pool
 *                 (global/pool_proto.h): list, pause, resume, feedback
 *
 * qmgr_message.c, qmgr_dest.c and qmgr_deliver.c decide nothing about
 * scheduling or routing themselves: they apply what the pure functions
 * return (logs, file moves, deferrals).
 *
 * Administrative requests on a message in memory (qmgr_message_admin):
 * delete drops it at once (file and logs removed, pending recipients
 * withdrawn, results of deliveries in flight ignored); hold withdraws the
 * pending recipients and, once the deliveries in flight are over, moves
 * the file to hold/ instead of deferred/; requeue makes what is left due
 * at once.
 */
#ifndef QMGR_H
#define QMGR_H

#include "bounce_class.h"
#include "sys_defs.h"

#include <dirent.h>

#include "argv.h"
#include "attr.h"
#include "attr_conn.h"
#include "mail_server.h"
#include "qfile.h"
#include "qid.h"
#include "qmgr_route.h"
#include "qmgr_sched.h"
#include "shaping.h"
#include "vstr.h"

struct event;
struct event_base;
struct MAPS;
struct MATCH_LIST;
struct HTABLE;
struct MAIL_CONF;
struct SHAPING_RULES;
struct SHAPING_AUTO_RULES;
struct SHAPING_AUTO_HITS;
struct DNS_CTX;

typedef struct QMGR_CTX QMGR_CTX;
typedef struct QMGR_MESSAGE QMGR_MESSAGE;
typedef struct QMGR_DEST QMGR_DEST;
typedef struct QMGR_ENTRY QMGR_ENTRY;
typedef struct QMGR_CONN QMGR_CONN;
typedef struct QMGR_SHAPE QMGR_SHAPE;
typedef struct QMGR_LISTENER QMGR_LISTENER;
typedef struct QMGR_REUSE QMGR_REUSE;

/* Configuration, read once at start. */
typedef struct QMGR_CONF {
    char *queue_dir;
    struct MATCH_LIST *mydestination; /* domains delivered locally */
    struct MAPS *transport_maps; /* recipient -> transport:nexthop */
    struct MAPS *sender_relayhost_maps; /* sender -> relayhost */
    char *virtual_alias_domains_value; /* "": none */
    struct MATCH_LIST *virtual_alias_domains; /* NULL until it compiles */
    time_t virtual_alias_domains_tried; /* last attempt to compile it */
    char *virtual_mailbox_domains_value; /* "": none */
    struct MATCH_LIST *virtual_mailbox_domains; /* NULL until it compiles */
    time_t virtual_mailbox_domains_tried; /* last attempt to compile it */
    char *recipient_delimiter; /* "" when none */
    QMGR_ROUTE_CONF route; /* transports, relayhost, myhostname */
    QMGR_SCHED_CONF sched; /* windows, retries, lifetimes */
    long long active_limit; /* qmgr_message_active_limit */
    long long rcpt_limit; /* default_destination_recipient_limit */
    long long job_timeout; /* daemon_timeout: one delivery */
    long long ipc_timeout; /* ipc_timeout: one bounce request */
    struct EVENTS *events; /* the journal (global/events.h), NULL: off */
    BOUNCE_CLASS_RULES *bounce_classes; /* bounce_classes_file */
    struct SHAPING_RULES *shaping; /* smtp_shaping_maps, NULL: none */
    char *shaping_refused; /* why smtp_shaping_maps was refused at start
                              (qmgr runs without rules), NULL: it was not */
    struct SHAPING_AUTO_RULES *automation; /* smtp_shaping_automation_maps,
                                              NULL: none */
    char *automation_refused; /* as shaping_refused */
    struct SOURCE_POOLS *pools; /* smtp_source_pools, NULL: none */
    const struct SOURCE_POOL *default_pool; /* default_source_pool */
    long long source_retry; /* smtp_source_retry_time */
} QMGR_CONF;

/* A resumable scan of one queue directory (hashed ones: all 32 subdirs). */
typedef struct QMGR_SCAN {
    const char *queue_name;
    bool pending; /* a scan is wanted or running */
    bool running; /* it has begun */
    bool again; /* asked again while running */
    bool all_next; /* ... with all */
    DIR *dir; /* open while running */
    int hash_index; /* hashed queues: subdir in hand */
    bool all; /* deferred: everything is due */
    struct timespec started; /* when this scan began */
} QMGR_SCAN;

struct QMGR_CTX {
    QMGR_CONF conf;
    MAIL_SERVER *server;
    struct event_base *base;
    QMGR_SCAN active_scan; /* once, at start */
    QMGR_SCAN incoming_scan;
    QMGR_SCAN deferred_scan;
    struct event *scan_ev; /* one scan pass per loop pass */
    struct event *deferred_ev; /* next deferred scan */
    bool scan_turn; /* which of incoming/deferred goes first */
    time_t deferred_next; /* earliest next try known, 0: none */
    time_t deferred_last; /* last deferred scan began */
    size_t active_count; /* messages in memory */
    QMGR_MESSAGE *messages; /* every message in memory */
    QMGR_DEST *dests; /* every destination, in round-robin order */
    struct HTABLE *dest_table; /* "len:transport:nexthop" -> destination */
    QMGR_DEST *dest_rr; /* round-robin position */
    size_t jobs_running;
    struct QMGR_JOB *jobs; /* deliveries in flight, so that they stay
                              reachable from ctx when qmgr exits */
    struct QMGR_IDLE *idle; /* agent connections kept for the next job */
    size_t idle_count;
    struct event *resume_ev; /* paused destinations go on */
    bool scheduling; /* qmgr_dest_schedule runs */
    bool schedule_again; /* ... and was asked again */
    QMGR_LISTENER *admin_listener; /* private/qmgr-admin, NULL: none */
    struct HTABLE *shape_table; /* shaping bucket name -> QMGR_SHAPE */
    struct event *shape_ev; /* a held-back bucket's next token is due */
    long long shape_wake_at; /* ... at (monotonic usec), 0: not set */
    struct DNS_CTX *dns; /* MX lookups for provider rules, NULL: none */
    struct HTABLE *mx_cache; /* domain -> its provider (qmgr_shaping.c) */
    int mx_timeout; /* smtp_dns_timeout */
    QMGR_LISTENER *shape_listener; /* private/qmgr-shaping, NULL: none */
    struct QMGR_REDIS *redis; /* shaping_redis_server, NULL: node-local */
    struct event *commit_ev; /* the journal's group commit: at the end of
                                a pass, QMGR_COMMIT_GAP_USEC after the last
                                at the earliest */
    long long commit_last_usec; /* when the last one began (monotonic) */
    struct event *commit_timer_ev; /* ... or at the latest this soon after
                                      a received event */
    QMGR_MESSAGE *commit_list; /* messages whose queue changes wait for it */
    struct HTABLE *source_table; /* address -> what qmgr_source.c knows */
    struct HTABLE *wrr_table; /* "pool\ndest" -> round robin counters */
    size_t wrr_count; /* entries of wrr_table */
    struct REPUTATION *reputation; /* the circuit breaker, NULL: no pools */
    struct WARMUP *warmup; /* daily caps of new sources, NULL: no pools */
    char *reputation_path; /* data_directory/sources/reputation */
    char *warmup_path; /* data_directory/sources/warmup */
    struct event *source_tick_ev; /* pauses end, state is saved */
    time_t warmup_saved; /* when the warm-up counts were last saved */
    time_t save_warned; /* when a failed save was last logged */
    struct HTABLE *source_shared; /* keys paused in Redis at the last poll */
    bool source_poll_out; /* a poll of the shared pauses is out */
    unsigned long source_gen; /* pauses published (a poll sent before
                                 one is stale) */
    QMGR_LISTENER *pool_listener; /* private/qmgr-pool, NULL: none */
    /* Files taken as new from cleanup (their logs not read), counted;
       takes up to takes_synced are durable (active/ and incoming/
       fsynced after them): qmgr_message_take_durable() */
    unsigned long long takes;
    unsigned long long takes_synced;
    QMGR_REUSE *reuse; /* finished files to reuse/ (qmgr_reuse.c), NULL:
                          they are removed */
    int commit_backoff; /* the journal failed: seconds to the next try of
                           the commit (no new message is taken meanwhile);
                           0: it did not */
    /* The last transport whose private/ socket was there, and when (the
       loop's clock, usec): within a second it is not looked at again */
    char transport_seen[64]; /* "": none */
    long long transport_seen_usec;
};

/* qmgr_reuse.c */
extern void qmgr_reuse_init(QMGR_CTX *ctx, const struct MAIL_CONF *conf);
#define QMGR_REUSE_NO 0 /* not to be reused: the caller removes it */
#define QMGR_REUSE_MOVED 1 /* moved to reuse/: the caller logs "removed" */
#define QMGR_REUSE_HANDED 2 /* the thread moves it, and logs "removed" */
extern int qmgr_reuse_return(QMGR_MESSAGE *msg);
extern void qmgr_reuse_settled(QMGR_CTX *ctx);
extern size_t qmgr_reuse_unsettled(QMGR_CTX *ctx);
extern void qmgr_reuse_exit(QMGR_CTX *ctx);

/* qmgr.c */
extern void qmgr_scan_kick(QMGR_CTX *ctx);
extern void qmgr_scan_incoming(QMGR_CTX *ctx);
extern void qmgr_deferred_note(QMGR_CTX *ctx, time_t next_try);
/* qmgr_commit_soon - run qmgr_message_commit at the end of this loop pass */
extern void qmgr_commit_soon(QMGR_CTX *ctx);
/* qmgr_commit_later - run it within QMGR_COMMIT_DELAY at the latest */
extern void qmgr_commit_later(QMGR_CTX *ctx);
/* qmgr_commit_failed - the journal could not be written: try the commit
   again after a back-off, take no new message meanwhile */
extern void qmgr_commit_failed(QMGR_CTX *ctx, const char *why);

/* qmgr_admin.c */
extern void qmgr_admin_init(QMGR_CTX *ctx);

/* qmgr_listen.c: an administrative service's listener. The service
   speaks through its ops: its HELLO (sent on accept), the check of the
   command's HELLO (0, or -1 with why: logged, connection closed), and
   request, called with every later list, which answers it in full
   through qmgr_listen_send. */
typedef struct QMGR_LISTEN_OPS {
    const char *service; /* private/NAME; the logs' name */
    ATTR_LIST *(*hello_list)(void);
    int (*hello_take)(const ATTR_LIST *list, VSTR *why);
    void (*request)(QMGR_CTX *ctx, ATTR_CONN *conn, const ATTR_LIST *list);
} QMGR_LISTEN_OPS;
/* qmgr_listen - listen on private/ops->service (lists up to list_max
   bytes, a connection idle for idle seconds is closed); NULL, logged,
   when the socket cannot be made */
extern QMGR_LISTENER *qmgr_listen(QMGR_CTX *ctx, const QMGR_LISTEN_OPS *ops,
                                  size_t list_max, int idle);
/* qmgr_listen_send - queue one list to the command, and free it */
extern void qmgr_listen_send(ATTR_CONN *conn, ATTR_LIST *list);

/* Recipient states in memory. */
typedef enum QMGR_RCPT_STATE {
    QMGR_RCPT_DONE_BEFORE, /* D record when loaded */
    QMGR_RCPT_PENDING, /* waiting or in flight */
    QMGR_RCPT_FINISHED, /* sent or bounced this round */
    QMGR_RCPT_DEFERRED, /* try again later (or withdrawn: hold) */
} QMGR_RCPT_STATE;

/* What the administrator asked of a message in memory. */
typedef enum QMGR_ADMIN_OP {
    QMGR_ADMIN_NONE,
    QMGR_ADMIN_REQUEUE, /* what is left is due at once */
    QMGR_ADMIN_HOLD, /* to hold/ when the deliveries in flight end */
    QMGR_ADMIN_DELETE, /* gone: results are ignored */
} QMGR_ADMIN_OP;

typedef struct QMGR_RCPT_MEM {
    QMGR_RCPT_STATE state;
    bool marked; /* D on disk */
    char *defer_dsn; /* last defer this round */
    char *defer_reason;
    char *provider; /* for its events: the shaping provider (or domain
                       rule) of its destination, NULL: none */
    char *source_ip; /* for the event of its result: the source it was
                        tried from, NULL: none */
    char *tls_version; /* ... and its connection's TLS (events.h), */
    char *tls_cipher; /* NULL: plain text */
    char *tls_level;
    long long attempt_usec; /* ... and the attempt's latency, 0: unknown */
    long long conn_usec; /* its new connection's setup, 0: none */
} QMGR_RCPT_MEM;

struct QMGR_MESSAGE {
    QMGR_CTX *ctx;
    char qid[QID_SIZE];
    QFILE_INFO *info;
    QMGR_RCPT_MEM *rcpts; /* parallel to info->rcpts */
    size_t outstanding; /* recipients without a result */
    size_t refs; /* entries (and a load) using it */
    long long active_usec; /* when it entered active/ */
    long long wait_usec; /* when its recipients' wait for this round's
                            attempts began (qmgr_sched_wait_start) */
    int finish_step; /* qmgr_message.c */
    bool bounce_failed; /* keep it: the DSN is not out */
    struct QMGR_BOUNCE *bounce_req; /* a bounce request in flight */
    QMGR_CONN *bounce_conn; /* ... and its connection */
    QMGR_ADMIN_OP admin_op; /* qmgr_message_admin */
    int agent_deaths; /* agents that died with it in flight */
    size_t attempts; /* rounds that ended in deferred/ (qmgr_message.c) */
    bool warned; /* the delay warning went out */
    /* A defer log may exist: it was there (or could not be read) at
       activation, or qmgr appended to it since. false only when the
       activation's read found none (or the file came straight from
       cleanup: bounce_log_maybe) and nothing was appended: completion
       need not unlink it (qmgr is its only writer). */
    bool defer_log_maybe;
    /* A bounce log may exist: false only for a file straight from cleanup
       (reusable, no done mark) until qmgr appends to it; completion then
       need not look for one. */
    bool bounce_log_maybe;
    unsigned long long take_seq; /* ctx->takes when taken as new, else 0 */
    time_t not_before; /* send_at (queue file not_before=): no delivery
                          before it; 0: none */
    bool scheduled; /* this round only waits for not_before */
    bool reusable; /* cleanup's file taken from incoming/: qmgr_reuse.c
                      may have it written again */
    bool commit_pending; /* on ctx->commit_list: its events are not on
                            disk yet, so its queue changes wait */
    QMGR_MESSAGE *commit_next; /* ctx->commit_list */
    const struct SOURCE_POOL *pool; /* its source pool, NULL: not known yet
                                       (qmgr_source.c) */
    struct QMGR_SOURCE_PICK *picks; /* its source per destination */
    size_t pick_count;
    QMGR_MESSAGE *prev;
    QMGR_MESSAGE *next;
};

/* qmgr_message.c */
extern void qmgr_message_activate(QMGR_CTX *ctx, const char *from_queue,
                                  const char *qid);
/* qmgr_message_provider - note the provider of recipient index's
   destination (its bucket: shape, NULL when not shaped) for its events */
extern void qmgr_message_provider(QMGR_MESSAGE *msg, size_t index,
                                  const QMGR_SHAPE *shape);
/* qmgr_shape_provider - the provider name of a bucket (events,
   reputation keys): a provider rule's NAME, a domain rule's domain;
   NULL: none */
extern const char *qmgr_shape_provider(const QMGR_SHAPE *shape);
/* qmgr_rule_provider - the provider name of a shaping rule (NULL: the
   default rule or none) */
extern const char *qmgr_rule_provider(const SHAPING_RULE *rule);
/* qmgr_message_source - note the source recipient index is tried from,
   for the event of its next result (NULL: none) */
extern void qmgr_message_source(QMGR_MESSAGE *msg, size_t index,
                                const char *source);
/* class: the agent's classification of a failure (deliver_proto's
   category, hard); NULL: none came, qmgr classifies it itself */
/* qmgr_message_tls - note the TLS of the connection recipient index's
   result came over (version NULL: plain text), for its delivered event */
extern void qmgr_message_tls(QMGR_MESSAGE *msg, size_t index,
                             const char *version, const char *cipher,
                             const char *level);
/* qmgr_message_timing - note the agent's timing of recipient index's
   attempt (microseconds, -1: unknown) for the event of its result */
extern void qmgr_message_timing(QMGR_MESSAGE *msg, size_t index,
                                long long attempt_usec, long long conn_usec);
extern void qmgr_message_result(QMGR_MESSAGE *msg, size_t index,
                                const char *action, const char *dsn,
                                const char *reason, const char *diagnostic,
                                const char *remote_mta,
                                const BOUNCE_CLASS *class);
extern void qmgr_message_defer_self(QMGR_MESSAGE *msg, size_t index,
                                    const char *dsn, const char *reason);
extern void qmgr_message_check(QMGR_MESSAGE *msg);
/* qmgr_message_find - the message qid in memory, or NULL */
extern QMGR_MESSAGE *qmgr_message_find(QMGR_CTX *ctx, const char *qid);
/* qmgr_message_admin - apply an administrative request (delete, hold,
   requeue) to a message in memory; msg may be freed before it returns */
extern void qmgr_message_admin(QMGR_MESSAGE *msg, QMGR_ADMIN_OP op);
/* qmgr_message_withdrawn - a pending recipient taken back unstarted */
extern void qmgr_message_withdrawn(QMGR_MESSAGE *msg, size_t index);
/* qmgr_message_commit - the journal's group commit: write and fdatasync
   the events gathered since the last one, once, then make the queue
   changes they describe (done marks, then completion: removal, deferred/,
   bounce requests); exiting: only the done marks (no loop is left to
   complete anything) */
extern void qmgr_message_commit(QMGR_CTX *ctx, bool exiting);

/* One delivery's worth: a message and up to rcpt_limit recipients. */
struct QMGR_ENTRY {
    QMGR_MESSAGE *msg;
    QMGR_DEST *dest;
    size_t *index; /* into msg->info->rcpts */
    size_t count;
    QMGR_ENTRY *next;
};

struct QMGR_DEST {
    QMGR_CTX *ctx;
    char *transport;
    char *nexthop;
    char *key; /* in ctx->dest_table */
    QMGR_ENTRY *head; /* pending entries */
    QMGR_ENTRY *tail;
    QMGR_SCHED_DEST sched; /* window, deliveries in flight, dead, paused */
    char *last_reason; /* of the last site failure */
    QMGR_SHAPE *shape; /* its shaping bucket, NULL: not shaped */
    const struct SOURCE_POOL_SOURCE *source; /* its source (in
                                                conf.pools), NULL: none */
    QMGR_DEST *next;
};

/* qmgr_dest.c */
extern void qmgr_dest_add(QMGR_MESSAGE *msg, const char *transport,
                          const char *nexthop, size_t index);
extern void qmgr_dest_schedule(QMGR_CTX *ctx);
extern void qmgr_dest_job_done(QMGR_DEST *dest, QMGR_SCHED_OUTCOME outcome,
                               const char *reason);
extern void qmgr_dest_push_back(QMGR_DEST *dest, QMGR_ENTRY *entry);
extern void qmgr_dest_revive_all(QMGR_CTX *ctx);
/* qmgr_dest_rebucket - the pending entries of destinations of shape go
   again, recipient by recipient and in order, through qmgr_dest_add (an
   MX lookup decided their bucket) */
extern void qmgr_dest_rebucket(QMGR_CTX *ctx, QMGR_SHAPE *shape);
/* qmgr_dest_resource - the pending entries of destinations bound to source
   address go again through qmgr_dest_add (the source became unusable);
   provider not NULL: only those of that provider's buckets (its
   SOURCE/PROVIDER key was paused) */
extern void qmgr_dest_resource(QMGR_CTX *ctx, const char *address,
                               const char *provider);
/* qmgr_dest_withdraw - take msg's pending (unstarted) entries back; each
   recipient goes to qmgr_message_withdrawn; the caller holds a reference */
extern void qmgr_dest_withdraw(QMGR_MESSAGE *msg);
extern QMGR_ENTRY *qmgr_entry_free(QMGR_ENTRY *entry);

/* A shaping bucket: recipients that share one rule's limits. */
struct QMGR_SHAPE {
    char *name; /* domain, provider:NAME, or ?domain while its MX is
                   looked up (lowercase) */
    bool resolving; /* ?domain: nothing starts until the MX is known */
    const struct SHAPING_RULE *rule; /* in ctx->conf.shaping */
    SHAPING_STATE state; /* in flight, GCRA states, automation */
    struct SHAPING_AUTO_HITS *hits; /* automation matches, NULL: none yet */
    size_t dests; /* destinations that name it */
    /* Shared through Redis (qmgr_redis.c): */
    struct QMGR_REDIS *redis; /* ctx->redis; NULL: node-local */
    struct SHAPING_RULE share; /* this node's share of rule, while Redis
                                  is not up (shaping_cluster_nodes) */
    bool redis_pending; /* a take is out */
    bool redis_shared; /* the last decision was Redis's */
    int redis_grants; /* takes Redis granted that have not started */
    long long redis_granted_at; /* monotonic usec of the last grant */
    long long redis_retry_at; /* monotonic usec: ask Redis again then */
    struct ARGV *redis_leases; /* connection leases held, NULL: none */
};

/* qmgr_shaping.c */
extern long long qmgr_shaping_now(void);
extern void qmgr_shaping_init(QMGR_CTX *ctx, const struct MAIL_CONF *mc);
/* qmgr_shaping_find - the bucket of a recipient sent from source (NULL:
   none; else the bucket is "name@source": limits per provider x source),
   NULL: not shaped */
extern QMGR_SHAPE *qmgr_shaping_find(QMGR_CTX *ctx, const char *transport,
                                     const char *address, const char *source);
/* qmgr_shaping_provider - the provider of a recipient's bucket, known
   before its source is (qmgr_shape_provider of what qmgr_shaping_find
   will give, with no bucket made); NULL: none, or its MX is being looked
   up (the lookup is started) */
extern const char *qmgr_shaping_provider(QMGR_CTX *ctx, const char *transport,
                                         const char *address);
/* qmgr_shaping_may_start - false: held back (a timer wakes the scheduler
   when a rate's token is due; the end of a delivery when it is full) */
extern bool qmgr_shaping_may_start(QMGR_CTX *ctx, QMGR_SHAPE *shape,
                                   long long now);
extern void qmgr_shaping_start(QMGR_SHAPE *shape, long long now);
extern void qmgr_shaping_end(QMGR_SHAPE *shape);
/* qmgr_shaping_conn_messages - the bucket's messages_per_connection (the
   smtp agent closes a connection after that many), 0: no limit */
extern long long qmgr_shaping_conn_messages(const QMGR_SHAPE *shape);
/* qmgr_shaping_conn_max - the bucket's max_connections (the smtp agent
   counts its idle cached connections against it), 0: no limit */
extern long long qmgr_shaping_conn_max(const QMGR_SHAPE *shape);
/* qmgr_shaping_reply - a remote server's reply (a delivery agent's
   diagnostic) to a delivery of the bucket: response automation; fed
   once per distinct reply per delivery job, at the job's end */
extern void qmgr_shaping_reply(QMGR_CTX *ctx, QMGR_SHAPE *shape,
                               const char *diagnostic);
/* qmgr_shaping_sweep - forget unused buckets that remember nothing */
extern void qmgr_shaping_sweep(QMGR_CTX *ctx);
/* qmgr_shaping_suspend - hold bucket name for seconds (0: resume); -1
   with why for an unknown provider */
extern int qmgr_shaping_suspend(QMGR_CTX *ctx, const char *name,
                                long long seconds, VSTR *why);
typedef void (*QMGR_SHAPING_EACH_FN)(const QMGR_SHAPE *shape, size_t queued,
                                     long long now, void *arg);
/* qmgr_shaping_each - every bucket, with its entries waiting */
extern void qmgr_shaping_each(QMGR_CTX *ctx, QMGR_SHAPING_EACH_FN fn,
                              void *arg);

/* qmgr_shaping.c: what qmgr_redis.c reports */
/* qmgr_shaping_redis_answer - the take of shape was answered (BAD: not:
   the node decides alone); lease: the lease it holds, NULL: none */
extern void qmgr_shaping_redis_answer(QMGR_CTX *ctx, QMGR_SHAPE *shape,
                                      int verdict, long long wait,
                                      const char *lease);
/* qmgr_shaping_redis_changed - the link went up or down: schedule again */
extern void qmgr_shaping_redis_changed(QMGR_CTX *ctx);
/* qmgr_shaping_redis_renew - renew every bucket's leases */
extern void qmgr_shaping_redis_renew(QMGR_CTX *ctx);

/* qmgr_redis.c: the shaping limits shared through Redis */
typedef struct QMGR_REDIS QMGR_REDIS;
extern QMGR_REDIS *qmgr_redis_create(QMGR_CTX *ctx, const struct MAIL_CONF *mc);
extern bool qmgr_redis_up(const QMGR_REDIS *redis);
/* qmgr_redis_call - any call; its answer (NULL: none) goes to fn */
struct redisReply;
typedef void (*QMGR_REDIS_REPLY_FN)(QMGR_CTX *ctx,
                                    const struct redisReply *reply, void *arg);
extern bool qmgr_redis_call(QMGR_REDIS *redis, const char *what, int argc,
                            const char **argv, QMGR_REDIS_REPLY_FN fn,
                            void *arg);
extern long long qmgr_redis_nodes(const QMGR_REDIS *redis);
extern const char *qmgr_redis_describe(const QMGR_REDIS *redis, VSTR *buf);
extern bool qmgr_redis_take(QMGR_REDIS *redis, QMGR_SHAPE *shape,
                            const struct SHAPING_RULE *rule);
extern void qmgr_redis_release(QMGR_REDIS *redis, const char *bucket,
                               const char *lease);
extern void qmgr_redis_renew(QMGR_REDIS *redis, const char *bucket,
                             const struct ARGV *leases);
extern void qmgr_redis_set(QMGR_REDIS *redis, const char *bucket, int what,
                           const char *value, long long usec);

/* qmgr_shaping_admin.c: `sluice shaping` on private/qmgr-shaping */
extern void qmgr_shaping_admin_init(QMGR_CTX *ctx);

/* qmgr_source.c */
struct SOURCE_POOL_SOURCE;
extern void qmgr_source_init(QMGR_CTX *ctx, const struct MAIL_CONF *mc);
/* qmgr_source_usable - may source index of pool be chosen now? (bind
   failures, reputation pauses and probes, warm-up caps) */
extern bool qmgr_source_usable(QMGR_CTX *ctx, const struct SOURCE_POOL *pool,
                               size_t index);
/* qmgr_source_pool - msg's pool, NULL: no pools configured */
extern const struct SOURCE_POOL *qmgr_source_pool(QMGR_MESSAGE *msg);
/* qmgr_source_choose - msg's source for the recipients of provider (may
   be NULL: none) at (transport, nexthop): one choice per message, next
   hop and provider, usable for provider too when it is not NULL (its
   SOURCE/PROVIDER key, its provider's warm-up cap); *fresh: chosen now, not kept from before
   (then qmgr_source_take it); NULL with why empty: none (no pools, local
   mail); NULL with why: no usable one */
extern const struct SOURCE_POOL_SOURCE *qmgr_source_choose(
    QMGR_MESSAGE *msg, const char *transport, const char *nexthop,
    const char *provider, bool *fresh, VSTR *why);
/* qmgr_source_provider_ok - may msg's source address (kept: chosen
   before, fresh: chosen now) go to provider? */
extern bool qmgr_source_provider_ok(QMGR_CTX *ctx, const char *address,
                                    const char *provider, bool fresh);
/* qmgr_source_take - a fresh choice of address for provider (may be
   NULL): the probe tokens and the warm-up counts are taken */
extern void qmgr_source_take(QMGR_CTX *ctx, const char *address,
                             const char *provider, bool count_message);
/* qmgr_source_shared - has another provider's choice of msg for
   (transport, nexthop) the same source? (Then the message is counted in
   that source's daily total already: only the provider count is taken.) */
extern bool qmgr_source_shared(QMGR_MESSAGE *msg, const char *transport,
                               const char *nexthop, const char *provider,
                               const char *address);
/* qmgr_source_unpick - drop msg's choice for (transport, nexthop,
   provider): the next qmgr_source_choose makes a fresh one */
extern void qmgr_source_unpick(QMGR_MESSAGE *msg, const char *transport,
                               const char *nexthop, const char *provider);
/* qmgr_source_forget - release msg's choices */
extern void qmgr_source_forget(QMGR_MESSAGE *msg);
/* qmgr_source_failed - address could not be bound (smtp's DONE) */
extern void qmgr_source_failed(QMGR_CTX *ctx, const char *address,
                               const char *reason);
/* qmgr_source_status - "usable" or the reason it is not (until: when it
   is usable again, 0: now) */
extern const char *qmgr_source_status(QMGR_CTX *ctx, const char *address,
                                      long long *until);
/* qmgr_source_result - a recipient's result from source (msg's pool) to
   provider (NULL: none): the reputation circuit breaker and warm-up */
extern void qmgr_source_result(QMGR_MESSAGE *msg, const char *source,
                               const char *provider, const char *action,
                               const char *dsn, const char *diagnostic,
                               const char *remote_mta);
/* qmgr_source_feedback - a late bounce or a complaint about a message
   sent from source to provider (NULL: none) at when: the entry point for
   asynchronous feedback (#18 item 5); 0, or -1 with why */
extern int qmgr_source_feedback(QMGR_CTX *ctx, const char *source,
                                const char *provider, bool complaint,
                                long long when, VSTR *why);
/* qmgr_source_pause, qmgr_source_resume - the operator's word about a
   source address; 0, or -1 with why (not a source of any pool) */
extern int qmgr_source_pause(QMGR_CTX *ctx, const char *address, VSTR *why);
extern int qmgr_source_resume(QMGR_CTX *ctx, const char *address, VSTR *why);
/* qmgr_source_exit - save what is unsaved (qmgr exits) */
extern void qmgr_source_exit(QMGR_CTX *ctx);

/* qmgr_pool_admin.c: `sluice pool` on private/qmgr-pool */
extern void qmgr_pool_admin_init(QMGR_CTX *ctx);

/* qmgr_deliver.c */
extern void qmgr_deliver_start(QMGR_CTX *ctx, QMGR_ENTRY *entry);

/* qmgr_bounce.c: done(msg, ok) is called once, later, never from inside */
typedef void (*QMGR_BOUNCE_DONE)(QMGR_MESSAGE *msg, bool ok);
extern void qmgr_bounce_request(QMGR_MESSAGE *msg, const char *kind,
                                QMGR_BOUNCE_DONE done);

/* qmgr_conn.c: a non-blocking client of a private/ service; on_end's why
   is QMGR_CONN_LOST (EOF), QMGR_CONN_ERROR ": ...", "timeout" or
   "malformed reply: ..." */
#define QMGR_CONN_LOST ATTR_CONN_LOST
#define QMGR_CONN_ERROR ATTR_CONN_ERROR
typedef void (*QMGR_CONN_LIST_FN)(QMGR_CONN *conn, ATTR_LIST *list, void *arg);
typedef void (*QMGR_CONN_END_FN)(QMGR_CONN *conn, const char *why, void *arg);
extern QMGR_CONN *qmgr_conn_open(struct event_base *base, const char *path,
                                 long long timeout, size_t max_len,
                                 QMGR_CONN_LIST_FN on_list,
                                 QMGR_CONN_END_FN on_end, void *arg, VSTR *why);
extern void qmgr_conn_send(QMGR_CONN *conn, const ATTR_LIST *list);
extern void qmgr_conn_send_wire(QMGR_CONN *conn, const VSTR *wire);
/* qmgr_conn_rebind - hand the connection to another owner, with a new
   deadline (0: none) */
extern void qmgr_conn_rebind(QMGR_CONN *conn, QMGR_CONN_LIST_FN on_list,
                             QMGR_CONN_END_FN on_end, void *arg,
                             long long timeout);
extern QMGR_CONN *qmgr_conn_free(QMGR_CONN *conn);

/* in qmgr_message.c: a recipient line qmgr writes itself (deliver_log) */
extern void qmgr_log_status(const QMGR_MESSAGE *msg, const char *address,
                            const char *dsn, const char *category,
                            const char *status, const char *reason);

#endif
