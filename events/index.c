/*
 * index - the events daemon's status index: the SQLite store behind
 * `sluice why` (global/events_index.h has the schema)
 *
 * One transaction per batch, as stats.c: the received event of a message
 * sets its messages row (Message-ID, sender, size, client); every other
 * event is an attempts row (INSERT OR IGNORE on the event id, so a batch
 * sent again after a crash or kill -9 is kept once) and moves the
 * message's last_t and state. A batch SQLite refuses is rolled back and
 * tried again with the framework's back-off; never dead-lettered: the
 * events stay in the journal (`sluice events status` shows the backlog)
 * until the administrator mends the store.
 *
 * Write-ahead log with synchronous=FULL: a commit appends the batch's
 * pages to PATH-wal and syncs that one file (a rollback journal cost a
 * journal file made, synced twice with its folder, the database synced
 * and the journal removed, every batch); SQLite copies the log into the
 * database every 1000 pages or so (a checkpoint, two syncs). The commit
 * is durable before exporter_done() lets the framework save its position
 * (a file of its own, exporters/index-HASH.pos), so a crash, kill -9 or
 * power loss re-sends at most the batch in flight and loses nothing.
 * Readers (`sluice why`, read-only, as root or the mail owner) need
 * PATH-shm and PATH-wal: SQLite makes them with the database's owner when
 * root opens it, and a reader never sees a batch a writer died in.
 *
 * Pruning: a batch (and, while no event comes, a timer once a minute)
 * removes at most EVENTS_INDEX_PRUNE_ROWS rows of each table older than
 * events_index_max_age, so pruning a large backlog is spread out and
 * never holds the journal up; when nothing is that old it remembers when
 * the oldest row will be and does not look again until then (or until an
 * older row comes).
 *
 * A new index is made whole under PATH.new (schema committed) and renamed
 * into place, so `sluice why` never opens one without its tables (the
 * index is on by default: why may run the moment an instance starts). An
 * index SQLite finds damaged (not a database, or a corrupt page) is moved
 * aside to PATH.damaged (with its -wal) and a new one made, with a
 * warning, rather than stopping the daemon (and every other exporter with
 * it) or the index for good: events from the position on are indexed
 * again; the older ones stay in PATH.damaged.
 */
#include "sys_defs.h"

#include <limits.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "events.h"
#include "events_index.h"
#include "events_stats.h"
#include "exporter.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define INDEX_BUSY_MS 5000 /* wait for a reader's lock */
#define INDEX_PRUNE_SECONDS 60 /* between prunes when no batch comes */
#define INDEX_PRAGMAS "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
/* A batch of INDEX_BATCH events touches a few thousand pages of the five
   B-trees it adds to: SQLite's default cache (2 MB) spilled dirty pages
   to the log before the commit and read evicted ones back (pread). */
#define INDEX_CACHE "PRAGMA cache_size=-16384;" /* KiB */
/* Events per batch (and at most 1 MiB of lines, exporter.c): each batch
   is a commit that writes every page it dirtied to the log and syncs it,
   and consecutive events of a busy server dirty the same pages (the
   append end of the time and queue ID keys), so bigger batches write less
   per event. The webhook batch size (500) is meant for an HTTP body. */
#define INDEX_BATCH 5000

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

#define INDEX_OLDEST                                                           \
    "SELECT MIN(m) FROM (SELECT MIN(t) AS m FROM attempts"                     \
    " UNION ALL SELECT MIN(last_t) FROM messages)"

typedef struct INDEX {
    EXPORTER *exp;
    const char *path; /* events_index_database */
    sqlite3 *db;
    sqlite3_stmt *message;
    sqlite3_stmt *attempt;
    sqlite3_stmt *prune_attempts;
    sqlite3_stmt *prune_messages;
    sqlite3_stmt *oldest;
    long long max_age; /* events_index_max_age */
    long long prune_at; /* no row is older than max_age before this */
    struct event *work_ev;
    struct event *prune_ev;
    const VSTR *lines; /* the batch in hand */
    int count;
} INDEX;

/* index_text - bind the event's name (a string) or NULL at col; the
   view's text stays put until the statement has run (SQLITE_STATIC) */
