/*
 * spf_proto - the protocol between smtpd and the spf service
 *
 * See spf_proto.h. Two clients: spf_proto_check blocks (tests, tools),
 * spf_proto_ask runs in the caller's event loop (smtpd); the server side
 * is spf/spf.c.
 */
#include "sys_defs.h"

#include "attr.h"
#include "attr_conn.h"
#include "mail_queue.h"
#include "msg.h"
#include "mymalloc.h"
#include "proto_hello.h"
#include "sock.h"
#include "spf_proto.h"
#include "vstr.h"

static const char *const spf_result_names[] = {
    [SPF_PROTO_NONE] = "none",           [SPF_PROTO_NEUTRAL] = "neutral",
    [SPF_PROTO_PASS] = "pass",           [SPF_PROTO_FAIL] = "fail",
    [SPF_PROTO_SOFTFAIL] = "softfail",   [SPF_PROTO_TEMPERROR] = "temperror",
    [SPF_PROTO_PERMERROR] = "permerror",
};

static const ATTR_SPEC spf_hello_spec[] = {
    {PROTO_HELLO_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {PROTO_HELLO_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"spf\""},
    {PROTO_HELLO_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "SPF_PROTO_VERSION of the sender"},
};

const ATTR_SPEC spf_request_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "check (SPF_REQ_CHECK)"},
    {"client_address", ATTR_TYPE_STR, true, false, "the SMTP client's IP"},
    {"helo_name", ATTR_TYPE_STR, true, false, "HELO/EHLO name; \"\": none"},
    {"sender", ATTR_TYPE_STR, true, false, "MAIL FROM; \"\": <>"},
    {"helo_check", ATTR_TYPE_INT, true, false,
     "1: check the HELO identity too; 0: not"},
};
const size_t spf_request_spec_count = SLUICE_ARRAY_LEN(spf_request_spec);

const ATTR_SPEC spf_reply_spec[] = {
    {"status", ATTR_TYPE_STR, true, false, "ok, or fail (no check made)"},
    {"result", ATTR_TYPE_STR, false, false, "ok: pass, fail, ... (RFC 7208)"},
    {"explanation", ATTR_TYPE_STR, false, false, "ok: the fail explanation"},
    {"received_spf", ATTR_TYPE_STR, false, false, "ok: Received-SPF: value"},
    {"helo_result", ATTR_TYPE_STR, false, false,
     "ok: the HELO identity's result (none: not checked)"},
    {"reason", ATTR_TYPE_STR, false, false, "fail: why no check was made"},
};
const size_t spf_reply_spec_count = SLUICE_ARRAY_LEN(spf_reply_spec);

/* spf_proto_result_name - the name of a result */
const char *spf_proto_result_name(SPF_PROTO_RESULT result)
{
    if ((size_t) result >= SLUICE_ARRAY_LEN(spf_result_names))
        msg_panic("%s: bad result %d", __func__, (int) result);
    return spf_result_names[result];
}

/* spf_proto_result_code - the result of a name, or -1 */
int spf_proto_result_code(const char *name)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(spf_result_names); i++)
        if (strcmp(name, spf_result_names[i]) == 0)
            return (int) i;
    return -1;
}

/* spf_proto_clean - text as it may travel */
void spf_proto_clean(const char *text, VSTR *out)
{
    size_t len = strlen(text);
    size_t cut = len;

    if (len > SPF_TEXT_MAX) {
        cut = SPF_TEXT_MAX;
        while (cut > SPF_TEXT_MAX / 2 && text[cut] != ' ')
            cut--;
        if (text[cut] != ' ')
            cut = SPF_TEXT_MAX;
    }
    vstr_reset(out);
    for (size_t i = 0; i < cut; i++) {
        unsigned char ch = (unsigned char) text[i];

        vstr_addch(out, ch >= 0x20 && ch < 0x7f ? (char) ch : '?');
    }
}

