/*
 * qmgr_bounce - ask the bounce daemon for a DSN, without waiting for it
 *
 * One request per connection to private/bounce (global/bounce_proto.h):
 * our HELLO and the NOTIFY go out at once; bounce's HELLO must come first,
 * then its STATUS. Lists are built and read only by the codec.
 * The answer comes back through the event loop; done(msg, ok) runs once,
 * always from the loop (never from inside qmgr_bounce_request), so the
 * caller's state machine never re-enters itself. A missing bounce service,
 * a lost connection or a non-zero status is "not ok": the caller keeps the
 * log and tries again later.
 */
#include "sys_defs.h"

#include <sys/stat.h>

#include <event2/event.h>

#include "attr.h"
#include "bounce_proto.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "vstr.h"

typedef struct QMGR_BOUNCE {
    QMGR_MESSAGE *msg;
    QMGR_BOUNCE_DONE done;
    char *kind;
    struct event *later; /* a failure reported from the loop */
    bool greeted; /* bounce's HELLO has come */
    bool ok;
} QMGR_BOUNCE;

/* qmgr_bounce_finish - report once and free */
static void qmgr_bounce_finish(QMGR_BOUNCE *req)
{
    QMGR_MESSAGE *msg = req->msg;
    QMGR_BOUNCE_DONE done = req->done;
    bool ok = req->ok;

    msg->bounce_conn = qmgr_conn_free(msg->bounce_conn);
    if (req->later)
        event_free(req->later);
    myfree(req->kind);
    myfree(req);
    msg->bounce_req = NULL;
    done(msg, ok);
}

/* qmgr_bounce_list - bounce's HELLO, then the STATUS reply */
static void qmgr_bounce_list(QMGR_CONN *conn, ATTR_LIST *list, void *arg)
{
    QMGR_BOUNCE *req = arg;
    VSTR *why = vstr_alloc(100);
    BOUNCE_STATUS status;

    if (!req->greeted) {
        if (bounce_hello_take(list, why) < 0) {
            msg_warn("%s: %s notice: bounce service: %s", req->msg->qid,
                     req->kind, vstr_str(why));
            req->ok = false;
            qmgr_bounce_finish(req);
        } else {
            req->greeted = true;
        }
        vstr_free(why);
        return;
    }
    if (bounce_status_take(list, &status, why) < 0) {
        msg_warn("%s: bounce: bad reply: %s", req->msg->qid, vstr_str(why));
        req->ok = false;
    } else {
        /* bounce logs the notice it sent, in Postfix's words. */
        if (status.status != 0)
            msg_warn("%s: %s notice failed: %s", req->msg->qid, req->kind,
                     status.reason ? status.reason : "no reason given");
        req->ok = status.status == 0;
    }
    vstr_free(why);
    qmgr_bounce_finish(req);
}

/* qmgr_bounce_end - the connection ended without a reply */
static void qmgr_bounce_end(QMGR_CONN *conn, const char *why, void *arg)
{
    QMGR_BOUNCE *req = arg;

    msg_warn("%s: %s notice: bounce service: %s", req->msg->qid, req->kind,
             why);
    req->ok = false;
    qmgr_bounce_finish(req);
}

/* qmgr_bounce_later - report a failure to start, from the loop */
static void qmgr_bounce_later(evutil_socket_t fd, short what, void *arg)
{
    qmgr_bounce_finish(arg);
}

/* qmgr_bounce_request - ask for a DSN of kind (bounce or delay) */
void qmgr_bounce_request(QMGR_MESSAGE *msg, const char *kind,
                         QMGR_BOUNCE_DONE done)
{
    QMGR_CTX *ctx = msg->ctx;
    QMGR_BOUNCE *req = mycalloc(1, sizeof(*req));
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    struct stat st;

    if (msg->bounce_req)
        msg_panic("%s: %s: a request is already in flight", __func__, msg->qid);
    req->msg = msg;
    req->done = done;
    req->kind = mystrdup(kind);
    msg->bounce_req = req;
    vstr_sprintf(path, "%s/%s/%s", ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                 BOUNCE_SERVICE);
    if (stat(vstr_str(path), &st) < 0) {
        msg_warn("%s: %s notice: no bounce service (%s): will try again",
                 msg->qid, kind, vstr_str(path));
    } else if ((msg->bounce_conn = qmgr_conn_open(
                    ctx->base, vstr_str(path), ctx->conf.ipc_timeout,
                    BOUNCE_LIST_MAX, qmgr_bounce_list, qmgr_bounce_end, req,
                    why)) == NULL) {
        msg_warn("%s: %s notice: %s", msg->qid, kind, vstr_str(why));
    } else {
        BOUNCE_REQ notify = {.kind = kind,
                             .queue_name = MAIL_QUEUE_ACTIVE,
                             .queue_id = msg->qid};
        ATTR_LIST *list = bounce_hello_list();

        qmgr_conn_send(msg->bounce_conn, list);
        attr_list_free(list);
        list = bounce_req_list(&notify);
        qmgr_conn_send(msg->bounce_conn, list);
        attr_list_free(list);
    }
    if (msg->bounce_conn == NULL) {
        struct timeval now = {0, 0};

        req->ok = false;
        req->later = evtimer_new(ctx->base, qmgr_bounce_later, req);
        if (req->later == NULL || evtimer_add(req->later, &now) < 0)
            msg_fatal("cannot add a timer");
    }
    vstr_free(path);
    vstr_free(why);
}
