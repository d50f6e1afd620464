/*
 * api - the HTTP sending API (issue #21): JSON in, a queued message out
 *
 * An unprivileged daemon on global/mail_server (master.cf service "api",
 * maxproc 1) that serves HTTP with libevent's evhttp on api_listen. Master
 * binds that address and hands the socket over (SLUICE_OWN_LISTEN_FD,
 * master_service.c); a reload gives the successor the same socket while
 * this process retires, so no SO_REUSEPORT is needed (it would let any
 * process of the same user share the port). Run without master, or when
 * master could not bind, the api binds it itself. Empty api_listen: the
 * service idles. Endpoints:
 *
 *   POST /v1/messages   Authorization: Bearer KEY (scope send); the body
 *                       is global/api_request.h's JSON. 202 with
 *                       {"id": QID, "recipients": [{"to", "id"}...]}
 *   GET  /v1/messages/ID  (scope read) {"id", "state": queued, deferred,
 *                       held or done (out of the queue), "recipients":
 *                       [{"to", "id", "state": pending or done}]}, for
 *                       a message of the key's tenant (admin: any)
 *   GET  /v1/health     200 {"status": "ok"}, no key needed
 *   GET  /v1/suppressions[?limit=N&after=ADDRESS]   (scope read) the
 *                       key's tenant's suppression list (global/suppress.h)
 *                       {"tenant", "suppressions": [{"address", "tenant",
 *                       "reason", "source", "created", "expires"}],
 *                       "next": ADDRESS to pass as after, or null}; an
 *                       admin key names the list with ?tenant=T (none:
 *                       the global list)
 *   GET  /v1/suppressions/ADDRESS  (scope read) 200 with the entry that
 *                       suppresses ADDRESS for the tenant (its own, else
 *                       the global one), 404 when none does
 *   PUT  /v1/suppressions/ADDRESS  (scope send: a sender manages its own
 *                       list; or admin, with ?tenant=) body {"reason":
 *                       TEXT, "expires": "7d" | seconds | null}: 200 with
 *                       the entry (source "api")
 *   DELETE /v1/suppressions/ADDRESS  (scope send or admin) 200
 *                       {"deleted": true}; 404 when the tenant's list (the
 *                       global one for admin without ?tenant) has none
 * A POST /v1/messages whose recipients the list holds is still 202: they
 * are dropped by cleanup and listed in the answer as "suppressed":
 * [{"address", "reason"}] (with "suppressed_count" when there were more
 * than fit).
 *
 * (and /v1/templates/NAME, below). conf/openapi.yaml describes them all;
 * tests/test_api_openapi.py holds it to this router. A batch of
 * api_spool_min_recipients or more is answered once it is durable in the
 * batch spool, and rendered by the render service (render/render.c).
 * With api_tls = yes every connection speaks TLS (api_tls_setup).
 *
 * An Idempotency-Key header makes a retry of the same request within
 * api_idempotency_ttl get the first 202 again (Idempotent-Replayed: true)
 * instead of a second message, across restarts (global/api_idem.h); the
 * same key with another body gets 422 idempotency_key_reused. A retry
 * while the first request is still with cleanup gets 409
 * idempotency_key_in_progress (Retry-After: 1), never a second message.
 *
 * api_tenant_daily_limit caps the messages a tenant queues per UTC day
 * and api_tenant_rate_limit the messages per second (global/api_limits.h):
 * beyond either, 429 rate_limited with Retry-After (the seconds to
 * midnight, or until the rate allows). The day's count is kept in
 * api_idempotency_directory/usage/TENANT: a restart goes on from it.
 *
 * With non_smtpd_milters set, each message (direct, batched here or by
 * the render service) is first shown to the milters by a child process
 * (global/api_milter.h), as pickup shows sendmail's mail, so that the
 * blocking milter client never holds up the loop.
 *
 * A message is handed to cleanup through api_handoff.h, on the event loop
 * (each request waits in its own state, as smtpd's sessions wait for
 * cleanup), and the 202 is written only when cleanup's final STATUS says
 * it has fsynced the queue file and its directory. Any failure before
 * that answers an error and cleanup drops the partial file, so nothing is
 * acknowledged that is not on disk, and nothing that is not acknowledged
 * is half queued. Each wait for cleanup is bounded by api_cleanup_timeout
 * (then 503); meanwhile the process serves every other client. A client
 * that hangs up while its message is with cleanup does not stop the
 * hand-off (the message may be queued, as with a lost 202 in SMTP). A
 * retiring process (reload) stops accepting and exits once every request
 * in hand is answered.
 *
 * Errors are JSON {"error": {"code", "message", "field"}}:
 *   400 invalid_json, missing_field, invalid_field   (api_request.h)
 *   401 unauthorized    no or unknown key; 403 forbidden   key lacks "send",
 *                       or "pool" names a pool the key's tenant may not
 *                       use (smtp_source_pool_allow_maps; field "pool")
 *   404 not_found, 405 method_not_allowed
 *   409 idempotency_key_in_progress   the key's first request is still
 *                       with cleanup
 *   413 message_too_large (message_size_limit); bodies over
 *       api_max_request_size are cut off by evhttp itself with a 413
 *   422 invalid_address, too_many_recipients, rejected (cleanup said 5xx),
 *       milter_rejected, milter_discarded (non_smtpd_milters: the message
 *       names the milter's reply; api_milter.h)
 *   503 unavailable     cleanup unreachable, timed out or said 4xx (e.g.
 *                       the queue is short of disk), or a milter said
 *                       try again later, with Retry-After
 * Keys are never logged: a log line names the key's ID and tenant.
 *
 * Expired Idempotency-Key records and message owners (QID -> tenant, for
 * status lookups) are removed at start and every API_TICK seconds by a
 * sweep that reads API_SWEEP_SLICE directory entries per turn of the loop
 * (verbose: a log line each), so a week of owners never stalls requests.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "api_batch.h"
#include "api_handoff.h"
#include "api_idem.h"
#include "api_keys.h"
#include "api_track.h"
#include "api_limits.h"
#include "api_milter.h"
#include "api_mustache.h"
#include "api_request.h"
#include "cleanup_proto.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "maps.h"
#include "mymalloc.h"
#include "own_listen.h"
#include "qfile.h"
#include "qid.h"
#include "safe_file.h"
#include "suppress.h"
#include "source_pool.h"
#include "tls_server.h"
#include "htable.h"
#include "trace.h"
#include "trigger.h"
#include "vstr.h"

#define API_LISTEN_BACKLOG 128
#define API_HEADERS_MAX (64 * 1024) /* bytes of a request's HTTP headers */
#define API_RETRY_AFTER "30" /* seconds, with every 503 */
#define API_TICK 300 /* seconds between removals of expired records */
#define API_SWEEP_SLICE 500 /* directory entries one turn of a sweep reads */
#define API_SWEEP_PAUSE_US 10000 /* between turns: the loop serves others */
#define API_IDEM_NAME_LEN 64 /* an idempotency record: SHA-256 in hex */
#define API_USAGE_DIR "usage" /* under it: each tenant's count of the day */
#define API_OWNER_TTL (7 * 86400) /* seconds a message's owner is kept */

/* The removal of expired records from one flat directory, a slice of
   entries at a time, so that a directory of a week of messages never
   stalls the loop: each slice is a bounded amount of work, and requests
   are served between slices. */
typedef struct API_SWEEP {
    const char *what; /* for the log */
    char *dir;
    bool (*name_ok)(const char *name); /* a record's name */
    long long ttl; /* seconds */
    DIR *dp; /* NULL: no sweep in progress */
    time_t now; /* when the sweep started */
    size_t scanned;
    size_t removed;
    struct event *ev; /* the next slice */
} API_SWEEP;

typedef struct API_CTX {
    MAIL_SERVER *server;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    char *cleanup_path;
    char *queue_dir;
    char *keys_path;
    char *idem_dir; /* api_idempotency_directory */
    char *template_dir; /* api_template_directory */
    long long idem_ttl; /* api_idempotency_ttl, seconds */
    API_LIMITS limits;
    int cleanup_timeout; /* api_cleanup_timeout, seconds */
    API_LIMITS_STATE *limiter; /* api_tenant_daily_limit, _rate_limit */
    size_t spool_min; /* api_spool_min_recipients */
    char *render_path; /* private/render: the render service's wake-up */
    HTABLE *inflight; /* "tenant\nkey": Idempotency-Keys with cleanup */
    size_t pending; /* requests waiting for cleanup */
    bool retiring; /* exit when pending falls to 0 */
    API_SWEEP owner_sweep; /* owners/ */
    API_SWEEP idem_sweep; /* api_idempotency_directory */
    API_SWEEP rendered_sweep; /* rendered/: batches out of the spool */
    API_TRACK *track; /* /o/, /c/, /u/ (api_track.h) */
    SUPPRESS *sup; /* the suppression list (lazy), NULL: unusable */
    bool pools; /* smtp_source_pools is set: "pool" is checked */
    MAPS *pool_allow; /* smtp_source_pool_allow_maps, NULL: none */
    TLS_SERVER *tls; /* api_tls = yes: smtpd_tls_* certificates */
    API_MILTERS *milters; /* non_smtpd_milters, NULL: none */
} API_CTX;

/* One POST /v1/messages while cleanup has it: the request is answered
   from api_submit_done(), on the loop, once cleanup has spoken. */
typedef struct API_PENDING {
    API_CTX *ctx;
    struct evhttp_request *req;
    API_KEY key;
    API_MESSAGE *msg;
    char *idem; /* the Idempotency-Key, or NULL */
    char *body; /* with idem: the request body, for its record */
    size_t body_len;
    char *idem_entry; /* with idem: its entry in ctx->inflight */
    long long day; /* the UTC day its message was counted against */
} API_PENDING;

/* api_reply - send status with a JSON body */
static void api_reply(struct evhttp_request *req, int status,
                      const char *reason, const char *json)
{
    struct evbuffer *buf = evbuffer_new();

    if (buf == NULL)
        msg_fatal("out of memory");
    evbuffer_add(buf, json, strlen(json));
    evbuffer_add(buf, "\n", 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, status, reason, buf);
    evbuffer_free(buf);
}

/* api_reason - the HTTP reason phrase of a status */
static const char *api_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Content";
    case 500:
        return "Internal Server Error";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

/* api_fail - answer an error in the JSON form */
static void api_fail(struct evhttp_request *req, const API_ERROR *err)
{
    VSTR *json = vstr_alloc(200);

    api_error_json(err, json);
    if (err->status == 503)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                          API_RETRY_AFTER);
    if (err->status == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "WWW-Authenticate", "Bearer");
    api_reply(req, err->status, api_reason(err->status), vstr_str(json));
    vstr_free(json);
}

/* api_fail_with - api_fail for an error made here */
static void api_fail_with(struct evhttp_request *req, int status,
                          const char *code, const char *message)
{
    API_ERROR err;

    api_error_init(&err);
    err.status = status;
    err.code = code;
    vstr_cpy(err.message, message);
    api_fail(req, &err);
    api_error_free(&err);
}

/* api_body - the request body in one piece ("" when empty); like
   mymalloc, running out of memory ends the process */
static const char *api_body(struct evbuffer *body, size_t len)
{
    const char *data;

    if (len == 0)
        return "";
    if ((data = (const char *) evbuffer_pullup(body, -1)) == NULL)
        msg_fatal("out of memory for a request body of %zu bytes", len);
    return data;
}

