/*
 * queue_list - the queue listing mailq shows, for `sluice queue` and showq
 *
 * See queue_list.h. The listing walks the queues in order, reading each
 * one's IDs only when it gets there; qmgr moves files while we read, so a
 * message seen in an earlier queue is not shown again from a later one.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <time.h>

#include <jansson.h>

#include "argv.h"
#include "dsn_log.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qid.h"
#include "queue_list.h"
#include "smtp_addr.h"
#include "vstr.h"

/* The queues mailq shows, and the mark after an ID in each. */
static const struct {
    const char *name;
    const char *mark;
} queue_list_queues[] = {
    /* clang-format off */
    /* maildrop: not yet picked up (pickup stopped or cleanup refusing it
       for now) */
    {MAIL_QUEUE_MAILDROP, " "},
    {MAIL_QUEUE_INCOMING, " "},
    {MAIL_QUEUE_ACTIVE, "*"},
    {MAIL_QUEUE_DEFERRED, " "},
    {MAIL_QUEUE_HOLD, "!"},
    /* clang-format on */
};
#define QUEUE_LIST_NQUEUES SLUICE_ARRAY_LEN(queue_list_queues)

/* qshape's age buckets, minutes; the last column is "1280+". */
static const int queue_list_buckets[] = {5,   10,  20,  40,  80,
                                         160, 320, 640, 1280};
#define QUEUE_LIST_COLS (SLUICE_ARRAY_LEN(queue_list_buckets) + 1)

typedef struct QUEUE_LIST_ROW {
    char *domain;
    long total;
    long count[QUEUE_LIST_COLS];
} QUEUE_LIST_ROW;

typedef struct QUEUE_LIST_SHAPE {
    QUEUE_LIST_ROW *rows;
    size_t count;
    size_t cap;
    QUEUE_LIST_ROW total;
} QUEUE_LIST_SHAPE;

struct QUEUE_LIST {
    char *queue_dir;
    const QUEUE_LIST_OPTS *opts;
    size_t queue; /* the queue being walked */
    ARGV *ids; /* its IDs, sorted; NULL: not read yet */
    size_t next_id;
    ARGV *shown[QUEUE_LIST_NQUEUES]; /* shown from each queue, sorted */
    QUEUE_LIST_SHAPE shape; /* by_domain: count, do not list */
    long long bytes;
    long count;
    VSTR *scratch;
};

/* queue_list_warn - one line about a file that cannot be shown */
static void SLUICE_PRINTF(2, 3)
    queue_list_warn(QUEUE_LIST *list, const char *fmt, ...)
{
    VSTR *text = vstr_alloc(100);
    va_list ap;

    va_start(ap, fmt);
    vstr_vsprintf_append(text, fmt, ap);
    va_end(ap);
    if (list->opts->warn)
        list->opts->warn(vstr_str(text), list->opts->warn_ctx);
    vstr_free(text);
}

/* queue_list_dir - the queue IDs in one folder */
static void queue_list_dir(const char *dir, ARGV *ids)
{
    struct dirent *de;
    DIR *dp;

    if ((dp = opendir(dir)) == NULL)
        return;
    while ((de = readdir(dp)) != NULL)
        if (qid_valid(de->d_name))
            argv_add(ids, de->d_name);
    closedir(dp);
}

/* queue_list_ids - every queue ID of one queue, hashed or not */
ARGV *queue_list_ids(const char *queue_dir, const char *queue)
{
    ARGV *ids = argv_alloc(16);
    VSTR *path = vstr_alloc(100);
    struct dirent *de;
    DIR *dp;

    vstr_sprintf(path, "%s/%s", queue_dir, queue);
    if (!mail_queue_hashed(queue)) {
        queue_list_dir(vstr_str(path), ids);
    } else if ((dp = opendir(vstr_str(path))) != NULL) {
        while ((de = readdir(dp)) != NULL) {
            VSTR *sub = vstr_alloc(100);

            if (de->d_name[0] != '.') {
                vstr_sprintf(sub, "%s/%s", vstr_str(path), de->d_name);
                queue_list_dir(vstr_str(sub), ids);
            }
            vstr_free(sub);
        }
        closedir(dp);
    }
    vstr_free(path);
    return ids;
}

