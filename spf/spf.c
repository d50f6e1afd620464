/*
 * spf - check SPF (RFC 7208) for smtpd, away from smtpd's memory
 *
 * Serves private/spf (global/spf_proto.h) as mail_owner under master: one
 * check per connection, (client address, HELO name, MAIL FROM) in, the
 * result, the fail explanation and the Received-SPF: value out. libspf2
 * evaluates the record; it runs here, in a process of its own, because
 * libspf2 has unfixed CVEs in Debian (research notes, section 6.3): a
 * record that exploits one reaches an unprivileged process that holds no
 * mail and no client connection.
 *
 * DNS: libspf2's own resolver asks the system's (res_ninit reads
 * /etc/resolv.conf; no API names a server), so this program gives it a DNS
 * layer of its own (an SPF_dns_server_t) that asks libunbound, set up as
 * global/dns.c does: dns_servers are the forwarders (empty: resolv.conf),
 * loopback servers and .test names allowed. Each check has a time budget,
 * spf_lookup_timeout; a lookup that does not finish within what is left of
 * it, or that fails (SERVFAIL, REFUSED, a libunbound error), makes the
 * result temperror, whatever libspf2 concluded without it (RFC 7208 5: a
 * failed or timed-out lookup ends check_host() with temperror). A DNS
 * problem is never a pass.
 *
 * With disable_dns_lookups = yes no check is made: every result is none,
 * and the start says so once in the log.
 *
 * Many clients a process, in the event loop (attr_conn): a DKIM
 * verification holds its connection for as long as smtpd's client takes
 * to send the message, and one process a client let ~maxproc slow DATA
 * senders take every process, so that every other session's SPF, DKIM
 * and DMARC verdict timed out. Reading a request or a chunk never waits.
 * The checks themselves block (libspf2 and libopendkim are synchronous;
 * their lookups are bounded by spf_lookup_timeout and
 * dkim_lookup_timeout): while one runs this process says busy, and
 * master starts a sibling for new clients (up to maxproc). So does
 * spf_process_connections clients at once.
 */
#include "sys_defs.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <netdb.h>
#include <poll.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <unbound.h>

#include "argv.h"
#include "attr.h"
#include "attr_conn.h"
#include "dkim_proto.h"
#include "dns.h"
#include "mail_conf.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "psl.h"
#include "spf.h"
#include "spf_proto.h"
#include "vstr.h"

#define SPF_DNS_CLASS_IN 1
/* The most header bytes kept for DMARC a connection (with
   spf_process_connections clients at once). */
#define SPF_HEAD_CAP (16 * 1024 * 1024)

/* The DNS layer's state, reached from libspf2's callbacks through the
   SPF_dns_server_t hook. */
typedef struct SPF_DNS {
    struct ub_ctx *ub;
    struct timespec deadline; /* of the check in progress */
    bool failed; /* a lookup of this check failed or timed out */
    VSTR *failure; /* the first such lookup, for the log */
    VSTR *oversize; /* "": no SPF record over SPF_RECORD_MAX; else its
                       domain */
} SPF_DNS;

typedef struct SPF_CTX {
    SPF_server_t *spf; /* NULL: disable_dns_lookups */
    SPF_dns_server_t *layer;
    SPF_DNS dns;
    int timeout; /* spf_lookup_timeout, seconds */
    char *myhostname; /* names us in Received-SPF: comments */
    SPF_DKIM *dkim; /* DKIM verification (spf_dkim.c) */
    PSL *psl; /* dmarc_public_suffix_list; NULL: none */
    char *psl_file; /* its file, when read; else NULL */
    MAIL_SERVER *server;
    int conn_count; /* clients connected */
    int busy_connections; /* spf_process_connections; 0: never busy */
} SPF_CTX;

/* One client (smtpd) connection. */
typedef enum SPF_CONN_STATE {
    SPF_CONN_HELLO, /* its HELLO is next */
    SPF_CONN_REQUEST, /* an SPF request or a DKIM BEGIN */
    SPF_CONN_DKIM, /* DKIM DATA or END */
    SPF_CONN_DONE, /* the reply goes out, then the connection */
} SPF_CONN_STATE;

