/*
 * qmgr_message - one message in memory: load, route, results, completion
 *
 * A message enters active/, its envelope is read (a corrupt file goes to
 * corrupt/), and each recipient not yet done is routed to a destination:
 * local_transport for a domain in mydestination (a match list, tables
 * allowed) or for an address without a domain (the domain is what
 * smtp_addr_split says, as in smtpd and cleanup: "a@b.test" has none),
 * else default_transport to relayhost or the domain; then
 * transport_maps may override either part, looked up as transport(5)
 * says: the full address (user+ext@domain, user@domain), the domain, its
 * parents as ".parent", then "*". A value is "transport:nexthop"; an
 * empty part keeps the default (":[host]:port" keeps the transport). A
 * table that fails defers the recipient.
 * Results come back one recipient at a time: a bounce or a success that
 * asked NOTIFY=SUCCESS is appended (fsynced) to the bounce log before the
 * recipient is marked done; a deferral is appended to the defer log. While
 * other recipients are outstanding the finished ones are marked done in
 * the queue file (invariant 3) as soon as their events are on disk.
 *
 * The journal (global/events.h) and group commit: every outcome's event
 * (delivered, bounced, deferred), and the received event of a message
 * qmgr takes from incoming/ for the first time, is added to the journal's
 * batch, and its message goes on ctx->commit_list; its queue changes (the
 * done marks, and completion: removal, deferred/, hold/, the bounce
 * request) wait. qmgr_message_commit writes the batch with one fdatasync
 * and only then makes them: it runs once per loop pass when an outcome
 * came in (qmgr_commit_soon: every result the loop had in hand shares the
 * fdatasync), or QMGR_COMMIT_DELAY after a received event that no outcome
 * followed (qmgr_commit_later), and once more when the loop ends. A crash
 * between the fdatasync and the changes repeats the events (same ids: the
 * recipients are delivered again) and loses none. When the batch cannot be
 * written (ENOSPC, EDQUOT, EIO) it stays pending (events_retain) and so
 * do the changes: no recipient is marked done, no message removed or
 * moved, and no new message taken, until a commit retried after a
 * back-off (qmgr_commit_failed) writes it; the stall mark it leaves makes
 * cleanup refuse mail meanwhile. A qmgr that stops before then leaves the
 * recipients undone: the next one delivers them again, with the same
 * event ids (at least once, never lost). Agents are never kept waiting:
 * results are read, and new deliveries start, whether or not a commit is
 * due. With events_enable = no the changes are made at once.
 *
 * Received is written here rather than by cleanup, so that no journal
 * fdatasync sits on the path to the client's 250: a message taken from
 * incoming/ (or found in active/ at start: the last qmgr may have died
 * before its commit) with no attempt and no done mark yet gets it, id
 * NODE/QID/received/0 as cleanup wrote it, so a repeat (after a crash, or
 * a release from hold/ of a message held in its first round) has the same
 * id. Its size and rcpt_count are the queue file's (recipients after
 * virtual alias expansion), its client the client_name/client_addr
 * attributes. cleanup still writes received for a message it puts on
 * hold/ itself, where qmgr does not look.
 *
 * When nothing is pending or in flight the message is complete:
 *   1. deferred recipients older than the queue lifetime become "failed"
 *      bounce-log records (expired);
 *   2. a bounce log is turned into a DSN by the bounce daemon (async);
 *      when that fails the log stays and the message waits in deferred/;
 *      when it worked, the returned event is written before the bounce
 *      log goes: if it cannot be (the journal failing), the log and the
 *      file stay until a commit writes it (QMGR_FINISH_RETURNED), so a
 *      qmgr that dies meanwhile leaves the message to the next one, which
 *      returns it again, with its event (a second DSN, never a lost
 *      event);
 *   3. nothing deferred and no DSN waiting: the file and the defer log
 *      are removed ("removed"; a file of cleanup's leaves active/ on
 *      qmgr_reuse.c's thread, and "removed" is logged once it has);
 *   4. else maybe a delay warning (once), then an "attempt" record, the
 *      next try as the file's mtime (retry_schedule step k for the k-th
 *      attempt, the last step repeating), and a rename into deferred/.
 *
 * send_at: a queue file with not_before=T (api mail, cleanup's) taken
 * before T has each recipient deferred by qmgr itself, reason
 * "scheduled" (its deferred events say so), and goes to deferred/ with T
 * as its next try; such a round counts no attempt, and expiry and the
 * delay warning count from T, not from the arrival.
 *
 * The attempts so far and whether the delay warning went out are on disk
 * as "attempt" and "warned" records of the defer log, so they survive a
 * restart. They are counted once, when the message is loaded, and kept
 * in memory from then on; nothing reads the log again in that round.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "bounce_proto.h"
#include "deliver_log.h"
#include "deliver_proto.h"
#include "dsn_log.h"
#include "events.h"
#include "mail_queue.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile_reuse.h"
#include "qmgr.h"
#include "vstr.h"

#define QMGR_MESSAGE_ID_SCAN 8192 /* content bytes read for Message-ID */

/* finish_step values */
#define QMGR_FINISH_NONE 0 /* not complete yet */
#define QMGR_FINISH_RUNNING 1 /* completion under way */
/* The DSN is out; its returned event waits for a commit, then the bounce
   log goes (qmgr_message_bounced). */
#define QMGR_FINISH_RETURNED 2

/* qmgr_now_usec - wall clock in microseconds */
static long long qmgr_now_usec(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (long long) tv.tv_sec * 1000000 + tv.tv_usec;
}

/* qmgr_log_status - a recipient line qmgr itself writes, in the one
   format (global/deliver_log.h): nothing after qmgr, so delays=a/b/0/0 */
void qmgr_log_status(const QMGR_MESSAGE *msg, const char *address,
                     const char *dsn, const char *category, const char *status,
                     const char *reason)
{
    DELIVER_TIMES times;
    DELIVER_LOG entry = {.qid = msg->qid,
                         .to = address,
                         .orig_to = NULL,
                         .relay = NULL,
                         .dsn = dsn,
                         .category = category,
                         .status = status,
                         .reason = reason};

    gettimeofday(&times.now, NULL);
    times.arrival = msg->info->arrival;
    times.active = deliver_log_usec(msg->active_usec);
    times.request = times.now;
    times.conn = times.now;
    deliver_log(&entry, &times);
}

/* qmgr_message_event_attrs - what every event of msg carries from its
   queue file: tenant, tags and metadata (api mail), pool (cleanup's) */
static void qmgr_message_event_attrs(const QMGR_MESSAGE *msg, EVENT *event)
{
    event->tenant = qfile_info_attr(msg->info, "tenant");
    event->pool = qfile_info_attr(msg->info, "pool");
    event->tags = qfile_info_attr(msg->info, "tags");
    event->metadata = qfile_info_attr(msg->info, "metadata");
    event->traceparent = qfile_info_attr(msg->info, "traceparent");
}

/* qmgr_shape_provider - the provider a bucket stands for: a provider
   rule's NAME, a domain rule's domain; NULL for the default rule (it is
   no provider), a bucket whose MX is being looked up, or none */
const char *qmgr_shape_provider(const QMGR_SHAPE *shape)
{
    return qmgr_rule_provider(shape ? shape->rule : NULL);
}

/* qmgr_rule_provider - the provider a rule stands for (see qmgr.h) */
const char *qmgr_rule_provider(const SHAPING_RULE *rule)
{
    if (rule != NULL && rule->kind == SHAPING_KIND_PROVIDER)
        return rule->key + strlen(SHAPING_PROVIDER_PREFIX);
    if (rule != NULL && rule->kind == SHAPING_KIND_DOMAIN)
        return rule->key;
    return NULL;
}

/* qmgr_message_provider - note recipient index's provider: a provider
   rule's NAME, a domain rule's domain; none for the default rule (it is
   no provider) or an unshaped destination */