/* queue_list_cmp - qsort: arrival order is queue ID order */
static int queue_list_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* queue_list_reason - the delay reason of a recipient, or NULL */
static const char *queue_list_reason(const DSN_LOG *dlog, const char *address)
{
    const DSN_LOG_REC *rec;

    if (dlog == NULL ||
        (rec = dsn_log_latest(dlog, DSN_ACTION_DELAYED, address)) == NULL)
        return NULL;
    return rec->reason;
}

/* queue_list_domain - the domain of an address ("" when none), by the
   rule every program routes by: "a@b"@host is host's, "a@b" has none */
static const char *queue_list_domain(const char *address)
{
    const char *domain = smtp_addr_domain(address);

    return domain ? domain : "";
}

/* queue_list_rcpt_match - does a pending recipient meet the filters? */
static bool queue_list_rcpt_match(const QUEUE_LIST_OPTS *opts,
                                  const char *address, const DSN_LOG *dlog)
{
    const char *reason;

    if (opts->recipient && strcasecmp(address, opts->recipient) != 0)
        return false;
    if (opts->domain &&
        strcasecmp(queue_list_domain(address), opts->domain) != 0)
        return false;
    if (opts->reason && ((reason = queue_list_reason(dlog, address)) == NULL ||
                         strcasestr(reason, opts->reason) == NULL))
        return false;
    return true;
}

/* queue_list_match - is the message shown? */
static bool queue_list_match(const QUEUE_LIST_OPTS *opts,
                             const QFILE_INFO *info, const DSN_LOG *dlog)
{
    if (opts->sender && strcasecmp(info->sender, opts->sender) != 0)
        return false;
    if (!opts->recipient && !opts->domain && !opts->reason)
        return true;
    for (size_t i = 0; i < info->rcpt_count; i++)
        if (!info->rcpts[i].done &&
            queue_list_rcpt_match(opts, info->rcpts[i].address, dlog))
            return true;
    return false;
}

/* queue_list_shape_add - count one pending recipient of a message of age */
static void queue_list_shape_add(QUEUE_LIST_SHAPE *shape, const char *address,
                                 long long age_seconds)
{
    const char *domain = queue_list_domain(address);
    QUEUE_LIST_ROW *row = NULL;
    size_t col = 0;
    long long minutes = age_seconds > 0 ? age_seconds / 60 : 0;

    while (col < SLUICE_ARRAY_LEN(queue_list_buckets) &&
           minutes >= queue_list_buckets[col])
        col++;
    for (size_t i = 0; i < shape->count && row == NULL; i++)
        if (strcasecmp(shape->rows[i].domain, domain) == 0)
            row = &shape->rows[i];
    if (row == NULL) {
        if (shape->count == shape->cap) {
            shape->cap = shape->cap ? 2 * shape->cap : 16;
            shape->rows =
                myrealloc_array(shape->rows, shape->cap, sizeof(*shape->rows));
        }
        row = &shape->rows[shape->count++];
        memset(row, 0, sizeof(*row));
        row->domain = mystrdup(*domain ? domain : "(local)");
        for (char *cp = row->domain; *cp; cp++)
            *cp = (char) tolower((unsigned char) *cp);
    }
    row->total++;
    row->count[col]++;
    shape->total.total++;
    shape->total.count[col]++;
}

/* queue_list_shape_cmp - qsort: biggest total first, then by name */
static int queue_list_shape_cmp(const void *a, const void *b)
{
    const QUEUE_LIST_ROW *ra = a;
    const QUEUE_LIST_ROW *rb = b;

    if (ra->total != rb->total)
        return ra->total > rb->total ? -1 : 1;
    return strcmp(ra->domain, rb->domain);
}

/* queue_list_printable - text for a terminal: each control byte as
   \xHH, as `sluice cat` shows them, so an address or a reason with a CR
   or LF in it (written by an older sendmail, say) stays on its line */