typedef struct SPF_CONN {
    SPF_CTX *ctx;
    ATTR_CONN *client;
    SPF_CONN_STATE state;
    SPF_DKIM_MSG *msg; /* SPF_CONN_DKIM: the message */
    VSTR *why;
} SPF_CONN;

/* One lookup in flight. */
typedef struct SPF_DNS_QUERY {
    bool done;
    int err;
    struct ub_result *result;
} SPF_DNS_QUERY;

/* spf_log_* - libspf2's messages, into ours (its defaults print to stdout
   and abort on an error) */
static SLUICE_NORETURN void spf_log_error(const char *file, int line,
                                          const char *text)
{
    msg_fatal("libspf2: %s:%d: %s", file ? file : "?", line, text);
}

static void spf_log_warning(const char *file, int line, const char *text)
{
    msg_warn("libspf2: %s", text);
}

static void spf_log_info(const char *file, int line, const char *text)
{
    msg_info("libspf2: %s", text);
}

/* spf_dns_answer - libunbound's answer to one query */
static void spf_dns_answer(void *arg, int err, struct ub_result *result)
{
    SPF_DNS_QUERY *query = arg;

    query->done = true;
    query->err = err;
    query->result = result;
}

/* spf_dns_left_ms - milliseconds left of the check's budget (0: none) */
static int spf_dns_left_ms(const SPF_DNS *dns)
{
    struct timespec now;
    long long left;

    clock_gettime(CLOCK_MONOTONIC, &now);
    left = (long long) (dns->deadline.tv_sec - now.tv_sec) * 1000 +
           (dns->deadline.tv_nsec - now.tv_nsec) / 1000000;
    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int) left;
}

/* spf_dns_fail - a temporary failure: remembered, and TRY_AGAIN */
static SPF_dns_rr_t *spf_dns_fail(SPF_dns_server_t *layer, SPF_DNS *dns,
                                  const char *domain, ns_type type,
                                  const char *why)
{
    if (!dns->failed)
        vstr_sprintf(dns->failure, "%s type %d: %s", domain, (int) type, why);
    dns->failed = true;
    return SPF_dns_rr_new_init(layer, domain, type, 0, TRY_AGAIN);
}

/* spf_dns_lookup - libspf2's lookup: one query through libunbound,
   bounded by what is left of the check's budget */
static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *layer, const char *domain,
                                    ns_type type, int should_cache)
{
    SPF_DNS *dns = layer->hook;
    SPF_DNS_QUERY query = {0};
    SPF_dns_rr_t *rr;
    struct ub_result *result;
    VSTR *text;
    int async_id = 0;
    int err;
    int left;

    if (dns->failed)
        return spf_dns_fail(layer, dns, domain, type,
                            "an earlier lookup "
                            "failed");
    if ((err = ub_resolve_async(dns->ub, domain, (int) type, SPF_DNS_CLASS_IN,
                                &query, spf_dns_answer, &async_id)) != 0)
        return spf_dns_fail(layer, dns, domain, type, ub_strerror(err));
    while (!query.done) {
        struct pollfd pfd = {.fd = ub_fd(dns->ub), .events = POLLIN};

        if ((left = spf_dns_left_ms(dns)) == 0) {
            (void) ub_cancel(dns->ub, async_id);
            return spf_dns_fail(layer, dns, domain, type,
                                "timed out (spf_lookup_timeout)");
        }
        if (poll(&pfd, 1, left) < 0 && errno != EINTR)
            msg_fatal("poll: %m");
        if ((err = ub_process(dns->ub)) != 0) {
            (void) ub_cancel(dns->ub, async_id);
            return spf_dns_fail(layer, dns, domain, type, ub_strerror(err));
        }
    }
    if (query.err != 0)
        return spf_dns_fail(layer, dns, domain, type, ub_strerror(query.err));
    result = query.result;
    if (result->rcode != 0 && !result->nxdomain) {
        rr = spf_dns_fail(layer, dns, domain, type,
                          result->rcode == 2 ? "SERVFAIL" : "server error");
        ub_resolve_free(result);
        return rr;
    }
    if (result->nxdomain) {
        ub_resolve_free(result);
        return SPF_dns_rr_new_init(layer, domain, type, 0, HOST_NOT_FOUND);
    }
    if (!result->havedata) {
        ub_resolve_free(result);
        return SPF_dns_rr_new_init(layer, domain, type, 0, NO_DATA);
    }
    rr = SPF_dns_rr_new_init(layer, domain, type, result->ttl, NETDB_SUCCESS);
    text = vstr_alloc(256);
    for (int i = 0; result->data[i] != NULL; i++) {
        if (!spf_rr_fill(rr, rr->num_rr, type,
                         (const unsigned char *) result->data[i],
                         (size_t) result->len[i], text, dns->oversize)) {
            msg_warn("spf: malformed DNS record for %s type %d", domain,
                     (int) type);
            vstr_free(text);
            ub_resolve_free(result);
            SPF_dns_rr_free(rr);
            return spf_dns_fail(layer, dns, domain, type, "malformed record");
        }
        rr->num_rr++;
    }
    vstr_free(text);
    ub_resolve_free(result);
    if (rr->num_rr == 0)
        rr->herrno = NO_DATA;
    return rr;
}

