/*
 * sluice_check - `sluice check`: validate the instance and repair the queue
 *
 * Postfix's `postfix check` is the model. In order:
 *
 *   main.cf     read and checked as every program reads it (a bad value is
 *               an error naming the parameter and the line); a name that
 *               nothing uses is a warning; every table named by a
 *               table-valued parameter, or by a check_*_access word of
 *               smtpd's restriction lists, is opened (a missing .db is a
 *               warning that says to run `sluice map`); a word in a
 *               restriction list that smtpd does not know is an error
 *               naming the main.cf line, and so is a check in
 *               smtpd_authentication_checks that smtpd does not do;
 *               events_webhook_routes is parsed by the events daemon's
 *               parser (a bad entry is an error), tracking URLs as cleanup
 *               reads them; smtp_source_pool_allow_maps entries naming a
 *               pool that does not exist are warnings
 *   master.cf   parsed as master parses it; a service whose program is not
 *               an executable in daemon_directory is an error; a daemon
 *               main.cf asks for that no service runs (metrics_listen
 *               without metrics ...: master_unserved.h) is a warning
 *   queue       every queue directory (hash subdirectories too) exists,
 *               belongs to mail_owner and has mode 0700, as `sluice init`
 *               makes them, except pid/ when root checks an instance of
 *               another mail_owner (root's master keeps its pid file
 *               there: root's, 0755), maildrop/ (1730) and public/ (0710)
 *               when the group setgid_group exists: they belong to that
 *               group, through which a setgid sendmail drops mail and
 *               reaches qmgr (INSTALL). queue_directory itself may belong
 *               to root (then mode 0755, as Postfix has it, so mail_owner
 *               and users reach what is inside) or to mail_owner, and must
 *               not be writable by group or others. What is missing is created and a wrong owner, group
 *               or mode fixed, one "fixed:" line each; a file whose name
 *               is not a queue ID is reported and left where it is.
 *               mail_owner may rename anything in the directories it
 *               owns at any moment, so the queue is walked from
 *               queue_directory down by descriptor (openat with
 *               O_NOFOLLOW) and changed only through those descriptors
 *               (fchown, fchmod): a symbolic link or a non-directory
 *               where a directory should be is an error, left alone
 *
 * Errors and warnings go to stderr ("sluice: error: ...", "sluice:
 * warning: ..."), repairs to stdout ("sluice: fixed: ..."). Nothing is
 * printed when all is well. The exit status is 1 when there was an error
 * (repairs and warnings do not count), else 0.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>

#include "argv.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "maps.h"
#include "maps_priv.h"
#include "bounce_class.h"
#include "events.h"
#include "events_export.h"
#include "shaping.h"
#include "shaping_auto.h"
#include "shaping_redis.h"
#include "warmup.h"
#include "master_cf.h"
#include "master_unserved.h"
#include "match_list.h"
#include "milter.h"
#include "mymalloc.h"
#include "qid.h"
#include "safe_file.h"
#include "sluice.h"
#include "smtpd_words.h"
#include "source_pool.h"
#include "tls_client.h"
#include "tls_server.h"
#include "track_token.h"
#include "vstr.h"

#define SLUICE_CHECK_QUEUE_MODE 0700 /* as sluice init makes them */
#define SLUICE_CHECK_TMP_PREFIX ".tmp." /* a queue file being written */

/* The parameters whose values are lists of type:name tables. */
typedef struct SLUICE_CHECK_TABLE {
    const char *param;
    int flags;
} SLUICE_CHECK_TABLE;

static const SLUICE_CHECK_TABLE sluice_check_tables[] = {
    {"alias_maps", MAP_FLAG_ALIAS},
    {"local_recipient_maps", MAP_FLAG_NONE},
    {"transport_maps", MAP_FLAG_NONE},
    {"canonical_maps", MAP_FLAG_NONE},
    {"sender_canonical_maps", MAP_FLAG_NONE},
    {"recipient_canonical_maps", MAP_FLAG_NONE},
    {"virtual_alias_maps", MAP_FLAG_NONE},
    {"virtual_mailbox_maps", MAP_FLAG_NONE},
    {"virtual_uid_maps", MAP_FLAG_NONE},
    {"virtual_gid_maps", MAP_FLAG_NONE},
    {"sender_dependent_relayhost_maps", MAP_FLAG_NONE},
    {"smtp_source_pool_maps", MAP_FLAG_NONE},
    {"smtp_source_pool_allow_maps", MAP_FLAG_NONE},
    {"header_checks", MAP_FLAG_NONE},
    {"body_checks", MAP_FLAG_NONE},
    {"smtp_tls_policy_maps", MAP_FLAG_NONE},
    {"smtp_sasl_password_maps", MAP_FLAG_NONE},
    {"dkim_signing_maps", MAP_FLAG_NONE},
    {"track_tenant_maps", MAP_FLAG_NONE},
};

typedef struct SLUICE_CHECK {
    int errors;
    const char *queue_dir;
    uid_t owner;
    const char *owner_name;
    bool root_master; /* root runs master for mail_owner */
    gid_t drop_gid; /* setgid_group, when it exists */
    const char *drop_group; /* its name; NULL: none */
} SLUICE_CHECK;

/* What one queue directory should be. */
typedef struct SLUICE_CHECK_WANT {
    mode_t mode;
    bool any_owner; /* root or mail_owner */
    bool top; /* queue_directory: mode is a mask */
    gid_t gid; /* (gid_t) -1: any group */
    bool root; /* root's, not mail_owner's */
} SLUICE_CHECK_WANT;

/* sluice_check_report - one line "sluice: WHAT: text" to fp */
static void SLUICE_PRINTF(3, 0)
    sluice_check_report(FILE *fp, const char *what, const char *fmt, va_list ap)
{
    VSTR *line = vstr_alloc(100);

    vstr_vsprintf_append(line, fmt, ap);
    for (char *cp = vstr_str(line); *cp; cp++)
        if (*cp == '\n')
            *cp = ' ';
    (void) fprintf(fp, "sluice: %s: %s\n", what, vstr_str(line));
    (void) fflush(fp);
    vstr_free(line);
}

/* sluice_check_error - report an error (the exit status will be 1) */
static void SLUICE_PRINTF(2, 3)
    sluice_check_error(SLUICE_CHECK *chk, const char *fmt, ...)
{
    va_list ap;

    chk->errors++;
    va_start(ap, fmt);
    sluice_check_report(stderr, "error", fmt, ap);
    va_end(ap);
}

