/*
 * index - the events daemon's status index: the SQLite store behind
 * `sluice why` (global/events_index.h has the schema)
 *
 * One transaction per batch, as stats.c: the received event of a message
 * sets its messages row (Message-ID, sender, size, client); every other
 * event is an attempts row (INSERT OR IGNORE on the event id, so a batch
 * sent again after a crash or kill -9 is kept once) and moves the
 * message's last_t and state. The same transaction removes at most
 * EVENTS_INDEX_PRUNE_ROWS rows of each table older than
 * events_index_max_age, and a timer does the same once a minute while
 * no event comes, so pruning a large backlog is spread out and never
 * holds the journal up. Committed with synchronous=FULL before the
 * framework moves the position. A batch SQLite refuses is rolled back
 * and tried again with the framework's back-off; never dead-lettered:
 * the events stay in the journal (`sluice events status` shows the
 * backlog) until the administrator mends the store.
 */
#include "sys_defs.h"

#include <limits.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <sqlite3.h>

#include "events.h"
#include "events_index.h"
#include "events_stats.h"
#include "exporter.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define INDEX_BUSY_MS 5000 /* wait for a reader's lock */
#define INDEX_PRUNE_SECONDS 60 /* between prunes when no batch comes */

#define INDEX_MESSAGE                                                          \
    "INSERT INTO messages (qid, message_id, sender, size, client,"             \
    " received_t, received_ts, last_t, state) VALUES (?1, ?2, ?3, ?4, ?5,"     \
    " ?6, ?7, ?8, ?9) ON CONFLICT(qid) DO UPDATE SET"                          \
    " message_id = COALESCE(excluded.message_id, message_id),"                 \
    " sender = COALESCE(excluded.sender, sender),"                             \
    " size = COALESCE(excluded.size, size),"                                   \
    " client = COALESCE(excluded.client, client),"                             \
    " received_t = COALESCE(received_t, excluded.received_t),"                 \
    " received_ts = COALESCE(received_ts, excluded.received_ts),"              \
    " last_t = MAX(last_t, excluded.last_t),"                                  \
    " state = CASE WHEN excluded.last_t >= last_t THEN excluded.state"         \
    " ELSE state END"

#define INDEX_ATTEMPT                                                          \
    "INSERT OR IGNORE INTO attempts (id, qid, t, ts, kind, recipient, relay,"  \
    " dsn, reply, delay, provider) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"    \
    " ?9, ?10, ?11)"

#define INDEX_PRUNE                                                            \
    "DELETE FROM attempts WHERE rowid IN (SELECT rowid FROM attempts"          \
    " WHERE t < ?1 LIMIT ?2);"                                                 \
    "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages"          \
    " WHERE last_t < ?1 LIMIT ?2)"

typedef struct INDEX {
    EXPORTER *exp;
    sqlite3 *db;
    sqlite3_stmt *message;
    sqlite3_stmt *attempt;
    sqlite3_stmt *prune_attempts;
    sqlite3_stmt *prune_messages;
    long long max_age; /* events_index_max_age */
    struct event *work_ev;
    struct event *prune_ev;
    const VSTR *lines; /* the batch in hand */
    int count;
} INDEX;

/* index_text - bind obj[name] (a string) or NULL at index */
static void index_text(sqlite3_stmt *stmt, int col, const json_t *obj,
                       const char *name)
{
    const char *value = json_string_value(json_object_get(obj, name));

    if (value)
        (void) sqlite3_bind_text(stmt, col, value, -1, SQLITE_TRANSIENT);
    else
        (void) sqlite3_bind_null(stmt, col);
}

/* index_step - run stmt once; SQLITE_DONE or an error */
static int index_step(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);

    (void) sqlite3_reset(stmt);
    return rc;
}