/* spf_dns_setup - libunbound as global/dns.c sets it up; false with why */
static bool spf_dns_setup(SPF_CTX *ctx, const MAIL_CONF *conf, VSTR *why)
{
    ARGV *servers = mail_conf_list(conf, "dns_servers");
    VSTR *fwd = vstr_alloc(64);
    bool ok = false;
    int err;

    if ((ctx->dns.ub = ub_ctx_create()) == NULL) {
        vstr_cpy(why, "cannot create a libunbound context");
        goto out;
    }
    /* Loopback resolvers and .test names, as in global/dns.c; the answers
       are not DNSSEC-validated (no trust anchor). */
    if ((err = ub_ctx_set_option(ctx->dns.ub,
                                 "do-not-query-localhost:", "no")) != 0 ||
        (err = ub_ctx_set_option(ctx->dns.ub,
                                 "local-zone:", "test. transparent")) != 0 ||
        (err = ub_ctx_set_option(ctx->dns.ub, "local-zone:",
                                 "127.in-addr.arpa. transparent")) != 0 ||
        (err = ub_ctx_set_option(ctx->dns.ub, "unblock-lan-zones:", "yes")) !=
            0 ||
        (err = ub_ctx_set_option(ctx->dns.ub, "insecure-lan-zones:", "yes")) !=
            0 ||
        (err = ub_ctx_set_option(ctx->dns.ub, "edns-buffer-size:", "65535")) !=
            0) {
        vstr_sprintf(why, "libunbound options: %s", ub_strerror(err));
        goto out;
    }
    for (size_t i = 0; i < servers->argc; i++) {
        if (dns_server_parse(servers->argv[i], fwd, why) < 0)
            goto out;
        if ((err = ub_ctx_set_fwd(ctx->dns.ub, vstr_str(fwd))) != 0) {
            vstr_sprintf(why, "dns_servers: %s: %s", servers->argv[i],
                         ub_strerror(err));
            goto out;
        }
    }
    if (servers->argc == 0 &&
        (err = ub_ctx_resolvconf(ctx->dns.ub, NULL)) != 0) {
        vstr_sprintf(why, "cannot read /etc/resolv.conf: %s", ub_strerror(err));
        goto out;
    }
    /* A thread, not a process: nothing is forked behind master's back. */
    if ((err = ub_ctx_async(ctx->dns.ub, 1)) != 0) {
        vstr_sprintf(why, "libunbound async mode: %s", ub_strerror(err));
        goto out;
    }
    ok = true;

out:
    argv_free(servers);
    vstr_free(fwd);
    return ok;
}

/* spf_result_of - libspf2's result as the protocol's */
static SPF_PROTO_RESULT spf_result_of(SPF_result_t result)
{
    switch (result) {
    case SPF_RESULT_PASS:
        return SPF_PROTO_PASS;
    case SPF_RESULT_FAIL:
        return SPF_PROTO_FAIL;
    case SPF_RESULT_SOFTFAIL:
        return SPF_PROTO_SOFTFAIL;
    case SPF_RESULT_NEUTRAL:
        return SPF_PROTO_NEUTRAL;
    case SPF_RESULT_NONE:
        return SPF_PROTO_NONE;
    case SPF_RESULT_TEMPERROR:
        return SPF_PROTO_TEMPERROR;
    default: /* PERMERROR, INVALID */
        return SPF_PROTO_PERMERROR;
    }
}