/* sluice_check_warn - report a warning */
static void SLUICE_PRINTF(1, 2) sluice_check_warn(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sluice_check_report(stderr, "warning", fmt, ap);
    va_end(ap);
}

/* sluice_check_fixed - report a repair */
static void SLUICE_PRINTF(1, 2) sluice_check_fixed(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sluice_check_report(stdout, "fixed", fmt, ap);
    va_end(ap);
}

/* sluice_check_table - open one table spec of param (each spec once) */
static void sluice_check_table(const char *param, const char *spec, int flags,
                               ARGV *seen, VSTR *why)
{
    MAPS *maps;

    /* local_recipient_maps repeats $alias_maps: say it once. */
    for (size_t k = 0; k < seen->argc; k++)
        if (strcmp(seen->argv[k], spec) == 0)
            return;
    argv_add(seen, spec);
    vstr_reset(why);
    if ((maps = maps_create(param, spec, flags, why)) != NULL) {
        maps_free(maps);
    } else if (strncasecmp(spec, "hash:", 5) == 0 ||
               strncasecmp(spec, "btree:", 6) == 0) {
        sluice_check_warn("%s (run: sluice map %s)", vstr_str(why), spec);
    } else {
        sluice_check_warn("%s", vstr_str(why));
    }
}

/* The smtpd restriction lists: check_*_access words take a table. */
static const char *const sluice_check_restrictions[] = {
    "smtpd_client_restrictions",    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
};

/* sluice_check_tables - open every table of the table-valued parameters
   and of the access checks in smtpd's restriction lists */
static void sluice_check_open_tables(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    ARGV *seen = argv_alloc(10);
    VSTR *why = vstr_alloc(100);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(sluice_check_tables); i++) {
        const SLUICE_CHECK_TABLE *tp = sluice_check_tables + i;
        const char *value = mail_conf_str(conf, tp->param);
        ARGV *specs = maps_split(value, why);

        if (specs == NULL) {
            sluice_check_error(chk, "%s: unbalanced '{' in \"%s\"", tp->param,
                               value);
            continue;
        }
        for (size_t j = 0; j < specs->argc; j++)
            sluice_check_table(tp->param, specs->argv[j], tp->flags, seen, why);
        argv_free(specs);
    }
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(sluice_check_restrictions); i++) {
        const char *param = sluice_check_restrictions[i];
        const char *value = mail_conf_str(conf, param);
        ARGV *words = maps_split(value, why);

        if (words == NULL) {
            sluice_check_error(chk, "%s: unbalanced '{' in \"%s\"", param,
                               value);
            continue;
        }
        for (size_t j = 0; j < words->argc; j++) {
            const char *word = words->argv[j];
            const SMTPD_WORD_INFO *known = smtpd_word_find(word);

            if (known == NULL) {
                mail_conf_origin(conf, param, why);
                sluice_check_error(chk,
                                   "%s: unknown restriction \"%s\" (smtpd "
                                   "does not implement it and would answer "
                                   "451 where it is met)",
                                   vstr_str(why), word);
                continue;
            }
            if (!known->table)
                continue;
            if (j + 1 >= words->argc ||
                strchr(words->argv[j + 1], ':') == NULL) {
                mail_conf_origin(conf, param, why);
                sluice_check_error(chk, "%s: %s needs a table (type:name)",
                                   vstr_str(why), word);
                continue;
            }
            sluice_check_table(param, words->argv[++j], MAP_FLAG_NONE, seen,
                               why);
        }
        argv_free(words);
    }
    vstr_free(why);
    argv_free(seen);
}

/* sluice_check_shaping - smtp_shaping_maps must parse, every line (master
   refuses to start or reload with a malformed one; a qmgr that meets one
   all the same runs without shaping rules and `sluice shaping` says so) */
static void sluice_check_shaping(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_RULES *rules = shaping_rules_load(
        "smtp_shaping_maps", mail_conf_str(conf, "smtp_shaping_maps"), why);
    SHAPING_AUTO_RULES *auto_rules;

    if (rules == NULL && vstr_len(why) > 0)
        sluice_check_error(chk, "%s", vstr_str(why));
    if (shaping_rules_providers(rules) > 0 &&
        mail_conf_bool(conf, "disable_dns_lookups"))
        sluice_check_warn("smtp_shaping_maps: provider rules are not matched "
                          "while disable_dns_lookups = yes (qmgr finds a "
                          "provider by its MX hosts)");
    shaping_rules_free(rules);
    auto_rules = shaping_auto_load(
        "smtp_shaping_automation_maps",
        mail_conf_str(conf, "smtp_shaping_automation_maps"), why);
    if (auto_rules == NULL && vstr_len(why) > 0)
        sluice_check_error(chk, "%s", vstr_str(why));
    shaping_auto_free(auto_rules);
    if (*mail_conf_str(conf, "shaping_redis_server")) {
        SHAPING_REDIS_ADDR addr;

        if (shaping_redis_addr_parse(
                mail_conf_str(conf, "shaping_redis_server"), &addr, why) < 0)
            sluice_check_error(chk, "%s", vstr_str(why));
        shaping_redis_addr_done(&addr);
    }
    vstr_free(why);
}

/* sluice_check_bounce_classes - bounce_classes_file must parse, every
   line (master refuses to start or reload with a malformed one; a daemon
   that meets one all the same warns and uses the built-in rules) */
static void sluice_check_bounce_classes(SLUICE_CHECK *chk,
                                        const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);
    BOUNCE_CLASS_RULES *rules = bounce_class_rules_load(
        mail_conf_str(conf, "bounce_classes_file"), why);

    if (rules == NULL)
        sluice_check_error(chk, "bounce_classes_file: %s", vstr_str(why));
    bounce_class_rules_free(rules);
    vstr_free(why);
}

/* sluice_check_pools - smtp_source_pools must parse, name a default pool
   that exists, and list only addresses this machine has (a source it
   cannot bind is refused here, with the table line; at run time smtp's
   bind fails and qmgr sends from the pool's other sources) */