static void index_text(sqlite3_stmt *stmt, int col, const EVENTS_VIEW *view,
                       const char *name)
{
    const char *value = events_view_str(view, name);

    if (value)
        (void) sqlite3_bind_text(stmt, col, value, -1, SQLITE_STATIC);
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
static int index_row(INDEX *index, const char *line, int i)
{
    const EVENTS_VIEW *view = exporter_view(index->exp, i);
    const char *id = events_view_str(view, "id");
    const char *kind = events_view_str(view, "kind");
    const char *ts = events_view_str(view, "ts");
    const char *qid = events_view_str(view, "qid");
    long long t = events_stats_time(ts);
    bool received;
    sqlite3_stmt *stmt;
    long long size;
    double delay;
    int rc;

    /* The framework sends JSON objects only; one without these is not
       about a message the index can answer for. */
    if (id == NULL || kind == NULL || qid == NULL || t < 0) {
        msg_warn("events: index: an event without id, kind, qid or ts is "
                 "not indexed: %.200s",
                 line);
        return SQLITE_DONE;
    }
    /* An old event (a backlog, a replay) may be older than every row
       the last prune saw: look again when it is due. */
    if (t < index->prune_at - index->max_age)
        index->prune_at = t + index->max_age;
    received = strcmp(kind, EVENTS_RECEIVED) == 0;
    stmt = index->message;
    (void) sqlite3_clear_bindings(stmt);
    (void) sqlite3_bind_text(stmt, 1, qid, -1, SQLITE_STATIC);
    if (received) {
        index_text(stmt, 2, view, "message_id");
        index_text(stmt, 3, view, "sender");
        if (events_view_int(view, "size", &size))
            (void) sqlite3_bind_int64(stmt, 4, size);
        index_text(stmt, 5, view, "client");
        (void) sqlite3_bind_int64(stmt, 6, t);
        (void) sqlite3_bind_text(stmt, 7, ts, -1, SQLITE_STATIC);
    }
    (void) sqlite3_bind_int64(stmt, 8, t);
    (void) sqlite3_bind_text(stmt, 9, kind, -1, SQLITE_STATIC);
    if ((rc = index_step(stmt)) != SQLITE_DONE || received)
        return rc;
    stmt = index->attempt;
    (void) sqlite3_clear_bindings(stmt);
    (void) sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    (void) sqlite3_bind_text(stmt, 2, qid, -1, SQLITE_STATIC);
    (void) sqlite3_bind_int64(stmt, 3, t);
    (void) sqlite3_bind_text(stmt, 4, ts, -1, SQLITE_STATIC);
    (void) sqlite3_bind_text(stmt, 5, kind, -1, SQLITE_STATIC);
    index_text(stmt, 6, view, "recipient");
    index_text(stmt, 7, view, "relay");
    index_text(stmt, 8, view, "dsn");
    index_text(stmt, 9, view, "reply");
    if (events_view_num(view, "delay", &delay))
        (void) sqlite3_bind_double(stmt, 10, delay);
    index_text(stmt, 11, view, "provider");
    return index_step(stmt);
}

/* index_prune - remove a bounded number of rows past the max age, unless
   none can be yet; SQLITE_DONE or an error */
static int index_prune(INDEX *index)
{
    long long now = (long long) time(NULL);
    long long cutoff = now - index->max_age;
    sqlite3_stmt *stmts[] = {index->prune_attempts, index->prune_messages};
    bool all = true; /* every table pruned to the cutoff */
    int rc = SQLITE_DONE;

    if (now < index->prune_at)
        return SQLITE_DONE;
    for (size_t i = 0; i < 2 && rc == SQLITE_DONE; i++) {
        (void) sqlite3_bind_int64(stmts[i], 1, cutoff);
        (void) sqlite3_bind_int64(stmts[i], 2, EVENTS_INDEX_PRUNE_ROWS);
        rc = index_step(stmts[i]);
        if (sqlite3_changes(index->db) >= EVENTS_INDEX_PRUNE_ROWS)
            all = false;
    }
    if (rc != SQLITE_DONE || !all) {
        index->prune_at = 0; /* more to do: at the next batch */
        return rc;
    }
    /* Nothing older is left: the next prune is due when the oldest row
       is (both columns are indexed, so this is two lookups). */
    if ((rc = sqlite3_step(index->oldest)) == SQLITE_ROW) {
        long long oldest = sqlite3_column_type(index->oldest, 0) == SQLITE_NULL
                               ? LLONG_MAX / 2
                               : sqlite3_column_int64(index->oldest, 0);

        index->prune_at = oldest >= LLONG_MAX / 2 - index->max_age
                              ? LLONG_MAX / 2
                              : oldest + index->max_age + 1;
        rc = SQLITE_DONE;
    } else {
        index->prune_at = 0;
    }
    (void) sqlite3_reset(index->oldest);
    return rc;
}

/* index_damaged - does rc (of the last call on db) say the file is not a
   database or has a corrupt page? */
static bool index_damaged(sqlite3 *db, int rc)
{
    int code = (db ? sqlite3_errcode(db) : rc) & 0xff;

    return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB ||
           code == SQLITE_CORRUPT || code == SQLITE_NOTADB;
}

static int index_attach(INDEX *index, VSTR *why);
static void index_detach(INDEX *index);
static void index_set_aside(const char *path);
static void index_create(const char *path);

/* index_renew - the index turned out damaged: set it aside, make a new
   one (msg_fatal when even that fails: master starts us again) */
static void index_renew(INDEX *index, const char *what)
{
    VSTR *why = vstr_alloc(100);

    msg_warn("events: index: %s is damaged (%s): moved to %s.damaged and "
             "made anew; events from the exporter's position on are "
             "indexed, older ones are only in the damaged copy",
             index->path, what, index->path);
    index_detach(index);
    index_set_aside(index->path);
    index_create(index->path);
    if (index_attach(index, why) != SQLITE_OK)
        msg_fatal("events: index: %s", vstr_str(why));
    vstr_free(why);
}

/* index_work - store the batch in hand, from the loop */
static void index_work(evutil_socket_t fd, short what, void *arg)
{
    INDEX *index = arg;
    const char *cp = vstr_str((VSTR *) index->lines);
    const char *end = cp + vstr_len((VSTR *) index->lines);
    VSTR *why = vstr_alloc(100);
    int row = 0; /* of the batch: the line at cp */
    int rc = sqlite3_exec(index->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc == SQLITE_OK)
        rc = index_prune(index) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    while (rc == SQLITE_OK && cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            msg_panic("%s: a batch line without its LF", __func__);
        rc = index_row(index, cp, row++);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
        cp = nl + 1;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(index->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        bool damaged = index_damaged(index->db, rc);

        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(index->db));
        (void) sqlite3_exec(index->db, "ROLLBACK", NULL, NULL, NULL);
        index->prune_at = 0; /* what it pruned came back */
        /* The batch is tried again (the framework's back-off), into the
           new index. */
        if (damaged)
            index_renew(index, vstr_str(why));
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
        index->prune_at = 0;
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

/* index_prepare - one statement into *stmt; an SQLite result code */
static int index_prepare(INDEX *index, const char *sql, sqlite3_stmt **stmt,
                         const char **tail)
{
    return sqlite3_prepare_v2(index->db, sql, -1, stmt, tail);
}

/* index_remove - unlink path+suffix; ENOENT is fine */
static void index_remove(const char *path, const char *suffix)
{
    VSTR *name = vstr_alloc(100);

    vstr_sprintf(name, "%s%s", path, suffix);
    if (unlink(vstr_str(name)) < 0 && errno != ENOENT)
        msg_warn("events: index: remove %s: %m", vstr_str(name));
    vstr_free(name);
}

/* index_set_aside - move a damaged index (and its log: it must never be
   applied to a new one) to PATH.damaged, replacing an older one */
static void index_set_aside(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-journal"};
    VSTR *from = vstr_alloc(100);
    VSTR *to = vstr_alloc(100);

    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        vstr_sprintf(from, "%s%s", path, suffixes[i]);
        vstr_sprintf(to, "%s.damaged%s", path, suffixes[i]);
        index_remove(vstr_str(to), "");
        if (rename(vstr_str(from), vstr_str(to)) < 0 && errno != ENOENT)
            msg_fatal("events: index: rename %s to %s: %m", vstr_str(from),
                      vstr_str(to));
    }
    index_remove(path, "-shm");
    if (safe_file_fsync_parent(path) < 0)
        msg_warn("events: index: fsync the folder of %s: %m", path);
    vstr_free(from);
    vstr_free(to);
}

/* index_create - make path with its schema when it is not there: under
   path.new, then renamed, so no reader sees it without its tables */
static void index_create(const char *path)
{
    static const char *const leftovers[] = {"", "-journal", "-wal", "-shm"};
    VSTR *tmp = vstr_alloc(100);
    sqlite3 *db = NULL;
    char *err = NULL;
    struct stat st;

    if (stat(path, &st) == 0 || errno != ENOENT) {
        vstr_free(tmp);
        return;
    }
    vstr_sprintf(tmp, "%s.new", path);
    /* What a crash in here left is begun again. */
    for (size_t i = 0; i < sizeof(leftovers) / sizeof(leftovers[0]); i++)
        index_remove(vstr_str(tmp), leftovers[i]);
    if (sqlite3_open_v2(vstr_str(tmp), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        msg_fatal("events: index: open %s: %s", vstr_str(tmp),
                  db ? sqlite3_errmsg(db) : "out of memory");
    /* WAL is kept in the file: readers see it from the first open. The
       last close checkpoints and removes -wal and -shm before the rename. */
    if (sqlite3_exec(
            db, INDEX_PRAGMAS "BEGIN IMMEDIATE;" EVENTS_INDEX_SCHEMA "COMMIT",
            NULL, NULL, &err) != SQLITE_OK)
        msg_fatal("events: index: %s: %s", vstr_str(tmp), err ? err : "schema");
    if (sqlite3_close(db) != SQLITE_OK)
        msg_fatal("events: index: close %s", vstr_str(tmp));
    /* A -wal or -shm left by an index someone removed would be replayed
       into the new file (SQLite does not check whose log it is). */
    for (size_t i = 1; i < sizeof(leftovers) / sizeof(leftovers[0]); i++)
        index_remove(path, leftovers[i]);
    if (rename(vstr_str(tmp), path) < 0)
        msg_fatal("events: index: rename %s to %s: %m", vstr_str(tmp), path);
    if (safe_file_fsync_parent(path) < 0)
        msg_warn("events: index: fsync the folder of %s: %m", path);
    vstr_free(tmp);
}

/* index_mode - the journal mode a PRAGMA journal_mode answers */
static int index_mode(void *arg, int cols, char **values, char **names)
{
    VSTR *mode = arg;

    if (cols > 0 && values[0] != NULL)
        vstr_cpy(mode, values[0]);
    return 0;
}

/* index_attach - open the index: pragmas, schema, statements; an SQLite
   result code, with why */
static int index_attach(INDEX *index, VSTR *why)
{
    VSTR *mode = vstr_alloc(10);
    const char *second = NULL;
    char *err = NULL;
    int rc;

    index->prune_at = 0;
    if ((rc = sqlite3_open_v2(index->path, &index->db,
                              SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                  SQLITE_OPEN_NOMUTEX,
                              NULL)) != SQLITE_OK) {
        vstr_sprintf(why, "open %s: %s", index->path,
                     index->db ? sqlite3_errmsg(index->db) : "out of memory");
        goto out;
    }
    (void) sqlite3_busy_timeout(index->db, INDEX_BUSY_MS);
    /* An index made in rollback mode (before WAL) is turned over here. */
    if ((rc = sqlite3_exec(index->db, "PRAGMA journal_mode=WAL", index_mode,
                           mode, &err)) != SQLITE_OK ||
        (rc = sqlite3_exec(
             index->db,
             "PRAGMA synchronous=FULL;" INDEX_CACHE EVENTS_INDEX_SCHEMA, NULL,
             NULL, &err)) != SQLITE_OK ||
        (rc = index_prepare(index, INDEX_MESSAGE, &index->message, NULL)) !=
            SQLITE_OK ||
        (rc = index_prepare(index, INDEX_ATTEMPT, &index->attempt, NULL)) !=
            SQLITE_OK ||
        (rc = index_prepare(index, INDEX_PRUNE, &index->prune_attempts,
                            &second)) != SQLITE_OK ||
        (rc = index_prepare(index, second, &index->prune_messages, NULL)) !=
            SQLITE_OK ||
        (rc = index_prepare(index, INDEX_OLDEST, &index->oldest, NULL)) !=
            SQLITE_OK) {
        vstr_sprintf(why, "%s: %s", index->path,
                     err ? err : sqlite3_errmsg(index->db));
        goto out;
    }
    if (strcmp(vstr_str(mode), "wal") != 0)
        msg_warn("events: index: %s stays in journal mode \"%s\" (another "
                 "process has it open?); it works, at the cost of more "
                 "syncs per batch",
                 index->path, vstr_str(mode));
out:
    sqlite3_free(err);
    vstr_free(mode);
    return rc;
}

/* index_detach - finalize and close (NULLs are fine) */
static void index_detach(INDEX *index)
{
    sqlite3_stmt **stmts[] = {&index->message, &index->attempt,
                              &index->prune_attempts, &index->prune_messages,
                              &index->oldest};

    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        (void) sqlite3_finalize(*stmts[i]);
        *stmts[i] = NULL;
    }
    (void) sqlite3_close(index->db);
    index->db = NULL;
}

/* index_open - open (create, or set aside and create anew) the database */
static void *index_open(EXPORTER *exp, struct event_base *base,
                        const MAIL_CONF *conf)
{
    INDEX *index = mycalloc(1, sizeof(*index));
    struct timeval every = {INDEX_PRUNE_SECONDS, 0};
    VSTR *why = vstr_alloc(100);
    int rc;

    index->exp = exp;
    index->path = exporter_target(exp);
    index->max_age = mail_conf_time(conf, "events_index_max_age");
    index_create(index->path);
    if ((rc = index_attach(index, why)) != SQLITE_OK) {
        if (!index_damaged(index->db, rc))
            msg_fatal("events: index: %s", vstr_str(why));
        index_renew(index, vstr_str(why));
    }
    if ((index->work_ev = event_new(base, -1, 0, index_work, index)) == NULL ||
        (index->prune_ev = event_new(base, -1, EV_PERSIST, index_prune_event,
                                     index)) == NULL ||
        event_add(index->prune_ev, &every) < 0)
        msg_fatal("cannot create the index events");
    vstr_free(why);
    return index;
}

/* index_close - free (a batch in hand is abandoned) */
static void index_close(void *state)
{
    INDEX *index = state;

    index_detach(index);
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
    .batch_size = INDEX_BATCH,
};
