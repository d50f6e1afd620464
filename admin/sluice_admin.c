/*
 * sluice_admin - `sluice hold|release|delete|requeue QID... | ALL | -`
 *
 * The queue tools of postsuper -h, -H, -d and -r:
 *
 *   hold     incoming/ or deferred/ -> hold/: qmgr never delivers it
 *   release  hold/ -> incoming/: due at once (qmgr is woken)
 *   delete   the queue file and its defer and bounce logs go; no DSN
 *   requeue  deferred/ or hold/ -> incoming/: due at once. Unlike
 *            postsuper -r it does not run the message through cleanup
 *            again (no new rewriting or checks).
 *
 * QIDs come from the command line, from stdin with "-" (white space
 * separated), or "ALL" (every message in the queues the command applies
 * to). Each count is reported on stderr the way postsuper does ("sluice:
 * Deleted: 3 messages"); an unknown QID is reported ("QID: no such
 * message") and the command exits 1 at the end, after doing the others.
 *
 * Safe while mail flows: files move only by rename(2), and qmgr may be
 * renaming the same file at the same moment (incoming/ or deferred/ ->
 * active/, active/ -> deferred/). Whoever loses gets ENOENT; we look for
 * the message again, so it ends up in exactly one place. A message in
 * active/ belongs to qmgr (it may be in delivery): we ask qmgr over
 * private/qmgr-admin (global/qmgr_admin_proto.h) and qmgr acts at a safe
 * point. Only when master is not running at all does this command move
 * or remove a file in active/ itself. A qmgr that speaks another version
 * of that protocol (its greeting says which) is an error naming both
 * versions, for each message in active/: nothing there is touched.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "argv.h"
#include "attr.h"
#include "dsn_log.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "qid.h"
#include "qmgr_admin_proto.h"
#include "sluice.h"
#include "sock.h"
#include "trigger.h"
#include "vstr.h"

#define SLUICE_ADMIN_PASSES 4 /* looks before "no such message" */
#define SLUICE_ADMIN_TRIES 50 /* moves that may lose a race */
#define SLUICE_ADMIN_WAIT_MS 10000 /* for qmgr to answer or come up */

typedef enum SLUICE_ADMIN_OP {
    SLUICE_ADMIN_HOLD,
    SLUICE_ADMIN_RELEASE,
    SLUICE_ADMIN_DELETE,
    SLUICE_ADMIN_REQUEUE,
} SLUICE_ADMIN_OP;

/* One command: its name, what it does, the queues ALL takes. */
static const struct {
    const char *name;
    SLUICE_ADMIN_OP op;
    const char *done; /* postsuper's words */
    const char *all[5];
} sluice_admin_cmds[] = {
    {"hold",
     SLUICE_ADMIN_HOLD,
     "Placed on hold",
     {MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE, MAIL_QUEUE_DEFERRED, NULL}},
    {"release",
     SLUICE_ADMIN_RELEASE,
     "Released from hold",
     {MAIL_QUEUE_HOLD, NULL}},
    {"delete",
     SLUICE_ADMIN_DELETE,
     "Deleted",
     {MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE, MAIL_QUEUE_DEFERRED,
      MAIL_QUEUE_HOLD, NULL}},
    {"requeue",
     SLUICE_ADMIN_REQUEUE,
     "Requeued",
     {MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE, MAIL_QUEUE_DEFERRED,
      MAIL_QUEUE_HOLD, NULL}},
};

/* Where a message may be, in the order it travels. */
static const char *const sluice_admin_places[] = {
    MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE,  MAIL_QUEUE_DEFERRED,
    MAIL_QUEUE_HOLD,     MAIL_QUEUE_CORRUPT,
};

typedef struct SLUICE_ADMIN {
    const char *queue_dir;
    ATTR_STREAM *qmgr; /* connection to private/qmgr-admin */
    bool qmgr_down; /* master is not running: nobody owns active/ */
    bool qmgr_lost; /* master runs but qmgr did not answer: give up */
    char *qmgr_error; /* why qmgr cannot be asked (NULL: unknown) */
    bool wake; /* something went to incoming/ */
} SLUICE_ADMIN;

