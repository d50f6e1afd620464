/*
 * events_export - the exporters main.cf configures (events_export.h)
 */
#include "sys_defs.h"

#include <openssl/sha.h>

#include "argv.h"
#include "events.h"
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

/* events_export_add - one exporter, unless its name is there already;
   routes: its selector (NULL: every event), added to those it has */
static void events_export_add(EVENTS_EXPORT_LIST *list, size_t *cap,
                              const char *kind, const char *target,
                              const char *routes)
{
    VSTR *name = vstr_alloc(40);
    EVENTS_EXPORT *exp;

    events_export_name(name, kind, target);
    for (size_t i = 0; i < list->count; i++) {
        exp = &list->exports[i];
        if (strcmp(exp->name, vstr_str(name)) == 0) {
            if (routes == NULL) {
                exp->routes = myfree(exp->routes);
            } else if (exp->routes != NULL) {
                vstr_sprintf(name, "%s %s", exp->routes, routes);
                myfree(exp->routes);
                exp->routes = mystrdup(vstr_str(name));
            }
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
    exp->routes = routes ? mystrdup(routes) : NULL;
    name = vstr_alloc(40);
    events_export_display(name, target);
    exp->display = vstr_export(name);
}

/* events_export_passive - a reader that follows the journal by itself? */
bool events_export_passive(const EVENTS_EXPORT *exp)
{
    return strcmp(exp->kind, EVENTS_EXPORT_METRICS) == 0;
}

/* events_export_removes - an exporter that ships events elsewhere, whose
   presence turns segment removal on? */
bool events_export_removes(const EVENTS_EXPORT *exp)
{
    static const char *const kinds[] = {EVENTS_EXPORT_WEBHOOK,
                                        EVENTS_EXPORT_KAFKA, EVENTS_EXPORT_OTEL,
                                        EVENTS_EXPORT_STATS};

    /* Listed, not excepted: a kind added later keeps the journal whole
       until it says otherwise. */
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(exp->kind, kinds[i]) == 0)
            return true;
    return false;
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
        events_export_add(list, &cap, EVENTS_EXPORT_WEBHOOK, urls->argv[i],
                          NULL);
    argv_free(urls);
    urls = mail_conf_list(conf, "events_webhook_routes");
    {
        VSTR *selector = vstr_alloc(40);
        VSTR *url = vstr_alloc(100);
        VSTR *why = vstr_alloc(100);

        for (size_t i = 0; i < urls->argc && list->error == NULL; i++) {
            if (events_export_route_parse(urls->argv[i], selector, url, why) <
                0) {
                vstr_sprintf(url, "events_webhook_routes: \"%s\": %s",
                             urls->argv[i], vstr_str(why));
                list->error = mystrdup(vstr_str(url));
            } else {
                events_export_add(list, &cap, EVENTS_EXPORT_WEBHOOK,
                                  vstr_str(url), vstr_str(selector));
            }
        }
        vstr_free(selector);
        vstr_free(url);
        vstr_free(why);
    }
    argv_free(urls);
    if (mail_conf_bool(conf, "events_stats_enable"))
        events_export_add(list, &cap, EVENTS_EXPORT_STATS,
                          mail_conf_str(conf, "events_stats_database"), NULL);
    if (mail_conf_bool(conf, "events_index_enable"))
        events_export_add(list, &cap, EVENTS_EXPORT_INDEX,
                          mail_conf_str(conf, "events_index_database"), NULL);
    /* The suppression feed uses only these (events/suppress.c): the others
       are passed over unparsed, not read into its batches. */
    if (mail_conf_bool(conf, "suppression_feedback_enable"))
        events_export_add(list, &cap, EVENTS_EXPORT_SUPPRESS,
                          mail_conf_str(conf, "suppression_database"),
                          "kind:" EVENTS_BOUNCED " kind:" EVENTS_COMPLAINED
                          " kind:" EVENTS_UNSUBSCRIBED);
    if (*mail_conf_str(conf, "otel_exporter_otlp_endpoint")) {
        const char *base = mail_conf_str(conf, "otel_exporter_otlp_endpoint");
        size_t len = strlen(base);
        VSTR *target = vstr_alloc(100);

        while (len > 0 && base[len - 1] == '/')
            len--;
        vstr_sprintf(target, "%.*s/v1/traces", (int) len, base);
        events_export_add(list, &cap, EVENTS_EXPORT_OTEL, vstr_str(target),
                          NULL);
        vstr_free(target);
    }
    if (*mail_conf_str(conf, "events_kafka_brokers")) {
        VSTR *target = vstr_alloc(100);

        vstr_sprintf(target, "%s/%s",
                     mail_conf_str(conf, "events_kafka_brokers"),
                     mail_conf_str(conf, "events_kafka_topic"));
        events_export_add(list, &cap, EVENTS_EXPORT_KAFKA, vstr_str(target),
                          NULL);
        vstr_free(target);
    }
    if (*mail_conf_str(conf, "metrics_listen"))
        events_export_add(list, &cap, EVENTS_EXPORT_METRICS,
                          EVENTS_EXPORT_METRICS_TARGET, NULL);
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
        myfree(list->exports[i].routes);
    }
    myfree(list->exports);
    myfree(list->error);
    myfree(list);
    return NULL;
}