/* api_peer - "host:port" of the client, for logs */
static void api_peer(struct evhttp_request *req, VSTR *out)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const char *host = "unknown";
    ev_uint16_t port = 0;

    if (conn != NULL)
        evhttp_connection_get_peer(conn, (char **) &host, &port);
    vstr_sprintf(out, "%s:%u", host, (unsigned) port);
}

/* api_authorize - the request's key, with the scope it needs; false after
   answering 401, 403 or 503 */
static bool api_authorize(API_CTX *ctx, struct evhttp_request *req, int scope,
                          API_KEY *key)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req),
                                          "Authorization");
    VSTR *why = vstr_alloc(100);
    VSTR *peer = vstr_alloc(64);
    bool ok = false;

    api_peer(req, peer);
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) {
        api_fail_with(req, 401, "unauthorized",
                      "an API key is required: Authorization: Bearer KEY");
    } else {
        switch (api_keys_lookup(ctx->keys_path, auth + 7, key, why)) {
        case API_KEYS_OK:
            if ((key->scopes & scope) == 0) {
                msg_info("api: client=%s key=%s tenant=%s: key lacks the "
                         "scope",
                         vstr_str(peer), key->id, key->tenant);
                api_fail_with(req, 403, "forbidden",
                              "this API key does not have the scope this "
                              "request needs");
            } else {
                ok = true;
            }
            break;
        case API_KEYS_UNKNOWN:
            msg_info("api: client=%s: unknown or revoked API key",
                     vstr_str(peer));
            api_fail_with(req, 401, "unauthorized",
                          "unknown or revoked API key");
            break;
        case API_KEYS_ERROR:
            msg_warn("api: %s", vstr_str(why));
            api_fail_with(req, 503, "unavailable",
                          "the API keys cannot be read; try again later");
            break;
        }
    }
    vstr_free(why);
    vstr_free(peer);
    return ok;
}

/* api_suppressed_add - the recipients cleanup dropped as suppressed
   (its STATUS suppressed=, NULL: none) into obj: "suppressed": [{"address",
   "reason"}], and "suppressed_count" when cleanup listed fewer than it
   dropped */
static void api_suppressed_add(json_t *obj, const char *suppressed)
{
    json_t *got;
    json_t *list;
    json_int_t count;

    if (suppressed == NULL ||
        (got = json_loads(suppressed, JSON_REJECT_DUPLICATES, NULL)) == NULL)
        return;
    list = json_object_get(got, "list");
    count = json_integer_value(json_object_get(got, "count"));
    if (json_is_array(list)) {
        json_object_set(obj, "suppressed", list);
        if (count > (json_int_t) json_array_size(list))
            json_object_set_new(obj, "suppressed_count", json_integer(count));
    }
    json_decref(got);
}

/* api_accepted - the 202 body: the queue ID and one ID per recipient */
static char *api_accepted(const char *queue_id, const API_MESSAGE *msg,
                          const char *suppressed)
{
    json_t *obj = json_object();
    json_t *rcpts = json_array();
    VSTR *id = vstr_alloc(40);
    char *text;

    json_object_set_new(obj, "id", json_string(queue_id));
    for (size_t i = 0; i < msg->rcpts->argc; i++) {
        json_t *one = json_object();

        vstr_sprintf(id, "%s.%zu", queue_id, i + 1);
        json_object_set_new(one, "to", json_string(msg->rcpts->argv[i]));
        json_object_set_new(one, "id", json_string(vstr_str(id)));
        json_array_append_new(rcpts, one);
    }
    json_object_set_new(obj, "recipients", rcpts);
    api_suppressed_add(obj, suppressed);
    text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    vstr_free(id);
    if (text == NULL)
        msg_fatal("out of memory");
    return text;
}

/* api_template_name_ok - 1 to 64 of [A-Za-z0-9._-], not starting '.' */
static bool api_template_name_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > 64 || name[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char) name[i]) && name[i] != '.' &&
            name[i] != '_' && name[i] != '-')
            return false;
    return true;
}

/* api_template_path - DIR/TENANT/NAME (tenant names are safe: api_keys) */
static void api_template_path(const API_CTX *ctx, const char *tenant,
                              const char *name, VSTR *path)
{
    vstr_sprintf(path, "%s/%s", ctx->template_dir, tenant);
    if (name != NULL)
        vstr_sprintf_append(path, "/%s", name);
}

/* api_template_load - the stored template object, or NULL (*missing when
   there is none, else why) */
static json_t *api_template_load(const API_CTX *ctx, const char *tenant,
                                 const char *name, bool *missing, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    json_error_t jerr;
    json_t *obj = NULL;
    char *data;
    size_t len;

    *missing = false;
    api_template_path(ctx, tenant, name, path);
    if ((data = safe_file_read(vstr_str(path), 16 * 1024 * 1024, &len)) ==
        NULL) {
        if (errno == ENOENT)
            *missing = true;
        else
            vstr_sprintf(why, "read %s: %s", vstr_str(path), strerror(errno));
    } else if ((obj = json_loadb(data, len, 0, &jerr)) == NULL ||
               !json_is_object(obj)) {
        vstr_sprintf(why, "%s: not a template", vstr_str(path));
        json_decref(obj);
        obj = NULL;
    }
    myfree(data);
    vstr_free(path);
    return obj;
}

/* api_template_check - a PUT body: an object of subject, text, html
   strings (text or html), each a valid template; NULL, or the error */
static bool api_template_check(json_t *obj, API_ERROR *err)
{
    static const char *const parts[] = {"subject", "text", "html"};
    const char *key;
    json_t *value;
    VSTR *why = vstr_alloc(100);
    bool ok = true;

    if (!json_is_object(obj)) {
        err->status = 400;
        err->code = "invalid_json";
        vstr_cpy(err->message, "the body must be a JSON object");
        ok = false;
    }
    if (ok) {
        json_object_foreach(obj, key, value)
        {
            bool known = false;
            API_MUSTACHE *tmpl;

            for (size_t i = 0; i < SLUICE_ARRAY_LEN(parts); i++)
                known |= strcmp(key, parts[i]) == 0;
            if (!known || !json_is_string(value)) {
                err->status = 400;
                err->code = "invalid_field";
                vstr_cpy(err->field, known ? key : "");
                vstr_cpy(err->message, known ? "a template part must be a "
                                               "string"
                                             : "a template has only subject, "
                                               "text and html");
                ok = false;
                break;
            }
            if ((tmpl = api_mustache_compile(json_string_value(value),
                                             json_string_length(value), why)) ==
                NULL) {
                err->status = 422;
                err->code = "invalid_template";
                vstr_cpy(err->field, key);
                vstr_sprintf(err->message, "%s: %s", key, vstr_str(why));
                ok = false;
                break;
            }
            api_mustache_free(tmpl);
        }
    }
    if (ok && json_object_get(obj, "text") == NULL &&
        json_object_get(obj, "html") == NULL) {
        err->status = 400;
        err->code = "missing_field";
        vstr_cpy(err->field, "text");
        vstr_cpy(err->message, "a template needs text or html");
        ok = false;
    }
    vstr_free(why);
    return ok;
}

/* api_templates - PUT, GET, DELETE /v1/templates/NAME */
static void api_templates(API_CTX *ctx, struct evhttp_request *req,
                          const char *name)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    VSTR *why = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    API_ERROR err;
    API_KEY key;
    json_t *old;
    json_t *obj = NULL;
    json_error_t jerr;
    bool missing;
    char *text;

    api_error_init(&err);
    if (method != EVHTTP_REQ_PUT && method != EVHTTP_REQ_GET &&
        method != EVHTTP_REQ_DELETE) {
        api_fail_with(req, 405, "method_not_allowed",
                      "/v1/templates/NAME takes PUT, GET and DELETE");
        goto out;
    }
    if (!api_authorize(ctx, req,
                       method == EVHTTP_REQ_GET
                           ? API_SCOPE_TEMPLATES | API_SCOPE_READ
                           : API_SCOPE_TEMPLATES,
                       &key))
        goto out;
    if (!api_template_name_ok(name)) {
        api_fail_with(req, 400, "invalid_field",
                      "a template name is 1 to 64 letters, digits, '.', '_' "
                      "or '-'");
        goto out;
    }
    old = api_template_load(ctx, key.tenant, name, &missing, why);
    if (old == NULL && !missing) {
        msg_warn("api: %s", vstr_str(why));
        api_fail_with(req, 503, "unavailable",
                      "the template cannot be read; try again later");
        goto out;
    }
    if (method == EVHTTP_REQ_GET || method == EVHTTP_REQ_DELETE) {
        if (old == NULL) {
            api_fail_with(req, 404, "not_found", "no such template");
        } else if (method == EVHTTP_REQ_GET) {
            json_object_set_new(old, "name", json_string(name));
            text = json_dumps(old, JSON_COMPACT);
            api_reply(req, 200, "OK", text ? text : "{}");
            free(text);
        } else {
            api_template_path(ctx, key.tenant, name, path);
            if (unlink(vstr_str(path)) < 0 ||
                safe_file_fsync_parent(vstr_str(path)) < 0) {
                msg_warn("api: remove %s: %m", vstr_str(path));
                api_fail_with(req, 503, "unavailable",
                              "the template cannot be removed");
            } else {
                msg_info("api: key=%s tenant=%s: template %s deleted", key.id,
                         key.tenant, name);
                api_reply(req, 200, "OK", "{\"deleted\":true}");
            }
        }
        json_decref(old);
        goto out;
    }
    /* PUT: check every part, then store it as the next version. */
    obj = json_loadb(api_body(body, len), len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL) {
        api_fail_with(req, 400, "invalid_json", "the body is not valid JSON");
    } else if (api_template_check(obj, &err)) {
        json_int_t version =
            old != NULL && json_is_integer(json_object_get(old, "version"))
                ? json_integer_value(json_object_get(old, "version")) + 1
                : 1;

        json_object_set_new(obj, "version", json_integer(version));
        text = json_dumps(obj, JSON_COMPACT);
        api_template_path(ctx, key.tenant, NULL, path);
        if ((mkdir(ctx->template_dir, 0700) < 0 && errno != EEXIST) ||
            (mkdir(vstr_str(path), 0700) < 0 && errno != EEXIST)) {
            msg_warn("api: mkdir %s: %m", vstr_str(path));
            api_fail_with(req, 503, "unavailable",
                          "the template cannot be stored");
        } else {
            api_template_path(ctx, key.tenant, name, path);
            if (text == NULL ||
                safe_file_write(vstr_str(path), text, strlen(text), 0600) < 0) {
                msg_warn("api: write %s: %m", vstr_str(path));
                api_fail_with(req, 503, "unavailable",
                              "the template cannot be stored");
            } else {
                VSTR *answer = vstr_alloc(100);

                msg_info("api: key=%s tenant=%s: template %s version %lld",
                         key.id, key.tenant, name, (long long) version);
                vstr_sprintf(answer, "{\"name\":\"%s\",\"version\":%lld}", name,
                             (long long) version);
                api_reply(req, 200, "OK", vstr_str(answer));
                vstr_free(answer);
            }
        }
        free(text);
    } else {
        api_fail(req, &err);
    }
    json_decref(old);
out:
    json_decref(obj);
    api_error_free(&err);
    vstr_free(why);
    vstr_free(path);
}

/* api_render - a request naming a template, made a request with subject,
   text and html rendered from the tenant's template (stored: already
   read, or NULL to read it now) and "data"; NULL (the request is not
   templated: use it as it is), or *failed with err */
