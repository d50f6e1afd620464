/*
 * cleanup_pool - the source pool of a message, chosen at commit
 *
 * With smtp_source_pools set, every queued message gets the envelope
 * attribute pool=NAME (global/qfile.h), which qmgr reads to pick the
 * source IP (qmgr/qmgr_source.c). The choice, first that applies:
 *
 *   1. an X-Sluice-Pool: NAME header, honoured only when
 *      smtp_source_pool_allow_maps lets the submitter name that pool
 *      (global/source_pool.h: keys "sasl:USER", "tenant:T" for the HTTP
 *      API, "mynetworks", "local"; with no entry a client in mynetworks
 *      and local submission may name any pool, a SASL user elsewhere and
 *      an API tenant none, an anonymous client outside mynetworks never);
 *   2. smtp_source_pool_maps, with the keys of source_pool_rule_keys
 *      (global/source_pool.h): "sasl:USER", "tenant:T", the sender
 *      address, the sender domain;
 *   3. default_source_pool (empty: the first pool of smtp_source_pools).
 *
 * Every X-Sluice-Pool header is removed from the message, honoured or not
 * (one that is not allowed is logged as ignored: a warning when the
 * submitter is authenticated, an API tenant or in mynetworks, the message
 * keeps the pool of the rules or the default; it is not refused). A name that is no
 * pool, from the header or from a rule, is logged and the default pool
 * is used: the message is never refused or lost for it.
 *
 * The rules' choice is known at BEGIN and written with the other
 * attributes; a header is seen only in the content, after the M record,
 * so when it changes the choice the attribute is replaced then
 * (qfile_out_set_attr: a copy of the file before commit, only for those
 * messages). The filter comes before DKIM signing, so the header is gone
 * before anything is signed.
 */
#include "sys_defs.h"

#include "cleanup.h"
#include "cleanup_proto.h"
#include "mail_conf.h"
#include "maps.h"
#include "msg.h"
#include "mymalloc.h"
#include "source_pool.h"
#include "vstr.h"

/* The filter's state: the first X-Sluice-Pool value, NULL: none. */
typedef struct CLEANUP_POOL_STATE {
    char *header;
    int count; /* headers seen */
} CLEANUP_POOL_STATE;

/* cleanup_pool_conf - smtp_source_pools, default_source_pool,
   smtp_source_pool_maps, smtp_source_pool_allow_maps, mynetworks; a bad table is fatal (master retries
   with a back-off, and clients are told to try again meanwhile) */