/* events_export_term_ok - one selector term: kind:NAME or tenant:NAME,
   len bytes at term */
static bool events_export_term_ok(const char *term, size_t len)
{
    return (len > 5 && strncmp(term, "kind:", 5) == 0) ||
           (len > 7 && strncmp(term, "tenant:", 7) == 0);
}

/* events_export_route_parse - SELECTOR=URL */
int events_export_route_parse(const char *entry, VSTR *selector, VSTR *url,
                              VSTR *why)
{
    const char *eq = strchr(entry, '=');
    const char *cp;

    if (eq == NULL || eq == entry || eq[1] == 0) {
        vstr_cpy(why, "not SELECTOR=URL");
        return -1;
    }
    if (strncmp(eq + 1, "http://", 7) != 0 &&
        strncmp(eq + 1, "https://", 8) != 0) {
        vstr_cpy(why, "the URL is not http:// or https://");
        return -1;
    }
    for (cp = entry; cp < eq;) {
        size_t len = strcspn(cp, "+=");

        if (!events_export_term_ok(cp, len)) {
            vstr_sprintf(why,
                         "\"%.*s\" is not kind:KIND or tenant:TENANT (terms "
                         "joined by +)",
                         (int) len, cp);
            return -1;
        }
        cp += len;
        if (*cp == '+' && cp[1] == '=') {
            vstr_cpy(why, "an empty term after \"+\"");
            return -1;
        }
        if (*cp == '+')
            cp++;
    }
    vstr_reset(selector);
    vstr_ncat(selector, entry, (size_t) (eq - entry));
    vstr_cpy(url, eq + 1);
    return 0;
}

/* events_export_term_holds - does one term (len bytes) hold for kind
   and tenant? */
static bool events_export_term_holds(const char *term, size_t len,
                                     const char *kind, const char *tenant)
{
    const char *value;
    size_t prefix;

    if (len > 5 && strncmp(term, "kind:", 5) == 0) {
        value = kind;
        prefix = 5;
    } else if (len > 7 && strncmp(term, "tenant:", 7) == 0) {
        value = tenant;
        prefix = 7;
    } else {
        return false;
    }
    return value != NULL && strlen(value) == len - prefix &&
           strncmp(value, term + prefix, len - prefix) == 0;
}

/* events_export_match - does routes pick the event? */
bool events_export_match(const char *routes, const char *kind,
                         const char *tenant)
{
    const char *cp = routes;

    if (routes == NULL)
        return true;
    while (*cp) {
        size_t alt = strcspn(cp, " ");
        const char *end = cp + alt;
        bool all = alt > 0;

        for (const char *term = cp; term < end && all;) {
            size_t len = strcspn(term, "+ ");

            all = events_export_term_holds(term, len, kind, tenant);
            term += len;
            if (*term == '+')
                term++;
        }
        if (all)
            return true;
        cp = *end ? end + 1 : end;
    }
    return false;
}

/* events_export_path - DIR/exporters/NAME SUFFIX */
void events_export_path(VSTR *path, const char *dir, const char *name,
                        const char *suffix)
{
    vstr_sprintf(path, "%s/%s/%s%s", dir, EVENTS_POS_DIR, name, suffix);
}
