/*
 * cleanup_message - one message: create, fill, commit or remove its file
 *
 * The queue file is a free file of reuse/ written again (global/
 * qfile_reuse.h), or, when there is none, created as incoming/.tmp.QID,
 * which qmgr never takes for a queue file (not a valid queue ID); either
 * way it is invisible to every reader of the queue. On commit (qfile_commit) the
 * file is fsynced, renamed to incoming/QID and incoming/ is fsynced; only
 * then does the caller answer. Every failure removes the file at once, so
 * nothing half-written is ever visible, and is remembered in the message so
 * the caller answers it at END.
 *
 * Addresses go through the canonical tables (cleanup_rewrite.c) before they
 * are written; a message that header_checks or body_checks put on hold is
 * committed into hold/ the same way, and a discarded one is removed.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "argv.h"
#include "cleanup.h"
#include "cleanup_proto.h"
#include "events.h"
#include "msg.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qid.h"
#include "smtp_addr.h"
#include "vstr.h"
#include "xtext.h"

#define CLEANUP_WRITE_ERROR "4.3.0 queue file write error"
#define CLEANUP_REWRITE_ERROR "4.3.0 address rewriting table lookup failed"

/* cleanup_qualify - addr, or addr@myorigin when addr has no domain: an
   '@' inside a quoted local part ("v@outside.example") is not one, so that
   address becomes "v@outside.example"@myorigin and is routed as ours */
char *cleanup_qualify(const CLEANUP_CONF *conf, const char *addr)
{
    VSTR *buf;

    if (*addr == 0 || smtp_addr_split(addr, NULL) != NULL ||
        *conf->myorigin == 0)
        return mystrdup(addr);
    buf = vstr_alloc(64);
    vstr_sprintf(buf, "%s@%s", addr, conf->myorigin);
    return vstr_export(buf);
}

/* cleanup_msg_close - close and remove the partial file */
static void cleanup_msg_close(CLEANUP_MSG *msg)
{
    msg->writer = NULL;
    msg->out = qfile_abort(msg->out);
}

/* cleanup_msg_fail - record a failure (the first one wins), remove the file */
void cleanup_msg_fail(CLEANUP_MSG *msg, int status, const char *reason)
{
    if (msg->status == 0) {
        msg->status = status;
        vstr_cpy(msg->reason, reason);
    }
    cleanup_msg_close(msg);
}

/* cleanup_msg_check_write - turn a writer error into a failure */
static void cleanup_msg_check_write(CLEANUP_MSG *msg)
{
    int err;

    if (msg->writer && (err = qfile_writer_error(msg->writer)) != 0) {
        msg_warn("%s: write queue file %s: %s", msg->qid, msg->tmp_path,
                 strerror(err));
        cleanup_msg_fail(msg, 451, CLEANUP_WRITE_ERROR);
    }
}

/* cleanup_msg_attr - one envelope attribute, when present */
static void cleanup_msg_attr(CLEANUP_MSG *msg, const char *name,
                             const char *value)
{
    if (value != NULL && msg->writer != NULL)
        qfile_put_attr(msg->writer, name, value);
}

/* cleanup_msg_rewrite_sender - the sender through the canonical tables; a
   failure is told at the first recipient, so the client sees it at END as
   every other failure of the message (smtpd answers a failed BEGIN with
   "queue file write error") */
static void cleanup_msg_rewrite_sender(CLEANUP_MSG *msg)
{
    char *rewritten = cleanup_rewrite_sender(msg, msg->sender);

    if (rewritten == NULL) {
        msg->sender_rewrite_failed = true;
    } else {
        myfree(msg->sender);
        msg->sender = rewritten;
    }
}

/* cleanup_msg_control - does an envelope address hold a control byte?
   Every producer refuses them (smtpd, sendmail, pickup); this is the last
   guard: a CR LF must never reach a queue file, an SMTP command or a DSN */