void qmgr_message_provider(QMGR_MESSAGE *msg, size_t index,
                           const QMGR_SHAPE *shape)
{
    QMGR_RCPT_MEM *mem = &msg->rcpts[index];
    const char *name = qmgr_shape_provider(shape);

    myfree(mem->provider);
    mem->provider = name ? mystrdup(name) : NULL;
}

/* qmgr_message_source - note the source recipient index is tried from */
void qmgr_message_source(QMGR_MESSAGE *msg, size_t index, const char *source)
{
    QMGR_RCPT_MEM *mem = &msg->rcpts[index];

    myfree(mem->source_ip);
    mem->source_ip = source && *source ? mystrdup(source) : NULL;
}

/* qmgr_message_tls_forget - no TLS noted for mem */
static void qmgr_message_tls_forget(QMGR_RCPT_MEM *mem)
{
    mem->tls_version = myfree(mem->tls_version);
    mem->tls_cipher = myfree(mem->tls_cipher);
    mem->tls_level = myfree(mem->tls_level);
}

/* qmgr_message_tls - note the TLS of the connection recipient index's
   result came over (version NULL: plain text) */
void qmgr_message_tls(QMGR_MESSAGE *msg, size_t index, const char *version,
                      const char *cipher, const char *level)
{
    QMGR_RCPT_MEM *mem = &msg->rcpts[index];

    qmgr_message_tls_forget(mem);
    if (version != NULL && cipher != NULL && level != NULL) {
        mem->tls_version = mystrdup(version);
        mem->tls_cipher = mystrdup(cipher);
        mem->tls_level = mystrdup(level);
    }
}

/* qmgr_message_timing - note the agent's timing of an attempt */
void qmgr_message_timing(QMGR_MESSAGE *msg, size_t index,
                         long long attempt_usec, long long conn_usec)
{
    msg->rcpts[index].attempt_usec = attempt_usec > 0 ? attempt_usec : 0;
    msg->rcpts[index].conn_usec = conn_usec > 0 ? conn_usec : 0;
}

/* qmgr_message_event - add a journal event about recipient index (or the
   message: index SIZE_MAX) to the batch; flush: write the batch now (the
   journal's rule: before the queue change it describes) */
static void qmgr_message_event(QMGR_MESSAGE *msg, size_t index,
                               const char *kind, const char *dsn,
                               const char *reply, const char *relay,
                               const BOUNCE_CLASS *class, bool flush)
{
    struct EVENTS *events = msg->ctx->conf.events;
    const QFILE_RCPT *rcpt =
        index == SIZE_MAX ? NULL : &msg->info->rcpts[index];
    VSTR *seq;
    VSTR *why;
    EVENT event;

    if (events == NULL)
        return;
    seq = vstr_alloc(40);
    /* events.h: ids repeat when the event is repeated after a crash. */
    if (rcpt == NULL)
        vstr_sprintf(seq, "%lld", msg->active_usec);
    else if (strcmp(kind, EVENTS_DEFERRED) == 0)
        vstr_sprintf(seq, "%lld.%lld", (long long) rcpt->offset,
                     msg->active_usec);
    else
        vstr_sprintf(seq, "%lld", (long long) rcpt->offset);
    events_event_init(&event, kind, msg->qid, vstr_str(seq));
    qmgr_message_event_attrs(msg, &event);
    if (rcpt != NULL) {
        event.recipient = rcpt->address;
        event.orig_recipient = rcpt->orcpt;
        event.provider = msg->rcpts[index].provider;
        event.source_ip = msg->rcpts[index].source_ip;
        event.tls_version = msg->rcpts[index].tls_version;
        event.tls_cipher = msg->rcpts[index].tls_cipher;
        event.tls_level = msg->rcpts[index].tls_level;
        if (msg->rcpts[index].attempt_usec > 0)
            event.attempt_seconds =
                (double) msg->rcpts[index].attempt_usec / 1e6;
        if (msg->rcpts[index].conn_usec > 0)
            event.connect_seconds = (double) msg->rcpts[index].conn_usec / 1e6;
        /* The wait before this attempt (the queue-wait span). */
        if (strcmp(kind, EVENTS_EXPIRED) != 0) {
            event.queued_usec = msg->wait_usec;
            if (!msg->scheduled)
                event.attempt = (long long) msg->attempts + 1;
        }
    } else {
        event.sender = msg->info->sender;
    }
    event.dsn = dsn && *dsn ? dsn : NULL;
    event.reply = reply;
    event.relay = relay && *relay ? relay : NULL;
    if (class != NULL) {
        event.category = class->category;
        event.hard = class->hard;
    }
    /* Our own delivery attempt's bounce; a DSN that comes back later is
       another writer's bounced event with async true. */
    if (strcmp(kind, EVENTS_BOUNCED) == 0)
        event.async = 0;
    event.arrival_usec = (long long) msg->info->arrival.tv_sec * 1000000 +
                         msg->info->arrival.tv_usec;
    events_add(events, &event);
    if (flush && msg->ctx->commit_backoff == 0) {
        /* A failure keeps the event pending; the commit retries it. */
        why = vstr_alloc(100);
        if (events_flush(events, why) < 0)
            qmgr_commit_failed(msg->ctx, vstr_str(why));
        vstr_free(why);
    }
    vstr_free(seq);
}

/* qmgr_message_event_flush - write the batch of events; -1 when it
   cannot be written (it stays pending, the commit retries it) */
static int qmgr_message_event_flush(QMGR_MESSAGE *msg)
{
    VSTR *why;
    int ret = 0;

    if (msg->ctx->commit_backoff > 0)
        return -1;
    why = vstr_alloc(100);
    if (events_flush(msg->ctx->conf.events, why) < 0) {
        qmgr_commit_failed(msg->ctx, vstr_str(why));
        ret = -1;
    }
    vstr_free(why);
    return ret;
}

/* qmgr_notify_has - does a NOTIFY= list hold word? */
static bool qmgr_notify_has(const char *notify, const char *word)
{
    size_t len = strlen(word);

    for (const char *cp = notify; *cp;) {
        size_t n = strcspn(cp, ",");

        if (n == len && strncasecmp(cp, word, len) == 0)
            return true;
        cp += n;
        if (*cp == ',')
            cp++;
    }
    return false;
}

/* qmgr_message_path - buf = where the message is now: active/QID */
static VSTR *qmgr_message_path(VSTR *buf, const QMGR_MESSAGE *msg)
{
    return mail_queue_path(buf, msg->ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE,
                           msg->qid);
}

/* qmgr_message_mark - turn recipient index's R record into D on disk */
static int qmgr_message_mark(QMGR_MESSAGE *msg, size_t index)
{
    QMGR_RCPT_MEM *mem = &msg->rcpts[index];
    VSTR *path;
    VSTR *why;
    int fd;
    int ret = -1;

    if (mem->marked || msg->admin_op == QMGR_ADMIN_DELETE)
        return 0;
    path = qmgr_message_path(vstr_alloc(100), msg);
    why = vstr_alloc(100);
    if ((fd = open(vstr_str(path), O_RDWR | O_CLOEXEC)) < 0) {
        msg_warn("%s: open %s: %m", msg->qid, vstr_str(path));
    } else {
        if (qfile_mark_done(fd, msg->info->rcpts[index].offset, why) < 0)
            msg_warn("%s: mark %s done: %s", msg->qid,
                     msg->info->rcpts[index].address, vstr_str(why));
        else
            ret = 0;
        (void) close(fd);
    }
    if (ret == 0)
        mem->marked = true;
    vstr_free(path);
    vstr_free(why);
    return ret;
}

/* qmgr_message_pending - msg has events in the journal's batch: its
   queue changes wait for qmgr_message_commit */
static void qmgr_message_pending(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;

    if (msg->commit_pending)
        return;
    msg->commit_pending = true;
    msg->commit_next = ctx->commit_list;
    ctx->commit_list = msg;
}