static char *api_render(API_CTX *ctx, const API_KEY *key, const char *data,
                        size_t len, json_t *stored, bool *failed,
                        API_ERROR *err)
{
    static const char *const parts[] = {"subject", "text", "html"};
    json_error_t jerr;
    json_t *req = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *name;
    json_t *tdata;
    json_t *tmpl_obj = NULL;
    char *result = NULL;
    bool missing;

    *failed = false;
    if (req == NULL || !json_is_object(req) ||
        (name = json_object_get(req, "template")) == NULL)
        goto out; /* api_request_parse says what is wrong, if anything */
    *failed = true;
    err->status = 400;
    err->code = "invalid_field";
    if (!json_is_string(name)) {
        vstr_cpy(err->field, "template");
        vstr_cpy(err->message, "template must be a string");
        goto out;
    }
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(parts); i++) {
        if (json_object_get(req, parts[i]) != NULL) {
            vstr_cpy(err->field, parts[i]);
            vstr_sprintf(err->message,
                         "%s cannot be given with template (the template "
                         "has its own)",
                         parts[i]);
            goto out;
        }
    }
    tdata = json_object_get(req, "data");
    if (tdata != NULL && !json_is_object(tdata)) {
        vstr_cpy(err->field, "data");
        vstr_cpy(err->message, "data must be an object");
        goto out;
    }
    if (stored != NULL) {
        tmpl_obj = json_incref(stored);
    } else if ((tmpl_obj =
                    api_template_load(ctx, key->tenant, json_string_value(name),
                                      &missing, err->message)) == NULL) {
        if (missing) {
            err->status = 422;
            err->code = "unknown_template";
            vstr_cpy(err->field, "template");
            vstr_cpy(err->message, "no template of that name");
        } else {
            msg_warn("api: %s", vstr_str(err->message));
            err->status = 503;
            err->code = "unavailable";
        }
        goto out;
    }
    if (api_batch_render_parts(req, tmpl_obj, tdata,
                               ctx->limits.max_message_size, err) < 0)
        goto out;
    json_object_del(req, "template");
    json_object_del(req, "data");
    if ((result = json_dumps(req, JSON_COMPACT)) == NULL) {
        err->status = 422;
        err->code = "invalid_template";
        vstr_cpy(err->message, "the rendered text is not valid UTF-8");
        goto out;
    }
    *failed = false;
out:
    json_decref(req);
    json_decref(tmpl_obj);
    return result;
}

/* api_owner_path - DIR/owners[/QID] */
static void api_owner_path(const API_CTX *ctx, const char *qid, VSTR *path)
{
    vstr_sprintf(path, "%s/%s", ctx->idem_dir, API_OWNERS);
    if (qid != NULL)
        vstr_sprintf_append(path, "/%s", qid);
}

/* api_owner_record - note which tenant queued qid, for status lookups
   (api_batch_owner_record) */
static void api_owner_record(const API_CTX *ctx, const char *qid,
                             const char *tenant)
{
    api_batch_owner_record(ctx->idem_dir, qid, tenant);
}

/* api_owner_is - did tenant queue qid? */
static bool api_owner_is(const API_CTX *ctx, const char *qid,
                         const char *tenant)
{
    VSTR *path = vstr_alloc(100);
    char *data;
    bool yes;

    api_owner_path(ctx, qid, path);
    data = safe_file_read(vstr_str(path), API_KEYS_TENANT_MAX + 1, NULL);
    yes = data != NULL && strcmp(data, tenant) == 0;
    myfree(data);
    vstr_free(path);
    return yes;
}

/* api_batch_status - when id names a batch of the key's tenant (any for
   an admin key), answer its state per recipient from the batch and
   render's log (render/render.c): "accepted" (not rendered yet),
   "queued" with the message's "id", "held" (a milter's quarantine), or
   "failed" with the "code" and "reason"; false when id is no such batch.
   A batch still in the spool is read there; one render has finished
   from what render kept of it (api_batch_rendered_dir: the recipients
   and the log, for API_BATCH_RENDERED_TTL): state "done", "rendered":
   true. */
static bool api_batch_status(API_CTX *ctx, struct evhttp_request *req,
                             const API_KEY *key, const char *id)
{
    VSTR *path = vstr_alloc(100);
    json_error_t jerr;
    json_t *batch;
    json_t *rcpts;
    json_t *list;
    json_t *obj;
    const char *tenant;
    char *text;
    char *line;
    char *end;
    size_t len = 0;
    size_t marks = 0;
    size_t count;
    bool rendered = false;

    if (!qid_valid(id)) {
        vstr_free(path);
        return false;
    }
    api_batch_dir(ctx->idem_dir, path);
    vstr_cat(path, "/");
    vstr_cat(path, id);
    if ((batch = json_load_file(vstr_str(path), 0, &jerr)) == NULL) {
        /* Rendered and gone from the spool: what render kept. */
        api_batch_rendered_dir(ctx->idem_dir, path);
        vstr_cat(path, "/");
        vstr_cat(path, id);
        rendered = (batch = json_load_file(vstr_str(path), 0, &jerr)) != NULL;
    }
    tenant = json_string_value(json_object_get(batch, "tenant"));
    rcpts = json_object_get(batch, "recipients");
    if (tenant == NULL || !json_is_array(rcpts) ||
        (!(key->scopes & API_SCOPE_ADMIN) &&
         strcmp(tenant, key->tenant) != 0)) {
        json_decref(batch);
        vstr_free(path);
        return false;
    }
    count = json_array_size(rcpts);
    list = json_array();
    for (size_t i = 0; i < count; i++) {
        json_t *r = json_array_get(rcpts, i);

        json_array_append_new(list, json_pack("{s:O, s:s}", "to",
                                              json_object_get(r, "to"), "state",
                                              "accepted"));
    }
    vstr_cat(path, ".log");
    text = safe_file_read(vstr_str(path), 1024L * 1024 * 1024, &len);
    if (rendered && text == NULL) {
        /* Its log expired first: the batch is as good as forgotten. */
        json_decref(list);
        json_decref(batch);
        vstr_free(path);
        return false;
    }
    for (line = text;
         text && (end = memchr(line, '\n', len - (size_t) (line - text)));
         line = end + 1) {
        unsigned long long index;
        long code;
        char *reason;
        int n = 0;
        char kind;
        json_t *r;

        *end = 0;
        if (sscanf(line, "%c %llu %n", &kind, &index, &n) < 2 || n == 0 ||
            index >= count)
            continue;
        r = json_array_get(list, (size_t) index);
        if ((kind == 'c' || kind == 'q') && qid_valid(line + n)) {
            /* q: a milter quarantined it into hold/ */
            json_object_set_new(r, "state",
                                json_string(kind == 'c' ? "queued" : "held"));
            json_object_set_new(r, "id", json_string(line + n));
        } else if (kind == 'f' && (code = strtol(line + n, &reason, 10)) > 0) {
            json_object_set_new(r, "state", json_string("failed"));
            json_object_set_new(r, "code", json_integer(code));
            while (*reason == ' ')
                reason++;
            if (*reason)
                json_object_set_new(r, "reason", json_string(reason));
        } else {
            continue;
        }
        marks++;
    }
    myfree(text);
    obj = json_pack("{s:s, s:s, s:s, s:b, s:o}", "id", id, "batch", id, "state",
                    marks >= count || rendered ? "done" : "rendering",
                    "rendered", rendered, "recipients", list);
    if (obj == NULL || (text = json_dumps(obj, JSON_COMPACT)) == NULL)
        msg_fatal("out of memory");
    api_reply(req, 200, "OK", text);
    free(text);
    json_decref(obj);
    json_decref(batch);
    vstr_free(path);
    return true;
}

static void api_status(API_CTX *ctx, struct evhttp_request *req,
                       const char *qid)
{
    static const char *const queues[] = {"incoming", "active", "deferred",
                                         "hold"};
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    QFILE_INFO *info = NULL;
    const char *where = NULL;
    API_KEY key;
    char *text;

    if (!api_authorize(ctx, req, API_SCOPE_READ, &key))
        goto out;
    if (qid_valid(qid) && api_batch_status(ctx, req, &key, qid))
        goto out;
    if (!qid_valid(qid) || (!(key.scopes & API_SCOPE_ADMIN) &&
                            !api_owner_is(ctx, qid, key.tenant))) {
        api_fail_with(req, 404, "not_found",
                      "no message of this tenant with that ID");
        goto out;
    }
    /* Two passes: a file moving back (deferred to active) between two
       looks is found the second time. */
    for (int pass = 0; pass < 2 && where == NULL; pass++) {
        for (size_t i = 0; i < SLUICE_ARRAY_LEN(queues) && where == NULL; i++) {
            int fd;

            mail_queue_path(path, ctx->queue_dir, queues[i], qid);
            if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0)
                continue;
            if ((info = qfile_info_read(fd, why)) != NULL &&
                !mail_queue_holds(ctx->queue_dir, qid, fd))
                info = qfile_info_free(info); /* done meanwhile */
            if (info != NULL)
                where = queues[i];
            (void) close(fd);
        }
    }
    {
        json_t *obj = json_object();
        json_t *rcpts = json_array();
        VSTR *id = vstr_alloc(40);

        json_object_set_new(obj, "id", json_string(qid));
        /* Out of the queue: delivered, bounced or expired (the status
           index of issue 15 will say which). */
        json_object_set_new(
            obj, "state",
            json_string(where == NULL                    ? "done"
                        : strcmp(where, "deferred") == 0 ? "deferred"
                        : strcmp(where, "hold") == 0     ? "held"
                                                         : "queued"));
        for (size_t i = 0; info != NULL && i < info->rcpt_count; i++) {
            vstr_sprintf(id, "%s.%zu", qid, i + 1);
            json_array_append_new(
                rcpts,
                json_pack("{s:s, s:s, s:s}", "to", info->rcpts[i].address, "id",
                          vstr_str(id), "state",
                          info->rcpts[i].done ? "done" : "pending"));
        }
        json_object_set_new(obj, "recipients", rcpts);
        text = json_dumps(obj, JSON_COMPACT);
        api_reply(req, 200, "OK", text ? text : "{}");
        free(text);
        json_decref(obj);
        vstr_free(id);
    }
out:
    if (info != NULL)
        qfile_info_free(info);
    vstr_free(path);
    vstr_free(why);
}

/* api_now - the time, with its fraction */
static double api_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* api_over_limit - count n more messages of the key's tenant against
   its limits (global/api_limits.h; *day gets the day they count on), or
   answer 429 with Retry-After; true then (nothing counted) */
static bool api_over_limit(API_CTX *ctx, struct evhttp_request *req,
                           const API_KEY *key, long long n, long long *day)
{
    const char *which = "";
    long long wait;
    char retry[32];

    if ((wait = api_limits_take(ctx->limiter, key->tenant, n, api_now(), day,
                                &which)) == 0)
        return false;
    snprintf(retry, sizeof(retry), "%lld", wait);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                      retry);
    msg_info("api: key=%s tenant=%s: %s limit reached: 429, retry after %lld "
             "s",
             key->id, key->tenant, which, wait);
    if (strcmp(which, "daily") == 0)
        api_fail_with(req, 429, "rate_limited",
                      "this tenant has sent its api_tenant_daily_limit of "
                      "messages today (UTC)");
    else
        api_fail_with(req, 429, "rate_limited",
                      "this tenant sends faster than its "
                      "api_tenant_rate_limit of messages per second");
    return true;
}

/*
 * Idempotency-Keys in flight: a key's record is written only when cleanup
 * has committed its message, so a retry that comes while the first
 * request is still with cleanup finds no record. It must not queue a
 * second message: it gets 409 idempotency_key_in_progress, and a retry
 * after the first request's answer gets that answer replayed.
 */

