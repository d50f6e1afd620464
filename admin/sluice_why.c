/*
 * sluice_why - `sluice why QID|MESSAGE-ID|RECIPIENT [--json]`: why is this
 * message late (or what became of it)?
 *
 * The answer comes from the status index the events daemon keeps from the
 * journal (global/events_index.h; main.cf events_index_enable = yes) and,
 * for a message still queued, from its one queue file, found by its queue
 * ID through the hashed queue path (sluice_admin_locate: a handful of
 * stat(2) calls, never a walk of the spool), and from qmgr:
 *
 *   - every attempt: time, recipient, kind, remote host, status, reply;
 *   - where the message is now (incoming, active, deferred, hold,
 *     corrupt, or gone) and, in deferred/, its next attempt (the file's
 *     mtime, as qmgr and `sluice queue` read it);
 *   - what holds it now: on hold; a suspended or rate- or
 *     connection-limited shaping bucket of a pending recipient's domain
 *     (or of the provider its last attempt named), asked of qmgr over
 *     private/qmgr-shaping with a bounded wait; else "retry at T after:
 *     the last reply";
 *   - for a message that is gone, how each recipient ended ("delivered to
 *     X at T by relay R (250 ...)"), for as long as the index keeps it
 *     (events_index_max_age).
 *
 * The index follows the journal a second or so behind it, and a message
 * leaves the queue once its last event is in the journal: for that
 * moment neither knows it. An ARG found nowhere is so looked up once
 * more after the index has read every journal byte there was when the
 * lookup missed (the index exporter's position, events_pos.h), waiting
 * at most SLUICE_WHY_CATCH_UP_MS (not at all while master is down or
 * the position cannot be read); "no such" is said only then.
 *
 * ARG is taken as a queue ID when it is one; as a Message-ID when it is
 * in angle brackets or when "<ARG>" is a Message-ID in the index; else as
 * a recipient address (<> optional): its SLUICE_WHY_MAX_MESSAGES most
 * recent messages, newest first. A recipient is known to the index from
 * its first attempt on. Unknown ARG: one line on stderr, status 1.
 *
 * --json prints one object: {"query", "found_by": "queue_id" |
 * "message_id" | "recipient", "messages": [{"queue_id", "message_id",
 * "sender", "received", "client", "queue" (null: gone), "next_attempt",
 * "held_by": {"kind": "hold" | "corrupt" | "suspended" | "shaping" |
 * "connections" | "retry" | "delivery" | "incoming", "bucket", "source"
 * (with smtp_source_pools: the source IP of the bucket), "text"} | null, "recipients": [{"recipient", "status", "time", "relay", "dsn",
 * "reply"}], "attempts": [{"time", "kind", "recipient", "relay", "dsn",
 * "reply", "delay"}], "summary"}]}. Times are RFC 3339 UTC.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "attr.h"
#include "events.h"
#include "events_export.h"
#include "events_pos.h"
#include "events_stats.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mono_ms.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qid.h"
#include "shaping_proto.h"
#include "sluice.h"
#include "sock.h"
#include "vstr.h"

#define SLUICE_WHY_USAGE "usage: sluice why QID|MESSAGE-ID|RECIPIENT [--json]"
#define SLUICE_WHY_MAX_MESSAGES 10 /* most messages of one recipient */
#define SLUICE_WHY_MAX_ATTEMPTS 200 /* most attempts shown per message */
#define SLUICE_WHY_QMGR_MS 2000 /* longest wait for qmgr's buckets */
#define SLUICE_WHY_BUSY_MS 5000 /* for the daemon's write lock */
#define SLUICE_WHY_RETRY_MS 100 /* between tries of an index to roll back */
#define SLUICE_WHY_RETRIES 50
#define SLUICE_WHY_CATCH_UP_MS 5000 /* longest wait for the index */

/* sluice_why_col - column col of the row as a JSON string, or null */
static json_t *sluice_why_col(sqlite3_stmt *stmt, int col)
{
    const char *text = (const char *) sqlite3_column_text(stmt, col);
    json_t *str;

    if (text == NULL)
        return json_null();
    str = json_string(text);
    return str ? str : json_string("(not UTF-8)");
}

/* sluice_why_relay - the remote host of column col (the DSN's
   Remote-MTA, "dns; host", without its type), or null */
static json_t *sluice_why_relay(sqlite3_stmt *stmt, int col)
{
    const char *text = (const char *) sqlite3_column_text(stmt, col);

    json_t *str;

    if (text == NULL || strncasecmp(text, "dns; ", 5) != 0)
        return sluice_why_col(stmt, col);
    str = json_string(text + 5);
    return str ? str : json_string("(not UTF-8)");
}

