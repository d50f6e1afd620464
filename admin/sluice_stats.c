/*
 * sluice_stats - `sluice stats [--since WHEN] [--by recipient-domain|
 * sender-domain|tenant|pool|provider|source-ip] [--tenant NAME] [--json]`
 *
 * Counts of events by kind over a time range, from the SQLite store the
 * events daemon feeds from the journal (global/events_stats.h; main.cf
 * events_stats_enable = yes). WHEN is a duration back from now (30m, 24h,
 * 7d; default 24h) or an RFC 3339 UTC time (2026-12-05T00:00:00Z). --by
 * adds one row per recipient or sender domain, tenant (api mail), IP pool,
 * provider (the shaping rule of the destination) or source IP; --tenant
 * counts only the events of that tenant's mail. Rates: delivered (and
 * bounced: bounced + expired) over the recipients that reached an end
 * (delivered + bounced + expired); open and click rates: the messages
 * opened (clicked) at least once over the recipients delivered (tracking
 * makes one message per recipient); complaint rate: complained events
 * over the recipients delivered. --json prints one object:
 *
 *   {"since":TS,"until":TS,"by":null|"recipient-domain"|...,
 *    "tenant":null|NAME,
 *    "counts":{"received":N,...},"delivery_rate":R|null,
 *    "bounce_rate":R|null,"open_rate":R|null,"click_rate":R|null,
 *    "complaint_rate":R|null,"groups":[{"key":DOMAIN|null,"counts":{...}},...]}
 *
 * The database is opened read-only; a missing one is an error that says
 * how to make it.
 */
#include "sys_defs.h"

#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "events.h"
#include "events_stats.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "sluice.h"
#include "vstr.h"

#define SLUICE_STATS_USAGE                                                     \
    "usage: sluice stats [--since DURATION|TIME] "                             \
    "[--by recipient-domain|sender-domain|tenant|pool|provider|source-ip] "    \
    "[--tenant NAME] [--json]"
#define SLUICE_STATS_DEFAULT_SINCE (24 * 3600)
#define SLUICE_STATS_RETRY_MS 100 /* between tries of a locked store */
#define SLUICE_STATS_RETRIES 50

/* The kinds always shown, in this order; others found follow. */
static const char *const sluice_stats_kinds[] = {
    EVENTS_RECEIVED,   EVENTS_DEFERRED, EVENTS_DELIVERED,
    EVENTS_BOUNCED,    EVENTS_EXPIRED,  EVENTS_RETURNED,
    EVENTS_COMPLAINED, EVENTS_OPENED,   EVENTS_CLICKED,
};

/* The totals query also counts the messages (distinct queue IDs) with at
   least one open or click, as KIND SLUICE_STATS_MESSAGES rows: they are
   taken out of the counts into open_rate and click_rate. */
#define SLUICE_STATS_MESSAGES " messages"
#define SLUICE_STATS_NKINDS                                                    \
    (sizeof(sluice_stats_kinds) / sizeof(sluice_stats_kinds[0]))

/* sluice_stats_counts - a fresh {kind: 0, ...} */
static json_t *sluice_stats_counts(void)
{
    json_t *counts = json_object();

    for (size_t i = 0; i < SLUICE_STATS_NKINDS; i++)
        json_object_set_new(counts, sluice_stats_kinds[i], json_integer(0));
    return counts;
}

/* sluice_stats_get - counts[kind], 0 when absent */
static long long sluice_stats_get(const json_t *counts, const char *kind)
{
    return (long long) json_integer_value(json_object_get(counts, kind));
}

/* sluice_stats_rate - part / whole, or null */
static json_t *sluice_stats_rate(long long part, long long whole)
{
    return whole > 0 ? json_real((double) part / (double) whole) : json_null();
}

/* sluice_stats_ts - t as an RFC 3339 UTC time stamp */
static void sluice_stats_ts(char *buf, size_t len, time_t t)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    if (strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        msg_panic("%s: strftime", __func__);
}

