/*
 * stats - the events daemon's SQLite backend: the store behind
 * `sluice stats` (global/events_stats.h has the schema)
 *
 * One transaction per batch: every event of the batch a row (INSERT OR
 * IGNORE on its id, so a batch sent again after a crash counts once),
 * committed with synchronous=FULL before the framework moves the
 * position. A batch SQLite refuses (disk full, a locked database) is
 * rolled back and tried again with the framework's back-off; it is never
 * dead-lettered (the events stay in the journal, a backlog that `sluice
 * events status` shows), since the store is on this machine and its
 * failure is the administrator's to mend.
 */
#include "sys_defs.h"

#include <limits.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "events_stats.h"
#include "exporter.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define STATS_BUSY_MS 5000 /* wait for a reader's lock */

#define STATS_INSERT                                                           \
    "INSERT OR IGNORE INTO events (id, t, ts, kind, qid, recipient_domain,"    \
    " sender_domain, tenant, pool, source_ip, provider) VALUES (?1, ?2, ?3,"   \
    " ?4, ?5, ?6, COALESCE(?7, (SELECT sender_domain FROM events WHERE qid ="  \
    " ?5 AND kind = 'received' LIMIT 1)), ?8, ?9, ?10, ?11)"

typedef struct STATS {
    EXPORTER *exp;
    sqlite3 *db;
    sqlite3_stmt *insert;
    struct event *work_ev;
    const VSTR *lines; /* the batch in hand */
    int count;
} STATS;

/* stats_text - bind the event's name (a string) or NULL at index; the
   view's text stays put until the statement has run (SQLITE_STATIC) */
static int stats_text(sqlite3_stmt *stmt, int index, const EVENTS_VIEW *view,
                      const char *name)
{
    const char *value = events_view_str(view, name);

    return value ? sqlite3_bind_text(stmt, index, value, -1, SQLITE_STATIC)
                 : sqlite3_bind_null(stmt, index);
}

/* stats_row - event i (its line at line) into the store; SQLITE_OK/DONE
   or an error */
static int stats_row(STATS *stats, const char *line, int i, VSTR *domain,
                     VSTR *sender)
{
    sqlite3_stmt *stmt = stats->insert;
    const EVENTS_VIEW *view = exporter_view(stats->exp, i);
    const char *id = events_view_str(view, "id");
    const char *kind = events_view_str(view, "kind");
    const char *ts = events_view_str(view, "ts");
    long long t = events_stats_time(ts);
    int rc;

    /* The framework sends JSON objects only; one without these is not
       an event the store can count. */
    if (id == NULL || kind == NULL || t < 0) {
        msg_warn("events: stats: an event without id, kind or ts is not "
                 "counted: %.200s",
                 line);
        return SQLITE_DONE;
    }
    (void) sqlite3_reset(stmt);
    (void) sqlite3_clear_bindings(stmt);
    (void) sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    (void) sqlite3_bind_int64(stmt, 2, t);
    (void) sqlite3_bind_text(stmt, 3, ts, -1, SQLITE_STATIC);
    (void) sqlite3_bind_text(stmt, 4, kind, -1, SQLITE_STATIC);
    (void) stats_text(stmt, 5, view, "qid");
    if (events_stats_domain(events_view_str(view, "recipient"), domain))
        (void) sqlite3_bind_text(stmt, 6, vstr_str(domain), -1, SQLITE_STATIC);
    if (events_stats_domain(events_view_str(view, "sender"), sender))
        (void) sqlite3_bind_text(stmt, 7, vstr_str(sender), -1, SQLITE_STATIC);
    (void) stats_text(stmt, 8, view, "tenant");
    (void) stats_text(stmt, 9, view, "pool");
    (void) stats_text(stmt, 10, view, "source_ip");
    (void) stats_text(stmt, 11, view, "provider");
    rc = sqlite3_step(stmt);
    (void) sqlite3_reset(stmt);
    return rc;
}

/* stats_work - store the batch in hand, from the loop */
static void stats_work(evutil_socket_t fd, short what, void *arg)
{
    STATS *stats = arg;
    const char *cp = vstr_str((VSTR *) stats->lines);
    const char *end = cp + vstr_len((VSTR *) stats->lines);
    VSTR *domain = vstr_alloc(64);
    VSTR *sender = vstr_alloc(64);
    VSTR *why = vstr_alloc(100);
    int row = 0; /* of the batch: the line at cp */
    int rc = sqlite3_exec(stats->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    while (rc == SQLITE_OK && cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            msg_panic("%s: a batch line without its LF", __func__);
        rc = stats_row(stats, cp, row++, domain, sender);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
        cp = nl + 1;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(stats->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(stats->db));
        (void) sqlite3_exec(stats->db, "ROLLBACK", NULL, NULL, NULL);
    }
    vstr_free(domain);
    vstr_free(sender);
    exporter_done(stats->exp, rc == SQLITE_OK, vstr_str(why));
    vstr_free(why);
}

/* stats_send - store count events (from the loop, not from here) */
static void stats_send(void *state, const VSTR *lines, int count)
{
    STATS *stats = state;

    stats->lines = lines;
    stats->count = count;
    event_active(stats->work_ev, EV_TIMEOUT, 0);
}

/* stats_max_age - never dead-lettered */
static long long stats_max_age(void *state)
{
    return LLONG_MAX / 4;
}

/* stats_open - open (create) the database */
static void *stats_open(EXPORTER *exp, struct event_base *base,
                        const MAIL_CONF *conf)
{
    STATS *stats = mycalloc(1, sizeof(*stats));
    const char *path = exporter_target(exp);
    char *err = NULL;

    stats->exp = exp;
    if (sqlite3_open_v2(path, &stats->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        msg_fatal("events: stats: open %s: %s", path,
                  stats->db ? sqlite3_errmsg(stats->db) : "out of memory");
    (void) sqlite3_busy_timeout(stats->db, STATS_BUSY_MS);
    if (sqlite3_exec(
            stats->db,
            "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;" EVENTS_STATS_SCHEMA,
            NULL, NULL, &err) != SQLITE_OK)
        msg_fatal("events: stats: %s: %s", path, err ? err : "schema");
    if (sqlite3_prepare_v2(stats->db, STATS_INSERT, -1, &stats->insert, NULL) !=
        SQLITE_OK)
        msg_fatal("events: stats: %s: %s", path, sqlite3_errmsg(stats->db));
    if ((stats->work_ev = event_new(base, -1, 0, stats_work, stats)) == NULL)
        msg_fatal("cannot create the stats event");
    return stats;
}

/* stats_close - free (a batch in hand is abandoned) */
static void stats_close(void *state)
{
    STATS *stats = state;

    (void) sqlite3_finalize(stats->insert);
    (void) sqlite3_close(stats->db);
    event_free(stats->work_ev);
    myfree(stats);
}

const EXPORTER_BACKEND stats_backend = {
    .kind = "stats",
    .open = stats_open,
    .send = stats_send,
    .close = stats_close,
    .max_age = stats_max_age,
};
