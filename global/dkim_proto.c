/*
 * dkim_proto - DKIM verification requests to the authentication checker
 *
 * See dkim_proto.h. The codec alone: smtpd drives the client side in its
 * event loop, spf/spf.c the server side.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "attr.h"
#include "dkim_proto.h"
#include "msg.h"
#include "vstr.h"

static const char *const dkim_result_names[] = {
    [DKIM_PROTO_PASS] = "pass",           [DKIM_PROTO_FAIL] = "fail",
    [DKIM_PROTO_NEUTRAL] = "neutral",     [DKIM_PROTO_TEMPERROR] = "temperror",
    [DKIM_PROTO_PERMERROR] = "permerror",
};

static const char *const dmarc_result_names[] = {
    [DMARC_PROTO_NONE] = "none",
    [DMARC_PROTO_PASS] = "pass",
    [DMARC_PROTO_FAIL] = "fail",
    [DMARC_PROTO_TEMPERROR] = "temperror",
    [DMARC_PROTO_PERMERROR] = "permerror",
};

const ATTR_SPEC dkim_request_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "dkim, data or end"},
    {"data", ATTR_TYPE_DATA, false, false, "data: a chunk of the content"},
    {"dmarc", ATTR_TYPE_INT, false, false, "dkim: 1: DMARC too"},
    {"client_address", ATTR_TYPE_STR, false, false, "dkim+dmarc: client IP"},
    {"spf_result", ATTR_TYPE_STR, false, false, "dkim+dmarc: SPF result"},
    {"spf_domain", ATTR_TYPE_STR, false, false, "dkim+dmarc: its domain"},
};
const size_t dkim_request_spec_count = SLUICE_ARRAY_LEN(dkim_request_spec);

const ATTR_SPEC dkim_reply_spec[] = {
    {"status", ATTR_TYPE_STR, true, false, "ok, or fail (no verification)"},
    {"reason", ATTR_TYPE_STR, false, false, "fail: why"},
    {"result", ATTR_TYPE_STR, false, true, "ok: per signature, in order"},
    {"domain", ATTR_TYPE_STR, false, true, "ok: per signature, its d="},
    {"selector", ATTR_TYPE_STR, false, true, "ok: per signature, its s="},
    {"dmarc", ATTR_TYPE_STR, false, false, "ok: the DMARC result"},
    {"dmarc_from", ATTR_TYPE_STR, false, false, "ok: the From: domain"},
    {"dmarc_policy", ATTR_TYPE_STR, false, false, "ok: p= or sp= on fail"},
};

/* dmarc_proto_result_name - the name of a DMARC result */
const char *dmarc_proto_result_name(DMARC_PROTO_RESULT result)
{
    if ((size_t) result >= SLUICE_ARRAY_LEN(dmarc_result_names))
        msg_panic("%s: bad result %d", __func__, (int) result);
    return dmarc_result_names[result];
}
const size_t dkim_reply_spec_count = SLUICE_ARRAY_LEN(dkim_reply_spec);

/* dkim_proto_result_name - the name of a result */
const char *dkim_proto_result_name(DKIM_PROTO_RESULT result)
{
    if ((size_t) result >= SLUICE_ARRAY_LEN(dkim_result_names))
        msg_panic("%s: bad result %d", __func__, (int) result);
    return dkim_result_names[result];
}

/* dkim_proto_result_code - the result of a name, or -1 */
int dkim_proto_result_code(const char *name)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(dkim_result_names); i++)
        if (strcmp(name, dkim_result_names[i]) == 0)
            return (int) i;
    return -1;
}

/* dkim_proto_token_ok - [A-Za-z0-9._-]*, at most DKIM_TOKEN_MAX bytes */
bool dkim_proto_token_ok(const char *text)
{
    size_t len = 0;

    for (; text[len] != 0; len++) {
        unsigned char ch = (unsigned char) text[len];

        if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_')
            return false;
    }
    return len <= DKIM_TOKEN_MAX;
}