/* sluice_why_ts - t as an RFC 3339 UTC time stamp */
static json_t *sluice_why_ts(time_t t)
{
    char buf[32];
    struct tm tm;

    gmtime_r(&t, &tm);
    if (strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        msg_panic("%s: strftime", __func__);
    return json_string(buf);
}

/* sluice_why_str - obj[name] as a C string, or NULL */
static const char *sluice_why_str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* sluice_why_domain - the lower-case domain of address into domain */
static bool sluice_why_domain(const char *address, VSTR *domain)
{
    return events_stats_domain(address, domain);
}

/* sluice_why_index_open - the index, read-only; NULL with why */
static sqlite3 *sluice_why_index_open(const MAIL_CONF *conf, VSTR *why)
{
    const char *path = mail_conf_str(conf, "events_index_database");
    sqlite3 *db = NULL;
    struct stat st;

    if (stat(path, &st) < 0) {
        const char *err = strerror(errno);

        if (!mail_conf_bool(conf, "events_index_enable"))
            vstr_sprintf(why,
                         "the status index %s is not there (%s): set "
                         "events_index_enable = yes and reload; messages are "
                         "indexed from then on",
                         path, err);
        else /* on (the default): the events daemon has not made it */
            vstr_sprintf(why,
                         "the status index %s is not there (%s): the events "
                         "daemon makes it when it runs with events_enable and "
                         "events_index_enable = yes (sluice start, or reload "
                         "after a change); messages are indexed from then on",
                         path, err);
        return NULL;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        vstr_sprintf(why, "open %s: %s", path,
                     db ? sqlite3_errmsg(db) : "out of memory");
        (void) sqlite3_close(db);
        return NULL;
    }
    (void) sqlite3_busy_timeout(db, SLUICE_WHY_BUSY_MS);
    return db;
}

/* sluice_why_readonly - why (the error text) gets what to do when SQLite
   refused this reader a write (SQLITE_READONLY, extended code xcode). The
   index is a write-ahead log: a reader needs PATH-wal and PATH-shm, which
   the events daemon keeps while it runs and removes when it stops; a
   reader makes them when they are not there (as root, the database
   owner's: SQLite gives them to it), so one that may not write the
   index's folder cannot read it then. */
static void sluice_why_readonly(const char *path, int xcode, VSTR *why)
{
    if (xcode == SQLITE_READONLY_DIRECTORY)
        vstr_sprintf_append(why,
                            " (the index's %s-wal and -shm are not there and "
                            "this user may not make them in its folder: run "
                            "sluice why as root; the folder should be "
                            "mail_owner's, as sluice check makes the queue's "
                            "events/)",
                            path);
    else
        vstr_sprintf_append(why,
                            " (this user may not write the index's %s-shm or "
                            "-wal, which its readers need: run sluice why as "
                            "root, and give them back to mail_owner)",
                            path);
}

/* sluice_why_qids - the queue IDs that sql (one text parameter) finds,
   appended to qids (at most max); -1 with why */
static int sluice_why_qids(sqlite3 *db, const char *sql, const char *arg,
                           json_t *qids, size_t max, VSTR *why)
{
    sqlite3_stmt *stmt;
    int rc;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(db));
        return -1;
    }
    (void) sqlite3_bind_text(stmt, 1, arg, -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW &&
           json_array_size(qids) < max)
        json_array_append_new(qids, sluice_why_col(stmt, 0));
    (void) sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* sluice_why_indexed - fill msg from the index (its messages row and
   attempts); -1 with why */
static int sluice_why_indexed(sqlite3 *db, const char *qid, json_t *msg,
                              VSTR *why)
{
    static const char *const msg_sql =
        "SELECT message_id, sender, received_ts, client FROM messages"
        " WHERE qid = ?1";
    static const char *const att_sql =
        "SELECT ts, kind, recipient, relay, dsn, reply, delay, provider"
        " FROM attempts WHERE qid = ?1 ORDER BY ts DESC LIMIT ?2";
    json_t *attempts = json_array();
    sqlite3_stmt *stmt;
    int rc;

    json_object_set_new(msg, "attempts", attempts);
    if (db == NULL)
        return 0;
    if (sqlite3_prepare_v2(db, msg_sql, -1, &stmt, NULL) != SQLITE_OK)
        goto fail;
    (void) sqlite3_bind_text(stmt, 1, qid, -1, SQLITE_TRANSIENT);
    if ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        json_object_set_new(msg, "message_id", sluice_why_col(stmt, 0));
        json_object_set_new(msg, "sender", sluice_why_col(stmt, 1));
        json_object_set_new(msg, "received", sluice_why_col(stmt, 2));
        json_object_set_new(msg, "client", sluice_why_col(stmt, 3));
        json_object_set_new(msg, "indexed", json_true());
    }
    (void) sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto fail;
    if (sqlite3_prepare_v2(db, att_sql, -1, &stmt, NULL) != SQLITE_OK)
        goto fail;
    (void) sqlite3_bind_text(stmt, 1, qid, -1, SQLITE_TRANSIENT);
    (void) sqlite3_bind_int(stmt, 2, SLUICE_WHY_MAX_ATTEMPTS);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        json_t *att = json_object();

        json_object_set_new(att, "time", sluice_why_col(stmt, 0));
        json_object_set_new(att, "kind", sluice_why_col(stmt, 1));
        json_object_set_new(att, "recipient", sluice_why_col(stmt, 2));
        json_object_set_new(att, "relay", sluice_why_relay(stmt, 3));
        json_object_set_new(att, "dsn", sluice_why_col(stmt, 4));
        json_object_set_new(att, "reply", sluice_why_col(stmt, 5));
        json_object_set_new(att, "delay",
                            sqlite3_column_type(stmt, 6) == SQLITE_NULL
                                ? json_null()
                                : json_real(sqlite3_column_double(stmt, 6)));
        json_object_set_new(att, "provider", sluice_why_col(stmt, 7));
        /* Newest first from SQLite; shown oldest first. */
        json_array_insert_new(attempts, 0, att);
        json_object_set_new(msg, "indexed", json_true());
    }
    (void) sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        goto fail;
    return 0;
