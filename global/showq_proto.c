/*
 * showq_proto - the protocol between mailq and the showq service
 *
 * See showq_proto.h. The client side blocks (mailq has nothing else to
 * do); the server side is showq/showq.c on attr_conn.
 */
#include "sys_defs.h"

#include "attr.h"
#include "mail_queue.h"
#include "proto_hello.h"
#include "showq_proto.h"
#include "sock.h"
#include "vstr.h"

static const ATTR_SPEC showq_hello_spec[] = {
    {PROTO_HELLO_ATTR_REQUEST, ATTR_TYPE_STR, true, false, "\"hello\""},
    {PROTO_HELLO_ATTR_PROTOCOL, ATTR_TYPE_STR, true, false, "\"showq\""},
    {PROTO_HELLO_ATTR_VERSION, ATTR_TYPE_INT, true, false,
     "SHOWQ_PROTO_VERSION of the sender"},
};

/* showq_hello_take - the peer's HELLO */
int showq_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, SHOWQ_PROTO_NAME, SHOWQ_PROTO_VERSION,
                            showq_hello_spec,
                            SLUICE_ARRAY_LEN(showq_hello_spec), why);
}

/* showq_hello_list - our HELLO */
ATTR_LIST *showq_hello_list(void)
{
    return proto_hello_list(SHOWQ_PROTO_NAME, SHOWQ_PROTO_VERSION);
}

const ATTR_SPEC showq_request_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "list (SHOWQ_REQ_LIST)"},
    {"json", ATTR_TYPE_INT, false, false, "1: postqueue -j's JSON lines"},
    {"by_domain", ATTR_TYPE_INT, false, false, "1: qshape's table"},
    {"sender", ATTR_TYPE_STR, false, false, "only this sender (\"\": <>)"},
    {"recipient", ATTR_TYPE_STR, false, false, "only with this recipient"},
    {"domain", ATTR_TYPE_STR, false, false, "only with a recipient here"},
    {"reason", ATTR_TYPE_STR, false, false, "only with this delay reason"},
};
const size_t showq_request_spec_count = SLUICE_ARRAY_LEN(showq_request_spec);

const ATTR_SPEC showq_reply_spec[] = {
    {"text", ATTR_TYPE_DATA, false, false, "TEXT: a piece of the listing"},
    {"status", ATTR_TYPE_STR, false, false, "END: ok or fail"},
    {"reason", ATTR_TYPE_STR, false, false, "END: why it failed"},
};
const size_t showq_reply_spec_count = SLUICE_ARRAY_LEN(showq_reply_spec);

/* showq_request_encode - a REQUEST as an attribute list */
ATTR_LIST *showq_request_encode(const SHOWQ_REQUEST *req)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", SHOWQ_REQ_LIST);
    if (req->json)
        attr_add_int(list, "json", 1);
    if (req->by_domain)
        attr_add_int(list, "by_domain", 1);
    if (req->sender)
        attr_add_str(list, "sender", req->sender);
    if (req->recipient)
        attr_add_str(list, "recipient", req->recipient);
    if (req->domain)
        attr_add_str(list, "domain", req->domain);
    if (req->reason)
        attr_add_str(list, "reason", req->reason);
    return list;
}

/* showq_flag - an optional 0/1 attribute */
static int showq_flag(const ATTR_LIST *list, const char *name, bool *value,
                      VSTR *why)
{
    long long number = 0;

    if (attr_get_str(list, name) != NULL &&
        (!attr_get_int(list, name, &number) || (number != 0 && number != 1))) {
        vstr_sprintf(why, "%s is not 0 or 1", name);
        return -1;
    }
    *value = number == 1;
    return 0;
}

/* showq_request_decode - a REQUEST from its attribute list */
int showq_request_decode(const ATTR_LIST *list, SHOWQ_REQUEST *req, VSTR *why)
{
    if (attr_list_check(list, showq_request_spec, showq_request_spec_count,
                        why) < 0)
        return -1;
    if (strcmp(attr_get_str(list, "request"), SHOWQ_REQ_LIST) != 0) {
        vstr_sprintf(why, "unknown request");
        return -1;
    }
    if (showq_flag(list, "json", &req->json, why) < 0 ||
        showq_flag(list, "by_domain", &req->by_domain, why) < 0)
        return -1;
    req->sender = attr_get_str(list, "sender");
    req->recipient = attr_get_str(list, "recipient");
    req->domain = attr_get_str(list, "domain");
    req->reason = attr_get_str(list, "reason");
    return 0;
}