static const char *queue_list_printable(VSTR *out, const char *text)
{
    vstr_reset(out);
    for (const char *cp = text; *cp; cp++) {
        unsigned char ch = (unsigned char) *cp;

        if (ch < 0x20 || ch == 0x7f)
            vstr_sprintf_append(out, "\\x%02x", (unsigned) ch);
        else
            vstr_addch(out, ch);
    }
    return vstr_str(out);
}

/* queue_list_json_str - a JSON string of text (jansson escapes control
   bytes); text that is not UTF-8, which json_string() refuses, with each
   8-bit byte as \xHH instead, so no field goes missing */
static json_t *queue_list_json_str(const char *text)
{
    json_t *str;
    VSTR *ascii;

    if ((str = json_string(text)) != NULL)
        return str;
    ascii = vstr_alloc(strlen(text) + 16);
    for (const char *cp = text; *cp; cp++) {
        unsigned char ch = (unsigned char) *cp;

        if (ch >= 0x80)
            vstr_sprintf_append(ascii, "\\x%02x", (unsigned) ch);
        else
            vstr_addch(ascii, ch);
    }
    str = json_string(vstr_str(ascii));
    vstr_free(ascii);
    return str;
}

/* queue_list_json_line - append obj as one line of JSON; frees obj */
static void queue_list_json_line(json_t *obj, size_t flags, VSTR *out)
{
    char *text;

    if ((text = json_dumps(obj, flags)) != NULL) {
        vstr_sprintf_append(out, "%s\n", text);
        free(text);
    }
    json_decref(obj);
}

/* queue_list_shape_row - one row of the qshape table */
static void queue_list_shape_row(const QUEUE_LIST_ROW *row, int width,
                                 bool json, VSTR *out)
{
    if (json) {
        json_t *obj = json_object();
        json_t *buckets = json_object();
        char name[16];

        for (size_t c = 0; c < QUEUE_LIST_COLS; c++) {
            if (c < SLUICE_ARRAY_LEN(queue_list_buckets))
                (void) snprintf(name, sizeof(name), "%d",
                                queue_list_buckets[c]);
            else
                (void) snprintf(name, sizeof(name), "%d+",
                                queue_list_buckets[c - 1]);
            json_object_set_new(buckets, name, json_integer(row->count[c]));
        }
        json_object_set_new(obj, "domain", queue_list_json_str(row->domain));
        json_object_set_new(obj, "total", json_integer(row->total));
        json_object_set_new(obj, "buckets", buckets);
        queue_list_json_line(
            obj, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER, out);
        return;
    }
    VSTR *shown = vstr_alloc(64);

    vstr_sprintf_append(out, "%*s %5ld", width,
                        queue_list_printable(shown, row->domain), row->total);
    vstr_free(shown);
    for (size_t c = 0; c < QUEUE_LIST_COLS; c++)
        vstr_sprintf_append(out, " %*ld", c + 1 < QUEUE_LIST_COLS ? 4 : 5,
                            row->count[c]);
    vstr_addch(out, '\n');
}

/* queue_list_shape_print - the qshape table, TOTAL first */
static void queue_list_shape_print(QUEUE_LIST_SHAPE *shape, bool json,
                                   VSTR *out)
{
    int width = 5;

    qsort(shape->rows, shape->count, sizeof(*shape->rows),
          queue_list_shape_cmp);
    for (size_t i = 0; i < shape->count; i++)
        if ((int) strlen(shape->rows[i].domain) > width)
            width = (int) strlen(shape->rows[i].domain);
    if (!json) {
        vstr_sprintf_append(out, "%*s %5s", width, "", "T");
        for (size_t c = 0; c < QUEUE_LIST_COLS; c++) {
            if (c + 1 < QUEUE_LIST_COLS)
                vstr_sprintf_append(out, " %4d", queue_list_buckets[c]);
            else
                vstr_sprintf_append(out, " %4d+", queue_list_buckets[c - 1]);
        }
        vstr_addch(out, '\n');
    }
    shape->total.domain = "TOTAL";
    queue_list_shape_row(&shape->total, width, json, out);
    for (size_t i = 0; i < shape->count; i++)
        queue_list_shape_row(&shape->rows[i], width, json, out);
}