static bool cleanup_msg_control(const char *addr)
{
    for (const char *cp = addr; *cp; cp++)
        if ((unsigned char) *cp < 0x20 || *cp == 0x7f)
            return true;
    return false;
}

/* cleanup_msg_tenant_ok - a tenant name: [A-Za-z0-9._-]{1,64} */
static bool cleanup_msg_tenant_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > CLEANUP_TENANT_MAX)
        return false;
    for (const char *cp = name; *cp; cp++)
        if (!((*cp >= 'a' && *cp <= 'z') || (*cp >= 'A' && *cp <= 'Z') ||
              (*cp >= '0' && *cp <= '9') || *cp == '.' || *cp == '_' ||
              *cp == '-'))
            return false;
    return true;
}

/* cleanup_msg_api_attrs - the api's attributes (tenant, tags, metadata,
   not_before): refused from any other origin, which cannot speak for a
   tenant (smtpd and pickup name their own origin; nothing a client
   writes reaches these attributes); 0, or -1 with the message failed */
static int cleanup_msg_api_attrs(CLEANUP_MSG *msg, const CLEANUP_BEGIN *req)
{
    bool api = req->origin && strcmp(req->origin, CLEANUP_ORIGIN_API) == 0;
    bool given =
        req->tenant || req->tags || req->metadata || req->not_before > 0;

    if (!given)
        return 0;
    if (!api) {
        msg_warn("%s: origin %s names a tenant, tags, metadata or send time: "
                 "only the api may; refused",
                 msg->qid, req->origin ? req->origin : "(none)");
        cleanup_msg_fail(msg, 554, "5.7.0 only the api may name a tenant");
        return -1;
    }
    if ((req->tenant && !cleanup_msg_tenant_ok(req->tenant)) ||
        (req->tags && strlen(req->tags) > CLEANUP_TAGS_MAX) ||
        (req->metadata && strlen(req->metadata) > CLEANUP_METADATA_MAX)) {
        msg_warn("%s: api: a bad tenant name, or tags or metadata too large",
                 msg->qid);
        cleanup_msg_fail(msg, 554, "5.5.4 bad tenant, tags or metadata");
        return -1;
    }
    if (req->tenant)
        msg->tenant = mystrdup(req->tenant);
    if (req->tags)
        msg->tags = mystrdup(req->tags);
    if (req->metadata)
        msg->metadata = mystrdup(req->metadata);
    return 0;
}