/* showq_connect - connect to queue_dir/public/showq */
int showq_connect(const char *queue_dir, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    int fd;

    mail_queue_service(path, queue_dir, MAIL_QUEUE_PUBLIC, SHOWQ_SERVICE);
    if ((fd = sock_unix_connect(vstr_str(path))) < 0) {
        int err = errno;

        vstr_sprintf(why, "cannot connect to the showq service at %s: %s",
                     vstr_str(path), strerror(err));
        errno = err;
    }
    vstr_free(path);
    return fd;
}

/* showq_reply_take - one reply: a TEXT piece written to out (0), the END
   (1, ret set), or -1 with the reason in why */
static int showq_reply_take(const ATTR_LIST *list, FILE *out, int *ret,
                            VSTR *why)
{
    const char *text = NULL;
    const char *status = attr_get_str(list, "status");
    const char *reason = attr_get_str(list, "reason");
    size_t len = 0;

    if (attr_list_check(list, showq_reply_spec, showq_reply_spec_count, why) <
        0)
        return -1;
    text = attr_get_data(list, "text", &len);
    if (text != NULL && attr_list_count(list) == 1) {
        if (fwrite(text, 1, len, out) != len) {
            vstr_sprintf(why, "write: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    if (text != NULL || status == NULL) {
        vstr_sprintf(why, "neither a piece of text nor the end");
        return -1;
    }
    if (strcmp(status, SHOWQ_STAT_OK) == 0 && reason == NULL) {
        *ret = 0;
    } else if (strcmp(status, SHOWQ_STAT_FAIL) == 0) {
        vstr_sprintf(why, "%s", reason ? reason : "the listing failed");
    } else {
        vstr_sprintf(why, "bad status \"%.100s\"", status);
        return -1;
    }
    return 1;
}

/* showq_list - send req on fd, write the listing to out as it comes */
int showq_list(int fd, const SHOWQ_REQUEST *req, FILE *out, VSTR *why)
{
    ATTR_STREAM *stream =
        attr_stream_open(fd, SHOWQ_REPLY_MAX, SHOWQ_CLIENT_TIMEOUT * 1000);
    ATTR_LIST *list = showq_request_encode(req);
    VSTR *reason = vstr_alloc(100);
    int ret = -1;
    int got = 0;
    ATTR_LIST *hello = showq_hello_list();

    if (attr_stream_write(stream, hello, reason) < 0 ||
        attr_stream_write(stream, list, reason) < 0) {
        vstr_sprintf(why, "showq: sending the request: %s", vstr_str(reason));
        got = -1;
    }
    hello = attr_list_free(hello);
    list = attr_list_free(list);
    /* showq's HELLO first: another version is a clear error. */
    if (got == 0 && attr_stream_read(stream, &hello, reason) < 0) {
        vstr_sprintf(why, "showq: no greeting: %s", vstr_str(reason));
        got = -1;
    } else if (got == 0 && showq_hello_take(hello, reason) < 0) {
        vstr_sprintf(why, "showq: %s", vstr_str(reason));
        got = -1;
    }
    attr_list_free(hello);
    while (got == 0) {
        if (attr_stream_read(stream, &list, reason) < 0) {
            vstr_sprintf(why, "showq: the listing was cut short: %s",
                         vstr_str(reason));
            break;
        }
        got = showq_reply_take(list, out, &ret, reason);
        if (got < 0)
            vstr_sprintf(why, "showq: bad reply: %s", vstr_str(reason));
        else if (got > 0 && ret < 0)
            vstr_sprintf(why, "showq: %s", vstr_str(reason));
        list = attr_list_free(list);
    }
    attr_stream_close(stream);
    vstr_free(reason);
    if (fflush(out) != 0 && ret == 0) {
        vstr_sprintf(why, "write: %s", strerror(errno));
        ret = -1;
    }
    return ret;
}
