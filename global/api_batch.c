/*
 * api_batch - the durable batch spool of the HTTP API and the rendering
 * of one batch recipient (api_batch.h)
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_batch.h"
#include "api_idem.h"
#include "api_mustache.h"
#include "msg.h"
#include "mymalloc.h"
#include "qid.h"
#include "safe_file.h"
#include "trace.h"
#include "vstr.h"

/* The parts a template renders. */
static const char *const api_batch_parts[] = {"subject", "text", "html"};

/* api_batch_dir - DIR of the spool: IDEM_DIR/batches */
void api_batch_dir(const char *idem_dir, VSTR *out)
{
    vstr_sprintf(out, "%s/%s", idem_dir, API_BATCH_DIR);
}

/* api_batch_owner_record - IDEM_DIR/owners/QID: tenant (api_batch.h) */
void api_batch_owner_record(const char *idem_dir, const char *qid,
                            const char *tenant)
{
    VSTR *path = vstr_alloc(100);
    int fd;

    vstr_sprintf(path, "%s/%s", idem_dir, API_OWNERS);
    if (mkdir(vstr_str(path), 0700) < 0 && errno != EEXIST) {
        msg_warn("mkdir %s: %m", vstr_str(path));
    } else {
        vstr_sprintf_append(path, "/%s", qid);
        if ((fd = open(vstr_str(path), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                       0600)) < 0 ||
            safe_file_write_all(fd, tenant, strlen(tenant)) < 0)
            msg_warn("write %s: %m", vstr_str(path));
        if (fd >= 0)
            (void) close(fd);
    }
    vstr_free(path);
}

/* api_batch_rendered_dir - IDEM_DIR/rendered (api_batch.h) */
void api_batch_rendered_dir(const char *idem_dir, VSTR *out)
{
    vstr_sprintf(out, "%s/%s", idem_dir, API_BATCH_RENDERED_DIR);
}

/* api_batch_spool - write batch durably into dir (see api_batch.h) */
int api_batch_spool(const char *dir, json_t *batch, VSTR *id, VSTR *why)
{
    char qid[QID_SIZE];
    VSTR *path = vstr_alloc(100);
    char *text;
    int ret = -1;

    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        vstr_sprintf(why, "mkdir %s: %m", dir);
        goto out;
    }
    qid_new(qid);
    json_object_set_new(batch, "id", json_string(qid));
    if ((text = json_dumps(batch, JSON_COMPACT)) == NULL) {
        vstr_cpy(why, "the batch cannot be written as JSON");
        goto out;
    }
    vstr_sprintf(path, "%s/%s", dir, qid);
    /* Temporary file, fsync, rename, fsync of dir: durable once it
       returns 0, and never seen half written under its name. */
    if (safe_file_write(vstr_str(path), text, strlen(text), 0600) < 0)
        vstr_sprintf(why, "write %s: %m", vstr_str(path));
    else
        ret = 0;
    free(text);
    if (ret == 0)
        vstr_cpy(id, qid);
out:
    vstr_free(path);
    return ret;
}

/* api_batch_answer - the 202 body of a spooled batch (api_batch.h) */
char *api_batch_answer(json_t *batch)
{
    json_t *idem = json_object_get(batch, "idem");
    json_t *fields = json_object_get(idem, "answer");
    json_t *id = json_object_get(batch, "id");
    json_t *answer;
    char *text;

    if (!json_is_object(fields) || !json_is_string(id))
        return NULL;
    answer = json_object();
    json_object_set(answer, "id", id);
    json_object_set(answer, "batch", id);
    json_object_update(answer, fields);
    text = json_dumps(answer, JSON_COMPACT);
    json_decref(answer);
    return text;
}

/* api_batch_idem_mend - write a missing idempotency record (api_batch.h) */
int api_batch_idem_mend(const char *idem_dir, long long ttl, json_t *batch,
                        VSTR *why)
{
    json_t *idem = json_object_get(batch, "idem");
    const char *key = json_string_value(json_object_get(idem, "key"));
    json_t *request = json_object_get(idem, "request");
    const char *tenant = json_string_value(json_object_get(batch, "tenant"));
    VSTR *old = vstr_alloc(100);
    char *text = NULL;
    int status;
    int ret = 0;

    if (key == NULL || tenant == NULL || !json_is_string(request))
        goto out;
    switch (api_idem_lookup(idem_dir, ttl, tenant, key,
                            json_string_value(request),
                            json_string_length(request), &status, old, why)) {
    case API_IDEM_NONE:
        break;
    case API_IDEM_ERROR:
        ret = -1;
        goto out;
    default:
        goto out; /* recorded (or the key reused since: not ours) */
    }
    if ((text = api_batch_answer(batch)) == NULL) {
        vstr_cpy(why, "the batch's answer cannot be made");
        ret = -1;
    } else if (api_idem_store(idem_dir, tenant, key, json_string_value(request),
                              json_string_length(request), 202, text,
                              why) < 0) {
        ret = -1;
    } else {
        ret = 1;
    }
out:
    free(text);
    vstr_free(old);
    return ret;
}