static void sluice_check_pools(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);
    SOURCE_POOLS *pools = source_pools_load(
        "smtp_source_pools", mail_conf_str(conf, "smtp_source_pools"), why);
    const char *def = mail_conf_str(conf, "default_source_pool");

    if (pools == NULL) {
        if (vstr_len(why) > 0)
            sluice_check_error(chk, "%s", vstr_str(why));
        else if (*def)
            sluice_check_error(chk,
                               "default_source_pool = %s, but "
                               "smtp_source_pools is empty",
                               def);
        vstr_free(why);
        return;
    }
    if (*def && source_pools_find(pools, def) == NULL)
        sluice_check_error(chk,
                           "default_source_pool = %s: no such pool in "
                           "smtp_source_pools",
                           def);
    for (size_t i = 0; i < pools->count; i++) {
        const SOURCE_POOL *pool = &pools->pools[i];

        for (size_t j = 0; j < pool->count; j++)
            if (source_pool_addr_local(&pool->sources[j], why) < 0)
                sluice_check_error(chk,
                                   "smtp_source_pools: %s, line %d: pool %s: "
                                   "source %s is not an address of this "
                                   "machine (%s)",
                                   pool->path, pool->lineno, pool->name,
                                   pool->sources[j].address, vstr_str(why));
    }
    source_pools_free(pools);
    vstr_free(why);
}

/* sluice_check_reputation - the reputation_* values parse and every line
   of smtp_source_warmup_maps does (qmgr would run without them) */
static void sluice_check_reputation(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);
    REPUTATION_CONF rep;
    WARMUP_RULES *rules;

    if (reputation_conf_parse(
            &rep, mail_conf_str(conf, "reputation_window"),
            mail_conf_int(conf, "reputation_min_attempts"),
            mail_conf_str(conf, "reputation_hard_bounce_ratio"),
            mail_conf_str(conf, "reputation_block_ratio"),
            mail_conf_str(conf, "reputation_pause_time"),
            mail_conf_str(conf, "reputation_probe_rate"),
            mail_conf_int(conf, "reputation_probe_attempts"), why) < 0)
        sluice_check_error(chk, "%s", vstr_str(why));
    rules =
        warmup_rules_load("smtp_source_warmup_maps",
                          mail_conf_str(conf, "smtp_source_warmup_maps"), why);
    if (rules == NULL && vstr_len(why) > 0)
        sluice_check_error(chk, "%s", vstr_str(why));
    warmup_rules_free(rules);
    vstr_free(why);
}

/* sluice_check_auth - smtpd_authentication_checks names only what smtpd
   does (spf, dkim, dmarc): smtpd would only log that it ignores another
   word */
static void sluice_check_auth(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    ARGV *words = mail_conf_list(conf, "smtpd_authentication_checks");
    VSTR *where = vstr_alloc(100);

    mail_conf_origin(conf, "smtpd_authentication_checks", where);
    for (size_t i = 0; i < words->argc; i++) {
        const char *word = words->argv[i];

        if (strcasecmp(word, "spf") == 0 || strcasecmp(word, "dkim") == 0 ||
            strcasecmp(word, "dmarc") == 0)
            continue;
        sluice_check_error(chk,
                           "%s: unknown check \"%s\" (known: spf, dkim, "
                           "dmarc)",
                           vstr_str(where), word);
    }
    vstr_free(where);
    argv_free(words);
}

/* sluice_check_milters - each smtpd_milters and non_smtpd_milters entry
   is a milter address smtpd (or pickup) can use; milter_default_action
   is known */
static void sluice_check_milters(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    static const char *const params[] = {"smtpd_milters", "non_smtpd_milters"};
    VSTR *where = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    MILTER_DEFAULT action;

    for (size_t p = 0; p < sizeof(params) / sizeof(params[0]); p++) {
        ARGV *list = mail_conf_list(conf, params[p]);

        mail_conf_origin(conf, params[p], where);
        for (size_t i = 0; i < list->argc; i++) {
            MILTER_ADDR addr;

            if (milter_addr_parse(list->argv[i], &addr, why) < 0)
                sluice_check_error(chk, "%s: %s", vstr_str(where),
                                   vstr_str(why));
            else
                milter_addr_free(&addr);
        }
        argv_free(list);
    }
    if (milter_default_parse(mail_conf_str(conf, "milter_default_action"),
                             &action) < 0) {
        mail_conf_origin(conf, "milter_default_action", where);
        sluice_check_error(chk,
                           "%s: unknown action \"%s\" (tempfail, accept or"
                           " reject)",
                           vstr_str(where),
                           mail_conf_str(conf, "milter_default_action"));
    }
    vstr_free(why);
    vstr_free(where);
}

/* What sluice_check_tls_policy_line needs. */
typedef struct SLUICE_CHECK_POLICY {
    SLUICE_CHECK *chk;
    const char *digest;
} SLUICE_CHECK_POLICY;

/* sluice_check_tls_policy_line - one smtp_tls_policy_maps entry as smtp
   parses it (smtp would defer mail for that next hop); every bad line is
   reported, the reading goes on */
static int sluice_check_tls_policy_line(void *context, const char *path,
                                        const char *key, const char *value,
                                        int lineno, VSTR *why)
{
    SLUICE_CHECK_POLICY *pc = context;
    TLS_POLICY policy;
    VSTR *reason = vstr_alloc(100);

    if (tls_policy_parse(value, pc->digest, &policy, reason) < 0)
        sluice_check_error(pc->chk,
                           "smtp_tls_policy_maps: %s line %d: entry for %s: "
                           "%s (mail for %s is deferred)",
                           path, lineno, key, vstr_str(reason), key);
    else
        tls_policy_free(&policy);
    vstr_free(reason);
    return 0;
}

/* sluice_check_text_entries - call fn on every entry of param's text
   tables (texthash, and the source files of hash and btree: the others
   cannot be listed); a file that cannot be read is an error */
static void sluice_check_text_entries(SLUICE_CHECK *chk, const MAIL_CONF *conf,
                                      const char *param, MAP_TEXT_FN fn,
                                      void *context)
{
    VSTR *why = vstr_alloc(100);
    ARGV *specs = maps_split(mail_conf_str(conf, param), why);
    struct stat st;

    for (size_t i = 0; specs && i < specs->argc; i++) {
        const char *spec = specs->argv[i];
        const char *colon = strchr(spec, ':');
        size_t type_len = colon ? (size_t) (colon - spec) : 0;

        if (!((type_len == 8 && strncasecmp(spec, "texthash", 8) == 0) ||
              (type_len == 4 && strncasecmp(spec, "hash", 4) == 0) ||
              (type_len == 5 && strncasecmp(spec, "btree", 5) == 0)))
            continue;
        /* No text file (only a .db): sluice_check_open_tables opens it. */
        if (stat(colon + 1, &st) < 0)
            continue;
        vstr_reset(why);
        if (map_text_read(colon + 1, MAP_FLAG_NONE, fn, context, &st, why) < 0)
            sluice_check_error(chk, "%s: %s", param, vstr_str(why));
    }
    if (specs)
        argv_free(specs);
    vstr_free(why);
}

