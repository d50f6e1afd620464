/*
 * sluice_pool - `sluice pool [--json]`, `sluice pool pause|resume SOURCE`,
 * `sluice pool feedback SOURCE[/PROVIDER] bounce|complaint`
 *
 * One line per source of each pool of smtp_source_pools: the pool, the
 * address, its weight, its EHLO name, its reputation state (PAUSED:
 * "-" when active, "until=2026-12-05T13:00:00Z" for an automatic pause,
 * "probing", or "manual"), its window (HARD,BLOCK: "2/40,0/40", hard
 * bounces and blocks of the attempts), its warm-up ("day=3,120/500": the
 * schedule's day, today's count and cap; "-" without a schedule) and
 * whether this machine can bind it ("usable", else "bind failure
 * (REASON)"). The reputation and warm-up state are asked from qmgr over
 * private/qmgr-pool (global/pool_proto.h); when the mail system is not
 * running they are read from the state files under data_directory
 * (reputation, warmup) -- the windows are then empty, as they are after
 * a restart. Keys of a source and a provider (SOURCE/PROVIDER) with a
 * state or a window follow their source as lines of their own.
 *
 * --json prints one object: {"default": NAME, "from": "qmgr"|"files",
 * "pools": [{"name", "default", "line", "sources": [{"address", "weight",
 * "ehlo", "state", "reason", "paused", "paused_until", "window":
 * {"attempts", "hard", "block"}, "warmup": null | {"day", "cap", "sent"},
 * "providers": [{"key", "paused", "paused_until", "window"}]}]}]};
 * "paused" is null when active, else "paused", "probing" or "manual".
 *
 * pause: the operator's pause (no expiry; mail goes to the pool's other
 * sources); resume: ends it, or an automatic pause or probe. feedback: a
 * late bounce or complaint for the circuit breaker (sluice parses no
 * inbound DSN or feedback report yet). These three need qmgr running.
 */
#include "sys_defs.h"

#include <stdio.h>
#include <time.h>

#include <jansson.h>

#include "attr.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "pool_proto.h"
#include "reputation.h"
#include "sluice.h"
#include "sock.h"
#include "source_pool.h"
#include "vstr.h"
#include "warmup.h"

#define SLUICE_POOL_WAIT_MS 10000 /* for qmgr to answer */
#define SLUICE_POOL_USAGE                                                      \
    "usage: sluice pool [--json] | pause SOURCE | resume SOURCE | feedback "   \
    "SOURCE[/PROVIDER] bounce|complaint"

/* sluice_pool_connect - a greeted stream to qmgr; NULL with why empty
   when the mail system is not running, NULL with why on failure */
static ATTR_STREAM *sluice_pool_connect(const char *queue_dir, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    ATTR_STREAM *stream = NULL;
    ATTR_LIST *list;
    int connect_errno = 0;
    int fd;
    int ret;

    vstr_reset(why);
    mail_queue_service(path, queue_dir, MAIL_QUEUE_PRIVATE, POOL_PROTO_SERVICE);
    for (int waited = 0;; waited += 100) {
        struct timespec pause = {0, 100 * 1000 * 1000};

        if ((fd = sock_unix_connect(vstr_str(path))) >= 0)
            break;
        connect_errno = errno;
        if (sluice_admin_master_down(queue_dir))
            goto out;
        if (waited >= SLUICE_POOL_WAIT_MS) {
            vstr_sprintf(why, "cannot reach the queue manager at %s: %s",
                         vstr_str(path), strerror(connect_errno));
            goto out;
        }
        nanosleep(&pause, NULL);
    }
    stream = attr_stream_open(fd, POOL_PROTO_LIST_MAX, SLUICE_POOL_WAIT_MS);
    list = pool_proto_hello_list();
    ret = attr_stream_write(stream, list, why);
    list = attr_list_free(list);
    if (ret == 0 && (ret = attr_stream_read(stream, &list, why)) == 0)
        ret = pool_proto_hello_take(list, why);
    attr_list_free(list);
    if (ret < 0) {
        vstr_sprintf(why, "queue manager: %s", vstr_str(why));
        stream = attr_stream_close(stream);
    }
out:
    vstr_free(path);
    return stream;
}

/* sluice_pool_ask - one request; state (may be NULL) gets the state
   text of list; 0, or -1 with why */