/* The outcome for one message. */
#define SLUICE_ADMIN_DONE 0 /* counted */
#define SLUICE_ADMIN_SKIP 1 /* found, nothing to do */
#define SLUICE_ADMIN_NONE 2 /* no such message */
#define SLUICE_ADMIN_FAIL 3 /* reported already */

/* sluice_admin_locate - the queue qid is in now, or NULL */
const char *sluice_admin_locate(const char *queue_dir, const char *qid)
{
    VSTR *path = vstr_alloc(100);
    const char *found = NULL;
    struct stat st;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(sluice_admin_places) && !found;
         i++) {
        mail_queue_path(path, queue_dir, sluice_admin_places[i], qid);
        if (lstat(vstr_str(path), &st) == 0 && S_ISREG(st.st_mode))
            found = sluice_admin_places[i];
    }
    vstr_free(path);
    return found;
}

/* sluice_admin_master_down - is master (and so qmgr) not running? Decided
   by the lock on pid/master.pid, as `sluice status` does. */
bool sluice_admin_master_down(const char *queue_dir)
{
    VSTR *path = vstr_alloc(100);
    bool down = false;
    int fd;

    vstr_sprintf(path, "%s/%s/master.pid", queue_dir, MAIL_QUEUE_PID);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        down = errno == ENOENT;
    } else {
        down = flock(fd, LOCK_SH | LOCK_NB) == 0;
        (void) close(fd);
    }
    vstr_free(path);
    return down;
}

/* sluice_admin_greet - exchange greetings with qmgr on fd; on a failure
   (another protocol version, say) one line, and qmgr is not asked again */
static void sluice_admin_greet(SLUICE_ADMIN *admin, int fd, const char *qid)
{
    ATTR_STREAM *stream =
        attr_stream_open(fd, QMGR_ADMIN_LIST_MAX, SLUICE_ADMIN_WAIT_MS);
    ATTR_LIST *list = qmgr_admin_hello_list();
    VSTR *why = vstr_alloc(100);
    int ret = attr_stream_write(stream, list, why);

    list = attr_list_free(list);
    if (ret == 0 && (ret = attr_stream_read(stream, &list, why)) == 0)
        ret = qmgr_admin_hello_take(list, why);
    if (ret < 0) {
        admin->qmgr_lost = true;
        admin->qmgr_error = mystrdup(vstr_str(why));
        sluice_fail("%s: queue manager: %s", qid, admin->qmgr_error);
        stream = attr_stream_close(stream);
    }
    admin->qmgr = stream;
    attr_list_free(list);
    vstr_free(why);
}

/* sluice_admin_connect - the connection to qmgr, made when first needed;
   false when master is down (admin->qmgr_down) or after one line */
static bool sluice_admin_connect(SLUICE_ADMIN *admin, const char *qid)
{
    struct timespec pause = {0, 100 * 1000 * 1000};
    VSTR *path;
    int connect_errno = 0;
    int fd = -1;

    if (admin->qmgr || admin->qmgr_down)
        return admin->qmgr != NULL;
    if (admin->qmgr_lost) {
        if (admin->qmgr_error)
            sluice_fail("%s: queue manager: %s", qid, admin->qmgr_error);
        else
            sluice_fail("%s: cannot reach the queue manager", qid);
        return false;
    }
    path = vstr_alloc(100);
    mail_queue_service(path, admin->queue_dir, MAIL_QUEUE_PRIVATE,
                       QMGR_ADMIN_SERVICE);
    for (int waited = 0; waited <= SLUICE_ADMIN_WAIT_MS; waited += 100) {
        if ((fd = sock_unix_connect(vstr_str(path))) >= 0)
            break;
        connect_errno = errno;
        if (sluice_admin_master_down(admin->queue_dir)) {
            admin->qmgr_down = true;
            break;
        }
        /* master runs: qmgr is starting, or restarting */
        nanosleep(&pause, NULL);
    }
    if (fd >= 0)
        sluice_admin_greet(admin, fd, qid);
    else if (!admin->qmgr_down) {
        /* Not once more for every other message. */
        admin->qmgr_lost = true;
        sluice_fail("%s: cannot reach the queue manager at %s: %s", qid,
                    vstr_str(path), strerror(connect_errno));
    }
    vstr_free(path);
    return admin->qmgr != NULL;
}

