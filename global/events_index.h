/*
 * events_index - the status index behind `sluice why`: its schema, shared
 * by its writer (events/index.c, a backend of the events daemon) and its
 * reader (admin/sluice_why.c)
 *
 * One SQLite database (events_index_database), fed from the journal:
 *
 *   messages  one row per queue ID: the Message-ID, sender, size, client
 *             and time of its received event (when the index saw it),
 *             the time of its last event (what pruning goes by) and its
 *             state: the kind of its last event.
 *   attempts  one row per event that is not received (deferred,
 *             delivered, bounced, expired, returned), keyed by the event
 *             id (INSERT OR IGNORE: an event sent again after a crash is
 *             kept once): time, recipient, relay (the remote host),
 *             enhanced status code, reply text, delay, provider.
 *
 * Lookups are by queue ID (messages primary key, attempts_qid), by
 * Message-ID (messages_mid) and by recipient (attempts_rcpt, most recent
 * first); none of them reads the spool. Rows whose message had no event
 * for events_index_max_age are removed a bounded number per batch, so
 * pruning never holds up the journal. Write-ahead log (events/index.c
 * says why and how readers keep working); `sluice why` only reads it.
 */
#ifndef EVENTS_INDEX_H
#define EVENTS_INDEX_H

#define EVENTS_INDEX_SCHEMA                                                    \
    "CREATE TABLE IF NOT EXISTS messages ("                                    \
    " qid TEXT PRIMARY KEY, message_id TEXT, sender TEXT, size INTEGER,"       \
    " client TEXT, received_t INTEGER, received_ts TEXT,"                      \
    " last_t INTEGER NOT NULL, state TEXT NOT NULL);"                          \
    "CREATE INDEX IF NOT EXISTS messages_mid ON messages(message_id);"         \
    "CREATE INDEX IF NOT EXISTS messages_last ON messages(last_t);"            \
    "CREATE TABLE IF NOT EXISTS attempts ("                                    \
    " id TEXT PRIMARY KEY, qid TEXT NOT NULL, t INTEGER NOT NULL,"             \
    " ts TEXT NOT NULL, kind TEXT NOT NULL, recipient TEXT COLLATE NOCASE,"    \
    " relay TEXT,"                                                             \
    " dsn TEXT, reply TEXT, delay REAL, provider TEXT);"                       \
    "CREATE INDEX IF NOT EXISTS attempts_qid ON attempts(qid, t);"             \
    "CREATE INDEX IF NOT EXISTS attempts_rcpt ON attempts(recipient, t);"      \
    "CREATE INDEX IF NOT EXISTS attempts_t ON attempts(t);"

#define EVENTS_INDEX_PRUNE_ROWS 1000 /* most rows of a table pruned a batch */

#endif