static int sluice_pool_ask(ATTR_STREAM *stream, const POOL_PROTO_REQUEST *req,
                           VSTR *state, VSTR *why)
{
    ATTR_LIST *list = pool_proto_request_list(req);
    POOL_PROTO_REPLY reply;
    int ret = -1;

    if (attr_stream_write(stream, list, why) < 0)
        goto out;
    list = attr_list_free(list);
    if (attr_stream_read(stream, &list, why) < 0 ||
        pool_proto_reply_take(list, &reply, why) < 0)
        goto out;
    if (reply.status != POOL_PROTO_STAT_OK) {
        vstr_cpy(why, reply.reason ? reply.reason : "failed");
        goto out;
    }
    if (state != NULL)
        vstr_cpy(state, reply.state ? reply.state : "");
    ret = 0;
out:
    attr_list_free(list);
    return ret;
}

/* sluice_pool_from_files - the state text from the state files (qmgr is
   not running); 0, or -1 with why */
static int sluice_pool_from_files(const MAIL_CONF *conf,
                                  const SOURCE_POOLS *pools, VSTR *state,
                                  VSTR *why)
{
    const char *data_dir = mail_conf_str(conf, "data_directory");
    long long now = (long long) time(NULL);
    REPUTATION_CONF rconf;
    WARMUP_CONF wconf;
    WARMUP_RULES *rules;
    REPUTATION *rep;
    WARMUP *w;
    VSTR *path;
    int ret = -1;

    if (reputation_conf_parse(
            &rconf, mail_conf_str(conf, "reputation_window"),
            mail_conf_int(conf, "reputation_min_attempts"),
            mail_conf_str(conf, "reputation_hard_bounce_ratio"),
            mail_conf_str(conf, "reputation_block_ratio"),
            mail_conf_str(conf, "reputation_pause_time"),
            mail_conf_str(conf, "reputation_probe_rate"),
            mail_conf_int(conf, "reputation_probe_attempts"), why) < 0)
        return -1;
    rules =
        warmup_rules_load("smtp_source_warmup_maps",
                          mail_conf_str(conf, "smtp_source_warmup_maps"), why);
    if (rules == NULL && vstr_len(why) > 0)
        return -1;
    wconf.hard_ratio = rconf.hard_ratio;
    wconf.block_ratio = rconf.block_ratio;
    rep = reputation_alloc(&rconf);
    w = warmup_alloc(&wconf, rules);
    path = vstr_alloc(100);
    vstr_sprintf(path, "%s/sources/reputation", data_dir);
    if (reputation_load(rep, vstr_str(path), now, why) == 0) {
        vstr_sprintf(path, "%s/sources/warmup", data_dir);
        if (warmup_load(w, vstr_str(path), why) == 0) {
            pool_state_format(state, rep, w, pools, now);
            ret = 0;
        }
    }
    vstr_free(path);
    reputation_free(rep);
    warmup_free(w);
    return ret;
}