/* spf_identity - the identity checked: the sender, or postmaster@HELO for
   the null sender (RFC 7208 2.4) */
static void spf_identity(const SPF_REQUEST *req, VSTR *out)
{
    if (*req->sender != 0)
        vstr_cpy(out, req->sender);
    else
        vstr_sprintf(out, "postmaster@%s", req->helo_name);
}

/* spf_query_mailfrom - check_host() for MAIL FROM (its domain set with
   SPF_request_set_env_from). SPF_request_query_mailfrom() would answer
   pass for any client in 127.0.0.0/8 or ::1 without a look at the record
   ("localhost is always allowed"); sluice evaluates the record whatever
   the address: a loopback client is exempted by the restriction lists
   (permit_mynetworks before reject_spf_fail), not by a fake pass, and the
   headers say what the record says. The steps are libspf2's public ones:
   fetch the record, interpret it, or end with the fetch's result. */
static SPF_errcode_t spf_query_mailfrom(SPF_request_t *req,
                                        SPF_response_t **respp)
{
    SPF_response_t *resp;
    SPF_record_t *record = NULL;
    SPF_errcode_t err;

    if ((*respp = resp = SPF_response_new(req)) == NULL)
        msg_fatal("out of memory");
    req->use_helo = 0;
    req->cur_dom = req->env_from_dp;
    err = SPF_server_get_record(req->spf_server, req, resp, &record);
    if (err != SPF_E_SUCCESS) {
        if (record != NULL)
            SPF_record_free(record);
        /* A record that does not compile leaves no result: permerror
           (RFC 7208 4.6). */
        if (resp->result == SPF_RESULT_INVALID)
            return SPF_i_done(resp, SPF_RESULT_PERMERROR, SPF_REASON_FAILURE,
                              err);
        return SPF_i_done(resp, resp->result, resp->reason, resp->err);
    }
    resp->spf_record_exp = record;
    err = SPF_record_interpret(record, req, resp, 0);
    resp->spf_record_exp = NULL;
    SPF_record_free(record);
    return err;
}

/* spf_eval - check_host() for one identity, who (the sender, or
   postmaster@HELO), within the deadline set in ctx: its result, the
   Received-SPF: value in received and the fail explanation in
   explanation; -1 when client_address is no IP address */
