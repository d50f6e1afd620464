/*
 * qmgr_redis - the shaping limits shared through Redis
 * (shaping_redis_server; what is sent and what the answers mean:
 * global/shaping_redis.h)
 *
 * hiredis's asynchronous API on qmgr's libevent loop. hiredis 0.14 has no
 * timeouts of its own, so every call (the connect too: its first call is
 * a PING) carries a timer of shaping_redis_timeout_ms. A call that fails,
 * an answer that is not one, a lost connection or a timer that fires puts
 * the link down: logged once, the context is dropped (redisAsyncFree,
 * never inside one of its own callbacks: from a timer), every call still
 * out gets its callback with no reply, and a reconnect follows after a
 * back-off (250 ms doubling to 2 s). While the link is not up, each
 * bucket is shaped by the node alone with its share of the limits
 * (shaping_cluster_nodes; qmgr_shaping.c): mail never waits for Redis.
 * The first answer after a reconnect puts it up again, logged once.
 *
 * A take (qmgr_redis_take) is one EVAL of the take script for one bucket;
 * its answer goes to qmgr_shaping_redis_answer. Leases are renewed every
 * third of shaping_redis_lease_time (qmgr_shaping_redis_renew walks the
 * buckets); a lease ends SHAPING_REDIS_RELEASE_GRACE after its delivery
 * (the agent's QUIT), and one whose release is lost expires by itself.
 */
#include "sys_defs.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "qmgr.h"
#include "shaping_redis.h"
#include "vstr.h"

#define QMGR_REDIS_USEC 1000000LL

struct QMGR_REDIS {
    QMGR_CTX *ctx;
    char *server; /* shaping_redis_server as written */
    SHAPING_REDIS_ADDR addr;
    long long nodes; /* shaping_cluster_nodes */
    long long timeout; /* usec, one call */
    long long lease_time; /* usec */
    redisAsyncContext *ac; /* NULL: not connected */
    bool dropping; /* ac is to be dropped (by the timer) */
    SHAPING_REDIS_LINK link;
    struct event *retry_ev; /* drop a broken link, reconnect */
    struct event *renew_ev; /* renew the leases */
    char *node_id; /* lease ids: node_id:N */
    unsigned long long lease_seq;
};

/* One call that is out. */
typedef struct QMGR_REDIS_CALL {
    QMGR_REDIS *redis;
    QMGR_SHAPE *shape; /* a take: its bucket, else NULL */
    char *lease; /* a take: the lease id it asks for */
    struct event *timer;
    const char *what; /* for the log */
    QMGR_REDIS_REPLY_FN fn; /* qmgr_redis_call: told of the answer */
    void *fn_arg;
} QMGR_REDIS_CALL;

static void qmgr_redis_connect(QMGR_REDIS *redis);

/* qmgr_redis_arm - run the retry event after usec */
static void qmgr_redis_arm(QMGR_REDIS *redis, long long usec)
{
    struct timeval tv = {(time_t) (usec / QMGR_REDIS_USEC),
                         (suseconds_t) (usec % QMGR_REDIS_USEC)};

    if (evtimer_add(redis->retry_ev, &tv) < 0)
        msg_fatal("cannot add a timer");
}

/* qmgr_redis_fail - a call failed: the link is down (said once), the
   context goes at the next turn of the loop, buckets use their share */
static void qmgr_redis_fail(QMGR_REDIS *redis, const char *why)
{
    if (shaping_redis_link_down(&redis->link, qmgr_shaping_now()))
        msg_warn("shaping: redis %s unavailable (%s): each node keeps 1/%lld "
                 "of the shaping limits locally until it is back",
                 redis->server, why, redis->nodes);
    if (redis->ac != NULL) {
        redis->dropping = true;
        qmgr_redis_arm(redis, 0);
    } else {
        qmgr_redis_arm(redis, shaping_redis_link_retry(&redis->link));
    }
    qmgr_shaping_redis_changed(redis->ctx);
}

/* qmgr_redis_ok - an answer came: the link is up (said once) */
static void qmgr_redis_ok(QMGR_REDIS *redis)
{
    bool first = redis->link.since == 0;

    if (!shaping_redis_link_up(&redis->link, qmgr_shaping_now()))
        return;
    if (first)
        msg_info("shaping: redis %s: connected, shaping limits shared with "
                 "the other nodes",
                 redis->server);
    else
        msg_info("shaping: redis %s is back: shaping limits shared with the "
                 "other nodes again",
                 redis->server);
    qmgr_shaping_redis_changed(redis->ctx);
}

