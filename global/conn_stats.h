/*
 * conn_stats - counts of SMTP connections in (smtpd) and out (smtp),
 * shared by every process through one small file, for the metrics daemon
 *
 * The file, queue_directory/stats/connections (a queue folder of its
 * own, made by sluice init and by master at start like the others), is
 * mapped MAP_SHARED by every smtpd and smtp process; each takes one slot (its pid, its direction)
 * and changes only its own slot with atomic operations: no lock, no
 * system call per connection. A slot holds
 *
 *   active     connections the process has open now (a gauge)
 *   sessions   connections it has opened (a counter)
 *   tls[V]     TLS sessions it has established, by protocol version
 *
 * A process that exits gives its slot back (pid 0) and keeps its
 * counters in it; a later process of the same direction takes it over
 * and adds to them, so the sums over all slots only grow (counters that
 * survive processes). The active count of a slot whose process died
 * without giving it back is not counted (the reader checks the pid) and
 * is reset by the next taker.
 *
 * Layout: a header (magic, slot count) and CONN_STATS_SLOTS slots of
 * 64-bit words. The counts are statistics, not records: a crash or a
 * power cut may lose some; nothing depends on them.
 */
#ifndef CONN_STATS_H
#define CONN_STATS_H

#include "sys_defs.h"

#include "vstr.h"

#define CONN_STATS_FILE "connections" /* in queue_directory/stats */
#define CONN_STATS_SLOTS 2048

typedef enum CONN_STATS_DIR {
    CONN_STATS_IN, /* smtpd */
    CONN_STATS_OUT, /* smtp */
    CONN_STATS_DIRS
} CONN_STATS_DIR;

/* The TLS versions counted apart; any other counts as "other" (the last). */
#define CONN_STATS_TLS_VERSIONS 6
extern const char *const conn_stats_tls_names[CONN_STATS_TLS_VERSIONS];

typedef struct CONN_STATS CONN_STATS;

/* conn_stats_open - map queue_dir's file (made when missing) and take a
   slot for this process in direction dir; NULL with why (the caller goes
   on without counts) */
extern CONN_STATS *conn_stats_open(const char *queue_dir, CONN_STATS_DIR dir,
                                   VSTR *why);
/* conn_stats_close - give the slot back (active 0), unmap; NULL. A NULL
   stats is ignored, as by the functions below. */
extern CONN_STATS *conn_stats_close(CONN_STATS *stats);
/* conn_stats_connect - a connection opened (active and sessions + 1) */
extern void conn_stats_connect(CONN_STATS *stats);
/* conn_stats_disconnect - a connection counted by connect closed */
extern void conn_stats_disconnect(CONN_STATS *stats);
/* conn_stats_tls - a TLS session of protocol version (OpenSSL's name,
   "TLSv1.3") established */
extern void conn_stats_tls(CONN_STATS *stats, const char *version);

/* The sums over every slot, as a reader sees them. */
typedef struct CONN_STATS_SUM {
    long long active[CONN_STATS_DIRS]; /* of live processes only */
    unsigned long long sessions[CONN_STATS_DIRS];
    unsigned long long tls[CONN_STATS_DIRS][CONN_STATS_TLS_VERSIONS];
} CONN_STATS_SUM;

/* conn_stats_read - the sums of queue_dir's file into sum (zeros when it
   does not exist yet): 0, or -1 with why; alive(pid) says whether a
   slot's process still runs */
extern int conn_stats_read(const char *queue_dir, CONN_STATS_SUM *sum,
                           bool (*alive)(long pid), VSTR *why);

#endif