/* qmgr_message_commit - the journal's group commit (see the top) */
void qmgr_message_commit(QMGR_CTX *ctx, bool exiting)
{
    QMGR_MESSAGE *list = ctx->commit_list;
    QMGR_MESSAGE *next;
    VSTR *why = vstr_alloc(100);

    /* What the changes below add starts a new batch (and list). */
    ctx->commit_list = NULL;
    if (events_flush(ctx->conf.events, why) < 0) {
        /* The batch stays pending (events_retain), and so do the changes
           it describes: a recipient is not marked done, a message not
           removed, before its event is on disk. On exit the next qmgr
           does them again (the events repeat with the same ids). */
        if (exiting) {
            msg_warn("events: the journal cannot be written: %s: the next"
                     " qmgr repeats what waited for it",
                     vstr_str(why));
            for (QMGR_MESSAGE *msg = list; msg; msg = next) {
                next = msg->commit_next;
                msg->commit_next = NULL;
                msg->commit_pending = false;
            }
        } else {
            ctx->commit_list = list;
            qmgr_commit_failed(ctx, vstr_str(why));
        }
        vstr_free(why);
        return;
    }
    if (ctx->commit_backoff > 0) {
        msg_info("events: the journal is written again");
        ctx->commit_backoff = 0;
        (void) evtimer_del(ctx->commit_timer_ev);
        qmgr_scan_kick(ctx);
    }
    for (QMGR_MESSAGE *msg = list; msg; msg = next) {
        next = msg->commit_next;
        msg->commit_next = NULL;
        msg->commit_pending = false;
        /* Invariant 3 (on exit: everything finished, for the next qmgr). */
        if (exiting || msg->outstanding > 0)
            for (size_t i = 0; i < msg->info->rcpt_count; i++)
                if (msg->rcpts[i].state == QMGR_RCPT_FINISHED)
                    (void) qmgr_message_mark(msg, i);
        if (!exiting)
            qmgr_message_check(msg);
    }
    vstr_free(why);
}

/* qmgr_message_id - the Message-ID header of the queue file on fd into
   id (unfolded, trimmed), looked for in the content records that lie in
   the first QMGR_MESSAGE_ID_SCAN bytes after the envelope (one read):
   false (id empty) when it is not there, or longer than
   EVENTS_MESSAGE_ID_MAX (for the received event: `sluice why`) */
static bool qmgr_message_id(int fd, const QFILE_INFO *info, VSTR *id)
{
    unsigned char *buf = mymalloc(QMGR_MESSAGE_ID_SCAN);
    VSTR *head = vstr_alloc(1024);
    ssize_t got = pread(fd, buf, QMGR_MESSAGE_ID_SCAN, info->content_offset);
    size_t at = 0;
    const char *cp;
    const char *end;

    vstr_reset(id);
    /* The C records: TYPE, 4-byte big-endian length, data; a record cut
       by the end of the read counts as far as it was read. */
    while (got > 0 && at + QFILE_HDR_LEN <= (size_t) got &&
           buf[at] == QFILE_REC_CONT) {
        size_t len = ((size_t) buf[at + 1] << 24) |
                     ((size_t) buf[at + 2] << 16) |
                     ((size_t) buf[at + 3] << 8) | buf[at + 4];
        size_t left = (size_t) got - at - QFILE_HDR_LEN;

        vstr_ncat(head, (const char *) buf + at + QFILE_HDR_LEN,
                  len < left ? len : left);
        if (len >= left ||
            memmem(vstr_str(head), vstr_len(head), "\n\n", 2) != NULL)
            break;
        at += QFILE_HDR_LEN + len;
    }
    myfree(buf);
    cp = vstr_str(head);
    end = cp + vstr_len(head);
    while (cp < end && *cp != '\n') {
        const char *eol = memchr(cp, '\n', (size_t) (end - cp));

        if (eol == NULL)
            break;
        if (end - cp > 11 && strncasecmp(cp, "message-id:", 11) == 0) {
            /* The value, with its continuation lines unfolded. */
            for (cp += 11;;) {
                for (; cp < eol; cp++)
                    if (vstr_len(id) > 0 || (*cp != ' ' && *cp != '\t'))
                        vstr_addch(id, *cp == '\t' ? ' ' : *cp);
                if (eol + 1 >= end || (eol[1] != ' ' && eol[1] != '\t'))
                    break;
                cp = eol + 1;
                if ((eol = memchr(cp, '\n', (size_t) (end - cp))) == NULL) {
                    vstr_reset(id); /* cut by the end of the read */
                    break;
                }
            }
            vstr_trim(id);
            break;
        }
        cp = eol + 1;
    }
    vstr_free(head);
    if (vstr_len(id) > EVENTS_MESSAGE_ID_MAX)
        vstr_reset(id);
    return vstr_len(id) > 0;
}

/* qmgr_message_received - the received event, into the batch (see the
   top); the message waits for the commit. committed: when its file
   entered incoming/ (Unix microseconds, clamped to [arrival, taken]), or
   -1 when not known */
static void qmgr_message_received(QMGR_MESSAGE *msg, const char *message_id,
                                  long long committed)
{
    const char *addr = qfile_info_attr(msg->info, "client_addr");
    const char *name = qfile_info_attr(msg->info, "client_name");
    VSTR *client = vstr_alloc(64);
    EVENT event;

    if (addr != NULL && *addr != 0)
        vstr_sprintf(client, "%s[%s]", name && *name ? name : "unknown", addr);
    else
        vstr_cpy(client, "local");
    events_event_init(&event, EVENTS_RECEIVED, msg->qid, "0");
    event.sender = msg->info->sender;
    event.size = msg->info->content_size;
    event.rcpt_count = (long long) msg->info->rcpt_count;
    event.client = vstr_str(client);
    qmgr_message_event_attrs(msg, &event);
    event.message_id = message_id;
    /* Arrival to the commit: the commit span (events/otel.c). */
    event.committed_usec = committed;
    /* Arrival to queued: the receive span of the trace (events/otel.c). */
    event.arrival_usec = (long long) msg->info->arrival.tv_sec * 1000000 +
                         msg->info->arrival.tv_usec;
    events_add(msg->ctx->conf.events, &event);
    vstr_free(client);
    qmgr_message_pending(msg);
    qmgr_commit_later(msg->ctx);
}

/* qmgr_message_log_rec - fill a dsn_log record for recipient index */
static void qmgr_message_log_rec(DSN_LOG_REC *rec, const QMGR_MESSAGE *msg,
                                 size_t index, const char *action,
                                 const char *status, const char *reason,
                                 const char *diagnostic, const char *remote_mta)
{
    const QFILE_RCPT *rcpt = &msg->info->rcpts[index];

    memset(rec, 0, sizeof(*rec));
    rec->action = action;
    rec->address = rcpt->address;
    rec->orcpt = rcpt->orcpt;
    rec->notify = rcpt->notify;
    rec->offset = (long long) rcpt->offset;
    rec->status = status ? status : "";
    rec->reason = reason ? reason : "";
    rec->diagnostic = diagnostic ? diagnostic : "";
    rec->remote_mta = remote_mta ? remote_mta : "";
    rec->time = (long long) time(NULL);
}

/* qmgr_message_take_durable - a file taken as new from cleanup (its logs
   not read: qmgr_message_activate): make its take (the rename out of
   incoming/) durable before anything is written to its logs, so that a
   power cut never leaves a log beside the file back in incoming/, where
   it would pass for new again. One fsync of active/ and of incoming/
   covers every take before it. */
static void qmgr_message_take_durable(QMGR_MESSAGE *msg)
{
    static const char *const dirs[] = {MAIL_QUEUE_ACTIVE, MAIL_QUEUE_INCOMING};
    QMGR_CTX *ctx = msg->ctx;
    unsigned long long upto = ctx->takes;
    VSTR *failed;

    if (msg->take_seq == 0 || msg->take_seq <= ctx->takes_synced)
        return;
    failed = vstr_alloc(100);
    if (mail_queue_sync(ctx->conf.queue_dir, dirs, SLUICE_ARRAY_LEN(dirs),
                        failed) < 0)
        msg_warn("%s: fsync %s: %m", msg->qid, vstr_str(failed));
    else
        ctx->takes_synced = upto;
    vstr_free(failed);
}

/* qmgr_message_log - append rec to msg's log (DSN_LOG_DEFER or
   DSN_LOG_BOUNCE); even a failed append may leave one, so completion
   looks for it */
