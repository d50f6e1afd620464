/*
 * sluice_queue - `sluice queue`, `sluice cat QID`, `sluice flush [QID...]`
 *
 * queue lists every message in maildrop/, incoming/, active/, deferred/
 * and hold/ as mailq does (global/queue_list.h says what it shows). With
 * --json it prints one JSON object per message per line with postqueue
 * -j's fields (a value that is not UTF-8 has its 8-bit bytes as \xHH).
 * Filters, combinable: --sender ADDR (the envelope sender, "<>" for the
 * null sender), and per pending recipient --recipient ADDR, --domain
 * DOMAIN and --reason TEXT (a substring of its delay reason): a message is
 * shown when one of its pending recipients meets all three. --by-domain
 * prints qshape's table instead: one row per recipient domain, counting
 * pending recipients, by the age of their message in minutes (buckets
 * 5 10 20 ... 1280 and 1280+; "5" is under 5 minutes), biggest total
 * first after a TOTAL row. A caller who may not read the queue
 * directories (an ordinary user) gets the same listing from the showq
 * service (global/showq_proto.h); when showq cannot be reached it says so
 * and fails, never "Mail queue is empty".
 *
 * cat prints one queue file in readable form (-h the headers only, -b the
 * body only). Both only read the queue: a file that cannot be parsed is
 * reported, never touched. flush (or flush ALL) asks qmgr (public/qmgr) to
 * treat every deferred message as due now; flush QID... moves those messages
 * from deferred/ to incoming/ (due at once) and wakes qmgr.
 */
#include "sys_defs.h"

#include <fcntl.h>

#include "argv.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qid.h"
#include "queue_list.h"
#include "showq_proto.h"
#include "sluice.h"
#include "trigger.h"
#include "vstr.h"

/* The queues a message may be in, for cat. */
static const char *const sluice_queues[] = {
    MAIL_QUEUE_MAILDROP, MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE,
    MAIL_QUEUE_DEFERRED, MAIL_QUEUE_HOLD,
};

