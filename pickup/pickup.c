/*
 * pickup - feed the files that sendmail(1) leaves in maildrop/ to cleanup
 *
 * One pickup runs per instance (maxproc 1), woken through public/pickup by
 * sendmail and scanning maildrop/ at start and every PICKUP_TICK seconds, so
 * a lost trigger only delays a message. Each maildrop file (named by its
 * queue ID; sendmail's ".tmp.QID" files are not finished and are skipped) is
 * read with the strict queue-file reader and handed to cleanup over
 * private/cleanup (global/cleanup_client.h) with the local-submission flag,
 * the sender's full name (sendmail -F) and the DSN RET and ENVID (sendmail
 * -R, -V), each from the file's attribute of that name when it has one.
 * The file is removed only after cleanup has answered that the new queue
 * file is committed, so a crash anywhere means at worst a duplicate, never
 * a loss.
 *
 *   corrupt file, or one    moved to corrupt/ with a warning; scan goes on
 *   whose envelope breaks
 *   global/submit_check.h
 *   cleanup unreachable,    the file stays, and the next scans try it
 *   4xx or I/O trouble      after every file that has not failed, so one
 *                           that cleanup keeps refusing (4xx) or cannot
 *                           take holds up nothing behind it; two files in
 *                           a row without an answer from cleanup end a
 *                           scan (cleanup is likely down)
 *   5xx from cleanup        moved to hold/ with a warning (there is no
 *                           bounce service yet to tell the sender)
 *
 * Each message gets a Received: header first, as Postfix's pickup writes it:
 * "Received: by $myhostname ($mail_name, from userid UID)" and "id QID;
 * DATE", with the owner of the maildrop file (the user who ran sendmail)
 * and the time the file was written.
 *
 * With non_smtpd_milters set, the message (that Received: header first)
 * goes through the milters before cleanup sees any of it
 * (pickup_milter.h): cleanup never rewrites a queue file, so the milters'
 * changes are made to the stream pickup sends. Their verdicts:
 *
 *   accept, continue        the changed message to cleanup (into hold/
 *                           when a milter quarantined it)
 *   discard                 logged (milter-discard), the file removed
 *   reject                  logged (milter-reject), the file moved to
 *                           hold/: sendmail has exited, nobody else can be
 *                           told (Postfix would bounce it to the sender)
 *   tempfail, a refused     logged, the file stays for a later scan
 *   recipient, a failed
 *   milter (default action
 *   tempfail)
 *
 * The conversations with cleanup and the milters are blocking with a
 * timeout: pickup has nothing else to do meanwhile.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "argv.h"

#include "cleanup_client.h"
#include "cleanup_proto.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "pickup_milter.h"
#include "qfile.h"
#include "qid.h"
#include "safe_file.h"
#include "smtp_addr.h"
#include "submit_check.h"
#include "trigger.h"
#include "vstr.h"

#define PICKUP_TICK 60 /* seconds between periodic scans */
#define PICKUP_TIMEOUT_MS (300 * 1000) /* per cleanup read or write */
#define PICKUP_FAIL_STREAK 2 /* failures in a row that end a scan */

typedef struct PICKUP_CTX {
    char *queue_dir;
    char *cleanup_path; /* queue_dir/private/cleanup */
    char *myhostname; /* for the Received: header */
    char *mail_name;
    ARGV *failing; /* queue IDs whose last try failed: tried last */
    PICKUP_MILTER_CONF *milters; /* non_smtpd_milters; NULL: none */
} PICKUP_CTX;

typedef enum PICKUP_RESULT {
    PICKUP_DONE, /* taken, moved away or gone: go on */
    PICKUP_RETRY, /* left in place, cleanup said 4xx: try it later */
    PICKUP_STALL, /* left in place, no answer from cleanup (or the file
                     system): try it later; cleanup may be down */
} PICKUP_RESULT;

/* pickup_move - move a maildrop file elsewhere, with the reason logged */
static PICKUP_RESULT pickup_move(PICKUP_CTX *ctx, const char *qid,
                                 const char *to_queue, const char *why)
{
    if (mail_queue_move(ctx->queue_dir, MAIL_QUEUE_MAILDROP, to_queue, qid) <
        0) {
        /* Skip it rather than block every message behind it. */
        msg_warn("%s: %s; cannot move it to %s/: %m", qid, why, to_queue);
        return PICKUP_DONE;
    }
    msg_warn("%s: %s; moved to %s/", qid, why, to_queue);
    return PICKUP_DONE;
}

