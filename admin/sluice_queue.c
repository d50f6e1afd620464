/*
 * sluice_queue - `sluice queue`, `sluice cat QID`, `sluice flush [QID...]`
 *
 * queue lists every message in maildrop/, incoming/, active/, deferred/
 * and hold/ as mailq does: queue ID (with '*' when active, '!' when on
 * hold), size, arrival time, sender, then each recipient not yet done,
 * after the reason
 * of its last temporary failure (the latest "delayed" record of the
 * message's defer log, global/dsn_log.h) when it has one; a control byte
 * in an address or a reason is shown as \xHH, as cat shows it. With
 * --json it prints one JSON object per message per line with postqueue
 * -j's fields (a value that is not UTF-8 has its 8-bit bytes as \xHH).
 * Filters, combinable: --sender ADDR (the envelope sender, "<>" for the
 * null sender), and per pending recipient --recipient ADDR, --domain
 * DOMAIN and --reason TEXT (a substring of its delay reason): a message is
 * shown when one of its pending recipients meets all three. --by-domain
 * prints qshape's table instead: one row per recipient domain, counting
 * pending recipients, by the age of their message in minutes (buckets
 * 5 10 20 ... 1280 and 1280+; "5" is under 5 minutes), biggest total
 * first after a TOTAL row.
 *
 * cat prints one queue file in readable form (-h the headers only, -b the
 * body only). Both only read the queue: a file that cannot be parsed is
 * reported, never touched. flush (or flush ALL) asks qmgr (public/qmgr) to
 * treat every deferred message as due now; flush QID... moves those messages
 * from deferred/ to incoming/ (due at once) and wakes qmgr.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <time.h>

#include <jansson.h>

#include "argv.h"
#include "dsn_log.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qid.h"
#include "sluice.h"
#include "smtp_addr.h"
#include "trigger.h"
#include "vstr.h"

/* The queues mailq shows, and the mark after an ID in each. */
static const struct {
    const char *name;
    const char *mark;
} sluice_queues[] = {
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

typedef struct SLUICE_QUEUE_TOTAL {
    long long bytes;
    long count;
} SLUICE_QUEUE_TOTAL;

/* sluice_queue_list_dir - the queue IDs in one folder (sorted) */
static void sluice_queue_list_dir(const char *dir, ARGV *ids)
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

/* sluice_queue_ids - every queue ID of one queue, hashed or not */
ARGV *sluice_queue_ids(const char *queue_dir, const char *queue)
{
    ARGV *ids = argv_alloc(16);
    VSTR *path = vstr_alloc(100);
    struct dirent *de;
    DIR *dp;

    vstr_sprintf(path, "%s/%s", queue_dir, queue);
    if (!mail_queue_hashed(queue)) {
        sluice_queue_list_dir(vstr_str(path), ids);
    } else if ((dp = opendir(vstr_str(path))) != NULL) {
        while ((de = readdir(dp)) != NULL) {
            VSTR *sub = vstr_alloc(100);

            if (de->d_name[0] != '.') {
                vstr_sprintf(sub, "%s/%s", vstr_str(path), de->d_name);
                sluice_queue_list_dir(vstr_str(sub), ids);
            }
            vstr_free(sub);
        }
        closedir(dp);
    }
    vstr_free(path);
    return ids;
}

/* sluice_queue_cmp - qsort: arrival order is queue ID order */
static int sluice_queue_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* sluice_queue_reason - the delay reason of a recipient, or NULL */
static const char *sluice_queue_reason(const DSN_LOG *dlog, const char *address)
{
    const DSN_LOG_REC *rec;

    if (dlog == NULL ||
        (rec = dsn_log_latest(dlog, DSN_ACTION_DELAYED, address)) == NULL)
        return NULL;
    return rec->reason;
}

/* Filters of `sluice queue`; NULL: any. */
typedef struct SLUICE_QUEUE_FILTER {
    const char *sender;
    const char *recipient;
    const char *domain;
    const char *reason;
} SLUICE_QUEUE_FILTER;

/* qshape's age buckets, minutes; the last column is "1280+". */
static const int sluice_shape_buckets[] = {5,   10,  20,  40,  80,
                                           160, 320, 640, 1280};
#define SLUICE_SHAPE_COLS (SLUICE_ARRAY_LEN(sluice_shape_buckets) + 1)

typedef struct SLUICE_SHAPE_ROW {
    char *domain;
    long total;
    long count[SLUICE_SHAPE_COLS];
} SLUICE_SHAPE_ROW;

typedef struct SLUICE_SHAPE {
    SLUICE_SHAPE_ROW *rows;
    size_t count;
    size_t cap;
    SLUICE_SHAPE_ROW total;
} SLUICE_SHAPE;

/* sluice_queue_domain - the domain of an address ("" when none), by the
   rule every program routes by: "a@b"@host is host's, "a@b" has none */
static const char *sluice_queue_domain(const char *address)
{
    const char *domain = smtp_addr_domain(address);

    return domain ? domain : "";
}

/* sluice_queue_rcpt_match - does a pending recipient meet the filter? */
static bool sluice_queue_rcpt_match(const SLUICE_QUEUE_FILTER *filter,
                                    const char *address, const DSN_LOG *dlog)
{
    const char *reason;

    if (filter->recipient && strcasecmp(address, filter->recipient) != 0)
        return false;
    if (filter->domain &&
        strcasecmp(sluice_queue_domain(address), filter->domain) != 0)
        return false;
    if (filter->reason &&
        ((reason = sluice_queue_reason(dlog, address)) == NULL ||
         strcasestr(reason, filter->reason) == NULL))
        return false;
    return true;
}

/* sluice_queue_match - is the message shown? */
static bool sluice_queue_match(const SLUICE_QUEUE_FILTER *filter,
                               const QFILE_INFO *info, const DSN_LOG *dlog)
{
    if (filter->sender && strcasecmp(info->sender, filter->sender) != 0)
        return false;
    if (!filter->recipient && !filter->domain && !filter->reason)
        return true;
    for (size_t i = 0; i < info->rcpt_count; i++)
        if (!info->rcpts[i].done &&
            sluice_queue_rcpt_match(filter, info->rcpts[i].address, dlog))
            return true;
    return false;
}

/* sluice_shape_add - count one pending recipient of a message of age */
static void sluice_shape_add(SLUICE_SHAPE *shape, const char *address,
                             long long age_seconds)
{
    const char *domain = sluice_queue_domain(address);
    SLUICE_SHAPE_ROW *row = NULL;
    size_t col = 0;
    long long minutes = age_seconds > 0 ? age_seconds / 60 : 0;

    while (col < SLUICE_ARRAY_LEN(sluice_shape_buckets) &&
           minutes >= sluice_shape_buckets[col])
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

/* sluice_shape_cmp - qsort: biggest total first, then by name */
static int sluice_shape_cmp(const void *a, const void *b)
{
    const SLUICE_SHAPE_ROW *ra = a;
    const SLUICE_SHAPE_ROW *rb = b;

    if (ra->total != rb->total)
        return ra->total > rb->total ? -1 : 1;
    return strcmp(ra->domain, rb->domain);
}

/* sluice_queue_printable - text for a terminal: each control byte as
   \xHH, as `sluice cat` shows them, so an address or a reason with a CR
   or LF in it (written by an older sendmail, say) stays on its line */
static const char *sluice_queue_printable(VSTR *out, const char *text)
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

/* sluice_queue_json_str - a JSON string of text (jansson escapes control
   bytes); text that is not UTF-8, which json_string() refuses, with each
   8-bit byte as \xHH instead, so no field goes missing */
static json_t *sluice_queue_json_str(const char *text)
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

/* sluice_shape_row - print one row */
static void sluice_shape_row(const SLUICE_SHAPE_ROW *row, int width, bool json)
{
    if (json) {
        json_t *obj = json_object();
        json_t *buckets = json_object();
        char name[16];
        char *text;

        for (size_t c = 0; c < SLUICE_SHAPE_COLS; c++) {
            if (c < SLUICE_ARRAY_LEN(sluice_shape_buckets))
                (void) snprintf(name, sizeof(name), "%d",
                                sluice_shape_buckets[c]);
            else
                (void) snprintf(name, sizeof(name), "%d+",
                                sluice_shape_buckets[c - 1]);
            json_object_set_new(buckets, name, json_integer(row->count[c]));
        }
        json_object_set_new(obj, "domain", sluice_queue_json_str(row->domain));
        json_object_set_new(obj, "total", json_integer(row->total));
        json_object_set_new(obj, "buckets", buckets);
        if ((text = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII |
                                        JSON_PRESERVE_ORDER)) != NULL) {
            printf("%s\n", text);
            free(text);
        }
        json_decref(obj);
        return;
    }
    VSTR *shown = vstr_alloc(64);

    printf("%*s %5ld", width, sluice_queue_printable(shown, row->domain),
           row->total);
    vstr_free(shown);
    for (size_t c = 0; c < SLUICE_SHAPE_COLS; c++)
        printf(" %*ld", c + 1 < SLUICE_SHAPE_COLS ? 4 : 5, row->count[c]);
    printf("\n");
}

/* sluice_shape_print - the qshape table, TOTAL first */
static void sluice_shape_print(SLUICE_SHAPE *shape, bool json)
{
    int width = 5;

    qsort(shape->rows, shape->count, sizeof(*shape->rows), sluice_shape_cmp);
    for (size_t i = 0; i < shape->count; i++)
        if ((int) strlen(shape->rows[i].domain) > width)
            width = (int) strlen(shape->rows[i].domain);
    if (!json) {
        printf("%*s %5s", width, "", "T");
        for (size_t c = 0; c < SLUICE_SHAPE_COLS; c++) {
            if (c + 1 < SLUICE_SHAPE_COLS)
                printf(" %4d", sluice_shape_buckets[c]);
            else
                printf(" %4d+", sluice_shape_buckets[c - 1]);
        }
        printf("\n");
    }
    shape->total.domain = "TOTAL";
    sluice_shape_row(&shape->total, width, json);
    for (size_t i = 0; i < shape->count; i++) {
        sluice_shape_row(&shape->rows[i], width, json);
        myfree(shape->rows[i].domain);
    }
    myfree(shape->rows);
}

/* sluice_queue_json - one message as a line of JSON */
static void sluice_queue_json(const char *queue, const char *qid,
                              const QFILE_INFO *info, const DSN_LOG *dlog)
{
    json_t *obj = json_object();
    json_t *rcpts = json_array();
    const char *reason;
    char *text;

    json_object_set_new(obj, "queue_name", json_string(queue));
    json_object_set_new(obj, "queue_id", json_string(qid));
    json_object_set_new(obj, "arrival_time",
                        json_integer((json_int_t) info->arrival.tv_sec));
    json_object_set_new(obj, "message_size",
                        json_integer((json_int_t) info->content_size));
    json_object_set_new(obj, "forced_expire", json_false());
    json_object_set_new(obj, "sender", sluice_queue_json_str(info->sender));
    for (size_t i = 0; i < info->rcpt_count; i++) {
        json_t *rcpt;

        if (info->rcpts[i].done)
            continue;
        rcpt = json_object();
        json_object_set_new(rcpt, "address",
                            sluice_queue_json_str(info->rcpts[i].address));
        if ((reason = sluice_queue_reason(dlog, info->rcpts[i].address)) !=
            NULL)
            json_object_set_new(rcpt, "delay_reason",
                                sluice_queue_json_str(reason));
        json_array_append_new(rcpts, rcpt);
    }
    json_object_set_new(obj, "recipients", rcpts);
    if ((text = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII)) != NULL) {
        printf("%s\n", text);
        free(text);
    }
    json_decref(obj);
}

