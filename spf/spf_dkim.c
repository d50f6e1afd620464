/*
 * spf_dkim - DKIM verification (libopendkim) in the authentication checker
 *
 * One message per connection (global/dkim_proto.h): its chunks go to
 * libopendkim as they come (dkim_chunk, LF line ends fixed to CR LF by
 * the library), and the result of each signature goes back at the end.
 * Keys are fetched through the daemon's libunbound context (dns_servers),
 * by libopendkim's key lookup hook: a lookup that does not finish within
 * dkim_lookup_timeout of the message's first one, or fails (SERVFAIL, a
 * libunbound error), makes that signature's result temperror, never a
 * pass. (The hook says NOTFOUND to the library and remembers the name:
 * TRYAGAIN would make libopendkim drop every signature of the message.)
 */
#include "sys_defs.h"

#include <poll.h>
#include <strings.h>
#include <time.h>

#include <opendkim/dkim.h>
#include <unbound.h>

#include "attr.h"
#include "dkim_proto.h"
#include "msg.h"
#include "mymalloc.h"
#include "psl.h"
#include "spf.h"
#include "vstr.h"

#define SPF_DKIM_TXT 16
#define SPF_DKIM_IN 1
#define SPF_DKIM_HEAD_MAX (256 * 1024) /* header bytes kept for DMARC */

struct SPF_DKIM {
    DKIM_LIB *lib;
    struct ub_ctx *ub; /* the daemon's; NULL: DNS is off */
    int timeout; /* dkim_lookup_timeout, seconds */
    const PSL *psl; /* DMARC's organizational domains; NULL: none */
    /* The message in hand. */
    bool started; /* deadline set (at the first key lookup) */
    struct timespec deadline;
    VSTR *failure; /* the first lookup that failed, for the log */
    VSTR *failed; /* " name name ... ": every lookup that failed */
};

typedef struct SPF_DKIM_QUERY {
    bool done;
    int err;
    struct ub_result *result;
} SPF_DKIM_QUERY;

/* spf_dkim_answer - libunbound's answer */
static void spf_dkim_answer(void *arg, int err, struct ub_result *result)
{
    SPF_DKIM_QUERY *query = arg;

    query->done = true;
    query->err = err;
    query->result = result;
}

/* spf_dkim_left_ms - what is left of the message's DNS budget */
static int spf_dkim_left_ms(const SPF_DKIM *dk)
{
    struct timespec now;
    long long left;

    clock_gettime(CLOCK_MONOTONIC, &now);
    left = (long long) (dk->deadline.tv_sec - now.tv_sec) * 1000 +
           (dk->deadline.tv_nsec - now.tv_nsec) / 1000000;
    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int) left;
}

/* spf_dkim_fail - a lookup failed: remembered (spf_dkim_result makes the
   signature temperror), NOTFOUND to the library */
static DKIM_CBSTAT spf_dkim_fail(SPF_DKIM *dk, const char *name,
                                 const char *why)
{
    if (vstr_len(dk->failure) == 0)
        vstr_sprintf(dk->failure, "%s: %s", name, why);
    vstr_sprintf_append(dk->failed, "%s ", name);
    return DKIM_CBSTAT_NOTFOUND;
}

/* spf_dkim_lookup_failed - did the key lookup of sig fail (not: find
   nothing)? */
static bool spf_dkim_lookup_failed(const SPF_DKIM *dk, DKIM_SIGINFO *sig)
{
    const char *domain = (const char *) dkim_sig_getdomain(sig);
    const char *selector = (const char *) dkim_sig_getselector(sig);
    VSTR *name;
    bool failed;

    if (domain == NULL || selector == NULL)
        return false;
    name = vstr_alloc(100);
    vstr_sprintf(name, " %s._domainkey.%s ", selector, domain);
    failed = strstr(vstr_str(dk->failed), vstr_str(name)) != NULL;
    vstr_free(name);
    return failed;
}

/* spf_dkim_query - one TXT query through libunbound within the
   message's DNS budget: 0 with *result (an answer, NXDOMAIN or no data),
   or -1 (failed or timed out: remembered for the log and in failed) */
static int spf_dkim_query(SPF_DKIM *dk, const char *name,
                          struct ub_result **result)
{
    SPF_DKIM_QUERY query = {0};
    int async_id = 0;
    int err;