fail:
    vstr_sprintf(why, "SQLite: %s", sqlite3_errmsg(db));
    return -1;
}

/* sluice_why_last - the last attempt for recipient in attempts, or NULL */
static json_t *sluice_why_last(json_t *attempts, const char *recipient)
{
    json_t *last = NULL;
    size_t i;
    json_t *att;

    json_array_foreach(attempts, i, att)
    {
        const char *r = sluice_why_str(att, "recipient");

        if (r && strcasecmp(r, recipient) == 0)
            last = att;
    }
    return last;
}

/* sluice_why_rcpt - a recipients entry from its last attempt (or none) */
static json_t *sluice_why_rcpt(const char *recipient, const json_t *last,
                               const char *status)
{
    json_t *rcpt = json_object();

    json_object_set_new(rcpt, "recipient", json_string(recipient));
    json_object_set_new(rcpt, "status", json_string(status));
    json_object_set(rcpt, "time",
                    last ? json_object_get(last, "time") : json_null());
    json_object_set(rcpt, "relay",
                    last ? json_object_get(last, "relay") : json_null());
    json_object_set(rcpt, "dsn",
                    last ? json_object_get(last, "dsn") : json_null());
    json_object_set(rcpt, "reply",
                    last ? json_object_get(last, "reply") : json_null());
    return rcpt;
}

/* sluice_why_queued - fill msg from its queue file, if it is queued:
   queue, next_attempt, sender and recipients; pending gets the domains
   of the recipients not done */
static void sluice_why_queued(const char *queue_dir, const char *qid,
                              json_t *msg, json_t *pending)
{
    json_t *attempts = json_object_get(msg, "attempts");
    json_t *rcpts = json_object_get(msg, "recipients");
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    VSTR *domain = vstr_alloc(64);
    const char *queue = NULL;
    QFILE_INFO *info = NULL;
    struct stat st;
    int fd = -1;

    /* It may move between two looks: a few. */
    for (int pass = 0; pass < 3 && fd < 0; pass++) {
        if ((queue = sluice_admin_locate(queue_dir, qid)) == NULL)
            continue;
        mail_queue_path(path, queue_dir, queue, qid);
        fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        json_object_set_new(msg, "queue", json_null());
        goto out;
    }
    json_object_set_new(msg, "queue", json_string(queue));
    if (fstat(fd, &st) == 0 && strcmp(queue, MAIL_QUEUE_DEFERRED) == 0)
        json_object_set_new(msg, "next_attempt", sluice_why_ts(st.st_mtime));
    if ((info = qfile_info_read(fd, why)) == NULL &&
        mail_queue_holds(queue_dir, qid, fd)) {
        json_object_set_new(msg, "queue_file_error",
                            json_string(vstr_str(why)));
        goto out;
    }
    if (info == NULL || !mail_queue_holds(queue_dir, qid, fd)) {
        /* Done meanwhile: what was read may be another message's. */
        json_object_set_new(msg, "queue", json_null());
        goto out;
    }
    if (json_is_null(json_object_get(msg, "sender")))
        json_object_set_new(msg, "sender", json_string(info->sender));
    if (json_is_null(json_object_get(msg, "received")))
        json_object_set_new(msg, "received",
                            sluice_why_ts(info->arrival.tv_sec));
    for (size_t i = 0; i < info->rcpt_count; i++) {
        const QFILE_RCPT *r = &info->rcpts[i];
        json_t *last = sluice_why_last(attempts, r->address);
        /* Done with no attempt indexed: the index came later. */
        const char *status = last ? sluice_why_str(last, "kind") : "done";

        if (!r->done) {
            status = last ? EVENTS_DEFERRED : "pending";
            if (sluice_why_domain(r->address, domain))
                json_object_set_new(pending, vstr_str(domain), json_true());
        }
        json_array_append_new(rcpts, sluice_why_rcpt(r->address, last, status));
    }
out:
    if (fd >= 0)
        (void) close(fd);
    qfile_info_free(info);
    vstr_free(path);
    vstr_free(why);
    vstr_free(domain);
}

/* sluice_why_gone - recipients of a message no longer queued, from the
   index: each one's last attempt */
