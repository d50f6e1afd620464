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
 *
 * An Idempotency-Key header makes a retry of the same request within
 * api_idempotency_ttl get the first 202 again (Idempotent-Replayed: true)
 * instead of a second message, across restarts (global/api_idem.h); the
 * same key with another body gets 422 idempotency_key_reused. A retry
 * while the first request is still with cleanup gets 409
 * idempotency_key_in_progress (Retry-After: 1), never a second message.
 *
 * api_tenant_daily_limit caps the messages a tenant queues per UTC day:
 * beyond it, 429 rate_limited with Retry-After (the seconds to midnight).
 * The count lives in this process's memory: a restart starts it again.
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
 *   401 unauthorized    no or unknown key; 403 forbidden   key lacks "send"
 *   404 not_found, 405 method_not_allowed
 *   409 idempotency_key_in_progress   the key's first request is still
 *                       with cleanup
 *   413 message_too_large (message_size_limit); bodies over
 *       api_max_request_size are cut off by evhttp itself with a 413
 *   422 invalid_address, too_many_recipients, rejected (cleanup said 5xx)
 *   503 unavailable     cleanup unreachable, timed out or said 4xx (e.g.
 *                       the queue is short of disk), with Retry-After
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
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "api_handoff.h"
#include "api_idem.h"
#include "api_keys.h"
#include "api_mustache.h"
#include "api_request.h"
#include "cleanup_proto.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "own_listen.h"
#include "qfile.h"
#include "qid.h"
#include "safe_file.h"
#include "htable.h"
#include "trace.h"
#include "vstr.h"

#define API_LISTEN_BACKLOG 128
#define API_HEADERS_MAX (64 * 1024) /* bytes of a request's HTTP headers */
#define API_RETRY_AFTER "30" /* seconds, with every 503 */
#define API_TICK 300 /* seconds between removals of expired records */
#define API_SWEEP_SLICE 500 /* directory entries one turn of a sweep reads */
#define API_SWEEP_PAUSE_US 10000 /* between turns: the loop serves others */
#define API_IDEM_NAME_LEN 64 /* an idempotency record: SHA-256 in hex */
#define API_OWNERS "owners" /* under api_idempotency_directory: QID -> tenant */
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
    long long daily_limit; /* api_tenant_daily_limit (0: none) */
    HTABLE *usage; /* tenant -> API_USAGE, messages sent today */
    HTABLE *inflight; /* "tenant\nkey": Idempotency-Keys with cleanup */
    size_t pending; /* requests waiting for cleanup */
    bool retiring; /* exit when pending falls to 0 */
    API_SWEEP owner_sweep; /* owners/ */
    API_SWEEP idem_sweep; /* api_idempotency_directory */
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

typedef struct API_USAGE {
    long long day; /* days since the epoch, UTC */
    long long count; /* messages queued that day */
} API_USAGE;

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

/* api_accepted - the 202 body: the queue ID and one ID per recipient */
static char *api_accepted(const char *queue_id, const API_MESSAGE *msg)
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
    json_t *empty = json_object();
    int rc;
    VSTR *out = vstr_alloc(1024);
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
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(parts); i++) {
        json_t *part = json_object_get(tmpl_obj, parts[i]);
        API_MUSTACHE *tmpl;

        if (!json_is_string(part))
            continue;
        if ((tmpl = api_mustache_compile(json_string_value(part),
                                         json_string_length(part),
                                         err->message)) == NULL) {
            err->status = 500;
            err->code = "invalid_template";
            goto out;
        }
        vstr_reset(out);
        if ((rc = api_mustache_render(
                 tmpl, tdata ? tdata : empty, strcmp(parts[i], "html") == 0,
                 ctx->limits.max_message_size ? ctx->limits.max_message_size
                                              : SIZE_MAX / 2,
                 0, out, err->message)) < 0) {
            api_mustache_free(tmpl);
            err->status = rc == -1 ? 413 : 422;
            err->code = rc == -1 ? "message_too_large" : "template_too_complex";
            vstr_cpy(err->field, parts[i]);
            goto out;
        }
        api_mustache_free(tmpl);
        json_object_set_new(req, parts[i],
                            json_stringn(vstr_str(out), vstr_len(out)));
    }
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
    json_decref(empty);
    vstr_free(out);
    return result;
}