/* sluice_admin_ask - one request to qmgr; the reply status, or -1 after
   one line (the connection is dropped: the next request reconnects) */
static long long sluice_admin_ask(SLUICE_ADMIN *admin, const char *request,
                                  const char *qid)
{
    QMGR_ADMIN_REQUEST req = {.request = request, .queue_id = qid};
    ATTR_LIST *list = qmgr_admin_request_list(&req);
    ATTR_LIST *reply = NULL;
    VSTR *why = vstr_alloc(100);
    QMGR_ADMIN_REPLY answer;
    long long status = -1;

    if (attr_stream_write(admin->qmgr, list, why) < 0 ||
        attr_stream_read(admin->qmgr, &reply, why) < 0 ||
        qmgr_admin_reply_take(reply, &answer, why) < 0) {
        sluice_fail("%s: queue manager: %s", qid, vstr_str(why));
        admin->qmgr = attr_stream_close(admin->qmgr);
    } else if (answer.status == QMGR_ADMIN_STAT_FAIL) {
        sluice_fail("%s: queue manager: %s", qid,
                    answer.reason ? answer.reason : "failed");
    } else {
        status = answer.status;
    }
    attr_list_free(list);
    attr_list_free(reply);
    vstr_free(why);
    return status;
}

/* sluice_admin_remove - delete qid from queue and its logs; 0, or -1
   with errno (ENOENT: it moved) */
static int sluice_admin_remove(const char *queue_dir, const char *queue,
                               const char *qid)
{
    VSTR *path = mail_queue_path(vstr_alloc(100), queue_dir, queue, qid);
    int ret = unlink(vstr_str(path));
    int saved_errno = errno;

    vstr_free(path);
    if (ret == 0) {
        (void) dsn_log_remove(queue_dir, DSN_LOG_DEFER, qid);
        (void) dsn_log_remove(queue_dir, DSN_LOG_BOUNCE, qid);
    }
    errno = saved_errno;
    return ret;
}

/* sluice_admin_active - a message in active/: ask qmgr, or, when master
   is down, act as qmgr would. SLUICE_ADMIN_DONE, _FAIL, or -1: look again */
static int sluice_admin_active(SLUICE_ADMIN *admin, SLUICE_ADMIN_OP op,
                               const char *qid)
{
    const char *request;
    long long status;
    int ret = 0;

    if (op == SLUICE_ADMIN_RELEASE)
        return SLUICE_ADMIN_SKIP;
    if (!sluice_admin_connect(admin, qid) && !admin->qmgr_down)
        return SLUICE_ADMIN_FAIL;
    if (admin->qmgr_down) {
        if (op == SLUICE_ADMIN_DELETE)
            ret = sluice_admin_remove(admin->queue_dir, MAIL_QUEUE_ACTIVE, qid);
        else
            ret = mail_queue_move(admin->queue_dir, MAIL_QUEUE_ACTIVE,
                                  op == SLUICE_ADMIN_HOLD ? MAIL_QUEUE_HOLD
                                                          : MAIL_QUEUE_INCOMING,
                                  qid);
        if (ret == 0)
            return SLUICE_ADMIN_DONE;
        if (errno == ENOENT)
            return -1;
        sluice_fail("%s: %s: %s", qid, MAIL_QUEUE_ACTIVE, strerror(errno));
        return SLUICE_ADMIN_FAIL;
    }
    request = op == SLUICE_ADMIN_HOLD     ? QMGR_ADMIN_REQ_HOLD
              : op == SLUICE_ADMIN_DELETE ? QMGR_ADMIN_REQ_DELETE
                                          : QMGR_ADMIN_REQ_REQUEUE;
    if ((status = sluice_admin_ask(admin, request, qid)) < 0)
        return SLUICE_ADMIN_FAIL;
    return status == QMGR_ADMIN_STAT_OK ? SLUICE_ADMIN_DONE : -1;
}

