/*
 * spf_dkim - DKIM verification (libopendkim) in the authentication checker
 *
 * One message per connection (global/dkim_proto.h), many connections at
 * once in one process (spf.c): each message is an SPF_DKIM_MSG whose
 * chunks go to libopendkim as they come (dkim_chunk, LF line ends fixed
 * to CR LF by the library; no key is fetched there), and the result of
 * each signature goes back at the end (dkim_eom, where the keys are
 * fetched, synchronously, within the message's budget).
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

struct SPF_DKIM {
    DKIM_LIB *lib;
    struct ub_ctx *ub; /* the daemon's; NULL: DNS is off */
    int timeout; /* dkim_lookup_timeout, seconds */
    const PSL *psl; /* DMARC's organizational domains; NULL: none */
    size_t head_max; /* header bytes kept for DMARC's From: */
};

/* One message being verified: the state of one connection. */
struct SPF_DKIM_MSG {
    SPF_DKIM *dk;
    DKIM *dkim;
    bool broken; /* libopendkim refused the content */
    DKIM_STAT stat; /* of the last chunk */
    /* BEGIN, its strings ours */
    DKIM_REQUEST begin;
    char *client_address;
    char *spf_result;
    char *spf_domain;
    VSTR *head; /* the header section, for DMARC's From: */
    bool head_done;
    /* Its lookups. */
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
static int spf_dkim_left_ms(const SPF_DKIM_MSG *dk)
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
static DKIM_CBSTAT spf_dkim_fail(SPF_DKIM_MSG *dk, const char *name,
                                 const char *why)
{
    if (vstr_len(dk->failure) == 0)
        vstr_sprintf(dk->failure, "%s: %s", name, why);
    vstr_sprintf_append(dk->failed, "%s ", name);
    return DKIM_CBSTAT_NOTFOUND;
}

/* spf_dkim_lookup_failed - did the key lookup of sig fail (not: find
   nothing)? */
static bool spf_dkim_lookup_failed(const SPF_DKIM_MSG *dk, DKIM_SIGINFO *sig)
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
static int spf_dkim_query(SPF_DKIM_MSG *dk, const char *name,
                          struct ub_result **result)
{
    struct ub_ctx *ub = dk->dk->ub;
    SPF_DKIM_QUERY query = {0};
    int async_id = 0;
    int err;

