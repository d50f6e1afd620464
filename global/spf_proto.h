/*
 * spf_proto - the protocol between smtpd and the spf service
 *
 * libspf2 has unfixed CVEs (research notes, section 6.3), so SPF is never
 * evaluated in smtpd's memory: the spf daemon (spf/spf.c) runs it, as
 * mail_owner under master, on queue_directory/private/spf (SPF_SERVICE).
 * One check per connection. Attribute lists (global/attr.h), in order:
 *
 *   spf -> smtpd    HELLO    (global/proto_hello.h: protocol=spf
 *                            version=SPF_PROTO_VERSION), on accept
 *   smtpd -> spf    HELLO    smtpd's, before its REQUEST (it need not wait)
 *   smtpd -> spf    REQUEST  (spf_request_spec): client_address,
 *                            helo_name, sender ("" for <>), helo_check
 *                            (1: check the HELO identity too, RFC 7208
 *                            2.3: smtpd_spf_helo_check)
 *   spf -> smtpd    REPLY    (spf_reply_spec): status=ok with result (of
 *                            MAIL FROM, postmaster@HELO for <>),
 *                            explanation (fail only), received_spf
 *                            (the Received-SPF: value, RFC 7208 9.1) and
 *                            helo_result (of the HELO identity: result
 *                            again for <>, none when not asked or the
 *                            HELO name is no domain); or status=fail
 *                            with reason (the check could not be made:
 *                            smtpd answers 451 4.3.0)
 *
 * Both sides are strict: a missing or unknown attribute, a result that is
 * not one of RFC 7208's seven, or text with a control character or a byte
 * outside printable ASCII is an error (the daemon makes its text so with
 * spf_proto_clean before sending; smtpd puts it in a header and a reply,
 * where a CR LF would inject one). A reply that does not come within the
 * client's time limit is an error too, never a pass.
 */
#ifndef SPF_PROTO_H
#define SPF_PROTO_H

#include "sys_defs.h"

#include "attr.h"
#include "vstr.h"

#define SPF_SERVICE "spf" /* private/spf */
#define SPF_REQUEST_MAX 4096 /* largest request the daemon reads */
#define SPF_REPLY_MAX 4096 /* largest reply smtpd reads */
#define SPF_TEXT_MAX 900 /* longest explanation or received_spf */
#define SPF_REQUEST_TIMEOUT 10 /* s the daemon waits for the request */
#define SPF_DATA_TIMEOUT                                                       \
    330 /* s it waits for a DKIM list (smtpd_timeout
                                is at most 300 s between client reads) */

#define SPF_PROTO_NAME "spf" /* HELLO protocol= */
#define SPF_PROTO_VERSION                                                      \
    3 /* HELLO version=: bump on any change (2: DKIM
                               requests, global/dkim_proto.h; 3: the HELO
                               identity, helo_check and helo_result) */

#define SPF_REQ_CHECK "check"
#define SPF_STAT_OK "ok"
#define SPF_STAT_FAIL "fail"

/* The results of RFC 7208 section 2.6, as Authentication-Results names
   them (RFC 8601 2.7.2). */
typedef enum SPF_PROTO_RESULT {
    SPF_PROTO_NONE,
    SPF_PROTO_NEUTRAL,
    SPF_PROTO_PASS,
    SPF_PROTO_FAIL,
    SPF_PROTO_SOFTFAIL,
    SPF_PROTO_TEMPERROR,
    SPF_PROTO_PERMERROR,
} SPF_PROTO_RESULT;

extern const ATTR_SPEC spf_request_spec[];
extern const size_t spf_request_spec_count;
extern const ATTR_SPEC spf_reply_spec[];
extern const size_t spf_reply_spec_count;

typedef struct SPF_REQUEST {
    const char *client_address; /* numeric IPv4 or IPv6 */
    const char *helo_name; /* "" when the client sent none */
    const char *sender; /* "" for the null sender */
    bool helo_check; /* check the HELO identity too */
} SPF_REQUEST;

typedef struct SPF_REPLY {
    bool ok; /* false: the check could not be made (reason) */
    SPF_PROTO_RESULT result;
    const char *explanation; /* "" unless fail */
    const char *received_spf; /* the Received-SPF: value */
    SPF_PROTO_RESULT helo_result; /* of the HELO identity; none: none,
                                     or not checked */
    const char *reason; /* !ok: why */
} SPF_REPLY;

/* spf_proto_result_name - "pass", "fail" ...; spf_proto_result_code -
   the result of a name, or -1 */
extern const char *spf_proto_result_name(SPF_PROTO_RESULT result);
extern int spf_proto_result_code(const char *name);

/* spf_proto_clean - text as it may travel: each byte outside printable
   ASCII (CR, LF, TAB included) becomes '?', at most SPF_TEXT_MAX bytes
   (cut at the last space before the limit when there is one) */
extern void spf_proto_clean(const char *text, VSTR *out);

/* spf_hello_take - the peer's HELLO: 0, or -1 with a reason naming both
   versions; spf_hello_list - ours (caller frees) */
extern int spf_hello_take(const ATTR_LIST *list, VSTR *why);
extern ATTR_LIST *spf_hello_list(void);

/* spf_request_encode - a REQUEST as an attribute list (caller frees) */
extern ATTR_LIST *spf_request_encode(const SPF_REQUEST *req);
/* spf_request_decode - 0 with req pointing into list, or -1 with why */
extern int spf_request_decode(const ATTR_LIST *list, SPF_REQUEST *req,
                              VSTR *why);
/* spf_reply_encode - a REPLY as an attribute list (caller frees) */
extern ATTR_LIST *spf_reply_encode(const SPF_REPLY *reply);
/* spf_reply_decode - 0 with reply pointing into list, or -1 with why */
extern int spf_reply_decode(const ATTR_LIST *list, SPF_REPLY *reply, VSTR *why);

/* spf_proto_check - ask the spf service at queue_dir/private/spf, waiting
   at most timeout_ms for each step; 0 with result, explanation and
   received_spf set (the VSTRs are overwritten), or -1 with the reason in
   why (no service, a timeout, a malformed reply, or the daemon could not
   check) */
extern int spf_proto_check(const char *queue_dir, int timeout_ms,
                           const SPF_REQUEST *req, SPF_PROTO_RESULT *result,
                           VSTR *explanation, VSTR *received_spf, VSTR *why);

/*
 * The same question in an event loop, for smtpd (whose other sessions go
 * on meanwhile): spf_proto_ask connects, sends both lists and returns;
 * done is called once, from the loop, with the reply (status ok: its
 * strings valid during the call) or NULL and the reason (no service, a
 * timeout after timeout_sec, a malformed reply, or the daemon could not
 * check: the same reasons spf_proto_check gives). The handle is gone when
 * done returns; before that spf_proto_ask_cancel drops it without a call.
 * NULL with why when the service cannot even be reached (done is then
 * never called).
 */
struct event_base;
typedef struct SPF_PROTO_ASK SPF_PROTO_ASK;
typedef void (*SPF_PROTO_DONE)(const SPF_REPLY *reply, const char *why,
                               void *arg);

extern SPF_PROTO_ASK *spf_proto_ask(struct event_base *base,
                                    const char *queue_dir, int timeout_sec,
                                    const SPF_REQUEST *req, SPF_PROTO_DONE done,
                                    void *arg, VSTR *why);
/* spf_proto_ask_cancel - forget a question (no call of done); NULL */
extern SPF_PROTO_ASK *spf_proto_ask_cancel(SPF_PROTO_ASK *ask);

#endif
