/*
 * deliver_agent - the agent side of the delivery protocol
 *
 * See deliver_agent.h. Both agents read requests here, so what one accepts
 * the other accepts, and a request that names a queue file outside the
 * queue is refused by both before any name reaches a path.
 */
#include "sys_defs.h"

#include "attr.h"
#include "deliver_agent.h"
#include "deliver_proto.h"
#include "mymalloc.h"
#include "vstr.h"

/* deliver_agent_feed - one list from qmgr */
int deliver_agent_feed(DELIVER_READER *reader, const ATTR_LIST *list, VSTR *why)
{
    if (!reader->greeted) {
        if (deliver_hello_take(list, why) < 0)
            return -1;
        reader->greeted = true;
        return 0;
    }
    if (reader->req == NULL) {
        if ((reader->req = deliver_req_take(list, why)) == NULL)
            return -1;
        return 0;
    }
    if (deliver_req_complete(reader->req)) {
        vstr_cpy(why, "unexpected list after the request");
        return -1;
    }
    if (deliver_rcpt_take(reader->req, list, why) < 0)
        return -1;
    return deliver_req_complete(reader->req) ? 1 : 0;
}

/* deliver_agent_reader_free - release what a reader holds */
void deliver_agent_reader_free(DELIVER_READER *reader)
{
    reader->req = deliver_req_free(reader->req);
    reader->greeted = false;
}

/* deliver_agent_read - a whole request off a blocking stream */
DELIVER_REQ *deliver_agent_read(ATTR_STREAM *stream, VSTR *why, char **qid_seen)
{
    DELIVER_READER reader = {.greeted = false, .req = NULL};
    ATTR_LIST *list = NULL;
    int ret;

    if (qid_seen)
        *qid_seen = NULL;
    do {
        if (attr_stream_read(stream, &list, why) < 0) {
            ret = -1;
            break;
        }
        ret = deliver_agent_feed(&reader, list, why);
        list = attr_list_free(list);
    } while (ret == 0);
    if (ret < 0) {
        if (reader.req != NULL && qid_seen)
            *qid_seen = mystrdup(reader.req->queue_id);
        deliver_agent_reader_free(&reader);
        return NULL;
    }
    return reader.req;
}

/* deliver_agent_hello_wire - the wire form of our HELLO */
void deliver_agent_hello_wire(VSTR *out)
{
    ATTR_LIST *list = deliver_hello_list();

    attr_list_encode(list, out);
    attr_list_free(list);
}

/* deliver_agent_hello_reuse_wire - our HELLO, saying that we read another
   request on the connection after DONE */
void deliver_agent_hello_reuse_wire(VSTR *out)
{
    ATTR_LIST *list = deliver_hello_list();

    attr_add_int(list, DELIVER_ATTR_REUSE, 1);
    attr_list_encode(list, out);
    attr_list_free(list);
}

/* deliver_agent_result_wire - the wire form of a RESULT */
void deliver_agent_result_wire(const DELIVER_RESULT *result, VSTR *out)
{
    ATTR_LIST *list = deliver_result_list(result);

    attr_list_encode(list, out);
    attr_list_free(list);
}

/* deliver_agent_done_wire - the wire form of a DONE */
void deliver_agent_done_wire(const DELIVER_DONE *done, VSTR *out)
{
    ATTR_LIST *list = deliver_done_list(done);

    attr_list_encode(list, out);
    attr_list_free(list);
}
