/*
 * sluice_pool - `sluice pool [--json]`: the source IP pools
 *
 * One line per source of each pool of smtp_source_pools: the pool, the
 * address, its weight, its EHLO name and its state, with the default pool
 * marked. The state is what this machine can say without qmgr: "usable"
 * when the address can be bound here, else "bind failure (REASON)" --
 * qmgr meets the same failure at run time and leaves the source out for
 * smtp_source_retry_time. The paused and warm-up columns (reputation
 * pauses, warm-up day and cap: issue #18 items 3 and 4) are printed as
 * "-" until those exist; `sluice pool pause|resume SOURCE` comes with
 * them. --json prints one object: {"default": NAME, "pools": [{"name",
 * "default", "line", "sources": [{"address", "weight", "ehlo", "state",
 * "reason", "paused", "warmup"}]}]}. No pools configured: a line saying
 * so (the sources are then smtp_bind_address), status 0.
 */
#include "sys_defs.h"

#include <jansson.h>

#include "mail_conf.h"
#include "mymalloc.h"
#include "sluice.h"
#include "source_pool.h"
#include "vstr.h"

#define SLUICE_POOL_USAGE "usage: sluice pool [--json]"

/* sluice_pool_json - the pools as one JSON object on stdout */
static void sluice_pool_json(const SOURCE_POOLS *pools, const char *def)
{
    json_t *top = json_object();
    json_t *list = json_array();
    VSTR *why = vstr_alloc(100);
    char *text;

    json_object_set_new(top, "default", def ? json_string(def) : json_null());
    for (size_t i = 0; pools && i < pools->count; i++) {
        const SOURCE_POOL *pool = &pools->pools[i];
        json_t *obj = json_object();
        json_t *sources = json_array();

        json_object_set_new(obj, "name", json_string(pool->name));
        json_object_set_new(obj, "default",
                            json_boolean(strcmp(pool->name, def) == 0));
        json_object_set_new(obj, "line", json_integer(pool->lineno));
        for (size_t j = 0; j < pool->count; j++) {
            const SOURCE_POOL_SOURCE *src = &pool->sources[j];
            json_t *so = json_object();
            bool ok = source_pool_addr_local(src, why) == 0;

            json_object_set_new(so, "address", json_string(src->address));
            json_object_set_new(so, "weight", json_integer(src->weight));
            json_object_set_new(so, "ehlo", json_string(src->helo_name));
            json_object_set_new(so, "state",
                                json_string(ok ? "usable" : "bind failure"));
            json_object_set_new(so, "reason",
                                ok ? json_null() : json_string(vstr_str(why)));
            json_object_set_new(so, "paused", json_null());
            json_object_set_new(so, "warmup", json_null());
            json_array_append_new(sources, so);
        }
        json_object_set_new(obj, "sources", sources);
        json_array_append_new(list, obj);
    }
    json_object_set_new(top, "pools", list);
    text = json_dumps(top, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(top);
    vstr_free(why);
}

/* sluice_pool_text - the pools as a table on stdout */
static void sluice_pool_text(const SOURCE_POOLS *pools, const char *def,
                             const char *helo_default)
{
    VSTR *why = vstr_alloc(100);
    VSTR *state = vstr_alloc(100);

    printf("%-16s %-39s %6s %-30s %-6s %-6s %s\n", "POOL", "SOURCE", "WEIGHT",
           "EHLO", "PAUSED", "WARMUP", "STATE");
    for (size_t i = 0; i < pools->count; i++) {
        const SOURCE_POOL *pool = &pools->pools[i];
        VSTR *name = vstr_alloc(64);

        vstr_sprintf(name, "%s%s", pool->name,
                     strcmp(pool->name, def) == 0 ? "*" : "");
        for (size_t j = 0; j < pool->count; j++) {
            const SOURCE_POOL_SOURCE *src = &pool->sources[j];

            if (source_pool_addr_local(src, why) == 0)
                vstr_cpy(state, "usable");
            else
                vstr_sprintf(state, "bind failure (%s)", vstr_str(why));
            printf("%-16s %-39s %6d %-30s %-6s %-6s %s\n", vstr_str(name),
                   src->address, src->weight,
                   *src->helo_name ? src->helo_name : helo_default, "-", "-",
                   vstr_str(state));
        }
        vstr_free(name);
    }
    printf("(* the default pool)\n");
    vstr_free(why);
    vstr_free(state);
}

/* sluice_pool - `sluice pool [--json]` */
int sluice_pool(const char *config_dir, int argc, char **argv)
{
    VSTR *why = vstr_alloc(100);
    bool json = false;
    MAIL_CONF *conf;
    SOURCE_POOLS *pools;
    const char *def = NULL;
    int status = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
            json = true;
        } else {
            vstr_free(why);
            return sluice_fail("%s", SLUICE_POOL_USAGE);
        }
    }
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        status = sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        return status;
    }
    pools = source_pools_load("smtp_source_pools",
                              mail_conf_str(conf, "smtp_source_pools"), why);
    if (pools == NULL && vstr_len(why) > 0) {
        status = sluice_fail("pool: %s", vstr_str(why));
    } else {
        const char *want = mail_conf_str(conf, "default_source_pool");

        if (pools != NULL) {
            const SOURCE_POOL *found =
                *want ? source_pools_find(pools, want) : &pools->pools[0];

            if (found == NULL)
                status = sluice_fail("pool: default_source_pool = %s: no "
                                     "such pool in smtp_source_pools",
                                     want);
            else
                def = found->name;
        }
        if (status == 0 && json)
            sluice_pool_json(pools, def);
        else if (status == 0 && pools == NULL)
            printf("sluice: pool: smtp_source_pools is empty: mail leaves "
                   "from smtp_bind_address (%s)\n",
                   *mail_conf_str(conf, "smtp_bind_address")
                       ? mail_conf_str(conf, "smtp_bind_address")
                       : "any");
        else if (status == 0)
            sluice_pool_text(pools, def, mail_conf_str(conf, "smtp_helo_name"));
    }
    source_pools_free(pools);
    mail_conf_free(conf);
    vstr_free(why);
    return status;
}
