/*
 * sluice_queue - `sluice queue [--json]`, `sluice cat QID`, `sluice flush`
 *
 * queue lists every message in incoming/, active/, deferred/ and hold/ as
 * mailq does: queue ID (with '*' when active, '!' when on hold), size,
 * arrival time, sender, then each recipient not yet done, after the reason
 * of its last temporary failure (the latest "delayed" record of the
 * message's defer log, global/dsn_log.h) when it has one. With --json it
 * prints one JSON object per message per line with postqueue -j's fields.
 * cat prints one queue file in readable form. Both only read the queue: a
 * file that cannot be parsed is reported, never touched. flush asks qmgr
 * (public/qmgr) to treat every deferred message as due now.
 */
#include "sys_defs.h"

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
#include "trigger.h"
#include "vstr.h"

/* The queues mailq shows, and the mark after an ID in each. */
static const struct {
    const char *name;
    const char *mark;
} sluice_queues[] = {
    {MAIL_QUEUE_INCOMING, " "},
    {MAIL_QUEUE_ACTIVE, "*"},
    {MAIL_QUEUE_DEFERRED, " "},
    {MAIL_QUEUE_HOLD, "!"},
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
static ARGV *sluice_queue_ids(const char *queue_dir, const char *queue)
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

    if (dlog == NULL
        || (rec = dsn_log_latest(dlog, DSN_ACTION_DELAYED, address)) == NULL)
        return NULL;
    return rec->reason;
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
    json_object_set_new(obj, "sender", json_string(info->sender));
    for (size_t i = 0; i < info->rcpt_count; i++) {
        json_t *rcpt;

        if (info->rcpts[i].done)
            continue;
        rcpt = json_object();
        json_object_set_new(rcpt, "address", json_string(info->rcpts[i].address));
        if ((reason = sluice_queue_reason(dlog, info->rcpts[i].address)) != NULL)
            json_object_set_new(rcpt, "delay_reason", json_string(reason));
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

    strftime(when, sizeof(when), "%a %b %e %H:%M:%S", localtime(&arrival));
    printf("%s%s %8lld %s  %s\n", qid, mark, info->content_size, when,
           *info->sender ? info->sender : "MAILER-DAEMON");
    for (size_t i = 0; i < info->rcpt_count; i++) {
        if (info->rcpts[i].done)
            continue;
        if ((reason = sluice_queue_reason(dlog, info->rcpts[i].address)) != NULL)
            printf("%*s(%s)\n", indent - 6, "", reason);
        printf("%*s%s\n", indent, "", info->rcpts[i].address);
    }
    printf("\n");
}

/* sluice_queue_one - read and show one queue file; was it shown? */
static bool sluice_queue_one(const char *queue_dir, const char *queue,
                             const char *mark, const char *qid, bool json,
                             SLUICE_QUEUE_TOTAL *total)
{
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    QFILE_INFO *info = NULL;
    DSN_LOG *dlog;
    bool shown = false;
    int fd;

    mail_queue_path(path, queue_dir, queue, qid);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT)            /* ENOENT: delivered meanwhile */
            fprintf(stderr, "sluice: queue: open %s: %s\n", vstr_str(path),
                    strerror(errno));
    } else if ((info = qfile_info_read(fd, why)) == NULL) {
        fprintf(stderr, "sluice: queue: %s: %s\n", vstr_str(path), vstr_str(why));
    } else {
        /* The reasons are a help, not the listing: a log that cannot be
           read only loses them. */
        if ((dlog = dsn_log_read(queue_dir, DSN_LOG_DEFER, qid, why)) == NULL)
            fprintf(stderr, "sluice: queue: %s: defer log: %s\n", qid,
                    vstr_str(why));
        if (json)
            sluice_queue_json(queue, qid, info, dlog);
        else
            sluice_queue_text(mark, qid, info, dlog);
        dsn_log_free(dlog);
        shown = true;
        total->count++;
        total->bytes += info->content_size;
    }
    if (fd >= 0)
        (void) close(fd);
    qfile_info_free(info);
    vstr_free(path);
    vstr_free(why);
    return shown;
}

/* sluice_queue_conf - main.cf's queue_directory, or NULL after one line */
static char *sluice_queue_dir(const char *config_dir)
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

/* sluice_queue - `sluice queue [--json]` */
int sluice_queue(const char *config_dir, int argc, char **argv)
{
    SLUICE_QUEUE_TOTAL total = {0, 0};
    ARGV *shown[SLUICE_ARRAY_LEN(sluice_queues)];
    bool json = false;
    char *queue_dir;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
            json = true;
        else
            return sluice_fail("queue: unknown argument \"%s\" (usage: sluice "
                               "queue [--json])", argv[i]);
    }
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    if (!json)
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
            if (!seen && sluice_queue_one(queue_dir, sluice_queues[q].name,
                                          sluice_queues[q].mark, ids->argv[i],
                                          json, &total))
                argv_add(shown[q], ids->argv[i]);
        }
        argv_free(ids);
    }
    for (size_t q = 0; q < SLUICE_ARRAY_LEN(sluice_queues); q++)
        argv_free(shown[q]);
    if (!json) {
        if (total.count == 0)
            printf("Mail queue is empty\n");
        else
            printf("-- %lld Kbytes in %ld Request%s.\n",
                   (total.bytes + 1023) / 1024, total.count,
                   total.count == 1 ? "" : "s");
    }
    myfree(queue_dir);
    return 0;
}

/* sluice_cat - `sluice cat QID`: one queue file, readable */
int sluice_cat(const char *config_dir, int argc, char **argv)
{
    VSTR *path;
    char *queue_dir;
    int status = 1;
    int fd = -1;

    if (argc != 2)
        return sluice_fail("usage: sluice cat QID");
    if (!qid_valid(argv[1]))
        return sluice_fail("cat: \"%s\" is not a queue ID", argv[1]);
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    path = vstr_alloc(100);
    for (size_t q = 0; q < SLUICE_ARRAY_LEN(sluice_queues) && fd < 0; q++) {
        mail_queue_path(path, queue_dir, sluice_queues[q].name, argv[1]);
        fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        sluice_fail("cat: %s: no such message in the queue", argv[1]);
    } else {
        fflush(stdout);
        if (qfile_dump(fd, stdout) == 0)
            status = 0;
        else
            sluice_fail("cat: %s: the queue file is corrupt", vstr_str(path));
        (void) close(fd);
    }
    myfree(queue_dir);
    vstr_free(path);
    return status;
}

/* sluice_flush - `sluice flush`: every deferred message is due now */
int sluice_flush(const char *config_dir, int argc, char **argv)
{
    VSTR *path;
    char *queue_dir;
    int status = 0;

    if (argc > 1)
        return sluice_fail("flush: unexpected argument \"%s\" (flushing "
                           "single messages is not built yet; `sluice flush` "
                           "flushes all)", argv[1]);
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    path = vstr_alloc(100);
    vstr_sprintf(path, "%s/%s/qmgr", queue_dir, MAIL_QUEUE_PUBLIC);
    if (trigger_send(vstr_str(path), TRIGGER_SCAN_ALL) < 0)
        status = sluice_fail("flush: cannot reach the queue manager at %s: %s "
                             "(is sluice running?)", vstr_str(path),
                             strerror(errno));
    myfree(queue_dir);
    vstr_free(path);
    return status;
}