/* sluice_check_tls_policies - the entries of smtp_tls_policy_maps's text
   tables */
static void sluice_check_tls_policies(SLUICE_CHECK *chk, const MAIL_CONF *conf,
                                      const char *digest)
{
    SLUICE_CHECK_POLICY pc = {chk, digest};

    sluice_check_text_entries(chk, conf, "smtp_tls_policy_maps",
                              sluice_check_tls_policy_line, &pc);
}

/* sluice_check_pool_allow_line - one smtp_source_pool_allow_maps entry:
   a key that is never looked up, or a pool that smtp_source_pools does
   not have, is a warning (context: the pools, NULL when there are none).
   Not an error: nothing fails at run time, and an entry may be written
   before its pool is made; but a typo there silently refuses the pool to
   whom the entry was meant for, so it is said. */
static int sluice_check_pool_allow_line(void *context, const char *path,
                                        const char *key, const char *value,
                                        int lineno, VSTR *why)
{
    const SOURCE_POOLS *pools = context;
    ARGV *names = argv_split(value, " \t\r\n,");

    if (!(strcmp(key, "mynetworks") == 0 || strcmp(key, "local") == 0 ||
          (strncmp(key, "sasl:", 5) == 0 && key[5] != 0) ||
          (strncmp(key, "tenant:", 7) == 0 && key[7] != 0)))
        sluice_check_warn("smtp_source_pool_allow_maps: %s line %d: key "
                          "\"%s\" is never looked up (sasl:USER, "
                          "tenant:TENANT, mynetworks or local)",
                          path, lineno, key);
    for (size_t i = 0; i < names->argc; i++) {
        const char *name = names->argv[i];

        if (strcmp(name, SOURCE_POOL_ALLOW_ANY) == 0 ||
            (pools != NULL && source_pools_find(pools, name) != NULL))
            continue;
        sluice_check_warn("smtp_source_pool_allow_maps: %s line %d: %s: no "
                          "pool \"%s\" in smtp_source_pools (%s naming it is "
                          "refused)",
                          path, lineno, key, name, key);
    }
    argv_free(names);
    return 0;
}

/* sluice_check_pool_allow - every entry of smtp_source_pool_allow_maps's
   text tables names pools that exist (a smtp_source_pools that cannot be
   read is sluice_check_pools's error) */
static void sluice_check_pool_allow(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);
    SOURCE_POOLS *pools;

    if (*mail_conf_str(conf, "smtp_source_pool_allow_maps") == 0) {
        vstr_free(why);
        return;
    }
    pools = source_pools_load("smtp_source_pools",
                              mail_conf_str(conf, "smtp_source_pools"), why);
    if (pools != NULL || vstr_len(why) == 0)
        sluice_check_text_entries(chk, conf, "smtp_source_pool_allow_maps",
                                  sluice_check_pool_allow_line, pools);
    source_pools_free(pools);
    vstr_free(why);
}

/* The kinds of events (global/events.h) a route's kind:KIND may name. */
static const char *const sluice_check_event_kinds[] = {
    EVENTS_RECEIVED,   EVENTS_DEFERRED,          EVENTS_DELIVERED,
    EVENTS_BOUNCED,    EVENTS_EXPIRED,           EVENTS_RETURNED,
    EVENTS_OPENED,     EVENTS_CLICKED,           EVENTS_UNSUBSCRIBED,
    EVENTS_SUPPRESSED, EVENTS_COMPLAINED,        EVENTS_FEEDBACK_REPORT,
    EVENTS_REJECTED,   EVENTS_FEEDBACK_UNPARSED,
};

/* sluice_check_event_routes - every events_webhook_routes entry as the
   events daemon and `sluice events status` parse it
   (events_export_route_parse): a malformed one is an error (the events
   daemon will not run); a kind:KIND that no event has is a warning (that
   term picks nothing) */
static void sluice_check_event_routes(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    ARGV *routes = mail_conf_list(conf, "events_webhook_routes");
    VSTR *where = vstr_alloc(100);
    VSTR *selector = vstr_alloc(40);
    VSTR *url = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);

    mail_conf_origin(conf, "events_webhook_routes", where);
    for (size_t i = 0; i < routes->argc; i++) {
        ARGV *terms;

        if (events_export_route_parse(routes->argv[i], selector, url, why) <
            0) {
            sluice_check_error(chk,
                               "%s: \"%s\": %s (the events daemon will not "
                               "run)",
                               vstr_str(where), routes->argv[i], vstr_str(why));
            continue;
        }
        terms = argv_split(vstr_str(selector), "+");
        for (size_t j = 0; j < terms->argc; j++) {
            const char *term = terms->argv[j];
            bool known = false;

            if (strncmp(term, "kind:", 5) != 0)
                continue;
            for (size_t k = 0;
                 !known && k < SLUICE_ARRAY_LEN(sluice_check_event_kinds); k++)
                known = strcmp(term + 5, sluice_check_event_kinds[k]) == 0;
            if (!known)
                sluice_check_warn("%s: \"%s\": no event is of kind \"%s\" "
                                  "(the route picks nothing)",
                                  vstr_str(where), routes->argv[i], term + 5);
        }
        argv_free(terms);
    }
    vstr_free(why);
    vstr_free(url);
    vstr_free(selector);
    vstr_free(where);
    argv_free(routes);
}

/* sluice_check_tracking - tracking_base_url and unsubscribe_base_url are
   http or https URLs (track_url_ok, as cleanup reads them: cleanup will
   not start with another, and no mail is accepted) */
static void sluice_check_tracking(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    static const char *const params[] = {"tracking_base_url",
                                         "unsubscribe_base_url"};
    VSTR *where = vstr_alloc(100);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(params); i++) {
        const char *value = mail_conf_str(conf, params[i]);

        if (*value == 0 || track_url_ok(value))
            continue;
        mail_conf_origin(conf, params[i], where);
        sluice_check_error(chk,
                           "%s = %s: not an http or https URL (cleanup will "
                           "not start)",
                           vstr_str(where), value);
    }
    vstr_free(where);
}

/* sluice_check_webhook_secret - with webhooks configured, the events
   daemon reads events_webhook_secret_file's first line (events/webhook.c):
   both it and events_webhook_secret set, a file that cannot be read, or
   an empty first line, and the daemon will not run. Read here as whoever
   runs check; the daemon reads it as mail_owner. */