static void sluice_why_gone(json_t *msg)
{
    json_t *attempts = json_object_get(msg, "attempts");
    json_t *rcpts = json_object_get(msg, "recipients");
    json_t *seen = json_object();
    size_t i;
    json_t *att;

    json_array_foreach(attempts, i, att)
    {
        const char *r = sluice_why_str(att, "recipient");
        json_t *last;

        if (r == NULL || json_object_get(seen, r))
            continue;
        json_object_set_new(seen, r, json_true());
        last = sluice_why_last(attempts, r);
        json_array_append_new(
            rcpts, sluice_why_rcpt(r, last, sluice_why_str(last, "kind")));
    }
    json_decref(seen);
}

/* sluice_why_shaping - qmgr's buckets (an array of objects), or NULL when
   qmgr cannot tell at once (not running, busy, another version) */
static json_t *sluice_why_shaping(const char *queue_dir)
{
    SHAPING_PROTO_REQUEST req = {.request = SHAPING_PROTO_REQ_LIST};
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    json_t *buckets = NULL;
    ATTR_STREAM *stream = NULL;
    ATTR_LIST *list = NULL;
    int fd;

    if (sluice_admin_master_down(queue_dir))
        goto out;
    mail_queue_service(path, queue_dir, MAIL_QUEUE_PRIVATE,
                       SHAPING_PROTO_SERVICE);
    if ((fd = sock_unix_connect(vstr_str(path))) < 0)
        goto out;
    stream = attr_stream_open(fd, SHAPING_PROTO_LIST_MAX, SLUICE_WHY_QMGR_MS);
    list = shaping_proto_hello_list();
    if (attr_stream_write(stream, list, why) < 0)
        goto out;
    list = attr_list_free(list);
    if (attr_stream_read(stream, &list, why) < 0 ||
        shaping_proto_hello_take(list, why) < 0)
        goto out;
    list = attr_list_free(list);
    list = shaping_proto_request_list(&req);
    if (attr_stream_write(stream, list, why) < 0)
        goto out;
    list = attr_list_free(list);
    buckets = json_array();
    for (;;) {
        SHAPING_PROTO_BUCKET b;
        SHAPING_PROTO_REPLY reply;
        json_t *obj;

        if (attr_stream_read(stream, &list, why) < 0)
            break;
        if (!shaping_proto_is_bucket(list)) {
            if (shaping_proto_reply_take(list, &reply, why) == 0 &&
                reply.status == SHAPING_PROTO_STAT_OK) {
                list = attr_list_free(list);
                goto out;
            }
            break;
        }
        if (shaping_proto_bucket_take(list, &b, why) < 0)
            break;
        obj = json_object();
        json_object_set_new(obj, "bucket", json_string(b.bucket));
        json_object_set_new(obj, "rule", json_string(b.rule));
        json_object_set_new(obj, "max_connections",
                            json_integer(b.max_connections));
        json_object_set_new(obj, "connections", json_integer(b.connections));
        json_object_set_new(obj, "message_rate", json_string(b.message_rate));
        json_object_set_new(obj, "message_tokens",
                            json_integer(b.message_tokens));
        json_object_set_new(obj, "connection_rate",
                            json_string(b.connection_rate));
        json_object_set_new(obj, "connection_tokens",
                            json_integer(b.connection_tokens));
        json_object_set_new(obj, "suspended", json_integer(b.suspended));
        json_object_set_new(obj, "queued", json_integer(b.queued));
        json_array_append_new(buckets, obj);
        list = attr_list_free(list);
    }
    /* A reply cut short is no answer. */
    buckets = (json_decref(buckets), NULL);
out:
    attr_list_free(list);
    if (stream)
        attr_stream_close(stream);
    vstr_free(path);
    vstr_free(why);
    return buckets;
}

/* sluice_why_bucket_hold - what bucket b holds back now, into held (kind,
   bucket, text); false when nothing */
