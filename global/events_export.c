/*
 * events_export - the exporters main.cf configures (events_export.h)
 */
#include "sys_defs.h"

#include <openssl/sha.h>

#include "argv.h"
#include "events_export.h"
#include "events_pos.h"
#include "mymalloc.h"

/* events_export_name - KIND-HASH of kind and target */
void events_export_name(VSTR *name, const char *kind, const char *target)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    (void) SHA256((const unsigned char *) target, strlen(target), digest);
    vstr_sprintf(name, "%s-", kind);
    for (int i = 0; i < 6; i++)
        vstr_sprintf_append(name, "%02x", digest[i]);
}

/* events_export_display - target without the secrets a URL may carry */
void events_export_display(VSTR *out, const char *target)
{
    const char *scheme_end = strstr(target, "://");
    const char *auth;
    const char *auth_end;
    const char *at = NULL;
    const char *query;

    vstr_reset(out);
    if (scheme_end == NULL ||
        strcspn(target, "/?#") < (size_t) (scheme_end - target)) {
        vstr_cat(out, target);
        return;
    }
    auth = scheme_end + 3;
    auth_end = auth + strcspn(auth, "/?#");
    /* The last '@' of the authority: a password may hold an '@' of its own. */
    for (const char *cp = auth; cp < auth_end; cp++)
        if (*cp == '@')
            at = cp;
    vstr_ncat(out, target, (size_t) (auth - target));
    if (at != NULL)
        auth = at + 1;
    query = auth + strcspn(auth, "?#");
    vstr_ncat(out, auth, (size_t) (query - auth));
    if (*query == '?')
        vstr_cat(out, "?...");
}

/* events_export_add - one exporter, unless its name is there already */
static void events_export_add(EVENTS_EXPORT_LIST *list, size_t *cap,
                              const char *kind, const char *target)
{
    VSTR *name = vstr_alloc(40);
    EVENTS_EXPORT *exp;

    events_export_name(name, kind, target);
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->exports[i].name, vstr_str(name)) == 0) {
            vstr_free(name);
            return;
        }
    }
    if (list->count == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        list->exports = myrealloc(list->exports, *cap * sizeof(*exp));
    }
    exp = &list->exports[list->count++];
    exp->kind = mystrdup(kind);
    exp->target = mystrdup(target);
    exp->name = vstr_export(name);
    name = vstr_alloc(40);
    events_export_display(name, target);
    exp->display = vstr_export(name);
}

/* events_export_list - the exporters conf configures */
EVENTS_EXPORT_LIST *events_export_list(const MAIL_CONF *conf)
{
    EVENTS_EXPORT_LIST *list = mycalloc(1, sizeof(*list));
    size_t cap = 0;
    ARGV *urls;

    if (!mail_conf_bool(conf, "events_enable"))
        return list;
    urls = mail_conf_list(conf, "events_webhook_urls");
    for (size_t i = 0; i < urls->argc; i++)
        events_export_add(list, &cap, EVENTS_EXPORT_WEBHOOK, urls->argv[i]);
    argv_free(urls);
    if (mail_conf_bool(conf, "events_stats_enable"))
        events_export_add(list, &cap, EVENTS_EXPORT_STATS,
                          mail_conf_str(conf, "events_stats_database"));
    if (mail_conf_bool(conf, "events_index_enable"))
        events_export_add(list, &cap, EVENTS_EXPORT_INDEX,
                          mail_conf_str(conf, "events_index_database"));
    if (*mail_conf_str(conf, "otel_exporter_otlp_endpoint")) {
        const char *base = mail_conf_str(conf, "otel_exporter_otlp_endpoint");
        size_t len = strlen(base);
        VSTR *target = vstr_alloc(100);

        while (len > 0 && base[len - 1] == '/')
            len--;
        vstr_sprintf(target, "%.*s/v1/traces", (int) len, base);
        events_export_add(list, &cap, EVENTS_EXPORT_OTEL, vstr_str(target));
        vstr_free(target);
    }
    if (*mail_conf_str(conf, "events_kafka_brokers")) {
        VSTR *target = vstr_alloc(100);

        vstr_sprintf(target, "%s/%s",
                     mail_conf_str(conf, "events_kafka_brokers"),
                     mail_conf_str(conf, "events_kafka_topic"));
        events_export_add(list, &cap, EVENTS_EXPORT_KAFKA, vstr_str(target));
        vstr_free(target);
    }
    return list;
}

/* events_export_list_free - free; returns NULL */
EVENTS_EXPORT_LIST *events_export_list_free(EVENTS_EXPORT_LIST *list)
{
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < list->count; i++) {
        myfree(list->exports[i].kind);
        myfree(list->exports[i].target);
        myfree(list->exports[i].display);
        myfree(list->exports[i].name);
    }
    myfree(list->exports);
    myfree(list);
    return NULL;
}

/* events_export_path - DIR/exporters/NAME SUFFIX */
void events_export_path(VSTR *path, const char *dir, const char *name,
                        const char *suffix)
{
    vstr_sprintf(path, "%s/%s/%s%s", dir, EVENTS_POS_DIR, name, suffix);
}
