/*
 * source_pool - source IP pools: the table, weighted round robin, the keys
 * that choose a message's pool
 *
 * The syntax and the rules are in source_pool.h. Everything here is a pure
 * function of its input but source_pool_addr_local, which asks the kernel
 * (a bind to port 0 of a socket that is closed at once).
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maps.h"
#include "maps_priv.h"
#include "msg.h"
#include "mymalloc.h"
#include "source_pool.h"
#include "smtp_addr.h"

/* source_pool_name_valid - [a-z0-9_.-]{1,64}, any case */
bool source_pool_name_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > SOURCE_POOL_NAME_MAX)
        return false;
    for (const char *cp = name; *cp; cp++)
        if (!isalnum((unsigned char) *cp) && *cp != '_' && *cp != '.' &&
            *cp != '-')
            return false;
    return true;
}

/* source_pool_helo_valid - a host name's characters, labels not empty */
static bool source_pool_helo_valid(const char *name, size_t len)
{
    bool label_start = true;

    if (len == 0 || len > SOURCE_POOL_HELO_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) name[i];

        if (ch == '.') {
            if (label_start)
                return false;
            label_start = true;
            continue;
        }
        if (!isalnum(ch) && ch != '-')
            return false;
        label_start = false;
    }
    return !label_start;
}

/* source_pool_source_parse - one ADDRESS[*WEIGHT][/EHLO-NAME] */
static int source_pool_source_parse(const char *text, SOURCE_POOL_SOURCE *src,
                                    VSTR *why)
{
    const char *cp = text;
    const char *addr_start;
    size_t addr_len;
    char addr[INET6_ADDRSTRLEN + 1];
    unsigned char bin[sizeof(struct in6_addr)];
    long weight = 1;

    memset(src, 0, sizeof(*src));
    if (*cp == '[') {
        const char *end = strchr(cp, ']');

        if (end == NULL) {
            vstr_sprintf(why, "\"%s\": missing ']'", text);
            return -1;
        }
        addr_start = cp + 1;
        addr_len = (size_t) (end - addr_start);
        cp = end + 1;
    } else {
        addr_start = cp;
        addr_len = strcspn(cp, "*/");
        cp += addr_len;
    }
    if (addr_len == 0 || addr_len >= sizeof(addr)) {
        vstr_sprintf(why, "\"%s\": not an IP address", text);
        return -1;
    }
    memcpy(addr, addr_start, addr_len);
    addr[addr_len] = 0;
    if (inet_pton(AF_INET, addr, bin) == 1) {
        src->family = AF_INET;
    } else if (inet_pton(AF_INET6, addr, bin) == 1) {
        src->family = AF_INET6;
    } else {
        vstr_sprintf(why, "\"%s\": \"%s\" is not an IP address", text, addr);
        return -1;
    }
    if (*cp == '*') {
        char *end;

        cp++;
        if (!isdigit((unsigned char) *cp)) {
            vstr_sprintf(why, "\"%s\": weight is not a number", text);
            return -1;
        }
        errno = 0;
        weight = strtol(cp, &end, 10);
        if (errno != 0 || weight > SOURCE_POOL_WEIGHT_MAX) {
            vstr_sprintf(why, "\"%s\": weight above %d", text,
                         SOURCE_POOL_WEIGHT_MAX);
            return -1;
        }
        cp = end;
    }
    if (*cp == '/') {
        size_t len = strlen(cp + 1);

        if (!source_pool_helo_valid(cp + 1, len)) {
            vstr_sprintf(why, "\"%s\": \"%s\" is not a host name for EHLO",
                         text, cp + 1);
            return -1;
        }
        src->helo_name = mystrdup(cp + 1);
        cp += len + 1;
    }
    if (*cp != 0) {
        vstr_sprintf(why,
                     "\"%s\": unexpected \"%s\" (want "
                     "ADDRESS[*WEIGHT][/EHLO-NAME])",
                     text, cp);
        myfree(src->helo_name);
        src->helo_name = NULL;
        return -1;
    }
    src->address = mystrdup(addr);
    src->weight = (int) weight;
    if (src->helo_name == NULL)
        src->helo_name = mystrdup("");
    return 0;
}

