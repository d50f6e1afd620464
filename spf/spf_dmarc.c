/*
 * spf_dmarc - DMARC (RFC 7489) in the authentication checker
 *
 * For a message whose DKIM verification smtpd asked with dmarc=1: the
 * From: domain (global/auth_from.h), the policy record at _dmarc.<that
 * domain>, else at _dmarc.<its organizational domain> (by the Public
 * Suffix List of dmarc_public_suffix_list, global/psl.h: the domain's
 * public suffix and one label more; without the list, the last two
 * labels; sp= applies to a subdomain), the
 * SPF result smtpd had (with the MAIL FROM or HELO domain) and the DKIM
 * results, given to libopendmarc, which checks the alignment (adkim=,
 * aspf=, relaxed or strict) and names the policy to apply. The record is
 * fetched through the daemon's libunbound (libopendmarc's own query would
 * ask the system's resolver): a failed lookup is temperror.
 */
#include "sys_defs.h"

#include <sys/param.h>
#include <netinet/in.h>

#include <opendmarc/dmarc.h>

#include "auth_from.h"
#include "dkim_proto.h"
#include "msg.h"
#include "psl.h"
#include "spf.h"
#include "vstr.h"

/* spf_dmarc_lib - the library's settings: the Public Suffix List file
   our own reader took (global/psl.h), so that its relaxed alignment
   compares the organizational domains our record lookup found; NULL:
   none (it then compares the names themselves) */
static void spf_dmarc_lib(OPENDMARC_LIB_T *lib, const char *tld_file)
{
    memset(lib, 0, sizeof(*lib));
    lib->tld_type = OPENDMARC_TLD_TYPE_NONE;
    if (tld_file != NULL && strlen(tld_file) < sizeof(lib->tld_source_file)) {
        lib->tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
        memcpy(lib->tld_source_file, tld_file, strlen(tld_file) + 1);
    }
}

/* spf_dmarc_init - the library, once; false when it would not take
   tld_file (it is then set up without one) */
bool spf_dmarc_init(const char *tld_file)
{
    OPENDMARC_LIB_T lib;

    spf_dmarc_lib(&lib, tld_file);
    if (opendmarc_policy_library_init(&lib) == DMARC_PARSE_OKAY)
        return true;
    if (tld_file != NULL) {
        msg_warn("libopendmarc cannot read the Public Suffix List %s: its "
                 "relaxed alignment compares the names themselves",
                 tld_file);
        spf_dmarc_lib(&lib, NULL);
        if (opendmarc_policy_library_init(&lib) == DMARC_PARSE_OKAY)
            return false;
    }
    msg_fatal("spf: cannot initialize libopendmarc");
}

/* spf_dmarc_done - the library's end, at exit */
void spf_dmarc_done(const char *tld_file)
{
    OPENDMARC_LIB_T lib;

    spf_dmarc_lib(&lib, tld_file);
    (void) opendmarc_policy_library_shutdown(&lib);
}

/* spf_dmarc_spf - the SPF result as libopendmarc counts it */
static int spf_dmarc_spf(const char *result)
{
    if (strcmp(result, "pass") == 0)
        return DMARC_POLICY_SPF_OUTCOME_PASS;
    if (strcmp(result, "temperror") == 0)
        return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
    if (strcmp(result, "none") == 0 || strcmp(result, "neutral") == 0)
        return DMARC_POLICY_SPF_OUTCOME_NONE;
    return DMARC_POLICY_SPF_OUTCOME_FAIL;
}

/* spf_dmarc_dkim - a DKIM result as libopendmarc counts it */
static int spf_dmarc_dkim(DKIM_PROTO_RESULT result)
{
    switch (result) {
    case DKIM_PROTO_PASS:
        return DMARC_POLICY_DKIM_OUTCOME_PASS;
    case DKIM_PROTO_TEMPERROR:
        return DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
    case DKIM_PROTO_NEUTRAL:
        return DMARC_POLICY_DKIM_OUTCOME_NONE;
    default:
        return DMARC_POLICY_DKIM_OUTCOME_FAIL;
    }
}

/* spf_dmarc_record - the policy record for domain (or its organizational
   domain, into org) into record, found_at naming where: 1, 0 none, -1 DNS
   failed */
static int spf_dmarc_record(SPF_DKIM_MSG *dk, const char *domain, VSTR *record,
                            VSTR *org, const char **found_at)
{
    VSTR *name = vstr_alloc(100);
    int ret;

    psl_org_domain(spf_dkim_psl(dk), domain, org);
    vstr_sprintf(name, "_dmarc.%s", domain);
    *found_at = domain;
    ret = spf_dkim_txt(dk, vstr_str(name), "v=DMARC1", record);
    if (ret == 0 && strcmp(vstr_str(org), domain) != 0) {
        vstr_sprintf(name, "_dmarc.%s", vstr_str(org));
        *found_at = vstr_str(org);
        ret = spf_dkim_txt(dk, vstr_str(name), "v=DMARC1", record);
    }
    vstr_free(name);
    return ret;
}

