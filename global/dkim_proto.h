/*
 * dkim_proto - DKIM verification requests to the authentication checker
 *
 * libopendkim parses hostile headers and DNS answers, so, like libspf2, it
 * never runs in smtpd's memory: the spf daemon (spf/spf.c, the service
 * private/spf, global/spf_proto.h) verifies DKIM too. smtpd streams the
 * message as the client sent it (LF line ends, dot stuffing undone,
 * nothing of ours added) while it streams it to cleanup, and learns the
 * results at the end of DATA. One message per connection. Attribute
 * lists (global/attr.h), in order:
 *
 *   spf -> smtpd    HELLO   (spf_proto.h's: protocol=spf, version
 *                           SPF_PROTO_VERSION), on accept
 *   smtpd -> spf    HELLO   smtpd's
 *   smtpd -> spf    BEGIN   request=dkim; with dmarc=1 also DMARC (RFC
 *                           7489) for the From: domain, given the SPF
 *                           result and its domain (client_address,
 *                           spf_result, spf_domain)
 *   smtpd -> spf    DATA    request=data data=<bytes> (dkim_data_spec),
 *                           at most DKIM_CHUNK_MAX bytes each, in order
 *   smtpd -> spf    END     request=end (dkim_end_spec)
 *   spf -> smtpd    REPLY   (dkim_reply_spec): status=ok and, per
 *                           signature in the message's order (at most
 *                           DKIM_SIG_MAX), result, domain, selector; no
 *                           signature at all is dkim=none; with dmarc=1
 *                           the DMARC result (dmarc), the From: domain
 *                           (dmarc_from, "" when none is usable) and the
 *                           policy the domain asks for a failure
 *                           (dmarc_policy: none, quarantine, reject; ""
 *                           unless fail). Or status=fail with reason: no
 *                           verification was made.
 *
 * Strict both ways: a missing or unknown attribute, a result that is not
 * one of ours, a domain or selector that is not a DNS token
 * ([A-Za-z0-9._-], "" when the signature had none usable) is an error.
 */
#ifndef DKIM_PROTO_H
#define DKIM_PROTO_H

#include "sys_defs.h"

#include "attr.h"
#include "vstr.h"

#define DKIM_CHUNK_MAX 65536 /* content bytes in one DATA list */
#define DKIM_LIST_MAX (DKIM_CHUNK_MAX + 8192) /* the daemon's list bound */
#define DKIM_REPLY_MAX 8192 /* largest reply smtpd reads */
#define DKIM_SIG_MAX 16 /* signatures reported (more are not checked) */
#define DKIM_TOKEN_MAX 253 /* a domain or selector */

#define DKIM_REQ_BEGIN "dkim"
#define DKIM_REQ_DATA "data"
#define DKIM_REQ_END "end"

/* Results of one signature (RFC 8601 2.7.1; none is "no signature"). */
typedef enum DKIM_PROTO_RESULT {
    DKIM_PROTO_PASS,
    DKIM_PROTO_FAIL, /* the signature or the body hash does not match */
    DKIM_PROTO_NEUTRAL, /* not verified (e.g. over DKIM_SIG_MAX) */
    DKIM_PROTO_TEMPERROR, /* the key could not be fetched (DNS) */
    DKIM_PROTO_PERMERROR, /* a malformed signature or key, no key */
} DKIM_PROTO_RESULT;

extern const ATTR_SPEC dkim_request_spec[];
extern const size_t dkim_request_spec_count;
extern const ATTR_SPEC dkim_reply_spec[];
extern const size_t dkim_reply_spec_count;

typedef enum DKIM_REQ_KIND {
    DKIM_KIND_BEGIN,
    DKIM_KIND_DATA,
    DKIM_KIND_END,
} DKIM_REQ_KIND;

typedef struct DKIM_REQUEST {
    DKIM_REQ_KIND kind;
    const char *data; /* DATA: into the list */
    size_t len;
    /* BEGIN: DMARC too, with these (NULL when !dmarc) */
    bool dmarc;
    const char *client_address;
    const char *spf_result; /* spf_proto_result_name()s, "none" */
    const char *spf_domain; /* the domain SPF checked, "" for none */
} DKIM_REQUEST;

/* DMARC results (RFC 7489 11.2, RFC 8601 2.7.5) */
typedef enum DMARC_PROTO_RESULT {
    DMARC_PROTO_NONE,
    DMARC_PROTO_PASS,
    DMARC_PROTO_FAIL,
    DMARC_PROTO_TEMPERROR,
    DMARC_PROTO_PERMERROR,
} DMARC_PROTO_RESULT;

typedef struct DKIM_SIG_RESULT {
    DKIM_PROTO_RESULT result;
    const char *domain; /* d=, "" when unusable */
    const char *selector; /* s=, "" when unusable */
} DKIM_SIG_RESULT;

typedef struct DKIM_REPLY {
    bool ok; /* false: no verification (reason) */
    const char *reason;
    size_t count; /* 0: no signature (dkim=none) */
    DKIM_SIG_RESULT sigs[DKIM_SIG_MAX];
    bool dmarc; /* the DMARC fields are set */
    DMARC_PROTO_RESULT dmarc_result;
    const char *dmarc_from; /* a token; "" when none */
    const char *dmarc_policy; /* "", none, quarantine, reject */
} DKIM_REPLY;

extern const char *dmarc_proto_result_name(DMARC_PROTO_RESULT result);

/* dkim_proto_result_name - "pass", "fail" ...; dkim_proto_result_code -
   the result of a name, or -1 */
extern const char *dkim_proto_result_name(DKIM_PROTO_RESULT result);
extern int dkim_proto_result_code(const char *name);
/* dkim_proto_token_ok - a domain or selector as the reply may carry it */
extern bool dkim_proto_token_ok(const char *text);

/* The requests: built by smtpd, taken by the daemon (a list whose
   request is dkim, data or end; req points into list). */
extern ATTR_LIST *dkim_begin_list(const DKIM_REQUEST *begin);
extern ATTR_LIST *dkim_data_list(const char *data, size_t len);
extern ATTR_LIST *dkim_end_list(void);
extern int dkim_request_take(const ATTR_LIST *list, DKIM_REQUEST *req,
                             VSTR *why);

/* dkim_reply_list - a REPLY (caller frees); dkim_reply_take - 0 with
   reply pointing into list, or -1 with why */
extern ATTR_LIST *dkim_reply_list(const DKIM_REPLY *reply);
extern int dkim_reply_take(const ATTR_LIST *list, DKIM_REPLY *reply, VSTR *why);

#endif
