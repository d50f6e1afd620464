/*
 * source_pool - source IP pools: the smtp_source_pools table, the weighted
 * round robin within a pool, the keys that choose a message's pool
 *
 * smtp_source_pools = texthash:/etc/sluice/pools (read whole, like
 * smtp_shaping_maps), one pool per line:
 *
 *     transactional  192.0.2.10*2/mta1.example.com 192.0.2.11/mta2.example.com
 *     marketing      198.51.100.5 [2001:db8::5]*3/mkt.example.com
 *
 * The key is the pool's name ([a-z0-9_.-], at most SOURCE_POOL_NAME_MAX;
 * keys are folded to lower case). The value is a list of sources separated
 * by spaces or commas, each ADDRESS[*WEIGHT][/EHLO-NAME]:
 *   ADDRESS    an IPv4 or IPv6 address of this machine; an IPv6 address
 *              may be written in brackets ([2001:db8::5]), which read
 *              better before *WEIGHT or /EHLO-NAME; they are optional, as
 *              neither '*' nor '/' can occur in an address
 *   WEIGHT     0..SOURCE_POOL_WEIGHT_MAX, default 1; 0 lists the source
 *              without ever choosing it
 *   EHLO-NAME  the name smtp sends in EHLO from this source (a host name:
 *              letters, digits, '-', '.'); default smtp_helo_name
 * A source may belong to several pools. A pool needs one source of weight
 * above 0.
 *
 * Choosing a source: smooth weighted round robin (each pick adds every
 * usable source's weight to its counter, takes the largest counter and
 * subtracts the sum of the usable weights from it): over any run of
 * sum-of-weights picks each source is chosen exactly weight times, spread
 * out rather than in bursts. Sources the caller says are not usable now
 * are skipped (their counters stay where they are).
 *
 * Choosing a pool (cleanup, global/source_pool_rule_keys): the keys looked
 * up in smtp_source_pool_maps, in order: "sasl:USER" (the SASL login),
 * "tenant:T" (the API's tenant), the sender's full address
 * ("alice@example.com"), then its domain ("example.com", the domain alone:
 * no parent domains); the first one found names the pool. The
 * X-Sluice-Pool header, when it is honoured, comes before all of them.
 *
 * Who may name a pool (the X-Sluice-Pool header, the API's "pool" field):
 * smtp_source_pool_allow_maps, keys tried in order, the first found
 * decides:
 *   "sasl:USER"    an SMTP client authenticated as USER
 *   "tenant:T"     an API request of tenant T (and its raw MIME)
 *   "mynetworks"   an SMTP client in mynetworks (authenticated or not)
 *   "local"        local submission (sendmail, pickup)
 * the value a list of pool names (spaces or commas), or "*" for any pool:
 *
 *     sasl:alice@example.com  marketing, transactional
 *     tenant:acme             acme-dedicated transactional
 *     tenant:ops              *
 *     mynetworks              transactional
 *
 * With no entry found (or no table): mynetworks clients and local
 * submission may name any pool (as before the table existed); SASL users
 * outside mynetworks, API tenants and everyone else may name none. A
 * pool name that is not allowed is never honoured: the API answers 403
 * (field "pool"), cleanup removes the header, logs a warning and uses the
 * pool the rules or the default choose.
 */
#ifndef SOURCE_POOL_H
#define SOURCE_POOL_H

#include "sys_defs.h"

#include "argv.h"
#include "maps.h"
#include "vstr.h"

#define SOURCE_POOL_NAME_MAX 64
#define SOURCE_POOL_WEIGHT_MAX 1000
#define SOURCE_POOL_SOURCES_MAX 256 /* per pool */
#define SOURCE_POOL_HELO_MAX 253

#define SOURCE_POOL_HEADER "X-Sluice-Pool" /* chooses a pool, removed */
#define SOURCE_POOL_ATTR "pool" /* the queue file's A record */

typedef struct SOURCE_POOL_SOURCE {
    char *address; /* as written, without brackets */
    int family; /* AF_INET or AF_INET6 */
    int weight; /* 0: never chosen */
    char *helo_name; /* "": smtp_helo_name */
} SOURCE_POOL_SOURCE;