static void sluice_check_webhook_secret(SLUICE_CHECK *chk,
                                        const MAIL_CONF *conf)
{
    const char *path = mail_conf_str(conf, "events_webhook_secret_file");
    EVENTS_EXPORT_LIST *exports;
    bool webhooks = false;
    char buf[1024];
    FILE *fp;

    if (*path == 0)
        return;
    exports = events_export_list(conf);
    for (size_t i = 0; !webhooks && i < exports->count; i++)
        webhooks = strcmp(exports->exports[i].kind, EVENTS_EXPORT_WEBHOOK) == 0;
    events_export_list_free(exports);
    if (!webhooks)
        return;
    if (*mail_conf_str(conf, "events_webhook_secret")) {
        sluice_check_error(chk, "set events_webhook_secret or "
                                "events_webhook_secret_file, not both (the "
                                "events daemon will not run)");
        return;
    }
    if ((fp = fopen(path, "r")) == NULL) {
        sluice_check_error(chk,
                           "events_webhook_secret_file: cannot read %s: %s "
                           "(the events daemon will not run)",
                           path, strerror(errno));
        return;
    }
    if (fgets(buf, sizeof(buf), fp) == NULL)
        buf[0] = 0;
    (void) fclose(fp);
    if (strcspn(buf, "\r\n") == 0)
        sluice_check_error(chk,
                           "events_webhook_secret_file: %s: the first line "
                           "is empty (the events daemon will not run)",
                           path);
    explicit_bzero(buf, sizeof(buf));
}

/* sluice_check_dns_support - smtp_dns_support_level as smtp resolves it:
   an unknown value, or dnssec without a readable trust anchor, is an
   error (smtp will not start); dane without dnssec, and a level that
   overrides disable_dns_lookups, are warnings */
static void sluice_check_dns_support(SLUICE_CHECK *chk, const MAIL_CONF *conf,
                                     TLS_LEVEL tls_level)
{
    const char *value = mail_conf_str(conf, "smtp_dns_support_level");
    bool disable = mail_conf_bool(conf, "disable_dns_lookups");
    VSTR *why = vstr_alloc(100);
    VSTR *where = vstr_alloc(100);
    const char *anchor;
    TLS_DNS_SUPPORT level = tls_dns_support(
        value, disable, mail_conf_str(conf, "dns_trust_anchor_file"), &anchor,
        why);

    mail_conf_origin(conf, "smtp_dns_support_level", where);
    if (level == TLS_DNS_INVALID) {
        sluice_check_error(chk, "%s: %s (smtp will not start)", vstr_str(where),
                           vstr_str(why));
    } else if (level == TLS_DNS_DNSSEC && access(anchor, R_OK) < 0) {
        sluice_check_error(chk,
                           "smtp_dns_support_level = dnssec: trust anchor "
                           "file %s: %s (smtp will not start)",
                           anchor, strerror(errno));
    } else {
        if (*value && disable && level != TLS_DNS_DISABLED)
            sluice_check_warn("%s: smtp makes DNS lookups although "
                              "disable_dns_lookups = yes (a "
                              "smtp_dns_support_level that is set wins, as "
                              "in Postfix)",
                              vstr_str(where));
        if ((tls_level == TLS_LEV_DANE || tls_level == TLS_LEV_DANE_ONLY) &&
            level != TLS_DNS_DNSSEC)
            sluice_check_warn(
                "smtp_tls_security_level = %s, but "
                "smtp_dns_support_level is %s, not dnssec: %s",
                tls_level_name(tls_level), tls_dns_support_name(level),
                tls_level == TLS_LEV_DANE ? "dane acts as may"
                                          : "dane-only defers every delivery");
    }
    vstr_free(where);
    vstr_free(why);
}

/* sluice_check_smtp_tls - the smtp client's TLS level, protocol lists,
   fingerprints and policy entries: what the smtp agent would refuse to
   start with, or defer mail for (global/tls_client.h) */
static void sluice_check_smtp_tls(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    static const char *const protocols[] = {"smtp_tls_protocols",
                                            "smtp_tls_mandatory_protocols"};
    const char *level = mail_conf_str(conf, "smtp_tls_security_level");
    const char *digest = mail_conf_str(conf, "smtp_tls_fingerprint_digest");
    TLS_LEVEL value = *level ? tls_level_parse(level) : TLS_LEV_NONE;
    VSTR *why = vstr_alloc(100);
    VSTR *where = vstr_alloc(100);
    ARGV *fprints = argv_alloc(2);
    size_t fprint_len = tls_fprint_digest_len(digest);
    int lo, hi;

    if (value == TLS_LEV_INVALID)
        sluice_check_error(chk,
                           "smtp_tls_security_level: invalid level \"%s\" "
                           "(none, may, encrypt, fingerprint, dane, "
                           "dane-only, verify or secure)",
                           level);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(protocols); i++)
        if (tls_protocols_parse(mail_conf_str(conf, protocols[i]), &lo, &hi,
                                why) < 0)
            sluice_check_error(chk, "%s: %s", protocols[i], vstr_str(why));
    if (fprint_len == 0) {
        mail_conf_origin(conf, "smtp_tls_fingerprint_digest", where);
        sluice_check_error(chk,
                           "%s: unknown digest \"%s\" (sha256, sha1, md5, "
                           "sha512 ...)",
                           vstr_str(where), digest);
    } else {
        if (tls_fprint_list(
                mail_conf_str(conf, "smtp_tls_fingerprint_cert_match"),
                " \t\r\n,|", fprint_len, fprints, why) < 0) {
            mail_conf_origin(conf, "smtp_tls_fingerprint_cert_match", where);
            sluice_check_error(chk, "%s: %s", vstr_str(where), vstr_str(why));
        } else if (value == TLS_LEV_FPRINT && fprints->argc == 0) {
            sluice_check_error(chk,
                               "smtp_tls_security_level = fingerprint, but "
                               "smtp_tls_fingerprint_cert_match is empty "
                               "(smtp will not start)");
        }
        sluice_check_tls_policies(chk, conf, digest);
    }
    sluice_check_dns_support(chk, conf, value);
    argv_free(fprints);
    vstr_free(where);
    vstr_free(why);
}

/* A certificate smtpd serves that ends sooner than this is a warning. */
#define SLUICE_CHECK_CERT_DAYS 14

