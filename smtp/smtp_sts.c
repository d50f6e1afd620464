/*
 * smtp_sts - MTA-STS (RFC 8461) in the SMTP delivery agent
 *
 * Before a request for a domain next hop (one found through MX) is routed,
 * the domain's policy is looked up (global/mta_sts.h: TXT record, cache,
 * HTTPS fetch, all on the event loop, so other deliveries go on while it
 * runs). An smtp_tls_policy_maps entry for the next hop is the operator's
 * word and wins: no MTA-STS lookup then, as for [host] next hops.
 *
 *   enforce  only MX hosts matching the policy's mx patterns are tried
 *            (none: deferred, 4.7.5), and TLS is required with a
 *            certificate that chains to a trusted CA and names the MX host
 *            (the verify level with match=hostname, mandatory protocols)
 *   testing  delivery as without a policy; what enforce would have refused
 *            (an MX host that does not match, no TLS, a certificate that
 *            does not verify) is logged, "MTA-STS policy for DOMAIN
 *            (testing): would defer: ..."
 *   none     as without a policy
 */
#include "sys_defs.h"

#include "deliver_proto.h"
#include "msg.h"
#include "mymalloc.h"
#include "mta_sts.h"
#include "smtp.h"
#include "tls_client.h"
#include "vstr.h"

/* smtp_sts_patterns - "a b *.c" for messages */
static void smtp_sts_patterns(const SMTP_REQ *req, VSTR *out)
{
    vstr_reset(out);
    for (size_t i = 0; req->sts_mx && i < req->sts_mx->argc; i++)
        vstr_sprintf_append(out, "%s%s", i ? " " : "", req->sts_mx->argv[i]);
}

/* smtp_sts_done - the policy is known: apply it, then route */
static void smtp_sts_done(const MTA_STS_RESULT *result, void *arg)
{
    SMTP_REQ *req = arg;
    const SMTP_CONF *conf = &req->ctx->conf;
    const MTA_STS_POLICY *policy = result->policy;

    req->sts_lookup = NULL;
    if (policy != NULL && policy->mode != MTA_STS_MODE_NONE) {
        req->sts_mode = policy->mode;
        req->sts_mx = argv_alloc(policy->mx->argc + 1);
        for (size_t i = 0; i < policy->mx->argc; i++)
            argv_add(req->sts_mx, policy->mx->argv[i]);
        if (policy->mode == MTA_STS_MODE_ENFORCE) {
            req->tls_level = TLS_LEV_VERIFY;
            if (req->tls_match)
                argv_free(req->tls_match);
            req->tls_match = argv_split("hostname", " ");
            myfree(req->tls_protocols);
            req->tls_protocols = mystrdup(conf->tls_mandatory_protocols);
        }
    }
    smtp_req_route(req);
}

/* smtp_req_sts - look up the policy when one may apply, then route */
void smtp_req_sts(SMTP_REQ *req)
{
    /* DANE, when asked for, comes first (RFC 8461 2); so does a
       certificate pinned by its fingerprint. */
    if (req->ctx->sts == NULL || !req->mx || req->tls_from_map ||
        req->tls_level == TLS_LEV_DANE || req->tls_level == TLS_LEV_DANE_ONLY ||
        req->tls_level == TLS_LEV_FPRINT) {
        smtp_req_route(req);
        return;
    }
    req->sts_lookup =
        mta_sts_lookup(req->ctx->sts, vstr_str(req->host), smtp_sts_done, req);
}

/* smtp_sts_filter - the MX hosts the policy allows: others are dropped
   (enforce) or logged (testing). false when the request was deferred
   because no MX host is left */
bool smtp_sts_filter(SMTP_REQ *req)
{
    const char *domain = vstr_str(req->host);
    bool enforce = req->sts_mode == MTA_STS_MODE_ENFORCE;
    VSTR *patterns, *hosts;
    VSTR *prev; /* the host of the previous address */
    size_t kept = 0;

    if (req->sts_mode == MTA_STS_MODE_NONE)
        return true;
    patterns = vstr_alloc(100);
    hosts = vstr_alloc(100);
    prev = vstr_alloc(64);
    smtp_sts_patterns(req, patterns);
    for (size_t i = 0; i < req->addr_count; i++) {
        DNS_ADDR *addr = req->addrs + i;
        /* A host's addresses are next to each other: say it once. */
        bool first = i == 0 || strcmp(vstr_str(prev), addr->host) != 0;
        MTA_STS_POLICY view = {.mode = req->sts_mode, .mx = req->sts_mx};

        vstr_cpy(prev, addr->host);
        if (mta_sts_policy_allows(&view, addr->host)) {
            req->addrs[kept++] = *addr;
            continue;
        }
        if (first) {
            vstr_sprintf_append(hosts, "%s%s", vstr_len(hosts) ? ", " : "",
                                addr->host);
            if (enforce)
                msg_info("%s: MTA-STS policy for %s (enforce): MX host %s "
                         "does not match mx %s: skipped",
                         req->qid, domain, addr->host, vstr_str(patterns));
            else
                msg_info("%s: MTA-STS policy for %s (testing): would defer: "
                         "MX host %s does not match mx %s",
                         req->qid, domain, addr->host, vstr_str(patterns));
        }
        if (enforce)
            myfree(addr->host);
        else
            req->addrs[kept++] = *addr;
    }
    req->addr_count = kept;
    if (kept == 0) {
        vstr_sprintf(req->why,
                     "MTA-STS policy for %s (enforce): no MX host matches mx "
                     "%s (MX hosts: %s)",
                     domain, vstr_str(patterns), vstr_str(hosts));
        msg_info("%s: %s", req->qid, vstr_str(req->why));
        smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED, "4.7.5",
                          vstr_str(req->why), NULL, NULL, NULL);
        smtp_req_done(req, 0, true, vstr_str(req->why));
    }
    vstr_free(patterns);
    vstr_free(hosts);
    vstr_free(prev);
    return kept > 0;
}

/* smtp_sts_tls_check - testing mode, after the handshake: would the
   certificate have passed enforce (trusted, naming the MX host)? */
void smtp_sts_tls_check(SMTP_SESS *sess, SSL *ssl)
{
    SMTP_REQ *req = sess->req;
    ARGV *names;
    TLS_STATUS status;

    if (req == NULL || req->sts_mode != MTA_STS_MODE_TESTING)
        return;
    names = argv_alloc(1);
    argv_add(names, sess->host);
    tls_status_init(&status);
    tls_client_status(ssl, names, &status);
    if (!status.trusted)
        msg_info("%s: MTA-STS policy for %s (testing): would defer: server "
                 "certificate not trusted (%s:%d: %s)",
                 req->qid, vstr_str(req->host), vstr_str(sess->label),
                 sess->port, vstr_str(status.verify_error));
    else if (!status.matched)
        msg_info("%s: MTA-STS policy for %s (testing): would defer: server "
                 "certificate not verified (%s:%d: it names %s, not %s)",
                 req->qid, vstr_str(req->host), vstr_str(sess->label),
                 sess->port, vstr_str(status.peer_names), sess->host);
    tls_status_free(&status);
    argv_free(names);
}

/* smtp_sts_no_tls - testing mode: the session goes on without TLS */
void smtp_sts_no_tls(SMTP_SESS *sess)
{
    SMTP_REQ *req = sess->req;

    if (req != NULL && req->sts_mode == MTA_STS_MODE_TESTING)
        msg_info("%s: MTA-STS policy for %s (testing): would defer: TLS is "
                 "required, but was not used with host %s",
                 req->qid, vstr_str(req->host), vstr_str(sess->label));
}
