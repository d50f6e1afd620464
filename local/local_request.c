/*
 * local_request - the qmgr side of the local delivery agent
 *
 * qmgr connects to private/local and sends one request: DELIVER, then its
 * RCPT lists (global/deliver_proto.h). The queue file is read whole
 * (its content records); each recipient is checked against the
 * Delivered-To: headers (a forwarding loop), expanded (local_expand.c)
 * and forwarded (local_deliver.c). Every final delivery gets its log line
 * (to=<...>, orig_to=<...>, relay=local, delay=..., dsn=..., status=...)
 * and is folded into its recipient's outcome (the worst so far;
 * soft_bounce makes a bounce a deferral); each recipient's RESULT goes to
 * qmgr, then DONE.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/time.h>

#include "argv.h"
#include "attr.h"
#include "deliver_agent.h"
#include "deliver_log.h"
#include "deliver_proto.h"
#include "local.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "vstr.h"

/* --- results ----------------------------------------------------------- */

/* local_log - one Postfix-style line for one final delivery: no
   connection setup, so delays=a/b/0/d */
static void local_log(LOCAL_REQ *req, const char *to, const char *orig_to,
                      const char *dsn, const char *category, const char *status,
                      const char *reason)
{
    DELIVER_TIMES times;
    DELIVER_LOG entry = {.qid = req->qid,
                         .to = to,
                         .orig_to = orig_to,
                         .relay = req->ctx->virtual ? "virtual" : "local",
                         .dsn = dsn,
                         .category = category,
                         .status = status,
                         .reason = reason};

    gettimeofday(&times.now, NULL);
    times.active = deliver_log_usec(req->active_usec);
    times.arrival = req->info ? req->info->arrival : times.active;
    times.request = req->t_request;
    times.conn = req->t_request;
    deliver_log(&entry, &times);
}

/* local_stat_name - the deliver_proto action of a status */
static const char *local_stat_name(LOCAL_STAT stat)
{
    return stat == LOCAL_STAT_SENT    ? DELIVER_ACTION_SENT
           : stat == LOCAL_STAT_DEFER ? DELIVER_ACTION_DEFERRED
                                      : DELIVER_ACTION_BOUNCED;
}

/* local_soften - soft_bounce: a bounce becomes a deferral */
static void local_soften(LOCAL_CTX *ctx, LOCAL_RESULT *res)
{
    if (ctx->conf.soft_bounce && res->stat == LOCAL_STAT_BOUNCE) {
        res->stat = LOCAL_STAT_DEFER;
        if (res->dsn[0] == '5')
            res->dsn[0] = '4';
    }
}

/* local_outcome - one final delivery's result: log it, fold it into the
   recipient's outcome. what is the log text of a success
   ("delivered to mailbox"). */
void local_outcome(LOCAL_STATE *state, const char *to, LOCAL_RESULT *res,
                   const char *what)
{
    LOCAL_CTX *ctx = state->req->ctx;
    const char *reason =
        res->stat == LOCAL_STAT_SENT && what ? what : vstr_str(res->text);

    BOUNCE_CLASS class = {.category = NULL, .hard = false};

    local_soften(ctx, res);
    /* Classified once, here, for the log line and the RESULT. */
    if (res->stat != LOCAL_STAT_SENT)
        bounce_class_result(ctx->conf.bounce_classes, res->dsn, NULL, reason,
                            &class);
    local_log(state->req, to, state->rcpt->address, res->dsn, class.category,
              local_stat_name(res->stat), reason);
    if (res->stat == LOCAL_STAT_SENT) {
        state->sent++;
        if (!state->deferred && !state->bounced)
            local_result_set(&state->outcome, LOCAL_STAT_SENT, res->dsn, "%s",
                             reason);
    } else if (res->stat == LOCAL_STAT_DEFER) {
        if (!state->deferred) {
            local_result_set(&state->outcome, LOCAL_STAT_DEFER, res->dsn, "%s",
                             reason);
            state->outcome.category = class.category;
            state->outcome.hard = class.hard;
        }
        state->deferred = true;
    } else {
        if (!state->deferred && !state->bounced) {
            if (strcasecmp(to, state->rcpt->address) != 0)
                local_result_set(&state->outcome, LOCAL_STAT_BOUNCE, res->dsn,
                                 "%s: %s", to, reason);
            else
                local_result_set(&state->outcome, LOCAL_STAT_BOUNCE, res->dsn,
                                 "%s", reason);
            state->outcome.category = class.category;
            state->outcome.hard = class.hard;
        }
        state->bounced = true;
    }
}