static int spf_eval(SPF_CTX *ctx, const SPF_REQUEST *req, const char *who,
                    VSTR *explanation, VSTR *received)
{
    SPF_request_t *spf_req;
    SPF_response_t *resp = NULL;
    struct in_addr in4;
    struct in6_addr in6;
    SPF_errcode_t err;
    SPF_PROTO_RESULT result;
    VSTR *text = vstr_alloc(100);
    const char *value;

    vstr_reset(explanation);
    spf_req = SPF_request_new(ctx->spf);
    if (inet_pton(AF_INET, req->client_address, &in4) == 1)
        err = SPF_request_set_ipv4(spf_req, in4);
    else if (inet_pton(AF_INET6, req->client_address, &in6) == 1)
        err = SPF_request_set_ipv6(spf_req, in6);
    else
        err = SPF_E_INVALID_IP4;
    if (err != SPF_E_SUCCESS) {
        SPF_request_free(spf_req);
        vstr_free(text);
        return -1;
    }
    if (*req->helo_name != 0)
        (void) SPF_request_set_helo_dom(spf_req, req->helo_name);
    /* An identity without a domain (no HELO for the null sender, a sender
       without '@' domain) has no policy to check: none. */
    if (strchr(who, '@') == NULL || strchr(who, '@')[1] == 0 ||
        SPF_request_set_env_from(spf_req, who) != 0) {
        SPF_request_free(spf_req);
        vstr_sprintf(text, "none (%s: no domain to check) client-ip=%s;",
                     ctx->myhostname, req->client_address);
        spf_proto_clean(vstr_str(text), received);
        vstr_free(text);
        return SPF_PROTO_NONE;
    }
    ctx->dns.failed = false;
    vstr_reset(ctx->dns.failure);
    vstr_reset(ctx->dns.oversize);
    (void) spf_query_mailfrom(spf_req, &resp);
    result = spf_result_of(SPF_response_result(resp));
    if (ctx->dns.failed && result != SPF_PROTO_TEMPERROR) {
        /* RFC 7208 5: a lookup that failed ends the check: temperror. */
        msg_info("spf: %s: DNS lookup failed (%s); result temperror, not %s",
                 who, vstr_str(ctx->dns.failure),
                 spf_proto_result_name(result));
        result = SPF_PROTO_TEMPERROR;
        vstr_sprintf(text,
                     "temperror (%s: DNS lookup failed: %s) client-ip=%s; "
                     "envelope-from=\"%s\"; helo=%s;",
                     ctx->myhostname, vstr_str(ctx->dns.failure),
                     req->client_address, req->sender,
                     *req->helo_name ? req->helo_name : "(none)");
        spf_proto_clean(vstr_str(text), received);
    } else if (vstr_len(ctx->dns.oversize) > 0) {
        msg_info("spf: %s: the SPF record of %s is over %d bytes: result "
                 "permerror",
                 who, vstr_str(ctx->dns.oversize), SPF_RECORD_MAX);
        result = SPF_PROTO_PERMERROR;
        vstr_sprintf(text,
                     "permerror (%s: the SPF record of %s is over %d bytes) "
                     "client-ip=%s; envelope-from=\"%s\"; helo=%s;",
                     ctx->myhostname, vstr_str(ctx->dns.oversize),
                     SPF_RECORD_MAX, req->client_address, req->sender,
                     *req->helo_name ? req->helo_name : "(none)");
        spf_proto_clean(vstr_str(text), received);
    } else {
        value = SPF_response_get_received_spf_value(resp);
        spf_proto_clean(value ? value : spf_proto_result_name(result),
                        received);
    }
    if (result == SPF_PROTO_FAIL &&
        (value = SPF_response_get_explanation(resp)) != NULL)
        spf_proto_clean(value, explanation);
    SPF_response_free(resp);
    SPF_request_free(spf_req);
    vstr_free(text);
    return result;
}

/* spf_helo_is_domain - a HELO name that names a domain (RFC 7208 2.3: an
   address literal, or a name without a dot, has no policy to check) */
static bool spf_helo_is_domain(const char *helo)
{
    if (*helo == 0 || *helo == '.' || strchr(helo, '.') == NULL)
        return false;
    for (const char *cp = helo; *cp != 0; cp++)
        if (!isalnum((unsigned char) *cp) && strchr(".-_", *cp) == NULL)
            return false;
    return true;
}

/* spf_check - one request into reply (its strings in the VSTRs): the
   MAIL FROM identity (postmaster@HELO for the null sender, RFC 7208
   2.4) and, when asked, the HELO identity (2.3), both within one
   spf_lookup_timeout */
static void spf_check(SPF_CTX *ctx, const SPF_REQUEST *req, SPF_REPLY *reply,
                      VSTR *explanation, VSTR *received)
{
    VSTR *who = vstr_alloc(100);
    VSTR *scratch;
    VSTR *helo_received;
    int result;

    reply->ok = true;
    reply->helo_result = SPF_PROTO_NONE;
    vstr_reset(explanation);
    spf_identity(req, who);
    if (ctx->spf == NULL) {
        reply->result = SPF_PROTO_NONE;
        spf_proto_clean("none (SPF not checked: disable_dns_lookups = yes)",
                        received);
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &ctx->dns.deadline);
    ctx->dns.deadline.tv_sec += ctx->timeout;
    if ((result = spf_eval(ctx, req, vstr_str(who), explanation, received)) <
        0) {
        reply->ok = false;
        reply->reason = "client_address is not an IP address";
        vstr_free(who);
        return;
    }
    reply->result = (SPF_PROTO_RESULT) result;
    if (req->helo_check && *req->sender == 0) {
        /* The null sender's identity is the HELO one already. */
        reply->helo_result = reply->result;
    } else if (req->helo_check && spf_helo_is_domain(req->helo_name)) {
        scratch = vstr_alloc(100);
        helo_received = vstr_alloc(100);
        vstr_sprintf(scratch, "postmaster@%s", req->helo_name);
        result =
            spf_eval(ctx, req, vstr_str(scratch), helo_received, helo_received);
        reply->helo_result = (SPF_PROTO_RESULT) result;
        msg_info("spf: client=%s helo=%s identity=helo result=%s",
                 req->client_address, req->helo_name,
                 spf_proto_result_name(reply->helo_result));
        vstr_free(scratch);
        vstr_free(helo_received);
    }

done:
    msg_info("spf: client=%s helo=%s identity=%s result=%s",
             req->client_address, *req->helo_name ? req->helo_name : "(none)",
             vstr_str(who), spf_proto_result_name(reply->result));
    reply->explanation = vstr_str(explanation);
    reply->received_spf = vstr_str(received);
    vstr_free(who);
}