/* api_batch_part_given - the first of subject, text, html that req
   has, or NULL */
static const char *api_batch_part_given(json_t *req)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(api_batch_parts); i++)
        if (json_object_get(req, api_batch_parts[i]) != NULL)
            return api_batch_parts[i];
    return NULL;
}

/* api_batch_render_parts - render tmpl's parts with data into req */
int api_batch_render_parts(json_t *req, json_t *tmpl, json_t *data,
                           size_t max_size, API_ERROR *err)
{
    const char *const *parts = api_batch_parts;
    VSTR *out = vstr_alloc(1024);
    json_t *empty = json_object();
    int ret = -1;
    int rc;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(api_batch_parts); i++) {
        json_t *part = json_object_get(tmpl, parts[i]);
        API_MUSTACHE *compiled;

        if (!json_is_string(part))
            continue;
        if ((compiled = api_mustache_compile(json_string_value(part),
                                             json_string_length(part),
                                             err->message)) == NULL) {
            err->status = 500;
            err->code = "invalid_template";
            goto out;
        }
        vstr_reset(out);
        rc = api_mustache_render(
            compiled, data ? data : empty, strcmp(parts[i], "html") == 0,
            max_size ? max_size : SIZE_MAX / 2, 0, out, err->message);
        api_mustache_free(compiled);
        if (rc < 0) {
            err->status = rc == -1 ? 413 : 422;
            err->code = rc == -1 ? "message_too_large" : "template_too_complex";
            vstr_cpy(err->field, parts[i]);
            goto out;
        }
        json_object_set_new(req, parts[i],
                            json_stringn(vstr_str(out), vstr_len(out)));
    }
    ret = 0;
out:
    json_decref(empty);
    vstr_free(out);
    return ret;
}

/* api_batch_recipient - recipient i's message (see api_batch.h) */
API_MESSAGE *api_batch_recipient(json_t *base, json_t *data, json_t *entry,
                                 json_t *tmpl, const API_LIMITS *limits,
                                 size_t i, API_ERROR *err)
{
    json_t *one = json_copy(base);
    json_t *rdata = json_object_get(entry, "data");
    API_MESSAGE *msg = NULL;
    const char *part;
    char *text = NULL;

    if (one == NULL)
        msg_fatal("out of memory");
    json_object_set(one, "to", json_object_get(entry, "to"));
    if (json_object_get(one, "template") != NULL) {
        json_t *merged = data != NULL ? json_copy(data) : json_object();

        if (rdata != NULL)
            json_object_update(merged, rdata);
        err->status = 400;
        err->code = "invalid_field";
        if (!json_is_string(json_object_get(one, "template"))) {
            vstr_cpy(err->field, "template");
            vstr_cpy(err->message, "template must be a string");
        } else if ((part = api_batch_part_given(one)) != NULL) {
            vstr_cpy(err->field, part);
            vstr_sprintf(err->message,
                         "%s cannot be given with template (the template "
                         "has its own)",
                         part);
        } else if (tmpl == NULL) {
            err->status = 422;
            err->code = "unknown_template";
            vstr_cpy(err->field, "template");
            vstr_cpy(err->message, "no template of that name");
        } else if (api_batch_render_parts(one, tmpl, merged,
                                          limits->max_message_size, err) == 0) {
            json_object_del(one, "template");
            json_object_del(one, "data");
            if ((text = json_dumps(one, JSON_COMPACT)) == NULL) {
                err->status = 422;
                err->code = "invalid_template";
                vstr_cpy(err->message, "the rendered text is not valid UTF-8");
            }
        }
        json_decref(merged);
    } else if ((text = json_dumps(one, JSON_COMPACT)) == NULL) {
        msg_fatal("out of memory");
    }
    if (text != NULL)
        msg = api_request_parse(text, strlen(text), limits, err);
    /* The recipient's fields, as the client knows them. */
    if (msg == NULL && strcmp(vstr_str(err->field), "to") == 0)
        vstr_sprintf(err->field, "recipients[%zu].to", i);
    else if (msg == NULL && strncmp(vstr_str(err->field), "data", 4) == 0)
        vstr_sprintf(err->field, "recipients[%zu].data", i);
    free(text);
    json_decref(one);
    return msg;
}

/* api_batch_traceparent - the traceparent: header first in msg */
void api_batch_traceparent(API_MESSAGE *msg, const char *value)
{
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