/* dkim_begin_list - BEGIN */
ATTR_LIST *dkim_begin_list(const DKIM_REQUEST *begin)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", DKIM_REQ_BEGIN);
    if (begin != NULL && begin->dmarc) {
        attr_add_int(list, "dmarc", 1);
        attr_add_str(list, "client_address", begin->client_address);
        attr_add_str(list, "spf_result", begin->spf_result);
        attr_add_str(list, "spf_domain", begin->spf_domain);
    }
    return list;
}

/* dkim_data_list - one DATA chunk */
ATTR_LIST *dkim_data_list(const char *data, size_t len)
{
    ATTR_LIST *list = attr_list_alloc();

    if (len > DKIM_CHUNK_MAX)
        msg_panic("%s: chunk of %zu bytes", __func__, len);
    attr_add_str(list, "request", DKIM_REQ_DATA);
    attr_add_data(list, "data", data, len);
    return list;
}

/* dkim_end_list - END */
ATTR_LIST *dkim_end_list(void)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", DKIM_REQ_END);
    return list;
}

/* dkim_request_take - one request */
int dkim_request_take(const ATTR_LIST *list, DKIM_REQUEST *req, VSTR *why)
{
    const char *request;

    memset(req, 0, sizeof(*req));
    if (attr_list_check(list, dkim_request_spec, dkim_request_spec_count, why) <
        0)
        return -1;
    request = attr_get_str(list, "request");
    req->data = attr_get_data(list, "data", &req->len);
    if (strcmp(request, DKIM_REQ_DATA) == 0) {
        if (req->data == NULL || req->len > DKIM_CHUNK_MAX) {
            vstr_sprintf(why, "data without a chunk of at most %d bytes",
                         DKIM_CHUNK_MAX);
            return -1;
        }
        req->kind = DKIM_KIND_DATA;
        return 0;
    }
    if (req->data != NULL) {
        vstr_sprintf(why, "%.20s takes no data", request);
        return -1;
    }
    {
        long long dmarc = 0;

        (void) attr_get_int(list, "dmarc", &dmarc);
        req->dmarc = dmarc == 1;
        req->client_address = attr_get_str(list, "client_address");
        req->spf_result = attr_get_str(list, "spf_result");
        req->spf_domain = attr_get_str(list, "spf_domain");
        if ((attr_list_count(list) > 1 &&
             strcmp(request, DKIM_REQ_BEGIN) != 0) ||
            (attr_list_count(list) > 1 &&
             (!req->dmarc || req->client_address == NULL ||
              req->spf_result == NULL || req->spf_domain == NULL ||
              attr_list_count(list) != 5))) {
            vstr_sprintf(why, "dmarc takes client_address, spf_result and "
                              "spf_domain, on dkim only");
            return -1;
        }
    }
    if (strcmp(request, DKIM_REQ_BEGIN) == 0)
        req->kind = DKIM_KIND_BEGIN;
    else if (strcmp(request, DKIM_REQ_END) == 0)
        req->kind = DKIM_KIND_END;
    else {
        vstr_sprintf(why, "unknown request \"%.20s\"", request);
        return -1;
    }
    return 0;
}

/* dkim_reply_list - a REPLY */
ATTR_LIST *dkim_reply_list(const DKIM_REPLY *reply)
{
    ATTR_LIST *list = attr_list_alloc();

    if (!reply->ok) {
        attr_add_str(list, "status", "fail");
        attr_add_str(list, "reason", reply->reason);
        return list;
    }
    attr_add_str(list, "status", "ok");
    for (size_t i = 0; i < reply->count; i++) {
        attr_add_str(list, "result",
                     dkim_proto_result_name(reply->sigs[i].result));
        attr_add_str(list, "domain", reply->sigs[i].domain);
        attr_add_str(list, "selector", reply->sigs[i].selector);
    }
    if (reply->dmarc) {
        attr_add_str(list, "dmarc",
                     dmarc_proto_result_name(reply->dmarc_result));
        attr_add_str(list, "dmarc_from", reply->dmarc_from);
        attr_add_str(list, "dmarc_policy", reply->dmarc_policy);
    }
    return list;
}