/* spf_proto_text_ok - text that spf_proto_clean leaves alone */
static bool spf_proto_text_ok(const char *text)
{
    size_t len = 0;

    for (; text[len] != 0; len++)
        if ((unsigned char) text[len] < 0x20 ||
            (unsigned char) text[len] >= 0x7f)
            return false;
    return len <= SPF_TEXT_MAX;
}

/* spf_hello_take - the peer's HELLO */
int spf_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, SPF_PROTO_NAME, SPF_PROTO_VERSION,
                            spf_hello_spec, SLUICE_ARRAY_LEN(spf_hello_spec),
                            why);
}

/* spf_hello_list - our HELLO */
ATTR_LIST *spf_hello_list(void)
{
    return proto_hello_list(SPF_PROTO_NAME, SPF_PROTO_VERSION);
}

/* spf_request_encode - a REQUEST as an attribute list */
ATTR_LIST *spf_request_encode(const SPF_REQUEST *req)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", SPF_REQ_CHECK);
    attr_add_str(list, "client_address", req->client_address);
    attr_add_str(list, "helo_name", req->helo_name);
    attr_add_str(list, "sender", req->sender);
    attr_add_int(list, "helo_check", req->helo_check ? 1 : 0);
    return list;
}

/* spf_request_decode - a REQUEST from its attribute list */
int spf_request_decode(const ATTR_LIST *list, SPF_REQUEST *req, VSTR *why)
{
    long long helo_check;

    if (attr_list_check(list, spf_request_spec, spf_request_spec_count, why) <
        0)
        return -1;
    if (strcmp(attr_get_str(list, "request"), SPF_REQ_CHECK) != 0) {
        vstr_sprintf(why, "unknown request");
        return -1;
    }
    req->client_address = attr_get_str(list, "client_address");
    req->helo_name = attr_get_str(list, "helo_name");
    req->sender = attr_get_str(list, "sender");
    if (!attr_get_int(list, "helo_check", &helo_check) ||
        (helo_check != 0 && helo_check != 1)) {
        vstr_sprintf(why, "helo_check is neither 0 nor 1");
        return -1;
    }
    req->helo_check = helo_check == 1;
    if (*req->client_address == 0) {
        vstr_sprintf(why, "empty client_address");
        return -1;
    }
    return 0;
}

/* spf_reply_encode - a REPLY as an attribute list */
ATTR_LIST *spf_reply_encode(const SPF_REPLY *reply)
{
    ATTR_LIST *list = attr_list_alloc();

    if (!reply->ok) {
        attr_add_str(list, "status", SPF_STAT_FAIL);
        attr_add_str(list, "reason", reply->reason);
        return list;
    }
    attr_add_str(list, "status", SPF_STAT_OK);
    attr_add_str(list, "result", spf_proto_result_name(reply->result));
    attr_add_str(list, "explanation", reply->explanation);
    attr_add_str(list, "received_spf", reply->received_spf);
    attr_add_str(list, "helo_result",
                 spf_proto_result_name(reply->helo_result));
    return list;
}