/* api_inflight_enter - mark the tenant's key in flight; the entry to
   give api_inflight_leave, or NULL when it was in flight already */
static char *api_inflight_enter(API_CTX *ctx, const char *tenant,
                                const char *idem)
{
    VSTR *name = vstr_alloc(100);
    char *entry = NULL;

    vstr_sprintf(name, "%s\n%s", tenant, idem);
    if (htable_enter(ctx->inflight, vstr_str(name), ctx))
        entry = mystrdup(vstr_str(name));
    vstr_free(name);
    return entry;
}

/* api_inflight_leave - the key's request is answered; NULL */
static char *api_inflight_leave(API_CTX *ctx, char *entry)
{
    if (entry != NULL) {
        htable_delete(ctx->inflight, entry);
        myfree(entry);
    }
    return NULL;
}

/* api_inflight_busy - answer 409 when the tenant's key is in flight;
   true when it was answered */
static bool api_inflight_busy(API_CTX *ctx, struct evhttp_request *req,
                              const API_KEY *key, const char *idem)
{
    VSTR *name = vstr_alloc(100);
    bool busy;

    vstr_sprintf(name, "%s\n%s", key->tenant, idem);
    busy = htable_find(ctx->inflight, vstr_str(name)) != NULL;
    vstr_free(name);
    if (busy) {
        msg_info("api: key=%s tenant=%s: Idempotency-Key in progress: 409",
                 key->id, key->tenant);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                          "1");
        api_fail_with(req, 409, "idempotency_key_in_progress",
                      "request with this Idempotency-Key is in progress");
    }
    return busy;
}

/* api_idem_replay - answer a retry from its Idempotency-Key record;
   true when it was answered (replayed or refused) */
static bool api_idem_replay(API_CTX *ctx, struct evhttp_request *req,
                            const API_KEY *key, const char *idem,
                            const char *data, size_t len)
{
    VSTR *body = vstr_alloc(200);
    VSTR *why = vstr_alloc(100);
    bool answered = true;
    int status = 0;

    switch (api_idem_lookup(ctx->idem_dir, ctx->idem_ttl, key->tenant, idem,
                            data, len, &status, body, why)) {
    case API_IDEM_NONE:
        answered = false;
        break;
    case API_IDEM_REPLAY:
        msg_info("api: key=%s tenant=%s: Idempotency-Key seen before: "
                 "first answer replayed",
                 key->id, key->tenant);
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "Idempotent-Replayed", "true");
        vstr_trim(body);
        api_reply(req, status, api_reason(status), vstr_str(body));
        break;
    case API_IDEM_MISMATCH:
        api_fail_with(req, 422, "idempotency_key_reused",
                      "this Idempotency-Key was used for another request");
        break;
    case API_IDEM_ERROR:
        msg_warn("api: %s", vstr_str(why));
        api_fail_with(req, 503, "unavailable",
                      "the idempotency records cannot be read; try again "
                      "later");
        break;
    }
    vstr_free(body);
    vstr_free(why);
    return answered;
}

/* api_pending_free - release a request's hand-off state; the last one
   out of a retiring process ends it */
static void api_pending_free(API_PENDING *p)
{
    API_CTX *ctx = p->ctx;

    p->idem_entry = api_inflight_leave(ctx, p->idem_entry);
    api_message_free(p->msg);
    myfree(p->idem);
    myfree(p->body);
    myfree(p);
    if (ctx->pending == 0)
        msg_panic("%s: no request pending", __func__);
    if (--ctx->pending == 0 && ctx->retiring)
        mail_server_exit(ctx->server, 0);
}

/* api_submit_done - cleanup has spoken (or gone): answer the request */
static void api_submit_done(const API_HANDOFF_RESULT *result, void *arg)
{
    API_PENDING *p = arg;
    API_CTX *ctx = p->ctx;
    struct evhttp_request *req = p->req;
    const API_KEY *key = &p->key;
    const API_MESSAGE *msg = p->msg;
    API_ERROR err;

    api_error_init(&err);
    if (result->code == 0) {
        char *text = api_accepted(result->queue_id, msg, result->suppressed);

        msg_info("%s: api key=%s tenant=%s from=<%s> nrcpt=%zu size=%zu",
                 result->queue_id, key->id, key->tenant, msg->sender,
                 msg->rcpts->argc, vstr_len(msg->content));
        /* Queued: record the answer before giving it. A record that
           cannot be written costs a duplicate on retry, never a loss. */
        if (p->idem != NULL &&
            api_idem_store(ctx->idem_dir, key->tenant, p->idem, p->body,
                           p->body_len, 202, text, err.message) < 0)
            msg_warn("%s: api: Idempotency-Key not recorded: %s",
                     result->queue_id, vstr_str(err.message));
        api_owner_record(ctx, result->queue_id, key->tenant);
        api_reply(req, 202, "Accepted", text);
        free(text);
    } else {
        /* Give back the message counted when it was handed over. */
        api_limits_give(ctx->limiter, key->tenant, 1, p->day);
        vstr_cpy(err.message, result->why);
        if (result->milter != NULL && result->discarded) {
            /* non_smtpd_milters refused it (api_milter.h) */
            err.status = 422;
            err.code = "milter_discarded";
            msg_info("api: key=%s tenant=%s: %s", key->id, key->tenant,
                     result->why);
        } else if (result->milter != NULL && result->code >= 500) {
            err.status = 422;
            err.code = "milter_rejected";
            msg_info("api: key=%s tenant=%s: %s", key->id, key->tenant,
                     result->why);
        } else if (result->code >= 500) {
            err.status = 422;
            err.code = "rejected";
            msg_info("api: key=%s tenant=%s: %s", key->id, key->tenant,
                     result->why);
        } else {
            err.status = 503;
            err.code = "unavailable";
            msg_warn("api: cannot queue a message: %s", result->why);
        }
        api_fail(req, &err);
    }
    api_error_free(&err);
    api_pending_free(p);
}

/* api_submit - hand msg (taken over) to cleanup; the request is answered
   when cleanup has committed it or failed, while the loop serves others */
static void api_submit(API_CTX *ctx, struct evhttp_request *req,
                       const API_KEY *key, const char *idem, const char *data,
                       size_t len, API_MESSAGE *msg)
{
    API_PENDING *p;
    VSTR *why;
    long long day;

    /* Counted now, so that requests in flight cannot pass the limit
       together; given back when the message is not queued. */
    if (api_over_limit(ctx, req, key, 1, &day)) {
        api_message_free(msg);
        return;
    }
    p = mycalloc(1, sizeof(*p));
    why = vstr_alloc(100);
    p->day = day;
    p->ctx = ctx;
    p->req = req;
    p->key = *key;
    p->msg = msg;
    if (idem != NULL) {
        p->idem = mystrdup(idem);
        p->body = mymemdup(data, len);
        p->body_len = len;
        p->idem_entry = api_inflight_enter(ctx, key->tenant, idem);
    }
    ctx->pending++;
    if (api_submit_start(mail_server_base(ctx->server), ctx->milters,
                         ctx->cleanup_path, ctx->cleanup_timeout, msg,
                         p->key.tenant, api_submit_done, p, why) < 0) {
        API_HANDOFF_RESULT result = {
            .code = -1, .queue_id = "", .why = vstr_str(why)};

        api_submit_done(&result, p);
    }
    vstr_free(why);
}

/* api_traceparent - the request's W3C traceparent header, or NULL */
static const char *api_traceparent(struct evhttp_request *req)
{
    return evhttp_find_header(evhttp_request_get_input_headers(req),
                              TRACE_HEADER);
}

/*
 * Batches: "recipients": [{"to": ADDRESS, "data": {...}}, ...] instead of
 * to/cc/bcc. Each recipient gets a message of its own (its own To:, and
 * with "template", the template rendered with the request's "data"
 * overlaid by the recipient's), handed to cleanup as any other. The whole
 * request is checked first (every address, the shape of every entry, and
 * the first recipient's message built in full): any error there is the
 * answer, and nothing is sent. Then the messages are rendered and handed
 * over in slices on the loop, at most API_BATCH_PARALLEL at a time, so
 * the process serves other clients throughout. The template is read once:
 * a PUT during the batch does not change its messages. A message cleanup refuses
 * (5xx), or whose data cannot be rendered, fails alone; a temporary
 * failure (cleanup unreachable, 4xx, a timeout) stops the batch, and the
 * recipients not yet queued are reported failed "unavailable" for the
 * client to send again. The 202 comes when every recipient has its
 * verdict, only for messages cleanup has committed: {"id": the first
 * queued message's ID, "queued": N, "failed": N, "recipients": [{"to",
 * "status": "queued", "id"} or {"to", "status": "failed", "error":
 * {"code", "message"}}]} in the request's order. When none is queued the
 * answer is the first failure's error.
 */
#define API_BATCH_PARALLEL 4 /* a batch's messages with cleanup at once */

typedef struct API_BATCH {
    API_CTX *ctx;
    struct evhttp_request *req;
    API_KEY key;
    char *idem; /* the Idempotency-Key, or NULL */
    char *body; /* with idem: the request body */
    size_t body_len;
    char *idem_entry; /* with idem: its entry in ctx->inflight */
    json_t *base; /* the request less recipients and data */
    json_t *data; /* the request's "data", or NULL */
    json_t *rcpts; /* "recipients" */
    json_t *results; /* one object per recipient, in order */
    json_t *tmpl; /* the stored template, read once: one version for all */
    char *traceparent; /* the request's (valid), NULL: none */
    API_MESSAGE *first; /* recipient 0's message, built while checking */
    size_t count; /* recipients */
    size_t next; /* the next recipient to render */
    size_t inflight; /* messages with cleanup */
    size_t queued;
    bool stop; /* a temporary failure: start no more */
    long long day; /* the UTC day the batch was counted against */
    int fail_status; /* the first failure: its HTTP status, code, text */
    const char *fail_code;
    VSTR *fail_message;
    struct event *resume; /* to go on from the loop */
} API_BATCH;

typedef struct API_BATCH_ITEM {
    API_BATCH *batch;
    size_t index;
    API_MESSAGE *msg;
} API_BATCH_ITEM;

static void api_batch_pump(API_BATCH *b);

/* api_batch_failed - recipient i failed; the first failure is kept for
   an answer when none is queued */
static void api_batch_failed(API_BATCH *b, size_t i, int status,
                             const char *code, const char *message)
{
    json_t *one = json_array_get(b->results, i);
    json_t *text = json_string(message);

    if (text == NULL) /* a reason quoting bytes that are not UTF-8 */
        text = json_string("(the reason is not UTF-8)");
    json_object_set_new(one, "status", json_string("failed"));
    json_object_set_new(one, "error",
                        json_pack("{s:s, s:o}", "code", code, "message", text));
    if (b->fail_status == 0) {
        b->fail_status = status;
        b->fail_code = code;
        vstr_cpy(b->fail_message, message);
    }
}

/* api_pool_check - may the key's tenant name msg's pool? 0; or -1 with
   err: 403 forbidden (field "pool") when smtp_source_pool_allow_maps does
   not allow it, 503 when the table cannot be read. Without
   smtp_source_pools the field has no effect and is not checked. */