    *result = NULL;
    if (!dk->started) {
        dk->started = true;
        clock_gettime(CLOCK_MONOTONIC, &dk->deadline);
        dk->deadline.tv_sec += dk->dk->timeout;
    }
    if ((err = ub_resolve_async(ub, name, SPF_DKIM_TXT, SPF_DKIM_IN, &query,
                                spf_dkim_answer, &async_id)) != 0) {
        (void) spf_dkim_fail(dk, name, ub_strerror(err));
        return -1;
    }
    while (!query.done) {
        struct pollfd pfd = {.fd = ub_fd(ub), .events = POLLIN};
        int left = spf_dkim_left_ms(dk);

        if (left == 0) {
            (void) ub_cancel(ub, async_id);
            (void) spf_dkim_fail(dk, name, "timed out (dkim_lookup_timeout)");
            return -1;
        }
        if (poll(&pfd, 1, left) < 0 && errno != EINTR)
            msg_fatal("poll: %m");
        if ((err = ub_process(ub)) != 0) {
            (void) ub_cancel(ub, async_id);
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
int spf_dkim_txt(SPF_DKIM_MSG *dk, const char *name, const char *prefix,
                 VSTR *out)
{
    struct ub_result *result;
    int ret = 0;

    if (dk->dk->ub == NULL)
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
    SPF_DKIM_MSG *dk = dkim_get_user_context(dkim);
    const char *domain = (const char *) dkim_sig_getdomain(sig);
    const char *selector = (const char *) dkim_sig_getselector(sig);
    VSTR *name;
    VSTR *text;
    DKIM_CBSTAT ret;

    if (dk == NULL || dk->dk->ub == NULL || domain == NULL || selector == NULL)
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
SPF_DKIM *spf_dkim_create(struct ub_ctx *ub, int timeout, const PSL *psl,
                          size_t head_max)
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
    dk->head_max = head_max;
    return dk;
}

/* spf_dkim_psl - the Public Suffix List for DMARC (NULL: none) */
const PSL *spf_dkim_psl(const SPF_DKIM_MSG *msg)
{
    return msg->dk->psl;
}

/* spf_dkim_free - NULL */
SPF_DKIM *spf_dkim_free(SPF_DKIM *dk)
{
    if (dk != NULL) {
        dkim_close(dk->lib);
        myfree(dk);
    }
    return NULL;
}

/* spf_dkim_result - one signature's result (RFC 6376 6.1, RFC 8601) */
static DKIM_PROTO_RESULT spf_dkim_result(const SPF_DKIM_MSG *dk,
                                         DKIM_SIGINFO *sig)
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

/* spf_dkim_head - keep the header section (for DMARC's From:), its
   first head_max bytes: what is there is searched */
static void spf_dkim_head(SPF_DKIM_MSG *msg, const char *data, size_t len)
{
    VSTR *head = msg->head;
    size_t from = vstr_len(head) > 0 ? vstr_len(head) - 1 : 0;
    size_t room = msg->dk->head_max - vstr_len(head);
    const char *end;

    if (msg->head_done)
        return;
    /* One byte past the window (the end of the section may be there). */
    vstr_ncat(head, data, len <= room ? len : room + 1);
    if (vstr_len(head) > 0 && vstr_str(head)[0] == '\n') {
        vstr_truncate(head, 0); /* no header at all */
        msg->head_done = true;
    } else if ((end = memmem(vstr_str(head) + from, vstr_len(head) - from,
                             "\n\n", 2)) != NULL) {
        vstr_truncate(head, (size_t) (end - vstr_str(head)) + 1);
        msg->head_done = true;
    } else if (vstr_len(head) > msg->dk->head_max) {
        vstr_truncate(head, msg->dk->head_max);
        msg->head_done = true;
    }
}

/* spf_dkim_begin - a message, after its BEGIN (begin's strings are
   copied) */
SPF_DKIM_MSG *spf_dkim_begin(SPF_DKIM *dk, const DKIM_REQUEST *begin)
{
    SPF_DKIM_MSG *msg = mycalloc(1, sizeof(*msg));
    DKIM_STAT stat = DKIM_STAT_OK;

    msg->dk = dk;
    msg->begin = *begin;
    if (begin->dmarc) {
        msg->begin.client_address = msg->client_address =
            mystrdup(begin->client_address);
        msg->begin.spf_result = msg->spf_result = mystrdup(begin->spf_result);
        msg->begin.spf_domain = msg->spf_domain = mystrdup(begin->spf_domain);
    }
    msg->head = vstr_alloc(1024);
    msg->head_done = !begin->dmarc;
    msg->failure = vstr_alloc(100);
    msg->failed = vstr_alloc(100);
    vstr_cpy(msg->failed, " ");
    msg->stat = DKIM_STAT_OK;
    if ((msg->dkim = dkim_verify(dk->lib, (const unsigned char *) "smtpd", NULL,
                                 &stat)) == NULL)
        msg_fatal("spf: libopendkim: dkim_verify: %s", dkim_getresultstr(stat));
    dkim_set_user_context(msg->dkim, msg);
    return msg;
}

/* spf_dkim_data - one chunk of the content: no lookup, no wait */
void spf_dkim_data(SPF_DKIM_MSG *msg, const char *data, size_t len)
{
    spf_dkim_head(msg, data, len);
    if (!msg->broken && len > 0 &&
        (msg->stat = dkim_chunk(msg->dkim, (unsigned char *) data, len)) !=
            DKIM_STAT_OK)
        msg->broken = msg->stat != DKIM_STAT_NOSIG;
}

/* spf_dkim_msg_free - NULL */
SPF_DKIM_MSG *spf_dkim_msg_free(SPF_DKIM_MSG *msg)
{
    if (msg != NULL) {
        dkim_free(msg->dkim);
        myfree(msg->client_address);
        myfree(msg->spf_result);
        myfree(msg->spf_domain);
        vstr_free(msg->head);
        vstr_free(msg->failure);
        vstr_free(msg->failed);
        myfree(msg);
    }
    return NULL;
}

/* spf_dkim_end - END was read: verify (the key lookups: synchronous,
   within the message's budget), evaluate DMARC when BEGIN asked; the
   REPLY (caller frees) */
ATTR_LIST *spf_dkim_end(SPF_DKIM_MSG *msg)
{
    VSTR *from = vstr_alloc(100);
    VSTR *policy = vstr_alloc(20);
    DKIM_REPLY reply = {.ok = true};
    DKIM_SIGINFO **sigs = NULL;
    DKIM_STAT stat = msg->stat;
    DKIM *dkim = msg->dkim;
    const SPF_DKIM_MSG *dk = msg;
    bool broken = msg->broken;
    ATTR_LIST *list;
    int nsigs = 0;

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
    if (msg->begin.dmarc)
        spf_dmarc_eval(msg, &msg->begin, vstr_str(msg->head),
                       vstr_len(msg->head), &reply, from, policy);
    list = dkim_reply_list(&reply);
    vstr_free(from);
    vstr_free(policy);
    return list;
}
