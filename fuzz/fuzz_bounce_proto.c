/*
 * fuzz_bounce_proto - the bounce protocol codec (global/bounce_proto.h)
 *
 * The input is a stream of lists as qmgr (or something pretending to be
 * it) would send bounce: HELLO, then NOTIFY; each list also goes through
 * the STATUS reader, as qmgr reads bounce's reply. Bounce acts on a
 * NOTIFY only after a HELLO of its own version; a NOTIFY the reader
 * accepts must name a known kind, a queue of messages and a valid queue
 * ID, and must come back unchanged through bounce_req_list; so must an
 * accepted STATUS through bounce_status_list.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "attr.h"
#include "bounce_proto.h"
#include "fuzz_common.h"
#include "mail_queue.h"
#include "qid.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_same_str - both NULL, or equal */
static bool fuzz_same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* fuzz_request - a NOTIFY as bounce takes it */
static void fuzz_request(const ATTR_LIST *list, VSTR *why)
{
    BOUNCE_REQ req, again;
    ATTR_LIST *back;

    if (bounce_req_take(list, &req, why) < 0)
        return;
    if (!bounce_kind_valid(req.kind) || !qid_valid(req.queue_id) ||
        !mail_queue_of_messages(req.queue_name))
        abort();
    back = bounce_req_list(&req);
    if (bounce_req_take(back, &again, why) < 0 ||
        strcmp(again.kind, req.kind) != 0 ||
        strcmp(again.queue_name, req.queue_name) != 0 ||
        strcmp(again.queue_id, req.queue_id) != 0)
        abort();
    attr_list_free(back);
}

/* fuzz_status - a STATUS as qmgr takes it */
static void fuzz_status(const ATTR_LIST *list, VSTR *why)
{
    BOUNCE_STATUS status, again;
    ATTR_LIST *back;

    if (bounce_status_take(list, &status, why) < 0)
        return;
    if (status.dsn_queue_id != NULL && !qid_valid(status.dsn_queue_id))
        abort();
    back = bounce_status_list(&status);
    if (bounce_status_take(back, &again, why) < 0 ||
        again.status != status.status ||
        !fuzz_same_str(again.reason, status.reason) ||
        !fuzz_same_str(again.dsn_queue_id, status.dsn_queue_id))
        abort();
    attr_list_free(back);
}

/* fuzz_hello - a HELLO as either side takes it: accepted only when it
   names this protocol and version, else refused as a mismatch */
static bool fuzz_hello(const ATTR_LIST *list, VSTR *why)
{
    const char *protocol = attr_get_str(list, BOUNCE_ATTR_PROTOCOL);
    long long version = 0;
    bool ours = protocol != NULL && strcmp(protocol, BOUNCE_PROTO_NAME) == 0 &&
                attr_get_int(list, BOUNCE_ATTR_VERSION, &version) &&
                version == BOUNCE_PROTO_VERSION;
    int ret = bounce_hello_take(list, why);

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

    fuzz_init("fuzz_bounce_proto");
    while (size > 0) {
        ATTR_LIST *list = NULL;
        size_t used = 0;
        bool stop = false;

        if (attr_list_decode(buf, size, BOUNCE_LIST_MAX, &used, &list, why) <=
            0)
            break;
        buf += used;
        size -= used;
        fuzz_status(list, why);
        if (!greeted) {
            /* as bounce_serve: no request before a good HELLO */
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