/* cleanup_msg_begin - start a message: queue ID, file, envelope records */
CLEANUP_MSG *cleanup_msg_begin(const CLEANUP_CONF *conf,
                               const CLEANUP_BEGIN *req,
                               const CLEANUP_FILTER *const *filters)
{
    CLEANUP_MSG *msg = mycalloc(1, sizeof(*msg));
    char qid[QID_SIZE];
    VSTR *path = vstr_alloc(100);

    msg->conf = conf;
    msg->filters = filters;
    msg->reason = vstr_alloc(40);
    msg->flags = req->flags;
    msg->last_byte = -1;
    gettimeofday(&msg->arrival, NULL);
    qid_new(qid);
    if (snprintf(msg->qid, sizeof(msg->qid), "%s", qid) >=
        (int) sizeof(msg->qid))
        msg_panic("%s: queue ID too long", __func__);
    vstr_sprintf(path, "%s/incoming/%s%s", conf->queue_dir, CLEANUP_TMP_PREFIX,
                 msg->qid);
    msg->tmp_path = mystrdup(vstr_str(path));
    vstr_sprintf(path, "%s/incoming/%s", conf->queue_dir, msg->qid);
    msg->final_path = mystrdup(vstr_str(path));
    vstr_free(path);
    msg->sender = cleanup_qualify(conf, req->sender ? req->sender : "");
    if (req->client_addr != NULL && *req->client_addr != 0) {
        VSTR *info = vstr_alloc(64);

        vstr_sprintf(info, "%s[%s]",
                     req->client_name && *req->client_name ? req->client_name
                                                           : "unknown",
                     req->client_addr);
        msg->client_info = vstr_export(info);
    } else {
        msg->client_info = mystrdup("local");
    }
    if (req->protocol != NULL && *req->protocol != 0)
        msg->protocol = mystrdup(req->protocol);
    if (req->helo_name != NULL && *req->helo_name != 0)
        msg->helo_name = mystrdup(req->helo_name);
    cleanup_msg_rewrite_sender(msg);
    if (req->full_name != NULL && *req->full_name != 0)
        msg->full_name = mystrdup(req->full_name);
    cleanup_content_init(msg);

    for (msg->filter_count = 0; filters && filters[msg->filter_count];)
        msg->filter_count++;
    msg->filter_state = mycalloc(msg->filter_count + 1, sizeof(void *));
    for (size_t i = 0; i < msg->filter_count; i++)
        if (filters[i]->begin)
            msg->filter_state[i] = filters[i]->begin(msg);

    if (conf->message_size_limit > 0 && req->size > conf->message_size_limit) {
        cleanup_msg_fail(msg, 552, "5.3.4 Message size exceeds fixed limit");
        return msg;
    }
    if (req->sender != NULL && cleanup_msg_control(req->sender)) {
        cleanup_msg_fail(msg, 550, "5.1.7 Bad sender address syntax");
        return msg;
    }
    if (cleanup_msg_api_attrs(msg, req) < 0)
        return msg;
    if ((msg->out = qfile_create_reuse(msg->conf->reuse, msg->tmp_path,
                                       0600)) == NULL) {
        msg_warn("%s: create %s: %m", msg->qid, msg->tmp_path);
        cleanup_msg_fail(msg, 451, CLEANUP_WRITE_ERROR);
        return msg;
    }
    /* A reused file keeps its name in reuse/ until the commit. */
    if (strcmp(qfile_out_path(msg->out), msg->tmp_path) != 0) {
        myfree(msg->tmp_path);
        msg->tmp_path = mystrdup(qfile_out_path(msg->out));
    }
    msg->writer = qfile_out_writer(msg->out);
    qfile_put_time(msg->writer, &msg->arrival);
    qfile_put_sender(msg->writer, msg->sender);
    cleanup_msg_attr(msg, "origin", req->origin);
    cleanup_msg_attr(msg, "client_name", req->client_name);
    cleanup_msg_attr(msg, "client_addr", req->client_addr);
    cleanup_msg_attr(msg, "helo_name", req->helo_name);
    cleanup_msg_attr(msg, "protocol", req->protocol);
    cleanup_msg_attr(msg, "ret", req->ret);
    cleanup_msg_attr(msg, "envid", req->envid);
    cleanup_msg_attr(msg, "sasl_username", req->sasl_username);
    if (req->flags & CLEANUP_FLAG_8BIT)
        cleanup_msg_attr(msg, "body_type", "8BITMIME");
    if (req->flags & CLEANUP_FLAG_SMTPUTF8)
        cleanup_msg_attr(msg, "smtputf8", "yes");
    if (req->size >= 0) {
        char size_text[32];

        (void) snprintf(size_text, sizeof(size_text), "%lld", req->size);
        cleanup_msg_attr(msg, "size", size_text);
    }
    cleanup_msg_attr(msg, "tenant", msg->tenant);
    cleanup_msg_attr(msg, "tags", msg->tags);
    cleanup_msg_attr(msg, "metadata", msg->metadata);
    if (req->not_before > 0) {
        char when[32];

        (void) snprintf(when, sizeof(when), "%lld", req->not_before);
        cleanup_msg_attr(msg, "not_before", when);
    }
    cleanup_pool_begin(msg, req, msg->tenant);
    cleanup_trace_begin(msg, req);
    cleanup_msg_check_write(msg);
    return msg;
}

