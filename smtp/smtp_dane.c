/*
 * smtp_dane - DANE (RFC 7672) in the SMTP delivery agent
 *
 * At smtp_tls_security_level = dane or dane-only (globally or from
 * smtp_tls_policy_maps) each MX host's connection gets its own level
 * before it is opened: when the host's MX and address records were
 * DNSSEC-validated (DNS_ADDR.dnssec; dns_trust_anchor_file), its TLSA
 * records ("_port._tcp.host") are looked up once per host and request,
 * and global/dane.h's dane_decide() says what they mean: TLS that must
 * match them (TLS_LEV_DANE on the session: tls_client_dane), mandatory
 * unauthenticated TLS (encrypt), opportunistic TLS (may), or the host is
 * skipped and the next one tried (a bogus or failed TLSA lookup; at
 * dane-only anything without usable validated records).
 *
 * An MX host that is an alias (RFC 7672 2.2.2): when its whole CNAME
 * chain and address records were validated, the TLSA records are looked
 * up at the chain's end first, and at the host's own name when there are
 * none there; when only the host's own CNAME record was validated
 * (DNS_ADDR.alias_secure: the chain leads into an unsigned zone), at the
 * host's own name only. The name they came from is the TLSA base domain:
 * SNI, and the name a DANE-TA certificate may carry (besides the host
 * and the next-hop domain).
 */
#include "sys_defs.h"

#include "dane.h"
#include "dns.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtp.h"
#include "vstr.h"

/* smtp_dane_forget - drop the TLSA records kept for the last host */
void smtp_dane_forget(SMTP_REQ *req)
{
    if (req->tlsa_lookup) {
        dns_lookup_cancel(req->tlsa_lookup);
        req->tlsa_lookup = NULL;
    }
    req->tlsa = dane_tlsa_free(req->tlsa, req->tlsa_count);
    req->tlsa_count = 0;
    myfree(req->tlsa_host);
    req->tlsa_host = NULL;
    myfree(req->tlsa_base);
    req->tlsa_base = NULL;
    req->tlsa_then_host = false;
}

/* smtp_dane_ask - look up the TLSA records of base */
static void smtp_dane_answer(const DNS_REPLY *reply, void *arg);

static void smtp_dane_ask(SMTP_REQ *req, const char *base)
{
    VSTR *name = vstr_alloc(64);

    myfree(req->tlsa_base);
    req->tlsa_base = mystrdup(base);
    dane_tlsa_name(name, base, req->port);
    req->tlsa_lookup =
        dns_lookup_tlsa(req->ctx->dns, vstr_str(name),
                        req->ctx->conf.dns_timeout, smtp_dane_answer, req);
    vstr_free(name);
}

/* smtp_dane_answer - the TLSA records of req->tlsa_host are in */
static void smtp_dane_answer(const DNS_REPLY *reply, void *arg)
{
    SMTP_REQ *req = arg;

    req->tlsa_lookup = NULL;
    if (req->tlsa_then_host) {
        req->tlsa_then_host = false;
        /* The chain's end has no validated records: the alias's own
           name is the base domain then (a failure there is final). */
        if (reply->status == DNS_OK &&
            (!reply->secure || reply->rr_count == 0)) {
            msg_info("%s: no TLSA records at %s (the end of %s's CNAME "
                     "chain): looking at %s",
                     req->qid, req->tlsa_base, req->tlsa_host, req->tlsa_host);
            smtp_dane_ask(req, req->tlsa_host);
            return;
        }
    }
    if (reply->status != DNS_OK) {
        msg_info("%s: %s", req->qid, vstr_str(reply->reason));
        req->tlsa_state = DANE_TLSA_FAILED;
    } else {
        req->tlsa_state = reply->secure ? DANE_TLSA_SECURE : DANE_TLSA_INSECURE;
        req->tlsa = mymalloc_array(reply->rr_count + 1, sizeof(DANE_TLSA));
        for (size_t i = 0; i < reply->rr_count; i++) {
            if (dane_tlsa_parse(reply->rrs[i].data, reply->rrs[i].len,
                                req->tlsa + req->tlsa_count) == 0)
                req->tlsa_count++;
            else
                msg_warn("%s: malformed TLSA record of %s ignored", req->qid,
                         req->tlsa_host);
        }
    }
    smtp_req_try_next(req);
}

/* smtp_dane_level - the level of a connection to addr: 1 with
   req->conn_level set, 0 when a TLSA lookup was started (the request
   goes on in smtp_req_try_next when it is done), -1 when addr is not to
   be used (why says why) */
int smtp_dane_level(SMTP_REQ *req, const DNS_ADDR *addr, VSTR *why)
{
    bool only = req->tls_level == TLS_LEV_DANE_ONLY;
    size_t usable = 0;
    /* RFC 7672 2.2.2: validated address records, or a validated CNAME
       record of the host whose chain leads into an unsigned zone */
    bool secure = addr->dnssec || addr->alias_secure;

    if (req->tlsa_lookup != NULL)
        return 0; /* under way: its answer calls smtp_req_try_next */
    if (secure && (req->tlsa_host == NULL ||
                   strcasecmp(req->tlsa_host, addr->host) != 0)) {
        smtp_dane_forget(req);
        req->tlsa_host = mystrdup(addr->host);
        if (addr->dnssec && addr->cname[0]) {
            req->tlsa_then_host = true;
            smtp_dane_ask(req, addr->cname);
        } else {
            smtp_dane_ask(req, addr->host);
        }
        return 0;
    }
    for (size_t i = 0; i < req->tlsa_count; i++)
        usable += dane_tlsa_usable(req->tlsa + i);
    switch (dane_decide(only, secure, req->tlsa_state, req->tlsa_count, usable,
                        req->tlsa_base ? req->tlsa_base : addr->host, why)) {
    case DANE_USE_TLSA:
        req->conn_level = TLS_LEV_DANE;
        return 1;
    case DANE_ENCRYPT:
        msg_info("%s: %s: TLS without authentication", req->qid, vstr_str(why));
        req->conn_level = TLS_LEV_ENCRYPT;
        return 1;
    case DANE_MAY:
        req->conn_level = TLS_LEV_MAY;
        return 1;
    case DANE_DEFER:
    default:
        return -1;
    }
}