static int api_pool_check(const API_CTX *ctx, const API_KEY *key,
                          const API_MESSAGE *msg, API_ERROR *err)
{
    SOURCE_POOL_REQUESTER who = {.tenant = key->tenant};
    VSTR *why;
    int verdict;

    if (msg->pool == NULL || !ctx->pools)
        return 0;
    why = vstr_alloc(100);
    verdict = source_pool_allowed(ctx->pool_allow, &who, msg->pool, why);
    if (verdict == SOURCE_POOL_ALLOWED) {
        vstr_free(why);
        return 0;
    }
    vstr_cpy(err->field, "pool");
    if (verdict == SOURCE_POOL_ALLOW_FAIL) {
        msg_warn("api: key=%s tenant=%s: %s", key->id, key->tenant,
                 vstr_str(why));
        err->status = 503;
        err->code = "unavailable";
        vstr_cpy(err->message, "the pool allow-list cannot be read; try "
                               "again later");
    } else {
        msg_warn("api: key=%s tenant=%s: pool %s refused: %s", key->id,
                 key->tenant, msg->pool, vstr_str(why));
        err->status = 403;
        err->code = "forbidden";
        vstr_sprintf(err->message, "this tenant may not send from pool \"%s\"",
                     msg->pool);
    }
    vstr_free(why);
    return -1;
}

/* api_batch_prepare - recipient i's message, or NULL with err */
static API_MESSAGE *api_batch_prepare(API_BATCH *b, size_t i, API_ERROR *err)
{
    API_MESSAGE *msg =
        api_batch_recipient(b->base, b->data, json_array_get(b->rcpts, i),
                            b->tmpl, &b->ctx->limits, i, err);

    if (msg != NULL && api_pool_check(b->ctx, &b->key, msg, err) < 0)
        msg = api_message_free(msg);
    return msg;
}

/* api_batch_free - release a batch; the last request of a retiring
   process ends it */
static void api_batch_free(API_BATCH *b)
{
    API_CTX *ctx = b->ctx;

    b->idem_entry = api_inflight_leave(ctx, b->idem_entry);
    myfree(b->idem);
    myfree(b->body);
    myfree(b->traceparent);
    json_decref(b->base);
    json_decref(b->data);
    json_decref(b->rcpts);
    json_decref(b->results);
    json_decref(b->tmpl);
    api_message_free(b->first);
    vstr_free(b->fail_message);
    if (b->resume != NULL)
        event_free(b->resume);
    myfree(b);
    if (ctx->pending == 0)
        msg_panic("%s: no request pending", __func__);
    if (--ctx->pending == 0 && ctx->retiring)
        mail_server_exit(ctx->server, 0);
}

/* api_batch_finish - every recipient has its verdict: answer */
static void api_batch_finish(API_BATCH *b)
{
    API_CTX *ctx = b->ctx;
    const char *first = NULL;

    api_limits_give(ctx->limiter, b->key.tenant,
                    (long long) (b->count - b->queued), b->day);
    for (size_t i = 0; i < b->count && first == NULL; i++) {
        json_t *id = json_object_get(json_array_get(b->results, i), "id");

        if (id != NULL)
            first = json_string_value(id);
    }
    msg_info("api: key=%s tenant=%s: batch of %zu: %zu queued, %zu failed",
             b->key.id, b->key.tenant, b->count, b->queued,
             b->count - b->queued);
    if (b->queued == 0) {
        API_ERROR err;

        api_error_init(&err);
        err.status = b->fail_status ? b->fail_status : 503;
        err.code = b->fail_status ? b->fail_code : "unavailable";
        vstr_cpy(err.message, vstr_str(b->fail_message));
        api_fail(b->req, &err);
        api_error_free(&err);
    } else {
        json_t *obj = json_object();
        VSTR *qid = vstr_alloc(32);
        VSTR *why = vstr_alloc(100);
        char *text;

        /* "QID.1" names the first message: its ID is QID */
        vstr_ncpy(qid, first, strcspn(first, "."));
        json_object_set_new(obj, "id", json_string(vstr_str(qid)));
        json_object_set_new(obj, "queued",
                            json_integer((json_int_t) b->queued));
        json_object_set_new(obj, "failed",
                            json_integer((json_int_t) (b->count - b->queued)));
        json_object_set(obj, "recipients", b->results);
        if ((text = json_dumps(obj, JSON_COMPACT)) == NULL)
            msg_fatal("out of memory");
        if (b->idem != NULL &&
            api_idem_store(ctx->idem_dir, b->key.tenant, b->idem, b->body,
                           b->body_len, 202, text, why) < 0)
            msg_warn("api: batch: Idempotency-Key not recorded: %s",
                     vstr_str(why));
        api_reply(b->req, 202, "Accepted", text);
        free(text);
        json_decref(obj);
        vstr_free(qid);
        vstr_free(why);
    }
    api_batch_free(b);
}

/* api_batch_done - cleanup's verdict on one of the batch's messages */
static void api_batch_done(const API_HANDOFF_RESULT *result, void *arg)
{
    API_BATCH_ITEM *item = arg;
    API_BATCH *b = item->batch;

    if (result->code == 0) {
        json_t *one = json_array_get(b->results, item->index);
        VSTR *id = vstr_alloc(40);

        msg_info("%s: api key=%s tenant=%s from=<%s> nrcpt=1 size=%zu "
                 "batch=%zu",
                 result->queue_id, b->key.id, b->key.tenant, item->msg->sender,
                 vstr_len(item->msg->content), item->index);
        vstr_sprintf(id, "%s.1", result->queue_id);
        json_object_set_new(one, "status", json_string("queued"));
        json_object_set_new(one, "id", json_string(vstr_str(id)));
        api_suppressed_add(one, result->suppressed);
        api_owner_record(b->ctx, result->queue_id, b->key.tenant);
        b->queued++;
        vstr_free(id);
    } else if (result->code >= 500) {
        msg_info("api: key=%s tenant=%s: batch recipient %zu: %s", b->key.id,
                 b->key.tenant, item->index, result->why);
        if (result->milter == NULL)
            api_batch_failed(b, item->index, 422, "rejected", result->why);
        else if (result->discarded)
            api_batch_failed(b, item->index, 422, "milter_discarded",
                             result->why);
        else
            api_batch_failed(b, item->index, 422, "milter_rejected",
                             result->why);
    } else {
        msg_warn("api: cannot queue a message: %s", result->why);
        api_batch_failed(b, item->index, 503, "unavailable", result->why);
        b->stop = true;
    }
    api_message_free(item->msg);
    myfree(item);
    b->inflight--;
    api_batch_pump(b);
}

/* api_batch_resume - go on from the loop */
static void api_batch_resume(evutil_socket_t fd, short what, void *arg)
{
    api_batch_pump(arg);
}

/* api_batch_pump - start messages while there is room; answer when all
   are done */
static void api_batch_pump(API_BATCH *b)
{
    size_t budget = API_BATCH_PARALLEL; /* renders per turn of the loop */
    VSTR *why = vstr_alloc(100);
    API_ERROR err;

    api_error_init(&err);
    while (!b->stop && b->next < b->count && b->inflight < API_BATCH_PARALLEL &&
           budget > 0) {
        size_t i = b->next++;
        API_MESSAGE *msg;
        API_BATCH_ITEM *item;

        budget--;
        if (i == 0) {
            msg = b->first;
            b->first = NULL;
        } else if ((msg = api_batch_prepare(b, i, &err)) == NULL) {
            api_batch_failed(b, i, err.status, err.code, vstr_str(err.message));
            continue;
        }
        api_batch_traceparent(msg, b->traceparent);
        item = mycalloc(1, sizeof(*item));
        item->batch = b;
        item->index = i;
        item->msg = msg;
        if (api_submit_start(mail_server_base(b->ctx->server), b->ctx->milters,
                             b->ctx->cleanup_path, b->ctx->cleanup_timeout, msg,
                             b->key.tenant, api_batch_done, item, why) < 0) {
            msg_warn("api: cannot queue a message: %s", vstr_str(why));
            api_batch_failed(b, i, 503, "unavailable", vstr_str(why));
            b->stop = true;
            api_message_free(msg);
            myfree(item);
            continue;
        }
        b->inflight++;
    }
    api_error_free(&err);
    vstr_free(why);
    if (b->inflight > 0)
        return; /* api_batch_done comes back */
    if (!b->stop && b->next < b->count) {
        static const struct timeval now = {0, 0};

        /* Every render of this turn failed: go on after other events. */
        if (b->resume == NULL &&
            (b->resume = evtimer_new(mail_server_base(b->ctx->server),
                                     api_batch_resume, b)) == NULL)
            msg_fatal("cannot create an event");
        evtimer_add(b->resume, &now);
        return;
    }
    for (size_t i = b->next; i < b->count; i++)
        api_batch_failed(b, i, 503, "unavailable",
                         "not attempted: an earlier message could not be "
                         "queued; send this recipient again later");
    api_batch_finish(b);
}

/*
 * Spooled batches (api_spool_min_recipients and more): the checked
 * request goes into the durable batch spool (global/api_batch.h) with
 * the template read once, and the 202 is written only once that file
 * and its directory are fsynced. The render service (render/render.c)
 * renders and queues the recipients at its own pace; a crash of either
 * side loses none and sends none twice (render.c says how). The answer:
 * {"id": BATCH-ID, "batch": BATCH-ID, "accepted": N, "recipients":
 * [{"to", "status": "accepted"}...]} in the request's order.
 */

/* api_render_configured - does master run a render service (its socket
   private/render exists)? An instance made before there was one queues
   every batch in the request, as it always did, rather than spool
   batches nothing would render. */
static bool api_render_configured(const API_CTX *ctx)
{
    struct stat st;

    return stat(ctx->render_path, &st) == 0;
}

/* api_batch_spooled - spool b, answer 202 (or 503), free b */
static void api_batch_spooled(API_BATCH *b)
{
    API_CTX *ctx = b->ctx;
    json_t *batch = json_object();
    json_t *answer = json_object();
    VSTR *dir = vstr_alloc(100);
    VSTR *id = vstr_alloc(32);
    VSTR *why = vstr_alloc(100);
    char *text;

    api_batch_dir(ctx->idem_dir, dir);
    json_object_set_new(batch, "tenant", json_string(b->key.tenant));
    json_object_set_new(batch, "key", json_string(b->key.id));
    json_object_set_new(batch, "created", json_integer(time(NULL)));
    json_object_set(batch, "base", b->base);
    json_object_set(batch, "data", b->data ? b->data : json_null());
    json_object_set(batch, "template", b->tmpl ? b->tmpl : json_null());
    json_object_set(batch, "recipients", b->rcpts);
    if (b->traceparent != NULL)
        json_object_set_new(batch, "traceparent", json_string(b->traceparent));
    for (size_t i = 0; i < b->count; i++)
        json_object_set_new(json_array_get(b->results, i), "status",
                            json_string("accepted"));
    json_object_set_new(answer, "accepted",
                        json_integer((json_int_t) b->count));
    json_object_set(answer, "recipients", b->results);
    if (b->idem != NULL) {
        json_t *request = json_stringn(b->body, b->body_len);

        /* The key, the request and the answer go with the batch: a crash
           before the record is written is mended from them (api_batch.h). */
        if (request != NULL)
            json_object_set_new(batch, "idem",
                                json_pack("{s:s, s:o, s:O}", "key", b->idem,
                                          "request", request, "answer",
                                          answer));
    }
    if (api_batch_spool(vstr_str(dir), batch, id, why) < 0) {
        msg_warn("api: cannot spool a batch: %s", vstr_str(why));
        api_limits_give(ctx->limiter, b->key.tenant, (long long) b->count,
                        b->day);
        evhttp_add_header(evhttp_request_get_output_headers(b->req),
                          "Retry-After", API_RETRY_AFTER);
        api_fail_with(b->req, 503, "unavailable",
                      "the batch cannot be stored; try again later");
    } else {
        json_t *full = json_object();

        json_object_set_new(full, "id", json_string(vstr_str(id)));
        json_object_set_new(full, "batch", json_string(vstr_str(id)));
        json_object_update(full, answer);
        if ((text = json_dumps(full, JSON_COMPACT)) == NULL)
            msg_fatal("out of memory");
        json_decref(full);
        msg_info("api: key=%s tenant=%s: batch %s of %zu recipients spooled",
                 b->key.id, b->key.tenant, vstr_str(id), b->count);
        if (b->idem != NULL &&
            api_idem_store(ctx->idem_dir, b->key.tenant, b->idem, b->body,
                           b->body_len, 202, text, why) < 0)
            msg_warn("api: batch: Idempotency-Key not recorded: %s",
                     vstr_str(why));
        api_reply(b->req, 202, "Accepted", text);
        free(text);
        /* A lost wake-up only waits for the service's next tick. */
        (void) trigger_send(ctx->render_path, TRIGGER_WAKEUP);
    }
    json_decref(batch);
    json_decref(answer);
    vstr_free(dir);
    vstr_free(id);
    vstr_free(why);
    api_batch_free(b);
}