/* cleanup_msg_rcpt - one recipient record */
void cleanup_msg_rcpt(CLEANUP_MSG *msg, const char *address, const char *orcpt,
                      const char *notify)
{
    char *qualified;
    char *rewritten;
    ARGV *expanded;
    VSTR *original;

    if (msg->in_content)
        msg_panic("%s: recipient after content", __func__);
    msg->rcpt_count++;
    if (msg->sender_rewrite_failed)
        cleanup_msg_fail(msg, 451, CLEANUP_REWRITE_ERROR);
    if (msg->status)
        return;
    if (*address == 0 || cleanup_msg_control(address)) {
        cleanup_msg_fail(msg, 550, "5.1.3 Bad recipient address syntax");
        return;
    }
    qualified = cleanup_qualify(msg->conf, address);
    rewritten = cleanup_rewrite_recipient(msg, qualified);
    if (rewritten == NULL) {
        myfree(qualified);
        cleanup_msg_fail(msg, 451, CLEANUP_REWRITE_ERROR);
        return;
    }
    if ((expanded = cleanup_rewrite_virtual(msg, rewritten)) == NULL) {
        myfree(qualified);
        myfree(rewritten);
        return; /* the message has failed */
    }
    original = vstr_alloc(64);
    /* No original-recipient field in the queue file (global/qfile.h): a
       recipient that virtual_alias_maps changed keeps the address it came
       as in the DSN ORCPT field when the client gave none, as Postfix
       reports (and sends on) its original recipient. */
    if ((orcpt == NULL || *orcpt == 0) &&
        (expanded->argc != 1 || strcasecmp(expanded->argv[0], rewritten))) {
        vstr_cpy(original, "rfc822;");
        xtext_encode(original, qualified, strlen(qualified));
        orcpt = vstr_str(original);
    }
    for (size_t i = 0; i < expanded->argc; i++) {
        if (cleanup_suppress_rcpt(msg, expanded->argv[i]))
            continue; /* never written: cleanup_suppress.c */
        qfile_put_rcpt(msg->writer, expanded->argv[i], orcpt, notify);
        msg->queued_rcpts++;
        if (msg->first_rcpt == NULL)
            msg->first_rcpt = mystrdup(expanded->argv[i]);
    }
    argv_free(expanded);
    vstr_free(original);
    myfree(qualified);
    myfree(rewritten);
    cleanup_msg_check_write(msg);
}

/* cleanup_msg_start_content - the M record, once */
static void cleanup_msg_start_content(CLEANUP_MSG *msg)
{
    if (!msg->in_content) {
        msg->in_content = true;
        if (msg->status == 0)
            qfile_put_content_begin(msg->writer);
    }
}

/* cleanup_msg_data - a chunk of the content */
void cleanup_msg_data(CLEANUP_MSG *msg, const char *data, size_t len)
{
    cleanup_msg_start_content(msg);
    msg->received += (long long) len;
    if (msg->conf->message_size_limit > 0 &&
        msg->received > msg->conf->message_size_limit) {
        if (msg->status == 0)
            msg_info("%s: reject: message size %lld exceeds limit %lld",
                     msg->qid, msg->received, msg->conf->message_size_limit);
        cleanup_msg_fail(msg, 552, "5.3.4 Message size exceeds fixed limit");
    }
    if (msg->status || msg->discard)
        return;
    cleanup_content_data(msg, data, len);
    cleanup_msg_check_write(msg);
}

/* cleanup_msg_event - the "received" event of a message put on hold/,
   durable; -1 when it is not (then nothing may be queued). A commit that
   fails after it leaves a received event with no message: its client was
   told 4xx. Every other message gets its received event from qmgr when it
   takes the file from incoming/ (qmgr/qmgr_message.c), so that no journal
   fdatasync waits in front of the client's 250; qmgr does not look in
   hold/, so cleanup writes it for those (qmgr repeats it, same id, if the
   message is released into incoming/). */