/* qmgr_redis_retry_event - drop a broken link; reconnect */
static void qmgr_redis_retry_event(evutil_socket_t fd, short what, void *arg)
{
    QMGR_REDIS *redis = arg;

    if (redis->ac != NULL && redis->dropping) {
        redisAsyncContext *ac = redis->ac;

        redis->ac = NULL;
        redis->dropping = false;
        redisAsyncFree(ac); /* the calls out get their callbacks */
        qmgr_redis_arm(redis, shaping_redis_link_retry(&redis->link));
        return;
    }
    if (redis->ac == NULL)
        qmgr_redis_connect(redis);
}

/* qmgr_redis_call_timeout - a call took too long */
static void qmgr_redis_call_timeout(evutil_socket_t fd, short what, void *arg)
{
    QMGR_REDIS_CALL *call = arg;
    VSTR *why = vstr_alloc(50);

    vstr_sprintf(why, "%s: no answer within %lld ms", call->what,
                 call->redis->timeout / 1000);
    qmgr_redis_fail(call->redis, vstr_str(why));
    vstr_free(why);
}

/* qmgr_redis_call_free - the call is over */
static void qmgr_redis_call_free(QMGR_REDIS_CALL *call)
{
    event_free(call->timer);
    myfree(call->lease);
    myfree(call);
}

/* qmgr_redis_take_answer - what the take script said */
static void qmgr_redis_take_answer(QMGR_REDIS_CALL *call, redisReply *reply)
{
    QMGR_REDIS *redis = call->redis;
    SHAPING_REDIS_VERDICT verdict = SHAPING_REDIS_BAD;
    long long wait = 0;
    bool leased = false;

    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
        reply->elements == 5 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[1]->type == REDIS_REPLY_INTEGER &&
        reply->element[2]->type == REDIS_REPLY_STRING &&
        reply->element[4]->type == REDIS_REPLY_INTEGER) {
        verdict = shaping_redis_verdict(reply->element[0]->integer,
                                        reply->element[1]->integer,
                                        reply->element[2]->str, &wait);
        leased = reply->element[4]->integer == 1;
    }
    if (reply != NULL && verdict == SHAPING_REDIS_BAD)
        qmgr_redis_fail(redis, reply->type == REDIS_REPLY_ERROR
                                   ? reply->str
                                   : "unexpected answer to the take script");
    else if (reply != NULL)
        qmgr_redis_ok(redis);
    qmgr_shaping_redis_answer(redis->ctx, call->shape, verdict, wait,
                              leased ? call->lease : NULL);
}

/* qmgr_redis_callback - an answer, or none (the link was dropped) */
static void qmgr_redis_callback(redisAsyncContext *ac, void *r, void *arg)
{
    QMGR_REDIS_CALL *call = arg;
    redisReply *reply = r;

    if (call->shape != NULL) {
        qmgr_redis_take_answer(call, reply);
    } else if (reply != NULL) {
        if (reply->type == REDIS_REPLY_ERROR)
            qmgr_redis_fail(call->redis, reply->str);
        else
            qmgr_redis_ok(call->redis);
    }
    if (call->fn != NULL)
        call->fn(call->redis->ctx,
                 reply != NULL && reply->type != REDIS_REPLY_ERROR ? reply
                                                                   : NULL,
                 call->fn_arg);
    qmgr_redis_call_free(call);
}

/* qmgr_redis_send - one call with its timer; false: not sent (the link
   is not there) */
static bool qmgr_redis_send(QMGR_REDIS *redis, QMGR_REDIS_CALL *call, int argc,
                            const char **argv, const size_t *lens)
{
    struct timeval tv = {(time_t) (redis->timeout / QMGR_REDIS_USEC),
                         (suseconds_t) (redis->timeout % QMGR_REDIS_USEC)};

    call->redis = redis;
    if (redis->ac == NULL || redis->dropping ||
        redisAsyncCommandArgv(redis->ac, qmgr_redis_callback, call, argc, argv,
                              lens) != REDIS_OK) {
        myfree(call->lease);
        myfree(call);
        return false;
    }
    if ((call->timer = evtimer_new(redis->ctx->base, qmgr_redis_call_timeout,
                                   call)) == NULL ||
        evtimer_add(call->timer, &tv) < 0)
        msg_fatal("cannot add a timer");
    return true;
}