/* spf_busy_for - say busy for a check that blocks (true), or, after
   it, as the client count says (false) */
static void spf_busy_for(SPF_CTX *ctx, bool checking)
{
    mail_server_busy(ctx->server,
                     checking || (ctx->busy_connections > 0 &&
                                  ctx->conn_count >= ctx->busy_connections));
    /* libevent's clock stood still during the check: a timeout set now
       would count from its start, and could be over at once. */
    if (!checking)
        (void) event_base_update_cache_time(mail_server_base(ctx->server));
}

/* spf_conn_free - close a client connection */
static void spf_conn_free(SPF_CONN *conn)
{
    SPF_CTX *ctx = conn->ctx;

    attr_conn_free(conn->client); /* maybe from its callback: attr_conn.h */
    conn->msg = spf_dkim_msg_free(conn->msg);
    vstr_free(conn->why);
    myfree(conn);
    ctx->conn_count--;
    if (ctx->busy_connections > 0 &&
        ctx->conn_count == ctx->busy_connections - 1)
        mail_server_busy(ctx->server, false);
    if (ctx->conn_count == 0 && mail_server_retiring(ctx->server))
        mail_server_exit(ctx->server, 0);
}

/* spf_conn_reply - send the last list, close once it is out */
static void spf_conn_reply(SPF_CONN *conn, ATTR_LIST *list)
{
    conn->state = SPF_CONN_DONE;
    attr_conn_reading(conn->client, false);
    attr_conn_send(conn->client, list);
    attr_list_free(list);
    attr_conn_drain_check(conn->client);
}

/* spf_conn_request - the first request: an SPF check (answered now) or
   a DKIM BEGIN */
static void spf_conn_request(SPF_CONN *conn, ATTR_LIST *list)
{
    SPF_CTX *ctx = conn->ctx;
    const char *request = attr_get_str(list, "request");
    VSTR *explanation;
    VSTR *received;
    SPF_REQUEST req = {0};
    SPF_REPLY reply = {0};

    if (request != NULL && strcmp(request, DKIM_REQ_BEGIN) == 0) {
        DKIM_REQUEST begin;

        if (dkim_request_take(list, &begin, conn->why) < 0) {
            msg_warn("bad dkim request: %s", vstr_str(conn->why));
            spf_conn_free(conn);
            return;
        }
        conn->msg = spf_dkim_begin(ctx->dkim, &begin);
        conn->state = SPF_CONN_DKIM;
        /* As long between lists as smtpd waits for its client. */
        attr_conn_timeouts(conn->client, SPF_DATA_TIMEOUT, SPF_REQUEST_TIMEOUT);
        return;
    }
    explanation = vstr_alloc(100);
    received = vstr_alloc(200);
    if (spf_request_decode(list, &req, conn->why) < 0) {
        msg_warn("bad spf request: %s", vstr_str(conn->why));
        reply.ok = false;
        spf_proto_clean(vstr_str(conn->why), explanation);
        reply.reason = vstr_str(explanation);
    } else {
        spf_busy_for(ctx, true);
        spf_check(ctx, &req, &reply, explanation, received);
        spf_busy_for(ctx, false);
    }
    spf_conn_reply(conn, spf_reply_encode(&reply));
    vstr_free(explanation);
    vstr_free(received);
}

