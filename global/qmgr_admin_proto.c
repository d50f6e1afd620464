/*
 * qmgr_admin_proto - the codec of the admin command <-> qmgr protocol
 *
 * Every list of global/qmgr_admin_proto.h is read and written here and
 * nowhere else: `sluice hold|delete|requeue` builds HELLO and REQUEST and
 * takes HELLO and REPLY; qmgr takes HELLO and REQUEST and builds HELLO
 * and REPLY. Readers are strict: the list must pass its table and carry
 * sane values (a known request, a well-formed queue ID, a known status),
 * so qmgr never puts a name from the socket into a path unchecked.
 */
#include "sys_defs.h"

#include "attr.h"
#include "proto_hello.h"
#include "qid.h"
#include "qmgr_admin_proto.h"
#include "vstr.h"

/* qmgr_admin_request_valid - one of hold, delete, requeue? */
bool qmgr_admin_request_valid(const char *request)
{
    return request != NULL && (strcmp(request, QMGR_ADMIN_REQ_HOLD) == 0 ||
                               strcmp(request, QMGR_ADMIN_REQ_DELETE) == 0 ||
                               strcmp(request, QMGR_ADMIN_REQ_REQUEUE) == 0);
}

/* qmgr_admin_hello_take - the peer's HELLO */
int qmgr_admin_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, QMGR_ADMIN_PROTO_NAME,
                            QMGR_ADMIN_PROTO_VERSION, qmgr_admin_hello_spec,
                            SLUICE_ARRAY_LEN(qmgr_admin_hello_spec), why);
}

/* qmgr_admin_hello_list - our HELLO */
ATTR_LIST *qmgr_admin_hello_list(void)
{
    return proto_hello_list(QMGR_ADMIN_PROTO_NAME, QMGR_ADMIN_PROTO_VERSION);
}

/* qmgr_admin_request_take - a REQUEST list; strings borrowed from list */
int qmgr_admin_request_take(const ATTR_LIST *list, QMGR_ADMIN_REQUEST *req,
                            VSTR *why)
{
    memset(req, 0, sizeof(*req));
    if (attr_list_check(list, qmgr_admin_request_spec,
                        SLUICE_ARRAY_LEN(qmgr_admin_request_spec), why) < 0)
        return -1;
    req->request = attr_get_str(list, QMGR_ADMIN_ATTR_REQUEST);
    req->queue_id = attr_get_str(list, QMGR_ADMIN_ATTR_QUEUE_ID);
    if (!qmgr_admin_request_valid(req->request)) {
        vstr_sprintf(why, "unknown request \"%s\"", req->request);
        return -1;
    }
    if (!qid_valid(req->queue_id)) {
        vstr_sprintf(why, "\"%s\" is not a queue ID", req->queue_id);
        return -1;
    }
    return 0;
}

/* qmgr_admin_request_list - the REQUEST list of req */
ATTR_LIST *qmgr_admin_request_list(const QMGR_ADMIN_REQUEST *req)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, QMGR_ADMIN_ATTR_REQUEST, req->request);
    attr_add_str(list, QMGR_ADMIN_ATTR_QUEUE_ID, req->queue_id);
    return list;
}

/* qmgr_admin_reply_take - a REPLY list; the reason borrowed from list */
int qmgr_admin_reply_take(const ATTR_LIST *list, QMGR_ADMIN_REPLY *reply,
                          VSTR *why)
{
    long long status = -1;
    const char *reason;

    memset(reply, 0, sizeof(*reply));
    if (attr_list_check(list, qmgr_admin_reply_spec,
                        SLUICE_ARRAY_LEN(qmgr_admin_reply_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, QMGR_ADMIN_ATTR_STATUS, &status);
    if (status != QMGR_ADMIN_STAT_OK && status != QMGR_ADMIN_STAT_NOTHERE &&
        status != QMGR_ADMIN_STAT_FAIL) {
        vstr_sprintf(why, "unknown status %lld", status);
        return -1;
    }
    reply->status = (int) status;
    reason = attr_get_str(list, QMGR_ADMIN_ATTR_REASON);
    reply->reason = reason && *reason ? reason : NULL;
    return 0;
}

/* qmgr_admin_reply_list - the REPLY list of reply */
ATTR_LIST *qmgr_admin_reply_list(const QMGR_ADMIN_REPLY *reply)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_int(list, QMGR_ADMIN_ATTR_STATUS, reply->status);
    if (reply->reason != NULL && *reply->reason)
        attr_add_str(list, QMGR_ADMIN_ATTR_REASON, reply->reason);
    return list;
}