static int qmgr_message_log(QMGR_MESSAGE *msg, const char *log,
                            const DSN_LOG_REC *rec, bool sync, VSTR *why)
{
    qmgr_message_take_durable(msg);
    if (strcmp(log, DSN_LOG_BOUNCE) == 0)
        msg->bounce_log_maybe = true;
    else
        msg->defer_log_maybe = true;
    return dsn_log_append(msg->ctx->conf.queue_dir, log, msg->qid, rec, sync,
                          why);
}

/* qmgr_message_result - record one recipient's result */
void qmgr_message_result(QMGR_MESSAGE *msg, size_t index, const char *action,
                         const char *dsn, const char *reason,
                         const char *diagnostic, const char *remote_mta,
                         const BOUNCE_CLASS *class)
{
    QMGR_CTX *ctx = msg->ctx;
    BOUNCE_CLASS own;
    QMGR_RCPT_MEM *mem = &msg->rcpts[index];
    const QFILE_RCPT *rcpt = &msg->info->rcpts[index];
    VSTR *why = vstr_alloc(100);
    VSTR *text = NULL;
    DSN_LOG_REC rec;

    if (mem->state != QMGR_RCPT_PENDING)
        msg_panic("%s: %s: %s has its result already", __func__, msg->qid,
                  rcpt->address);
    /* Deleted: nothing more is written for it, anywhere. */
    if (msg->admin_op == QMGR_ADMIN_DELETE) {
        mem->state = QMGR_RCPT_FINISHED;
        if (msg->outstanding == 0)
            msg_panic("%s: %s: nothing outstanding", __func__, msg->qid);
        msg->outstanding--;
        vstr_free(why);
        return;
    }
    if (strcmp(action, DELIVER_ACTION_SENT) == 0) {
        mem->state = QMGR_RCPT_FINISHED;
        qmgr_message_event(msg, index, EVENTS_DELIVERED, dsn, reason,
                           remote_mta, NULL, false);
        if (qmgr_notify_has(rcpt->notify, "SUCCESS")) {
            qmgr_message_log_rec(&rec, msg, index, DSN_ACTION_DELIVERED, dsn,
                                 reason, diagnostic, remote_mta);
            /* Delivered is delivered: a lost success notice is no reason
               to deliver twice. */
            if (qmgr_message_log(msg, DSN_LOG_BOUNCE, &rec, true, why) < 0)
                msg_warn("%s: success notice for %s lost: %s", msg->qid,
                         rcpt->address, vstr_str(why));
        }
    }
    /* A failure the agent did not classify (an agent died, an older
       agent): classified here, once. */
    if (class == NULL && strcmp(action, DELIVER_ACTION_SENT) != 0) {
        bounce_class_result(ctx->conf.bounce_classes, dsn, diagnostic, reason,
                            &own);
        class = &own;
    }
    if (strcmp(action, DELIVER_ACTION_BOUNCED) == 0) {
        qmgr_message_log_rec(&rec, msg, index, DSN_ACTION_FAILED, dsn, reason,
                             diagnostic, remote_mta);
        rec.category = class->category;
        if (qmgr_message_log(msg, DSN_LOG_BOUNCE, &rec, true, why) == 0) {
            mem->state = QMGR_RCPT_FINISHED;
            qmgr_message_event(msg, index, EVENTS_BOUNCED, dsn, reason,
                               remote_mta, class, false);
        } else {
            /* Without its bounce record the recipient must stay. */
            msg_warn("%s: bounce log for %s: %s: deferred instead", msg->qid,
                     rcpt->address, vstr_str(why));
            text = vstr_alloc(100);
            vstr_sprintf(text, "cannot write the bounce log: %s",
                         vstr_str(why));
            action = DELIVER_ACTION_DEFERRED;
            dsn = "4.3.0";
            reason = vstr_str(text);
            bounce_class_result(ctx->conf.bounce_classes, dsn, NULL, reason,
                                &own);
            class = &own;
        }
    }
    if (strcmp(action, DELIVER_ACTION_DEFERRED) == 0) {
        mem->state = QMGR_RCPT_DEFERRED;
        myfree(mem->defer_dsn);
        myfree(mem->defer_reason);
        mem->defer_dsn = mystrdup(dsn && *dsn ? dsn : "4.0.0");
        mem->defer_reason = mystrdup(reason ? reason : "");
        qmgr_message_event(msg, index, EVENTS_DEFERRED, dsn, reason, remote_mta,
                           class, false);
        qmgr_message_log_rec(&rec, msg, index, DSN_ACTION_DELAYED, dsn, reason,
                             diagnostic, remote_mta);
        rec.category = class->category;
        if (qmgr_message_log(msg, DSN_LOG_DEFER, &rec, false, why) < 0)
            msg_warn("%s: defer log for %s: %s", msg->qid, rcpt->address,
                     vstr_str(why));
    } else if (mem->state != QMGR_RCPT_FINISHED) {
        msg_panic("%s: unknown action %s", __func__, action);
    }
    /* The source was this result's: later events (expired) have none. */
    mem->source_ip = myfree(mem->source_ip);
    qmgr_message_tls_forget(mem);
    mem->attempt_usec = mem->conn_usec = 0;
    if (msg->outstanding == 0)
        msg_panic("%s: %s: nothing outstanding", __func__, msg->qid);
    msg->outstanding--;
    if (ctx->conf.events != NULL) {
        /* The mark (or completion) waits for the event: group commit. */
        qmgr_message_pending(msg);
        qmgr_commit_soon(ctx);
    } else if (mem->state == QMGR_RCPT_FINISHED && msg->outstanding > 0) {
        /* Invariant 3; when the message is complete, completion does it. */
        (void) qmgr_message_mark(msg, index);
    }
    vstr_free(why);
    vstr_free(text);
}

/* qmgr_message_defer_self - a deferral qmgr decided: log it, record it */
void qmgr_message_defer_self(QMGR_MESSAGE *msg, size_t index, const char *dsn,
                             const char *reason)
{
    BOUNCE_CLASS class;

    /* qmgr's own failure: classified here, where it is decided. */
    bounce_class_result(msg->ctx->conf.bounce_classes, dsn, NULL, reason,
                        &class);
    if (msg->admin_op != QMGR_ADMIN_DELETE)
        qmgr_log_status(msg, msg->info->rcpts[index].address, dsn,
                        class.category, DELIVER_ACTION_DEFERRED, reason);
    qmgr_message_result(msg, index, DELIVER_ACTION_DEFERRED, dsn, reason, "",
                        "", &class);
}

/* qmgr_message_free - forget the message; there is room for another */
static void qmgr_message_free(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;

    if (msg->commit_pending)
        msg_panic("%s: %s: its events are not on disk", __func__, msg->qid);
    if (msg->prev)
        msg->prev->next = msg->next;
    else
        ctx->messages = msg->next;
    if (msg->next)
        msg->next->prev = msg->prev;
    for (size_t i = 0; i < msg->info->rcpt_count; i++) {
        myfree(msg->rcpts[i].defer_dsn);
        myfree(msg->rcpts[i].defer_reason);
        myfree(msg->rcpts[i].provider);
        myfree(msg->rcpts[i].source_ip);
        qmgr_message_tls_forget(&msg->rcpts[i]);
    }
    myfree(msg->rcpts);
    qmgr_source_forget(msg);
    qfile_info_free(msg->info);
    myfree(msg);
    ctx->active_count--;
    qmgr_scan_kick(ctx);
}

/* qmgr_message_count - recipients in a state */
static size_t qmgr_message_count(const QMGR_MESSAGE *msg, QMGR_RCPT_STATE state)
{
    size_t count = 0;

    for (size_t i = 0; i < msg->info->rcpt_count; i++)
        if (msg->rcpts[i].state == state)
            count++;
    return count;
}