/* sluice_check_smtpd_tls - main.cf's smtpd certificate as smtpd would
   load it (global/tls_server.c): one that cannot be loaded, or a key that
   does not match it, is an error where smtpd would refuse to start
   (level encrypt, wrapper mode) and a warning at level may (smtpd then
   does not offer STARTTLS); a certificate that has expired or ends within
   SLUICE_CHECK_CERT_DAYS days is a warning */
static void sluice_check_smtpd_tls(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    const char *level = mail_conf_str(conf, "smtpd_tls_security_level");
    bool wrapper = mail_conf_bool(conf, "smtpd_tls_wrappermode");
    bool mandatory = wrapper || (*level && strcasecmp(level, "none") != 0 &&
                                 strcasecmp(level, "may") != 0);
    VSTR *why;
    TLS_SERVER *tls;
    time_t end, now = time(NULL);
    char date[32];

    /* The levels smtpd_tls_init (smtpd.c) takes; another is fatal there. */
    if (*level && strcasecmp(level, "none") != 0 &&
        strcasecmp(level, "may") != 0 && strcasecmp(level, "encrypt") != 0 &&
        strcasecmp(level, "verify") != 0 && strcasecmp(level, "secure") != 0 &&
        strcasecmp(level, "fingerprint") != 0) {
        sluice_check_error(chk,
                           "smtpd_tls_security_level: unknown level \"%s\" "
                           "(none, may or encrypt; smtpd will not start)",
                           level);
        return;
    }
    if (!wrapper && (*level == 0 || strcasecmp(level, "none") == 0))
        return;
    why = vstr_alloc(100);
    if ((tls = tls_server_create(conf, mandatory, why)) == NULL) {
        if (mandatory)
            sluice_check_error(chk, "%s = %s: %s (smtpd will not start)",
                               wrapper ? "smtpd_tls_wrappermode"
                                       : "smtpd_tls_security_level",
                               wrapper ? "yes" : level, vstr_str(why));
        else
            sluice_check_warn("smtpd_tls_security_level = %s: %s (smtpd will"
                              " not offer STARTTLS)",
                              level, vstr_str(why));
        vstr_free(why);
        return;
    }
    if ((end = tls_server_expiry(tls)) >= 0) {
        struct tm tm;

        strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime_r(&end, &tm));
        if (end <= now)
            sluice_check_warn("smtpd's TLS certificate expired on %s", date);
        else if (end - now < SLUICE_CHECK_CERT_DAYS * 86400)
            sluice_check_warn("smtpd's TLS certificate expires on %s (in %lld"
                              " days)",
                              date, (long long) ((end - now) / 86400));
    }
    tls_server_free(tls);
    vstr_free(why);
}

/* sluice_check_unserved - a daemon main.cf asks for that master.cf does
   not run is a warning (master says the same at start) */
static void sluice_check_unserved(const MASTER_CF *cf, const MAIL_CONF *conf)
{
    ARGV *warnings = argv_alloc(2);

    master_unserved(cf, conf, warnings);
    for (size_t i = 0; i < warnings->argc; i++)
        sluice_check_warn("%s", warnings->argv[i]);
    argv_free(warnings);
}

/* sluice_check_master_cf - parse master.cf; every program must exist */
static void sluice_check_master_cf(SLUICE_CHECK *chk, const char *config_dir,
                                   const MAIL_CONF *conf)
{
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    VSTR *program = vstr_alloc(100);
    const char *daemon_dir = mail_conf_str(conf, "daemon_directory");
    MASTER_CF *cf;

    vstr_sprintf(path, "%s/master.cf", config_dir);
    cf =
        master_cf_read(vstr_str(path),
                       (int) mail_conf_int(conf, "default_process_limit"), why);
    if (cf == NULL) {
        sluice_check_error(chk, "%s", vstr_str(why));
    } else {
        for (size_t i = 0; i < cf->count; i++) {
            const MASTER_ENT *ent = cf->ents + i;
            const char *command = ent->argv->argv[0];

            if (command[0] == '/')
                vstr_cpy(program, command);
            else
                vstr_sprintf(program, "%s/%s", daemon_dir, command);
            if (access(vstr_str(program), X_OK) < 0)
                sluice_check_error(chk,
                                   "%s line %d: service %s: program %s: %s",
                                   vstr_str(path), ent->line, ent->name,
                                   vstr_str(program), strerror(errno));
        }
        sluice_check_unserved(cf, conf);
        master_cf_free(cf);
    }
    vstr_free(program);
    vstr_free(why);
    vstr_free(path);
}

/* sluice_check_owner - uid of mail_owner (a name, or a number when the
   user has no passwd entry); -1 when unknown */
static int sluice_check_owner(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    const char *name = mail_conf_str(conf, "mail_owner");
    struct passwd *pw;
    char *end;
    long uid;

    VSTR *why = vstr_alloc(100);
    int status = 0;

    chk->owner_name = name;
    errno = 0;
    uid = strtol(name, &end, 10);
    if ((pw = getpwnam(name)) != NULL) {
        chk->owner = pw->pw_uid;
    } else if (*name && *end == 0 && errno == 0 && uid >= 0 && uid < INT_MAX) {
        chk->owner = (uid_t) uid;
    } else {
        (void) mail_conf_owner(conf, why);
        sluice_check_error(chk, "%s", vstr_str(why));
        status = -1;
    }
    /* No daemon runs as root (master refuses to start). */
    if (status == 0 && chk->owner == 0) {
        (void) mail_conf_owner(conf, why);
        sluice_check_error(chk, "%s", vstr_str(why));
    }
    vstr_free(why);
    return status;
}

/* sluice_check_open_dir - open name in parent_fd as a directory without
   following a symbolic link; -1 with errno. A directory that mail_owner
   owns may be swapped for a symbolic link at any moment: every change is
   made through the descriptor (fchown, fchmod), never through a path.
   Only queue_directory itself, the administrator's own name for it, may
   be a symbolic link (follow). */
static int sluice_check_open_dir(int parent_fd, const char *name, bool follow)
{
    return openat(parent_fd, name,
                  O_RDONLY | O_DIRECTORY | O_CLOEXEC |
                      (follow ? 0 : O_NOFOLLOW));
}

/* sluice_check_not_dir - report what name in parent_fd is, when it cannot
   be opened as a directory (open_errno); nothing is changed */
