/*
 * deliver_agent - the agent side of the delivery protocol
 *
 * One request reader for every delivery agent (smtp, local): qmgr's HELLO
 * (the protocol and its version must be ours), the DELIVER list and its
 * RCPT lists go through the strict codec (deliver_proto.h)
 * into a DELIVER_REQ, whether the agent reads lists one by one off an event
 * loop (deliver_agent_feed) or blocks on a stream (deliver_agent_read).
 * The agent's own HELLO goes out first, on accept, so that qmgr too can
 * tell a mismatch; RESULT and DONE go back through the same codec.
 */
#ifndef DELIVER_AGENT_H
#define DELIVER_AGENT_H

#include "attr.h"
#include "deliver_proto.h"
#include "vstr.h"

/* Where a request being read stands; zero it to start. */
typedef struct DELIVER_READER {
    bool greeted; /* qmgr's HELLO passed */
    DELIVER_REQ *req; /* DELIVER taken: RCPTs follow */
} DELIVER_READER;

/* deliver_agent_feed - one list from qmgr: 1 when reader->req is
   complete, 0 when more lists are due, -1 with the reason in why (the
   list is not the one due, is malformed, or qmgr speaks another protocol
   version) */
extern int deliver_agent_feed(DELIVER_READER *reader, const ATTR_LIST *list,
                              VSTR *why);
/* deliver_agent_reader_free - release what a reader holds */
extern void deliver_agent_reader_free(DELIVER_READER *reader);
/* deliver_agent_read - a whole request off a blocking stream; NULL with
   the reason in why (and *qid_seen, when not NULL, the queue ID of a
   DELIVER already taken, for the log, or NULL; the caller frees it) */
extern DELIVER_REQ *deliver_agent_read(ATTR_STREAM *stream, VSTR *why,
                                       char **qid_seen);
/* deliver_agent_hello_wire - the wire form of our HELLO, appended to out */
extern void deliver_agent_hello_wire(VSTR *out);
/* deliver_agent_hello_reuse_wire - the same, with reuse=1: this agent
   reads another DELIVER on the connection after DONE (no new HELLO) */
extern void deliver_agent_hello_reuse_wire(VSTR *out);
/* deliver_agent_result_wire - the wire form of a RESULT, appended to out */
extern void deliver_agent_result_wire(const DELIVER_RESULT *result, VSTR *out);
/* deliver_agent_done_wire - the wire form of a DONE, appended to out */
extern void deliver_agent_done_wire(const DELIVER_DONE *done, VSTR *out);

#endif