/* api_batch_check - the batch's shape and every address; 0, or -1 with
   err (results gets one {"to": address} per recipient) */
static int api_batch_check(API_BATCH *b, json_t *top, API_ERROR *err)
{
    static const char *const excluded[] = {"to", "cc", "bcc", "raw"};
    VSTR *field = vstr_alloc(32);
    VSTR *addr = vstr_alloc(64);
    json_t *data = json_object_get(top, "data");
    bool templated = json_object_get(top, "template") != NULL;
    int ret = -1;

    err->status = 400;
    err->code = "invalid_field";
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(excluded); i++) {
        if (json_object_get(top, excluded[i]) != NULL) {
            vstr_cpy(err->field, excluded[i]);
            vstr_sprintf(err->message,
                         "%s cannot be given with recipients (each "
                         "recipient gets a message of its own)",
                         excluded[i]);
            goto out;
        }
    }
    if (!json_is_array(b->rcpts) || json_array_size(b->rcpts) == 0) {
        vstr_cpy(err->field, "recipients");
        vstr_cpy(err->message, "recipients must be a non-empty array of "
                               "{\"to\", \"data\"} objects");
        goto out;
    }
    if (json_array_size(b->rcpts) > b->ctx->limits.max_recipients) {
        err->status = 422;
        err->code = "too_many_recipients";
        vstr_cpy(err->field, "recipients");
        vstr_sprintf(err->message,
                     "more than %zu recipients (api_max_recipients)",
                     b->ctx->limits.max_recipients);
        goto out;
    }
    if (data != NULL && !json_is_object(data)) {
        vstr_cpy(err->field, "data");
        vstr_cpy(err->message, "data must be an object");
        goto out;
    }
    b->count = json_array_size(b->rcpts);
    for (size_t i = 0; i < b->count; i++) {
        json_t *entry = json_array_get(b->rcpts, i);
        json_t *to = json_object_get(entry, "to");
        json_t *rdata = json_object_get(entry, "data");
        const char *key;
        json_t *value;

        vstr_sprintf(field, "recipients[%zu]", i);
        if (!json_is_object(entry)) {
            vstr_cpy(err->field, vstr_str(field));
            vstr_cpy(err->message, "each recipient is an object with \"to\" "
                                   "and \"data\"");
            goto out;
        }
        json_object_foreach(entry, key, value)
        {
            if (strcmp(key, "to") != 0 && strcmp(key, "data") != 0) {
                vstr_sprintf(err->field, "%s.%.64s", vstr_str(field), key);
                vstr_cpy(err->message, "a recipient has only \"to\" and "
                                       "\"data\"");
                goto out;
            }
        }
        vstr_cat(field, ".to");
        if (to == NULL) {
            err->code = "missing_field";
            vstr_cpy(err->field, vstr_str(field));
            vstr_sprintf(err->message, "%s is required", vstr_str(field));
            goto out;
        }
        if (!json_is_string(to)) {
            vstr_cpy(err->field, vstr_str(field));
            vstr_sprintf(err->message, "%s must be a string", vstr_str(field));
            goto out;
        }
        if (api_request_check_mailbox(vstr_str(field), json_string_value(to),
                                      json_string_length(to), addr, err) < 0)
            goto out;
        if (rdata != NULL && (!json_is_object(rdata) || !templated)) {
            err->status = 400;
            err->code = "invalid_field";
            vstr_sprintf(err->field, "recipients[%zu].data", i);
            vstr_cpy(err->message, templated ? "data must be an object"
                                             : "data needs a template");
            goto out;
        }
        json_array_append_new(b->results,
                              json_pack("{s:s}", "to", vstr_str(addr)));
    }
    ret = 0;
out:
    vstr_free(field);
    vstr_free(addr);
    return ret;
}

/* api_batch - POST /v1/messages with "recipients" (top: the parsed
   body, borrowed): check it all, then send in slices */
static void api_batch(API_CTX *ctx, struct evhttp_request *req,
                      const API_KEY *key, const char *idem, const char *data,
                      size_t len, json_t *top)
{
    API_BATCH *b = mycalloc(1, sizeof(*b));
    API_ERROR err;

    api_error_init(&err);
    b->ctx = ctx;
    b->req = req;
    b->key = *key;
    b->rcpts = json_incref(json_object_get(top, "recipients"));
    b->data = json_incref(json_object_get(top, "data"));
    b->results = json_array();
    b->fail_message = vstr_alloc(100);
    if (api_traceparent(req) != NULL) {
        TRACE_CTX trace;
        char text[TRACE_TEXT_LEN + 1];

        /* Each message of the batch, rendered here or later by the
           render service, is a child of the request's span. */
        if (trace_parse(api_traceparent(req), &trace)) {
            trace_format(&trace, text, sizeof(text));
            b->traceparent = mystrdup(text);
        }
    }
    if ((b->base = json_copy(top)) == NULL)
        msg_fatal("out of memory");
    json_object_del(b->base, "recipients");
    json_object_del(b->base, "data");
    ctx->pending++; /* api_batch_free counts it out */
    if (json_is_string(json_object_get(top, "template"))) {
        bool missing;
        VSTR *why = vstr_alloc(100);

        /* Missing: recipient 0's render says so. */
        b->tmpl = api_template_load(
            ctx, key->tenant,
            json_string_value(json_object_get(top, "template")), &missing, why);
        if (b->tmpl == NULL && !missing) {
            msg_warn("api: %s", vstr_str(why));
            err.status = 503;
            err.code = "unavailable";
            vstr_cpy(err.message, "the template cannot be read");
        }
        vstr_free(why);
    }
    if (err.status != 0 || api_batch_check(b, top, &err) < 0 ||
        (b->first = api_batch_prepare(b, 0, &err)) == NULL) {
        msg_info("api: key=%s tenant=%s: %d %s: %s", key->id, key->tenant,
                 err.status, err.code, vstr_str(err.message));
        api_fail(req, &err);
        api_batch_free(b);
    } else if (api_over_limit(ctx, req, key, (long long) b->count, &b->day)) {
        api_batch_free(b);
    } else {
        if (idem != NULL) {
            b->idem = mystrdup(idem);
            b->body = mymemdup(data, len);
            b->body_len = len;
            b->idem_entry = api_inflight_enter(ctx, key->tenant, idem);
        }
        /* Counted now; what is not queued is given back at the end. */
        if (b->count >= ctx->spool_min && api_render_configured(ctx))
            api_batch_spooled(b);
        else
            api_batch_pump(b);
    }
    api_error_free(&err);
}

/* api_messages - POST /v1/messages */
static void api_messages(API_CTX *ctx, struct evhttp_request *req)
{
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    const char *idem = evhttp_find_header(evhttp_request_get_input_headers(req),
                                          "Idempotency-Key");
    API_MESSAGE *msg = NULL;
    API_ERROR err;
    API_KEY key;
    const char *data;
    char *rendered = NULL;
    bool render_failed = false;
    json_t *top = NULL;
    json_error_t jerr;

    if (!api_authorize(ctx, req, API_SCOPE_SEND, &key))
        return;
    api_error_init(&err);
    data = api_body(body, len);
    if (idem != NULL && !api_idem_key_ok(idem)) {
        err.status = 400;
        err.code = "invalid_field";
        vstr_cpy(err.field, "Idempotency-Key");
        vstr_sprintf(err.message,
                     "Idempotency-Key must be 1 to %d printable ASCII "
                     "characters without spaces",
                     API_IDEM_KEY_MAX);
        api_fail(req, &err);
    } else if (idem != NULL &&
               api_idem_replay(ctx, req, &key, idem, data, len)) {
        /* answered from the record */
    } else if (idem != NULL && api_inflight_busy(ctx, req, &key, idem)) {
        /* answered 409: the first request is still with cleanup */
    } else if ((top = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr)) !=
                   NULL &&
               json_is_object(top) &&
               json_object_get(top, "recipients") != NULL) {
        api_batch(ctx, req, &key, idem, data, len, top);
    } else if ((rendered = api_render(ctx, &key, data, len, NULL,
                                      &render_failed, &err)) == NULL &&
               render_failed) {
        msg_info("api: key=%s tenant=%s: %d %s: %s", key.id, key.tenant,
                 err.status, err.code, vstr_str(err.message));
        api_fail(req, &err);
    } else if ((msg = api_request_parse(rendered ? rendered : data,
                                        rendered ? strlen(rendered) : len,
                                        &ctx->limits, &err)) == NULL ||
               api_pool_check(ctx, &key, msg, &err) < 0) {
        msg_info("api: key=%s tenant=%s: %d %s: %s", key.id, key.tenant,
                 err.status, err.code, vstr_str(err.message));
        api_fail(req, &err);
        api_message_free(msg);
    } else {
        api_batch_traceparent(msg, api_traceparent(req));
        api_submit(ctx, req, &key, idem, data, len, msg);
    }
    json_decref(top);
    free(rendered);
    api_error_free(&err);
}

/* api_sup_entry - an entry as JSON */
static json_t *api_sup_entry(const SUPPRESS_ENTRY *entry)
{
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:o}", "address", entry->address, "tenant",
        entry->tenant, "reason", entry->reason, "source", entry->source,
        "created", (json_int_t) entry->created, "expires",
        entry->expires ? json_integer(entry->expires) : json_null());
}

/* api_sup_collect - suppress_list's callback: append to a JSON array */
static void api_sup_collect(const SUPPRESS_ENTRY *entry, void *arg)
{
    json_t *one = api_sup_entry(entry);

    if (one != NULL)
        json_array_append_new((json_t *) arg, one);
}

/* api_sup_expires - PUT's "expires": absent or null (never), seconds or
   a duration ("7d"), more than 0; -1 when bad */
static long long api_sup_expires(const json_t *value, long long now)
{
    long long secs;
    bool ok = true;

    if (value == NULL || json_is_null(value))
        return 0;
    if (json_is_integer(value))
        secs = (long long) json_integer_value(value);
    else if (json_is_string(value))
        secs = mail_conf_parse_time(json_string_value(value), &ok);
    else
        return -1;
    if (!ok || secs <= 0 || secs > 100LL * 365 * 86400)
        return -1;
    return now + secs;
}

/* api_suppressions - GET /v1/suppressions, GET PUT DELETE
   /v1/suppressions/ADDRESS (address: NULL for the list) */