/* source_pool_clear - release what a pool holds */
void source_pool_clear(SOURCE_POOL *pool)
{
    for (size_t i = 0; i < pool->count; i++) {
        myfree(pool->sources[i].address);
        myfree(pool->sources[i].helo_name);
    }
    myfree(pool->sources);
    myfree(pool->name);
    myfree(pool->path);
    memset(pool, 0, sizeof(*pool));
}

/* source_pool_parse - one table value into pool */
int source_pool_parse(const char *name, const char *value, SOURCE_POOL *pool,
                      VSTR *why)
{
    ARGV *items;
    VSTR *lower;
    bool any_weight = false;

    memset(pool, 0, sizeof(*pool));
    vstr_reset(why);
    if (!source_pool_name_valid(name)) {
        vstr_sprintf(why,
                     "pool \"%s\": a name is [a-z0-9_.-], 1 to %d "
                     "characters",
                     name, SOURCE_POOL_NAME_MAX);
        return -1;
    }
    items = argv_split(value, " \t\r\n,");
    if (items->argc == 0) {
        vstr_sprintf(why, "pool %s: no source", name);
        argv_free(items);
        return -1;
    }
    if (items->argc > SOURCE_POOL_SOURCES_MAX) {
        vstr_sprintf(why, "pool %s: more than %d sources", name,
                     SOURCE_POOL_SOURCES_MAX);
        argv_free(items);
        return -1;
    }
    lower = vstr_alloc(SOURCE_POOL_NAME_MAX);
    vstr_cpy(lower, name);
    pool->name = vstr_export(vstr_lower(lower));
    pool->sources = mycalloc(items->argc, sizeof(*pool->sources));
    for (size_t i = 0; i < items->argc; i++) {
        VSTR *reason = vstr_alloc(100);

        if (source_pool_source_parse(items->argv[i], &pool->sources[i],
                                     reason) < 0) {
            vstr_sprintf(why, "pool %s: %s", pool->name, vstr_str(reason));
            vstr_free(reason);
            argv_free(items);
            source_pool_clear(pool);
            return -1;
        }
        vstr_free(reason);
        pool->count++;
        for (size_t j = 0; j < i; j++) {
            if (pool->sources[j].family == pool->sources[i].family &&
                strcmp(pool->sources[j].address, pool->sources[i].address) ==
                    0) {
                vstr_sprintf(why, "pool %s: source %s listed twice", pool->name,
                             pool->sources[i].address);
                argv_free(items);
                source_pool_clear(pool);
                return -1;
            }
        }
        if (pool->sources[i].weight > 0)
            any_weight = true;
    }
    argv_free(items);
    if (!any_weight) {
        vstr_sprintf(why, "pool %s: every source has weight 0", pool->name);
        source_pool_clear(pool);
        return -1;
    }
    return 0;
}

/* source_pools_add - one line of a table */
static int source_pools_add(void *context, const char *path, const char *key,
                            const char *value, int lineno, VSTR *why)
{
    SOURCE_POOLS *pools = context;
    SOURCE_POOL pool;
    VSTR *reason = vstr_alloc(100);

    if (source_pool_parse(key, value, &pool, reason) < 0) {
        vstr_sprintf(why, "%s, line %d: %s", path, lineno, vstr_str(reason));
        vstr_free(reason);
        return -1;
    }
    vstr_free(reason);
    if (source_pools_find(pools, pool.name) != NULL) {
        vstr_sprintf(why, "%s, line %d: pool %s defined twice", path, lineno,
                     pool.name);
        source_pool_clear(&pool);
        return -1;
    }
    pool.path = mystrdup(path);
    pool.lineno = lineno;
    pools->pools =
        myrealloc_array(pools->pools, pools->count + 1, sizeof(*pools->pools));
    pools->pools[pools->count++] = pool;
    return 0;
}