    *result = NULL;
    if (!dk->started) {
        dk->started = true;
        clock_gettime(CLOCK_MONOTONIC, &dk->deadline);
        dk->deadline.tv_sec += dk->timeout;
    }
    if ((err = ub_resolve_async(dk->ub, name, SPF_DKIM_TXT, SPF_DKIM_IN, &query,
                                spf_dkim_answer, &async_id)) != 0) {
        (void) spf_dkim_fail(dk, name, ub_strerror(err));
        return -1;
    }
    while (!query.done) {
        struct pollfd pfd = {.fd = ub_fd(dk->ub), .events = POLLIN};
        int left = spf_dkim_left_ms(dk);

        if (left == 0) {
            (void) ub_cancel(dk->ub, async_id);
            (void) spf_dkim_fail(dk, name, "timed out (dkim_lookup_timeout)");
            return -1;
        }
        if (poll(&pfd, 1, left) < 0 && errno != EINTR)
            msg_fatal("poll: %m");
        if ((err = ub_process(dk->ub)) != 0) {
            (void) ub_cancel(dk->ub, async_id);
            (void) spf_dkim_fail(dk, name, ub_strerror(err));
            return -1;
        }
    }
    if (query.err != 0) {
        (void) spf_dkim_fail(dk, name, ub_strerror(query.err));
        return -1;
    }
    if (query.result->rcode != 0 && !query.result->nxdomain) {
        (void) spf_dkim_fail(
            dk, name, query.result->rcode == 2 ? "SERVFAIL" : "server error");
        ub_resolve_free(query.result);
        return -1;
    }
    *result = query.result;
    return 0;
}

/* spf_dkim_txt - the TXT record of name that starts with prefix (case
   insensitive; "" for the first one) into out: 1, 0 for none, -1 when
   the lookup failed or its answer is malformed */
int spf_dkim_txt(SPF_DKIM *dk, const char *name, const char *prefix, VSTR *out)
{
    struct ub_result *result;
    int ret = 0;

    if (dk->ub == NULL)
        return -1;
    if (spf_dkim_query(dk, name, &result) < 0)
        return -1;
    for (int i = 0; !result->nxdomain && result->havedata &&
                    result->data[i] != NULL && ret == 0;
         i++) {
        if (!spf_rr_txt((const unsigned char *) result->data[i],
                        (size_t) result->len[i], out)) {
            /* A broken answer (a 100 KB record comes cut short) hides
               what the record says: the lookup failed, never "none". */
            (void) spf_dkim_fail(dk, name, "malformed TXT record");
            ret = -1;
            break;
        }
        if (strncasecmp(vstr_str(out), prefix, strlen(prefix)) == 0)
            ret = 1;
    }
    ub_resolve_free(result);
    return ret;
}

/* spf_dkim_key - libopendkim's key lookup: the TXT record of
   selector._domainkey.domain into buf */
static DKIM_CBSTAT spf_dkim_key(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf,
                                size_t buflen)
{
    SPF_DKIM *dk = dkim_get_user_context(dkim);
    const char *domain = (const char *) dkim_sig_getdomain(sig);
    const char *selector = (const char *) dkim_sig_getselector(sig);
    VSTR *name;
    VSTR *text;
    DKIM_CBSTAT ret;

    if (dk == NULL || dk->ub == NULL || domain == NULL || selector == NULL)
        return DKIM_CBSTAT_ERROR;
    name = vstr_alloc(100);
    text = vstr_alloc(256);
    vstr_sprintf(name, "%s._domainkey.%s", selector, domain);
    /* The first record; a key record of several is the key's problem,
       and libopendkim's parser judges what we give it. */
    switch (spf_dkim_txt(dk, vstr_str(name), "", text)) {
    case -1:
        ret = DKIM_CBSTAT_NOTFOUND; /* and remembered: temperror */
        break;
    case 0:
        ret = DKIM_CBSTAT_NOTFOUND;
        break;
    default:
        if (vstr_len(text) >= buflen) {
            ret = DKIM_CBSTAT_ERROR;
        } else {
            memcpy(buf, vstr_str(text), vstr_len(text) + 1);
            ret = DKIM_CBSTAT_CONTINUE;
        }
        break;
    }
    vstr_free(text);
    vstr_free(name);
    return ret;
}