/* sluice_admin_apply - op on qid where it is now; an outcome, or -1:
   it moved meanwhile, look again */
static int sluice_admin_apply(SLUICE_ADMIN *admin, SLUICE_ADMIN_OP op,
                              const char *queue, const char *qid)
{
    const char *to = NULL;
    int ret;

    if (strcmp(queue, MAIL_QUEUE_ACTIVE) == 0)
        return sluice_admin_active(admin, op, qid);
    switch (op) {
    case SLUICE_ADMIN_HOLD:
        if (strcmp(queue, MAIL_QUEUE_INCOMING) == 0 ||
            strcmp(queue, MAIL_QUEUE_DEFERRED) == 0)
            to = MAIL_QUEUE_HOLD;
        break;
    case SLUICE_ADMIN_RELEASE:
        if (strcmp(queue, MAIL_QUEUE_HOLD) == 0)
            to = MAIL_QUEUE_INCOMING;
        break;
    case SLUICE_ADMIN_REQUEUE:
        if (strcmp(queue, MAIL_QUEUE_INCOMING) == 0)
            return SLUICE_ADMIN_DONE; /* due already */
        if (strcmp(queue, MAIL_QUEUE_DEFERRED) == 0 ||
            strcmp(queue, MAIL_QUEUE_HOLD) == 0)
            to = MAIL_QUEUE_INCOMING;
        break;
    case SLUICE_ADMIN_DELETE:
        if (sluice_admin_remove(admin->queue_dir, queue, qid) == 0)
            return SLUICE_ADMIN_DONE;
        if (errno == ENOENT)
            return -1;
        sluice_fail("%s: remove from %s: %s", qid, queue, strerror(errno));
        return SLUICE_ADMIN_FAIL;
    }
    if (to == NULL)
        return SLUICE_ADMIN_SKIP;
    /* Durable: a crash must not undo a hold or lose a release. */
    if ((ret = mail_queue_move(admin->queue_dir, queue, to, qid)) == 0) {
        if (strcmp(to, MAIL_QUEUE_INCOMING) == 0)
            admin->wake = true;
        return SLUICE_ADMIN_DONE;
    }
    if (errno == ENOENT)
        return -1;
    sluice_fail("%s: move from %s to %s: %s", qid, queue, to, strerror(errno));
    return SLUICE_ADMIN_FAIL;
}

/* sluice_admin_one - op on one message, looking again while it moves */
static int sluice_admin_one(SLUICE_ADMIN *admin, SLUICE_ADMIN_OP op,
                            const char *qid)
{
    struct timespec pause = {0, 20 * 1000 * 1000};
    int misses = 0;

    for (int tries = 0; tries < SLUICE_ADMIN_TRIES; tries++) {
        const char *queue = sluice_admin_locate(admin->queue_dir, qid);
        int ret;

        /* A file between two of our looks may be missed once; a message
           that is nowhere several times running is gone. */
        if (queue == NULL) {
            if (++misses >= SLUICE_ADMIN_PASSES)
                return SLUICE_ADMIN_NONE;
            nanosleep(&pause, NULL); /* let a move in flight land */
            continue;
        }
        if (strcmp(queue, MAIL_QUEUE_CORRUPT) == 0 && op != SLUICE_ADMIN_DELETE)
            return SLUICE_ADMIN_SKIP;
        if ((ret = sluice_admin_apply(admin, op, queue, qid)) >= 0)
            return ret;
        misses = 0;
        nanosleep(&pause, NULL);
    }
    sluice_fail("%s: the message keeps moving; try again", qid);
    return SLUICE_ADMIN_FAIL;
}

/* sluice_admin_all - every queue ID of the queues ALL means */
static void sluice_admin_all(const char *queue_dir, const char *const *queues,
                             ARGV *ids)
{
    for (size_t q = 0; queues[q]; q++) {
        ARGV *some = sluice_queue_ids(queue_dir, queues[q]);

        for (size_t i = 0; i < some->argc; i++)
            argv_add(ids, some->argv[i]);
        argv_free(some);
    }
}

