/*
 * events_stats - the embedded store behind `sluice stats`: its schema and
 * the pure helpers its writer (events/stats.c, a backend of the events
 * daemon) and its reader (admin/sluice_stats.c) share
 *
 * One SQLite database (events_stats_database), one row per event, keyed
 * by the event id, so an event the exporter delivers twice (at least
 * once) is counted once. A delivered, bounced, deferred ... row has no
 * sender in its event; its sender_domain is the one of the message's
 * received row. Rollback journal (journal_mode=DELETE, events/stats.c):
 * what the store was first written with, and nothing more. Root readers
 * are no reason: SQLite gives the -wal and -shm files it makes as root to
 * the database's owner (events/index.c's index is a write-ahead log that
 * `sluice why` reads as root; tests/test_why.py,
 * test_writer_crashed_mid_batch), so WAL would do as well and would spare
 * each batch a journal made, synced and removed. Not switched yet: the
 * writer would have to turn a store made in rollback mode over (as
 * index.c does), and `sluice stats`'s wait for a hot journal's rollback
 * (admin/sluice_stats.c) would change with it.
 */
#ifndef EVENTS_STATS_H
#define EVENTS_STATS_H

#include "sys_defs.h"

#include <time.h>

#include "vstr.h"

#define EVENTS_STATS_SCHEMA                                                    \
    "CREATE TABLE IF NOT EXISTS events ("                                      \
    " id TEXT PRIMARY KEY, t INTEGER NOT NULL, ts TEXT NOT NULL,"              \
    " kind TEXT NOT NULL, qid TEXT, recipient_domain TEXT,"                    \
    " sender_domain TEXT, tenant TEXT, pool TEXT, source_ip TEXT,"             \
    " provider TEXT);"                                                         \
    "CREATE INDEX IF NOT EXISTS events_t ON events(t);"                        \
    "CREATE INDEX IF NOT EXISTS events_qid ON events(qid);"

/* events_stats_domain - the lower-case domain of address into domain;
   false (domain empty) when it has none */
extern bool events_stats_domain(const char *address, VSTR *domain);

/* events_stats_time - the Unix time of an event's ts
   (YYYY-MM-DDTHH:MM:SS[.frac]Z), or -1 when it is not one */
extern long long events_stats_time(const char *ts);

#endif
