/*
 * sluice_tls - `sluice tls mta-sts DOMAIN`: the MTA-STS policy smtp would
 * apply to mail for DOMAIN now
 *
 * The lookup is smtp's own (global/mta_sts.h): the TXT record through
 * dns_servers, the cache in data_directory/mta-sts (read, never written
 * here: it belongs to mail_owner), the HTTPS fetch with smtp_tls_CAfile.
 * Prints the policy and where it came from; exit 0 (also when no policy
 * applies), 1 on bad usage or configuration.
 */
#include "sys_defs.h"

#include <event2/event.h>

#include "dns.h"
#include "mail_conf.h"
#include "msg.h"
#include "mta_sts.h"
#include "mymalloc.h"
#include "sluice.h"
#include "vstr.h"

typedef struct SLUICE_TLS_STATE {
    struct event_base *base;
    const char *domain;
    bool done;
} SLUICE_TLS_STATE;

/* sluice_tls_print - the callback: show what applies */
static void sluice_tls_print(const MTA_STS_RESULT *result, void *arg)
{
    SLUICE_TLS_STATE *state = arg;
    const MTA_STS_POLICY *policy = result->policy;

    printf("domain: %s\n", state->domain);
    printf("source: %s\n", result->source);
    if (policy == NULL) {
        printf("policy: none\n");
    } else {
        printf("id: %s\n", result->id);
        printf("mode: %s\n", mta_sts_mode_name(policy->mode));
        for (size_t i = 0; i < policy->mx->argc; i++)
            printf("mx: %s\n", policy->mx->argv[i]);
        printf("max_age: %ld\n", policy->max_age);
    }
    state->done = true;
    event_base_loopbreak(state->base);
}

/* sluice_tls - the command */
int sluice_tls(const char *config_dir, int argc, char **argv)
{
    VSTR *why = vstr_alloc(100);
    VSTR *dir = vstr_alloc(100);
    MAIL_CONF *conf = NULL;
    DNS_CTX *dns = NULL;
    MTA_STS_CTX *sts = NULL;
    SLUICE_TLS_STATE state = {0};
    MTA_STS_CONF sts_conf;
    int status = 1;

    if (argc != 3 || strcmp(argv[1], "mta-sts") != 0) {
        sluice_fail("usage: sluice tls mta-sts DOMAIN");
        goto out;
    }
    state.domain = argv[2];
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        sluice_fail("tls: %s", vstr_str(why));
        goto out;
    }
    if (mail_conf_bool(conf, "disable_dns_lookups")) {
        sluice_fail("tls: disable_dns_lookups = yes: no MTA-STS lookup");
        goto out;
    }
    if ((state.base = event_base_new()) == NULL) {
        sluice_fail("tls: cannot make an event base");
        goto out;
    }
    if ((dns = dns_ctx_create(state.base, conf, why)) == NULL) {
        sluice_fail("tls: DNS: %s", vstr_str(why));
        goto out;
    }
    if (*mail_conf_str(conf, "data_directory"))
        vstr_sprintf(dir, "%s/mta-sts", mail_conf_str(conf, "data_directory"));
    sts_conf = (MTA_STS_CONF){
        .cafile = mail_conf_str(conf, "smtp_tls_CAfile"),
        .cache_dir = vstr_len(dir) > 0 ? vstr_str(dir) : NULL,
        .cache_read_only = true,
        .dns_timeout = (int) mail_conf_time(conf, "smtp_dns_timeout"),
        .fetch_timeout =
            (int) mail_conf_time(conf, "smtp_mta_sts_fetch_timeout"),
        .https_port = 443,
    };
    if ((sts = mta_sts_ctx_create(state.base, dns, &sts_conf, why)) == NULL) {
        sluice_fail("tls: MTA-STS: %s", vstr_str(why));
        goto out;
    }
    (void) mta_sts_lookup(sts, state.domain, sluice_tls_print, &state);
    (void) event_base_dispatch(state.base);
    status = state.done ? 0 : sluice_fail("tls: the lookup did not finish");

out:
    if (sts)
        mta_sts_ctx_free(sts);
    if (dns)
        dns_ctx_free(dns);
    if (state.base)
        event_base_free(state.base);
    if (conf)
        mail_conf_free(conf);
    vstr_free(dir);
    vstr_free(why);
    return status;
}