/* pickup_check_value - false, with the reason in why, when value breaks
   the rule for what (global/submit_check.h) */
static bool pickup_check_value(const char *what, const char *value,
                               int (*check)(const char *, VSTR *), VSTR *why)
{
    VSTR *problem = vstr_alloc(64);
    bool ok = check(value, problem) == 0;

    if (!ok) {
        vstr_sprintf(why, "%s ", what);
        submit_check_quote(why, value, SUBMIT_CHECK_QUOTE_MAX);
        vstr_sprintf_append(why, " %s", vstr_str(problem));
    }
    vstr_free(problem);
    return ok;
}

/* pickup_check_sender - submit_check_address for a sender ("" is <>) */
static int pickup_check_sender(const char *addr, VSTR *why)
{
    return submit_check_address(addr, true, why);
}

/* pickup_check_rcpt - submit_check_address for a recipient */
static int pickup_check_rcpt(const char *addr, VSTR *why)
{
    return submit_check_address(addr, false, why);
}

/* pickup_check_ret - a "ret" attribute (sendmail -R) is HDRS or FULL */
static int pickup_check_ret(const char *value, VSTR *why)
{
    if (strcasecmp(value, "HDRS") == 0 || strcasecmp(value, "FULL") == 0)
        return 0;
    vstr_cpy(why, "is not HDRS or FULL");
    return -1;
}

/* pickup_check_envelope - the rules sendmail applies before it writes a
   maildrop file, applied again to what is in the file: an older or a
   foreign sendmail may have written it, and cleanup would pass on (or
   drop the connection over) what breaks them. false with why */
static bool pickup_check_envelope(const QFILE_INFO *info, VSTR *why)
{
    const char *full_name = qfile_info_attr(info, "full_name");
    const char *ret = qfile_info_attr(info, "ret");
    const char *envid = qfile_info_attr(info, "envid");

    if (!pickup_check_value("sender", info->sender, pickup_check_sender, why))
        return false;
    if (full_name != NULL && !pickup_check_value("full name", full_name,
                                                 submit_check_full_name, why))
        return false;
    if (ret != NULL && !pickup_check_value("ret", ret, pickup_check_ret, why))
        return false;
    if (envid != NULL &&
        !pickup_check_value("envid", envid, submit_check_envid, why))
        return false;
    for (size_t i = 0; i < info->rcpt_count; i++) {
        const QFILE_RCPT *rcpt = info->rcpts + i;

        if (rcpt->done)
            continue;
        if (!pickup_check_value("recipient", rcpt->address, pickup_check_rcpt,
                                why) ||
            (rcpt->orcpt != NULL &&
             !pickup_check_value("original recipient", rcpt->orcpt,
                                 pickup_check_sender, why)) ||
            (rcpt->notify != NULL &&
             !pickup_check_value("notify", rcpt->notify, pickup_check_sender,
                                 why)))
            return false;
    }
    return true;
}

/* pickup_send_content - the C records of the file, through the client;
   0, or -1 (why; *corrupt when the file is to blame) */
static int pickup_send_content(CLEANUP_CLIENT *client, int fd, VSTR *why,
                               bool *corrupt)
{
    QFILE_READER *reader;
    QFILE_REC rec;
    int ret = 0;
    int got;

    *corrupt = false;
    if (lseek(fd, 0, SEEK_SET) < 0) {
        vstr_sprintf(why, "seek: %s", strerror(errno));
        return -1;
    }
    reader = qfile_reader_alloc(fd);
    while (ret == 0 && (got = qfile_read_rec(reader, &rec, why)) != 0) {
        if (got < 0) {
            *corrupt = true;
            ret = -1;
        } else if (rec.type == QFILE_REC_CONT) {
            ret = cleanup_client_write(client, rec.data, rec.len, why);
        }
    }
    qfile_reader_free(reader);
    return ret;
}

/* pickup_received - "Received: by HOST (NAME, from userid UID)\n\tid QID;
   DATE\n" into out: the submitting user, the time of submission */