static void api_suppressions(API_CTX *ctx, struct evhttp_request *req,
                             const char *address)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const char *query =
        evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params;
    const char *asked;
    const char *tenant;
    long long now = (long long) time(NULL);
    char *decoded = NULL;
    VSTR *why = vstr_alloc(100);
    VSTR *key_text = vstr_alloc(64);
    json_t *obj = NULL;
    char *text = NULL;
    SUPPRESS_ENTRY entry;
    API_KEY key;
    int rc;

    memset(&params, 0, sizeof(params)); /* parse_query_str inits it */
    if (address == NULL
            ? method != EVHTTP_REQ_GET
            : method != EVHTTP_REQ_GET && method != EVHTTP_REQ_PUT &&
                  method != EVHTTP_REQ_DELETE) {
        api_fail_with(req, 405, "method_not_allowed",
                      address ? "/v1/suppressions/ADDRESS takes GET, PUT and "
                                "DELETE"
                              : "/v1/suppressions takes GET");
        goto out;
    }
    if (!api_authorize(ctx, req,
                       method == EVHTTP_REQ_GET
                           ? API_SCOPE_READ | API_SCOPE_ADMIN
                           : API_SCOPE_SEND | API_SCOPE_ADMIN,
                       &key))
        goto out;
    if (query != NULL && evhttp_parse_query_str(query, &params) < 0) {
        api_fail_with(req, 400, "invalid_field", "a bad query string");
        goto out;
    }
    asked = evhttp_find_header(&params, "tenant");
    if (asked != NULL && !(key.scopes & API_SCOPE_ADMIN)) {
        api_fail_with(req, 403, "forbidden",
                      "only an admin key may name another tenant's list");
        goto out;
    }
    if (asked != NULL && !suppress_tenant_ok(asked)) {
        api_fail_with(req, 400, "invalid_field", "a bad tenant name");
        goto out;
    }
    /* An admin key without ?tenant= works on the global list. */
    tenant = key.scopes & API_SCOPE_ADMIN ? (asked ? asked : "") : key.tenant;
    if (ctx->sup == NULL) {
        api_fail_with(req, 503, "unavailable",
                      "the suppression list cannot be opened");
        goto out;
    }
    if (address != NULL) {
        decoded = evhttp_uridecode(address, 0, NULL);
        if (decoded == NULL || suppress_key(key_text, decoded, why) < 0) {
            api_fail_with(req, 400, "invalid_address",
                          decoded ? vstr_str(why) : "a bad address");
            goto out;
        }
    }
    if (address == NULL) {
        const char *limit_text = evhttp_find_header(&params, "limit");
        const char *after = evhttp_find_header(&params, "after");
        long limit = 100;
        json_t *list = json_array();
        json_t *last;

        if (limit_text != NULL) {
            char *end;

            errno = 0;
            limit = strtol(limit_text, &end, 10);
            if (*limit_text == 0 || *end || errno || limit < 1 ||
                limit > 1000) {
                json_decref(list);
                api_fail_with(req, 400, "invalid_field",
                              "limit is a number from 1 to 1000");
                goto out;
            }
        }
        if (suppress_list(ctx->sup, tenant, after, now, (int) limit,
                          api_sup_collect, list, why) < 0) {
            json_decref(list);
            msg_warn("api: %s", vstr_str(why));
            api_fail_with(req, 503, "unavailable",
                          "the suppression list cannot be read");
            goto out;
        }
        last = json_array_size(list) == (size_t) limit
                   ? json_object_get(json_array_get(list, (size_t) limit - 1),
                                     "address")
                   : NULL;
        obj = json_pack("{s:s, s:o, s:O}", "tenant", tenant, "suppressions",
                        list, "next", last ? last : json_null());
    } else if (method == EVHTTP_REQ_GET) {
        rc = *tenant ? suppress_get(ctx->sup, tenant, decoded, now, &entry, why)
                     : 0;
        if (rc == 0)
            rc = suppress_get(ctx->sup, "", decoded, now, &entry, why);
        if (rc < 0) {
            msg_warn("api: %s", vstr_str(why));
            api_fail_with(req, 503, "unavailable",
                          "the suppression list cannot be read");
            goto out;
        }
        if (rc == 0) {
            api_fail_with(req, 404, "not_found",
                          "the address is not suppressed");
            goto out;
        }
        obj = api_sup_entry(&entry);
    } else if (method == EVHTTP_REQ_DELETE) {
        rc = suppress_remove(ctx->sup, tenant, decoded, now, why);
        if (rc < 0) {
            msg_warn("api: %s", vstr_str(why));
            api_fail_with(req, 503, "unavailable",
                          "the suppression list cannot be written");
            goto out;
        }
        if (rc == 0) {
            api_fail_with(req, 404, "not_found",
                          "the address is not on this list");
            goto out;
        }
        msg_info("api: key=%s tenant=%s: suppression of %s removed%s%s", key.id,
                 key.tenant, vstr_str(key_text),
                 *tenant ? " for tenant " : " from the global list", tenant);
        obj = json_pack("{s:b}", "deleted", 1);
    } else {
        struct evbuffer *body = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(body);
        json_t *in = len ? json_loadb(api_body(body, len), len,
                                      JSON_REJECT_DUPLICATES, NULL)
                         : json_object();
        const json_t *reason = json_object_get(in, "reason");
        SUPPRESS_ENTRY add = {.tenant = tenant,
                              .address = decoded,
                              .source = SUPPRESS_SRC_API,
                              .created = now};

        if (!json_is_object(in)) {
            json_decref(in);
            api_fail_with(req, 400, "invalid_json",
                          "the body is not a JSON object");
            goto out;
        }
        add.reason = reason == NULL ? "added through the API"
                                    : json_string_value(reason);
        add.expires = api_sup_expires(json_object_get(in, "expires"), now);
        if (add.reason == NULL || !suppress_reason_ok(add.reason)) {
            json_decref(in);
            api_fail_with(req, 400, "invalid_field",
                          "reason is a string of printable characters, at "
                          "most 500 bytes");
            goto out;
        }
        if (add.expires < 0) {
            json_decref(in);
            api_fail_with(req, 400, "invalid_field",
                          "expires is null, a number of seconds or a "
                          "duration like \"7d\", more than 0");
            goto out;
        }
        if (suppress_add(ctx->sup, &add, now, why) < 0) {
            json_decref(in);
            msg_warn("api: %s", vstr_str(why));
            api_fail_with(req, 503, "unavailable",
                          "the suppression list cannot be written");
            goto out;
        }
        add.address = vstr_str(key_text);
        msg_info("api: key=%s tenant=%s: %s suppressed%s%s", key.id, key.tenant,
                 add.address, *tenant ? " for tenant " : " on the global list",
                 tenant);
        obj = api_sup_entry(&add);
        json_decref(in);
    }
    text = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text == NULL)
        msg_fatal("out of memory");
    api_reply(req, 200, "OK", text);
out:
    free(text);
    json_decref(obj);
    free(decoded);
    evhttp_clear_headers(&params);
    vstr_free(why);
    vstr_free(key_text);
}

/* api_request - route one complete request */
static void api_request(struct evhttp_request *req, void *arg)
{
    API_CTX *ctx = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type method = evhttp_request_get_command(req);

    if (path == NULL)
        path = "";
    if (ctx->track != NULL && api_track_request(ctx->track, req, path))
        return;
    if (strncmp(path, "/v1/messages/", 13) == 0) {
        if (method == EVHTTP_REQ_GET)
            api_status(ctx, req, path + 13);
        else
            api_fail_with(req, 405, "method_not_allowed",
                          "/v1/messages/ID takes GET");
    } else if (strcmp(path, "/v1/messages") == 0) {
        if (method == EVHTTP_REQ_POST)
            api_messages(ctx, req);
        else
            api_fail_with(req, 405, "method_not_allowed",
                          "/v1/messages takes POST");
    } else if (strncmp(path, "/v1/templates/", 14) == 0) {
        api_templates(ctx, req, path + 14);
    } else if (strcmp(path, "/v1/suppressions") == 0) {
        api_suppressions(ctx, req, NULL);
    } else if (strncmp(path, "/v1/suppressions/", 17) == 0) {
        api_suppressions(ctx, req, path + 17);
    } else if (strcmp(path, "/v1/health") == 0) {
        if (method == EVHTTP_REQ_GET)
            api_reply(req, 200, "OK", "{\"status\":\"ok\"}");
        else
            api_fail_with(req, 405, "method_not_allowed",
                          "/v1/health takes GET");
    } else {
        api_fail_with(req, 404, "not_found", "no such endpoint");
    }
}

/* api_idem_name_ok - is name an idempotency record's (api_idem.h)? */
static bool api_idem_name_ok(const char *name)
{
    return strlen(name) == API_IDEM_NAME_LEN &&
           strspn(name, "0123456789abcdef") == API_IDEM_NAME_LEN;
}

/* api_rendered_name_ok - is name a kept batch's (ID or ID.log)? */
static bool api_rendered_name_ok(const char *name)
{
    size_t len = strlen(name);
    char qid[QID_SIZE + 1];

    if (len == QID_LEN)
        return qid_valid(name);
    if (len != QID_LEN + 4 || strcmp(name + QID_LEN, ".log") != 0)
        return false;
    memcpy(qid, name, QID_LEN);
    qid[QID_LEN] = 0;
    return qid_valid(qid);
}

/* api_sweep_slice - one bounded turn of a sweep: read at most
   API_SWEEP_SLICE entries, remove the expired records among them, and
   come back after a pause unless the directory is done */
static void api_sweep_slice(evutil_socket_t fd, short what, void *arg)
{
    API_SWEEP *sw = arg;
    VSTR *path = vstr_alloc(100);
    struct timeval pause = {0, API_SWEEP_PAUSE_US};
    struct dirent *de = NULL;
    struct stat st;
    size_t scanned = 0;
    size_t removed = 0;

    if (sw->dp == NULL)
        msg_panic("%s: no sweep of %s in progress", __func__, sw->dir);
    while (scanned < API_SWEEP_SLICE && (de = readdir(sw->dp)) != NULL) {
        scanned++;
        if (!sw->name_ok(de->d_name))
            continue;
        vstr_sprintf(path, "%s/%s", sw->dir, de->d_name);
        if (stat(vstr_str(path), &st) == 0 && sw->now - st.st_mtime > sw->ttl &&
            unlink(vstr_str(path)) == 0)
            removed++;
    }
    vstr_free(path);
    sw->scanned += scanned;
    sw->removed += removed;
    if (msg_verbose_get())
        msg_info("api: %s sweep: slice of %zu entries scanned, %zu removed",
                 sw->what, scanned, removed);
    if (de != NULL) {
        if (event_add(sw->ev, &pause) < 0)
            msg_fatal("cannot add the %s sweep timer", sw->what);
        return;
    }
    (void) closedir(sw->dp);
    sw->dp = NULL;
    if (sw->removed > 0 || msg_verbose_get())
        msg_info("api: %s sweep done: %zu entries scanned, %zu expired removed",
                 sw->what, sw->scanned, sw->removed);
}

/* api_sweep_init - set up a sweep of dir (nothing runs yet) */
static void api_sweep_init(API_SWEEP *sw, struct event_base *base,
                           const char *what, const char *dir,
                           bool (*name_ok)(const char *), long long ttl)
{
    sw->what = what;
    sw->dir = mystrdup(dir);
    sw->name_ok = name_ok;
    sw->ttl = ttl;
    if ((sw->ev = evtimer_new(base, api_sweep_slice, sw)) == NULL)
        msg_fatal("cannot create the %s sweep timer", what);
}

