/*
 * suppress - the suppression list over SQLite (suppress.h says what it is)
 *
 * Schema: one table keyed by (tenant, address), WITHOUT ROWID so the key
 * is the table; an index on expires for the removal of expired rows.
 * WAL mode (readers never wait for a writer), synchronous=FULL (an add
 * that returned is on disk), a busy timeout for the writers' turns.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "msg.h"
#include "mymalloc.h"
#include "suppress.h"
#include "vstr.h"

#define SUPPRESS_BUSY_MS 5000

#define SUPPRESS_SCHEMA                                                        \
    "CREATE TABLE IF NOT EXISTS suppress (tenant TEXT NOT NULL,"               \
    " address TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL,"      \
    " created INTEGER NOT NULL, expires INTEGER NOT NULL DEFAULT 0,"           \
    " PRIMARY KEY (tenant, address)) WITHOUT ROWID;"                           \
    "CREATE INDEX IF NOT EXISTS suppress_expires ON suppress (expires)"        \
    " WHERE expires != 0;"

#define SUPPRESS_LOOKUP                                                        \
    "SELECT reason, source FROM suppress WHERE address = ?1 AND"               \
    " tenant IN ('', ?2) AND (expires = 0 OR expires > ?3)"                    \
    " ORDER BY tenant DESC LIMIT 1"

#define SUPPRESS_ANY "SELECT EXISTS (SELECT 1 FROM suppress)"

/* The rows mark (suppress.h): PATH-rows, "0\n" while the table is empty. */
#define SUPPRESS_ROWS_SUFFIX "-rows"
#define SUPPRESS_ROWS_NONE "0\n"
#define SUPPRESS_ROWS_SOME "1\n"

/* A hard bounce (it expires) does not shorten an entry that never does. */
#define SUPPRESS_ADD                                                           \
    "INSERT INTO suppress (tenant, address, reason, source, created, expires)" \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, address) DO"        \
    " UPDATE SET reason = excluded.reason, source = excluded.source,"          \
    " created = excluded.created, expires = excluded.expires"                  \
    " WHERE NOT (expires = 0 AND excluded.expires != 0 AND"                    \
    " excluded.source = 'hard_bounce')"

#define SUPPRESS_PRUNE                                                         \
    "DELETE FROM suppress WHERE expires != 0 AND expires <= ?1"

#define SUPPRESS_REMOVE                                                        \
    "DELETE FROM suppress WHERE tenant = ?1 AND address = ?2 AND"              \
    " (expires = 0 OR expires > ?3)"

#define SUPPRESS_GET                                                           \
    "SELECT tenant, address, reason, source, created, expires FROM suppress"   \
    " WHERE tenant = ?1 AND address = ?2 AND (expires = 0 OR expires > ?3)"

#define SUPPRESS_LIST                                                          \
    "SELECT tenant, address, reason, source, created, expires FROM suppress"   \
    " WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR address > ?2) AND"  \
    " (expires = 0 OR expires > ?3) ORDER BY tenant, address LIMIT ?4"

struct SUPPRESS {
    char *path;
    char *rows_path; /* path SUPPRESS_ROWS_SUFFIX */
    sqlite3 *db; /* NULL: a lazy handle whose file is not there yet */
    sqlite3_stmt *lookup;
    sqlite3_stmt *held; /* suppress_get's row, until the next call */
    int rows_rfd; /* a reader's mark, -1: none yet */
    int rows_fd; /* a writer's mark, -1: not open yet */
    bool removed; /* a remove in the caller's transaction */
    bool readonly; /* SUPPRESS_READONLY */
};

/* suppress_db_error - why = "SQLite PATH: message" */
static void suppress_db_error(SUPPRESS *sup, VSTR *why)
{
    vstr_sprintf(why, "suppression database %s: %s", sup->path,
                 sup->db ? sqlite3_errmsg(sup->db) : "not open");
}

