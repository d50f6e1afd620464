/*
 * deliver_proto - the codec of the qmgr <-> delivery agent protocol
 *
 * Every list of global/deliver_proto.h is read and written here and
 * nowhere else: qmgr builds DELIVER and RCPT with deliver_req_list() and
 * deliver_rcpt_list() and takes RESULT and DONE; the agents take DELIVER
 * and RCPT and build RESULT and DONE. Readers are strict: the list must be
 * the request expected, pass its table, and carry sane values (a queue
 * that holds queue files, a well-formed queue ID, a recipient count in
 * range, a known action), so no agent puts a name from the wire into a
 * path unchecked.
 */
#include "sys_defs.h"

#include <arpa/inet.h>

#include "attr.h"
#include "deliver_proto.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "proto_hello.h"
#include "qid.h"
#include "vstr.h"

/* deliver_check - the list is request `want` and passes spec */
static int deliver_check(const ATTR_LIST *list, const char *want,
                         const ATTR_SPEC *spec, size_t spec_count, VSTR *why)
{
    const char *request = attr_get_str(list, DELIVER_ATTR_REQUEST);

    if (request != NULL && strcmp(request, want) != 0) {
        vstr_sprintf(why, "expected %s, got \"%s\"", want, request);
        return -1;
    }
    return attr_list_check(list, spec, spec_count, why);
}

/* deliver_action_valid - one of the DELIVER_ACTION_* words? */
bool deliver_action_valid(const char *action)
{
    return action != NULL && (strcmp(action, DELIVER_ACTION_SENT) == 0 ||
                              strcmp(action, DELIVER_ACTION_DEFERRED) == 0 ||
                              strcmp(action, DELIVER_ACTION_BOUNCED) == 0);
}

/* deliver_hello_take - the peer's HELLO */
int deliver_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, DELIVER_PROTO_NAME, DELIVER_PROTO_VERSION,
                            deliver_hello_spec,
                            SLUICE_ARRAY_LEN(deliver_hello_spec), why);
}

/* deliver_hello_list - our HELLO */
ATTR_LIST *deliver_hello_list(void)
{
    return proto_hello_list(DELIVER_PROTO_NAME, DELIVER_PROTO_VERSION);
}

/* deliver_req_take - a DELIVER list into a new request */
DELIVER_REQ *deliver_req_take(const ATTR_LIST *list, VSTR *why)
{
    const char *queue_name, *queue_id;
    long long want = 0, active_usec = 0, conn_messages = 0, conn_max = 0;
    const char *conn_group, *source_address, *source_helo;
    unsigned char source_bin[sizeof(struct in6_addr)];
    DELIVER_REQ *req;

    if (deliver_check(list, DELIVER_REQ_DELIVER, deliver_request_spec,
                      SLUICE_ARRAY_LEN(deliver_request_spec), why) < 0)
        return NULL;
    queue_name = attr_get_str(list, DELIVER_ATTR_QUEUE_NAME);
    queue_id = attr_get_str(list, DELIVER_ATTR_QUEUE_ID);
    (void) attr_get_int(list, DELIVER_ATTR_ACTIVE_USEC, &active_usec);
    (void) attr_get_int(list, DELIVER_ATTR_RCPT_COUNT, &want);
    (void) attr_get_int(list, DELIVER_ATTR_CONN_MESSAGES, &conn_messages);
    (void) attr_get_int(list, DELIVER_ATTR_CONN_MAX, &conn_max);
    conn_group = attr_get_str(list, DELIVER_ATTR_CONN_GROUP);
    source_address = attr_get_str(list, DELIVER_ATTR_SOURCE_ADDRESS);
    source_helo = attr_get_str(list, DELIVER_ATTR_SOURCE_HELO);
    if (source_address != NULL && *source_address &&
        inet_pton(AF_INET, source_address, source_bin) != 1 &&
        inet_pton(AF_INET6, source_address, source_bin) != 1) {
        vstr_sprintf(why, "bad source_address \"%s\"", source_address);
        return NULL;
    }
    if (source_helo != NULL && strpbrk(source_helo, " \t\r\n") != NULL) {
        vstr_cpy(why, "bad source_helo (white space)");
        return NULL;
    }
    if (!mail_queue_of_messages(queue_name)) {
        vstr_sprintf(why, "bad queue_name \"%s\"", queue_name);
        return NULL;
    }
    if (!qid_valid(queue_id)) {
        vstr_sprintf(why, "bad queue_id \"%s\"", queue_id);
        return NULL;
    }
    if (want < 1 || want > DELIVER_RCPT_MAX) {
        vstr_sprintf(why, "bad rcpt_count %lld (1..%d)", want,
                     DELIVER_RCPT_MAX);
        return NULL;
    }
    if (conn_messages < 0) {
        vstr_sprintf(why, "bad conn_messages %lld", conn_messages);
        return NULL;
    }
    if (conn_max < 0 ||
        (conn_max > 0 && (conn_group == NULL || !*conn_group))) {
        vstr_sprintf(why, "bad conn_max %lld (needs conn_group)", conn_max);
        return NULL;
    }
    req = mycalloc(1, sizeof(*req));
    req->queue_name = mystrdup(queue_name);
    req->queue_id = mystrdup(queue_id);
    req->nexthop = mystrdup(attr_get_str(list, DELIVER_ATTR_NEXTHOP));
    req->sender = mystrdup(attr_get_str(list, DELIVER_ATTR_SENDER));
    req->active_usec = active_usec;
    req->rcpt_want = (size_t) want;
    req->conn_messages = conn_messages;
    req->conn_group = conn_group && *conn_group ? mystrdup(conn_group) : NULL;
    req->conn_max = conn_max;
    req->source_address =
        source_address && *source_address ? mystrdup(source_address) : NULL;
    req->source_helo =
        source_helo && *source_helo ? mystrdup(source_helo) : NULL;
    req->rcpts = mycalloc(req->rcpt_want, sizeof(DELIVER_RCPT));
    return req;
}