static int cleanup_msg_event(const CLEANUP_MSG *msg, long long size)
{
    EVENT event;

    events_event_init(&event, EVENTS_RECEIVED, msg->qid, "0");
    event.sender = msg->sender;
    event.size = size;
    event.rcpt_count = msg->rcpt_count;
    event.client = msg->client_info;
    event.tenant = msg->tenant;
    event.tags = msg->tags;
    event.metadata = msg->metadata;
    event.message_id = msg->message_id;
    event.traceparent = msg->traceparent;
    return events_emit(msg->conf->events, &event);
}

/* cleanup_msg_journal_ok - 0 when the journal can take events, else
   -1 with the message failed (452 4.3.1) */
static int cleanup_msg_journal_ok(CLEANUP_MSG *msg)
{
    VSTR *why = vstr_alloc(100);
    int ret = 0;

    if (events_check(msg->conf->events, why) < 0) {
        msg_warn("%s: reject: %s", msg->qid, vstr_str(why));
        cleanup_msg_fail(msg, 452,
                         "4.3.1 Insufficient system storage for the event"
                         " journal, try again later");
        ret = -1;
    }
    vstr_free(why);
    return ret;
}

/* cleanup_msg_end - commit or abort; the status to send */
int cleanup_msg_end(CLEANUP_MSG *msg, bool abort)
{
    long long size;

    if (abort) {
        cleanup_msg_close(msg);
        return 0;
    }
    if (msg->status == 0 && msg->rcpt_count == 0)
        cleanup_msg_fail(msg, 554, "5.5.1 Error: no recipients specified");
    if (msg->status)
        return msg->status;
    if (!msg->discard) {
        cleanup_msg_start_content(msg);
        cleanup_content_end(msg);
        cleanup_msg_check_write(msg);
        /* smtpd's Authentication-Results:, known only after the body. */
        if (msg->status == 0 && msg->prepend_end != NULL &&
            qfile_out_prepend_content(msg->out, msg->prepend_end,
                                      strlen(msg->prepend_end)) < 0) {
            msg_warn("%s: prepend headers to %s: %m", msg->qid, msg->tmp_path);
            cleanup_msg_fail(msg, 451, CLEANUP_WRITE_ERROR);
        }
    }
    if (msg->status)
        return msg->status;
    if (msg->discard) {
        /* DISCARD: success for the client, nothing queued (logged). */
        cleanup_msg_close(msg);
        return 0;
    }
    if (msg->hold) {
        /* HOLD: the same commit, into hold/; qmgr is not told. */
        VSTR *path = vstr_alloc(100);

        mail_queue_path(path, msg->conf->queue_dir, MAIL_QUEUE_HOLD, msg->qid);
        myfree(msg->final_path);
        msg->final_path = vstr_export(path);
    }

    /* A journal that failed lately, or whose disk is (nearly) full, takes
       no more mail: the client retries (4xx) rather than have a message
       whose events could not be written (events_check). qmgr keeps what
       it could not write pending, so a message accepted before the mark
       went up loses nothing either. */
    if (cleanup_msg_journal_ok(msg) < 0)
        return msg->status;

    /* Suppressed recipients: their events durable before the commit; a
       message left with no recipient is not queued (cleanup_suppress.c). */
    if (cleanup_suppress_events(msg) < 0) {
        cleanup_msg_fail(msg, 451, CLEANUP_WRITE_ERROR);
        return msg->status;
    }
    if (msg->queued_rcpts == 0 && msg->suppressed != NULL) {
        msg_info("%s: every recipient is suppressed: not queued", msg->qid);
        cleanup_msg_close(msg);
        return 0;
    }

    /* Durability: file, rename, directory -- and only then the answer. A
       failure leaves nothing behind (the renamed file included, when only
       the directory fsync failed), so the client's retry is no duplicate. */
    size = qfile_writer_content_size(msg->writer);
    /* The journal's rule: the event is durable before the change is. */
    if (msg->hold && cleanup_msg_event(msg, size) < 0) {
        cleanup_msg_fail(msg, 451, CLEANUP_WRITE_ERROR);
        return msg->status;
    }
    msg->content_size = size;
    /* The commit itself, and its log lines: cleanup_commit.c. */
    return cleanup_msg_commit(msg);
}

