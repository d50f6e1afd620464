/*
 * smtp - the SMTP delivery agent: one process, many deliveries at once
 *
 * main.cf is read once into SMTP_CONF; every request (smtp_request.c),
 * route (smtp_connect.c) and session (smtp_session.c) lives on the event
 * loop of the server skeleton (global/mail_server.h). The SMTP
 * conversation itself is in smtp_proto.c. See smtp.h for the map.
 */
#include "sys_defs.h"

#include <signal.h>

#include "dns.h"
#include "mail_conf.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "sign_token.h"
#include "smtp.h"
#include "vstr.h"

/* smtp_conf_time - a time parameter as int seconds (the table keeps each
   one smtp reads within 0..INT32_MAX; most within 1s..INT32_MAX) */
static int smtp_conf_time(const MAIL_CONF *conf, const char *name)
{
    return (int) mail_conf_time(conf, name);
}

/* smtp_conf_has - does list parameter name hold word? */
static bool smtp_conf_has(const MAIL_CONF *conf, const char *name,
                          const char *word)
{
    ARGV *list = mail_conf_list(conf, name);
    bool found = false;

    for (size_t i = 0; i < list->argc && !found; i++)
        found = strcasecmp(list->argv[i], word) == 0;
    argv_free(list);
    return found;
}

/* smtp_conf_tls - the TLS and AUTH parameters; a bad one is fatal (the
   mail stays queued while master restarts us with a back-off) */