static bool sluice_why_bucket_hold(const json_t *b, json_t *held)
{
    const char *full = sluice_why_str(b, "bucket");
    const char *at = strrchr(full, '@');
    VSTR *base = vstr_alloc(50);
    const char *name;
    const char *rule = sluice_why_str(b, "rule");
    long long suspended = json_integer_value(json_object_get(b, "suspended"));
    long long queued = json_integer_value(json_object_get(b, "queued"));
    long long max_conn =
        json_integer_value(json_object_get(b, "max_connections"));
    long long conns = json_integer_value(json_object_get(b, "connections"));
    const char *msg_rate = sluice_why_str(b, "message_rate");
    const char *conn_rate = sluice_why_str(b, "connection_rate");
    VSTR *text = vstr_alloc(100);
    const char *kind = NULL;

    /* With source pools a bucket is NAME@SOURCE: limits (and
       `sluice shaping resume`) name NAME; the source is told apart. */
    if (at != NULL)
        vstr_ncpy(base, full, (size_t) (at - full));
    else
        vstr_cpy(base, full);
    name = vstr_str(base);
    if (suspended > 0) {
        kind = "suspended";
        vstr_sprintf(text,
                     "%s is suspended for another %llds (sluice shaping "
                     "resume %s ends it)",
                     name, suspended, name);
    } else if (msg_rate && strcmp(msg_rate, "-") != 0 && queued > 0 &&
               json_integer_value(json_object_get(b, "message_tokens")) <= 0) {
        kind = "shaping";
        vstr_sprintf(text,
                     "shaping limit of %s (rule %s): message_rate %s, no "
                     "token left; deliveries waiting: %lld",
                     name, rule, msg_rate, queued);
    } else if (conn_rate && strcmp(conn_rate, "-") != 0 && queued > 0 &&
               json_integer_value(json_object_get(b, "connection_tokens")) <=
                   0) {
        kind = "shaping";
        vstr_sprintf(text,
                     "shaping limit of %s (rule %s): connection_rate %s, no "
                     "token left; deliveries waiting: %lld",
                     name, rule, conn_rate, queued);
    } else if (max_conn > 0 && conns >= max_conn && queued > 0) {
        kind = "connections";
        vstr_sprintf(text,
                     "%s is at its connection limit (rule %s: %lld/%lld); "
                     "deliveries waiting: %lld",
                     name, rule, conns, max_conn, queued);
    }
    if (kind) {
        json_object_set_new(held, "kind", json_string(kind));
        if (at != NULL) {
            vstr_sprintf_append(text, " (source %s)", at + 1);
            json_object_set_new(held, "source", json_string(at + 1));
        }
        json_object_set_new(held, "bucket", json_string(name));
        json_object_set_new(held, "text", json_string(vstr_str(text)));
    }
    vstr_free(text);
    vstr_free(base);
    return kind != NULL;
}

/* sluice_why_last_deferral - the reply of the newest deferred attempt */
static const char *sluice_why_last_deferral(const json_t *attempts)
{
    const char *reply = NULL;
    size_t i;
    json_t *att;

    json_array_foreach(attempts, i, att)
    {
        const char *kind = sluice_why_str(att, "kind");

        if (kind && strcmp(kind, EVENTS_DEFERRED) == 0)
            reply = sluice_why_str(att, "reply");
    }
    return reply;
}

/* sluice_why_held - what holds a queued message now, into msg */
static void sluice_why_held(const char *queue_dir, json_t *msg,
                            const json_t *pending, json_t **buckets,
                            bool *asked)
{
    const char *queue = sluice_why_str(msg, "queue");
    json_t *attempts = json_object_get(msg, "attempts");
    json_t *held = json_object();
    VSTR *text = vstr_alloc(100);
    const char *reply;
    size_t i;
    json_t *att;
    json_t *b;

    if (queue == NULL) {
        json_object_set_new(msg, "held_by", json_null());
        json_decref(held);
        vstr_free(text);
        return;
    }
    if (strcmp(queue, MAIL_QUEUE_HOLD) == 0) {
        json_object_set_new(held, "kind", json_string("hold"));
        vstr_sprintf(text, "on hold (sluice release %s lets it go)",
                     sluice_why_str(msg, "queue_id"));
        json_object_set_new(held, "text", json_string(vstr_str(text)));
        goto done;
    }
    if (strcmp(queue, MAIL_QUEUE_CORRUPT) == 0) {
        json_object_set_new(held, "kind", json_string("corrupt"));
        json_object_set_new(
            held, "text",
            json_string("its queue file is corrupt: set aside in corrupt/"));
        goto done;
    }
    /* A bucket of a pending recipient's domain, or the provider its
       attempts name: asked of qmgr once for every message shown. */
    if (!*asked) {
        *buckets = sluice_why_shaping(queue_dir);
        *asked = true;
    }
    json_array_foreach(*buckets, i, b)
    {
        const char *full = sluice_why_str(b, "bucket");
        const char *at = full ? strrchr(full, '@') : NULL;
        VSTR *base = vstr_alloc(50);
        const char *name;
        bool ours;
        size_t j;

        if (full == NULL) {
            vstr_free(base);
            continue;
        }
        /* NAME@SOURCE with source pools: match NAME. */
        if (at != NULL)
            vstr_ncpy(base, full, (size_t) (at - full));
        else
            vstr_cpy(base, full);
        name = vstr_str(base);
        ours = json_object_get(pending, name) != NULL;

        json_array_foreach(attempts, j, att)
        {
            const char *provider = sluice_why_str(att, "provider");

            if (!ours && provider && strncmp(name, "provider:", 9) == 0 &&
                strcmp(name + 9, provider) == 0)
                ours = true;
        }
        vstr_free(base);
        if (ours && sluice_why_bucket_hold(b, held))
            goto done;
    }
    reply = sluice_why_last_deferral(attempts);
    if (strcmp(queue, MAIL_QUEUE_DEFERRED) == 0) {
        json_object_set_new(held, "kind", json_string("retry"));
        vstr_sprintf(text, "retry at %s after: %s",
                     sluice_why_str(msg, "next_attempt")
                         ? sluice_why_str(msg, "next_attempt")
                         : "(unknown)",
                     reply ? reply : "(no attempt in the index)");
    } else if (strcmp(queue, MAIL_QUEUE_ACTIVE) == 0) {
        json_object_set_new(held, "kind", json_string("delivery"));
        vstr_sprintf(text,
                     "in the queue manager's hands (active/): in "
                     "delivery or about to be%s%s",
                     reply ? "; the last try said: " : "", reply ? reply : "");
    } else {
        json_object_set_new(held, "kind", json_string("incoming"));
        vstr_sprintf(text, "waiting for the queue manager to take it (%s/)",
                     queue);
    }
    json_object_set_new(held, "text", json_string(vstr_str(text)));
done:
    json_object_set_new(msg, "held_by", held);
    vstr_free(text);
}