/* sluice_queue_text - one message as mailq shows it */
static void sluice_queue_text(const char *mark, const char *qid,
                              const QFILE_INFO *info, const DSN_LOG *dlog)
{
    int indent = QID_LEN + 1 + 8 + 1 + 19 + 2;
    char when[64];
    time_t arrival = info->arrival.tv_sec;
    const char *reason;

    VSTR *shown = vstr_alloc(100);

    strftime(when, sizeof(when), "%a %b %e %H:%M:%S", localtime(&arrival));
    printf("%s%s %8lld %s  %s\n", qid, mark, info->content_size, when,
           *info->sender ? sluice_queue_printable(shown, info->sender)
                         : "MAILER-DAEMON");
    for (size_t i = 0; i < info->rcpt_count; i++) {
        if (info->rcpts[i].done)
            continue;
        if ((reason = sluice_queue_reason(dlog, info->rcpts[i].address)) !=
            NULL)
            printf("%*s(%s)\n", indent - 6, "",
                   sluice_queue_printable(shown, reason));
        printf("%*s%s\n", indent, "",
               sluice_queue_printable(shown, info->rcpts[i].address));
    }
    printf("\n");
    vstr_free(shown);
}

/* What one listing shows and counts. */
typedef struct SLUICE_QUEUE_SHOW {
    bool json;
    const SLUICE_QUEUE_FILTER *filter;
    SLUICE_SHAPE *shape; /* --by-domain: count, do not list */
    SLUICE_QUEUE_TOTAL total;
} SLUICE_QUEUE_SHOW;