static void sluice_check_not_dir(SLUICE_CHECK *chk, int parent_fd,
                                 const char *name, const char *path,
                                 int open_errno)
{
    struct stat st;

    if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        !S_ISDIR(st.st_mode))
        sluice_check_error(chk, "%s: not a directory%s; left alone", path,
                           S_ISLNK(st.st_mode) ? " (a symbolic link)" : "");
    else
        sluice_check_error(chk, "open %s: %s", path, strerror(open_errno));
}

/* sluice_check_dir - make name in parent_fd (path: its full name, for
   messages) a directory as want says: create it when missing, fix owner,
   group and mode. Returns the open directory (caller closes), or -1 when
   it is not what it should be (a symbolic link, not a directory) or
   cannot be fixed */
static int sluice_check_dir(SLUICE_CHECK *chk, int parent_fd, const char *name,
                            const char *path, const SLUICE_CHECK_WANT *want)
{
    struct stat st;
    mode_t mode;
    mode_t wanted;
    int fd;

    if ((fd = sluice_check_open_dir(parent_fd, name, want->top)) < 0 &&
        errno == ENOENT) {
        VSTR *why = vstr_alloc(100);

        fd = mail_queue_create_at(parent_fd, name, path, want->top, want->mode,
                                  want->root ? (uid_t) -1 : chk->owner,
                                  want->gid, why);
        if (fd < 0)
            sluice_check_error(chk, "%s", vstr_str(why));
        vstr_free(why);
        if (fd < 0)
            return -1;
        sluice_check_fixed("%s: created (owner %s, mode %04o)", path,
                           want->root ? "root" : chk->owner_name,
                           (unsigned) want->mode);
        return fd;
    }
    if (fd < 0) {
        sluice_check_not_dir(chk, parent_fd, name, path, errno);
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        sluice_check_error(chk, "fstat %s: %s", path, strerror(errno));
        (void) close(fd);
        return -1;
    }
    if (want->root
            ? st.st_uid != 0
            : st.st_uid != chk->owner && !(want->any_owner && st.st_uid == 0)) {
        if (fchown(fd, want->root ? 0 : chk->owner, -1) < 0) {
            sluice_check_error(chk, "%s: owner uid %ld, not %s; chown: %s",
                               path, (long) st.st_uid,
                               want->root ? "root" : chk->owner_name,
                               strerror(errno));
            (void) close(fd);
            return -1;
        }
        sluice_check_fixed("%s: owner uid %ld -> %s", path, (long) st.st_uid,
                           want->root ? "root" : chk->owner_name);
    }
    if (want->gid != (gid_t) -1 && st.st_gid != want->gid) {
        if (fchown(fd, -1, want->gid) < 0) {
            sluice_check_error(chk, "%s: group gid %ld, not %s; chown: %s",
                               path, (long) st.st_gid, chk->drop_group,
                               strerror(errno));
            (void) close(fd);
            return -1;
        }
        sluice_check_fixed("%s: group gid %ld -> %s", path, (long) st.st_gid,
                           chk->drop_group);
    }
    mode = st.st_mode & 07777;
    wanted = want->mode;
    if (want->top) {
        /* root's queue_directory must let mail_owner and users through */
        wanted = mode & ~(mode_t) 022;
        if (st.st_uid == 0 && chk->owner != 0)
            wanted = 0755;
    }
    if (mode != wanted) {
        if (fchmod(fd, wanted) < 0) {
            sluice_check_error(chk, "%s: mode %04o, not %04o; chmod: %s", path,
                               (unsigned) mode, (unsigned) wanted,
                               strerror(errno));
            (void) close(fd);
            return -1;
        }
        sluice_check_fixed("%s: mode %04o -> %04o", path, (unsigned) mode,
                           (unsigned) wanted);
    }
    return fd;
}

/* sluice_check_drop_group - setgid_group, when that group exists */
static void sluice_check_drop_group(SLUICE_CHECK *chk, const MAIL_CONF *conf)
{
    const char *name = mail_conf_str(conf, "setgid_group");
    struct group *gr;

    chk->drop_group = NULL;
    chk->drop_gid = (gid_t) -1;
    if (*name && (gr = getgrnam(name)) != NULL) {
        chk->drop_group = name;
        chk->drop_gid = gr->gr_gid;
    }
}

/* sluice_check_queue_id - the queue ID of a queue file's name (QID or
   .tmp.QID, one being written); NULL when name is no queue file */
static const char *sluice_check_queue_id(const char *name)
{
    size_t prefix = strlen(SLUICE_CHECK_TMP_PREFIX);

    if (strncmp(name, SLUICE_CHECK_TMP_PREFIX, prefix) == 0)
        name += prefix;
    return qid_valid(name) ? name : NULL;
}

/* sluice_check_strays - report what in the directory dir_fd (path: its
   name) is not a queue file; hash is the hash subdirectory it is (0: not
   one); hashed: it holds the hash subdirectories rather than files. Only
   reports: nothing is changed */
static void sluice_check_strays(SLUICE_CHECK *chk, int dir_fd, const char *dir,
                                char hash, bool hashed)
{
    DIR *dp;
    struct dirent *de;
    VSTR *path = vstr_alloc(100);
    int fd;

    if ((fd = dup(dir_fd)) < 0 || (dp = fdopendir(fd)) == NULL) {
        sluice_check_error(chk, "open %s: %s", dir, strerror(errno));
        if (fd >= 0)
            (void) close(fd);
        vstr_free(path);
        return;
    }
    rewinddir(dp);
    while ((de = readdir(dp)) != NULL) {
        const char *name = de->d_name;
        const char *qid;

        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        vstr_sprintf(path, "%s/%s", dir, name);
        if (hashed) {
            if (name[1] == 0 && strchr(mail_queue_hash_chars, name[0]))
                continue;
            sluice_check_warn("%s: not a hash directory (left alone)",
                              vstr_str(path));
        } else if ((qid = sluice_check_queue_id(name)) == NULL) {
            sluice_check_warn("%s: not a queue file (left alone)",
                              vstr_str(path));
        } else if (hash != 0 && qid_hash_char(qid) != hash) {
            sluice_check_warn("%s: in the wrong hash directory (left alone)",
                              vstr_str(path));
        }
    }
    closedir(dp);
    vstr_free(path);
}

/* sluice_check_queue - queue_directory and every queue directory, walked
   from queue_directory down by descriptor (openat, no symbolic link
   followed): what mail_owner can rename cannot steer root elsewhere */