/* source_pools_load - the tables of param, read whole */
SOURCE_POOLS *source_pools_load(const char *param, const char *value, VSTR *why)
{
    ARGV *specs = maps_split(value, why);
    SOURCE_POOLS *pools;

    if (specs == NULL) {
        VSTR *inner = vstr_alloc(100);

        vstr_cpy(inner, vstr_str(why));
        vstr_sprintf(why, "%s: %s", param, vstr_str(inner));
        vstr_free(inner);
        return NULL;
    }
    vstr_reset(why);
    if (specs->argc == 0) {
        argv_free(specs);
        return NULL;
    }
    pools = mycalloc(1, sizeof(*pools));
    for (size_t i = 0; i < specs->argc; i++) {
        const char *spec = specs->argv[i];
        const char *colon = strchr(spec, ':');
        size_t type_len = colon ? (size_t) (colon - spec) : 0;
        struct stat st;

        if (colon == NULL ||
            !((type_len == 8 && strncmp(spec, "texthash", 8) == 0) ||
              (type_len == 4 && strncmp(spec, "hash", 4) == 0) ||
              (type_len == 5 && strncmp(spec, "btree", 5) == 0))) {
            vstr_sprintf(why,
                         "%s: \"%s\": source pools are read whole: use "
                         "texthash:/path (or hash:, btree:)",
                         param, spec);
            goto bad;
        }
        if (map_text_read(colon + 1, MAP_FLAG_NONE, source_pools_add, pools,
                          &st, why) < 0) {
            VSTR *inner = vstr_alloc(100);

            vstr_cpy(inner, vstr_str(why));
            vstr_sprintf(why, "%s: %s", param, vstr_str(inner));
            vstr_free(inner);
            goto bad;
        }
    }
    argv_free(specs);
    if (pools->count == 0) {
        vstr_sprintf(why, "%s: no pool defined", param);
        return source_pools_free(pools);
    }
    return pools;
bad:
    argv_free(specs);
    return source_pools_free(pools);
}

/* source_pools_free - release the pools; NULL */
SOURCE_POOLS *source_pools_free(SOURCE_POOLS *pools)
{
    if (pools == NULL)
        return NULL;
    for (size_t i = 0; i < pools->count; i++)
        source_pool_clear(&pools->pools[i]);
    myfree(pools->pools);
    myfree(pools);
    return NULL;
}

/* source_pools_find - a pool by name, any case */
const SOURCE_POOL *source_pools_find(const SOURCE_POOLS *pools,
                                     const char *name)
{
    if (pools == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < pools->count; i++)
        if (strcasecmp(pools->pools[i].name, name) == 0)
            return &pools->pools[i];
    return NULL;
}

/* source_pool_wrr_next - smooth weighted round robin over usable sources */
long source_pool_wrr_next(const SOURCE_POOL *pool, long long *current,
                          SOURCE_POOL_USABLE_FN usable, void *arg)
{
    long long total = 0;
    long best = -1;

    for (size_t i = 0; i < pool->count; i++) {
        if (pool->sources[i].weight <= 0 ||
            (usable != NULL && !usable(pool, i, arg)))
            continue;
        current[i] += pool->sources[i].weight;
        total += pool->sources[i].weight;
        if (best < 0 || current[i] > current[best])
            best = (long) i;
    }
    if (best >= 0)
        current[best] -= total;
    return best;
}

/* source_pool_rule_keys - the smtp_source_pool_maps keys, in order */
ARGV *source_pool_rule_keys(const char *sasl_user, const char *tenant,
                            const char *sender)
{
    ARGV *keys = argv_alloc(4);
    VSTR *key = vstr_alloc(100);

    if (sasl_user != NULL && *sasl_user != 0) {
        vstr_sprintf(key, "sasl:%s", sasl_user);
        argv_add(keys, vstr_str(key));
    }
    if (tenant != NULL && *tenant != 0) {
        vstr_sprintf(key, "tenant:%s", tenant);
        argv_add(keys, vstr_str(key));
    }
    if (sender != NULL && *sender != 0) {
        const char *domain = smtp_addr_domain(sender);

        vstr_cpy(key, sender);
        argv_add(keys, vstr_str(vstr_lower(key)));
        if (domain != NULL && *domain != 0) {
            vstr_cpy(key, domain);
            argv_add(keys, vstr_str(vstr_lower(key)));
        }
    }
    vstr_free(key);
    return keys;
}