/* qmgr_message_to_deferred - record the attempt, set the next try, move */
static void qmgr_message_to_deferred(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;
    VSTR *path = qmgr_message_path(vstr_alloc(100), msg);
    VSTR *why = vstr_alloc(100);
    DSN_LOG_REC rec;
    struct timeval times[2];
    time_t next_try;

    if (msg->admin_op == QMGR_ADMIN_DELETE) {
        vstr_free(path);
        vstr_free(why);
        qmgr_message_free(msg);
        return;
    }
    /* The file outlives this round: what finished must say so on disk. */
    for (size_t i = 0; i < msg->info->rcpt_count; i++)
        if (msg->rcpts[i].state == QMGR_RCPT_FINISHED)
            (void) qmgr_message_mark(msg, i);
    if (msg->admin_op == QMGR_ADMIN_HOLD) {
        /* Durable: a crash must not bring a held message back to life. */
        if (mail_queue_move(ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE,
                            MAIL_QUEUE_HOLD, msg->qid) < 0)
            msg_warn("%s: move to %s: %m", msg->qid, MAIL_QUEUE_HOLD);
        else
            msg_info("%s: placed on hold", msg->qid);
        vstr_free(path);
        vstr_free(why);
        qmgr_message_free(msg);
        return;
    }
    if (msg->scheduled) {
        /* Only waiting for send_at: no attempt; the try is then, or after
           the longest retry step when that comes first (a deferred/ file
           stamped further ahead is taken for one of a clock that went
           back: qmgr.c), to be held back again. */
        long long step = qmgr_sched_retry_max(&ctx->conf.sched);

        next_try = msg->not_before;
        if (step > 0 && (long long) next_try - (long long) time(NULL) > step)
            next_try = (time_t) ((long long) time(NULL) + step);
        goto move;
    }
    memset(&rec, 0, sizeof(rec));
    rec.action = DSN_ACTION_ATTEMPT;
    rec.address = rec.orcpt = rec.notify = rec.status = "";
    rec.reason = rec.diagnostic = rec.remote_mta = "";
    rec.offset = -1;
    rec.time = (long long) time(NULL);
    if (qmgr_message_log(msg, DSN_LOG_DEFER, &rec, false, why) < 0)
        msg_warn("%s: defer log: %s", msg->qid, vstr_str(why));
    /* Counted even when the record was not written: this round's step is
       still right; only the next load counts one attempt fewer. */
    msg->attempts++;
    next_try =
        qmgr_sched_retry_next(&ctx->conf.sched, msg->attempts, time(NULL),
                              msg->admin_op == QMGR_ADMIN_REQUEUE);
move:
    times[0].tv_sec = times[1].tv_sec = next_try;
    times[0].tv_usec = times[1].tv_usec = 0;
    if (utimes(vstr_str(path), times) < 0)
        msg_warn("%s: set the next try of %s: %m", msg->qid, vstr_str(path));
    if (mail_queue_rename(ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE,
                          MAIL_QUEUE_DEFERRED, msg->qid) < 0)
        msg_warn("%s: move to %s: %m", msg->qid, MAIL_QUEUE_DEFERRED);
    else
        qmgr_deferred_note(ctx, next_try);
    vstr_free(path);
    vstr_free(why);
    qmgr_message_free(msg);
}

/* qmgr_message_warned - the delay DSN request came back */
static void qmgr_message_warned(QMGR_MESSAGE *msg, bool ok)
{
    VSTR *why = vstr_alloc(100);
    DSN_LOG_REC rec;

    /* Deleted meanwhile: the log is gone and must stay gone. */
    if (ok && msg->admin_op != QMGR_ADMIN_DELETE) {
        memset(&rec, 0, sizeof(rec));
        rec.action = DSN_ACTION_WARNED;
        rec.address = rec.orcpt = rec.notify = rec.status = "";
        rec.reason = rec.diagnostic = rec.remote_mta = "";
        rec.offset = -1;
        rec.time = (long long) time(NULL);
        if (qmgr_message_log(msg, DSN_LOG_DEFER, &rec, true, why) < 0)
            msg_warn("%s: defer log: %s", msg->qid, vstr_str(why));
        else
            msg->warned = true;
    }
    vstr_free(why);
    qmgr_message_to_deferred(msg);
}

/* qmgr_message_since - when the message's wait began: its arrival, or
   its send_at when later (a scheduled message is not late before it) */
static time_t qmgr_message_since(const QMGR_MESSAGE *msg)
{
    return msg->not_before > msg->info->arrival.tv_sec
               ? msg->not_before
               : msg->info->arrival.tv_sec;
}

/* qmgr_message_want_warning - is a delay warning due now? */
static bool qmgr_message_want_warning(const QMGR_MESSAGE *msg)
{
    return qmgr_sched_warn_due(&msg->ctx->conf.sched, qmgr_message_since(msg),
                               time(NULL),
                               qmgr_message_count(msg, QMGR_RCPT_DEFERRED),
                               msg->warned, msg->admin_op == QMGR_ADMIN_HOLD);
}

/* qmgr_message_settle - after any DSN: remove, or back to deferred/ */
static void qmgr_message_settle(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;
    VSTR *path;
    int reused;

    if (msg->admin_op == QMGR_ADMIN_DELETE) {
        qmgr_message_free(msg);
        return;
    }
    if (qmgr_message_count(msg, QMGR_RCPT_DEFERRED) > 0 || msg->bounce_failed) {
        if (qmgr_message_want_warning(msg))
            qmgr_bounce_request(msg, BOUNCE_KIND_DELAY, qmgr_message_warned);
        else
            qmgr_message_to_deferred(msg);
        return;
    }
    /* Invariant 2: every recipient is delivered, or bounced with its DSN
       queued. The removal (or the move to reuse/) stands in for the done
       marks. */
    path = qmgr_message_path(vstr_alloc(100), msg);
    reused = qmgr_reuse_return(msg);
    if (reused == QMGR_REUSE_HANDED) {
        /* qmgr_reuse.c's thread takes it out of active/ and logs it. */
    } else if (reused == QMGR_REUSE_NO && unlink(vstr_str(path)) < 0 &&
               errno != ENOENT) {
        msg_warn("%s: remove %s: %m", msg->qid, vstr_str(path));
    } else {
        if (msg->defer_log_maybe &&
            dsn_log_remove(ctx->conf.queue_dir, DSN_LOG_DEFER, msg->qid) < 0)
            msg_warn("%s: remove defer log: %m", msg->qid);
        msg_info("%s: removed", msg->qid);
    }
    vstr_free(path);
    qmgr_message_free(msg);
}

/* qmgr_message_returned - the DSN is out and its returned event on disk:
   the bounce log goes, then removal or deferred/ */
static void qmgr_message_returned(QMGR_MESSAGE *msg)
{
    if (dsn_log_remove(msg->ctx->conf.queue_dir, DSN_LOG_BOUNCE, msg->qid) < 0)
        msg_warn("%s: remove bounce log: %m", msg->qid);
    qmgr_message_settle(msg);
}

/* qmgr_message_bounced - the DSN request came back */
static void qmgr_message_bounced(QMGR_MESSAGE *msg, bool ok)
{
    if (!ok) {
        msg->bounce_failed = true;
        qmgr_message_settle(msg);
        return;
    }
    if (msg->ctx->conf.events != NULL) {
        qmgr_message_event(msg, SIZE_MAX, EVENTS_RETURNED, NULL, NULL, NULL,
                           NULL, false);
        if (qmgr_message_event_flush(msg) < 0) {
            /* Not on disk: the bounce log (and the file) stay until the
               commit that writes it comes back (qmgr_message_check).
               The outcomes' events are on disk: their marks may go, so
               a next qmgr only returns the message again. */
            msg_info("%s: returned; its event waits for the journal", msg->qid);
            for (size_t i = 0; i < msg->info->rcpt_count; i++)
                if (msg->rcpts[i].state == QMGR_RCPT_FINISHED)
                    (void) qmgr_message_mark(msg, i);
            msg->finish_step = QMGR_FINISH_RETURNED;
            qmgr_message_pending(msg);
            return;
        }
    }
    qmgr_message_returned(msg);
}

/* qmgr_message_expire - deferred recipients past the lifetime fail; -1
   when their events could not be written (completion waits for them) */