typedef struct SOURCE_POOL {
    char *name; /* lower case */
    SOURCE_POOL_SOURCE *sources;
    size_t count;
    char *path; /* the table it came from, for messages; NULL: none */
    int lineno; /* its line there, 0: none */
} SOURCE_POOL;

typedef struct SOURCE_POOLS {
    SOURCE_POOL *pools;
    size_t count;
} SOURCE_POOLS;

/* source_pool_name_valid - a pool name: [a-z0-9_.-]{1,64} (any case) */
extern bool source_pool_name_valid(const char *name);
/* source_pool_parse - one table value into pool (name given); 0, or -1
   with why (pool is then empty) */
extern int source_pool_parse(const char *name, const char *value,
                             SOURCE_POOL *pool, VSTR *why);
/* source_pool_clear - release what a pool holds */
extern void source_pool_clear(SOURCE_POOL *pool);
/* source_pools_load - the tables of param's value, read whole; NULL with
   why empty when value names none, NULL with why on any error */
extern SOURCE_POOLS *source_pools_load(const char *param, const char *value,
                                       VSTR *why);
extern SOURCE_POOLS *source_pools_free(SOURCE_POOLS *pools);
/* source_pools_find - the pool name (any case), NULL: none */
extern const SOURCE_POOL *source_pools_find(const SOURCE_POOLS *pools,
                                            const char *name);

/* source_pool_usable_fn - may source index of pool be chosen now? */
typedef bool (*SOURCE_POOL_USABLE_FN)(const SOURCE_POOL *pool, size_t index,
                                      void *arg);
/* source_pool_wrr_next - the next source by smooth weighted round robin;
   current holds pool->count counters (zeroed at first); usable may be
   NULL (all are); -1 when no source of weight above 0 is usable */
extern long source_pool_wrr_next(const SOURCE_POOL *pool, long long *current,
                                 SOURCE_POOL_USABLE_FN usable, void *arg);

/* source_pool_rule_keys - the smtp_source_pool_maps keys of a message,
   in the order they are tried (sasl_user, tenant may be NULL or "") */
extern ARGV *source_pool_rule_keys(const char *sasl_user, const char *tenant,
                                   const char *sender);

/* Who names a pool by header or API field. */
typedef struct SOURCE_POOL_REQUESTER {
    const char *sasl_user; /* the SMTP AUTH login, NULL or "": none */
    const char *tenant; /* the API's tenant, NULL or "": none */
    bool mynetworks; /* an SMTP client in mynetworks */
    bool local; /* local submission (sendmail, pickup) */
} SOURCE_POOL_REQUESTER;

#define SOURCE_POOL_ALLOW_ANY "*" /* an allow-list value: any pool */

/* source_pool_allow_keys - the smtp_source_pool_allow_maps keys of a
   requester, in the order they are tried */
extern ARGV *source_pool_allow_keys(const SOURCE_POOL_REQUESTER *who);
/* source_pool_allow_lists - does an allow-list value name pool ("*": any;
   names compared in any case)? */
extern bool source_pool_allow_lists(const char *value, const char *pool);

/* source_pool_allowed - may who name pool? SOURCE_POOL_ALLOWED or
   SOURCE_POOL_REFUSED, with why saying on what ground (for logs and the
   API's error); SOURCE_POOL_ALLOW_FAIL when a table lookup failed (why
   names the key). allow may be NULL (no table: the defaults above). */
#define SOURCE_POOL_ALLOWED 0
#define SOURCE_POOL_REFUSED 1
#define SOURCE_POOL_ALLOW_FAIL 2
extern int source_pool_allowed(MAPS *allow, const SOURCE_POOL_REQUESTER *who,
                               const char *pool, VSTR *why);

/* source_pool_addr_local - can this machine bind address? 0 yes; -1 no,
   with why ("192.0.2.1: Cannot assign requested address") */
extern int source_pool_addr_local(const SOURCE_POOL_SOURCE *source, VSTR *why);

#endif