static void pickup_received(const PICKUP_CTX *ctx, const struct stat *st,
                            const char *queue_id, VSTR *out)
{
    char date[80];
    struct tm tm;

    if (localtime_r(&st->st_mtime, &tm) == NULL ||
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z (%Z)", &tm) == 0)
        date[0] = 0;
    vstr_sprintf(out, "Received: by %s (%s, from userid %ld)\n\tid %s; %s\n",
                 ctx->myhostname, ctx->mail_name, (long) st->st_uid, queue_id,
                 date);
}

/* pickup_read_content - the C records of the file appended to content,
   at most limit bytes; 0, 1 when there is more, or -1 (why; *corrupt
   when the file is to blame) */
static int pickup_read_content(int fd, VSTR *content, size_t limit, VSTR *why,
                               bool *corrupt)
{
    QFILE_READER *reader;
    QFILE_REC rec;
    int got;

    *corrupt = false;
    if (lseek(fd, 0, SEEK_SET) < 0) {
        vstr_sprintf(why, "seek: %s", strerror(errno));
        return -1;
    }
    reader = qfile_reader_alloc(fd);
    while ((got = qfile_read_rec(reader, &rec, why)) != 0) {
        if (got < 0) {
            *corrupt = true;
            break;
        }
        if (rec.type == QFILE_REC_CONT) {
            if (rec.len > limit || vstr_len(content) > limit - rec.len) {
                qfile_reader_free(reader);
                return 1;
            }
            vstr_ncat(content, rec.data, rec.len);
        }
    }
    qfile_reader_free(reader);
    return *corrupt ? -1 : 0;
}

/* pickup_milter_rcpts - the recipients the milters added, to cleanup
   (a malformed one is logged and skipped); 0, or -1 with why */
static int pickup_milter_rcpts(CLEANUP_CLIENT *client, const char *queue_id,
                               const ARGV *added, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    VSTR *addr = vstr_alloc(100);
    VSTR *problem = vstr_alloc(100);
    int ret = 0;

    for (size_t i = 0; ret == 0 && i < added->argc; i++) {
        const char *text = added->argv[i];
        const char *rest;

        vstr_sprintf(path, text[0] == '<' ? "%s" : "<%s>", text);
        if (smtp_addr_parse_path(vstr_str(path), 0, addr, &rest, problem) < 0 ||
            *rest != 0) {
            msg_warn("%s: milter added a malformed recipient %s: skipped",
                     queue_id, vstr_str(path));
            continue;
        }
        msg_info("%s: milter: added recipient <%s>", queue_id, vstr_str(addr));
        ret = cleanup_client_rcpt(client, vstr_str(addr), NULL, NULL, why);
    }
    vstr_free(path);
    vstr_free(addr);
    vstr_free(problem);
    return ret;
}

/* pickup_cleanup - hand one message to cleanup, through the milters of
   non_smtpd_milters when there are any; the cleanup status (0: committed;
   4xx or 5xx: refused, with its text in why), -1 with the reason in why,
   or PICKUP_MILTER_DECIDED when a milter stopped the message (its verdict
   in mres) */
#define PICKUP_MILTER_DECIDED (-2)
static int pickup_cleanup(PICKUP_CTX *ctx, int fd, const struct stat *st,
                          const QFILE_INFO *info, VSTR *why, VSTR *queue_id,
                          bool *corrupt, PICKUP_MILTER_RESULT *mres)
{
    CLEANUP_CLIENT *client;
    VSTR *content;
    bool milters = ctx->milters != NULL;
    int code;
    int ret;

    *corrupt = false;
    /* sendmail -R and -V, as smtpd passes MAIL FROM's RET= and ENVID=;
       a maildrop file from before they were carried has neither. */
    if ((client = cleanup_client_begin_dsn(
             ctx->cleanup_path, PICKUP_TIMEOUT_MS, CLEANUP_FLAG_LOCAL,
             info->sender, "local", qfile_info_attr(info, "full_name"),
             qfile_info_attr(info, "ret"), qfile_info_attr(info, "envid"),
             &code, why)) == NULL)
        return code > 0 ? code : -1;
    vstr_cpy(queue_id, cleanup_client_queue_id(client));
    /* The content, as the milters see it: the Received: header first
       (Postfix's advice: signing milters sign pickup's Received: too). */
    content = vstr_alloc(8192);
    pickup_received(ctx, st, vstr_str(queue_id), content);
    if (milters) {
        ret = pickup_read_content(
            fd, content, pickup_milter_limit(ctx->milters), why, corrupt);
        /* Past non_smtpd_milter_max_size (message_size_limit = 0):
           milter_default_action; accept sends it on without the milters. */
        if (ret > 0 &&
            pickup_milter_too_big(ctx->milters, vstr_str(queue_id), mres)) {
            if (mres->status != PICKUP_MILTER_ACCEPT) {
                vstr_free(content);
                cleanup_client_abort(client);
                return PICKUP_MILTER_DECIDED;
            }
            vstr_reset(content);
            pickup_received(ctx, st, vstr_str(queue_id), content);
            milters = false;
        } else if (ret != 0) {
            /* Too big: refused as cleanup itself would refuse it. */
            if (ret > 0)
                vstr_cpy(why, "5.3.4 message size exceeds message_size_limit");
            vstr_free(content);
            cleanup_client_abort(client);
            return ret > 0 ? 552 : -1;
        }
    }
    if (milters) {
        ARGV *rcpts = argv_alloc(info->rcpt_count + 1);

        for (size_t i = 0; i < info->rcpt_count; i++)
            if (!info->rcpts[i].done)
                argv_add(rcpts, info->rcpts[i].address);
        pickup_milter_run(ctx->milters, vstr_str(queue_id), info->sender, rcpts,
                          content, mres);
        argv_free(rcpts);
        if (mres->status != PICKUP_MILTER_ACCEPT) {
            vstr_free(content);
            cleanup_client_abort(client);
            return PICKUP_MILTER_DECIDED;
        }
    }
    for (size_t i = 0; i < info->rcpt_count; i++) {
        const QFILE_RCPT *rcpt = info->rcpts + i;

        if (!rcpt->done &&
            cleanup_client_rcpt(client, rcpt->address, rcpt->orcpt,
                                rcpt->notify, why) < 0) {
            vstr_free(content);
            cleanup_client_abort(client);
            return -1;
        }
    }
    if (milters &&
        pickup_milter_rcpts(client, vstr_str(queue_id), mres->rcpts, why) < 0) {
        vstr_free(content);
        cleanup_client_abort(client);
        return -1;
    }
    /* Hanging up before END makes cleanup drop the partial file. */
    ret =
        cleanup_client_write(client, vstr_str(content), vstr_len(content), why);
    vstr_free(content);
    if (ret < 0 ||
        (!milters && pickup_send_content(client, fd, why, corrupt) < 0)) {
        cleanup_client_abort(client);
        return -1;
    }
    if (mres != NULL && vstr_len(mres->hold) > 0) {
        VSTR *hold = vstr_alloc(100);

        vstr_sprintf(hold, "milter quarantine: %s", vstr_str(mres->hold));
        ret = cleanup_client_end_hold(client, vstr_str(hold), &code, why);
        vstr_free(hold);
    } else {
        ret = cleanup_client_end(client, &code, why);
    }
    if (ret < 0)
        return code > 0 ? code : -1;
    return 0;
}

/* pickup_milter_log - "QID: milter-reject: STAGE from localhost[127.0.0.1]:
   text; from=<> to=<>", as Postfix's cleanup logs a milter's verdict on
   local mail */
static void pickup_milter_log(const char *queue_id, const char *what,
                              const PICKUP_MILTER_RESULT *mres,
                              const char *text, const QFILE_INFO *info)
{
    const char *to = "";

    for (size_t i = 0; i < info->rcpt_count; i++)
        if (!info->rcpts[i].done) {
            to = info->rcpts[i].address;
            break;
        }
    msg_info("%s: %s: %s from localhost[127.0.0.1]: %s; from=<%s> to=<%s>",
             queue_id, what, mres->stage, text, info->sender, to);
}

/* pickup_remove - the maildrop file is no longer needed */
static void pickup_remove(const char *queue_id, const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        msg_warn("%s: remove %s: %m", queue_id, path);
    else if (safe_file_fsync_parent(path) < 0)
        msg_warn("fsync the directory of %s: %m", path);
}

/* pickup_milter_verdict - a milter stopped the message: discard (the
   file goes), reject (the file goes to hold/: sendmail has long exited,
   so nobody can be told but the log and the administrator), tempfail
   (the file stays for a later try) */
static PICKUP_RESULT pickup_milter_verdict(PICKUP_CTX *ctx, const char *qid,
                                           const char *path,
                                           const char *queue_id,
                                           const QFILE_INFO *info,
                                           const PICKUP_MILTER_RESULT *mres)
{
    VSTR *reason;
    PICKUP_RESULT result;

    switch (mres->status) {
    case PICKUP_MILTER_DISCARD:
        pickup_milter_log(queue_id, "milter-discard", mres,
                          "milter triggers DISCARD action", info);
        pickup_remove(queue_id, path);
        return PICKUP_DONE;
    case PICKUP_MILTER_REJECT:
        pickup_milter_log(queue_id, "milter-reject", mres,
                          vstr_str(mres->reply), info);
        reason = vstr_alloc(100);
        vstr_sprintf(reason, "rejected by a milter: %s", vstr_str(mres->reply));
        result = pickup_move(ctx, qid, MAIL_QUEUE_HOLD, vstr_str(reason));
        vstr_free(reason);
        return result;
    default:
        pickup_milter_log(queue_id, "milter-reject", mres,
                          vstr_str(mres->reply), info);
        msg_warn("%s: a milter said try again later; left in maildrop/,"
                 " will retry",
                 qid);
        return PICKUP_RETRY;
    }
}

/* pickup_file - hand maildrop/qid to cleanup and remove it once committed */
static PICKUP_RESULT pickup_file(PICKUP_CTX *ctx, const char *qid)
{
    VSTR *path = mail_queue_path(vstr_alloc(100), ctx->queue_dir,
                                 MAIL_QUEUE_MAILDROP, qid);
    VSTR *why = vstr_alloc(100);
    VSTR *reason = vstr_alloc(100);
    VSTR *queue_id = vstr_alloc(QID_SIZE);
    PICKUP_RESULT result = PICKUP_DONE;
    QFILE_INFO *info = NULL;
    PICKUP_MILTER_RESULT mres;
    struct stat st;
    int status;
    bool corrupt;
    int fd;

    pickup_milter_result_init(&mres);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
        if (errno == ELOOP)
            result =
                pickup_move(ctx, qid, MAIL_QUEUE_CORRUPT, "not a regular file");
        else if (errno != ENOENT) {
            msg_warn("open %s: %m", vstr_str(path));
            result = PICKUP_STALL;
        }
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        msg_warn("fstat %s: %m", vstr_str(path));
        result = PICKUP_STALL;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        result =
            pickup_move(ctx, qid, MAIL_QUEUE_CORRUPT, "not a regular file");
        goto out;
    }
    if ((info = qfile_info_read(fd, why)) == NULL) {
        vstr_sprintf(reason, "corrupt maildrop file: %s", vstr_str(why));
        result = pickup_move(ctx, qid, MAIL_QUEUE_CORRUPT, vstr_str(reason));
        goto out;
    }
    if (info->rcpt_count == info->rcpt_done) {
        result = pickup_move(ctx, qid, MAIL_QUEUE_CORRUPT,
                             "maildrop file without recipients");
        goto out;
    }
    if (!pickup_check_envelope(info, why)) {
        vstr_sprintf(reason, "bad maildrop file: %s", vstr_str(why));
        result = pickup_move(ctx, qid, MAIL_QUEUE_CORRUPT, vstr_str(reason));
        goto out;
    }
    status = pickup_cleanup(ctx, fd, &st, info, why, queue_id, &corrupt, &mres);
    if (status == PICKUP_MILTER_DECIDED) {
        result = pickup_milter_verdict(ctx, qid, vstr_str(path),
                                       vstr_str(queue_id), info, &mres);
    } else if (status < 0 && corrupt) {
        vstr_sprintf(reason, "corrupt maildrop file: %s", vstr_str(why));
        result = pickup_move(ctx, qid, MAIL_QUEUE_CORRUPT, vstr_str(reason));
    } else if (status < 0) {
        msg_warn("%s: cannot hand the message to cleanup: %s; will retry", qid,
                 vstr_str(why));
        result = PICKUP_STALL;
    } else if (status >= 500) {
        vstr_sprintf(reason, "rejected: %s", vstr_str(why));
        result = pickup_move(ctx, qid, MAIL_QUEUE_HOLD, vstr_str(reason));
    } else if (status != 0) {
        msg_warn("%s: %s; will retry", qid, vstr_str(why));
        result = PICKUP_RETRY;
    } else {
        /* Committed: the maildrop copy is no longer needed. A crash before
           the unlink reaches the disk means a duplicate, never a loss. */
        msg_info("%s: uid=%ld from=<%s>", vstr_str(queue_id), (long) st.st_uid,
                 info->sender);
        pickup_remove(vstr_str(queue_id), vstr_str(path));
    }

out:
    if (fd >= 0)
        (void) close(fd);
    if (info != NULL)
        qfile_info_free(info);
    pickup_milter_result_free(&mres);
    vstr_free(path);
    vstr_free(why);
    vstr_free(reason);
    vstr_free(queue_id);
    return result;
}