/* spf_reply_decode - a REPLY from its attribute list */
int spf_reply_decode(const ATTR_LIST *list, SPF_REPLY *reply, VSTR *why)
{
    const char *status;
    const char *result;
    const char *helo_result;
    int code;
    int helo_code;

    if (attr_list_check(list, spf_reply_spec, spf_reply_spec_count, why) < 0)
        return -1;
    status = attr_get_str(list, "status");
    result = attr_get_str(list, "result");
    helo_result = attr_get_str(list, "helo_result");
    reply->explanation = attr_get_str(list, "explanation");
    reply->received_spf = attr_get_str(list, "received_spf");
    reply->reason = attr_get_str(list, "reason");
    if (strcmp(status, SPF_STAT_FAIL) == 0) {
        if (reply->reason == NULL || result != NULL || helo_result != NULL ||
            reply->explanation != NULL || reply->received_spf != NULL) {
            vstr_sprintf(why, "a failed reply takes a reason only");
            return -1;
        }
        if (!spf_proto_text_ok(reply->reason)) {
            vstr_sprintf(why, "reason: control characters or too long");
            return -1;
        }
        reply->ok = false;
        return 0;
    }
    if (strcmp(status, SPF_STAT_OK) != 0) {
        vstr_sprintf(why, "bad status \"%.100s\"", status);
        return -1;
    }
    if (result == NULL || reply->explanation == NULL ||
        reply->received_spf == NULL || helo_result == NULL ||
        reply->reason != NULL) {
        vstr_sprintf(why, "an ok reply takes result, explanation, "
                          "received_spf and helo_result");
        return -1;
    }
    if ((code = spf_proto_result_code(result)) < 0) {
        vstr_sprintf(why, "unknown result \"%.100s\"", result);
        return -1;
    }
    if ((helo_code = spf_proto_result_code(helo_result)) < 0) {
        vstr_sprintf(why, "unknown helo_result \"%.100s\"", helo_result);
        return -1;
    }
    if (!spf_proto_text_ok(reply->explanation) ||
        !spf_proto_text_ok(reply->received_spf)) {
        vstr_sprintf(why, "%s: control characters or too long",
                     spf_proto_text_ok(reply->explanation) ? "received_spf"
                                                           : "explanation");
        return -1;
    }
    reply->ok = true;
    reply->result = (SPF_PROTO_RESULT) code;
    reply->helo_result = (SPF_PROTO_RESULT) helo_code;
    return 0;
}

/* spf_proto_check - ask the spf service */
int spf_proto_check(const char *queue_dir, int timeout_ms,
                    const SPF_REQUEST *req, SPF_PROTO_RESULT *result,
                    VSTR *explanation, VSTR *received_spf, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    VSTR *reason = vstr_alloc(100);
    ATTR_STREAM *stream;
    ATTR_LIST *hello = NULL;
    ATTR_LIST *list = NULL;
    SPF_REPLY reply = {0};
    int fd;
    int ret = -1;

    mail_queue_service(path, queue_dir, MAIL_QUEUE_PRIVATE, SPF_SERVICE);
    if ((fd = sock_unix_connect(vstr_str(path))) < 0) {
        vstr_sprintf(why, "cannot connect to the spf service at %s: %s",
                     vstr_str(path), strerror(errno));
        vstr_free(path);
        vstr_free(reason);
        return -1;
    }
    stream = attr_stream_open(fd, SPF_REPLY_MAX, timeout_ms);
    hello = spf_hello_list();
    list = spf_request_encode(req);
    if (attr_stream_write(stream, hello, reason) < 0 ||
        attr_stream_write(stream, list, reason) < 0) {
        vstr_sprintf(why, "spf service: sending the request: %s",
                     vstr_str(reason));
        goto out;
    }
    hello = attr_list_free(hello);
    list = attr_list_free(list);
    if (attr_stream_read(stream, &hello, reason) < 0) {
        vstr_sprintf(why, "spf service: no greeting: %s", vstr_str(reason));
    } else if (spf_hello_take(hello, reason) < 0) {
        vstr_sprintf(why, "spf service: %s", vstr_str(reason));
    } else if (attr_stream_read(stream, &list, reason) < 0) {
        vstr_sprintf(why, "spf service: no reply: %s", vstr_str(reason));
    } else if (spf_reply_decode(list, &reply, reason) < 0) {
        vstr_sprintf(why, "spf service: bad reply: %s", vstr_str(reason));
    } else if (!reply.ok) {
        vstr_sprintf(why, "spf service: %s", reply.reason);
    } else {
        *result = reply.result;
        vstr_cpy(explanation, reply.explanation);
        vstr_cpy(received_spf, reply.received_spf);
        ret = 0;
    }

out:
    attr_list_free(hello);
    attr_list_free(list);
    attr_stream_close(stream);
    vstr_free(path);
    vstr_free(reason);
    return ret;
}

struct SPF_PROTO_ASK {
    ATTR_CONN *conn;
    bool greeted; /* the daemon's HELLO came and was ours */
    SPF_PROTO_DONE done;
    void *arg;
    VSTR *why;
};

