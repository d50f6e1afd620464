/*
 * fuzz_qmgr_admin_proto - the admin protocol codec
 * (global/qmgr_admin_proto.h)
 *
 * The input is a stream of lists as `sluice hold|delete|requeue` (or
 * something pretending to be it) would send qmgr: HELLO, then REQUESTs;
 * each list also goes through the REPLY reader, as the command reads
 * qmgr's answers. qmgr acts on a REQUEST only after a HELLO of its own
 * version; a REQUEST the reader accepts must name a known request and a
 * valid queue ID, and must come back unchanged through
 * qmgr_admin_request_list; so must an accepted REPLY through
 * qmgr_admin_reply_list.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "attr.h"
#include "fuzz_common.h"
#include "qid.h"
#include "qmgr_admin_proto.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_same_str - both NULL, or equal */
static bool fuzz_same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* fuzz_request - a REQUEST as qmgr takes it */
static void fuzz_request(const ATTR_LIST *list, VSTR *why)
{
    QMGR_ADMIN_REQUEST req, again;
    ATTR_LIST *back;

    if (qmgr_admin_request_take(list, &req, why) < 0)
        return;
    if (!qmgr_admin_request_valid(req.request) || !qid_valid(req.queue_id))
        abort();
    back = qmgr_admin_request_list(&req);
    if (qmgr_admin_request_take(back, &again, why) < 0 ||
        strcmp(again.request, req.request) != 0 ||
        strcmp(again.queue_id, req.queue_id) != 0)
        abort();
    attr_list_free(back);
}

/* fuzz_reply - a REPLY as the command takes it */
static void fuzz_reply(const ATTR_LIST *list, VSTR *why)
{
    QMGR_ADMIN_REPLY reply, again;
    ATTR_LIST *back;

    if (qmgr_admin_reply_take(list, &reply, why) < 0)
        return;
    if (reply.status != QMGR_ADMIN_STAT_OK &&
        reply.status != QMGR_ADMIN_STAT_NOTHERE &&
        reply.status != QMGR_ADMIN_STAT_FAIL)
        abort();
    back = qmgr_admin_reply_list(&reply);
    if (qmgr_admin_reply_take(back, &again, why) < 0 ||
        again.status != reply.status ||
        !fuzz_same_str(again.reason, reply.reason))
        abort();
    attr_list_free(back);
}

/* fuzz_hello - a HELLO as either side takes it: accepted only when it
   names this protocol and version, else refused as a mismatch */
static bool fuzz_hello(const ATTR_LIST *list, VSTR *why)
{
    const char *protocol = attr_get_str(list, QMGR_ADMIN_ATTR_PROTOCOL);
    long long version = 0;
    bool ours = protocol != NULL &&
                strcmp(protocol, QMGR_ADMIN_PROTO_NAME) == 0 &&
                attr_get_int(list, QMGR_ADMIN_ATTR_VERSION, &version) &&
                version == QMGR_ADMIN_PROTO_VERSION;
    int ret = qmgr_admin_hello_take(list, why);

    if (ret == 0 && !ours)
        abort();
    if (ret < 0 && !ours &&
        strncmp(vstr_str(why), "protocol mismatch: ", 19) != 0)
        abort();
    return ret == 0;
}

/* LLVMFuzzerTestOneInput - a stream of lists */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *) data;
    VSTR *why = vstr_alloc(64);
    bool greeted = false;

    fuzz_init("fuzz_qmgr_admin_proto");
    while (size > 0) {
        ATTR_LIST *list = NULL;
        size_t used = 0;
        bool stop = false;

        if (attr_list_decode(buf, size, QMGR_ADMIN_LIST_MAX, &used, &list,
                             why) <= 0)
            break;
        buf += used;
        size -= used;
        fuzz_reply(list, why);
        if (!greeted) {
            /* as qmgr_admin_list: no request before a good HELLO */
            greeted = fuzz_hello(list, why);
            stop = !greeted;
        } else {
            fuzz_request(list, why);
        }
        attr_list_free(list);
        if (stop)
            break;
    }
    vstr_free(why);
    return 0;
}