/* pickup_compare - queue IDs in arrival order */
static int pickup_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* pickup_failing - did the last try of qid fail? */
static bool pickup_failing(const PICKUP_CTX *ctx, const char *qid)
{
    for (size_t i = 0; i < ctx->failing->argc; i++)
        if (strcmp(ctx->failing->argv[i], qid) == 0)
            return true;
    return false;
}

/* pickup_scan - take every finished file in maildrop/, oldest first */
static void pickup_scan(PICKUP_CTX *ctx)
{
    VSTR *dir = vstr_alloc(100);
    struct dirent *de;
    char **names = NULL;
    size_t count = 0;
    size_t cap = 0;
    size_t i;
    ARGV *failing;
    int streak = 0; /* files in a row that failed */
    DIR *dp;

    vstr_sprintf(dir, "%s/%s", ctx->queue_dir, MAIL_QUEUE_MAILDROP);
    if ((dp = opendir(vstr_str(dir))) == NULL) {
        msg_warn("open %s: %m", vstr_str(dir));
        vstr_free(dir);
        return;
    }
    while ((de = readdir(dp)) != NULL) {
        if (!qid_valid(de->d_name))
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            names = myrealloc_array(names, cap, sizeof(*names));
        }
        names[count++] = mystrdup(de->d_name);
    }
    closedir(dp);
    if (count > 0)
        qsort(names, count, sizeof(*names), pickup_compare);
    /* Pass 0 takes the files not known to fail, pass 1 the others. */
    failing = argv_alloc(ctx->failing->argc + 1);
    for (int pass = 0; pass < 2; pass++) {
        for (i = 0; i < count; i++) {
            bool failed_before = pickup_failing(ctx, names[i]);

            if (failed_before != (pass == 1))
                continue;
            if (streak >= PICKUP_FAIL_STREAK) {
                if (failed_before)
                    argv_add(failing, names[i]); /* not tried this time */
            } else {
                PICKUP_RESULT result = pickup_file(ctx, names[i]);

                if (result != PICKUP_DONE)
                    argv_add(failing, names[i]);
                /* A 4xx is an answer: cleanup is up. */
                streak = result == PICKUP_STALL ? streak + 1 : 0;
            }
        }
    }
    argv_free(ctx->failing);
    ctx->failing = failing;
    for (i = 0; i < count; i++)
        myfree(names[i]);
    myfree(names);
    vstr_free(dir);
}