/* deliver_rcpt_take - one RCPT list into req's next recipient */
int deliver_rcpt_take(DELIVER_REQ *req, const ATTR_LIST *list, VSTR *why)
{
    DELIVER_RCPT *rcpt;
    const char *value;

    if (req->rcpt_count >= req->rcpt_want) {
        vstr_cpy(why, "more RCPT lists than rcpt_count");
        return -1;
    }
    if (deliver_check(list, DELIVER_REQ_RCPT, deliver_rcpt_spec,
                      SLUICE_ARRAY_LEN(deliver_rcpt_spec), why) < 0)
        return -1;
    rcpt = req->rcpts + req->rcpt_count;
    (void) attr_get_int(list, DELIVER_ATTR_OFFSET, &rcpt->offset);
    if (rcpt->offset < 0) {
        vstr_sprintf(why, "bad offset %lld", rcpt->offset);
        return -1;
    }
    rcpt->address = mystrdup(attr_get_str(list, DELIVER_ATTR_ADDRESS));
    value = attr_get_str(list, DELIVER_ATTR_ORCPT);
    rcpt->orcpt = mystrdup(value ? value : "");
    value = attr_get_str(list, DELIVER_ATTR_NOTIFY);
    rcpt->notify = mystrdup(value ? value : "");
    req->rcpt_count++;
    return 0;
}

/* deliver_req_complete - has every announced RCPT come? */
bool deliver_req_complete(const DELIVER_REQ *req)
{
    return req->rcpt_count == req->rcpt_want;
}

/* deliver_req_free - release a request; NULL */
DELIVER_REQ *deliver_req_free(DELIVER_REQ *req)
{
    if (req == NULL)
        return NULL;
    for (size_t i = 0; i < req->rcpt_count; i++) {
        myfree(req->rcpts[i].address);
        myfree(req->rcpts[i].orcpt);
        myfree(req->rcpts[i].notify);
    }
    myfree(req->rcpts);
    myfree(req->queue_name);
    myfree(req->queue_id);
    myfree(req->nexthop);
    if (req->conn_group)
        myfree(req->conn_group);
    myfree(req->source_address);
    myfree(req->source_helo);
    myfree(req->sender);
    myfree(req);
    return NULL;
}