/* spf_conn_dkim - a DKIM DATA (taken now) or END (verified now) */
static void spf_conn_dkim(SPF_CONN *conn, ATTR_LIST *list)
{
    DKIM_REQUEST req;
    ATTR_LIST *reply;

    if (dkim_request_take(list, &req, conn->why) < 0 ||
        req.kind == DKIM_KIND_BEGIN) {
        msg_warn("bad dkim request: %s", req.kind == DKIM_KIND_BEGIN
                                             ? "a second begin"
                                             : vstr_str(conn->why));
        spf_conn_free(conn);
        return;
    }
    if (req.kind == DKIM_KIND_DATA) {
        spf_dkim_data(conn->msg, req.data, req.len);
        return;
    }
    spf_busy_for(conn->ctx, true);
    reply = spf_dkim_end(conn->msg);
    spf_busy_for(conn->ctx, false);
    conn->msg = spf_dkim_msg_free(conn->msg);
    spf_conn_reply(conn, reply);
}

/* spf_on_list - one list from smtpd: its HELLO, then one SPF request, or
   a DKIM verification (global/dkim_proto.h) */
static void spf_on_list(ATTR_CONN *client, ATTR_LIST *list, void *arg)
{
    SPF_CONN *conn = arg;

    switch (conn->state) {
    case SPF_CONN_HELLO:
        if (spf_hello_take(list, conn->why) < 0) {
            msg_warn("spf: %s", vstr_str(conn->why));
            spf_conn_free(conn);
            return;
        }
        conn->state = SPF_CONN_REQUEST;
        return;
    case SPF_CONN_REQUEST:
        spf_conn_request(conn, list);
        return;
    case SPF_CONN_DKIM:
        spf_conn_dkim(conn, list);
        return;
    case SPF_CONN_DONE:
        msg_warn("spf: a list after the reply");
        spf_conn_free(conn);
        return;
    }
}

/* spf_on_end - the client went away, timed out or sent garbage */
static void spf_on_end(ATTR_CONN *client, ATTR_CONN_END kind, const char *why,
                       void *arg)
{
    SPF_CONN *conn = arg;

    if (kind != ATTR_CONN_EOF || conn->state != SPF_CONN_DONE)
        msg_warn("spf: %s request: %s",
                 conn->state == SPF_CONN_DKIM ? "dkim" : "spf", why);
    spf_conn_free(conn);
}

/* spf_on_drain - the reply is out: done */
static void spf_on_drain(ATTR_CONN *client, void *arg)
{
    SPF_CONN *conn = arg;

    if (conn->state == SPF_CONN_DONE)
        spf_conn_free(conn);
}

static const ATTR_CONN_OPS spf_conn_ops = {
    .on_list = spf_on_list,
    .on_end = spf_on_end,
    .on_drain = spf_on_drain,
};

/* spf_accept - a connection from smtpd: our HELLO, then its lists */
static void spf_accept(MAIL_SERVER *server, int fd, void *arg)
{
    SPF_CTX *ctx = arg;
    SPF_CONN *conn = mycalloc(1, sizeof(*conn));
    ATTR_LIST *hello = spf_hello_list();

    conn->ctx = ctx;
    conn->state = SPF_CONN_HELLO;
    conn->why = vstr_alloc(100);
    /* A DKIM request carries the content: lists up to DKIM_LIST_MAX. */
    conn->client = attr_conn_accept(mail_server_base(server), fd, DKIM_LIST_MAX,
                                    &spf_conn_ops, conn);
    attr_conn_timeouts(conn->client, SPF_REQUEST_TIMEOUT, SPF_REQUEST_TIMEOUT);
    ctx->conn_count++;
    if (ctx->busy_connections > 0 && ctx->conn_count == ctx->busy_connections)
        mail_server_busy(server, true); /* master starts another spf */
    attr_conn_send(conn->client, hello);
    attr_list_free(hello);
}

/* spf_retire - finish the clients in hand, then exit */
static void spf_retire(MAIL_SERVER *server, void *arg)
{
    SPF_CTX *ctx = arg;

    if (ctx->conn_count == 0)
        mail_server_exit(server, 0);
}

/* spf_psl_load - the Public Suffix List of dmarc_public_suffix_list;
   without it (empty, unreadable, malformed) DMARC's organizational domain
   is the last two labels, and the log says so once a start */