/* --by's choices: the column name never comes from the user. */
static const struct {
    const char *by;
    const char *column;
} sluice_stats_by[] = {
    {"recipient-domain", "recipient_domain"},
    {"sender-domain", "sender_domain"},
    {"tenant", "tenant"},
    {"pool", "pool"},
    {"provider", "provider"},
    {"source-ip", "source_ip"},
};

/* sluice_stats_query - run sql (since bound as ?1, tenant as ?2): its (kind, count)
   rows into totals, or with by its (key, kind, count) rows, ordered by
   key, into groups; -1 with why */
static int sluice_stats_query(sqlite3 *db, long long since, const char *tenant,
                              bool by, const char *sql, json_t *totals,
                              json_t *groups, VSTR *why)
{
    sqlite3_stmt *stmt;
    json_t *group = NULL;
    VSTR *last = vstr_alloc(64);
    bool have_last = false;
    bool last_null = false;
    int rc;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(db));
        vstr_free(last);
        return -1;
    }
    (void) sqlite3_bind_int64(stmt, 1, since);
    if (tenant != NULL)
        (void) sqlite3_bind_text(stmt, 2, tenant, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        int col = by ? 1 : 0;
        const char *kind = (const char *) sqlite3_column_text(stmt, col);
        long long n = sqlite3_column_int64(stmt, col + 1);
        json_t *counts = totals;

        if (kind == NULL)
            continue;
        if (by) {
            const char *key = (const char *) sqlite3_column_text(stmt, 0);
            bool is_null = sqlite3_column_type(stmt, 0) == SQLITE_NULL;

            if (!have_last || is_null != last_null ||
                (!is_null && strcmp(key, vstr_str(last)) != 0)) {
                group = json_object();
                json_object_set_new(group, "key",
                                    is_null ? json_null() : json_string(key));
                json_object_set_new(group, "counts", sluice_stats_counts());
                json_array_append_new(groups, group);
                vstr_cpy(last, is_null ? "" : key);
                last_null = is_null;
                have_last = true;
            }
            counts = json_object_get(group, "counts");
        }
        json_object_set_new(counts, kind,
                            json_integer(sluice_stats_get(counts, kind) + n));
    }
    if (rc != SQLITE_DONE) {
        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(db));
        (void) sqlite3_finalize(stmt);
        vstr_free(last);
        return -1;
    }
    (void) sqlite3_finalize(stmt);
    vstr_free(last);
    return 0;
}

/* sluice_stats_print_row - one text row: label and the counts */
static void sluice_stats_print_row(const char *label, const json_t *counts,
                                   const json_t *kinds)
{
    size_t i;
    json_t *kind;

    printf("%-24s", label);
    json_array_foreach(kinds, i, kind)
    {
        printf(" %10lld", sluice_stats_get(counts, json_string_value(kind)));
    }
    printf("\n");
}