void cleanup_pool_conf(CLEANUP_CONF *cconf, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);
    const char *def = mail_conf_str(conf, "default_source_pool");
    const char *maps = mail_conf_str(conf, "smtp_source_pool_maps");
    const char *allow = mail_conf_str(conf, "smtp_source_pool_allow_maps");

    cconf->pools = source_pools_load(
        "smtp_source_pools", mail_conf_str(conf, "smtp_source_pools"), why);
    if (cconf->pools == NULL) {
        if (vstr_len(why) > 0)
            msg_fatal("%s", vstr_str(why));
        vstr_free(why);
        return;
    }
    if (*def == 0)
        cconf->default_pool = cconf->pools->pools[0].name;
    else if (source_pools_find(cconf->pools, def) != NULL)
        cconf->default_pool = source_pools_find(cconf->pools, def)->name;
    else
        msg_fatal("default_source_pool = %s: no such pool in "
                  "smtp_source_pools",
                  def);
    if (*maps != 0 &&
        (cconf->pool_maps = maps_create("smtp_source_pool_maps", maps,
                                        MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    if (*allow != 0 && (cconf->pool_allow_maps =
                            maps_create("smtp_source_pool_allow_maps", allow,
                                        MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    if ((cconf->mynetworks =
             match_list_create("mynetworks", mail_conf_str(conf, "mynetworks"),
                               MATCH_LIST_ADDR, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
}

/* cleanup_pool_conf_free - release what cleanup_pool_conf read */
void cleanup_pool_conf_free(CLEANUP_CONF *cconf)
{
    cconf->pools = source_pools_free(cconf->pools);
    cconf->default_pool = NULL;
    if (cconf->pool_maps)
        cconf->pool_maps = maps_free(cconf->pool_maps);
    if (cconf->pool_allow_maps)
        cconf->pool_allow_maps = maps_free(cconf->pool_allow_maps);
    if (cconf->mynetworks)
        cconf->mynetworks = match_list_free(cconf->mynetworks);
}

/* cleanup_pool_known - name as a configured pool's name, or the default
   (logged) when it is none */
static const char *cleanup_pool_known(const CLEANUP_MSG *msg, const char *name,
                                      const char *from)
{
    const SOURCE_POOL *pool = source_pools_find(msg->conf->pools, name);

    if (pool != NULL)
        return pool->name;
    msg_warn("%s: pool \"%s\" named by %s is not in smtp_source_pools: "
             "using the default pool %s",
             msg->qid, name, from, msg->conf->default_pool);
    return msg->conf->default_pool;
}

/* cleanup_pool_begin - BEGIN: who would choose by header, and the pool
   the rules choose, written as the pool attribute */
void cleanup_pool_begin(CLEANUP_MSG *msg, const CLEANUP_BEGIN *req,
                        const char *tenant)
{
    const CLEANUP_CONF *conf = msg->conf;
    const char *origin = req->origin ? req->origin : "";
    const char *chosen = NULL;
    ARGV *keys;

    if (conf->pools == NULL)
        return;
    msg->pool_local = strcmp(origin, CLEANUP_ORIGIN_LOCAL) == 0;
    msg->pool_mynetworks =
        strcmp(origin, CLEANUP_ORIGIN_SMTP) == 0 && req->client_addr != NULL &&
        *req->client_addr != 0 && conf->mynetworks != NULL &&
        match_list_match(conf->mynetworks, req->client_addr) > 0;
    if (req->sasl_username != NULL && *req->sasl_username != 0)
        msg->pool_sasl = mystrdup(req->sasl_username);
    keys = source_pool_rule_keys(req->sasl_username, tenant, msg->sender);
    for (size_t i = 0; conf->pool_maps && i < keys->argc; i++) {
        int error = 0;
        const char *value = maps_find(conf->pool_maps, keys->argv[i], &error);

        if (value == NULL && error == MAP_FAIL) {
            /* A table that fails: try again later, lose nothing. */
            msg_warn("%s: smtp_source_pool_maps: lookup of %s failed", msg->qid,
                     keys->argv[i]);
            cleanup_msg_fail(msg, 451, "4.3.0 pool table lookup failed");
            argv_free(keys);
            return;
        }
        if (value != NULL) {
            VSTR *from = vstr_alloc(64);

            vstr_sprintf(from, "smtp_source_pool_maps (%s)", keys->argv[i]);
            chosen = cleanup_pool_known(msg, value, vstr_str(from));
            vstr_free(from);
            break;
        }
    }
    argv_free(keys);
    msg->pool = mystrdup(chosen ? chosen : conf->default_pool);
    if (msg->writer != NULL)
        qfile_put_attr(msg->writer, SOURCE_POOL_ATTR, msg->pool);
}

/* cleanup_pool_filter_begin - a message begins */
static void *cleanup_pool_filter_begin(CLEANUP_MSG *msg)
{
    return msg->conf->pools ? mycalloc(1, sizeof(CLEANUP_POOL_STATE)) : NULL;
}

/* cleanup_pool_header - X-Sluice-Pool: remember the first, drop them all */
static CLEANUP_FILTER_ACT cleanup_pool_header(void *arg, CLEANUP_MSG *msg,
                                              VSTR *header)
{
    CLEANUP_POOL_STATE *state = arg;
    size_t len = strlen(SOURCE_POOL_HEADER);
    const char *cp = vstr_str(header);
    VSTR *value;

    if (vstr_len(header) <= len || cp[len] != ':' ||
        strncasecmp(cp, SOURCE_POOL_HEADER, len) != 0)
        return CLEANUP_FILTER_KEEP;
    /* Removed whether pools are configured or not. */
    if (state == NULL || state->count++ > 0)
        return CLEANUP_FILTER_DROP;
    value = vstr_alloc(64);
    for (cp += len + 1; *cp; cp++)
        if (*cp != ' ' && *cp != '\t' && *cp != '\r' && *cp != '\n')
            vstr_addch(value, *cp);
    state->header = vstr_export(value);
    return CLEANUP_FILTER_DROP;
}

/* cleanup_pool_end - the content is in: apply a header's choice when the
   submitter may name that pool */
static void cleanup_pool_end(void *arg, CLEANUP_MSG *msg)
{
    CLEANUP_POOL_STATE *state = arg;
    SOURCE_POOL_REQUESTER who = {.sasl_user = msg->pool_sasl,
                                 .tenant = msg->tenant,
                                 .mynetworks = msg->pool_mynetworks,
                                 .local = msg->pool_local};
    const char *name;
    const char *chosen;
    VSTR *why;
    int verdict;

    if (state == NULL || state->header == NULL || msg->pool == NULL)
        return;
    name = source_pool_name_valid(state->header) ? state->header
                                                 : "(not a pool name)";
    why = vstr_alloc(100);
    verdict = source_pool_allowed(msg->conf->pool_allow_maps, &who, name, why);
    if (verdict == SOURCE_POOL_ALLOW_FAIL) {
        /* A table that fails: try again later, lose nothing. */
        msg_warn("%s: %s", msg->qid, vstr_str(why));
        cleanup_msg_fail(msg, 451, "4.3.0 pool table lookup failed");
        vstr_free(why);
        return;
    }
    if (verdict == SOURCE_POOL_REFUSED) {
        if (msg->pool_sasl == NULL && msg->tenant == NULL &&
            !msg->pool_mynetworks && !msg->pool_local)
            msg_info("%s: %s: %s ignored (client %s is neither in mynetworks "
                     "nor authenticated) and removed",
                     msg->qid, SOURCE_POOL_HEADER, name, msg->client_info);
        else
            msg_warn("%s: %s: %s ignored (client %s: %s) and removed: the "
                     "message keeps pool %s",
                     msg->qid, SOURCE_POOL_HEADER, name, msg->client_info,
                     vstr_str(why), msg->pool);
        vstr_free(why);
        return;
    }
    vstr_free(why);
    chosen = cleanup_pool_known(msg, name, SOURCE_POOL_HEADER);
    msg_info("%s: pool=%s (%s)", msg->qid, chosen, SOURCE_POOL_HEADER);
    if (strcmp(chosen, msg->pool) == 0)
        return;
    if (qfile_out_set_attr(msg->out, SOURCE_POOL_ATTR, chosen) < 0) {
        msg_warn("%s: write pool attribute to %s: %m", msg->qid, msg->tmp_path);
        cleanup_msg_fail(msg, 451, "4.3.0 queue file write error");
        return;
    }
    myfree(msg->pool);
    msg->pool = mystrdup(chosen);
}

/* cleanup_pool_free - the filter's state */
static void cleanup_pool_free(void *arg)
{
    CLEANUP_POOL_STATE *state = arg;

    if (state == NULL)
        return;
    myfree(state->header);
    myfree(state);
}

const CLEANUP_FILTER cleanup_pool_filter = {
    .name = "pool",
    .begin = cleanup_pool_filter_begin,
    .header = cleanup_pool_header,
    .end = cleanup_pool_end,
    .free = cleanup_pool_free,
};