/* sluice_why_summary - one line on the message, into msg's summary */
static void sluice_why_summary(json_t *msg)
{
    const char *queue = sluice_why_str(msg, "queue");
    json_t *rcpts = json_object_get(msg, "recipients");
    VSTR *text = vstr_alloc(100);
    size_t i;
    json_t *r;

    if (queue != NULL) {
        vstr_sprintf(text, "queued in %s/: %s", queue,
                     sluice_why_str(json_object_get(msg, "held_by"), "text"));
    } else {
        json_array_foreach(rcpts, i, r)
        {
            const char *status = sluice_why_str(r, "status");
            const char *relay = sluice_why_str(r, "relay");
            const char *reply = sluice_why_str(r, "reply");

            if (i > 0)
                vstr_cat(text, "; ");
            if (status && strcmp(status, EVENTS_DELIVERED) == 0)
                vstr_sprintf_append(text, "delivered to %s at %s by %s (%s)",
                                    sluice_why_str(r, "recipient"),
                                    sluice_why_str(r, "time"),
                                    relay ? relay : "-", reply ? reply : "");
            else
                vstr_sprintf_append(
                    text, "%s: %s at %s%s%s (%s)",
                    sluice_why_str(r, "recipient"), status ? status : "?",
                    sluice_why_str(r, "time"), relay ? " by " : "",
                    relay ? relay : "", reply ? reply : "");
        }
        if (json_array_size(rcpts) == 0)
            vstr_cat(text, "no longer queued; the index has no attempt "
                           "(received only)");
    }
    json_object_set_new(msg, "summary", json_string(vstr_str(text)));
    vstr_free(text);
}

/* sluice_why_message - everything about qid; NULL when neither the index
   nor the queue knows it */
static json_t *sluice_why_message(sqlite3 *db, const char *queue_dir,
                                  const char *qid, json_t **buckets,
                                  bool *asked, VSTR *why, int *err)
{
    json_t *msg = json_object();
    json_t *pending = json_object();

    json_object_set_new(msg, "queue_id", json_string(qid));
    json_object_set_new(msg, "message_id", json_null());
    json_object_set_new(msg, "sender", json_null());
    json_object_set_new(msg, "received", json_null());
    json_object_set_new(msg, "client", json_null());
    json_object_set_new(msg, "queue", json_null());
    json_object_set_new(msg, "next_attempt", json_null());
    json_object_set_new(msg, "recipients", json_array());
    if (sluice_why_indexed(db, qid, msg, why) < 0) {
        *err = 1;
        json_decref(msg);
        json_decref(pending);
        return NULL;
    }
    if (qid_valid(qid))
        sluice_why_queued(queue_dir, qid, msg, pending);
    if (json_is_null(json_object_get(msg, "queue")) &&
        json_object_get(msg, "indexed") == NULL) {
        json_decref(msg);
        json_decref(pending);
        return NULL;
    }
    if (json_is_null(json_object_get(msg, "queue")))
        sluice_why_gone(msg);
    sluice_why_held(queue_dir, msg, pending, buckets, asked);
    sluice_why_summary(msg);
    json_object_del(msg, "indexed");
    json_decref(pending);
    return msg;
}

/* sluice_why_print - the text form of one message */
static void sluice_why_print(const json_t *msg)
{
    const char *mid = sluice_why_str(msg, "message_id");
    const char *sender = sluice_why_str(msg, "sender");
    const char *received = sluice_why_str(msg, "received");
    const char *queue = sluice_why_str(msg, "queue");
    const char *next = sluice_why_str(msg, "next_attempt");
    const json_t *held = json_object_get(msg, "held_by");
    size_t i;
    json_t *r;

    printf("%s: message-id %s, from <%s>, received %s\n",
           sluice_why_str(msg, "queue_id"), mid ? mid : "(unknown)",
           sender ? sender : "?", received ? received : "(unknown)");
    if (queue) {
        printf("  now: queued in %s/", queue);
        if (next)
            printf(", next attempt %s", next);
        printf("\n");
        if (json_is_object(held))
            printf("  held by: %s\n", sluice_why_str(held, "text"));
    } else {
        printf("  now: no longer queued: %s\n", sluice_why_str(msg, "summary"));
    }
    json_array_foreach(json_object_get(msg, "recipients"), i, r)
    {
        const char *reply = sluice_why_str(r, "reply");

        printf("  recipient %s: %s%s%s\n", sluice_why_str(r, "recipient"),
               sluice_why_str(r, "status"), reply ? ": " : "",
               reply ? reply : "");
    }
    json_array_foreach(json_object_get(msg, "attempts"), i, r)
    {
        const char *relay = sluice_why_str(r, "relay");
        const char *dsn = sluice_why_str(r, "dsn");
        const char *reply = sluice_why_str(r, "reply");
        const char *rcpt = sluice_why_str(r, "recipient");

        printf("  %s %-9s %s relay=%s dsn=%s %s\n", sluice_why_str(r, "time"),
               sluice_why_str(r, "kind"), rcpt ? rcpt : "-",
               relay ? relay : "-", dsn ? dsn : "-", reply ? reply : "");
    }
}