/* sluice_stats - `sluice stats [--since WHEN] [--by ...] [--json]` */
int sluice_stats(const char *config_dir, int argc, char **argv)
{
    const char *since_arg = NULL;
    const char *by_arg = NULL;
    const char *by_col = NULL;
    const char *tenant = NULL;
    const char *where;
    VSTR *totals_sql;
    bool json = false;
    long long since;
    time_t now = time(NULL);
    VSTR *why;
    VSTR *sql;
    MAIL_CONF *conf;
    char *path;
    sqlite3 *db = NULL;
    json_t *result;
    json_t *totals;
    json_t *groups;
    struct stat st;
    int last_code = SQLITE_OK;
    int status = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            since_arg = argv[++i];
        } else if (strcmp(argv[i], "--by") == 0 && i + 1 < argc) {
            by_arg = argv[++i];
        } else if (strcmp(argv[i], "--tenant") == 0 && i + 1 < argc) {
            tenant = argv[++i];
        } else {
            return sluice_fail("stats: %s \"%s\" (%s)",
                               strcmp(argv[i], "--since") == 0 ||
                                       strcmp(argv[i], "--by") == 0 ||
                                       strcmp(argv[i], "--tenant") == 0
                                   ? "missing value after"
                                   : "unknown argument",
                               argv[i], SLUICE_STATS_USAGE);
        }
    }
    if (by_arg) {
        for (size_t i = 0; i < SLUICE_ARRAY_LEN(sluice_stats_by); i++)
            if (strcmp(by_arg, sluice_stats_by[i].by) == 0)
                by_col = sluice_stats_by[i].column;
        if (by_col == NULL)
            return sluice_fail("stats: --by \"%s\": not recipient-domain, "
                               "sender-domain, tenant, pool, provider or "
                               "source-ip",
                               by_arg);
    }
    if (since_arg == NULL) {
        since = (long long) now - SLUICE_STATS_DEFAULT_SINCE;
    } else {
        bool ok;
        long long secs = mail_conf_parse_time(since_arg, &ok);

        if (ok)
            since = (long long) now - secs;
        else if ((since = events_stats_time(since_arg)) < 0)
            return sluice_fail("stats: --since \"%s\": neither a duration "
                               "(30m, 24h, 7d) nor a UTC time "
                               "(2026-12-05T00:00:00Z)",
                               since_arg);
    }

    why = vstr_alloc(100);
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        status = sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        return status;
    }
    path = mystrdup(mail_conf_str(conf, "events_stats_database"));
    mail_conf_free(conf);
    if (stat(path, &st) < 0) {
        status = sluice_fail("stats: %s: %s (the events daemon makes it "
                             "with events_stats_enable = yes)",
                             path, strerror(errno));
        myfree(path);
        vstr_free(why);
        return status;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        status = sluice_fail("stats: open %s: %s", path,
                             db ? sqlite3_errmsg(db) : "out of memory");
        (void) sqlite3_close(db);
        myfree(path);
        vstr_free(why);
        return status;
    }
    (void) sqlite3_busy_timeout(db, 5000);

    result = json_object();
    totals = NULL;
    groups = NULL;
    sql = vstr_alloc(200);
    totals_sql = vstr_alloc(200);
    where = tenant ? "t >= ?1 AND tenant = ?2" : "t >= ?1";
    vstr_sprintf(
        totals_sql,
        "SELECT kind, COUNT(*) FROM events WHERE %s GROUP BY kind "
        "UNION ALL SELECT kind || '" SLUICE_STATS_MESSAGES "', "
        "COUNT(DISTINCT qid) FROM events WHERE %s AND kind IN ('" EVENTS_OPENED
        "', '" EVENTS_CLICKED "') GROUP BY kind "
        "ORDER BY 1",
        where, where);
    if (by_col)
        vstr_sprintf(sql,
                     "SELECT %s, kind, COUNT(*) FROM events WHERE %s "
                     "GROUP BY 1, 2 ORDER BY %s IS NULL, 1, 2",
                     by_col, where, by_col);
    /* Both queries in one read transaction. A daemon killed in the middle
       of a batch leaves a journal to roll back, which this read-only
       reader cannot do: the daemon does at its next start (master starts
       it at once), so wait for it a while (and for a writer's lock). */
    for (int attempt = 0;; attempt++) {
        struct timespec pause = {0, SLUICE_STATS_RETRY_MS * 1000000L};
        int code;

        json_decref(totals);
        json_decref(groups);
        totals = sluice_stats_counts();
        groups = json_array();
        vstr_reset(why);
        status = 0;
        if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
            sluice_stats_query(db, since, tenant, false, vstr_str(totals_sql),
                               totals, groups, why) < 0 ||
            (by_col &&
             sluice_stats_query(db, since, tenant, true, vstr_str(sql), totals,
                                groups, why) < 0))
            status = 1;
        code = sqlite3_extended_errcode(db);
        (void) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        last_code = code;
        /* A read that must write is a hot journal to roll back. */
        if (status == 0 || attempt >= SLUICE_STATS_RETRIES ||
            ((code & 0xff) != SQLITE_READONLY && (code & 0xff) != SQLITE_BUSY))
            break;
        (void) nanosleep(&pause, NULL);
    }
    if (status != 0 && vstr_len(why) == 0)
        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(db));
    if (status != 0 && (last_code & 0xff) == SQLITE_READONLY)
        vstr_cat(why, " (a batch interrupted by a crash waits to be rolled "
                      "back: the events daemon does it when it starts)");
    if (status != 0) {
        sluice_fail("stats: %s: %s", path, vstr_str(why));
    } else {
        long long delivered = sluice_stats_get(totals, EVENTS_DELIVERED);
        long long failed = sluice_stats_get(totals, EVENTS_BOUNCED) +
                           sluice_stats_get(totals, EVENTS_EXPIRED);
        long long complained = sluice_stats_get(totals, EVENTS_COMPLAINED);
        long long opened =
            sluice_stats_get(totals, EVENTS_OPENED SLUICE_STATS_MESSAGES);
        long long clicked =
            sluice_stats_get(totals, EVENTS_CLICKED SLUICE_STATS_MESSAGES);
        char since_ts[40];
        char until_ts[40];

        sluice_stats_ts(since_ts, sizeof(since_ts), (time_t) since);
        sluice_stats_ts(until_ts, sizeof(until_ts), now);
        json_object_set_new(result, "since", json_string(since_ts));
        json_object_set_new(result, "until", json_string(until_ts));
        json_object_set_new(result, "by",
                            by_arg ? json_string(by_arg) : json_null());
        json_object_set_new(result, "tenant",
                            tenant ? json_string(tenant) : json_null());
        json_object_del(totals, EVENTS_OPENED SLUICE_STATS_MESSAGES);
        json_object_del(totals, EVENTS_CLICKED SLUICE_STATS_MESSAGES);
        json_object_set_new(result, "counts", json_incref(totals));
        json_object_set_new(result, "delivery_rate",
                            sluice_stats_rate(delivered, delivered + failed));
        json_object_set_new(result, "bounce_rate",
                            sluice_stats_rate(failed, delivered + failed));
        /* Of the delivered recipients: messages opened or clicked at
           least once (tracking makes one message per recipient), and
           complaints. */
        json_object_set_new(result, "open_rate",
                            sluice_stats_rate(opened, delivered));
        json_object_set_new(result, "click_rate",
                            sluice_stats_rate(clicked, delivered));
        json_object_set_new(result, "complaint_rate",
                            sluice_stats_rate(complained, delivered));
        json_object_set_new(result, "groups", json_incref(groups));
        if (json) {
            char *text = json_dumps(result, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                                JSON_ENSURE_ASCII);

            if (text) {
                printf("%s\n", text);
                free(text);
            }
        } else {
            json_t *kinds = json_array();
            const char *kind;
            json_t *value;
            size_t i;

            json_object_foreach(totals, kind, value)
            {
                json_array_append_new(kinds, json_string(kind));
            }
            printf("events from %s to %s%s%s\n%-24s", since_ts, until_ts,
                   tenant ? " of tenant " : "", tenant ? tenant : "",
                   by_arg ? by_arg : "");
            json_array_foreach(kinds, i, value)
            {
                printf(" %10s", json_string_value(value));
            }
            printf("\n");
            sluice_stats_print_row("all", totals, kinds);
            json_array_foreach(groups, i, value)
            {
                const json_t *key = json_object_get(value, "key");

                sluice_stats_print_row(
                    json_is_string(key) ? json_string_value(key) : "(none)",
                    json_object_get(value, "counts"), kinds);
            }
            if (delivered + failed > 0)
                printf("delivery rate %.1f%%, bounce rate %.1f%% (of %lld "
                       "recipients done)\n",
                       100.0 * (double) delivered /
                           (double) (delivered + failed),
                       100.0 * (double) failed / (double) (delivered + failed),
                       delivered + failed);
            if (delivered > 0)
                printf("open rate %.1f%%, click rate %.1f%%, complaint rate "
                       "%.2f%% (of %lld delivered)\n",
                       100.0 * (double) opened / (double) delivered,
                       100.0 * (double) clicked / (double) delivered,
                       100.0 * (double) complained / (double) delivered,
                       delivered);
            json_decref(kinds);
        }
    }
    json_decref(result);
    json_decref(totals);
    json_decref(groups);
    (void) sqlite3_close(db);
    vstr_free(sql);
    vstr_free(totals_sql);
    vstr_free(why);
    myfree(path);
    return status;
}
