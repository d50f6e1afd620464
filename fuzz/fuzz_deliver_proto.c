/*
 * fuzz_deliver_proto - the delivery protocol codec (global/deliver_proto.h,
 * global/deliver_agent.h)
 *
 * The input is a stream of lists as qmgr (or something pretending to be
 * it) would send an agent: HELLO, DELIVER, RCPTs. Each list goes through
 * the agent's request reader and through the RESULT and DONE readers; a request
 * the reader accepts must hold a valid queue ID and a queue of messages, and
 * must come back unchanged through deliver_req_list/deliver_rcpt_list.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "attr.h"
#include "deliver_agent.h"
#include "deliver_proto.h"
#include "fuzz_common.h"
#include "mail_queue.h"
#include "qid.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_LIST_MAX 4096

/* fuzz_same - a list rebuilt from what the reader took reads the same */
static void fuzz_same(const DELIVER_REQ *req, VSTR *why)
{
    ATTR_LIST *list = deliver_req_list(req);
    DELIVER_REQ *again = deliver_req_take(list, why);

    attr_list_free(list);
    if (again == NULL || strcmp(again->queue_id, req->queue_id) != 0 ||
        strcmp(again->queue_name, req->queue_name) != 0 ||
        strcmp(again->nexthop, req->nexthop) != 0 ||
        strcmp(again->sender, req->sender) != 0 ||
        again->rcpt_want != req->rcpt_want)
        abort();
    for (size_t i = 0; i < req->rcpt_count; i++) {
        list = deliver_rcpt_list(req->rcpts + i);
        if (deliver_rcpt_take(again, list, why) < 0 ||
            strcmp(again->rcpts[i].address, req->rcpts[i].address) != 0 ||
            again->rcpts[i].offset != req->rcpts[i].offset)
            abort();
        attr_list_free(list);
    }
    deliver_req_free(again);
}

/* LLVMFuzzerTestOneInput - a stream of lists */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *) data;
    VSTR *why = vstr_alloc(64);
    DELIVER_READER reader = {.greeted = false, .req = NULL};
    int state = 0;

    fuzz_init("fuzz_deliver_proto");
    while (size > 0) {
        ATTR_LIST *list = NULL;
        DELIVER_RESULT result;
        DELIVER_DONE done;
        size_t used = 0;

        if (attr_list_decode(buf, size, FUZZ_LIST_MAX, &used, &list, why) <= 0)
            break;
        buf += used;
        size -= used;
        if (deliver_result_take(list, &result, why) == 0 &&
            !deliver_action_valid(result.action))
            abort();
        (void) deliver_done_take(list, &done, why);
        if (state == 0) {
            state = deliver_agent_feed(&reader, list, why);
            if (reader.req != NULL &&
                (!reader.greeted || !qid_valid(reader.req->queue_id) ||
                 !mail_queue_of_messages(reader.req->queue_name)))
                abort();
        }
        attr_list_free(list);
    }
    if (state == 1)
        fuzz_same(reader.req, why);
    deliver_agent_reader_free(&reader);
    vstr_free(why);
    return 0;
}