static int qmgr_message_expire(QMGR_MESSAGE *msg)
{
    QMGR_CTX *ctx = msg->ctx;
    time_t now = time(NULL);
    long long age = (long long) now - (long long) qmgr_message_since(msg);
    VSTR *reason;
    VSTR *why;
    BOUNCE_CLASS class;
    bool expired = false;

    if (!qmgr_sched_expired(&ctx->conf.sched, qmgr_message_since(msg), now,
                            *msg->info->sender == 0) ||
        qmgr_message_count(msg, QMGR_RCPT_DEFERRED) == 0)
        return 0;
    reason = vstr_alloc(100);
    why = vstr_alloc(100);
    for (size_t i = 0; i < msg->info->rcpt_count; i++) {
        QMGR_RCPT_MEM *mem = &msg->rcpts[i];
        DSN_LOG_REC rec;

        if (mem->state != QMGR_RCPT_DEFERRED)
            continue;
        vstr_sprintf(reason, "message expired after %lld seconds: %s", age,
                     mem->defer_reason ? mem->defer_reason : "");
        qmgr_message_log_rec(&rec, msg, i, DSN_ACTION_FAILED,
                             mem->defer_dsn ? mem->defer_dsn : "4.0.0",
                             vstr_str(reason), "", "");
        /* qmgr's own failure: classified here, where it is decided. */
        bounce_class_result(ctx->conf.bounce_classes, rec.status, NULL,
                            rec.reason, &class);
        rec.category = class.category;
        if (qmgr_message_log(msg, DSN_LOG_BOUNCE, &rec, true, why) < 0) {
            msg_warn("%s: bounce log for %s: %s", msg->qid,
                     msg->info->rcpts[i].address, vstr_str(why));
            continue;
        }
        mem->state = QMGR_RCPT_FINISHED;
        expired = true;
        qmgr_message_event(msg, i, EVENTS_EXPIRED, rec.status, rec.reason, NULL,
                           &class, false);
    }
    /* One fsync for the batch, before the marks or the removal. */
    if (expired)
        msg_info("%s: from=<%s>, status=expired, returned to sender", msg->qid,
                 msg->info->sender);
    vstr_free(reason);
    vstr_free(why);
    return expired ? qmgr_message_event_flush(msg) : 0;
}

/* qmgr_message_check - start completion when nothing is left to wait for */
void qmgr_message_check(QMGR_MESSAGE *msg)
{
    if (msg->finish_step == QMGR_FINISH_RETURNED && !msg->commit_pending) {
        /* Its returned event is on disk now. */
        msg->finish_step = QMGR_FINISH_RUNNING;
        qmgr_message_returned(msg);
        return;
    }
    if (msg->outstanding > 0 || msg->refs > 0 ||
        msg->finish_step != QMGR_FINISH_NONE)
        return;
    /* Complete, but its events are not on disk yet: the commit (at the
       end of this pass, or QMGR_COMMIT_GAP_USEC after the last) comes
       back here. */
    if (msg->commit_pending) {
        qmgr_commit_soon(msg->ctx);
        return;
    }
    msg->finish_step = QMGR_FINISH_RUNNING;
    if (msg->admin_op == QMGR_ADMIN_DELETE) {
        qmgr_message_free(msg);
        return;
    }
    /* Held with work left: straight to hold/; expiry and the DSN of what
       bounced wait for the release (the bounce log stays with the file). */
    if (msg->admin_op == QMGR_ADMIN_HOLD &&
        qmgr_message_count(msg, QMGR_RCPT_DEFERRED) > 0) {
        qmgr_message_to_deferred(msg);
        return;
    }
    if (qmgr_message_expire(msg) < 0) {
        /* Its events are pending: the commit that writes them comes
           back here (the expired recipients are finished by then). */
        msg->finish_step = QMGR_FINISH_NONE;
        qmgr_message_pending(msg);
        return;
    }
    if (msg->bounce_log_maybe &&
        dsn_log_exists(msg->ctx->conf.queue_dir, DSN_LOG_BOUNCE, msg->qid))
        qmgr_bounce_request(msg, BOUNCE_KIND_BOUNCE, qmgr_message_bounced);
    else
        qmgr_message_settle(msg);
}

/* qmgr_message_find - the message qid in memory, or NULL */
QMGR_MESSAGE *qmgr_message_find(QMGR_CTX *ctx, const char *qid)
{
    for (QMGR_MESSAGE *msg = ctx->messages; msg; msg = msg->next)
        if (strcmp(msg->qid, qid) == 0)
            return msg;
    return NULL;
}

/* qmgr_message_withdrawn - a pending recipient taken back unstarted: it
   waits, with nothing logged (it was not tried) */
void qmgr_message_withdrawn(QMGR_MESSAGE *msg, size_t index)
{
    QMGR_RCPT_MEM *mem = &msg->rcpts[index];

    if (mem->state != QMGR_RCPT_PENDING)
        msg_panic("%s: %s: %s is not pending", __func__, msg->qid,
                  msg->info->rcpts[index].address);
    if (msg->outstanding == 0)
        msg_panic("%s: %s: nothing outstanding", __func__, msg->qid);
    mem->state = QMGR_RCPT_DEFERRED;
    msg->outstanding--;
}

/* qmgr_message_admin - the administrator's delete, hold or requeue */
void qmgr_message_admin(QMGR_MESSAGE *msg, QMGR_ADMIN_OP op)
{
    QMGR_CTX *ctx = msg->ctx;
    VSTR *path;

    if (msg->admin_op == QMGR_ADMIN_DELETE)
        return;
    msg->admin_op = op;
    if (op == QMGR_ADMIN_DELETE) {
        /* The file goes now; nothing written later may bring it back
           (marks open without O_CREAT, logs are skipped). */
        path = qmgr_message_path(vstr_alloc(100), msg);
        if (unlink(vstr_str(path)) < 0 && errno != ENOENT)
            msg_warn("%s: remove %s: %m", msg->qid, vstr_str(path));
        if (dsn_log_remove(ctx->conf.queue_dir, DSN_LOG_DEFER, msg->qid) < 0)
            msg_warn("%s: remove defer log: %m", msg->qid);
        if (dsn_log_remove(ctx->conf.queue_dir, DSN_LOG_BOUNCE, msg->qid) < 0)
            msg_warn("%s: remove bounce log: %m", msg->qid);
        msg_info("%s: removed by the administrator", msg->qid);
        vstr_free(path);
    }
    if (op == QMGR_ADMIN_DELETE || op == QMGR_ADMIN_HOLD) {
        /* Deliveries in flight end on their own; the rest never start. */
        msg->refs++;
        qmgr_dest_withdraw(msg);
        msg->refs--;
    }
    qmgr_message_check(msg);
}

/* qmgr_message_is_local - mydestination, for qmgr_route */
static int qmgr_message_is_local(void *context, const char *domain)
{
    QMGR_CTX *ctx = context;

    return match_list_match(ctx->conf.mydestination, domain);
}

/* qmgr_message_map_result - a maps answer as qmgr_route wants it */
static int qmgr_message_map_result(const char *found, int error,
                                   const char **value)
{
    if (found) {
        *value = found;
        return 1;
    }
    return error == MAP_FAIL ? -1 : 0;
}

/* qmgr_message_find_addr - transport_maps by address, for qmgr_route */
static int qmgr_message_find_addr(void *context, const char *address,
                                  const char **value)
{
    QMGR_CTX *ctx = context;
    int error = MAP_OK;
    const char *found = maps_find_addr(ctx->conf.transport_maps, address,
                                       ctx->conf.recipient_delimiter,
                                       MAPS_ADDR_NO_AT_DOMAIN, &error);

    return qmgr_message_map_result(found, error, value);
}

/* qmgr_message_find_fixed - transport_maps by key, for qmgr_route */
static int qmgr_message_find_fixed(void *context, const char *key,
                                   const char **value)
{
    QMGR_CTX *ctx = context;
    int error = MAP_OK;
    const char *found = maps_find_fixed(ctx->conf.transport_maps, key, &error);

    return qmgr_message_map_result(found, error, value);
}