/* sluice_queue_one - read and show one queue file; was it read? */
static bool sluice_queue_one(const char *queue_dir, const char *queue,
                             const char *mark, const char *qid,
                             SLUICE_QUEUE_SHOW *show)
{
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    QFILE_INFO *info = NULL;
    DSN_LOG *dlog;
    bool shown = false;
    int fd;

    mail_queue_path(path, queue_dir, queue, qid);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT) /* ENOENT: delivered meanwhile */
            fprintf(stderr, "sluice: queue: open %s: %s\n", vstr_str(path),
                    strerror(errno));
    } else if ((info = qfile_info_read(fd, why)) == NULL) {
        fprintf(stderr, "sluice: queue: %s: %s\n", vstr_str(path),
                vstr_str(why));
    } else {
        /* The reasons are a help, not the listing: a log that cannot be
           read only loses them. */
        if ((dlog = dsn_log_read(queue_dir, DSN_LOG_DEFER, qid, why)) == NULL)
            fprintf(stderr, "sluice: queue: %s: defer log: %s\n", qid,
                    vstr_str(why));
        shown = true;
        if (!sluice_queue_match(show->filter, info, dlog)) {
            /* read, not shown */
        } else if (show->shape) {
            long long age = (long long) time(NULL) - info->arrival.tv_sec;

            for (size_t i = 0; i < info->rcpt_count; i++)
                if (!info->rcpts[i].done &&
                    sluice_queue_rcpt_match(show->filter,
                                            info->rcpts[i].address, dlog))
                    sluice_shape_add(show->shape, info->rcpts[i].address, age);
        } else {
            if (show->json)
                sluice_queue_json(queue, qid, info, dlog);
            else
                sluice_queue_text(mark, qid, info, dlog);
            show->total.count++;
            show->total.bytes += info->content_size;
        }
        dsn_log_free(dlog);
    }
    if (fd >= 0)
        (void) close(fd);
    qfile_info_free(info);
    vstr_free(path);
    vstr_free(why);
    return shown;
}

