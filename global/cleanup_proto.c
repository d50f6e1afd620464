/*
 * cleanup_proto - the codec of the message source <-> cleanup protocol
 *
 * Every list of global/cleanup_proto.h is read and written here and
 * nowhere else: smtpd and cleanup_client build HELLO, BEGIN, RCPT, DATA
 * and END with the *_list functions and take HELLO and STATUS; cleanup
 * takes the requests and builds HELLO and STATUS. Readers are strict: the
 * list must be the request expected, pass its table, and carry sane values
 * (a DATA chunk within CLEANUP_CHUNK_MAX, a status of 0 or an SMTP reply
 * code, a well-formed queue ID), so a client never puts a name from the
 * wire into a log line or a reply unchecked.
 */
#include "sys_defs.h"

#include "attr.h"
#include "cleanup_proto.h"
#include "proto_hello.h"
#include "qid.h"
#include "vstr.h"

/* cleanup_check - the list is request `want` and passes spec */
static int cleanup_check(const ATTR_LIST *list, const char *want,
                         const ATTR_SPEC *spec, size_t spec_count, VSTR *why)
{
    const char *request = attr_get_str(list, CLEANUP_ATTR_REQUEST);

    if (request != NULL && strcmp(request, want) != 0) {
        vstr_sprintf(why, "expected %s, got \"%s\"", want, request);
        return -1;
    }
    return attr_list_check(list, spec, spec_count, why);
}

/* cleanup_add_opt - an optional string, left out when NULL or empty */
static void cleanup_add_opt(ATTR_LIST *list, const char *name,
                            const char *value)
{
    if (value != NULL && *value != 0)
        attr_add_str(list, name, value);
}

/* cleanup_hello_take - the peer's HELLO */
int cleanup_hello_take(const ATTR_LIST *list, VSTR *why)
{
    return proto_hello_take(list, CLEANUP_PROTO_NAME, CLEANUP_PROTO_VERSION,
                            cleanup_hello_spec,
                            SLUICE_ARRAY_LEN(cleanup_hello_spec), why);
}

/* cleanup_hello_list - our HELLO */
ATTR_LIST *cleanup_hello_list(void)
{
    return proto_hello_list(CLEANUP_PROTO_NAME, CLEANUP_PROTO_VERSION);
}

/* cleanup_list_request - the request= of a list, NULL when none */
const char *cleanup_list_request(const ATTR_LIST *list)
{
    return attr_get_str(list, CLEANUP_ATTR_REQUEST);
}