/* cleanup_msg_free - remove the file unless committed; returns NULL */
CLEANUP_MSG *cleanup_msg_free(CLEANUP_MSG *msg)
{
    if (msg == NULL)
        return NULL;
    if (!msg->committed)
        cleanup_msg_close(msg);
    for (size_t i = 0; i < msg->filter_count; i++)
        if (msg->filters[i]->free)
            msg->filters[i]->free(msg->filter_state[i]);
    myfree(msg->filter_state);
    cleanup_content_free(msg);
    vstr_free(msg->reason);
    myfree(msg->tmp_path);
    myfree(msg->final_path);
    myfree(msg->sender);
    myfree(msg->full_name);
    myfree(msg->tenant);
    myfree(msg->tags);
    myfree(msg->metadata);
    myfree(msg->client_info);
    myfree(msg->protocol);
    myfree(msg->helo_name);
    myfree(msg->first_rcpt);
    myfree(msg->pool);
    myfree(msg->pool_sasl);
    myfree(msg->traceparent);
    if (msg->suppressed)
        argv_free(msg->suppressed);
    myfree(msg);
    return NULL;
}

/* cleanup_stale_name - a temporary file's name in queue: incoming/.tmp.*,
   or in reuse/ a copy being made of a taken file (free.QID+) */
static bool cleanup_stale_name(const char *queue, const char *name)
{
    size_t len = strlen(name);

    if (strcmp(queue, MAIL_QUEUE_INCOMING) == 0)
        return strncmp(name, CLEANUP_TMP_PREFIX,
                       sizeof(CLEANUP_TMP_PREFIX) - 1) == 0;
    return len > 0 && name[len - 1] == '+';
}

/* cleanup_remove_stale_in - remove the stale temporary files of queue */
static void cleanup_remove_stale_in(const CLEANUP_CONF *conf, const char *queue,
                                    time_t max_age)
{
    VSTR *path = vstr_alloc(100);
    time_t now = time(NULL);
    struct dirent *entry;
    struct stat st;
    DIR *dir;

    vstr_sprintf(path, "%s/%s", conf->queue_dir, queue);
    if ((dir = opendir(vstr_str(path))) == NULL) {
        if (errno != ENOENT || strcmp(queue, MAIL_QUEUE_INCOMING) == 0)
            msg_warn("open directory %s: %m", vstr_str(path));
        vstr_free(path);
        return;
    }
    while ((entry = readdir(dir)) != NULL) {
        if (!cleanup_stale_name(queue, entry->d_name))
            continue;
        vstr_sprintf(path, "%s/%s/%s", conf->queue_dir, queue, entry->d_name);
        if (lstat(vstr_str(path), &st) == 0 && S_ISREG(st.st_mode) &&
            st.st_mtime + max_age < now) {
            if (unlink(vstr_str(path)) == 0)
                msg_info("removed stale temporary file %s", vstr_str(path));
            else if (errno != ENOENT)
                msg_warn("remove %s: %m", vstr_str(path));
        }
    }
    closedir(dir);
    vstr_free(path);
}

/* cleanup_remove_stale - remove temporary files a crash left behind */
void cleanup_remove_stale(const CLEANUP_CONF *conf, time_t max_age)
{
    cleanup_remove_stale_in(conf, MAIL_QUEUE_INCOMING, max_age);
    cleanup_remove_stale_in(conf, MAIL_QUEUE_REUSE, max_age);
}