/* local_send_result - the recipient's RESULT to qmgr */
static int local_send_result(LOCAL_REQ *req, LOCAL_RCPT *rcpt,
                             LOCAL_RESULT *res)
{
    DELIVER_RESULT result = {.offset = rcpt->offset,
                             .action = local_stat_name(res->stat),
                             .dsn = res->dsn,
                             .reason = vstr_str(res->text),
                             .relay = req->ctx->virtual ? "virtual" : "local"};
    ATTR_LIST *list;
    int ret;

    /* A failure decided without a final delivery (local_outcome did not
       see it) is classified here, the one place it is known. */
    if (res->stat != LOCAL_STAT_SENT && res->category == NULL) {
        BOUNCE_CLASS class;

        bounce_class_result(req->ctx->conf.bounce_classes, res->dsn, NULL,
                            vstr_str(res->text), &class);
        res->category = class.category;
        res->hard = class.hard;
    }
    result.category = res->stat != LOCAL_STAT_SENT ? res->category : NULL;
    result.hard = res->hard;
    list = deliver_result_list(&result);

    ret = attr_stream_write(req->stream, list, req->why);
    attr_list_free(list);
    return ret;
}

/* --- one recipient ----------------------------------------------------- */

/* local_deliver_rcpt - everything for one original recipient */
static void local_deliver_rcpt(LOCAL_REQ *req, LOCAL_RCPT *rcpt)
{
    LOCAL_CONF *conf = &req->ctx->conf;
    LOCAL_STATE state = {.req = req, .rcpt = rcpt};
    VSTR *user = vstr_alloc(64);
    VSTR *ext = vstr_alloc(16);

    state.domain = vstr_alloc(64);
    state.path = argv_alloc(8);
    state.done = argv_alloc(8);
    state.delivered = argv_alloc(8);
    state.includes = argv_alloc(4);
    state.forward = argv_alloc(4);
    state.outcome.text = vstr_alloc(100);
    state.scratch.text = vstr_alloc(100);
    local_addr_split(rcpt->address, conf->delims, user, ext, state.domain);
    if (local_delivered_to_seen(vstr_str(req->content), vstr_len(req->content),
                                rcpt->address)) {
        local_result_set(&state.scratch, LOCAL_STAT_BOUNCE, "5.4.6",
                         "mail forwarding loop for %s", rcpt->address);
        local_outcome(&state, rcpt->address, &state.scratch, NULL);
    } else if (req->ctx->virtual) {
        local_virtual(&state);
    } else if (vstr_len(user) == 0) {
        local_result_set(&state.scratch, LOCAL_STAT_BOUNCE, "5.1.3",
                         "empty local part in %s", rcpt->address);
        local_outcome(&state, rcpt->address, &state.scratch, NULL);
    } else {
        local_resolve(&state, vstr_str(user), vstr_str(ext), 0);
        if (state.forward->argc > 0)
            local_forward(&state);
    }
    if (state.sent == 0 && !state.deferred && !state.bounced)
        local_result_set(&state.outcome, LOCAL_STAT_BOUNCE, "5.1.1",
                         "alias expands to nothing");
    if (local_send_result(req, rcpt, &state.outcome) < 0)
        msg_warn("%s: RESULT to qmgr: %s", req->qid, vstr_str(req->why));
    vstr_free(user);
    vstr_free(ext);
    vstr_free(state.domain);
    argv_free(state.path);
    argv_free(state.done);
    argv_free(state.delivered);
    argv_free(state.includes);
    argv_free(state.forward);
    myfree(state.owner_sender);
    vstr_free(state.outcome.text);
    vstr_free(state.scratch.text);
}

/* --- requests ---------------------------------------------------------- */

/* local_read_content - the whole content of the queue file on fd */
static int local_read_content(int fd, VSTR *out, VSTR *why)
{
    QFILE_READER *reader;
    QFILE_REC rec;
    int got;

    if (lseek(fd, 0, SEEK_SET) < 0) {
        vstr_sprintf(why, "seek: %s", strerror(errno));
        return -1;
    }
    reader = qfile_reader_alloc(fd);
    while ((got = qfile_read_rec(reader, &rec, why)) > 0)
        if (rec.type == QFILE_REC_CONT)
            vstr_ncat(out, rec.data, rec.len);
    qfile_reader_free(reader);
    return got < 0 ? -1 : 0;
}

/* local_req_read - DELIVER and its RCPT lists, through the shared
   reader; 0 or -1 (why) */
