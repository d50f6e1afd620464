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
}

/* smtp_dane_answer - the TLSA records of req->tlsa_host are in */
static void smtp_dane_answer(const DNS_REPLY *reply, void *arg)
{
    SMTP_REQ *req = arg;

    req->tlsa_lookup = NULL;
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
    VSTR *name;

    if (req->tlsa_lookup != NULL)
        return 0; /* under way: its answer calls smtp_req_try_next */
    if (addr->dnssec && (req->tlsa_host == NULL ||
                         strcasecmp(req->tlsa_host, addr->host) != 0)) {
        smtp_dane_forget(req);
        req->tlsa_host = mystrdup(addr->host);
        name = vstr_alloc(64);
        dane_tlsa_name(name, addr->host, req->port);
        req->tlsa_lookup =
            dns_lookup_tlsa(req->ctx->dns, vstr_str(name),
                            req->ctx->conf.dns_timeout, smtp_dane_answer, req);
        vstr_free(name);
        return 0;
    }
    for (size_t i = 0; i < req->tlsa_count; i++)
        usable += dane_tlsa_usable(req->tlsa + i);
    switch (dane_decide(only, addr->dnssec, req->tlsa_state, req->tlsa_count,
                        usable, addr->host, why)) {
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