/* deliver_req_list - the DELIVER list of req */
ATTR_LIST *deliver_req_list(const DELIVER_REQ *req)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_DELIVER);
    attr_add_str(list, DELIVER_ATTR_QUEUE_NAME, req->queue_name);
    attr_add_str(list, DELIVER_ATTR_QUEUE_ID, req->queue_id);
    attr_add_str(list, DELIVER_ATTR_NEXTHOP, req->nexthop);
    attr_add_str(list, DELIVER_ATTR_SENDER, req->sender);
    attr_add_int(list, DELIVER_ATTR_ACTIVE_USEC, req->active_usec);
    attr_add_int(list, DELIVER_ATTR_RCPT_COUNT, (long long) req->rcpt_want);
    if (req->conn_messages > 0)
        attr_add_int(list, DELIVER_ATTR_CONN_MESSAGES, req->conn_messages);
    if (req->conn_group != NULL && *req->conn_group && req->conn_max > 0) {
        attr_add_str(list, DELIVER_ATTR_CONN_GROUP, req->conn_group);
        attr_add_int(list, DELIVER_ATTR_CONN_MAX, req->conn_max);
    }
    if (req->source_address != NULL && *req->source_address)
        attr_add_str(list, DELIVER_ATTR_SOURCE_ADDRESS, req->source_address);
    if (req->source_helo != NULL && *req->source_helo)
        attr_add_str(list, DELIVER_ATTR_SOURCE_HELO, req->source_helo);
    return list;
}

/* deliver_rcpt_list - the RCPT list of one recipient */
ATTR_LIST *deliver_rcpt_list(const DELIVER_RCPT *rcpt)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_RCPT);
    attr_add_int(list, DELIVER_ATTR_OFFSET, rcpt->offset);
    attr_add_str(list, DELIVER_ATTR_ADDRESS, rcpt->address);
    if (rcpt->orcpt != NULL && *rcpt->orcpt)
        attr_add_str(list, DELIVER_ATTR_ORCPT, rcpt->orcpt);
    if (rcpt->notify != NULL && *rcpt->notify)
        attr_add_str(list, DELIVER_ATTR_NOTIFY, rcpt->notify);
    return list;
}

/* deliver_tls_level_valid - one of tls_status_word's words? */
static bool deliver_tls_level_valid(const char *level)
{
    static const char *const words[] = {"Verified", "Trusted", "Untrusted",
                                        "Anonymous"};

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(words); i++)
        if (strcmp(level, words[i]) == 0)
            return true;
    return false;
}

