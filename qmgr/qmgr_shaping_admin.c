/*
 * qmgr_shaping_admin - `sluice shaping` on private/qmgr-shaping
 *
 * The protocol is global/shaping_proto.h: greetings, then requests, each
 * answered in full before the next is read. "list" sends one BUCKET per
 * bucket qmgr holds (qmgr_shaping.c), then the REPLY; "suspend" and
 * "resume" act on a bucket at once (the scheduler runs again) and reply.
 * The socket, the greetings and the idle time are qmgr_listen.c's, as
 * for private/qmgr-admin.
 */
#include "sys_defs.h"

#include "attr.h"
#include "attr_conn.h"
#include "qmgr.h"
#include "shaping.h"
#include "shaping_auto.h"
#include "shaping_proto.h"
#include "vstr.h"

#define QMGR_SHAPING_ADMIN_IDLE 60 /* seconds an idle connection may stay */

/* qmgr_shaping_admin_bucket - one BUCKET (arg: the connection) */
static void qmgr_shaping_admin_bucket(const QMGR_SHAPE *shape, size_t queued,
                                      long long now, void *arg)
{
    ATTR_CONN *conn = arg;
    const SHAPING_RULE *rule = shape->rule;
    static const SHAPING_RATE no_rate = {0, 0};
    const SHAPING_RATE *msg_rate = rule ? &rule->message_rate : &no_rate;
    const SHAPING_RATE *conn_rate = rule ? &rule->connection_rate : &no_rate;
    long long burst = rule ? rule->burst : 1;
    VSTR *msg_text = vstr_alloc(20);
    VSTR *conn_text = vstr_alloc(20);
    VSTR *auto_text = vstr_alloc(50);
    long long left = shape->state.suspended_until - now;
    SHAPING_PROTO_BUCKET bucket = {
        .bucket = shape->name,
        .rule = rule ? rule->key : "-",
        .max_connections = rule ? rule->max_connections : 0,
        .connections = shape->state.connections,
        .message_rate = shaping_rate_format(msg_rate, msg_text),
        .message_tokens =
            shaping_gcra_tokens(&shape->state.messages, msg_rate, burst, now),
        .connection_rate = shaping_rate_format(conn_rate, conn_text),
        .connection_tokens =
            shaping_gcra_tokens(&shape->state.connects, conn_rate, burst, now),
        /* whole seconds, rounded up: "0" only when it is over */
        .suspended = left > 0 ? (left + 999999) / 1000000 : 0,
        .queued = (long long) queued,
        .automation = shaping_auto_describe(&shape->state, now, auto_text),
    };

    qmgr_listen_send(conn, shaping_proto_bucket_list(&bucket));
    vstr_free(msg_text);
    vstr_free(conn_text);
    vstr_free(auto_text);
}

/* qmgr_shaping_admin_serve - one REQUEST (after the greetings,
   qmgr_listen.c): the BUCKETs of "list", then the REPLY */
static void qmgr_shaping_admin_serve(QMGR_CTX *ctx, ATTR_CONN *conn,
                                     const ATTR_LIST *list)
{
    SHAPING_PROTO_REQUEST req;
    SHAPING_PROTO_REPLY reply = {SHAPING_PROTO_STAT_OK, NULL,
                                 ctx->conf.shaping_refused
                                     ? ctx->conf.shaping_refused
                                     : ctx->conf.automation_refused,
                                 NULL};
    VSTR *why = vstr_alloc(100);
    VSTR *redis = vstr_alloc(100);

    if (ctx->redis != NULL)
        reply.redis = qmgr_redis_describe(ctx->redis, redis);
    if (shaping_proto_request_take(list, &req, why) < 0) {
        reply.status = SHAPING_PROTO_STAT_FAIL;
    } else if (strcmp(req.request, SHAPING_PROTO_REQ_LIST) == 0) {
        qmgr_shaping_each(ctx, qmgr_shaping_admin_bucket, conn);
    } else if (qmgr_shaping_suspend(
                   ctx, req.name,
                   strcmp(req.request, SHAPING_PROTO_REQ_SUSPEND) == 0
                       ? req.seconds
                       : 0,
                   why) < 0) {
        reply.status = SHAPING_PROTO_STAT_FAIL;
    }
    if (reply.status != SHAPING_PROTO_STAT_OK)
        reply.reason = vstr_str(why);
    qmgr_listen_send(conn, shaping_proto_reply_list(&reply));
    vstr_free(why);
    vstr_free(redis);
}

/* qmgr_shaping_admin_init - listen on private/qmgr-shaping (a failure only
   costs `sluice shaping` its way to qmgr: it says so) */
void qmgr_shaping_admin_init(QMGR_CTX *ctx)
{
    static const QMGR_LISTEN_OPS ops = {
        .service = SHAPING_PROTO_SERVICE,
        .hello_list = shaping_proto_hello_list,
        .hello_take = shaping_proto_hello_take,
        .request = qmgr_shaping_admin_serve,
    };

    ctx->shape_listener =
        qmgr_listen(ctx, &ops, SHAPING_PROTO_LIST_MAX, QMGR_SHAPING_ADMIN_IDLE);
}