/* spf_dkim_create - the library, set up once; ub may be NULL (DNS off) */
SPF_DKIM *spf_dkim_create(struct ub_ctx *ub, int timeout, const PSL *psl)
{
    SPF_DKIM *dk = mycalloc(1, sizeof(*dk));
    unsigned int flags = 0;

    if ((dk->lib = dkim_init(NULL, NULL)) == NULL)
        msg_fatal("spf: cannot initialize libopendkim");
    if (dkim_options(dk->lib, DKIM_OP_GETOPT, DKIM_OPTS_FLAGS, &flags,
                     sizeof(flags)) != DKIM_STAT_OK)
        msg_fatal("spf: libopendkim: cannot read its flags");
    /* Our content has LF line ends; hashing needs CR LF. */
    flags |= DKIM_LIBFLAGS_FIXCRLF;
    if (dkim_options(dk->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
                     sizeof(flags)) != DKIM_STAT_OK)
        msg_fatal("spf: libopendkim: cannot set its flags");
    if (dkim_set_key_lookup(dk->lib, spf_dkim_key) != DKIM_STAT_OK)
        msg_fatal("spf: libopendkim: cannot set the key lookup");
    dk->ub = ub;
    dk->timeout = timeout;
    dk->psl = psl;
    dk->failure = vstr_alloc(100);
    dk->failed = vstr_alloc(100);
    return dk;
}

/* spf_dkim_psl - the Public Suffix List for DMARC (NULL: none) */
const PSL *spf_dkim_psl(const SPF_DKIM *dk)
{
    return dk->psl;
}

/* spf_dkim_free - NULL */
SPF_DKIM *spf_dkim_free(SPF_DKIM *dk)
{
    if (dk != NULL) {
        dkim_close(dk->lib);
        vstr_free(dk->failure);
        vstr_free(dk->failed);
        myfree(dk);
    }
    return NULL;
}

/* spf_dkim_result - one signature's result (RFC 6376 6.1, RFC 8601) */
static DKIM_PROTO_RESULT spf_dkim_result(const SPF_DKIM *dk, DKIM_SIGINFO *sig)
{
    unsigned int flags = dkim_sig_getflags(sig);
    int error = dkim_sig_geterror(sig);

    if (spf_dkim_lookup_failed(dk, sig))
        return DKIM_PROTO_TEMPERROR;
    if ((flags & DKIM_SIGFLAG_PASSED) != 0 &&
        dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH && error == DKIM_SIGERROR_OK)
        return DKIM_PROTO_PASS;
    switch (error) {
    case DKIM_SIGERROR_KEYFAIL: /* the key could not be fetched */
        return DKIM_PROTO_TEMPERROR;
    case DKIM_SIGERROR_BADSIG:
    case DKIM_SIGERROR_OK: /* processed, not passed: a body hash mismatch */
        return (flags & DKIM_SIGFLAG_PROCESSED) != 0 ? DKIM_PROTO_FAIL
                                                     : DKIM_PROTO_NEUTRAL;
    default: /* malformed signature or key, no key, expired ... */
        return DKIM_PROTO_PERMERROR;
    }
}

/* spf_dkim_token - a d= or s= as the reply may carry it ("" if not) */
static const char *spf_dkim_token(const unsigned char *text)
{
    return text != NULL && dkim_proto_token_ok((const char *) text)
               ? (const char *) text
               : "";
}

/* spf_dkim_head - keep the header section (for DMARC's From:) */
static void spf_dkim_head(VSTR *head, bool *done, const char *data, size_t len)
{
    size_t from = vstr_len(head) > 0 ? vstr_len(head) - 1 : 0;
    const char *end;

    if (*done)
        return;
    vstr_ncat(head, data, len);
    if (vstr_len(head) > 0 && vstr_str(head)[0] == '\n') {
        vstr_truncate(head, 0); /* no header at all */
        *done = true;
    } else if ((end = memmem(vstr_str(head) + from, vstr_len(head) - from,
                             "\n\n", 2)) != NULL) {
        vstr_truncate(head, (size_t) (end - vstr_str(head)) + 1);
        *done = true;
    } else if (vstr_len(head) > SPF_DKIM_HEAD_MAX) {
        *done = true; /* what is there is searched */
    }
}