/* deliver_result_take - a RESULT list; strings borrowed from list */
int deliver_result_take(const ATTR_LIST *list, DELIVER_RESULT *result,
                        VSTR *why)
{
    memset(result, 0, sizeof(*result));
    if (deliver_check(list, DELIVER_REQ_RESULT, deliver_result_spec,
                      SLUICE_ARRAY_LEN(deliver_result_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, DELIVER_ATTR_OFFSET, &result->offset);
    result->action = attr_get_str(list, DELIVER_ATTR_ACTION);
    if (!deliver_action_valid(result->action)) {
        vstr_sprintf(why, "unknown action \"%s\"", result->action);
        return -1;
    }
    result->dsn = attr_get_str(list, DELIVER_ATTR_DSN);
    result->reason = attr_get_str(list, DELIVER_ATTR_REASON);
    result->relay = attr_get_str(list, DELIVER_ATTR_RELAY);
    result->diagnostic = attr_get_str(list, DELIVER_ATTR_DIAGNOSTIC);
    result->remote_mta = attr_get_str(list, DELIVER_ATTR_REMOTE_MTA);
    result->source = attr_get_str(list, DELIVER_ATTR_SOURCE);
    result->category = attr_get_str(list, DELIVER_ATTR_CATEGORY);
    if (result->category != NULL) {
        long long hard = 0;

        (void) attr_get_int(list, DELIVER_ATTR_HARD, &hard);
        result->hard = hard != 0;
    }
    result->tls_version = attr_get_str(list, DELIVER_ATTR_TLS_VERSION);
    result->tls_cipher = attr_get_str(list, DELIVER_ATTR_TLS_CIPHER);
    result->tls_level = attr_get_str(list, DELIVER_ATTR_TLS_LEVEL);
    if (result->tls_version != NULL &&
        (result->tls_cipher == NULL || result->tls_level == NULL ||
         !deliver_tls_level_valid(result->tls_level))) {
        vstr_sprintf(why, "tls_version without a cipher and a known level");
        return -1;
    }
    if (result->tls_version == NULL)
        result->tls_cipher = result->tls_level = NULL;
    result->attempt_usec = result->conn_usec = -1;
    if ((attr_get_int(list, DELIVER_ATTR_ATTEMPT_USEC, &result->attempt_usec) &&
         result->attempt_usec < 0) ||
        (attr_get_int(list, DELIVER_ATTR_CONN_USEC, &result->conn_usec) &&
         result->conn_usec < 0)) {
        vstr_sprintf(why, "negative attempt_usec or conn_usec");
        return -1;
    }
    return 0;
}

/* deliver_result_list - the RESULT list of result */
ATTR_LIST *deliver_result_list(const DELIVER_RESULT *result)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_RESULT);
    attr_add_int(list, DELIVER_ATTR_OFFSET, result->offset);
    attr_add_str(list, DELIVER_ATTR_ACTION, result->action);
    attr_add_str(list, DELIVER_ATTR_DSN, result->dsn);
    attr_add_str(list, DELIVER_ATTR_REASON, result->reason);
    attr_add_str(list, DELIVER_ATTR_RELAY,
                 result->relay ? result->relay : "none");
    if (result->diagnostic)
        attr_add_str(list, DELIVER_ATTR_DIAGNOSTIC, result->diagnostic);
    if (result->remote_mta)
        attr_add_str(list, DELIVER_ATTR_REMOTE_MTA, result->remote_mta);
    if (result->source)
        attr_add_str(list, DELIVER_ATTR_SOURCE, result->source);
    if (result->category) {
        attr_add_str(list, DELIVER_ATTR_CATEGORY, result->category);
        attr_add_int(list, DELIVER_ATTR_HARD, result->hard ? 1 : 0);
    }
    if (result->tls_version && result->tls_cipher && result->tls_level) {
        attr_add_str(list, DELIVER_ATTR_TLS_VERSION, result->tls_version);
        attr_add_str(list, DELIVER_ATTR_TLS_CIPHER, result->tls_cipher);
        attr_add_str(list, DELIVER_ATTR_TLS_LEVEL, result->tls_level);
    }
    if (result->attempt_usec > 0)
        attr_add_int(list, DELIVER_ATTR_ATTEMPT_USEC, result->attempt_usec);
    if (result->conn_usec > 0)
        attr_add_int(list, DELIVER_ATTR_CONN_USEC, result->conn_usec);
    return list;
}

/* deliver_done_take - a DONE list; the reason borrowed from list */
int deliver_done_take(const ATTR_LIST *list, DELIVER_DONE *done, VSTR *why)
{
    long long status = 0, site_failed = 0, source_failed = 0;
    const char *reason;

    memset(done, 0, sizeof(*done));
    if (deliver_check(list, DELIVER_REQ_DONE, deliver_done_spec,
                      SLUICE_ARRAY_LEN(deliver_done_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, DELIVER_ATTR_STATUS, &status);
    (void) attr_get_int(list, DELIVER_ATTR_SITE_FAILED, &site_failed);
    done->status = status != 0;
    done->site_failed = site_failed != 0;
    (void) attr_get_int(list, DELIVER_ATTR_SOURCE_FAILED, &source_failed);
    done->source_failed = source_failed != 0;
    reason = attr_get_str(list, DELIVER_ATTR_REASON);
    done->reason = reason && *reason ? reason : NULL;
    return 0;
}

/* deliver_done_list - the DONE list of done */
ATTR_LIST *deliver_done_list(const DELIVER_DONE *done)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_DONE);
    attr_add_int(list, DELIVER_ATTR_STATUS, done->status);
    attr_add_int(list, DELIVER_ATTR_SITE_FAILED, done->site_failed ? 1 : 0);
    if (done->reason != NULL && *done->reason)
        attr_add_str(list, DELIVER_ATTR_REASON, done->reason);
    if (done->source_failed)
        attr_add_int(list, DELIVER_ATTR_SOURCE_FAILED, 1);
    return list;
}