static int local_req_read(LOCAL_REQ *req)
{
    DELIVER_REQ *in = deliver_agent_read(req->stream, req->why, &req->qid);

    if (in == NULL)
        return -1;
    req->queue_name = mystrdup(in->queue_name);
    req->qid = mystrdup(in->queue_id);
    req->nexthop = mystrdup(in->nexthop);
    req->sender = mystrdup(in->sender);
    req->active_usec = in->active_usec;
    req->rcpts = mycalloc(in->rcpt_count, sizeof(LOCAL_RCPT));
    for (size_t i = 0; i < in->rcpt_count; i++) {
        req->rcpts[i].offset = in->rcpts[i].offset;
        req->rcpts[i].address = mystrdup(in->rcpts[i].address);
        req->rcpts[i].orcpt = mystrdup(in->rcpts[i].orcpt);
        req->rcpts[i].notify = mystrdup(in->rcpts[i].notify);
    }
    req->rcpt_count = in->rcpt_count;
    deliver_req_free(in);
    return 0;
}

/* local_req_done - the DONE list */
static void local_req_done(LOCAL_REQ *req, int status, const char *reason)
{
    DELIVER_DONE done = {
        .status = status, .site_failed = false, .reason = reason};
    ATTR_LIST *list = deliver_done_list(&done);

    if (attr_stream_write(req->stream, list, req->why) < 0)
        msg_warn("%s: DONE to qmgr: %s", req->qid ? req->qid : "?",
                 vstr_str(req->why));
    attr_list_free(list);
}

/* local_req_free - release a request */
static void local_req_free(LOCAL_REQ *req)
{
    for (size_t i = 0; i < req->rcpt_count; i++) {
        myfree(req->rcpts[i].address);
        myfree(req->rcpts[i].orcpt);
        myfree(req->rcpts[i].notify);
    }
    myfree(req->rcpts);
    myfree(req->queue_name);
    myfree(req->qid);
    myfree(req->nexthop);
    myfree(req->sender);
    if (req->info)
        qfile_info_free(req->info);
    vstr_free(req->content);
    vstr_free(req->why);
    attr_stream_close(req->stream);
    myfree(req);
}

/* local_serve - one connection from qmgr: one request */
void local_serve(LOCAL_CTX *ctx, int fd)
{
    LOCAL_REQ *req = mycalloc(1, sizeof(*req));
    VSTR *path = vstr_alloc(100);
    ATTR_LIST *hello;
    int qfd = -1;

    req->ctx = ctx;
    req->stream = attr_stream_open(fd, DELIVER_LIST_MAX, ctx->conf.timeout_ms);
    req->why = vstr_alloc(100);
    req->content = vstr_alloc(8192);
    /* Our HELLO first, so that qmgr can tell a version mismatch too. */
    hello = deliver_hello_list();
    if (attr_stream_write(req->stream, hello, req->why) < 0) {
        msg_warn("qmgr connection: HELLO: %s", vstr_str(req->why));
        attr_list_free(hello);
        goto out;
    }
    attr_list_free(hello);
    if (local_req_read(req) < 0) {
        msg_warn("%s%sqmgr connection: %s", req->qid ? req->qid : "",
                 req->qid ? ": " : "", vstr_str(req->why));
        goto out;
    }
    gettimeofday(&req->t_request, NULL);
    mail_queue_path(path, ctx->conf.queue_dir, req->queue_name, req->qid);
    if ((qfd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        vstr_sprintf(req->why, "open %s: %s", vstr_str(path), strerror(errno));
    } else if ((req->info = qfile_info_read(qfd, req->why)) == NULL ||
               local_read_content(qfd, req->content, req->why) < 0) {
        VSTR *reason = vstr_alloc(100);

        vstr_sprintf(reason, "%s: %s", vstr_str(path), vstr_str(req->why));
        vstr_cpy(req->why, vstr_str(reason));
        vstr_free(reason);
        if (req->info)
            req->info = qfile_info_free(req->info);
    }
    if (qfd >= 0)
        (void) close(qfd);
    if (req->info == NULL) {
        msg_warn("%s: cannot read the queue file: %s", req->qid,
                 vstr_str(req->why));
        local_req_done(req, 1, vstr_str(req->why));
        goto out;
    }
    for (size_t i = 0; i < req->rcpt_count; i++)
        local_deliver_rcpt(req, req->rcpts + i);
    local_req_done(req, 0, NULL);

out:
    vstr_free(path);
    local_req_free(req);
}
