/*
 * bounce_proto - the codec of the qmgr <-> bounce protocol
 *
 * Every list of global/bounce_proto.h is read and written here and
 * nowhere else: qmgr builds HELLO and NOTIFY and takes HELLO and STATUS;
 * bounce takes HELLO and NOTIFY and builds HELLO and STATUS. Readers are
 * strict: the list must be the request expected, pass its table, and
 * carry sane values (a known kind, a queue that holds queue files, a
 * well-formed queue ID), so bounce never puts a name from the wire into a
 * path unchecked.
 */
#include "sys_defs.h"

#include "attr.h"
#include "bounce_proto.h"
#include "mail_queue.h"
#include "proto_hello.h"
#include "qid.h"
#include "vstr.h"

/* bounce_kind_valid - one of the BOUNCE_KIND_* words? */
bool bounce_kind_valid(const char *kind)
{
    return kind != NULL && (strcmp(kind, BOUNCE_KIND_BOUNCE) == 0 ||
                            strcmp(kind, BOUNCE_KIND_DELAY) == 0);
}

/* bounce_hello_take - the peer's HELLO */
int bounce_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, BOUNCE_PROTO_NAME, BOUNCE_PROTO_VERSION,
                            bounce_hello_spec,
                            SLUICE_ARRAY_LEN(bounce_hello_spec), why);
}

/* bounce_hello_list - our HELLO */
ATTR_LIST *bounce_hello_list(void)
{
    return proto_hello_list(BOUNCE_PROTO_NAME, BOUNCE_PROTO_VERSION);
}

/* bounce_req_take - a NOTIFY list; strings borrowed from list */
int bounce_req_take(const ATTR_LIST *list, BOUNCE_REQ *req, VSTR *why)
{
    const char *request = attr_get_str(list, BOUNCE_ATTR_REQUEST);

    memset(req, 0, sizeof(*req));
    if (request != NULL && strcmp(request, BOUNCE_REQ_NOTIFY) != 0) {
        vstr_sprintf(why, "unknown request \"%s\"", request);
        return -1;
    }
    if (attr_list_check(list, bounce_request_spec,
                        SLUICE_ARRAY_LEN(bounce_request_spec), why) < 0)
        return -1;
    req->kind = attr_get_str(list, BOUNCE_ATTR_KIND);
    req->queue_name = attr_get_str(list, BOUNCE_ATTR_QUEUE_NAME);
    req->queue_id = attr_get_str(list, BOUNCE_ATTR_QUEUE_ID);
    if (!bounce_kind_valid(req->kind)) {
        vstr_sprintf(why, "unknown kind \"%s\"", req->kind);
        return -1;
    }
    if (!mail_queue_of_messages(req->queue_name)) {
        vstr_sprintf(why, "bad queue_name \"%s\"", req->queue_name);
        return -1;
    }
    if (!qid_valid(req->queue_id)) {
        vstr_sprintf(why, "bad queue_id \"%s\"", req->queue_id);
        return -1;
    }
    return 0;
}

/* bounce_req_list - the NOTIFY list of req */
ATTR_LIST *bounce_req_list(const BOUNCE_REQ *req)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, BOUNCE_ATTR_REQUEST, BOUNCE_REQ_NOTIFY);
    attr_add_str(list, BOUNCE_ATTR_KIND, req->kind);
    attr_add_str(list, BOUNCE_ATTR_QUEUE_NAME, req->queue_name);
    attr_add_str(list, BOUNCE_ATTR_QUEUE_ID, req->queue_id);
    return list;
}

/* bounce_status_take - a STATUS list; strings borrowed from list */
int bounce_status_take(const ATTR_LIST *list, BOUNCE_STATUS *status, VSTR *why)
{
    long long value = 0;
    const char *text;

    memset(status, 0, sizeof(*status));
    if (attr_list_check(list, bounce_status_spec,
                        SLUICE_ARRAY_LEN(bounce_status_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, BOUNCE_ATTR_STATUS, &value);
    status->status = value != 0;
    text = attr_get_str(list, BOUNCE_ATTR_REASON);
    status->reason = text && *text ? text : NULL;
    text = attr_get_str(list, BOUNCE_ATTR_DSN_QUEUE_ID);
    if (text != NULL && !qid_valid(text)) {
        vstr_sprintf(why, "bad dsn_queue_id \"%s\"", text);
        return -1;
    }
    status->dsn_queue_id = text;
    return 0;
}

/* bounce_status_list - the STATUS list of status */
ATTR_LIST *bounce_status_list(const BOUNCE_STATUS *status)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_int(list, BOUNCE_ATTR_STATUS, status->status);
    if (status->reason != NULL && *status->reason)
        attr_add_str(list, BOUNCE_ATTR_REASON, status->reason);
    if (status->dsn_queue_id != NULL && *status->dsn_queue_id)
        attr_add_str(list, BOUNCE_ATTR_DSN_QUEUE_ID, status->dsn_queue_id);
    return list;
}
