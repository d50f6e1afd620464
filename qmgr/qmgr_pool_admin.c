/*
 * qmgr_pool_admin - `sluice pool` on private/qmgr-pool
 *
 * The protocol is global/pool_proto.h: greetings, then requests, each
 * answered by one REPLY. "list" replies with the state text of every
 * source (pool_state_format: reputation state, window, warm-up day, cap
 * and count); "pause" and "resume" are the operator's word about a
 * source address (qmgr_source_pause/resume: saved at once); "feedback"
 * is a late bounce or complaint (qmgr_source_feedback). The socket, the
 * greetings and the idle time are qmgr_listen.c's.
 */
#include "sys_defs.h"

#include <time.h>

#include "attr.h"
#include "attr_conn.h"
#include "pool_proto.h"
#include "qmgr.h"
#include "vstr.h"

#define QMGR_POOL_ADMIN_IDLE 60 /* seconds an idle connection may stay */

/* qmgr_pool_admin_serve - one REQUEST: its REPLY */
static void qmgr_pool_admin_serve(QMGR_CTX *ctx, ATTR_CONN *conn,
                                  const ATTR_LIST *list)
{
    POOL_PROTO_REQUEST req;
    POOL_PROTO_REPLY reply = {POOL_PROTO_STAT_OK, NULL, NULL};
    VSTR *why = vstr_alloc(100);
    VSTR *state = vstr_alloc(1000);
    int ret = 0;

    if (pool_proto_request_take(list, &req, why) < 0) {
        ret = -1;
    } else if (strcmp(req.request, POOL_PROTO_REQ_LIST) == 0) {
        pool_state_format(state, ctx->reputation, ctx->warmup, ctx->conf.pools,
                          (long long) time(NULL));
        reply.state = vstr_str(state);
    } else if (strcmp(req.request, POOL_PROTO_REQ_PAUSE) == 0) {
        ret = qmgr_source_pause(ctx, req.name, why);
    } else if (strcmp(req.request, POOL_PROTO_REQ_RESUME) == 0) {
        ret = qmgr_source_resume(ctx, req.name, why);
    } else {
        VSTR *source = vstr_alloc(100);
        const char *slash = strchr(req.name, '/');

        if (slash)
            vstr_ncpy(source, req.name, (size_t) (slash - req.name));
        else
            vstr_cpy(source, req.name);
        ret = qmgr_source_feedback(
            ctx, vstr_str(source), slash ? slash + 1 : NULL,
            strcmp(req.kind, POOL_PROTO_KIND_COMPLAINT) == 0,
            (long long) time(NULL), why);
        vstr_free(source);
    }
    if (ret < 0) {
        reply.status = POOL_PROTO_STAT_FAIL;
        reply.reason = vstr_str(why);
    }
    qmgr_listen_send(conn, pool_proto_reply_list(&reply));
    vstr_free(why);
    vstr_free(state);
}

/* qmgr_pool_admin_init - listen on private/qmgr-pool (a failure only
   costs `sluice pool` its way to qmgr: it reads the state files then) */
void qmgr_pool_admin_init(QMGR_CTX *ctx)
{
    static const QMGR_LISTEN_OPS ops = {
        .service = POOL_PROTO_SERVICE,
        .hello_list = pool_proto_hello_list,
        .hello_take = pool_proto_hello_take,
        .request = qmgr_pool_admin_serve,
    };

    ctx->pool_listener =
        qmgr_listen(ctx, &ops, POOL_PROTO_LIST_MAX, QMGR_POOL_ADMIN_IDLE);
}