/* sluice_queue_dir - main.cf's queue_directory, or NULL after one line */
char *sluice_queue_dir(const char *config_dir)
{
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf = mail_conf_read(config_dir, why);
    char *queue_dir = NULL;

    if (conf == NULL)
        sluice_fail("%s", vstr_str(why));
    else
        queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    mail_conf_free(conf);
    vstr_free(why);
    return queue_dir;
}

#define SLUICE_QUEUE_USAGE                                                     \
    "usage: sluice queue [--json] [--by-domain] "                              \
    "[--sender ADDR] [--recipient ADDR] [--domain DOMAIN] [--reason TEXT]"

/* sluice_queue - `sluice queue [--json] [--by-domain] [filters]` */
int sluice_queue(const char *config_dir, int argc, char **argv)
{
    ARGV *shown[SLUICE_ARRAY_LEN(sluice_queues)];
    SLUICE_QUEUE_FILTER filter = {NULL, NULL, NULL, NULL};
    SLUICE_QUEUE_SHOW show;
    SLUICE_SHAPE shape;
    bool by_domain = false;
    char *queue_dir;

    memset(&show, 0, sizeof(show));
    memset(&shape, 0, sizeof(shape));
    for (int i = 1; i < argc; i++) {
        const char **value = NULL;

        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
            show.json = true;
        else if (strcmp(argv[i], "--by-domain") == 0)
            by_domain = true;
        else if (strcmp(argv[i], "--sender") == 0)
            value = &filter.sender;
        else if (strcmp(argv[i], "--recipient") == 0)
            value = &filter.recipient;
        else if (strcmp(argv[i], "--domain") == 0)
            value = &filter.domain;
        else if (strcmp(argv[i], "--reason") == 0)
            value = &filter.reason;
        else
            return sluice_fail("queue: unknown argument \"%s\" (%s)", argv[i],
                               SLUICE_QUEUE_USAGE);
        if (value) {
            if (i + 1 >= argc)
                return sluice_fail("queue: %s needs a value (%s)", argv[i],
                                   SLUICE_QUEUE_USAGE);
            *value = argv[++i];
        }
    }
    if (filter.sender && strcmp(filter.sender, "<>") == 0)
        filter.sender = "";
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    show.filter = &filter;
    show.shape = by_domain ? &shape : NULL;
    if (!show.json && !by_domain)
        printf("%-*s  --Size-- ----Arrival Time---  -Sender/Recipient-------\n",
               QID_LEN, "-Queue ID-");
    for (size_t q = 0; q < SLUICE_ARRAY_LEN(sluice_queues); q++) {
        ARGV *ids = sluice_queue_ids(queue_dir, sluice_queues[q].name);

        shown[q] = argv_alloc(ids->argc + 1);
        qsort(ids->argv, ids->argc, sizeof(char *), sluice_queue_cmp);
        for (size_t i = 0; i < ids->argc; i++) {
            /* qmgr moves files while we read: one that went from incoming/
               to active/ between two directory reads is shown once. */
            bool seen = false;

            for (size_t p = 0; p < q && !seen; p++)
                seen = bsearch(&ids->argv[i], shown[p]->argv, shown[p]->argc,
                               sizeof(char *), sluice_queue_cmp) != NULL;
            if (!seen &&
                sluice_queue_one(queue_dir, sluice_queues[q].name,
                                 sluice_queues[q].mark, ids->argv[i], &show))
                argv_add(shown[q], ids->argv[i]);
        }
        argv_free(ids);
    }
    for (size_t q = 0; q < SLUICE_ARRAY_LEN(sluice_queues); q++)
        argv_free(shown[q]);
    if (by_domain) {
        sluice_shape_print(&shape, show.json);
    } else if (!show.json) {
        if (show.total.count == 0)
            printf("Mail queue is empty\n");
        else
            printf("-- %lld Kbytes in %ld Request%s.\n",
                   (show.total.bytes + 1023) / 1024, show.total.count,
                   show.total.count == 1 ? "" : "s");
    }
    myfree(queue_dir);
    return 0;
}