/* queue_list_json - one message as a line of JSON */
static void queue_list_json(const char *queue, const char *qid,
                            const QFILE_INFO *info, const DSN_LOG *dlog,
                            VSTR *out)
{
    json_t *obj = json_object();
    json_t *rcpts = json_array();
    const char *reason;

    json_object_set_new(obj, "queue_name", json_string(queue));
    json_object_set_new(obj, "queue_id", json_string(qid));
    json_object_set_new(obj, "arrival_time",
                        json_integer((json_int_t) info->arrival.tv_sec));
    json_object_set_new(obj, "message_size",
                        json_integer((json_int_t) info->content_size));
    json_object_set_new(obj, "forced_expire", json_false());
    json_object_set_new(obj, "sender", queue_list_json_str(info->sender));
    for (size_t i = 0; i < info->rcpt_count; i++) {
        json_t *rcpt;

        if (info->rcpts[i].done)
            continue;
        rcpt = json_object();
        json_object_set_new(rcpt, "address",
                            queue_list_json_str(info->rcpts[i].address));
        if ((reason = queue_list_reason(dlog, info->rcpts[i].address)) != NULL)
            json_object_set_new(rcpt, "delay_reason",
                                queue_list_json_str(reason));
        json_array_append_new(rcpts, rcpt);
    }
    json_object_set_new(obj, "recipients", rcpts);
    queue_list_json_line(obj, JSON_COMPACT | JSON_ENSURE_ASCII, out);
}

/* queue_list_text - one message as mailq shows it */
static void queue_list_text(const char *mark, const char *qid,
                            const QFILE_INFO *info, const DSN_LOG *dlog,
                            VSTR *shown, VSTR *out)
{
    int indent = QID_LEN + 1 + 8 + 1 + 19 + 2;
    char when[64];
    time_t arrival = info->arrival.tv_sec;
    const char *reason;

    strftime(when, sizeof(when), "%a %b %e %H:%M:%S", localtime(&arrival));
    vstr_sprintf_append(
        out, "%s%s %8lld %s  %s\n", qid, mark, info->content_size, when,
        *info->sender ? queue_list_printable(shown, info->sender)
                      : "MAILER-DAEMON");
    for (size_t i = 0; i < info->rcpt_count; i++) {
        if (info->rcpts[i].done)
            continue;
        if ((reason = queue_list_reason(dlog, info->rcpts[i].address)) != NULL)
            vstr_sprintf_append(out, "%*s(%s)\n", indent - 6, "",
                                queue_list_printable(shown, reason));
        vstr_sprintf_append(
            out, "%*s%s\n", indent, "",
            queue_list_printable(shown, info->rcpts[i].address));
    }
    vstr_addch(out, '\n');
}

/* queue_list_one - read one queue file and append it when it is shown;
   was it read? */
static bool queue_list_one(QUEUE_LIST *list, const char *qid, VSTR *out)
{
    const char *queue = queue_list_queues[list->queue].name;
    const QUEUE_LIST_OPTS *opts = list->opts;
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    QFILE_INFO *info = NULL;
    DSN_LOG *dlog;
    bool read_ok = false;
    int fd;

    mail_queue_path(path, list->queue_dir, queue, qid);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT) /* ENOENT: delivered meanwhile */
            queue_list_warn(list, "open %s: %s", vstr_str(path),
                            strerror(errno));
    } else if ((info = qfile_info_read(fd, why)) == NULL ||
               !mail_queue_holds(list->queue_dir, qid, fd)) {
        /* Gone meanwhile (delivered): what was read may be another's. */
        if (info == NULL && mail_queue_holds(list->queue_dir, qid, fd))
            queue_list_warn(list, "%s: %s", vstr_str(path), vstr_str(why));
    } else {
        /* The reasons are a help, not the listing: a log that cannot be
           read only loses them. */
        if ((dlog = dsn_log_read(list->queue_dir, DSN_LOG_DEFER, qid, why)) ==
            NULL)
            queue_list_warn(list, "%s: defer log: %s", qid, vstr_str(why));
        read_ok = true;
        if (!queue_list_match(opts, info, dlog)) {
            /* read, not shown */
        } else if (opts->by_domain) {
            long long age = (long long) time(NULL) - info->arrival.tv_sec;

            for (size_t i = 0; i < info->rcpt_count; i++)
                if (!info->rcpts[i].done &&
                    queue_list_rcpt_match(opts, info->rcpts[i].address, dlog))
                    queue_list_shape_add(&list->shape, info->rcpts[i].address,
                                         age);
        } else {
            if (opts->json)
                queue_list_json(queue, qid, info, dlog, out);
            else
                queue_list_text(queue_list_queues[list->queue].mark, qid, info,
                                dlog, list->scratch, out);
            list->count++;
            list->bytes += info->content_size;
        }
        dsn_log_free(dlog);
    }
    if (fd >= 0)
        (void) close(fd);
    qfile_info_free(info);
    vstr_free(path);
    vstr_free(why);
    return read_ok;
}