static void spf_psl_load(SPF_CTX *ctx, const MAIL_CONF *conf)
{
    const char *path = mail_conf_str(conf, "dmarc_public_suffix_list");
    VSTR *why = vstr_alloc(100);

    if (*path == 0)
        msg_info("dmarc_public_suffix_list is empty: DMARC's organizational "
                 "domain is the last two labels of a name");
    else if ((ctx->psl = psl_load(path, why)) != NULL)
        ctx->psl_file = mystrdup(path);
    else
        msg_warn("dmarc_public_suffix_list: %s: DMARC's organizational "
                 "domain is the last two labels of a name until the list "
                 "can be read (Debian package publicsuffix)",
                 vstr_str(why));
    vstr_free(why);
}

/* spf_head_max - the header bytes in which DMARC looks for From::
   header_size_limit, as cleanup keeps a header section (what is past it
   becomes body there), up to SPF_HEAD_CAP a connection */
static size_t spf_head_max(const MAIL_CONF *conf)
{
    long long limit = mail_conf_size(conf, "header_size_limit");

    if (limit > SPF_HEAD_CAP) {
        msg_info("header_size_limit is %lld bytes: DMARC looks for From: in "
                 "the first %d",
                 limit, SPF_HEAD_CAP);
        return SPF_HEAD_CAP;
    }
    return (size_t) limit;
}

/* spf_pre_loop - read the configuration, set up libunbound and libspf2 */
static void spf_pre_loop(MAIL_SERVER *server, void *arg)
{
    SPF_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    VSTR *why = vstr_alloc(100);
    SPF_dns_server_t *layer;

    ctx->server = server;
    ctx->busy_connections =
        (int) mail_conf_int(conf, "spf_process_connections");
    SPF_error_handler = spf_log_error;
    SPF_warning_handler = spf_log_warning;
    SPF_info_handler = spf_log_info;
    SPF_debug_handler = NULL;
    ctx->myhostname = mystrdup(mail_conf_str(conf, "myhostname"));
    ctx->timeout = (int) mail_conf_time(conf, "spf_lookup_timeout");
    ctx->dns.failure = vstr_alloc(100);
    ctx->dns.oversize = vstr_alloc(100);
    if (mail_conf_bool(conf, "disable_dns_lookups")) {
        msg_info("disable_dns_lookups = yes: SPF is not checked (every "
                 "result is none)");
        (void) spf_dmarc_init(NULL);
        ctx->dkim = spf_dkim_create(NULL, 1, NULL, spf_head_max(conf));
        vstr_free(why);
        return;
    }
    if (!spf_dns_setup(ctx, conf, why))
        msg_fatal("spf: %s", vstr_str(why));
    spf_psl_load(ctx, conf);
    if (!spf_dmarc_init(ctx->psl_file))
        ctx->psl_file = myfree(ctx->psl_file);
    ctx->dkim = spf_dkim_create(
        ctx->dns.ub, (int) mail_conf_time(conf, "dkim_lookup_timeout"),
        ctx->psl, spf_head_max(conf));
    /* The layer is ours: a server made by SPF_server_new_dns() does not
       free its resolver (and no destroy callback lets SPF_dns_free try). */
    layer = mycalloc(1, sizeof(*layer));
    layer->destroy = NULL;
    layer->lookup = spf_dns_lookup;
    layer->name = "sluice";
    layer->hook = &ctx->dns;
    ctx->layer = layer;
    if ((ctx->spf = SPF_server_new_dns(layer, 0)) == NULL)
        msg_fatal("spf: cannot create the libspf2 server");
    if (SPF_server_set_rec_dom(ctx->spf, ctx->myhostname) != SPF_E_SUCCESS)
        msg_fatal("spf: libspf2 refuses myhostname \"%s\"", ctx->myhostname);
    vstr_free(why);
}

/* main - the spf daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = spf_pre_loop,
        .on_accept = spf_accept,
        .on_retire = spf_retire,
    };
    SPF_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "spf", &ops, &ctx);
    if (ctx.spf)
        SPF_server_free(ctx.spf);
    myfree(ctx.layer);
    ctx.dkim = spf_dkim_free(ctx.dkim);
    ctx.psl = psl_free(ctx.psl);
    spf_dmarc_done(ctx.psl_file);
    myfree(ctx.psl_file);
    if (ctx.dns.ub)
        ub_ctx_delete(ctx.dns.ub);
    vstr_free(ctx.dns.failure);
    vstr_free(ctx.dns.oversize);
    myfree(ctx.myhostname);
    return status;
}