static void smtp_conf_tls(SMTP_CTX *ctx, const MAIL_CONF *conf, VSTR *why)
{
    SMTP_CONF *sc = &ctx->conf;
    const char *level = mail_conf_str(conf, "smtp_tls_security_level");
    size_t fprint_len;
    int lo, hi;

    /* Postfix: empty is "none". */
    sc->tls_level = *level ? tls_level_parse(level) : TLS_LEV_NONE;
    if (sc->tls_level == TLS_LEV_INVALID)
        msg_fatal("invalid smtp_tls_security_level \"%s\": use none, may, "
                  "encrypt, fingerprint, dane, dane-only, verify or secure",
                  level);
    if (!tls_level_supported(sc->tls_level))
        msg_fatal("smtp_tls_security_level = %s is not supported yet", level);
    sc->tls_fprint_digest =
        mystrdup(mail_conf_str(conf, "smtp_tls_fingerprint_digest"));
    if ((fprint_len = tls_fprint_digest_len(sc->tls_fprint_digest)) == 0)
        msg_fatal("smtp_tls_fingerprint_digest: unknown digest \"%s\" (sha256,"
                  " sha1, md5, sha512 ...)",
                  sc->tls_fprint_digest);
    sc->tls_fprint_match = argv_alloc(2);
    if (tls_fprint_list(mail_conf_str(conf, "smtp_tls_fingerprint_cert_match"),
                        " \t\r\n,|", fprint_len, sc->tls_fprint_match, why) < 0)
        msg_fatal("smtp_tls_fingerprint_cert_match: %s", vstr_str(why));
    if (sc->tls_level == TLS_LEV_FPRINT && sc->tls_fprint_match->argc == 0)
        msg_fatal("smtp_tls_security_level = fingerprint, but "
                  "smtp_tls_fingerprint_cert_match is empty");
    sc->tls_protocols = mystrdup(mail_conf_str(conf, "smtp_tls_protocols"));
    sc->tls_mandatory_protocols =
        mystrdup(mail_conf_str(conf, "smtp_tls_mandatory_protocols"));
    if (tls_protocols_parse(sc->tls_protocols, &lo, &hi, why) < 0)
        msg_fatal("smtp_tls_protocols: %s", vstr_str(why));
    if (tls_protocols_parse(sc->tls_mandatory_protocols, &lo, &hi, why) < 0)
        msg_fatal("smtp_tls_mandatory_protocols: %s", vstr_str(why));
    sc->tls_verify_match =
        argv_split(mail_conf_str(conf, "smtp_tls_verify_cert_match"), " \t,:");
    sc->tls_secure_match =
        argv_split(mail_conf_str(conf, "smtp_tls_secure_cert_match"), " \t,:");
    sc->starttls_timeout = smtp_conf_time(conf, "smtp_starttls_timeout");
    /* The table keeps it within 0..4 (Postfix's range). */
    sc->tls_loglevel = (int) mail_conf_int(conf, "smtp_tls_loglevel");
    if ((ctx->tls = tls_client_create(mail_conf_str(conf, "smtp_tls_CAfile"),
                                      why)) == NULL)
        msg_fatal("TLS: %s", vstr_str(why));
    if ((ctx->tls_policy =
             maps_create("smtp_tls_policy_maps",
                         mail_conf_str(conf, "smtp_tls_policy_maps"),
                         MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    sc->sasl_enable = mail_conf_bool(conf, "smtp_sasl_auth_enable");
    sc->sasl_noplain =
        smtp_conf_has(conf, "smtp_sasl_security_options", "noplaintext");
    sc->sasl_tls_noplain =
        smtp_conf_has(conf, "smtp_sasl_tls_security_options", "noplaintext");
    if (sc->sasl_enable && (ctx->sasl_passwd = maps_create(
                                "smtp_sasl_password_maps",
                                mail_conf_str(conf, "smtp_sasl_password_maps"),
                                MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    ctx->bounce_classes = bounce_class_rules_conf(conf);
}

/* smtp_conf_sts - MTA-STS: on unless smtp_mta_sts_enable = no, or no DNS
   is asked at all (smtp_dns_support_level = disabled, or empty with
   disable_dns_lookups: no TXT record can be found, and mail for domains
   does not go anywhere either) */
static void smtp_conf_sts(SMTP_CTX *ctx, const MAIL_CONF *conf, VSTR *why)
{
    MTA_STS_CONF sts_conf;
    VSTR *dir;

    ctx->conf.mta_sts = mail_conf_bool(conf, "smtp_mta_sts_enable");
    if (!ctx->conf.mta_sts || ctx->conf.dns_support == TLS_DNS_DISABLED)
        return;
    dir = vstr_alloc(100);
    if (*mail_conf_str(conf, "data_directory"))
        vstr_sprintf(dir, "%s/mta-sts", mail_conf_str(conf, "data_directory"));
    sts_conf = (MTA_STS_CONF){
        .cafile = mail_conf_str(conf, "smtp_tls_CAfile"),
        .cache_dir = vstr_len(dir) > 0 ? vstr_str(dir) : NULL,
        .dns_timeout = ctx->conf.dns_timeout,
        .fetch_timeout = smtp_conf_time(conf, "smtp_mta_sts_fetch_timeout"),
        .https_port = 443,
    };
    if ((ctx->sts = mta_sts_ctx_create(mail_server_base(ctx->server), ctx->dns,
                                       &sts_conf, why)) == NULL)
        msg_fatal("MTA-STS: %s", vstr_str(why));
    vstr_free(dir);
}

/* smtp_conf_dns - smtp_dns_support_level (global/tls_client.h): what
   smtp's DNS context does, whatever disable_dns_lookups says when the
   level is set */
static void smtp_conf_dns(SMTP_CTX *ctx, const MAIL_CONF *conf, VSTR *why)
{
    SMTP_CONF *sc = &ctx->conf;
    DNS_CTX_OPTS opts = {0};

    sc->dns_support = tls_dns_support(
        mail_conf_str(conf, "smtp_dns_support_level"),
        mail_conf_bool(conf, "disable_dns_lookups"),
        mail_conf_str(conf, "dns_trust_anchor_file"), &opts.anchor, why);
    if (sc->dns_support == TLS_DNS_INVALID)
        msg_fatal("%s", vstr_str(why));
    /* dns_trust_anchor_file itself: the DNS module names it in errors. */
    if (*opts.anchor &&
        strcmp(opts.anchor, mail_conf_str(conf, "dns_trust_anchor_file")) == 0)
        opts.anchor = NULL;
    opts.disabled = sc->dns_support == TLS_DNS_DISABLED;
    opts.enabled = !opts.disabled;
    if ((ctx->dns = dns_ctx_create_opts(mail_server_base(ctx->server), conf,
                                        &opts, why)) == NULL)
        msg_fatal("DNS: %s", vstr_str(why));
    if ((sc->tls_level == TLS_LEV_DANE || sc->tls_level == TLS_LEV_DANE_ONLY) &&
        sc->dns_support != TLS_DNS_DNSSEC)
        msg_warn("smtp_tls_security_level = %s configured with dnssec "
                 "lookups disabled (smtp_dns_support_level = %s): %s",
                 tls_level_name(sc->tls_level),
                 tls_dns_support_name(sc->dns_support),
                 sc->tls_level == TLS_LEV_DANE
                     ? "dane acts as may"
                     : "dane-only defers every delivery");
}

/* smtp_conf_verp - bounce_verp_domain and the key its tokens are signed
   with; a key that cannot be had leaves the sender as it is (warned): the
   mail goes, its late bounces are not tied back */
static void smtp_conf_verp(SMTP_CONF *sc, const MAIL_CONF *conf)
{
    const char *domain = mail_conf_str(conf, "bounce_verp_domain");
    VSTR *path;
    VSTR *why;

    if (*domain == 0)
        return;
    path = vstr_alloc(100);
    why = vstr_alloc(100);
    sc->verp_key = vstr_alloc(SIGN_TOKEN_KEY_LEN);
    sign_token_key_path(conf, path);
    if (sign_token_key_load(vstr_str(path), sc->verp_key, why) < 0) {
        msg_warn("bounce_verp_domain: %s: mail goes out with its own sender",
                 vstr_str(why));
        sc->verp_key = vstr_free(sc->verp_key);
    } else {
        sc->verp_domain = mystrdup(domain);
    }
    vstr_free(path);
    vstr_free(why);
}

/* smtp_pre_loop - read main.cf once, set up DNS */
static void smtp_pre_loop(MAIL_SERVER *server, void *arg)
{
    SMTP_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    SMTP_CONF *sc = &ctx->conf;
    VSTR *why = vstr_alloc(100);

    ctx->server = server;
    signal(SIGPIPE, SIG_IGN);
    sc->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    if (*sc->queue_dir == 0)
        msg_fatal("queue_directory is not set");
    sc->helo_name = mystrdup(mail_conf_str(conf, "smtp_helo_name"));
    if (*sc->helo_name == 0) {
        myfree(sc->helo_name);
        sc->helo_name = mystrdup(mail_conf_str(conf, "myhostname"));
    }
    sc->bind_address = mystrdup(mail_conf_str(conf, "smtp_bind_address"));
    /* The table keeps smtp_tcp_port within 1..65535. */
    sc->tcp_port = (int) mail_conf_int(conf, "smtp_tcp_port");
    sc->connect_timeout = smtp_conf_time(conf, "smtp_connect_timeout");
    sc->helo_timeout = smtp_conf_time(conf, "smtp_helo_timeout");
    sc->mail_timeout = smtp_conf_time(conf, "smtp_mail_timeout");
    sc->rcpt_timeout = smtp_conf_time(conf, "smtp_rcpt_timeout");
    sc->data_init_timeout = smtp_conf_time(conf, "smtp_data_init_timeout");
    sc->data_xfer_timeout = smtp_conf_time(conf, "smtp_data_xfer_timeout");
    sc->data_done_timeout = smtp_conf_time(conf, "smtp_data_done_timeout");
    sc->quit_timeout = smtp_conf_time(conf, "smtp_quit_timeout");
    sc->rset_timeout = smtp_conf_time(conf, "smtp_rset_timeout");
    sc->dns_timeout = smtp_conf_time(conf, "smtp_dns_timeout");
    sc->ipc_timeout = smtp_conf_time(conf, "ipc_timeout");
    sc->cache_time = smtp_conf_time(conf, "smtp_connection_cache_time_limit");
    sc->reuse_limit =
        (int) mail_conf_int(conf, "smtp_connection_reuse_count_limit");
    sc->soft_bounce = mail_conf_bool(conf, "soft_bounce");
    smtp_conf_tls(ctx, conf, why);
    smtp_conf_dns(ctx, conf, why);
    smtp_conf_sts(ctx, conf, why);
    smtp_conf_verp(sc, conf);
    vstr_reset(why);
    if ((ctx->conn_stats =
             conn_stats_open(sc->queue_dir, CONN_STATS_OUT, why)) == NULL)
        msg_warn("%s; connections are not counted for the metrics",
                 vstr_str(why));
    vstr_free(why);
}

/* smtp_retire - finish the requests in hand, then exit */
static void smtp_retire(MAIL_SERVER *server, void *arg)
{
    SMTP_CTX *ctx = arg;

    if (ctx->req_count == 0)
        mail_server_exit(server, 0);
}

/* smtp_ctx_release - free what pre_loop made (ASan leak reports) */
static void smtp_ctx_release(SMTP_CTX *ctx)
{
    SMTP_CONF *sc = &ctx->conf;

    myfree(sc->queue_dir);
    myfree(sc->helo_name);
    myfree(sc->bind_address);
    if (sc->verp_domain)
        myfree(sc->verp_domain);
    if (sc->verp_key)
        sc->verp_key = vstr_free(sc->verp_key);
    myfree(sc->tls_protocols);
    myfree(sc->tls_mandatory_protocols);
    if (sc->tls_verify_match)
        argv_free(sc->tls_verify_match);
    if (sc->tls_secure_match)
        argv_free(sc->tls_secure_match);
    myfree(sc->tls_fprint_digest);
    if (sc->tls_fprint_match)
        argv_free(sc->tls_fprint_match);
    ctx->tls = tls_client_free(ctx->tls);
    ctx->conn_stats = conn_stats_close(ctx->conn_stats);
    if (ctx->tls_policy)
        ctx->tls_policy = maps_free(ctx->tls_policy);
    if (ctx->sasl_passwd)
        ctx->sasl_passwd = maps_free(ctx->sasl_passwd);
    ctx->bounce_classes = bounce_class_rules_free(ctx->bounce_classes);
}

/* main - the SMTP delivery agent */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = smtp_pre_loop,
        .on_accept = smtp_accept,
        .on_retire = smtp_retire,
    };
    /* Static storage: the DNS context and every connection and request
       (ctx.sessions, ctx.reqs) in whatever state a SIGTERM finds them stay
       reachable after mail_server_main() freed the event base they hang
       on (their events cannot be freed then). */
    static SMTP_CTX ctx;
    int status;

    status = mail_server_main(argc, argv, "smtp", &ops, &ctx);
    smtp_ctx_release(&ctx);
    return status;
}