/* qmgr_redis_send_strings - qmgr_redis_send of NUL-terminated strings */
static bool qmgr_redis_send_strings(QMGR_REDIS *redis, QMGR_REDIS_CALL *call,
                                    int argc, const char **argv)
{
    size_t *lens = mymalloc_array((size_t) argc, sizeof(size_t));
    bool sent;

    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    sent = qmgr_redis_send(redis, call, argc, argv, lens);
    myfree(lens);
    return sent;
}

/* qmgr_redis_connect_done - hiredis: connected, or not */
static void qmgr_redis_connect_done(const redisAsyncContext *ac, int status)
{
    QMGR_REDIS *redis = ac->data;

    if (status == REDIS_OK || redis->ac != ac)
        return;
    redis->ac = NULL; /* hiredis frees it */
    redis->dropping = false;
    qmgr_redis_fail(redis, ac->errstr[0] ? ac->errstr : "cannot connect");
}

/* qmgr_redis_disconnected - hiredis: the connection is gone */
static void qmgr_redis_disconnected(const redisAsyncContext *ac, int status)
{
    QMGR_REDIS *redis = ac->data;

    if (redis->ac != ac)
        return; /* we dropped it */
    redis->ac = NULL; /* hiredis frees it */
    redis->dropping = false;
    qmgr_redis_fail(redis,
                    ac->errstr[0] ? ac->errstr : "connection closed by server");
}