/* sluice_why_find - the queue IDs ARG names, and how they were found;
   -1 with why (a store that cannot be read) */
static int sluice_why_find(sqlite3 *db, const char *arg, json_t *qids,
                           const char **found_by, VSTR *why)
{
    static const char *const by_mid =
        "SELECT qid FROM messages WHERE message_id = ?1"
        " ORDER BY last_t DESC";
    static const char *const by_rcpt =
        "SELECT qid FROM attempts WHERE recipient = ?1 GROUP BY qid"
        " ORDER BY MAX(ts) DESC";
    VSTR *key = vstr_alloc(100);
    size_t len = strlen(arg);
    int ret = 0;

    if (qid_valid(arg)) {
        *found_by = "queue_id";
        json_array_append_new(qids, json_string(arg));
        goto out;
    }
    if (db == NULL)
        goto out;
    /* A Message-ID, with its <> or without them. */
    if (arg[0] == '<' && len > 2 && arg[len - 1] == '>')
        vstr_cpy(key, arg);
    else
        vstr_sprintf(key, "<%s>", arg);
    *found_by = "message_id";
    if ((ret = sluice_why_qids(db, by_mid, vstr_str(key), qids,
                               SLUICE_WHY_MAX_MESSAGES, why)) < 0 ||
        json_array_size(qids) > 0)
        goto out;
    /* A recipient, <> optional. */
    if (arg[0] == '<' && len > 2 && arg[len - 1] == '>')
        vstr_ncpy(key, arg + 1, len - 2);
    else
        vstr_cpy(key, arg);
    *found_by = "recipient";
    ret = sluice_why_qids(db, by_rcpt, vstr_str(key), qids,
                          SLUICE_WHY_MAX_MESSAGES, why);
out:
    vstr_free(key);
    return ret;
}

/* sluice_why_index_pos - the index exporter's position file into path;
   false when conf has no index exporter */
static bool sluice_why_index_pos(const MAIL_CONF *conf, VSTR *path)
{
    EVENTS_EXPORT_LIST *exports = events_export_list(conf);
    bool found = false;

    for (size_t i = 0; i < exports->count && !found; i++) {
        if (strcmp(exports->exports[i].kind, EVENTS_EXPORT_INDEX) == 0) {
            events_export_path(path, mail_conf_str(conf, "events_directory"),
                               exports->exports[i].name,
                               EVENTS_EXPORT_POS_SUFFIX);
            found = true;
        }
    }
    events_export_list_free(exports);
    return found;
}

/* sluice_why_read_past - has the position in pos_path read every segment
   of list to the size list gave it? 1 yes, 0 not yet, -1 the position
   cannot be read (the exporter is stuck on it: nothing to wait for) */
static int sluice_why_read_past(const char *pos_path, const EVENTS_LIST *list)
{
    EVENTS_POS *pos = events_pos_alloc();
    VSTR *why = vstr_alloc(100);
    int past = events_pos_load(pos, pos_path, why) == 0 ? 1 : -1;

    for (size_t i = 0; past == 1 && i < list->count; i++) {
        long long offset = events_pos_offset(pos, list->segs[i].name);

        if (offset >= 0 && offset < list->segs[i].size)
            past = 0;
    }
    events_pos_free(pos);
    vstr_free(why);
    return past;
}

/* sluice_why_catch_up - wait (at most SLUICE_WHY_CATCH_UP_MS) until the
   index has read what the journal holds now; true when it was behind
   (another lookup may find what this one missed). No wait while master
   is down (nothing reads the journal) */
static bool sluice_why_catch_up(const MAIL_CONF *conf)
{
    struct timespec pause = {0, SLUICE_WHY_RETRY_MS * 1000000L};
    long long deadline = mono_ms() + SLUICE_WHY_CATCH_UP_MS;
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    EVENTS_LIST *list = NULL;
    bool behind = false;

    if (!sluice_admin_master_down(mail_conf_str(conf, "queue_directory")) &&
        sluice_why_index_pos(conf, path) &&
        (list = events_list(mail_conf_str(conf, "events_directory"), why)) &&
        sluice_why_read_past(vstr_str(path), list) == 0) {
        behind = true;
        while (mono_ms() < deadline &&
               sluice_why_read_past(vstr_str(path), list) == 0)
            (void) nanosleep(&pause, NULL);
    }
    if (list)
        events_list_free(list);
    vstr_free(path);
    vstr_free(why);
    return behind;
}