/* pickup_pre_loop - read the configuration, take what waits */
static void pickup_pre_loop(MAIL_SERVER *server, void *arg)
{
    PICKUP_CTX *ctx = arg;
    VSTR *path = vstr_alloc(100);

    ctx->queue_dir =
        mystrdup(mail_conf_str(mail_server_conf(server), "queue_directory"));
    mail_queue_service(path, ctx->queue_dir, MAIL_QUEUE_PRIVATE,
                       CLEANUP_SERVICE);
    ctx->cleanup_path = vstr_export(path);
    ctx->myhostname =
        mystrdup(mail_conf_str(mail_server_conf(server), "myhostname"));
    ctx->mail_name =
        mystrdup(mail_conf_str(mail_server_conf(server), "mail_name"));
    ctx->failing = argv_alloc(4);
    ctx->milters = pickup_milter_conf(mail_server_conf(server));
    pickup_scan(ctx);
}

/* pickup_trigger - sendmail dropped a file */
static void pickup_trigger(MAIL_SERVER *server, int byte, void *arg)
{
    if (byte == TRIGGER_WAKEUP || byte == TRIGGER_SCAN_ALL)
        pickup_scan(arg);
    else if (msg_verbose_get())
        msg_info("ignoring trigger byte %d", byte);
}

/* pickup_tick - the periodic scan that catches any lost trigger */
static void pickup_tick(MAIL_SERVER *server, void *arg)
{
    pickup_scan(arg);
}

/* main - the maildrop pickup daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = pickup_pre_loop,
        .on_trigger = pickup_trigger,
        .on_tick = pickup_tick,
        .tick_seconds = PICKUP_TICK,
    };
    PICKUP_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "pickup", &ops, &ctx);
    myfree(ctx.queue_dir);
    myfree(ctx.cleanup_path);
    myfree(ctx.myhostname);
    myfree(ctx.mail_name);
    if (ctx.failing != NULL)
        argv_free(ctx.failing);
    pickup_milter_conf_free(ctx.milters);
    return status;
}