/* sluice_pool_paused - the PAUSED column of a state line */
static const char *sluice_pool_paused(const POOL_STATE_LINE *line, VSTR *buf)
{
    if (strcmp(line->state, "active") == 0) {
        vstr_cpy(buf, "-");
    } else if (strcmp(line->state, "paused") == 0 && line->until > 0) {
        time_t until = (time_t) line->until;
        struct tm tm;
        char when[32];

        gmtime_r(&until, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        vstr_sprintf(buf, "until=%s", when);
    } else {
        vstr_cpy(buf, line->state);
    }
    return vstr_str(buf);
}

/* sluice_pool_window - the RATIOS column */
static const char *sluice_pool_window(const POOL_STATE_LINE *line, VSTR *buf)
{
    vstr_sprintf(buf, "%lld/%lld,%lld/%lld", line->hard, line->attempts,
                 line->block, line->attempts);
    return vstr_str(buf);
}

/* sluice_pool_warmup - the WARMUP column */
static const char *sluice_pool_warmup(const POOL_STATE_LINE *line, VSTR *buf)
{
    if (line->day < 0 && line->cap < 0)
        vstr_cpy(buf, "-");
    else if (line->cap < 0)
        vstr_sprintf(buf, "day=%lld,%lld/-", line->day, line->sent);
    else
        vstr_sprintf(buf, "day=%lld,%lld/%lld", line->day, line->sent,
                     line->cap);
    return vstr_str(buf);
}

/* sluice_pool_each_provider - fn for each SOURCE/PROVIDER line of text */
static void sluice_pool_each_provider(const char *text, const char *address,
                                      void (*fn)(const POOL_STATE_LINE *,
                                                 void *),
                                      void *arg)
{
    size_t len = strlen(address);

    for (const char *cp = text; cp != NULL && *cp;) {
        const char *end = strchr(cp, '\n');
        const char *space = strchr(cp, ' ');

        if (space != NULL && (end == NULL || space < end) &&
            (size_t) (space - cp) > len + 1 && strncmp(cp, address, len) == 0 &&
            cp[len] == '/' && (size_t) (space - cp) <= REPUTATION_KEY_MAX) {
            char key[REPUTATION_KEY_MAX + 1];
            POOL_STATE_LINE line;

            snprintf(key, sizeof(key), "%.*s", (int) (space - cp), cp);
            if (pool_state_find(cp, key, &line))
                fn(&line, arg);
        }
        cp = end ? end + 1 : NULL;
    }
}

/* sluice_pool_json_window - {"attempts", "hard", "block"} */
static json_t *sluice_pool_json_window(const POOL_STATE_LINE *line)
{
    json_t *obj = json_object();

    json_object_set_new(obj, "attempts", json_integer(line->attempts));
    json_object_set_new(obj, "hard", json_integer(line->hard));
    json_object_set_new(obj, "block", json_integer(line->block));
    return obj;
}

/* sluice_pool_json_state - "paused", "paused_until" and "window" */
static void sluice_pool_json_state(json_t *obj, const POOL_STATE_LINE *line)
{
    bool active = strcmp(line->state, "active") == 0;

    json_object_set_new(obj, "paused",
                        active ? json_null() : json_string(line->state));
    json_object_set_new(obj, "paused_until",
                        line->until > 0 ? json_integer(line->until)
                                        : json_null());
    json_object_set_new(obj, "window", sluice_pool_json_window(line));
}

/* sluice_pool_json_provider - one provider key into a JSON array */
static void sluice_pool_json_provider(const POOL_STATE_LINE *line, void *arg)
{
    json_t *obj = json_object();

    json_object_set_new(obj, "key", json_string(line->key));
    sluice_pool_json_state(obj, line);
    json_array_append_new(arg, obj);
}

/* sluice_pool_json - the pools as one JSON object on stdout */
static void sluice_pool_json(const SOURCE_POOLS *pools, const char *def,
                             const char *state, const char *from)
{
    json_t *top = json_object();
    json_t *list = json_array();
    VSTR *why = vstr_alloc(100);
    char *text;

    json_object_set_new(top, "default", def ? json_string(def) : json_null());
    json_object_set_new(top, "from", json_string(from));
    for (size_t i = 0; pools && i < pools->count; i++) {
        const SOURCE_POOL *pool = &pools->pools[i];
        json_t *obj = json_object();
        json_t *sources = json_array();

        json_object_set_new(obj, "name", json_string(pool->name));
        json_object_set_new(obj, "default",
                            json_boolean(strcmp(pool->name, def) == 0));
        json_object_set_new(obj, "line", json_integer(pool->lineno));
        for (size_t j = 0; j < pool->count; j++) {
            const SOURCE_POOL_SOURCE *src = &pool->sources[j];
            json_t *so = json_object();
            json_t *providers = json_array();
            bool ok = source_pool_addr_local(src, why) == 0;
            POOL_STATE_LINE line;

            (void) pool_state_find(state, src->address, &line);
            json_object_set_new(so, "address", json_string(src->address));
            json_object_set_new(so, "weight", json_integer(src->weight));
            json_object_set_new(so, "ehlo", json_string(src->helo_name));
            json_object_set_new(so, "state",
                                json_string(ok ? "usable" : "bind failure"));
            json_object_set_new(so, "reason",
                                ok ? json_null() : json_string(vstr_str(why)));
            sluice_pool_json_state(so, &line);
            if (line.day < 0 && line.cap < 0) {
                json_object_set_new(so, "warmup", json_null());
            } else {
                json_t *wo = json_object();

                json_object_set_new(wo, "day", json_integer(line.day));
                json_object_set_new(wo, "cap",
                                    line.cap < 0 ? json_null()
                                                 : json_integer(line.cap));
                json_object_set_new(wo, "sent", json_integer(line.sent));
                json_object_set_new(so, "warmup", wo);
            }
            sluice_pool_each_provider(state, src->address,
                                      sluice_pool_json_provider, providers);
            json_object_set_new(so, "providers", providers);
            json_array_append_new(sources, so);
        }
        json_object_set_new(obj, "sources", sources);
        json_array_append_new(list, obj);
    }
    json_object_set_new(top, "pools", list);
    text = json_dumps(top, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(top);
    vstr_free(why);
}

#define SLUICE_POOL_FMT "%-16s %-39s %6s %-24s %-26s %-14s %-16s %s\n"

/* sluice_pool_text_provider - one provider key as a line of its own */
static void sluice_pool_text_provider(const POOL_STATE_LINE *line, void *arg)
{
    VSTR *paused = vstr_alloc(50);
    VSTR *window = vstr_alloc(50);

    (void) arg;
    printf(SLUICE_POOL_FMT, "", line->key, "", "",
           sluice_pool_paused(line, paused), sluice_pool_window(line, window),
           "-", "");
    vstr_free(paused);
    vstr_free(window);
}

/* sluice_pool_text - the pools as a table on stdout */
static void sluice_pool_text(const SOURCE_POOLS *pools, const char *def,
                             const char *helo_default, const char *state,
                             const char *from)
{
    VSTR *why = vstr_alloc(100);
    VSTR *bind = vstr_alloc(100);
    VSTR *paused = vstr_alloc(50);
    VSTR *window = vstr_alloc(50);
    VSTR *warm = vstr_alloc(50);

    printf(SLUICE_POOL_FMT, "POOL", "SOURCE", "WEIGHT", "EHLO", "PAUSED",
           "HARD,BLOCK", "WARMUP", "STATE");
    for (size_t i = 0; i < pools->count; i++) {
        const SOURCE_POOL *pool = &pools->pools[i];
        VSTR *name = vstr_alloc(64);

        vstr_sprintf(name, "%s%s", pool->name,
                     strcmp(pool->name, def) == 0 ? "*" : "");
        for (size_t j = 0; j < pool->count; j++) {
            const SOURCE_POOL_SOURCE *src = &pool->sources[j];
            VSTR *weight = vstr_alloc(10);
            POOL_STATE_LINE line;

            (void) pool_state_find(state, src->address, &line);
            vstr_sprintf(weight, "%d", src->weight);
            if (source_pool_addr_local(src, why) == 0)
                vstr_cpy(bind, "usable");
            else
                vstr_sprintf(bind, "bind failure (%s)", vstr_str(why));
            printf(SLUICE_POOL_FMT, vstr_str(name), src->address,
                   vstr_str(weight),
                   *src->helo_name ? src->helo_name : helo_default,
                   sluice_pool_paused(&line, paused),
                   sluice_pool_window(&line, window),
                   sluice_pool_warmup(&line, warm), vstr_str(bind));
            sluice_pool_each_provider(state, src->address,
                                      sluice_pool_text_provider, NULL);
            vstr_free(weight);
        }
        vstr_free(name);
    }
    printf("(* the default pool; state from %s)\n", from);
    vstr_free(why);
    vstr_free(bind);
    vstr_free(paused);
    vstr_free(window);
    vstr_free(warm);
}

/* sluice_pool_command - pause, resume or feedback, through qmgr */
static int sluice_pool_command(const char *config_dir,
                               const POOL_PROTO_REQUEST *req)
{
    VSTR *why = vstr_alloc(100);
    char *queue_dir;
    ATTR_STREAM *stream;
    int status = 1;

    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL) {
        vstr_free(why);
        return 1;
    }
    if ((stream = sluice_pool_connect(queue_dir, why)) == NULL) {
        sluice_fail("pool: %s: %s", req->request,
                    vstr_len(why) ? vstr_str(why)
                                  : "the mail system is not running");
    } else if (sluice_pool_ask(stream, req, NULL, why) < 0) {
        sluice_fail("pool: %s: %s", req->request, vstr_str(why));
    } else {
        printf("sluice: pool: %s %s\n", req->name,
               strcmp(req->request, POOL_PROTO_REQ_PAUSE) == 0    ? "paused"
               : strcmp(req->request, POOL_PROTO_REQ_RESUME) == 0 ? "resumed"
                                                                  : "noted");
        status = 0;
    }
    if (stream != NULL)
        attr_stream_close(stream);
    myfree(queue_dir);
    vstr_free(why);
    return status;
}

/* sluice_pool_state - the state text: from qmgr, else from the files */
static int sluice_pool_state(const char *config_dir, const MAIL_CONF *conf,
                             const SOURCE_POOLS *pools, VSTR *state,
                             const char **from)
{
    VSTR *why = vstr_alloc(100);
    char *queue_dir = sluice_queue_dir(config_dir);
    ATTR_STREAM *stream = NULL;
    POOL_PROTO_REQUEST req = {.request = POOL_PROTO_REQ_LIST};
    int ret = -1;

    if (queue_dir == NULL) {
        vstr_free(why);
        return -1;
    }
    if ((stream = sluice_pool_connect(queue_dir, why)) != NULL) {
        *from = "qmgr";
        if ((ret = sluice_pool_ask(stream, &req, state, why)) < 0)
            sluice_fail("pool: queue manager: %s", vstr_str(why));
        attr_stream_close(stream);
    } else if (vstr_len(why) > 0) {
        sluice_fail("pool: %s", vstr_str(why));
    } else {
        *from = "the state files (qmgr is not running)";
        if ((ret = sluice_pool_from_files(conf, pools, state, why)) < 0)
            sluice_fail("pool: %s", vstr_str(why));
    }
    myfree(queue_dir);
    vstr_free(why);
    return ret;
}

/* sluice_pool - `sluice pool ...` */
int sluice_pool(const char *config_dir, int argc, char **argv)
{
    VSTR *why = vstr_alloc(100);
    VSTR *state = vstr_alloc(1000);
    bool json = false;
    MAIL_CONF *conf;
    SOURCE_POOLS *pools;
    const char *def = NULL;
    const char *from = "";
    int status = 0;

    if (argc >= 2 &&
        (strcmp(argv[1], "pause") == 0 || strcmp(argv[1], "resume") == 0 ||
         strcmp(argv[1], "feedback") == 0)) {
        POOL_PROTO_REQUEST req = {.request = argv[1],
                                  .name = argc > 2 ? argv[2] : NULL,
                                  .kind = argc > 3 ? argv[3] : NULL};
        bool feedback = strcmp(argv[1], "feedback") == 0;

        vstr_free(why);
        vstr_free(state);
        if (argc != (feedback ? 4 : 3))
            return sluice_fail("%s", SLUICE_POOL_USAGE);
        return sluice_pool_command(config_dir, &req);
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
            json = true;
        } else {
            vstr_free(why);
            vstr_free(state);
            return sluice_fail("%s", SLUICE_POOL_USAGE);
        }
    }
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        status = sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        vstr_free(state);
        return status;
    }
    pools = source_pools_load("smtp_source_pools",
                              mail_conf_str(conf, "smtp_source_pools"), why);
    if (pools == NULL && vstr_len(why) > 0) {
        status = sluice_fail("pool: %s", vstr_str(why));
    } else {
        const char *want = mail_conf_str(conf, "default_source_pool");

        if (pools != NULL) {
            const SOURCE_POOL *found =
                *want ? source_pools_find(pools, want) : &pools->pools[0];

            if (found == NULL)
                status = sluice_fail("pool: default_source_pool = %s: no "
                                     "such pool in smtp_source_pools",
                                     want);
            else
                def = found->name;
        }
        if (status == 0 && pools != NULL &&
            sluice_pool_state(config_dir, conf, pools, state, &from) < 0)
            status = 1;
        if (status == 0 && json)
            sluice_pool_json(pools, def, vstr_str(state), from);
        else if (status == 0 && pools == NULL)
            printf("sluice: pool: smtp_source_pools is empty: mail leaves "
                   "from smtp_bind_address (%s)\n",
                   *mail_conf_str(conf, "smtp_bind_address")
                       ? mail_conf_str(conf, "smtp_bind_address")
                       : "any");
        else if (status == 0)
            sluice_pool_text(pools, def, mail_conf_str(conf, "smtp_helo_name"),
                             vstr_str(state), from);
    }
    source_pools_free(pools);
    mail_conf_free(conf);
    vstr_free(why);
    vstr_free(state);
    return status;
}