/* spf_dmarc_eval - DMARC for one message */
void spf_dmarc_eval(SPF_DKIM_MSG *dk, const DKIM_REQUEST *begin,
                    const char *head, size_t len, DKIM_REPLY *reply, VSTR *from,
                    VSTR *policy)
{
    VSTR *why = vstr_alloc(100);
    VSTR *record = vstr_alloc(200);
    VSTR *org = vstr_alloc(100);
    DMARC_POLICY_T *pctx = NULL;
    const char *found_at = "";
    OPENDMARC_STATUS_T status;

    reply->dmarc = true;
    reply->dmarc_result = DMARC_PROTO_PERMERROR;
    vstr_reset(policy);
    if (auth_from_domain(head, len, from, why) < 0) {
        msg_info("dmarc: %s: result=permerror", vstr_str(why));
        goto out;
    }
    switch (spf_dmarc_record(dk, vstr_str(from), record, org, &found_at)) {
    case -1:
        reply->dmarc_result = DMARC_PROTO_TEMPERROR;
        msg_info("dmarc: header.from=%s: DNS lookup failed: result=temperror",
                 vstr_str(from));
        goto out;
    case 0:
        reply->dmarc_result = DMARC_PROTO_NONE;
        msg_info("dmarc: header.from=%s: no policy record: result=none",
                 vstr_str(from));
        goto out;
    }
    pctx = opendmarc_policy_connect_init((u_char *) begin->client_address,
                                         strchr(begin->client_address, ':')
                                             ? DMARC_POLICY_IP_TYPE_IPV6
                                             : DMARC_POLICY_IP_TYPE_IPV4);
    if (pctx == NULL)
        msg_fatal("spf: libopendmarc: out of memory");
    if (opendmarc_policy_store_from_domain(pctx, (u_char *) vstr_str(from)) !=
            DMARC_PARSE_OKAY ||
        opendmarc_policy_store_dmarc(
            pctx, (u_char *) vstr_str(record), (u_char *) found_at,
            /* libopendmarc applies sp= when given an organizational
               domain: only when the record is that domain's, not the
               From: domain's own. */
            strcmp(found_at, vstr_str(from)) != 0 ? (u_char *) found_at
                                                  : NULL) != DMARC_PARSE_OKAY) {
        msg_info("dmarc: header.from=%s: bad policy record at %s: "
                 "result=permerror",
                 vstr_str(from), found_at);
        goto out;
    }
    if (*begin->spf_domain != 0)
        (void) opendmarc_policy_store_spf(pctx, (u_char *) begin->spf_domain,
                                          spf_dmarc_spf(begin->spf_result),
                                          DMARC_POLICY_SPF_ORIGIN_MAILFROM,
                                          NULL);
    for (size_t i = 0; i < reply->count; i++)
        if (*reply->sigs[i].domain != 0)
            (void) opendmarc_policy_store_dkim(
                pctx, (u_char *) reply->sigs[i].domain,
                (u_char *) reply->sigs[i].selector,
                spf_dmarc_dkim(reply->sigs[i].result), NULL);
    status = opendmarc_get_policy_to_enforce(pctx);
    switch (status) {
    case DMARC_POLICY_PASS:
        reply->dmarc_result = DMARC_PROTO_PASS;
        break;
    case DMARC_POLICY_REJECT:
        reply->dmarc_result = DMARC_PROTO_FAIL;
        vstr_cpy(policy, "reject");
        break;
    case DMARC_POLICY_QUARANTINE:
        reply->dmarc_result = DMARC_PROTO_FAIL;
        vstr_cpy(policy, "quarantine");
        break;
    case DMARC_POLICY_NONE:
        reply->dmarc_result = DMARC_PROTO_FAIL;
        vstr_cpy(policy, "none");
        break;
    case DMARC_POLICY_ABSENT:
        reply->dmarc_result = DMARC_PROTO_NONE;
        break;
    default:
        reply->dmarc_result = DMARC_PROTO_PERMERROR;
        break;
    }
    msg_info("dmarc: header.from=%s record at %s result=%s%s%s", vstr_str(from),
             found_at, dmarc_proto_result_name(reply->dmarc_result),
             vstr_len(policy) ? " policy=" : "", vstr_str(policy));

out:
    if (pctx != NULL)
        (void) opendmarc_policy_connect_shutdown(pctx);
    if (reply->dmarc_result == DMARC_PROTO_PERMERROR &&
        !dkim_proto_token_ok(vstr_str(from)))
        vstr_reset(from);
    reply->dmarc_from = vstr_str(from);
    reply->dmarc_policy = vstr_str(policy);
    vstr_free(why);
    vstr_free(record);
    vstr_free(org);
}