/* qmgr_message_find_sender_addr - sender_dependent_relayhost_maps by
   address, for qmgr_route */
static int qmgr_message_find_sender_addr(void *context, const char *sender,
                                         const char **value)
{
    QMGR_CTX *ctx = context;
    int error = MAP_OK;
    const char *found = maps_find_addr(ctx->conf.sender_relayhost_maps, sender,
                                       ctx->conf.recipient_delimiter,
                                       MAPS_ADDR_NO_AT_DOMAIN, &error);

    return qmgr_message_map_result(found, error, value);
}

/* qmgr_message_find_sender_fixed - sender_dependent_relayhost_maps by
   key, for qmgr_route */
static int qmgr_message_find_sender_fixed(void *context, const char *key,
                                          const char **value)
{
    QMGR_CTX *ctx = context;
    int error = MAP_OK;
    const char *found =
        maps_find_fixed(ctx->conf.sender_relayhost_maps, key, &error);

    return qmgr_message_map_result(found, error, value);
}

/* qmgr_message_domains - match domain against a domain list compiled on
   first use, and again at most once a second while a table in it cannot
   be opened (its recipients wait meanwhile) */
static int qmgr_message_domains(const char *param, const char *value,
                                struct MATCH_LIST **list, time_t *tried,
                                const char *domain)
{
    time_t now = time(NULL);

    if (*list == NULL) {
        VSTR *why;

        if (now == *tried)
            return -1;
        *tried = now;
        why = vstr_alloc(64);
        *list = match_list_create(param, value, MATCH_LIST_DOMAIN, why);
        if (*list == NULL)
            msg_warn("%s", vstr_str(why));
        vstr_free(why);
        if (*list == NULL)
            return -1;
    }
    return match_list_match(*list, domain);
}

/* qmgr_message_is_virtual - virtual_alias_domains, for qmgr_route */
static int qmgr_message_is_virtual(void *context, const char *domain)
{
    QMGR_CONF *conf = &((QMGR_CTX *) context)->conf;

    return qmgr_message_domains("virtual_alias_domains",
                                conf->virtual_alias_domains_value,
                                &conf->virtual_alias_domains,
                                &conf->virtual_alias_domains_tried, domain);
}

/* qmgr_message_is_mailbox - virtual_mailbox_domains, for qmgr_route */
static int qmgr_message_is_mailbox(void *context, const char *domain)
{
    QMGR_CONF *conf = &((QMGR_CTX *) context)->conf;

    return qmgr_message_domains("virtual_mailbox_domains",
                                conf->virtual_mailbox_domains_value,
                                &conf->virtual_mailbox_domains,
                                &conf->virtual_mailbox_domains_tried, domain);
}

/* qmgr_message_bounce_self - a bounce qmgr decided: log it, record it */
static void qmgr_message_bounce_self(QMGR_MESSAGE *msg, size_t index,
                                     const char *dsn, const char *reason)
{
    BOUNCE_CLASS class;

    /* qmgr's own failure: classified here, where it is decided. */
    bounce_class_result(msg->ctx->conf.bounce_classes, dsn, NULL, reason,
                        &class);
    if (msg->admin_op != QMGR_ADMIN_DELETE)
        qmgr_log_status(msg, msg->info->rcpts[index].address, dsn,
                        class.category, DELIVER_ACTION_BOUNCED, reason);
    qmgr_message_result(msg, index, DELIVER_ACTION_BOUNCED, dsn, reason, "", "",
                        &class);
}

/* qmgr_message_transport_up - does transport's private/ socket exist?
   The last transport found is trusted for a second: one stat a second
   while mail goes to one transport (mail that alternates between
   transports still costs a stat per recipient), not one per recipient;
   a socket gone
   within that second fails the delivery's connect instead, which defers
   the same way ("mail transport unavailable", no attempt counted). */
static bool qmgr_message_transport_up(QMGR_CTX *ctx, const char *transport,
                                      VSTR *sock)
{
    struct timeval tv;
    long long now;
    struct stat st;

    if (event_base_gettimeofday_cached(ctx->base, &tv) < 0)
        (void) gettimeofday(&tv, NULL);
    now = (long long) tv.tv_sec * 1000000 + tv.tv_usec;
    if (strcmp(ctx->transport_seen, transport) == 0 &&
        now >= ctx->transport_seen_usec &&
        now - ctx->transport_seen_usec < 1000000)
        return true;
    mail_queue_service(sock, ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                       transport);
    if (stat(vstr_str(sock), &st) < 0) {
        ctx->transport_seen[0] = 0;
        return false;
    }
    if (strlen(transport) < sizeof(ctx->transport_seen)) {
        memcpy(ctx->transport_seen, transport, strlen(transport) + 1);
        ctx->transport_seen_usec = now;
    }
    return true;
}

/* qmgr_message_route - route one recipient (qmgr_route decides) and queue
   it, or defer it when that cannot be done now */
static void qmgr_message_route(QMGR_MESSAGE *msg, size_t index)
{
    QMGR_CTX *ctx = msg->ctx;
    const char *address = msg->info->rcpts[index].address;
    QMGR_ROUTE_TABLES tables = {
        .is_local = qmgr_message_is_local,
        .context = ctx,
    };
    VSTR *transport = vstr_alloc(32);
    VSTR *nexthop = vstr_alloc(64);
    VSTR *sock = vstr_alloc(100);

    if (maps_count(ctx->conf.transport_maps) > 0) {
        tables.find_addr = qmgr_message_find_addr;
        tables.find_fixed = qmgr_message_find_fixed;
    }
    if (*ctx->conf.virtual_alias_domains_value != 0)
        tables.is_virtual = qmgr_message_is_virtual;
    if (*ctx->conf.virtual_mailbox_domains_value != 0)
        tables.is_mailbox = qmgr_message_is_mailbox;
    if (maps_count(ctx->conf.sender_relayhost_maps) > 0) {
        tables.find_sender_addr = qmgr_message_find_sender_addr;
        tables.find_sender_fixed = qmgr_message_find_sender_fixed;
    }
    switch (qmgr_route(&ctx->conf.route, &tables, msg->info->sender, address,
                       transport, nexthop)) {
    case QMGR_ROUTE_LOCAL_FAILED:
        qmgr_message_defer_self(msg, index, "4.3.0",
                                "mydestination lookup failed");
        break;
    case QMGR_ROUTE_TABLE_FAILED:
        qmgr_message_defer_self(msg, index, "4.3.0",
                                "transport table lookup failed");
        break;
    case QMGR_ROUTE_VIRTUAL_FAILED:
        qmgr_message_defer_self(msg, index, "4.3.0",
                                "virtual_alias_domains lookup failed");
        break;
    case QMGR_ROUTE_VIRTUAL_UNKNOWN:
        qmgr_message_bounce_self(msg, index, "5.1.1",
                                 "User unknown in virtual alias table");
        break;
    case QMGR_ROUTE_MAILBOX_FAILED:
        qmgr_message_defer_self(msg, index, "4.3.0",
                                "virtual_mailbox_domains lookup failed");
        break;
    case QMGR_ROUTE_SENDER_FAILED:
        qmgr_message_defer_self(msg, index, "4.3.0",
                                "sender_dependent_relayhost_maps lookup"
                                " failed");
        break;
    case QMGR_ROUTE_OK:
        if (!qmgr_message_transport_up(ctx, vstr_str(transport), sock))
            qmgr_message_defer_self(msg, index, "4.3.0",
                                    "mail transport unavailable");
        else
            qmgr_dest_add(msg, vstr_str(transport), vstr_str(nexthop), index);
        break;
    }
    vstr_free(transport);
    vstr_free(nexthop);
    vstr_free(sock);
}

/* qmgr_message_not_before - the queue file's not_before= (api send_at),
   0 when none or not a number (then the message is not held back) */