/* sluice_cat_content - the content only: headers (-h), body (-b), or
   both; 0, or -1 with the reason in why */
static int sluice_cat_content(int fd, bool headers, bool body, VSTR *why)
{
    QFILE_READER *reader = qfile_reader_alloc(fd);
    QFILE_REC rec;
    bool in_header = true;
    bool at_line_start = true;
    int status;

    while ((status = qfile_read_rec(reader, &rec, why)) > 0) {
        size_t start = 0;

        if (rec.type != QFILE_REC_CONT)
            continue;
        for (size_t i = 0; i < rec.len && in_header; i++) {
            if (rec.data[i] == '\n' && at_line_start) {
                /* The empty line ends the headers; it belongs to neither. */
                if (headers)
                    fwrite(rec.data + start, 1, i - start, stdout);
                in_header = false;
                start = i + 1;
                if (headers && body)
                    fputc('\n', stdout);
                break;
            }
            at_line_start = rec.data[i] == '\n';
        }
        if (in_header ? headers : body)
            fwrite(rec.data + start, 1, rec.len - start, stdout);
    }
    fflush(stdout);
    qfile_reader_free(reader);
    return status;
}

/* sluice_cat - `sluice cat [-h] [-b] QID`: one queue file, readable */
int sluice_cat(const char *config_dir, int argc, char **argv)
{
    VSTR *path;
    VSTR *why;
    char *queue_dir;
    const char *qid = NULL;
    bool headers = false;
    bool body = false;
    int status = 1;
    int fd = -1;

    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] && qid == NULL) {
            for (const char *cp = argv[i] + 1; *cp; cp++) {
                if (*cp == 'h')
                    headers = true;
                else if (*cp == 'b')
                    body = true;
                else
                    return sluice_fail("usage: sluice cat [-h] [-b] QID");
            }
        } else if (qid == NULL) {
            qid = argv[i];
        } else {
            return sluice_fail("usage: sluice cat [-h] [-b] QID");
        }
    }
    if (qid == NULL)
        return sluice_fail("usage: sluice cat [-h] [-b] QID");
    if (!qid_valid(qid))
        return sluice_fail("cat: \"%s\" is not a queue ID", qid);
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    path = vstr_alloc(100);
    why = vstr_alloc(100);
    /* It may move from one queue to the next while we look: twice. */
    for (int pass = 0; pass < 2 && fd < 0; pass++)
        for (size_t q = 0; q < SLUICE_ARRAY_LEN(sluice_queues) && fd < 0; q++) {
            mail_queue_path(path, queue_dir, sluice_queues[q].name, qid);
            fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC);
        }
    if (fd < 0) {
        sluice_fail("cat: %s: no such message in the queue", qid);
    } else {
        fflush(stdout);
        if (headers || body) {
            if (sluice_cat_content(fd, headers, body, why) == 0)
                status = 0;
            else
                sluice_fail("cat: %s: the queue file is corrupt: %s",
                            vstr_str(path), vstr_str(why));
        } else if (qfile_dump(fd, stdout) == 0) {
            status = 0;
        } else {
            sluice_fail("cat: %s: the queue file is corrupt", vstr_str(path));
        }
        (void) close(fd);
    }
    myfree(queue_dir);
    vstr_free(path);
    vstr_free(why);
    return status;
}