/* source_pool_allow_keys - the smtp_source_pool_allow_maps keys, in order */
ARGV *source_pool_allow_keys(const SOURCE_POOL_REQUESTER *who)
{
    ARGV *keys = argv_alloc(4);
    VSTR *key = vstr_alloc(100);

    if (who->sasl_user != NULL && *who->sasl_user != 0) {
        vstr_sprintf(key, "sasl:%s", who->sasl_user);
        argv_add(keys, vstr_str(key));
    }
    if (who->tenant != NULL && *who->tenant != 0) {
        vstr_sprintf(key, "tenant:%s", who->tenant);
        argv_add(keys, vstr_str(key));
    }
    if (who->mynetworks)
        argv_add(keys, "mynetworks");
    if (who->local)
        argv_add(keys, "local");
    vstr_free(key);
    return keys;
}

/* source_pool_allow_lists - does an allow-list value name pool? */
bool source_pool_allow_lists(const char *value, const char *pool)
{
    ARGV *names = argv_split(value, " \t\r\n,");
    bool found = false;

    for (size_t i = 0; !found && i < names->argc; i++)
        found = strcmp(names->argv[i], SOURCE_POOL_ALLOW_ANY) == 0 ||
                strcasecmp(names->argv[i], pool) == 0;
    argv_free(names);
    return found;
}

/* source_pool_allowed - may who name pool? */
int source_pool_allowed(MAPS *allow, const SOURCE_POOL_REQUESTER *who,
                        const char *pool, VSTR *why)
{
    ARGV *keys = source_pool_allow_keys(who);
    int ret = -1;

    vstr_reset(why);
    for (size_t i = 0; allow != NULL && ret < 0 && i < keys->argc; i++) {
        int error = 0;
        const char *value = maps_find(allow, keys->argv[i], &error);

        if (value == NULL && error == MAP_FAIL) {
            vstr_sprintf(why,
                         "smtp_source_pool_allow_maps: lookup of %s "
                         "failed",
                         keys->argv[i]);
            ret = SOURCE_POOL_ALLOW_FAIL;
        } else if (value != NULL) {
            ret = source_pool_allow_lists(value, pool) ? SOURCE_POOL_ALLOWED
                                                       : SOURCE_POOL_REFUSED;
            vstr_sprintf(why, "smtp_source_pool_allow_maps (%s) %s \"%s\"",
                         keys->argv[i],
                         ret == SOURCE_POOL_ALLOWED ? "allows" : "allows only",
                         value);
        }
    }
    if (ret < 0 && allow == NULL && who->sasl_user && *who->sasl_user) {
        /* No table at all: an authenticated client may name any pool, as
           the header has always been honoured (issue #13); a site whose
           SASL users must not share pools lists them in the table. API
           tenants need an entry: a tenant is someone else's sender. */
        ret = SOURCE_POOL_ALLOWED;
        vstr_cpy(why, "no smtp_source_pool_allow_maps: an authenticated "
                      "client may name any pool");
    } else if (ret < 0) {
        /* No entry: mynetworks and local submission may name any pool. */
        ret = who->mynetworks || who->local ? SOURCE_POOL_ALLOWED
                                            : SOURCE_POOL_REFUSED;
        if (keys->argc == 0)
            vstr_cpy(why, "the client is neither in mynetworks nor "
                          "authenticated");
        else if (ret == SOURCE_POOL_ALLOWED)
            vstr_sprintf(why, "%s may name any pool",
                         who->mynetworks ? "mynetworks" : "local submission");
        else
            vstr_sprintf(why, "%s is not in smtp_source_pool_allow_maps",
                         keys->argv[0]);
    }
    argv_free(keys);
    return ret;
}

/* source_pool_addr_local - can this machine bind the source's address? */
int source_pool_addr_local(const SOURCE_POOL_SOURCE *source, VSTR *why)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;
    int ret = 0;

    memset(&ss, 0, sizeof(ss));
    if (source->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

        sin6->sin6_family = AF_INET6;
        len = sizeof(*sin6);
        if (inet_pton(AF_INET6, source->address, &sin6->sin6_addr) != 1)
            goto bad;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

        sin->sin_family = AF_INET;
        len = sizeof(*sin);
        if (inet_pton(AF_INET, source->address, &sin->sin_addr) != 1)
            goto bad;
    }
    if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        vstr_sprintf(why, "%s: socket: %s", source->address, strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *) &ss, len) < 0) {
        vstr_sprintf(why, "%s: %s", source->address, strerror(errno));
        ret = -1;
    }
    (void) close(fd);
    return ret;
bad:
    vstr_sprintf(why, "%s: not an IP address", source->address);
    return -1;
}