/* cleanup_begin_take - a BEGIN list; strings borrowed from list */
int cleanup_begin_take(const ATTR_LIST *list, CLEANUP_BEGIN *begin, VSTR *why)
{
    memset(begin, 0, sizeof(*begin));
    begin->size = -1;
    if (cleanup_check(list, CLEANUP_REQ_BEGIN, cleanup_begin_spec,
                      SLUICE_ARRAY_LEN(cleanup_begin_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, CLEANUP_ATTR_FLAGS, &begin->flags);
    begin->sender = attr_get_str(list, CLEANUP_ATTR_SENDER);
    begin->origin = attr_get_str(list, CLEANUP_ATTR_ORIGIN);
    begin->client_name = attr_get_str(list, CLEANUP_ATTR_CLIENT_NAME);
    begin->client_addr = attr_get_str(list, CLEANUP_ATTR_CLIENT_ADDR);
    begin->helo_name = attr_get_str(list, CLEANUP_ATTR_HELO_NAME);
    begin->protocol = attr_get_str(list, CLEANUP_ATTR_PROTOCOL);
    if (!attr_get_int(list, CLEANUP_ATTR_SIZE, &begin->size))
        begin->size = -1;
    begin->ret = attr_get_str(list, CLEANUP_ATTR_RET);
    begin->envid = attr_get_str(list, CLEANUP_ATTR_ENVID);
    begin->sasl_username = attr_get_str(list, CLEANUP_ATTR_SASL_USERNAME);
    begin->full_name = attr_get_str(list, CLEANUP_ATTR_FULL_NAME);
    begin->tenant = attr_get_str(list, CLEANUP_ATTR_TENANT);
    begin->tags = attr_get_str(list, CLEANUP_ATTR_TAGS);
    begin->metadata = attr_get_str(list, CLEANUP_ATTR_METADATA);
    if (!attr_get_int(list, CLEANUP_ATTR_NOT_BEFORE, &begin->not_before))
        begin->not_before = 0;
    return 0;
}

/* cleanup_begin_list - the BEGIN list of begin */
ATTR_LIST *cleanup_begin_list(const CLEANUP_BEGIN *begin)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_BEGIN);
    attr_add_int(list, CLEANUP_ATTR_FLAGS, begin->flags);
    attr_add_str(list, CLEANUP_ATTR_SENDER, begin->sender ? begin->sender : "");
    attr_add_str(list, CLEANUP_ATTR_ORIGIN, begin->origin ? begin->origin : "");
    cleanup_add_opt(list, CLEANUP_ATTR_CLIENT_NAME, begin->client_name);
    cleanup_add_opt(list, CLEANUP_ATTR_CLIENT_ADDR, begin->client_addr);
    cleanup_add_opt(list, CLEANUP_ATTR_HELO_NAME, begin->helo_name);
    cleanup_add_opt(list, CLEANUP_ATTR_PROTOCOL, begin->protocol);
    if (begin->size >= 0)
        attr_add_int(list, CLEANUP_ATTR_SIZE, begin->size);
    cleanup_add_opt(list, CLEANUP_ATTR_RET, begin->ret);
    cleanup_add_opt(list, CLEANUP_ATTR_ENVID, begin->envid);
    cleanup_add_opt(list, CLEANUP_ATTR_SASL_USERNAME, begin->sasl_username);
    cleanup_add_opt(list, CLEANUP_ATTR_FULL_NAME, begin->full_name);
    cleanup_add_opt(list, CLEANUP_ATTR_TENANT, begin->tenant);
    cleanup_add_opt(list, CLEANUP_ATTR_TAGS, begin->tags);
    cleanup_add_opt(list, CLEANUP_ATTR_METADATA, begin->metadata);
    if (begin->not_before > 0)
        attr_add_int(list, CLEANUP_ATTR_NOT_BEFORE, begin->not_before);
    return list;
}

/* cleanup_rcpt_take - a RCPT list; strings borrowed from list */
int cleanup_rcpt_take(const ATTR_LIST *list, CLEANUP_RCPT *rcpt, VSTR *why)
{
    memset(rcpt, 0, sizeof(*rcpt));
    if (cleanup_check(list, CLEANUP_REQ_RCPT, cleanup_rcpt_spec,
                      SLUICE_ARRAY_LEN(cleanup_rcpt_spec), why) < 0)
        return -1;
    rcpt->address = attr_get_str(list, CLEANUP_ATTR_ADDRESS);
    rcpt->orcpt = attr_get_str(list, CLEANUP_ATTR_ORCPT);
    rcpt->notify = attr_get_str(list, CLEANUP_ATTR_NOTIFY);
    return 0;
}

/* cleanup_rcpt_list - the RCPT list of one recipient */
ATTR_LIST *cleanup_rcpt_list(const CLEANUP_RCPT *rcpt)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_RCPT);
    attr_add_str(list, CLEANUP_ATTR_ADDRESS, rcpt->address);
    cleanup_add_opt(list, CLEANUP_ATTR_ORCPT, rcpt->orcpt);
    cleanup_add_opt(list, CLEANUP_ATTR_NOTIFY, rcpt->notify);
    return list;
}

/* cleanup_data_take - a DATA chunk; the bytes borrowed from list */
int cleanup_data_take(const ATTR_LIST *list, const char **data, size_t *len,
                      VSTR *why)
{
    *data = NULL;
    *len = 0;
    if (cleanup_check(list, CLEANUP_REQ_DATA, cleanup_data_spec,
                      SLUICE_ARRAY_LEN(cleanup_data_spec), why) < 0)
        return -1;
    *data = attr_get_data(list, CLEANUP_ATTR_DATA, len);
    if (*len > CLEANUP_CHUNK_MAX) {
        vstr_sprintf(why, "data chunk of %zu bytes", *len);
        *data = NULL;
        *len = 0;
        return -1;
    }
    return 0;
}

/* cleanup_data_list - the DATA list of one chunk */
ATTR_LIST *cleanup_data_list(const char *data, size_t len)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_DATA);
    attr_add_data(list, CLEANUP_ATTR_DATA, data, len);
    return list;
}