/* dkim_reply_take - a REPLY from its list */
int dkim_reply_take(const ATTR_LIST *list, DKIM_REPLY *reply, VSTR *why)
{
    static const char *const names[3] = {"result", "domain", "selector"};
    size_t sigs = 0;
    int next = 0; /* the name expected: result, domain, selector, ... */
    const char *status;

    memset(reply, 0, sizeof(*reply));
    if (attr_list_check(list, dkim_reply_spec, dkim_reply_spec_count, why) < 0)
        return -1;
    status = attr_get_str(list, "status");
    reply->reason = attr_get_str(list, "reason");
    if (strcmp(status, "fail") == 0) {
        if (reply->reason == NULL || attr_list_count(list) != 2) {
            vstr_sprintf(why, "a failed reply takes a reason only");
            return -1;
        }
        for (const char *cp = reply->reason; *cp; cp++)
            if ((unsigned char) *cp < 0x20 || (unsigned char) *cp >= 0x7f) {
                vstr_sprintf(why, "reason: control characters");
                return -1;
            }
        return 0;
    }
    if (strcmp(status, "ok") != 0 || reply->reason != NULL) {
        vstr_sprintf(why, "bad status \"%.20s\"", status);
        return -1;
    }
    for (size_t i = 0; i < attr_list_count(list); i++) {
        const char *name = attr_name_at(list, i);
        const char *value = attr_value_at(list, i, NULL);
        int k;

        for (k = 0; k < 3 && strcmp(name, names[k]) != 0; k++)
            continue;
        if (k == 3)
            continue; /* status, dmarc* */
        if (k != next || sigs >= DKIM_SIG_MAX) {
            vstr_sprintf(why, "signature attributes out of order");
            return -1;
        }
        if (k == 0) {
            int code = dkim_proto_result_code(value);

            if (code < 0) {
                vstr_sprintf(why, "unknown result \"%.20s\"", value);
                return -1;
            }
            reply->sigs[sigs].result = (DKIM_PROTO_RESULT) code;
        } else if (!dkim_proto_token_ok(value)) {
            vstr_sprintf(why, "%s is not a DNS token", name);
            return -1;
        } else if (k == 1) {
            reply->sigs[sigs].domain = value;
        } else {
            reply->sigs[sigs++].selector = value;
        }
        next = (k + 1) % 3;
    }
    if (next != 0) {
        vstr_sprintf(why, "a signature without domain or selector");
        return -1;
    }
    reply->count = sigs;
    {
        const char *dmarc = attr_get_str(list, "dmarc");
        const char *from = attr_get_str(list, "dmarc_from");
        const char *policy = attr_get_str(list, "dmarc_policy");
        int code = -1;

        if (dmarc != NULL || from != NULL || policy != NULL) {
            for (size_t i = 0;
                 dmarc && i < SLUICE_ARRAY_LEN(dmarc_result_names); i++)
                if (strcmp(dmarc, dmarc_result_names[i]) == 0)
                    code = (int) i;
            if (code < 0 || from == NULL || policy == NULL ||
                !dkim_proto_token_ok(from) ||
                (strcmp(policy, "") != 0 && strcmp(policy, "none") != 0 &&
                 strcmp(policy, "quarantine") != 0 &&
                 strcmp(policy, "reject") != 0)) {
                vstr_sprintf(why, "bad dmarc result");
                return -1;
            }
            reply->dmarc = true;
            reply->dmarc_result = (DMARC_PROTO_RESULT) code;
            reply->dmarc_from = from;
            reply->dmarc_policy = policy;
        }
    }
    reply->ok = true;
    return 0;
}