/* suppress_unprepare - finalize the statements, close the connection */
static void suppress_unprepare(SUPPRESS *sup)
{
    (void) sqlite3_finalize(sup->lookup);
    sup->lookup = NULL;
    (void) sqlite3_close(sup->db);
    sup->db = NULL;
    if (sup->rows_rfd >= 0)
        (void) close(sup->rows_rfd);
    sup->rows_rfd = -1;
    if (sup->rows_fd >= 0)
        (void) close(sup->rows_fd);
    sup->rows_fd = -1;
}

/* suppress_rows_open - a reader opens the rows mark, when there is one (a
   writer makes it; till then each lookup asks SQLite and tries again) */
static void suppress_rows_open(SUPPRESS *sup)
{
    struct stat st;
    int fd;

    if ((fd = open(sup->rows_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        sup->rows_rfd = fd;
    else
        (void) close(fd);
}

/* suppress_rows_none - does the mark say the table is empty? Read, not
   mapped: a mark cut short (by hand; a writer never shortens it) would
   kill a reader of a mapping with SIGBUS. Short or unreadable: no
   answer, the lookup asks SQLite. */
static bool suppress_rows_none(const SUPPRESS *sup)
{
    char have[sizeof(SUPPRESS_ROWS_NONE) - 1];

    return sup->rows_rfd >= 0 &&
           pread(sup->rows_rfd, have, sizeof(have), 0) ==
               (ssize_t) sizeof(have) &&
           memcmp(have, SUPPRESS_ROWS_NONE, sizeof(have)) == 0;
}

/* suppress_rows_set - a writer, holding the write lock, sets the mark:
   some (before rows may be committed: on disk before then) or none (the
   table is empty, and committed so); 0, or -1 with why. A mark whose
   new name a power loss takes away is no harm: no mark, readers ask
   SQLite, and the next writer to open makes it again. */
static int suppress_rows_set(SUPPRESS *sup, bool some, VSTR *why)
{
    const char *want = some ? SUPPRESS_ROWS_SOME : SUPPRESS_ROWS_NONE;
    size_t len = strlen(want);
    char have[2];

    for (int tries = 0; sup->rows_fd < 0 && tries < 2; tries++) {
        sup->rows_fd = open(sup->rows_path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (sup->rows_fd < 0 && errno == ENOENT)
            sup->rows_fd =
                open(sup->rows_path,
                     O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (sup->rows_fd < 0 && errno != EEXIST)
            break;
    }
    if (sup->rows_fd < 0) {
        vstr_sprintf(why, "suppression database mark %s: %s", sup->rows_path,
                     strerror(errno));
        return -1;
    }
    if (pread(sup->rows_fd, have, len, 0) == (ssize_t) len &&
        memcmp(have, want, len) == 0)
        return 0;
    errno = 0;
    if (pwrite(sup->rows_fd, want, len, 0) != (ssize_t) len ||
        (some && fdatasync(sup->rows_fd) < 0)) {
        vstr_sprintf(why, "suppression database mark %s: %s", sup->rows_path,
                     errno ? strerror(errno) : "short write");
        return -1;
    }
    return 0;
}

/* suppress_count_any - are there rows (expired ones too)? 1, 0, -1 */
static int suppress_count_any(SUPPRESS *sup)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (sqlite3_prepare_v2(sup->db, SUPPRESS_ANY, -1, &stmt, NULL) != SQLITE_OK)
        return -1;
    rc = sqlite3_step(stmt);
    rc = rc == SQLITE_ROW ? sqlite3_column_int(stmt, 0) != 0 : -1;
    (void) sqlite3_finalize(stmt);
    return rc;
}

/* suppress_has_table - does the (read-only) database hold the table yet?
   1, 0 (a file its writer is still making), -1 */
static int suppress_has_table(SUPPRESS *sup)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (sqlite3_prepare_v2(sup->db,
                           "SELECT 1 FROM sqlite_master WHERE type = 'table'"
                           " AND name = 'suppress'",
                           -1, &stmt, NULL) != SQLITE_OK)
        return -1;
    rc = sqlite3_step(stmt);
    (void) sqlite3_finalize(stmt);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* suppress_connect - open the database file; 0, or -1 with why (errno
   ENOENT when it is missing and may not be made). Only a writer sets
   the journal mode and makes the schema (BEGIN IMMEDIATE waits for the
   other writers); a reader opens read-only and takes no write lock. */
static int suppress_connect(SUPPRESS *sup, bool create, VSTR *why)
{
    struct stat st;
    char *err = NULL;
    int flags = SQLITE_OPEN_NOMUTEX;
    bool rows_failed = false;
    int rc;

    if (!create && stat(sup->path, &st) < 0) {
        int saved = errno;

        vstr_sprintf(why, "suppression database %s: %s", sup->path,
                     strerror(saved));
        errno = saved;
        return -1;
    }
    if (sup->readonly)
        flags |= SQLITE_OPEN_READONLY;
    else
        flags |= SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(sup->path, &sup->db, flags, NULL) != SQLITE_OK) {
        suppress_db_error(sup, why);
        suppress_unprepare(sup);
        errno = EIO;
        return -1;
    }
    (void) sqlite3_busy_timeout(sup->db, SUPPRESS_BUSY_MS);
    if (sup->readonly && (rc = suppress_has_table(sup)) <= 0) {
        if (rc < 0)
            suppress_db_error(sup, why);
        else
            vstr_sprintf(why, "suppression database %s: no table yet",
                         sup->path);
        suppress_unprepare(sup);
        errno = rc < 0 ? EIO : ENOENT;
        return -1;
    }
    /* A writer sets the rows mark as the table stands (a database older
       than the mark, or a mark a crash left saying "some"), holding the
       write lock like every change of the mark. */
    if (!sup->readonly &&
        (sqlite3_exec(sup->db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                      " BEGIN IMMEDIATE;" SUPPRESS_SCHEMA,
                      NULL, NULL, &err) != SQLITE_OK ||
         (rc = suppress_count_any(sup)) < 0 ||
         (rows_failed = suppress_rows_set(sup, rc > 0, why) < 0) ||
         sqlite3_exec(sup->db, "COMMIT", NULL, NULL, &err) != SQLITE_OK)) {
        if (!rows_failed)
            vstr_sprintf(why, "suppression database %s: %s", sup->path,
                         err ? err : sqlite3_errmsg(sup->db));
        sqlite3_free(err);
        (void) sqlite3_exec(sup->db, "ROLLBACK", NULL, NULL, NULL);
        suppress_unprepare(sup);
        errno = EIO;
        return -1;
    }
    if (sqlite3_prepare_v2(sup->db, SUPPRESS_LOOKUP, -1, &sup->lookup, NULL) !=
        SQLITE_OK) {
        suppress_db_error(sup, why);
        suppress_unprepare(sup);
        errno = EIO;
        return -1;
    }
    if (sup->readonly && sup->rows_rfd < 0)
        suppress_rows_open(sup);
    return 0;
}

/* suppress_open - the database at path */
SUPPRESS *suppress_open(const char *path, int flags, VSTR *why)
{
    SUPPRESS *sup = mycalloc(1, sizeof(*sup));

    sup->path = mystrdup(path);
    sup->rows_path = vstr_export(
        vstr_sprintf(vstr_alloc(100), "%s%s", path, SUPPRESS_ROWS_SUFFIX));
    sup->rows_fd = -1;
    sup->rows_rfd = -1;
    sup->readonly = (flags & SUPPRESS_READONLY) != 0;
    if (sup->readonly && (flags & SUPPRESS_CREATE))
        msg_panic("%s: SUPPRESS_CREATE with SUPPRESS_READONLY", __func__);
    /* A reader keeps its handle whatever went wrong: each lookup tries
       again and says why it cannot. */
    if (suppress_connect(sup, (flags & SUPPRESS_CREATE) != 0, why) < 0 &&
        !sup->readonly && !((flags & SUPPRESS_LAZY) && errno == ENOENT)) {
        int saved = errno;

        suppress_close(sup);
        errno = saved;
        return NULL;
    }
    return sup;
}

/* suppress_close - close, free; returns NULL */
SUPPRESS *suppress_close(SUPPRESS *sup)
{
    if (sup == NULL)
        return NULL;
    (void) sqlite3_finalize(sup->held);
    suppress_unprepare(sup);
    myfree(sup->path);
    myfree(sup->rows_path);
    myfree(sup);
    return NULL;
}

/* suppress_key - the stored form of address */
int suppress_key(VSTR *key, const char *address, VSTR *why)
{
    size_t len = strlen(address);
    const char *at;

    if (len >= 2 && address[0] == '<' && address[len - 1] == '>') {
        address++;
        len -= 2;
    }
    if (len == 0 || len > SUPPRESS_ADDRESS_MAX) {
        vstr_sprintf(why, "bad address \"%.*s\": %s",
                     (int) (len > 80 ? 80 : len), address,
                     len ? "too long" : "empty");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) address[i];

        if (ch <= 0x20 || ch == 0x7f) {
            vstr_sprintf(why, "bad address: a space or control character");
            return -1;
        }
    }
    /* The last '@' splits: a quoted local part may hold one. */
    at = NULL;
    for (size_t i = 0; i < len; i++)
        if (address[i] == '@')
            at = address + i;
    if (at == NULL || at == address || at == address + len - 1) {
        vstr_sprintf(why, "bad address \"%.*s\": not local-part@domain",
                     (int) (len > 80 ? 80 : len), address);
        return -1;
    }
    vstr_lower(vstr_ncpy(key, address, len));
    return 0;
}

/* suppress_tenant_ok - "" or [A-Za-z0-9._-]{1,64}, not "." or ".." (a
   tenant's name may name a folder) */
bool suppress_tenant_ok(const char *tenant)
{
    if (strlen(tenant) > SUPPRESS_TENANT_MAX || strcmp(tenant, ".") == 0 ||
        strcmp(tenant, "..") == 0)
        return false;
    for (const char *cp = tenant; *cp; cp++)
        if (!isalnum((unsigned char) *cp) && *cp != '.' && *cp != '_' &&
            *cp != '-')
            return false;
    return true;
}

/* suppress_reason_ok - printable (UTF-8 allowed), bounded */
bool suppress_reason_ok(const char *reason)
{
    if (strlen(reason) > SUPPRESS_REASON_MAX)
        return false;
    for (const char *cp = reason; *cp; cp++)
        if ((unsigned char) *cp < 0x20 || *cp == 0x7f)
            return false;
    return true;
}

/* suppress_source_ok - one of SUPPRESS_SRC_* */
bool suppress_source_ok(const char *source)
{
    static const char *const sources[] = {
        SUPPRESS_SRC_HARD_BOUNCE, SUPPRESS_SRC_COMPLAINT,
        SUPPRESS_SRC_UNSUBSCRIBE, SUPPRESS_SRC_MANUAL, SUPPRESS_SRC_API};

    for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++)
        if (strcmp(source, sources[i]) == 0)
            return true;
    return false;
}

/* suppress_ready - open a lazy handle whose file has appeared: 1 open, 0
   still missing, -1 with why */
static int suppress_ready(SUPPRESS *sup, VSTR *why)
{
    if (sup->db != NULL)
        return 1;
    if (suppress_connect(sup, false, why) < 0)
        return errno == ENOENT ? 0 : -1;
    return 1;
}

/* suppress_lookup - is address suppressed for tenant at now? */
int suppress_lookup(SUPPRESS *sup, const char *tenant, const char *address,
                    long long now, VSTR *reason, VSTR *source, VSTR *why)
{
    VSTR *key;
    int rc;
    int ret;

    if ((rc = suppress_ready(sup, why)) <= 0)
        return rc;
    /* A reader whose mark says "none" asks SQLite nothing; otherwise the
       lookup is one statement, so one read transaction. */
    if (sup->readonly) {
        if (sup->rows_rfd < 0)
            suppress_rows_open(sup);
        if (suppress_rows_none(sup))
            return 0;
    }
    key = vstr_alloc(64);
    if (suppress_key(key, address, why) < 0) {
        vstr_free(key);
        return 0; /* not an address the list can hold */
    }
    (void) sqlite3_bind_text(sup->lookup, 1, vstr_str(key), -1,
                             SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(sup->lookup, 2, tenant ? tenant : "", -1,
                             SQLITE_TRANSIENT);
    (void) sqlite3_bind_int64(sup->lookup, 3, now);
    rc = sqlite3_step(sup->lookup);
    if (rc == SQLITE_ROW) {
        if (reason)
            vstr_cpy(reason,
                     (const char *) sqlite3_column_text(sup->lookup, 0));
        if (source)
            vstr_cpy(source,
                     (const char *) sqlite3_column_text(sup->lookup, 1));
        ret = 1;
    } else if (rc == SQLITE_DONE) {
        ret = 0;
    } else {
        suppress_db_error(sup, why);
        ret = -1;
    }
    (void) sqlite3_reset(sup->lookup);
    vstr_free(key);
    return ret;
}

static int suppress_exec(SUPPRESS *, const char *, VSTR *);

/* suppress_prepare - a statement of sql, or NULL with why */
static sqlite3_stmt *suppress_prepare(SUPPRESS *sup, const char *sql, VSTR *why)
{
    sqlite3_stmt *stmt = NULL;

    if (sup->db == NULL) {
        vstr_sprintf(why, "suppression database %s: not open", sup->path);
        return NULL;
    }
    if (sqlite3_prepare_v2(sup->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        suppress_db_error(sup, why);
        return NULL;
    }
    return stmt;
}

/* suppress_prune - remove the expired rows; 0 or -1 */
static int suppress_prune(SUPPRESS *sup, long long now, VSTR *why)
{
    sqlite3_stmt *stmt = suppress_prepare(sup, SUPPRESS_PRUNE, why);
    int rc;

    if (stmt == NULL)
        return -1;
    (void) sqlite3_bind_int64(stmt, 1, now);
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        suppress_db_error(sup, why);
    (void) sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* suppress_add - add or replace entry */
int suppress_add(SUPPRESS *sup, const SUPPRESS_ENTRY *entry, long long now,
                 VSTR *why)
{
    VSTR *key = vstr_alloc(64);
    sqlite3_stmt *stmt;
    bool own = false;
    int rc;

    if (!suppress_tenant_ok(entry->tenant)) {
        vstr_sprintf(why, "bad tenant name \"%.80s\"", entry->tenant);
        vstr_free(key);
        return -1;
    }
    if (!suppress_reason_ok(entry->reason)) {
        vstr_sprintf(why,
                     "bad reason: a control character, or longer than "
                     "%d bytes",
                     SUPPRESS_REASON_MAX);
        vstr_free(key);
        return -1;
    }
    if (!suppress_source_ok(entry->source))
        msg_panic("%s: bad source %s", __func__, entry->source);
    if (sup->readonly) {
        vstr_sprintf(why, "suppression database %s: opened read-only",
                     sup->path);
        vstr_free(key);
        return -1;
    }
    /* A lazy handle makes the database at its first add. The rows mark
       says "some" before the row can be committed, the write lock held
       (the caller's transaction, or ours). */
    if (suppress_key(key, entry->address, why) < 0 ||
        (sup->db == NULL && suppress_connect(sup, true, why) < 0) ||
        ((own = sqlite3_get_autocommit(sup->db) != 0) &&
         suppress_exec(sup, "BEGIN IMMEDIATE", why) < 0)) {
        vstr_free(key);
        return -1;
    }
    if (suppress_rows_set(sup, true, why) < 0 ||
        suppress_prune(sup, now, why) < 0 ||
        (stmt = suppress_prepare(sup, SUPPRESS_ADD, why)) == NULL) {
        if (own)
            suppress_rollback(sup);
        vstr_free(key);
        return -1;
    }
    (void) sqlite3_bind_text(stmt, 1, entry->tenant, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(stmt, 2, vstr_str(key), -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(stmt, 3, entry->reason, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(stmt, 4, entry->source, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_int64(stmt, 5, entry->created);
    (void) sqlite3_bind_int64(stmt, 6, entry->expires);
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        suppress_db_error(sup, why);
    (void) sqlite3_finalize(stmt);
    vstr_free(key);
    if (own && rc == SQLITE_DONE && suppress_exec(sup, "COMMIT", why) < 0)
        rc = SQLITE_ERROR;
    if (own && rc != SQLITE_DONE)
        suppress_rollback(sup);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* suppress_rows_settle - after a committed removal: the mark says
   "none" when the table is empty, in a transaction of its own that holds
   the write lock (an add waits, then says "some" again). Not done, the
   mark stays "some": lookups then ask SQLite, which answers right. */
static void suppress_rows_settle(SUPPRESS *sup)
{
    VSTR *why = vstr_alloc(100);
    int rc;

    sup->removed = false;
    if (suppress_exec(sup, "BEGIN IMMEDIATE", why) < 0) {
        msg_warn("%s; the rows mark stays", vstr_str(why));
    } else {
        if ((rc = suppress_count_any(sup)) == 0 &&
            suppress_rows_set(sup, false, why) < 0)
            msg_warn("%s", vstr_str(why));
        suppress_rollback(sup); /* nothing was written */
    }
    vstr_free(why);
}

/* suppress_remove - remove tenant's entry of address */
int suppress_remove(SUPPRESS *sup, const char *tenant, const char *address,
                    long long now, VSTR *why)
{
    VSTR *key = vstr_alloc(64);
    sqlite3_stmt *stmt;
    int rc;

    if (suppress_key(key, address, why) < 0 ||
        (rc = suppress_ready(sup, why)) < 0) {
        vstr_free(key);
        return -1;
    }
    if (rc == 0) {
        vstr_free(key);
        return 0; /* no database: no entry */
    }
    if (sup->readonly) {
        vstr_sprintf(why, "suppression database %s: opened read-only",
                     sup->path);
        vstr_free(key);
        return -1;
    }
    if ((stmt = suppress_prepare(sup, SUPPRESS_REMOVE, why)) == NULL) {
        vstr_free(key);
        return -1;
    }
    (void) sqlite3_bind_text(stmt, 1, tenant ? tenant : "", -1,
                             SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(stmt, 2, vstr_str(key), -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_int64(stmt, 3, now);
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        suppress_db_error(sup, why);
    (void) sqlite3_finalize(stmt);
    vstr_free(key);
    if (rc != SQLITE_DONE)
        return -1;
    rc = sqlite3_changes(sup->db) > 0;
    if (suppress_prune(sup, now, why) < 0)
        return -1;
    /* The table may be empty now: the mark says so once that is
       committed (in the caller's transaction: at suppress_commit). */
    if (sqlite3_get_autocommit(sup->db))
        suppress_rows_settle(sup);
    else
        sup->removed = true;
    return rc;
}

/* suppress_row - an entry from the columns of a SUPPRESS_GET/LIST row */
static void suppress_row(sqlite3_stmt *stmt, SUPPRESS_ENTRY *entry)
{
    entry->tenant = (const char *) sqlite3_column_text(stmt, 0);
    entry->address = (const char *) sqlite3_column_text(stmt, 1);
    entry->reason = (const char *) sqlite3_column_text(stmt, 2);
    entry->source = (const char *) sqlite3_column_text(stmt, 3);
    entry->created = sqlite3_column_int64(stmt, 4);
    entry->expires = sqlite3_column_int64(stmt, 5);
}

/* suppress_get - tenant's own unexpired entry of address */
int suppress_get(SUPPRESS *sup, const char *tenant, const char *address,
                 long long now, SUPPRESS_ENTRY *entry, VSTR *why)
{
    static const SUPPRESS_ENTRY none;
    VSTR *key = vstr_alloc(64);
    sqlite3_stmt *stmt;
    int rc;

    *entry = none;
    if (suppress_key(key, address, why) < 0) {
        vstr_free(key);
        return -1;
    }
    if ((rc = suppress_ready(sup, why)) <= 0) {
        vstr_free(key);
        return rc;
    }
    if ((stmt = suppress_prepare(sup, SUPPRESS_GET, why)) == NULL) {
        vstr_free(key);
        return -1;
    }
    /* The statement lives until the next call: the entry's strings are
       its columns. */
    (void) sqlite3_bind_text(stmt, 1, tenant ? tenant : "", -1,
                             SQLITE_TRANSIENT);
    (void) sqlite3_bind_text(stmt, 2, vstr_str(key), -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_int64(stmt, 3, now);
    rc = sqlite3_step(stmt);
    vstr_free(key);
    if (rc == SQLITE_ROW) {
        (void) sqlite3_finalize(sup->held);
        sup->held = stmt;
        suppress_row(stmt, entry);
        return 1;
    }
    if (rc != SQLITE_DONE)
        suppress_db_error(sup, why);
    (void) sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* suppress_list - call fn for each unexpired entry */
int suppress_list(SUPPRESS *sup, const char *tenant, const char *after,
                  long long now, int limit, SUPPRESS_LIST_FN fn, void *arg,
                  VSTR *why)
{
    SUPPRESS_ENTRY entry;
    sqlite3_stmt *stmt;
    int count = 0;
    int rc;

    if ((rc = suppress_ready(sup, why)) <= 0)
        return rc;
    if ((stmt = suppress_prepare(sup, SUPPRESS_LIST, why)) == NULL)
        return -1;
    if (tenant)
        (void) sqlite3_bind_text(stmt, 1, tenant, -1, SQLITE_TRANSIENT);
    if (after)
        (void) sqlite3_bind_text(stmt, 2, after, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_int64(stmt, 3, now);
    (void) sqlite3_bind_int64(stmt, 4, limit > 0 ? limit : -1);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        suppress_row(stmt, &entry);
        fn(&entry, arg);
        count++;
    }
    if (rc != SQLITE_DONE)
        suppress_db_error(sup, why);
    (void) sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? count : -1;
}

/* suppress_exec - run sql; 0 or -1 with why */
static int suppress_exec(SUPPRESS *sup, const char *sql, VSTR *why)
{
    if (sup->db == NULL) {
        vstr_sprintf(why, "suppression database %s: not open", sup->path);
        return -1;
    }
    if (sqlite3_exec(sup->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        suppress_db_error(sup, why);
        return -1;
    }
    return 0;
}

/* suppress_begin - BEGIN IMMEDIATE */
int suppress_begin(SUPPRESS *sup, VSTR *why)
{
    return suppress_exec(sup, "BEGIN IMMEDIATE", why);
}

/* suppress_commit - COMMIT (then the rows mark, after a removal) */
int suppress_commit(SUPPRESS *sup, VSTR *why)
{
    if (suppress_exec(sup, "COMMIT", why) < 0)
        return -1;
    if (sup->removed)
        suppress_rows_settle(sup);
    return 0;
}

/* suppress_rollback - ROLLBACK, errors ignored */
void suppress_rollback(SUPPRESS *sup)
{
    sup->removed = false;
    if (sup->db != NULL)
        (void) sqlite3_exec(sup->db, "ROLLBACK", NULL, NULL, NULL);
}