/* queue_list_open - a listing of the queue under queue_dir */
QUEUE_LIST *queue_list_open(const char *queue_dir, const QUEUE_LIST_OPTS *opts)
{
    QUEUE_LIST *list = mycalloc(1, sizeof(*list));

    list->queue_dir = mystrdup(queue_dir);
    list->opts = opts;
    list->scratch = vstr_alloc(100);
    for (size_t q = 0; q < QUEUE_LIST_NQUEUES; q++)
        list->shown[q] = argv_alloc(16);
    return list;
}

/* queue_list_header - append the column heading (text listing only) */
void queue_list_header(QUEUE_LIST *list, VSTR *out)
{
    if (!list->opts->json && !list->opts->by_domain)
        vstr_sprintf_append(
            out,
            "%-*s  --Size-- ----Arrival Time---  -Sender/Recipient-------\n",
            QID_LEN, "-Queue ID-");
}

/* queue_list_next - append the next message shown; false at the end */
bool queue_list_next(QUEUE_LIST *list, VSTR *out)
{
    size_t before = vstr_len(out);

    while (list->queue < QUEUE_LIST_NQUEUES) {
        size_t q = list->queue;

        if (list->ids == NULL) {
            list->ids =
                queue_list_ids(list->queue_dir, queue_list_queues[q].name);
            qsort(list->ids->argv, list->ids->argc, sizeof(char *),
                  queue_list_cmp);
            list->next_id = 0;
        }
        while (list->next_id < list->ids->argc) {
            char *qid = list->ids->argv[list->next_id++];
            /* qmgr moves files while we read: one that went from incoming/
               to active/ between two directory reads is shown once. */
            bool seen = false;

            for (size_t p = 0; p < q && !seen; p++)
                seen = bsearch(&qid, list->shown[p]->argv, list->shown[p]->argc,
                               sizeof(char *), queue_list_cmp) != NULL;
            if (!seen && queue_list_one(list, qid, out))
                argv_add(list->shown[q], qid); /* in ID order: sorted */
            if (vstr_len(out) > before)
                return true;
        }
        list->ids = argv_free(list->ids);
        list->queue++;
    }
    return false;
}

/* queue_list_footer - append the totals or the qshape table */
void queue_list_footer(QUEUE_LIST *list, VSTR *out)
{
    if (list->opts->by_domain) {
        queue_list_shape_print(&list->shape, list->opts->json, out);
    } else if (!list->opts->json) {
        if (list->count == 0)
            vstr_cat(out, "Mail queue is empty\n");
        else
            vstr_sprintf_append(out, "-- %lld Kbytes in %ld Request%s.\n",
                                (list->bytes + 1023) / 1024, list->count,
                                list->count == 1 ? "" : "s");
    }
}

/* queue_list_free - release a listing; returns NULL */
QUEUE_LIST *queue_list_free(QUEUE_LIST *list)
{
    if (list == NULL)
        return NULL;
    argv_free(list->ids);
    for (size_t q = 0; q < QUEUE_LIST_NQUEUES; q++)
        argv_free(list->shown[q]);
    for (size_t i = 0; i < list->shape.count; i++)
        myfree(list->shape.rows[i].domain);
    myfree(list->shape.rows);
    vstr_free(list->scratch);
    myfree(list->queue_dir);
    myfree(list);
    return NULL;
}
