/*
 * api_handoff - hand one message to cleanup without blocking the loop
 *
 * The event-driven counterpart of global/cleanup_client.h for the api
 * daemon, as smtpd talks to cleanup: one connection to private/cleanup
 * per message (attr_conn), our HELLO and BEGIN at once, cleanup's HELLO
 * and the STATUS with the queue ID, then the RCPT lists and the content
 * in DATA chunks (a few chunks waiting in the output at most, more as
 * cleanup takes them), then END. The done callback runs exactly once,
 * from the event loop, never from api_handoff_start(): code 0 only with
 * cleanup's final STATUS, which cleanup sends after it has fsynced the
 * queue file and its directory. Any other end (a refusal, EOF, a
 * timeout, a protocol error) closes the connection without END, and
 * cleanup removes its partial file. Meanwhile the loop serves everyone
 * else.
 */
#ifndef API_HANDOFF_H
#define API_HANDOFF_H

#include "sys_defs.h"

#include <event2/event.h>

#include "api_request.h"
#include "vstr.h"

typedef struct API_HANDOFF API_HANDOFF;

typedef struct API_HANDOFF_RESULT {
    int code; /* 0: queued; 400..599: cleanup refused; -1: no answer
                 (connection lost, timeout, a protocol error) */
    const char *queue_id; /* the message's ID (code 0), else "" or the ID
                             cleanup had given it */
    const char *why; /* when code is not 0 */
    const char *suppressed; /* code 0: cleanup's STATUS suppressed= (the
                               recipients dropped as suppressed, JSON
                               text: cleanup_proto.h), else NULL */
    const char *milter; /* a milter decided (api_milter.h): its reply,
                           "5.7.1 text"; NULL: cleanup's verdict */
    bool discarded; /* a milter discarded the message */
    const char *quarantine; /* code 0: a milter quarantined the message
                               into hold/ (the hold reason), else NULL */
} API_HANDOFF_RESULT;

typedef void (*API_HANDOFF_DONE)(const API_HANDOFF_RESULT *result, void *arg);

/* api_handoff_start - connect to cleanup at path and start sending msg
   (which must live until done is called) as mail of tenant (the API
   key's, which cleanup records in the queue file); timeout_sec bounds each wait
   for cleanup. NULL with why when cleanup cannot even be reached (done
   is then never called). */
extern API_HANDOFF *api_handoff_start(struct event_base *base, const char *path,
                                      int timeout_sec, const API_MESSAGE *msg,
                                      const char *tenant, API_HANDOFF_DONE done,
                                      void *arg, VSTR *why);

#endif