/* qmgr_redis_connect - open the link; a PING (with its timer) proves it */
static void qmgr_redis_connect(QMGR_REDIS *redis)
{
    redisAsyncContext *ac;
    QMGR_REDIS_CALL *call;
    const char *argv[1] = {"PING"};

    ac = redis->addr.path
             ? redisAsyncConnectUnix(redis->addr.path)
             : redisAsyncConnect(redis->addr.host, redis->addr.port);
    if (ac == NULL || ac->err) {
        VSTR *why = vstr_alloc(50);

        vstr_cpy(why, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        qmgr_redis_fail(redis, vstr_str(why));
        vstr_free(why);
        return;
    }
    ac->data = redis;
    if (redisLibeventAttach(ac, redis->ctx->base) != REDIS_OK)
        msg_fatal("shaping: redis: cannot attach to the event loop");
    redisAsyncSetConnectCallback(ac, qmgr_redis_connect_done);
    redisAsyncSetDisconnectCallback(ac, qmgr_redis_disconnected);
    redis->ac = ac;
    redis->dropping = false;
    call = mycalloc(1, sizeof(*call));
    call->what = "connect";
    qmgr_redis_send_strings(redis, call, 1, argv);
}

/* qmgr_redis_renew_event - renew this node's leases */
static void qmgr_redis_renew_event(evutil_socket_t fd, short what, void *arg)
{
    QMGR_REDIS *redis = arg;

    if (redis->link.state == SHAPING_REDIS_UP)
        qmgr_shaping_redis_renew(redis->ctx);
}

/* qmgr_redis_create - shaping_redis_server: the link (NULL: empty, or
   refused with why, logged: node-local shaping) */
QMGR_REDIS *qmgr_redis_create(QMGR_CTX *ctx, const MAIL_CONF *mc)
{
    const char *server = mail_conf_str(mc, "shaping_redis_server");
    QMGR_REDIS *redis;
    VSTR *why;
    struct timeval tv;
    char host[256];

    if (*server == 0)
        return NULL;
    redis = mycalloc(1, sizeof(*redis));
    why = vstr_alloc(100);
    if (shaping_redis_addr_parse(server, &redis->addr, why) < 0) {
        msg_warn("%s; shaping limits stay node-local", vstr_str(why));
        vstr_free(why);
        myfree(redis);
        return NULL;
    }
    redis->ctx = ctx;
    redis->server = mystrdup(server);
    redis->nodes = mail_conf_int(mc, "shaping_cluster_nodes");
    redis->timeout = mail_conf_int(mc, "shaping_redis_timeout_ms") * 1000LL;
    redis->lease_time =
        mail_conf_time(mc, "shaping_redis_lease_time") * QMGR_REDIS_USEC;
    if (gethostname(host, sizeof(host)) < 0)
        host[0] = 0;
    host[sizeof(host) - 1] = 0;
    vstr_sprintf(why, "%s:%ld:%lld", host[0] ? host : "localhost",
                 (long) getpid(), qmgr_shaping_now());
    redis->node_id = mystrdup(vstr_str(why));
    vstr_free(why);
    if ((redis->retry_ev =
             evtimer_new(ctx->base, qmgr_redis_retry_event, redis)) == NULL ||
        (redis->renew_ev = event_new(ctx->base, -1, EV_PERSIST,
                                     qmgr_redis_renew_event, redis)) == NULL)
        msg_fatal("cannot create a timer");
    tv.tv_sec = (time_t) (redis->lease_time / 3 / QMGR_REDIS_USEC);
    tv.tv_usec = 0;
    if (event_add(redis->renew_ev, &tv) < 0)
        msg_fatal("cannot add a timer");
    msg_info("shaping: limits shared through redis %s (%lld node%s; "
             "timeout %lld ms)",
             redis->server, redis->nodes, redis->nodes == 1 ? "" : "s",
             redis->timeout / 1000);
    qmgr_redis_connect(redis);
    return redis;
}

/* qmgr_redis_up - the limits are shared now */
bool qmgr_redis_up(const QMGR_REDIS *redis)
{
    return redis != NULL && redis->link.state == SHAPING_REDIS_UP &&
           redis->ac != NULL && !redis->dropping;
}

/* qmgr_redis_nodes - shaping_cluster_nodes */
long long qmgr_redis_nodes(const QMGR_REDIS *redis)
{
    return redis ? redis->nodes : 1;
}

/* qmgr_redis_describe - for `sluice shaping` */
const char *qmgr_redis_describe(const QMGR_REDIS *redis, VSTR *buf)
{
    if (redis == NULL)
        return vstr_str(vstr_cpy(buf, "off (limits node-local)"));
    vstr_sprintf(buf, "%s %s", redis->server,
                 shaping_redis_state_name(redis->link.state));
    if (!qmgr_redis_up(redis))
        vstr_sprintf(buf, "%s %s (each node keeps 1/%lld of the limits)",
                     redis->server, shaping_redis_state_name(redis->link.state),
                     redis->nodes);
    return vstr_str(buf);
}

/* qmgr_redis_take - ask for a delivery of shape (rule: its limits); the
   answer goes to qmgr_shaping_redis_answer. False: not asked (the link is
   not up) */
bool qmgr_redis_take(QMGR_REDIS *redis, QMGR_SHAPE *shape,
                     const SHAPING_RULE *rule)
{
    const char *argv[3 + SHAPING_REDIS_KEY_COUNT + 6];
    VSTR *keys[SHAPING_REDIS_KEY_COUNT];
    VSTR *num[5];
    QMGR_REDIS_CALL *call;
    int argc = 0;
    bool sent;

    if (!qmgr_redis_up(redis))
        return false;
    call = mycalloc(1, sizeof(*call));
    call->shape = shape;
    call->what = "take";
    for (int i = 0; i < 5; i++)
        num[i] = vstr_alloc(20);
    vstr_sprintf(num[0], "%s:%llu", redis->node_id, ++redis->lease_seq);
    call->lease = mystrdup(vstr_str(num[0]));
    argv[argc++] = "EVAL";
    argv[argc++] = shaping_redis_take_lua;
    argv[argc++] = "6";
    for (int i = 0; i < SHAPING_REDIS_KEY_COUNT; i++) {
        keys[i] = vstr_alloc(50);
        argv[argc++] =
            shaping_redis_key(keys[i], shape->name, (SHAPING_REDIS_KEY) i);
    }
    vstr_sprintf(num[1], "%lld", shaping_gcra_interval(&rule->message_rate));
    vstr_sprintf(num[2], "%lld", shaping_gcra_interval(&rule->connection_rate));
    vstr_sprintf(num[3], "%lld", rule->burst);
    vstr_sprintf(num[4], "%lld", rule->max_connections);
    argv[argc++] = vstr_str(num[1]);
    argv[argc++] = vstr_str(num[2]);
    argv[argc++] = vstr_str(num[3]);
    argv[argc++] = vstr_str(num[4]);
    argv[argc++] = call->lease;
    vstr_sprintf(num[0], "%lld", redis->lease_time);
    argv[argc++] = vstr_str(num[0]);
    sent = qmgr_redis_send_strings(redis, call, argc, argv);
    for (int i = 0; i < SHAPING_REDIS_KEY_COUNT; i++)
        vstr_free(keys[i]);
    for (int i = 0; i < 5; i++)
        vstr_free(num[i]);
    return sent;
}

/* qmgr_redis_simple - a call whose answer only says the link works */
static void qmgr_redis_simple(QMGR_REDIS *redis, const char *what, int argc,
                              const char **argv)
{
    QMGR_REDIS_CALL *call;

    if (!qmgr_redis_up(redis))
        return;
    call = mycalloc(1, sizeof(*call));
    call->what = what;
    qmgr_redis_send_strings(redis, call, argc, argv);
}

/* qmgr_redis_call - a call whose answer goes to fn (NULL reply: none, or
   an error; the link is then down); false: not sent (fn is not called) */
bool qmgr_redis_call(QMGR_REDIS *redis, const char *what, int argc,
                     const char **argv, QMGR_REDIS_REPLY_FN fn, void *arg)
{
    QMGR_REDIS_CALL *call;

    if (!qmgr_redis_up(redis))
        return false;
    call = mycalloc(1, sizeof(*call));
    call->what = what;
    call->fn = fn;
    call->fn_arg = arg;
    return qmgr_redis_send_strings(redis, call, argc, argv);
}

/* qmgr_redis_release - a delivery that held lease ended */
void qmgr_redis_release(QMGR_REDIS *redis, const char *bucket,
                        const char *lease)
{
    VSTR *key = vstr_alloc(50);
    VSTR *grace = vstr_alloc(20);
    const char *argv[6] = {"EVAL", shaping_redis_release_lua, "1", NULL, NULL,
                           lease};

    argv[3] = shaping_redis_key(key, bucket, SHAPING_REDIS_KEY_LEASES);
    argv[4] =
        vstr_str(vstr_sprintf(grace, "%lld", SHAPING_REDIS_RELEASE_GRACE));
    qmgr_redis_simple(redis, "release", 6, argv);
    vstr_free(key);
    vstr_free(grace);
}

/* qmgr_redis_renew - the leases of bucket live lease_time more */
void qmgr_redis_renew(QMGR_REDIS *redis, const char *bucket, const ARGV *leases)
{
    const char **argv;
    VSTR *key = vstr_alloc(50);
    VSTR *ttl = vstr_alloc(20);
    int argc = 0;

    if (leases->argc == 0) {
        vstr_free(key);
        vstr_free(ttl);
        return;
    }
    argv = mymalloc_array(leases->argc + 5, sizeof(char *));
    argv[argc++] = "EVAL";
    argv[argc++] = shaping_redis_renew_lua;
    argv[argc++] = "1";
    argv[argc++] = shaping_redis_key(key, bucket, SHAPING_REDIS_KEY_LEASES);
    vstr_sprintf(ttl, "%lld", redis->lease_time);
    argv[argc++] = vstr_str(ttl);
    for (size_t i = 0; i < leases->argc; i++)
        argv[argc++] = leases->argv[i];
    qmgr_redis_simple(redis, "renew", argc, argv);
    myfree(argv);
    vstr_free(key);
    vstr_free(ttl);
}

/* qmgr_redis_set - what automation (or the administrator) set on bucket,
   for every node: key what = value for usec (0: delete it) */
void qmgr_redis_set(QMGR_REDIS *redis, const char *bucket, int what,
                    const char *value, long long usec)
{
    VSTR *key = vstr_alloc(50);
    VSTR *ms = vstr_alloc(20);
    const char *argv[5] = {"SET", NULL, value, "PX", NULL};

    argv[1] = shaping_redis_key(key, bucket, (SHAPING_REDIS_KEY) what);
    if (usec <= 0) {
        argv[0] = "DEL";
        qmgr_redis_simple(redis, "delete", 2, argv);
    } else {
        vstr_sprintf(ms, "%lld", (usec + 999) / 1000);
        argv[4] = vstr_str(ms);
        qmgr_redis_simple(redis, "set", 5, argv);
    }
    vstr_free(key);
    vstr_free(ms);
}