static time_t qmgr_message_not_before(const QFILE_INFO *info)
{
    const char *text = qfile_info_attr(info, "not_before");
    char *end;
    long long when;

    if (text == NULL)
        return 0;
    errno = 0;
    when = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != 0 || when <= 0)
        return 0;
    return (time_t) when;
}

/* qmgr_message_history - what the defer log says of earlier rounds: the
   attempts made and whether the delay warning went out. A log that cannot
   be read counts no attempt (the retry step starts over) and no warning
   is sent on it (one may have gone out already). */
static void qmgr_message_history(QMGR_MESSAGE *msg)
{
    VSTR *why = vstr_alloc(100);
    DSN_LOG *dlog;

    if ((dlog = dsn_log_read(msg->ctx->conf.queue_dir, DSN_LOG_DEFER, msg->qid,
                             why)) == NULL) {
        msg_warn("%s: defer log: %s", msg->qid, vstr_str(why));
        msg->warned = true;
        msg->defer_log_maybe = true;
    } else {
        msg->defer_log_maybe = !dlog->absent;
        msg->attempts = dsn_log_count(dlog, DSN_ACTION_ATTEMPT);
        msg->warned = dsn_log_count(dlog, DSN_ACTION_WARNED) > 0;
        dsn_log_free(dlog);
    }
    vstr_free(why);
}

/* qmgr_message_euid - qmgr's effective uid, asked once (it is set for
   good before the first message) */
static uid_t qmgr_message_euid(void)
{
    static uid_t euid = (uid_t) -1;

    if (euid == (uid_t) -1)
        euid = geteuid();
    return euid;
}

/* qmgr_message_entered - when qid's file entered from_queue, and its
   next try (deferred/: its mtime; else 0), in Unix microseconds; entered
   0 when it cannot be seen. A rename is a change (ctime), so this is read
   before qmgr's own. reusable: may its file be written again once the
   message is done (qmgr_reuse.c)? */
static void qmgr_message_entered(const QMGR_CTX *ctx, const char *from_queue,
                                 const char *qid, long long *entered,
                                 long long *due, bool *reusable)
{
    VSTR *path =
        mail_queue_path(vstr_alloc(100), ctx->conf.queue_dir, from_queue, qid);
    struct stat st;

    *entered = *due = 0;
    *reusable = false;
    if (stat(vstr_str(path), &st) == 0) {
        /* Only cleanup's own files, straight from it (qfile_reuse.h). */
        *reusable = strcmp(from_queue, MAIL_QUEUE_INCOMING) == 0 &&
                    (st.st_mode & 07777) == QFILE_REUSE_MODE &&
                    st.st_uid == qmgr_message_euid();
        *entered =
            (long long) st.st_ctim.tv_sec * 1000000 + st.st_ctim.tv_nsec / 1000;
        if (strcmp(from_queue, MAIL_QUEUE_DEFERRED) == 0)
            *due = (long long) st.st_mtim.tv_sec * 1000000 +
                   st.st_mtim.tv_nsec / 1000;
    }
    vstr_free(path);
}

/* qmgr_message_activate - take qid into active/ and schedule it */
void qmgr_message_activate(QMGR_CTX *ctx, const char *from_queue,
                           const char *qid)
{
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    VSTR *message_id = vstr_alloc(64);
    QFILE_INFO *info = NULL;
    QMGR_MESSAGE *msg;
    long long entered;
    long long due;
    bool reusable;
    int fd;

    qmgr_message_entered(ctx, from_queue, qid, &entered, &due, &reusable);
    if (strcmp(from_queue, MAIL_QUEUE_ACTIVE) != 0 &&
        mail_queue_rename(ctx->conf.queue_dir, from_queue, MAIL_QUEUE_ACTIVE,
                          qid) < 0) {
        if (errno != ENOENT)
            msg_warn("%s: move from %s to %s: %m", qid, from_queue,
                     MAIL_QUEUE_ACTIVE);
        goto out;
    }
    mail_queue_path(path, ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE, qid);
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT)
            msg_warn("%s: open %s: %m", qid, vstr_str(path));
        goto out;
    }
    info = qfile_info_read_new(fd, why);
    /* Only for a received event (below): one read of the headers. */
    if (info != NULL && ctx->conf.events != NULL && info->rcpt_done == 0 &&
        strcmp(from_queue, MAIL_QUEUE_DEFERRED) != 0)
        (void) qmgr_message_id(fd, info, message_id);
    (void) close(fd);
    if (info == NULL) {
        /* Invariant 5: set it aside, keep the queue flowing. */
        msg_warn("%s: corrupt queue file: %s: moved to %s", qid, vstr_str(why),
                 MAIL_QUEUE_CORRUPT);
        if (mail_queue_move(ctx->conf.queue_dir, MAIL_QUEUE_ACTIVE,
                            MAIL_QUEUE_CORRUPT, qid) < 0)
            msg_warn("%s: move to %s: %m", qid, MAIL_QUEUE_CORRUPT);
        goto out;
    }
    msg = mycalloc(1, sizeof(*msg));
    msg->ctx = ctx;
    msg->defer_log_maybe = true; /* until qmgr_message_history() knows */
    memcpy(msg->qid, qid, QID_SIZE);
    msg->info = info;
    msg->rcpts =
        mycalloc(info->rcpt_count ? info->rcpt_count : 1, sizeof(*msg->rcpts));
    msg->active_usec = qmgr_now_usec();
    msg->wait_usec = qmgr_sched_wait_start(
        entered, due,
        (long long) info->arrival.tv_sec * 1000000 + info->arrival.tv_usec,
        msg->active_usec);
    msg->not_before = qmgr_message_not_before(info);
    msg->scheduled = msg->not_before > time(NULL);
    msg->reusable = reusable;
    /* A file straight from cleanup (the test of reusable, and no done
       mark) has no defer or bounce log: qmgr writes both, and only for
       messages it has taken. Files moved back into incoming/ are marked
       (global/mail_queue.c), so they are not taken for such. */
    msg->bounce_log_maybe = !reusable || info->rcpt_done > 0;
    if (msg->bounce_log_maybe) {
        qmgr_message_history(msg);
    } else {
        msg->defer_log_maybe = false;
        msg->take_seq = ++ctx->takes;
    }
    if ((msg->next = ctx->messages) != NULL)
        msg->next->prev = msg;
    ctx->messages = msg;
    ctx->active_count++;
    msg_info("%s: from=<%s>, size=%lld, nrcpt=%zu (queue active)", qid,
             info->sender, info->content_size, info->rcpt_count);
    if (ctx->conf.events != NULL &&
        (strcmp(from_queue, MAIL_QUEUE_INCOMING) == 0 ||
         strcmp(from_queue, MAIL_QUEUE_ACTIVE) == 0) &&
        msg->attempts == 0 && info->rcpt_done == 0)
        qmgr_message_received(
            msg, vstr_len(message_id) > 0 ? vstr_str(message_id) : NULL,
            /* cleanup's rename into incoming/ changed its ctime */
            strcmp(from_queue, MAIL_QUEUE_INCOMING) == 0 && entered > 0
                ? qmgr_sched_wait_start(entered, 0,
                                        (long long) info->arrival.tv_sec *
                                                1000000 +
                                            info->arrival.tv_usec,
                                        msg->active_usec)
                : -1);

    /* The load holds a reference so nothing completes half-way. */
    msg->refs = 1;
    for (size_t i = 0; i < info->rcpt_count; i++) {
        if (info->rcpts[i].done) {
            msg->rcpts[i].state = QMGR_RCPT_DONE_BEFORE;
            msg->rcpts[i].marked = true;
        } else {
            msg->rcpts[i].state = QMGR_RCPT_PENDING;
            msg->outstanding++;
        }
    }
    for (size_t i = 0; i < info->rcpt_count; i++)
        if (msg->rcpts[i].state == QMGR_RCPT_PENDING) {
            if (msg->scheduled)
                qmgr_message_defer_self(msg, i, "4.0.0", "scheduled");
            else
                qmgr_message_route(msg, i);
        }
    msg->refs--;
    qmgr_message_check(msg);

out:
    vstr_free(path);
    vstr_free(why);
    vstr_free(message_id);
}