/* api_owner_path - DIR/owners[/QID] */
static void api_owner_path(const API_CTX *ctx, const char *qid, VSTR *path)
{
    vstr_sprintf(path, "%s/%s", ctx->idem_dir, API_OWNERS);
    if (qid != NULL)
        vstr_sprintf_append(path, "/%s", qid);
}

/* api_owner_record - note which tenant queued qid, for status lookups.
   Not fsynced: a record lost in a crash makes a lookup say 404, it
   loses no mail. */
static void api_owner_record(const API_CTX *ctx, const char *qid,
                             const char *tenant)
{
    VSTR *path = vstr_alloc(100);
    int fd;

    api_owner_path(ctx, NULL, path);
    if (mkdir(vstr_str(path), 0700) < 0 && errno != EEXIST) {
        msg_warn("api: mkdir %s: %m", vstr_str(path));
    } else {
        api_owner_path(ctx, qid, path);
        if ((fd = open(vstr_str(path), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                       0600)) < 0 ||
            safe_file_write_all(fd, tenant, strlen(tenant)) < 0)
            msg_warn("api: write %s: %m", vstr_str(path));
        if (fd >= 0)
            (void) close(fd);
    }
    vstr_free(path);
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

/* api_status - GET /v1/messages/QID: where the message is, per recipient */
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
            if ((info = qfile_info_read(fd, why)) != NULL)
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

/* api_usage - the tenant's count for today (reset at a new UTC day) */
static API_USAGE *api_usage(API_CTX *ctx, const char *tenant, time_t now)
{
    API_USAGE *usage = htable_find(ctx->usage, tenant);

    if (usage == NULL) {
        usage = mycalloc(1, sizeof(*usage));
        htable_enter(ctx->usage, tenant, usage);
    }
    if (usage->day != (long long) (now / 86400)) {
        usage->day = (long long) (now / 86400);
        usage->count = 0;
    }
    return usage;
}

/* api_usage_free - release one API_USAGE (htable_free) */
static void api_usage_free(void *usage)
{
    myfree(usage);
}

/* api_over_limit - answer 429 when n more messages would pass the
   tenant's day; true then */
static bool api_over_limit(API_CTX *ctx, struct evhttp_request *req,
                           const API_KEY *key, long long n)
{
    time_t now = time(NULL);
    API_USAGE *usage;
    char retry[32];

    if (ctx->daily_limit == 0)
        return false;
    usage = api_usage(ctx, key->tenant, now);
    if (usage->count + n <= ctx->daily_limit)
        return false;
    snprintf(retry, sizeof(retry), "%lld", (long long) (86400 - now % 86400));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                      retry);
    msg_info("api: key=%s tenant=%s: daily limit of %lld messages reached",
             key->id, key->tenant, ctx->daily_limit);
    api_fail_with(req, 429, "rate_limited",
                  "this tenant has sent its api_tenant_daily_limit of "
                  "messages today (UTC)");
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
        char *text = api_accepted(result->queue_id, msg);

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
        API_USAGE *usage = api_usage(ctx, key->tenant, time(NULL));

        /* Give back the message counted when it was handed over. */
        if (usage->day == p->day && usage->count > 0)
            usage->count--;
        vstr_cpy(err.message, result->why);
        if (result->code >= 500) {
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
    API_PENDING *p = mycalloc(1, sizeof(*p));
    VSTR *why = vstr_alloc(100);
    API_USAGE *usage = api_usage(ctx, key->tenant, time(NULL));

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
    /* Counted now, so that requests in flight cannot pass the limit
       together; given back when the message is not queued. */
    usage->count++;
    p->day = usage->day;
    ctx->pending++;
    if (api_handoff_start(mail_server_base(ctx->server), ctx->cleanup_path,
                          ctx->cleanup_timeout, msg, p->key.tenant,
                          api_submit_done, p, why) == NULL) {
        API_HANDOFF_RESULT result = {
            .code = -1, .queue_id = "", .why = vstr_str(why)};

        api_submit_done(&result, p);
    }
    vstr_free(why);
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

/* api_batch_prepare - recipient i's message, or NULL with err */
static API_MESSAGE *api_batch_prepare(API_BATCH *b, size_t i, API_ERROR *err)
{
    json_t *entry = json_array_get(b->rcpts, i);
    json_t *one = json_copy(b->base);
    json_t *rdata = json_object_get(entry, "data");
    API_MESSAGE *msg = NULL;
    char *text;
    char *rendered = NULL;
    bool failed = false;

    if (one == NULL)
        msg_fatal("out of memory");
    json_object_set(one, "to", json_object_get(entry, "to"));
    if (json_object_get(one, "template") != NULL) {
        json_t *merged = b->data != NULL ? json_copy(b->data) : json_object();

        if (rdata != NULL)
            json_object_update(merged, rdata);
        json_object_set_new(one, "data", merged);
    }
    if ((text = json_dumps(one, JSON_COMPACT)) == NULL)
        msg_fatal("out of memory");
    if ((rendered = api_render(b->ctx, &b->key, text, strlen(text), b->tmpl,
                               &failed, err)) != NULL ||
        !failed)
        msg = api_request_parse(rendered ? rendered : text,
                                strlen(rendered ? rendered : text),
                                &b->ctx->limits, err);
    /* The recipient's fields, as the client knows them. */
    if (msg == NULL && strcmp(vstr_str(err->field), "to") == 0)
        vstr_sprintf(err->field, "recipients[%zu].to", i);
    else if (msg == NULL && strncmp(vstr_str(err->field), "data", 4) == 0)
        vstr_sprintf(err->field, "recipients[%zu].data", i);
    free(rendered);
    free(text);
    json_decref(one);
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
    API_USAGE *usage = api_usage(ctx, b->key.tenant, time(NULL));
    const char *first = NULL;

    if (usage->day == b->day)
        usage->count -= (long long) (b->count - b->queued);
    if (usage->count < 0)
        usage->count = 0;
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
        api_owner_record(b->ctx, result->queue_id, b->key.tenant);
        b->queued++;
        vstr_free(id);
    } else if (result->code >= 500) {
        msg_info("api: key=%s tenant=%s: batch recipient %zu: %s", b->key.id,
                 b->key.tenant, item->index, result->why);
        api_batch_failed(b, item->index, 422, "rejected", result->why);
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
        item = mycalloc(1, sizeof(*item));
        item->batch = b;
        item->index = i;
        item->msg = msg;
        if (api_handoff_start(mail_server_base(b->ctx->server),
                              b->ctx->cleanup_path, b->ctx->cleanup_timeout,
                              msg, b->key.tenant, api_batch_done, item,
                              why) == NULL) {
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
    if ((b->base = json_copy(top)) == NULL)
        msg_fatal("out of memory");
    json_object_del(b->base, "recipients");
    json_object_del(b->base, "data");
    ctx->pending++; /* api_batch_free counts it out */
    if (json_is_string(json_object_get(top, "template"))) {
        bool missing;
        VSTR *why = vstr_alloc(100);

        /* When it cannot be read, recipient 0's render says why. */
        b->tmpl = api_template_load(
            ctx, key->tenant,
            json_string_value(json_object_get(top, "template")), &missing, why);
        vstr_free(why);
    }
    if (api_batch_check(b, top, &err) < 0 ||
        (b->first = api_batch_prepare(b, 0, &err)) == NULL) {
        msg_info("api: key=%s tenant=%s: %d %s: %s", key->id, key->tenant,
                 err.status, err.code, vstr_str(err.message));
        api_fail(req, &err);
        api_batch_free(b);
    } else if (api_over_limit(ctx, req, key, (long long) b->count)) {
        api_batch_free(b);
    } else {
        API_USAGE *usage = api_usage(ctx, key->tenant, time(NULL));

        if (idem != NULL) {
            b->idem = mystrdup(idem);
            b->body = mymemdup(data, len);
            b->body_len = len;
            b->idem_entry = api_inflight_enter(ctx, key->tenant, idem);
        }
        /* Counted now; what is not queued is given back at the end. */
        usage->count += (long long) b->count;
        b->day = usage->day;
        api_batch_pump(b);
    }
    api_error_free(&err);
}

/* api_traceparent - the request's W3C traceparent header (a valid one)
   as the first header line of msg, where cleanup takes it as the
   message's trace (cleanup/cleanup_trace.c: the API is trusted); an
   invalid one is ignored, as W3C says (a fresh trace is made) */
static void api_traceparent(struct evhttp_request *req, API_MESSAGE *msg)
{
    const char *value =
        evhttp_find_header(evhttp_request_get_input_headers(req), TRACE_HEADER);
    TRACE_CTX trace;
    char text[TRACE_TEXT_LEN + 1];
    VSTR *content;

    if (value == NULL || !trace_parse(value, &trace))
        return;
    trace_format(&trace, text, sizeof(text));
    content = vstr_alloc(vstr_len(msg->content) + sizeof(text) + 16);
    vstr_sprintf(content, "%s: %s\n", TRACE_HEADER, text);
    vstr_ncat(content, vstr_str(msg->content), vstr_len(msg->content));
    vstr_free(msg->content);
    msg->content = content;
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
    } else if (api_over_limit(ctx, req, &key, 1)) {
        /* answered 429 */
    } else if ((rendered = api_render(ctx, &key, data, len, NULL,
                                      &render_failed, &err)) == NULL &&
               render_failed) {
        msg_info("api: key=%s tenant=%s: %d %s: %s", key.id, key.tenant,
                 err.status, err.code, vstr_str(err.message));
        api_fail(req, &err);
    } else if ((msg = api_request_parse(rendered ? rendered : data,
                                        rendered ? strlen(rendered) : len,
                                        &ctx->limits, &err)) == NULL) {
        msg_info("api: key=%s tenant=%s: %d %s: %s", key.id, key.tenant,
                 err.status, err.code, vstr_str(err.message));
        api_fail(req, &err);
    } else {
        api_traceparent(req, msg);
        api_submit(ctx, req, &key, idem, data, len, msg);
    }
    json_decref(top);
    free(rendered);
    api_error_free(&err);
}

/* api_request - route one complete request */
static void api_request(struct evhttp_request *req, void *arg)
{
    API_CTX *ctx = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type method = evhttp_request_get_command(req);

    if (path == NULL)
        path = "";
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
    ctx->idem_dir = mystrdup(mail_conf_str(conf, "api_idempotency_directory"));
    ctx->idem_ttl = mail_conf_time(conf, "api_idempotency_ttl");
    ctx->daily_limit = mail_conf_int(conf, "api_tenant_daily_limit");
    ctx->usage = htable_alloc(16);
    ctx->inflight = htable_alloc(16);
    ctx->template_dir = mystrdup(mail_conf_str(conf, "api_template_directory"));
    /* master makes $queue_directory/api; another place may need this. */
    if (mkdir(ctx->idem_dir, 0700) < 0 && errno != EEXIST)
        msg_warn("mkdir %s: %m (requests with an Idempotency-Key will get "
                 "503)",
                 ctx->idem_dir);
    /* The first sweeps start now: a restart catches up at once. */
    api_sweep_init(&ctx->idem_sweep, mail_server_base(server), "idempotency",
                   ctx->idem_dir, api_idem_name_ok, ctx->idem_ttl);
    path = vstr_alloc(100);
    api_owner_path(ctx, NULL, path);
    api_sweep_init(&ctx->owner_sweep, mail_server_base(server), "owner",
                   vstr_str(path), qid_valid, API_OWNER_TTL);
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

    if (ctx->http != NULL)
        evhttp_free(ctx->http);
    ctx->http = NULL;
    api_sweep_free(&ctx->owner_sweep);
    api_sweep_free(&ctx->idem_sweep);
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
    if (ctx.usage != NULL)
        htable_free(ctx.usage, api_usage_free);
    if (ctx.inflight != NULL)
        htable_free(ctx.inflight, NULL);
    return status;
}