/* sluice_queue_ids - every queue ID of one queue, hashed or not */
ARGV *sluice_queue_ids(const char *queue_dir, const char *queue)
{
    return queue_list_ids(queue_dir, queue);
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

/* sluice_queue_warn - a queue file that cannot be listed */
static void sluice_queue_warn(const char *text, void *ctx)
{
    (void) ctx;
    fprintf(stderr, "sluice: queue: %s\n", text);
}

/* sluice_queue_readable - may the caller read every queue directory? (a
   missing one lists as empty, as it always has) */
static bool sluice_queue_readable(const char *queue_dir)
{
    VSTR *path = vstr_alloc(100);
    bool readable = true;

    for (size_t q = 0; q < SLUICE_ARRAY_LEN(sluice_queues) && readable; q++) {
        vstr_sprintf(path, "%s/%s", queue_dir, sluice_queues[q]);
        if (access(vstr_str(path), R_OK | X_OK) < 0 && errno != ENOENT)
            readable = false;
    }
    vstr_free(path);
    return readable;
}

/* sluice_queue_showq - the listing from the showq service; 0, or 1 after
   one line */
static int sluice_queue_showq(const char *queue_dir,
                              const QUEUE_LIST_OPTS *opts)
{
    SHOWQ_REQUEST req = {
        .json = opts->json,
        .by_domain = opts->by_domain,
        .sender = opts->sender,
        .recipient = opts->recipient,
        .domain = opts->domain,
        .reason = opts->reason,
    };
    VSTR *why = vstr_alloc(100);
    int fd;
    int status = 0;

    fflush(stdout);
    if ((fd = showq_connect(queue_dir, why)) < 0)
        status = sluice_fail(
            "queue: you may not read the queue and %s (%s)", vstr_str(why),
            errno == EACCES ? "mailq, installed setgid to setgid_group, "
                              "may reach it"
                            : "is sluice running?");
    else if (showq_list(fd, &req, stdout, why) < 0)
        status = sluice_fail("queue: %s", vstr_str(why));
    vstr_free(why);
    return status;
}

/* sluice_queue - `sluice queue [--json] [--by-domain] [filters]` */
int sluice_queue(const char *config_dir, int argc, char **argv)
{
    QUEUE_LIST_OPTS opts = {.warn = sluice_queue_warn};
    QUEUE_LIST *list;
    VSTR *out;
    char *queue_dir;
    int status = 0;

    for (int i = 1; i < argc; i++) {
        const char **value = NULL;

        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
            opts.json = true;
        else if (strcmp(argv[i], "--by-domain") == 0)
            opts.by_domain = true;
        else if (strcmp(argv[i], "--sender") == 0)
            value = &opts.sender;
        else if (strcmp(argv[i], "--recipient") == 0)
            value = &opts.recipient;
        else if (strcmp(argv[i], "--domain") == 0)
            value = &opts.domain;
        else if (strcmp(argv[i], "--reason") == 0)
            value = &opts.reason;
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
    if (opts.sender && strcmp(opts.sender, "<>") == 0)
        opts.sender = "";
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    if (!sluice_queue_readable(queue_dir)) {
        status = sluice_queue_showq(queue_dir, &opts);
        myfree(queue_dir);
        return status;
    }
    list = queue_list_open(queue_dir, &opts);
    out = vstr_alloc(4096);
    queue_list_header(list, out);
    do {
        fputs(vstr_str(out), stdout);
        vstr_reset(out);
    } while (queue_list_next(list, out));
    queue_list_footer(list, out);
    fputs(vstr_str(out), stdout);
    vstr_free(out);
    queue_list_free(list);
    myfree(queue_dir);
    return status;
}

/* sluice_cat_content - the content only: headers (-h), body (-b), or
   both, to out; 0, or -1 with the reason in why */
static int sluice_cat_content(int fd, bool headers, bool body, FILE *out,
                              VSTR *why)
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
                    fwrite(rec.data + start, 1, i - start, out);
                in_header = false;
                start = i + 1;
                if (headers && body)
                    fputc('\n', out);
                break;
            }
            at_line_start = rec.data[i] == '\n';
        }
        if (in_header ? headers : body)
            fwrite(rec.data + start, 1, rec.len - start, out);
    }
    fflush(out);
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
    int read_status;
    int fd = -1;
    char *text = NULL;
    size_t text_len = 0;
    FILE *out;

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
            mail_queue_path(path, queue_dir, sluice_queues[q], qid);
            fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC);
        }
    if (fd < 0) {
        sluice_fail("cat: %s: no such message in the queue", qid);
    } else if ((out = open_memstream(&text, &text_len)) == NULL) {
        sluice_fail("cat: %s", strerror(errno));
        (void) close(fd);
    } else {
        /* Shown only once known to be this message's: a file that left
           the queue meanwhile may hold another by now (qfile_reuse.h). */
        if (headers || body)
            read_status = sluice_cat_content(fd, headers, body, out, why);
        else
            read_status = qfile_dump(fd, out) == 0 ? 0 : -1;
        if (fclose(out) != 0) {
            sluice_fail("cat: %s", strerror(errno));
        } else if (!mail_queue_holds(queue_dir, qid, fd)) {
            sluice_fail("cat: %s: no such message in the queue (it left "
                        "while it was read)",
                        qid);
        } else {
            fflush(stdout);
            fwrite(text, 1, text_len, stdout);
            if (fflush(stdout) != 0 || ferror(stdout))
                sluice_fail("cat: write to the output: %s", strerror(errno));
            else if (read_status == 0)
                status = 0;
            else if (headers || body)
                sluice_fail("cat: %s: the queue file is corrupt: %s",
                            vstr_str(path), vstr_str(why));
            else
                sluice_fail("cat: %s: the queue file is corrupt",
                            vstr_str(path));
        }
        free(text);
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
