/*
 * showq_proto - the protocol between mailq (`sluice queue`, sendmail -bp)
 * and the showq service
 *
 * An ordinary user cannot read the queue directories (they are mail_owner's,
 * mode 0700). showq runs as mail_owner under master and listens on
 * queue_directory/public/showq (SHOWQ_SERVICE); public/ is searchable by
 * setgid_group, so mailq (sendmail, installed setgid to that group)
 * connects there with the group and drops it before it reads a byte.
 * Attribute lists (global/attr.h), in order:
 *
 *   showq -> client  HELLO    (global/proto_hello.h: protocol=showq
 *                             version=SHOWQ_PROTO_VERSION), on accept
 *   client -> showq  HELLO    the client's, before its REQUEST (it need
 *                             not wait for showq's)
 *   client -> showq  REQUEST  (showq_request_spec), once
 *   showq -> client  TEXT     (showq_reply_spec: text), any number: the
 *                             listing in pieces of at most SHOWQ_TEXT_MAX
 *                             bytes, to be written out as they come
 *   showq -> client  END      (showq_reply_spec: status, reason when it is
 *                             SHOWQ_STAT_FAIL), then showq closes
 *
 * The listing is global/queue_list.h's, the same text `sluice queue` prints
 * when it reads the queue itself; it holds the envelope only, never message
 * content. A listing without its END was cut short: the client says so and
 * fails. showq drops a connection whose request does not come within
 * SHOWQ_REQUEST_TIMEOUT seconds or is not one (malformed, unknown or
 * missing attributes): a bad request is answered with a failed END.
 */
#ifndef SHOWQ_PROTO_H
#define SHOWQ_PROTO_H

#include "sys_defs.h"

#include <stdio.h>

#include "attr.h"
#include "vstr.h"

#define SHOWQ_SERVICE "showq" /* public/showq */
#define SHOWQ_REQUEST_MAX 4096 /* largest request showq reads */
#define SHOWQ_TEXT_MAX 65536 /* largest text piece showq sends */
#define SHOWQ_REPLY_MAX (SHOWQ_TEXT_MAX + 256) /* largest reply list */
#define SHOWQ_REQUEST_TIMEOUT 10 /* s for the request to arrive */
#define SHOWQ_CLIENT_TIMEOUT 60 /* s the client waits for each piece */

#define SHOWQ_PROTO_NAME "showq" /* HELLO protocol= */
#define SHOWQ_PROTO_VERSION 1 /* HELLO version=: bump on any change */

#define SHOWQ_REQ_LIST "list"
#define SHOWQ_STAT_OK "ok"
#define SHOWQ_STAT_FAIL "fail"

/* REQUEST: what to list (queue_list.h's options). */
extern const ATTR_SPEC showq_request_spec[];
extern const size_t showq_request_spec_count;
/* TEXT and END. */
extern const ATTR_SPEC showq_reply_spec[];
extern const size_t showq_reply_spec_count;

typedef struct SHOWQ_REQUEST {
    bool json;
    bool by_domain;
    const char *sender; /* filters; NULL: any */
    const char *recipient;
    const char *domain;
    const char *reason;
} SHOWQ_REQUEST;

/* showq_hello_take - the peer's HELLO: 0, or -1 with a reason naming
   both versions; showq_hello_list - ours (caller frees) */
extern int showq_hello_take(const ATTR_LIST *list, VSTR *why);
extern ATTR_LIST *showq_hello_list(void);

/* showq_request_encode - a REQUEST as an attribute list (caller frees) */
extern ATTR_LIST *showq_request_encode(const SHOWQ_REQUEST *req);
/* showq_request_decode - 0 with req pointing into list, or -1 with the
   reason in why */
extern int showq_request_decode(const ATTR_LIST *list, SHOWQ_REQUEST *req,
                                VSTR *why);

/* showq_connect - connect to queue_dir/public/showq; the descriptor, or
   -1 with the reason in why (errno kept) */
extern int showq_connect(const char *queue_dir, VSTR *why);
/* showq_list - send req on fd (closed here), write the listing to out as
   it comes; 0 at its END, -1 with the reason in why (what came before is
   written already) */
extern int showq_list(int fd, const SHOWQ_REQUEST *req, FILE *out, VSTR *why);

#endif