/* sluice_flush_one - make one deferred message due now: to incoming/;
   0 (also when it is due or in delivery already), 1 after one line */
static int sluice_flush_one(const char *queue_dir, const char *qid, bool *moved)
{
    for (int tries = 0; tries < 50; tries++) {
        const char *queue = NULL;

        /* It may be between two places when we look: a few looks. */
        for (int pass = 0; pass < 4 && queue == NULL; pass++)
            queue = sluice_admin_locate(queue_dir, qid);
        if (queue == NULL)
            return sluice_fail("%s: no such message", qid);
        if (strcmp(queue, MAIL_QUEUE_DEFERRED) != 0)
            return 0; /* due, in delivery, held, corrupt */
        if (mail_queue_rename(queue_dir, MAIL_QUEUE_DEFERRED,
                              MAIL_QUEUE_INCOMING, qid) == 0) {
            *moved = true;
            return 0;
        }
        if (errno != ENOENT)
            return sluice_fail("flush: %s: %s", qid, strerror(errno));
        /* qmgr took it meanwhile: look again */
    }
    return sluice_fail("%s: the message keeps moving; try again", qid);
}

/* sluice_flush - `sluice flush [QID... | ALL]`: deferred mail is due now */
int sluice_flush(const char *config_dir, int argc, char **argv)
{
    VSTR *path;
    char *queue_dir;
    bool moved = false;
    int status = 0;

    if (argc == 2 && strcmp(argv[1], "ALL") == 0)
        argc = 1; /* the same as no QID */
    for (int i = 1; i < argc; i++)
        if (!qid_valid(argv[i]))
            return sluice_fail("flush: \"%s\" is not a queue ID (usage: "
                               "sluice flush [QID... | ALL])",
                               argv[i]);
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    path = vstr_alloc(100);
    mail_queue_service(path, queue_dir, MAIL_QUEUE_PUBLIC,
                       MAIL_QUEUE_QMGR_SERVICE);
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (sluice_flush_one(queue_dir, argv[i], &moved) != 0)
                status = 1;
        /* A lost wake-up costs only time: qmgr scans incoming/ anyway. */
        if (moved)
            (void) trigger_send(vstr_str(path), TRIGGER_WAKEUP);
    } else if (trigger_send(vstr_str(path), TRIGGER_SCAN_ALL) < 0) {
        status = sluice_fail("flush: cannot reach the queue manager at %s: %s "
                             "(is sluice running?)",
                             vstr_str(path), strerror(errno));
    }
    myfree(queue_dir);
    vstr_free(path);
    return status;
}