/* index_row - one event line into the index; SQLITE_DONE or an error */
static int index_row(INDEX *index, const char *line, size_t len)
{
    json_t *obj = json_loadb(line, len, 0, NULL);
    const char *id = json_string_value(json_object_get(obj, "id"));
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const char *ts = json_string_value(json_object_get(obj, "ts"));
    const char *qid = json_string_value(json_object_get(obj, "qid"));
    long long t = events_stats_time(ts);
    bool received;
    sqlite3_stmt *stmt;
    json_t *value;
    int rc;

    /* The framework sends JSON objects only; one without these is not
       about a message the index can answer for. */
    if (id == NULL || kind == NULL || qid == NULL || t < 0) {
        msg_warn("events: index: an event without id, kind, qid or ts is "
                 "not indexed: %.200s",
                 line);
        json_decref(obj);
        return SQLITE_DONE;
    }
    received = strcmp(kind, EVENTS_RECEIVED) == 0;
    stmt = index->message;
    (void) sqlite3_clear_bindings(stmt);
    (void) sqlite3_bind_text(stmt, 1, qid, -1, SQLITE_TRANSIENT);
    if (received) {
        index_text(stmt, 2, obj, "message_id");
        index_text(stmt, 3, obj, "sender");
        if (json_is_integer(value = json_object_get(obj, "size")))
            (void) sqlite3_bind_int64(stmt, 4, json_integer_value(value));
        index_text(stmt, 5, obj, "client");
        (void) sqlite3_bind_int64(stmt, 6, t);
        (void) sqlite3_bind_text(stmt, 7, ts, -1, SQLITE_TRANSIENT);
    }
    (void) sqlite3_bind_int64(stmt, 8, t);
    (void) sqlite3_bind_text(stmt, 9, kind, -1, SQLITE_TRANSIENT);
    if ((rc = index_step(stmt)) != SQLITE_DONE || received) {
        json_decref(obj);
        return rc;
    }
    stmt = index->attempt;
    (void) sqlite3_clear_bindings(stmt);
    (void) sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(stmt, 2, qid, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_int64(stmt, 3, t);
    (void) sqlite3_bind_text(stmt, 4, ts, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(stmt, 5, kind, -1, SQLITE_TRANSIENT);
    index_text(stmt, 6, obj, "recipient");
    index_text(stmt, 7, obj, "relay");
    index_text(stmt, 8, obj, "dsn");
    index_text(stmt, 9, obj, "reply");
    if (json_is_number(value = json_object_get(obj, "delay")))
        (void) sqlite3_bind_double(stmt, 10, json_number_value(value));
    index_text(stmt, 11, obj, "provider");
    rc = index_step(stmt);
    json_decref(obj);
    return rc;
}

/* index_prune - remove a bounded number of rows past the max age;
   SQLITE_DONE or an error */
static int index_prune(INDEX *index)
{
    long long cutoff = (long long) time(NULL) - index->max_age;
    sqlite3_stmt *stmts[] = {index->prune_attempts, index->prune_messages};
    int rc = SQLITE_DONE;

    for (size_t i = 0; i < 2 && rc == SQLITE_DONE; i++) {
        (void) sqlite3_bind_int64(stmts[i], 1, cutoff);
        (void) sqlite3_bind_int64(stmts[i], 2, EVENTS_INDEX_PRUNE_ROWS);
        rc = index_step(stmts[i]);
    }
    return rc;
}

/* index_work - store the batch in hand, from the loop */
static void index_work(evutil_socket_t fd, short what, void *arg)
{
    INDEX *index = arg;
    const char *cp = vstr_str((VSTR *) index->lines);
    const char *end = cp + vstr_len((VSTR *) index->lines);
    VSTR *why = vstr_alloc(100);
    int rc = sqlite3_exec(index->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc == SQLITE_OK)
        rc = index_prune(index) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    while (rc == SQLITE_OK && cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            msg_panic("%s: a batch line without its LF", __func__);
        rc = index_row(index, cp, (size_t) (nl - cp));
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
        cp = nl + 1;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(index->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(index->db));
        (void) sqlite3_exec(index->db, "ROLLBACK", NULL, NULL, NULL);
    }
    /* Only now, the commit done, may the framework move the position. */
    exporter_done(index->exp, rc == SQLITE_OK, vstr_str(why));
    vstr_free(why);
}

/* index_prune_event - the idle prune, once a minute; a failure waits for
   the next (nothing is lost by pruning late) */
static void index_prune_event(evutil_socket_t fd, short what, void *arg)
{
    INDEX *index = arg;
    int rc = sqlite3_exec(index->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc == SQLITE_OK && index_prune(index) == SQLITE_DONE)
        rc = sqlite3_exec(index->db, "COMMIT", NULL, NULL, NULL);
    else if (rc == SQLITE_OK)
        rc = SQLITE_ERROR;
    if (rc != SQLITE_OK) {
        msg_warn("events: index: prune %s: %s", exporter_target(index->exp),
                 sqlite3_errmsg(index->db));
        (void) sqlite3_exec(index->db, "ROLLBACK", NULL, NULL, NULL);
    }
}

/* index_send - store count events (from the loop, not from here) */
static void index_send(void *state, const VSTR *lines, int count)
{
    INDEX *index = state;

    index->lines = lines;
    index->count = count;
    event_active(index->work_ev, EV_TIMEOUT, 0);
}

/* index_max_age - never dead-lettered */
static long long index_max_age(void *state)
{
    return LLONG_MAX / 4;
}

/* index_prepare - one statement, or msg_fatal */
static sqlite3_stmt *index_prepare(INDEX *index, const char *sql)
{
    sqlite3_stmt *stmt;

    if (sqlite3_prepare_v2(index->db, sql, -1, &stmt, NULL) != SQLITE_OK)
        msg_fatal("events: index: %s: %s", exporter_target(index->exp),
                  sqlite3_errmsg(index->db));
    return stmt;
}

/* index_open - open (create) the database */
static void *index_open(EXPORTER *exp, struct event_base *base,
                        const MAIL_CONF *conf)
{
    INDEX *index = mycalloc(1, sizeof(*index));
    const char *path = exporter_target(exp);
    struct timeval every = {INDEX_PRUNE_SECONDS, 0};
    char *err = NULL;
    const char *second;

    index->exp = exp;
    index->max_age = mail_conf_time(conf, "events_index_max_age");
    if (sqlite3_open_v2(path, &index->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        msg_fatal("events: index: open %s: %s", path,
                  index->db ? sqlite3_errmsg(index->db) : "out of memory");
    (void) sqlite3_busy_timeout(index->db, INDEX_BUSY_MS);
    if (sqlite3_exec(
            index->db,
            "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;" EVENTS_INDEX_SCHEMA,
            NULL, NULL, &err) != SQLITE_OK)
        msg_fatal("events: index: %s: %s", path, err ? err : "schema");
    index->message = index_prepare(index, INDEX_MESSAGE);
    index->attempt = index_prepare(index, INDEX_ATTEMPT);
    if (sqlite3_prepare_v2(index->db, INDEX_PRUNE, -1, &index->prune_attempts,
                           &second) != SQLITE_OK)
        msg_fatal("events: index: %s: %s", path, sqlite3_errmsg(index->db));
    index->prune_messages = index_prepare(index, second);
    if ((index->work_ev = event_new(base, -1, 0, index_work, index)) == NULL ||
        (index->prune_ev = event_new(base, -1, EV_PERSIST, index_prune_event,
                                     index)) == NULL ||
        event_add(index->prune_ev, &every) < 0)
        msg_fatal("cannot create the index events");
    return index;
}

/* index_close - free (a batch in hand is abandoned) */
static void index_close(void *state)
{
    INDEX *index = state;

    (void) sqlite3_finalize(index->message);
    (void) sqlite3_finalize(index->attempt);
    (void) sqlite3_finalize(index->prune_attempts);
    (void) sqlite3_finalize(index->prune_messages);
    (void) sqlite3_close(index->db);
    event_free(index->work_ev);
    event_free(index->prune_ev);
    myfree(index);
}

const EXPORTER_BACKEND index_backend = {
    .kind = "index",
    .open = index_open,
    .send = index_send,
    .close = index_close,
    .max_age = index_max_age,
};