/* api_sweep_start - begin a sweep, unless one is in progress; the first
   slice runs from the loop */
static void api_sweep_start(API_SWEEP *sw)
{
    struct timeval now = {0, 0};

    if (sw->dp != NULL)
        return;
    if ((sw->dp = opendir(sw->dir)) == NULL) {
        if (errno != ENOENT)
            msg_warn("api: opendir %s: %m", sw->dir);
        return;
    }
    sw->now = time(NULL);
    sw->scanned = 0;
    sw->removed = 0;
    if (event_add(sw->ev, &now) < 0)
        msg_fatal("cannot add the %s sweep timer", sw->what);
}

/* api_sweep_free - stop a sweep, free it */
static void api_sweep_free(API_SWEEP *sw)
{
    if (sw->ev != NULL)
        event_free(sw->ev);
    sw->ev = NULL;
    if (sw->dp != NULL)
        (void) closedir(sw->dp);
    sw->dp = NULL;
    sw->dir = myfree(sw->dir);
}

/* api_tick - start removing expired Idempotency-Key and owner records */
static void api_tick(MAIL_SERVER *server, void *arg)
{
    API_CTX *ctx = arg;

    api_sweep_start(&ctx->idem_sweep);
    api_sweep_start(&ctx->owner_sweep);
    api_sweep_start(&ctx->rendered_sweep);
}

/* api_pool_conf - smtp_source_pools (set or not) and
   smtp_source_pool_allow_maps; a bad table is fatal */
static void api_pool_conf(API_CTX *ctx, const MAIL_CONF *conf)
{
    const char *allow = mail_conf_str(conf, "smtp_source_pool_allow_maps");
    VSTR *why = vstr_alloc(100);

    ctx->pools = *mail_conf_str(conf, "smtp_source_pools") != 0;
    if (*allow != 0 &&
        (ctx->pool_allow = maps_create("smtp_source_pool_allow_maps", allow,
                                       MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
}

/* api_tls_bev - a TLS bufferevent for each new connection (evhttp) */
static struct bufferevent *api_tls_bev(struct event_base *base, void *arg)
{
    API_CTX *ctx = arg;
    SSL *ssl = tls_server_ssl(ctx->tls);
    struct bufferevent *bev;

    if (ssl == NULL) {
        msg_warn("api: cannot start TLS for a connection: SSL_new failed");
        return NULL;
    }
    if ((bev = bufferevent_openssl_socket_new(base, -1, ssl,
                                              BUFFEREVENT_SSL_ACCEPTING,
                                              BEV_OPT_CLOSE_ON_FREE)) == NULL)
        SSL_free(ssl);
    return bev;
}

/* api_tls_setup - api_tls = yes: every connection speaks TLS with the
   certificates of smtpd_tls_chain_files (or smtpd_tls_cert_file and
   smtpd_tls_key_file) and smtpd_tls_protocols, as smtpd's (a master.cf
   -o gives the api others); a certificate that cannot be loaded is
   fatal: plain HTTP is never served in its place */
static void api_tls_setup(API_CTX *ctx, const MAIL_CONF *conf)
{
    VSTR *why;

    if (!mail_conf_bool(conf, "api_tls"))
        return;
    why = vstr_alloc(100);
    if ((ctx->tls = tls_server_create(conf, false, why)) == NULL)
        msg_fatal("api_tls = yes: %s", vstr_str(why));
    vstr_free(why);
    evhttp_set_bevcb(ctx->http, api_tls_bev, ctx);
    msg_info("HTTP API: TLS on");
}

/* api_batch_idem_mend_all - a crash between a batch's spool and its
   idempotency record: write the records of the spooled batches that
   lack one, before the first request (api_batch.h) */
static void api_batch_idem_mend_all(API_CTX *ctx)
{
    VSTR *dir = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    struct dirent *de;
    DIR *dp;

    api_batch_dir(ctx->idem_dir, dir);
    if ((dp = opendir(vstr_str(dir))) != NULL) {
        while ((de = readdir(dp)) != NULL) {
            json_error_t jerr;
            json_t *batch;

            if (!qid_valid(de->d_name))
                continue;
            vstr_sprintf(path, "%s/%s", vstr_str(dir), de->d_name);
            /* Gone meanwhile (rendered), or not a batch: render says. */
            if ((batch = json_load_file(vstr_str(path), 0, &jerr)) == NULL)
                continue;
            vstr_reset(why);
            switch (
                api_batch_idem_mend(ctx->idem_dir, ctx->idem_ttl, batch, why)) {
            case 1:
                msg_info("api: batch %s: its Idempotency-Key record written "
                         "again",
                         de->d_name);
                break;
            case -1:
                msg_warn("api: batch %s: Idempotency-Key record: %s",
                         de->d_name, vstr_str(why));
                break;
            }
            json_decref(batch);
        }
        (void) closedir(dp);
    }
    vstr_free(dir);
    vstr_free(path);
    vstr_free(why);
}

/* api_pre_loop - read the configuration, start serving */
static void api_pre_loop(MAIL_SERVER *server, void *arg)
{
    API_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    const char *listen_addr = mail_conf_str(conf, "api_listen");
    VSTR *path = vstr_alloc(100);
    int fd;

    ctx->server = server;
    mail_queue_service(path, mail_conf_str(conf, "queue_directory"),
                       MAIL_QUEUE_PRIVATE, CLEANUP_SERVICE);
    ctx->cleanup_path = vstr_export(path);
    ctx->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    ctx->keys_path = mystrdup(mail_conf_str(conf, "api_keys_file"));
    ctx->limits.max_recipients =
        (size_t) mail_conf_int(conf, "api_max_recipients");
    ctx->limits.max_message_size =
        (size_t) mail_conf_size(conf, "message_size_limit");
    ctx->cleanup_timeout = (int) mail_conf_time(conf, "api_cleanup_timeout");
    ctx->milters = api_milter_open(conf);
    ctx->idem_dir = mystrdup(mail_conf_str(conf, "api_idempotency_directory"));
    ctx->idem_ttl = mail_conf_time(conf, "api_idempotency_ttl");
    path = vstr_alloc(100);
    vstr_sprintf(path, "%s/%s", ctx->idem_dir, API_USAGE_DIR);
    ctx->limiter = api_limits_create(
        vstr_str(path), mail_conf_int(conf, "api_tenant_daily_limit"),
        mail_conf_int(conf, "api_tenant_rate_limit"));
    vstr_free(path);
    ctx->spool_min = (size_t) mail_conf_int(conf, "api_spool_min_recipients");
    path = vstr_alloc(100);
    mail_queue_service(path, mail_conf_str(conf, "queue_directory"),
                       MAIL_QUEUE_PRIVATE, API_RENDER_SERVICE);
    ctx->render_path = vstr_export(path);
    ctx->inflight = htable_alloc(16);
    ctx->template_dir = mystrdup(mail_conf_str(conf, "api_template_directory"));
    ctx->track = api_track_create(conf);
    path = vstr_alloc(100);
    ctx->sup = suppress_open(mail_conf_str(conf, "suppression_database"),
                             SUPPRESS_LAZY, path);
    if (ctx->sup == NULL)
        msg_warn("%s (the /v1/suppressions endpoints answer 503)",
                 vstr_str(path));
    vstr_free(path);
    api_pool_conf(ctx, conf);
    /* master makes $queue_directory/api; another place may need this. */
    if (mkdir(ctx->idem_dir, 0700) < 0 && errno != EEXIST)
        msg_warn("mkdir %s: %m (requests with an Idempotency-Key will get "
                 "503)",
                 ctx->idem_dir);
    api_batch_idem_mend_all(ctx);
    /* The first sweeps start now: a restart catches up at once. */
    api_sweep_init(&ctx->idem_sweep, mail_server_base(server), "idempotency",
                   ctx->idem_dir, api_idem_name_ok, ctx->idem_ttl);
    path = vstr_alloc(100);
    api_owner_path(ctx, NULL, path);
    api_sweep_init(&ctx->owner_sweep, mail_server_base(server), "owner",
                   vstr_str(path), qid_valid, API_OWNER_TTL);
    api_batch_rendered_dir(ctx->idem_dir, path);
    api_sweep_init(&ctx->rendered_sweep, mail_server_base(server),
                   "rendered batch", vstr_str(path), api_rendered_name_ok,
                   API_BATCH_RENDERED_TTL);
    vstr_free(path);
    api_tick(server, ctx);
    if (*listen_addr == 0) {
        msg_info("api_listen is empty: the HTTP API is off");
        return;
    }
    fd = own_listen("api_listen", listen_addr, API_LISTEN_BACKLOG);
    if ((ctx->http = evhttp_new(mail_server_base(server))) == NULL)
        msg_fatal("evhttp_new failed");
    evhttp_set_max_body_size(ctx->http,
                             mail_conf_size(conf, "api_max_request_size"));
    evhttp_set_max_headers_size(ctx->http, API_HEADERS_MAX);
    evhttp_set_timeout(ctx->http, (int) mail_conf_time(conf, "api_timeout"));
    evhttp_set_allowed_methods(ctx->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
                                              EVHTTP_REQ_PUT |
                                              EVHTTP_REQ_DELETE);
    evhttp_set_default_content_type(ctx->http, "application/json");
    evhttp_set_gencb(ctx->http, api_request, ctx);
    api_tls_setup(ctx, conf);
    if ((ctx->bound = evhttp_accept_socket_with_handle(ctx->http, fd)) == NULL)
        msg_fatal("api_listen = %s: evhttp cannot take the socket",
                  listen_addr);
    msg_info("HTTP API on %s", listen_addr);
}

/* api_retire - stop accepting, and leave once every request that
   cleanup has in hand is answered */
static void api_retire(MAIL_SERVER *server, void *arg)
{
    API_CTX *ctx = arg;

    if (ctx->bound != NULL) {
        evhttp_del_accept_socket(ctx->http, ctx->bound);
        ctx->bound = NULL;
    }
    ctx->retiring = true;
    if (ctx->pending == 0)
        mail_server_exit(server, 0);
}

/* api_post_loop - free what lives on the event base */
static void api_post_loop(MAIL_SERVER *server, void *arg)
{
    API_CTX *ctx = arg;

    api_track_stop(ctx->track);
    if (ctx->http != NULL)
        evhttp_free(ctx->http);
    ctx->http = NULL;
    api_sweep_free(&ctx->owner_sweep);
    api_sweep_free(&ctx->idem_sweep);
    api_sweep_free(&ctx->rendered_sweep);
    ctx->sup = suppress_close(ctx->sup);
    ctx->tls = tls_server_free(ctx->tls);
    ctx->milters = api_milter_close(ctx->milters);
}

/* main - the HTTP API daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = api_pre_loop,
        .on_trigger = NULL,
        .on_tick = api_tick,
        .tick_seconds = API_TICK,
        .on_retire = api_retire,
        .post_loop = api_post_loop,
    };
    API_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "api", &ops, &ctx);
    myfree(ctx.cleanup_path);
    myfree(ctx.queue_dir);
    myfree(ctx.keys_path);
    myfree(ctx.idem_dir);
    myfree(ctx.template_dir);
    ctx.track = api_track_free(ctx.track);
    if (ctx.pool_allow != NULL)
        maps_free(ctx.pool_allow);
    myfree(ctx.render_path);
    api_limits_free(ctx.limiter);
    if (ctx.inflight != NULL)
        htable_free(ctx.inflight, NULL);
    return status;
}