/* sluice_why_lookup - the messages arg names into msgs (none: not
   found); -1 when the index failed (said on stderr) */
static int sluice_why_lookup(const MAIL_CONF *conf, sqlite3 *db,
                             const char *arg, json_t *qids, json_t *msgs,
                             const char **found_by, json_t **buckets,
                             bool *asked, VSTR *why)
{
    /* A locked index, or a write-ahead log that needs a recovery this
       reader may not make (it cannot write PATH-shm), is tried again a
       while: the events daemon recovers it when master restarts it.
       Missing -wal and -shm this user may not make do not come by
       themselves: no wait for them. */
    for (int attempt = 0;; attempt++) {
        struct timespec pause = {0, SLUICE_WHY_RETRY_MS * 1000000L};
        int code;
        int xcode;
        int err;

        json_array_clear(qids);
        json_array_clear(msgs);
        err = sluice_why_find(db, arg, qids, found_by, why) < 0;
        for (size_t i = 0; !err && i < json_array_size(qids); i++) {
            json_t *msg =
                sluice_why_message(db, mail_conf_str(conf, "queue_directory"),
                                   json_string_value(json_array_get(qids, i)),
                                   buckets, asked, why, &err);

            if (msg)
                json_array_append_new(msgs, msg);
        }
        if (!err)
            return 0;
        xcode = db ? sqlite3_extended_errcode(db) : SQLITE_OK;
        code = xcode & 0xff;
        if (attempt >= SLUICE_WHY_RETRIES ||
            (code != SQLITE_READONLY && code != SQLITE_BUSY) ||
            xcode == SQLITE_READONLY_DIRECTORY) {
            if (code == SQLITE_READONLY)
                sluice_why_readonly(
                    mail_conf_str(conf, "events_index_database"), xcode, why);
            sluice_fail("why: %s", vstr_str(why));
            return -1;
        }
        (void) nanosleep(&pause, NULL);
    }
}

/* sluice_why - the subcommand */
int sluice_why(const char *config_dir, int argc, char **argv)
{
    const char *arg = NULL;
    const char *found_by = "queue_id";
    bool json = false;
    VSTR *why = vstr_alloc(100);
    VSTR *index_why = vstr_alloc(100);
    MAIL_CONF *conf = NULL;
    sqlite3 *db = NULL;
    json_t *qids = json_array();
    json_t *out = json_object();
    json_t *msgs = json_array();
    json_t *buckets = NULL;
    bool asked = false;
    int status = 1;
    size_t i;
    json_t *q;

    for (int k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--json") == 0)
            json = true;
        else if (argv[k][0] == '-' && argv[k][1] == '-')
            return sluice_fail("why: unknown option \"%s\" (%s)", argv[k],
                               SLUICE_WHY_USAGE);
        else if (arg == NULL && *argv[k])
            arg = argv[k];
        else
            return sluice_fail("%s", SLUICE_WHY_USAGE);
    }
    if (arg == NULL)
        return sluice_fail("%s", SLUICE_WHY_USAGE);
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        sluice_fail("%s", vstr_str(why));
        goto out;
    }
    db = sluice_why_index_open(conf, index_why);
    if (sluice_why_lookup(conf, db, arg, qids, msgs, &found_by, &buckets,
                          &asked, why) < 0)
        goto out;
    if (json_array_size(msgs) == 0 && db != NULL && sluice_why_catch_up(conf) &&
        sluice_why_lookup(conf, db, arg, qids, msgs, &found_by, &buckets,
                          &asked, why) < 0)
        goto out;
    if (json_array_size(msgs) == 0) {
        if (db == NULL)
            sluice_fail("why: %s: not in the queue, and %s", arg,
                        vstr_str(index_why));
        else
            sluice_fail("why: %s: no such queue ID, Message-ID or recipient "
                        "in the status index or the queue",
                        arg);
        goto out;
    }
    if (db == NULL)
        fprintf(stderr,
                "sluice: why: warning: %s; only the queue file is "
                "shown\n",
                vstr_str(index_why));
    json_object_set_new(out, "query", json_string(arg));
    json_object_set_new(out, "found_by", json_string(found_by));
    json_object_set(out, "messages", msgs);
    if (json) {
        char *text = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                         JSON_REAL_PRECISION(6));

        if (text == NULL) {
            sluice_fail("why: out of memory");
            goto out;
        }
        printf("%s\n", text);
        free(text);
    } else {
        json_array_foreach(msgs, i, q)
        {
            if (i > 0)
                printf("\n");
            sluice_why_print(q);
        }
    }
    status = 0;
out:
    (void) fflush(stdout);
    json_decref(buckets);
    json_decref(qids);
    json_decref(msgs);
    json_decref(out);
    if (db)
        (void) sqlite3_close(db);
    mail_conf_free(conf);
    vstr_free(why);
    vstr_free(index_why);
    return status;
}