/* spf_dkim_serve - BEGIN was read: the chunks, END, the reply */
void spf_dkim_serve(SPF_DKIM *dk, ATTR_STREAM *stream,
                    const DKIM_REQUEST *begin)
{
    VSTR *head = vstr_alloc(1024);
    VSTR *from = vstr_alloc(100);
    VSTR *policy = vstr_alloc(20);
    bool head_done = !begin->dmarc;
    VSTR *why = vstr_alloc(100);
    VSTR *reason = vstr_alloc(100);
    ATTR_LIST *list = NULL;
    DKIM_REQUEST req;
    DKIM_REPLY reply = {.ok = true};
    DKIM_SIGINFO **sigs = NULL;
    DKIM_STAT stat = DKIM_STAT_OK;
    DKIM *dkim;
    int nsigs = 0;
    bool broken = false; /* libopendkim refused the content */

    dk->started = false;
    vstr_reset(dk->failure);
    vstr_cpy(dk->failed, " ");
    if ((dkim = dkim_verify(dk->lib, (const unsigned char *) "smtpd", NULL,
                            &stat)) == NULL)
        msg_fatal("spf: libopendkim: dkim_verify: %s", dkim_getresultstr(stat));
    dkim_set_user_context(dkim, dk);
    for (;;) {
        list = attr_list_free(list);
        if (attr_stream_read(stream, &list, why) < 0) {
            msg_warn("dkim request: %s", vstr_str(why));
            goto out;
        }
        if (dkim_request_take(list, &req, why) < 0 ||
            req.kind == DKIM_KIND_BEGIN) {
            msg_warn("bad dkim request: %s", req.kind == DKIM_KIND_BEGIN
                                                 ? "a second begin"
                                                 : vstr_str(why));
            goto out;
        }
        if (req.kind == DKIM_KIND_END)
            break;
        spf_dkim_head(head, &head_done, req.data, req.len);
        if (!broken && req.len > 0 &&
            (stat = dkim_chunk(dkim, (unsigned char *) req.data, req.len)) !=
                DKIM_STAT_OK)
            broken = stat != DKIM_STAT_NOSIG;
    }
    if (!broken)
        stat = dkim_chunk(dkim, NULL, 0);
    if (!broken || stat == DKIM_STAT_NOSIG)
        stat = dkim_eom(dkim, NULL);
    if (dkim_getsiglist(dkim, &sigs, &nsigs) != DKIM_STAT_OK)
        nsigs = 0;
    for (int i = 0; i < nsigs && reply.count < DKIM_SIG_MAX; i++) {
        DKIM_SIG_RESULT *out = reply.sigs + reply.count++;

        out->result = spf_dkim_result(dk, sigs[i]);
        out->domain = spf_dkim_token(dkim_sig_getdomain(sigs[i]));
        out->selector = spf_dkim_token(dkim_sig_getselector(sigs[i]));
        msg_info("dkim: d=%s s=%s result=%s%s%s%s",
                 *out->domain ? out->domain : "(none)",
                 *out->selector ? out->selector : "(none)",
                 dkim_proto_result_name(out->result),
                 dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_OK ? " (" : "",
                 dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_OK
                     ? dkim_sig_geterrorstr(dkim_sig_geterror(sigs[i]))
                     : "",
                 dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_OK ? ")" : "");
    }
    if (nsigs == 0 &&
        (stat == DKIM_STAT_SYNTAX || (broken && stat != DKIM_STAT_NOSIG))) {
        /* libopendkim gives no signature it cannot parse: a signature
           header that is not one is permerror (RFC 6376 6.1.1), without
           the d= and s= we cannot trust. */
        reply.sigs[0] = (DKIM_SIG_RESULT){DKIM_PROTO_PERMERROR, "", ""};
        reply.count = 1;
        msg_info("dkim: malformed signature: result=permerror (%s)",
                 dkim_getresultstr(stat));
    } else if (nsigs == 0) {
        msg_info("dkim: no signature");
    }
    if (vstr_len(dk->failure) > 0)
        msg_info("dkim: DNS lookup failed: %s", vstr_str(dk->failure));
    if (begin->dmarc)
        spf_dmarc_eval(dk, begin, vstr_str(head), vstr_len(head), &reply, from,
                       policy);
    list = attr_list_free(list);
    list = dkim_reply_list(&reply);
    if (attr_stream_write(stream, list, why) < 0)
        msg_warn("dkim reply: %s", vstr_str(why));

out:
    attr_list_free(list);
    dkim_free(dkim);
    vstr_free(head);
    vstr_free(from);
    vstr_free(policy);
    vstr_free(why);
    vstr_free(reason);
}