/* sluice_admin_stdin - queue IDs from stdin, white space separated */
static void sluice_admin_stdin(ARGV *ids)
{
    VSTR *word = vstr_alloc(32);
    int ch;

    do {
        ch = getchar();
        if (ch == EOF || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            if (vstr_len(word) > 0)
                argv_add(ids, vstr_str(word));
            vstr_reset(word);
        } else {
            vstr_addch(word, ch);
        }
    } while (ch != EOF);
    vstr_free(word);
}

/* sluice_admin_cmp - qsort: queue IDs */
static int sluice_admin_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* sluice_admin - `sluice hold|release|delete|requeue QID... | ALL | -` */
int sluice_admin(const char *config_dir, int argc, char **argv)
{
    SLUICE_ADMIN admin;
    ARGV *all;
    size_t cmd = SLUICE_ARRAY_LEN(sluice_admin_cmds);
    ARGV *ids;
    VSTR *path;
    char *queue_dir;
    long count = 0;
    int status = 0;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(sluice_admin_cmds); i++)
        if (strcmp(argv[0], sluice_admin_cmds[i].name) == 0)
            cmd = i;
    if (cmd == SLUICE_ARRAY_LEN(sluice_admin_cmds))
        return sluice_fail("unknown command \"%s\"", argv[0]);
    if (argc < 2)
        return sluice_fail("usage: sluice %s QID... | ALL | - (requeue makes "
                           "messages due now; it does not run them through "
                           "cleanup again)",
                           argv[0]);
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    memset(&admin, 0, sizeof(admin));
    admin.queue_dir = queue_dir;
    ids = argv_alloc(16);
    all = argv_alloc(16);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "ALL") == 0)
            sluice_admin_all(queue_dir, sluice_admin_cmds[cmd].all, all);
        else if (strcmp(argv[i], "-") == 0)
            sluice_admin_stdin(ids);
        else
            argv_add(ids, argv[i]);
    }
    /* Queue ID order is arrival order. */
    qsort(ids->argv, ids->argc, sizeof(char *), sluice_admin_cmp);
    qsort(all->argv, all->argc, sizeof(char *), sluice_admin_cmp);
    for (size_t i = 0; i < ids->argc + all->argc; i++) {
        bool named = i < ids->argc;
        const char *qid = named ? ids->argv[i] : all->argv[i - ids->argc];
        int ret;

        if (named && !qid_valid(qid)) {
            status = sluice_fail("%s: no such message (not a queue ID)", qid);
            continue;
        }
        /* A message named twice, or listed twice by ALL (it moved while
           we read), or named and listed, is done once. */
        if (i > 0 && i != ids->argc &&
            strcmp(qid, named ? ids->argv[i - 1]
                              : all->argv[i - ids->argc - 1]) == 0)
            continue;
        if (!named && bsearch(&qid, ids->argv, ids->argc, sizeof(char *),
                              sluice_admin_cmp) != NULL)
            continue;
        ret = sluice_admin_one(&admin, sluice_admin_cmds[cmd].op, qid);
        if (ret == SLUICE_ADMIN_DONE)
            count++;
        else if (ret == SLUICE_ADMIN_NONE && named) /* ALL: gone meanwhile */
            status = sluice_fail("%s: no such message", qid);
        else if (ret == SLUICE_ADMIN_FAIL)
            status = 1;
    }
    if (admin.wake) {
        /* Nothing depends on it: qmgr scans incoming/ now and then. */
        path = vstr_alloc(100);
        mail_queue_service(path, queue_dir, MAIL_QUEUE_PUBLIC,
                           MAIL_QUEUE_QMGR_SERVICE);
        (void) trigger_send(vstr_str(path), TRIGGER_WAKEUP);
        vstr_free(path);
    }
    if (count > 0)
        fprintf(stderr, "sluice: %s: %ld message%s\n",
                sluice_admin_cmds[cmd].done, count, count == 1 ? "" : "s");
    attr_stream_close(admin.qmgr);
    if (admin.qmgr_error)
        myfree(admin.qmgr_error);
    argv_free(ids);
    argv_free(all);
    myfree(queue_dir);
    return status;
}