static void sluice_check_queue(SLUICE_CHECK *chk)
{
    VSTR *path = vstr_alloc(100);
    VSTR *hash_path = vstr_alloc(100);
    char hash_name[2] = {0, 0};
    int top_fd;
    int dir_fd;
    int hash_fd;

    static const SLUICE_CHECK_WANT top = {0755, true, true, (gid_t) -1, false};
    static const SLUICE_CHECK_WANT plain = {SLUICE_CHECK_QUEUE_MODE, false,
                                            false, (gid_t) -1, false};

    if ((top_fd = sluice_check_dir(chk, AT_FDCWD, chk->queue_dir,
                                   chk->queue_dir, &top)) < 0)
        goto out;
    for (const char *const *name = mail_queue_names; *name; name++) {
        bool hashed = mail_queue_hashed(*name);
        bool files = strcmp(*name, MAIL_QUEUE_PRIVATE) != 0 &&
                     strcmp(*name, MAIL_QUEUE_PUBLIC) != 0 &&
                     strcmp(*name, MAIL_QUEUE_PID) != 0 &&
                     strcmp(*name, MAIL_QUEUE_EVENTS) != 0 &&
                     strcmp(*name, MAIL_QUEUE_API) != 0 &&
                     strcmp(*name, MAIL_QUEUE_STATS) != 0 &&
                     strcmp(*name, MAIL_QUEUE_REUSE) != 0;
        SLUICE_CHECK_WANT want = plain;

        want.mode = mail_queue_dir_mode(*name, chk->drop_group != NULL);
        if (chk->drop_group && (strcmp(*name, MAIL_QUEUE_MAILDROP) == 0 ||
                                strcmp(*name, MAIL_QUEUE_PUBLIC) == 0)) {
            want.gid = chk->drop_gid;
        } else if (strcmp(*name, MAIL_QUEUE_PID) == 0 && chk->root_master) {
            /* root's master keeps its pid file there (master.c) */
            want.mode = 0755;
            want.root = true;
        }
        vstr_sprintf(path, "%s/%s", chk->queue_dir, *name);
        if ((dir_fd = sluice_check_dir(chk, top_fd, *name, vstr_str(path),
                                       &want)) < 0)
            continue;
        if (hashed) {
            for (const char *hash = mail_queue_hash_chars; *hash; hash++) {
                hash_name[0] = *hash;
                vstr_sprintf(hash_path, "%s/%c", vstr_str(path), *hash);
                if ((hash_fd = sluice_check_dir(chk, dir_fd, hash_name,
                                                vstr_str(hash_path), &plain)) >=
                    0) {
                    sluice_check_strays(chk, hash_fd, vstr_str(hash_path),
                                        *hash, false);
                    (void) close(hash_fd);
                }
            }
        }
        /* Sockets, pid files and journal segments are not queue files. */
        if (files)
            sluice_check_strays(chk, dir_fd, vstr_str(path), 0, hashed);
        (void) close(dir_fd);
    }
    (void) close(top_fd);
out:
    vstr_free(hash_path);
    vstr_free(path);
}

/* sluice_check_both - a domain named in virtual_mailbox_domains (or
   virtual_alias_domains) that mydestination matches too is a warning, as
   Postfix gives one: mydestination wins, its mailboxes are never used.
   Only the list's plain domains can be compared (a table cannot be
   enumerated). */
static void sluice_check_both(const MAIL_CONF *conf)
{
    static const char *const params[] = {"virtual_alias_domains",
                                         "virtual_mailbox_domains"};
    VSTR *why = vstr_alloc(100);
    MATCH_LIST *mydest =
        match_list_create("mydestination", mail_conf_str(conf, "mydestination"),
                          MATCH_LIST_DOMAIN, why);

    for (size_t i = 0; mydest != NULL && i < SLUICE_ARRAY_LEN(params); i++) {
        ARGV *words = maps_split(mail_conf_str(conf, params[i]), why);

        for (size_t j = 0; words != NULL && j < words->argc; j++) {
            const char *word = words->argv[j];

            if (strpbrk(word, ":/!{") == NULL && *word != '.' &&
                match_list_match(mydest, word) > 0)
                sluice_check_warn("do not list domain %s in BOTH mydestination"
                                  " and %s",
                                  word, params[i]);
        }
        if (words != NULL)
            argv_free(words);
    }
    if (mydest != NULL)
        match_list_free(mydest);
    vstr_free(why);
}

/* sluice_check - `sluice [-c DIR] check` */
int sluice_check(const char *config_dir, int argc, char **argv)
{
    SLUICE_CHECK chk;
    struct stat st;
    VSTR *why;
    MAIL_CONF *conf;
    const ARGV *warnings;

    if (argc > 1)
        return sluice_fail("check: unexpected argument \"%s\" (usage: sluice "
                           "[-c DIR] check)",
                           argv[1]);
    memset(&chk, 0, sizeof(chk));
    why = vstr_alloc(100);
    conf = mail_conf_read(config_dir, why);
    if (conf == NULL) {
        /* Nothing else can be checked without main.cf. */
        sluice_check_error(&chk, "%s", vstr_str(why));
        vstr_free(why);
        return 1;
    }
    vstr_free(why);
    warnings = mail_conf_warnings(conf);
    for (size_t i = 0; i < warnings->argc; i++)
        sluice_check_warn("%s", warnings->argv[i]);
    sluice_check_open_tables(&chk, conf);
    sluice_check_both(conf);
    sluice_check_shaping(&chk, conf);
    sluice_check_bounce_classes(&chk, conf);
    sluice_check_pools(&chk, conf);
    sluice_check_pool_allow(&chk, conf);
    sluice_check_event_routes(&chk, conf);
    sluice_check_tracking(&chk, conf);
    sluice_check_webhook_secret(&chk, conf);
    sluice_check_reputation(&chk, conf);
    sluice_check_auth(&chk, conf);
    sluice_check_milters(&chk, conf);
    sluice_check_smtp_tls(&chk, conf);
    sluice_check_smtpd_tls(&chk, conf);
    sluice_check_master_cf(&chk, config_dir, conf);
    chk.queue_dir = mail_conf_str(conf, "queue_directory");
    /* root runs master (master.c) only from a configuration of root's */
    chk.root_master =
        geteuid() == 0 && stat(config_dir, &st) == 0 && st.st_uid == 0;
    sluice_check_drop_group(&chk, conf);
    if (sluice_check_owner(&chk, conf) == 0) {
        chk.root_master &= chk.owner != 0;
        sluice_check_queue(&chk);
    }
    mail_conf_free(conf);
    return chk.errors > 0;
}