/* spf_proto_ask_end - call done once, then free the question */
static void spf_proto_ask_end(SPF_PROTO_ASK *ask, const SPF_REPLY *reply)
{
    SPF_PROTO_DONE done = ask->done;
    void *arg = ask->arg;

    /* The handle goes before the call: done may free its owner. The
       connection is freed inside its own callback (attr_conn.h). */
    ask->conn = attr_conn_free(ask->conn);
    done(reply, reply ? NULL : vstr_str(ask->why), arg);
    vstr_free(ask->why);
    myfree(ask);
}

/* spf_proto_ask_list - the daemon's HELLO, then its REPLY */
static void spf_proto_ask_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    SPF_PROTO_ASK *ask = arg;
    VSTR *reason = vstr_alloc(100);
    SPF_REPLY reply = {0};

    if (!ask->greeted) {
        if (spf_hello_take(list, reason) < 0) {
            vstr_sprintf(ask->why, "spf service: %s", vstr_str(reason));
            spf_proto_ask_end(ask, NULL);
        } else {
            ask->greeted = true;
        }
    } else if (spf_reply_decode(list, &reply, reason) < 0) {
        vstr_sprintf(ask->why, "spf service: bad reply: %s", vstr_str(reason));
        spf_proto_ask_end(ask, NULL);
    } else if (!reply.ok) {
        vstr_sprintf(ask->why, "spf service: %s", reply.reason);
        spf_proto_ask_end(ask, NULL);
    } else {
        spf_proto_ask_end(ask, &reply);
    }
    vstr_free(reason);
}

/* spf_proto_ask_gone - EOF, error, the deadline, or a malformed list */
static void spf_proto_ask_gone(ATTR_CONN *conn, ATTR_CONN_END kind,
                               const char *why, void *arg)
{
    SPF_PROTO_ASK *ask = arg;

    vstr_sprintf(ask->why, "spf service: %s: %s",
                 ask->greeted ? "no reply" : "no greeting", why);
    spf_proto_ask_end(ask, NULL);
}

static const ATTR_CONN_OPS spf_proto_ask_ops = {
    .on_list = spf_proto_ask_list,
    .on_end = spf_proto_ask_gone,
};

/* spf_proto_ask - ask the spf service from an event loop */
SPF_PROTO_ASK *spf_proto_ask(struct event_base *base, const char *queue_dir,
                             int timeout_sec, const SPF_REQUEST *req,
                             SPF_PROTO_DONE done, void *arg, VSTR *why)
{
    SPF_PROTO_ASK *ask = mycalloc(1, sizeof(*ask));
    VSTR *path = vstr_alloc(100);
    VSTR *reason = vstr_alloc(100);
    ATTR_LIST *list;

    mail_queue_service(path, queue_dir, MAIL_QUEUE_PRIVATE, SPF_SERVICE);
    ask->conn = attr_conn_connect(base, vstr_str(path), SPF_REPLY_MAX,
                                  &spf_proto_ask_ops, ask, reason);
    if (ask->conn == NULL) {
        vstr_sprintf(why, "cannot connect to the spf service at %s: %s",
                     vstr_str(path), strerror(errno));
        vstr_free(path);
        vstr_free(reason);
        myfree(ask);
        return NULL;
    }
    vstr_free(path);
    vstr_free(reason);
    ask->done = done;
    ask->arg = arg;
    ask->why = vstr_alloc(100);
    /* One bound for the whole exchange: a daemon that takes longer than
       the caller's limit is an error, never a pass. */
    attr_conn_deadline(ask->conn, timeout_sec);
    list = spf_hello_list();
    attr_conn_send(ask->conn, list);
    attr_list_free(list);
    list = spf_request_encode(req);
    attr_conn_send(ask->conn, list);
    attr_list_free(list);
    return ask;
}

/* spf_proto_ask_cancel - forget a question */
SPF_PROTO_ASK *spf_proto_ask_cancel(SPF_PROTO_ASK *ask)
{
    if (ask != NULL) {
        attr_conn_free(ask->conn);
        vstr_free(ask->why);
        myfree(ask);
    }
    return NULL;
}