/* cleanup_end_take - an END list */
int cleanup_end_take(const ATTR_LIST *list, CLEANUP_END *end, VSTR *why)
{
    long long abort_flag = 0;

    memset(end, 0, sizeof(*end));
    if (cleanup_check(list, CLEANUP_REQ_END, cleanup_end_spec,
                      SLUICE_ARRAY_LEN(cleanup_end_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, CLEANUP_ATTR_ABORT, &abort_flag);
    end->abort = abort_flag != 0;
    if ((end->prepend = attr_get_str(list, CLEANUP_ATTR_PREPEND)) != NULL) {
        const char *cp = end->prepend;
        size_t len = strlen(cp);

        /* Whole header lines: a field name first, no bare CR, no NUL. */
        if (len == 0 || len > CLEANUP_PREPEND_MAX || cp[len - 1] != '\n' ||
            *cp == ' ' || *cp == '\t' || *cp == '\n' ||
            strchr(cp, ':') == NULL) {
            vstr_sprintf(why, "bad prepend text");
            return -1;
        }
        for (; *cp; cp++) {
            if ((unsigned char) *cp >= 0x7f ||
                ((unsigned char) *cp < 0x20 && *cp != '\t' && *cp != '\n')) {
                vstr_sprintf(why, "bad prepend text");
                return -1;
            }
        }
    }
    if ((end->hold = attr_get_str(list, CLEANUP_ATTR_HOLD)) != NULL) {
        size_t len = strlen(end->hold);

        if (len > CLEANUP_HOLD_MAX) {
            vstr_sprintf(why, "bad hold reason");
            return -1;
        }
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char) end->hold[i] < 0x20 ||
                (unsigned char) end->hold[i] >= 0x7f) {
                vstr_sprintf(why, "bad hold reason");
                return -1;
            }
        }
    }
    return 0;
}

/* cleanup_end_list - the END list: commit, or abort */
ATTR_LIST *cleanup_end_list(const CLEANUP_END *end)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_END);
    attr_add_int(list, CLEANUP_ATTR_ABORT, end->abort ? 1 : 0);
    if (end->prepend != NULL)
        attr_add_str(list, CLEANUP_ATTR_PREPEND, end->prepend);
    if (end->hold != NULL)
        attr_add_str(list, CLEANUP_ATTR_HOLD, end->hold);
    return list;
}

/* cleanup_status_take - a STATUS list; strings borrowed from list */
int cleanup_status_take(const ATTR_LIST *list, CLEANUP_STATUS *status,
                        VSTR *why)
{
    long long code = -1;

    memset(status, 0, sizeof(*status));
    if (attr_get_str(list, CLEANUP_ATTR_REQUEST) != NULL) {
        vstr_sprintf(why, "expected a status, got \"%s\"",
                     attr_get_str(list, CLEANUP_ATTR_REQUEST));
        return -1;
    }
    if (attr_list_check(list, cleanup_status_spec,
                        SLUICE_ARRAY_LEN(cleanup_status_spec), why) < 0)
        return -1;
    (void) attr_get_int(list, CLEANUP_ATTR_STATUS, &code);
    if (code != 0 && (code < 400 || code > 599)) {
        vstr_sprintf(why, "bad status %lld (0 or 400..599)", code);
        return -1;
    }
    status->status = (int) code;
    status->reason = attr_get_str(list, CLEANUP_ATTR_REASON);
    status->queue_id = attr_get_str(list, CLEANUP_ATTR_QUEUE_ID);
    status->suppressed = attr_get_str(list, CLEANUP_ATTR_SUPPRESSED);
    if (status->queue_id != NULL && !qid_valid(status->queue_id)) {
        vstr_sprintf(why, "bad queue_id \"%s\"", status->queue_id);
        return -1;
    }
    return 0;
}

/* cleanup_status_list - the STATUS list of status */
ATTR_LIST *cleanup_status_list(const CLEANUP_STATUS *status)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_int(list, CLEANUP_ATTR_STATUS, status->status);
    if (status->status != 0)
        cleanup_add_opt(list, CLEANUP_ATTR_REASON, status->reason);
    cleanup_add_opt(list, CLEANUP_ATTR_QUEUE_ID, status->queue_id);
    if (status->status == 0)
        cleanup_add_opt(list, CLEANUP_ATTR_SUPPRESSED, status->suppressed);
    return list;
}
