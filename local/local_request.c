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
#include "delay_format.h"
#include "deliver_proto.h"
#include "local.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "vstr.h"

/* --- results ----------------------------------------------------------- */

/* local_tv_diff - b - a in seconds, never negative */
static double local_tv_diff(const struct timeval *a, const struct timeval *b)
{
    double d = (double) (b->tv_sec - a->tv_sec) +
               (double) (b->tv_usec - a->tv_usec) / 1e6;

    return d > 0 ? d : 0;
}

/* local_log - one Postfix-style line for one final delivery */
static void local_log(LOCAL_REQ *req, const char *to, const char *orig_to,
                      const char *dsn, const char *status, const char *reason)
{
    struct timeval now, active;
    char total[32], d0[32], d1[32], d3[32];
    const struct timeval *arrival;
    VSTR *orig = vstr_alloc(64);

    gettimeofday(&now, NULL);
    active.tv_sec = (time_t) (req->active_usec / 1000000);
    active.tv_usec = (suseconds_t) (req->active_usec % 1000000);
    arrival = req->info ? &req->info->arrival : &active;
    delay_format(local_tv_diff(arrival, &now), total, sizeof(total));
    delay_format(local_tv_diff(arrival, &active), d0, sizeof(d0));
    delay_format(local_tv_diff(&active, &req->t_request), d1, sizeof(d1));
    delay_format(local_tv_diff(&req->t_request, &now), d3, sizeof(d3));
    if (orig_to != NULL && strcasecmp(orig_to, to) != 0)
        vstr_sprintf(orig, ", orig_to=<%s>", orig_to);
    msg_info("%s: to=<%s>%s, relay=local, delay=%s, delays=%s/%s/0/%s, "
             "dsn=%s, status=%s (%s)",
             req->qid, to, vstr_str(orig), total, d0, d1, d3, dsn, status,
             reason);
    vstr_free(orig);
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

    local_soften(ctx, res);
    local_log(state->req, to, state->rcpt->address, res->dsn,
              local_stat_name(res->stat), reason);
    if (res->stat == LOCAL_STAT_SENT) {
        state->sent++;
        if (!state->deferred && !state->bounced)
            local_result_set(&state->outcome, LOCAL_STAT_SENT, res->dsn, "%s",
                             reason);
    } else if (res->stat == LOCAL_STAT_DEFER) {
        if (!state->deferred)
            local_result_set(&state->outcome, LOCAL_STAT_DEFER, res->dsn, "%s",
                             reason);
        state->deferred = true;
    } else {
        if (!state->deferred && !state->bounced) {
            if (strcasecmp(to, state->rcpt->address) != 0)
                local_result_set(&state->outcome, LOCAL_STAT_BOUNCE, res->dsn,
                                 "%s: %s", to, reason);
            else
                local_result_set(&state->outcome, LOCAL_STAT_BOUNCE, res->dsn,
                                 "%s", reason);
        }
        state->bounced = true;
    }
}

/* local_send_result - the recipient's RESULT to qmgr */
static int local_send_result(LOCAL_REQ *req, LOCAL_RCPT *rcpt,
                             LOCAL_RESULT *res)
{
    ATTR_LIST *list = attr_list_alloc();
    int ret;

    attr_add_str(list, "request", DELIVER_REQ_RESULT);
    attr_add_int(list, "offset", rcpt->offset);
    attr_add_str(list, "action", local_stat_name(res->stat));
    attr_add_str(list, "dsn", res->dsn);
    attr_add_str(list, "reason", vstr_str(res->text));
    attr_add_str(list, "relay", "local");
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

/* local_req_read - DELIVER and its RCPT lists; 0 or -1 (why) */
static int local_req_read(LOCAL_REQ *req)
{
    ATTR_LIST *list = NULL;
    long long want = 0;
    const char *value;

    if (attr_stream_read(req->stream, &list, req->why) < 0)
        return -1;
    value = attr_get_str(list, "request");
    if (value == NULL || strcmp(value, DELIVER_REQ_DELIVER) != 0 ||
        attr_list_check(list, deliver_request_spec,
                        SLUICE_ARRAY_LEN(deliver_request_spec), req->why) < 0) {
        if (value && strcmp(value, DELIVER_REQ_DELIVER) != 0)
            vstr_sprintf(req->why, "expected DELIVER, got \"%s\"", value);
        attr_list_free(list);
        return -1;
    }
    req->queue_name = mystrdup(attr_get_str(list, "queue_name"));
    req->qid = mystrdup(attr_get_str(list, "queue_id"));
    req->nexthop = mystrdup(attr_get_str(list, "nexthop"));
    req->sender = mystrdup(attr_get_str(list, "sender"));
    (void) attr_get_int(list, "active_usec", &req->active_usec);
    (void) attr_get_int(list, "rcpt_count", &want);
    attr_list_free(list);
    if (want < 1 || want > 100000 || strchr(req->qid, '/') ||
        strchr(req->queue_name, '/') || strcmp(req->qid, "..") == 0 ||
        strcmp(req->qid, ".") == 0) {
        vstr_cpy(req->why, "bad rcpt_count, queue_id or queue_name");
        return -1;
    }
    req->rcpts = mycalloc((size_t) want, sizeof(LOCAL_RCPT));
    while ((long long) req->rcpt_count < want) {
        LOCAL_RCPT *rcpt = req->rcpts + req->rcpt_count;

        if (attr_stream_read(req->stream, &list, req->why) < 0)
            return -1;
        value = attr_get_str(list, "request");
        if (value == NULL || strcmp(value, DELIVER_REQ_RCPT) != 0 ||
            attr_list_check(list, deliver_rcpt_spec,
                            SLUICE_ARRAY_LEN(deliver_rcpt_spec),
                            req->why) < 0) {
            if (value && strcmp(value, DELIVER_REQ_RCPT) != 0)
                vstr_sprintf(req->why, "expected RCPT, got \"%s\"", value);
            attr_list_free(list);
            return -1;
        }
        (void) attr_get_int(list, "offset", &rcpt->offset);
        rcpt->address = mystrdup(attr_get_str(list, "address"));
        value = attr_get_str(list, "orcpt");
        rcpt->orcpt = mystrdup(value ? value : "");
        value = attr_get_str(list, "notify");
        rcpt->notify = mystrdup(value ? value : "");
        req->rcpt_count++;
        attr_list_free(list);
    }
    return 0;
}

/* local_req_done - the DONE list */
static void local_req_done(LOCAL_REQ *req, int status, const char *reason)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", DELIVER_REQ_DONE);
    attr_add_int(list, "status", status);
    attr_add_int(list, "site_failed", 0);
    if (reason != NULL && *reason)
        attr_add_str(list, "reason", reason);
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
    int qfd = -1;

    req->ctx = ctx;
    req->stream = attr_stream_open(fd, DELIVER_LIST_MAX, ctx->conf.timeout_ms);
    req->why = vstr_alloc(100);
    req->content = vstr_alloc(8192);
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
