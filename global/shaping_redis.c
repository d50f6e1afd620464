/*
 * shaping_redis - shared shaping limits: the Lua scripts, the keys, the
 * server address, the local share and the link state (shaping_redis.h)
 */
#include "sys_defs.h"

#include <limits.h>

#include "msg.h"
#include "mymalloc.h"
#include "shaping_redis.h"

/*
 * The take step. Times are microseconds of Redis's clock; Lua numbers are
 * doubles, exact to 2^53 (about 285 years of microseconds since 1970).
 */
const char shaping_redis_take_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local msg_t = tonumber(ARGV[1])\n"
    "local conn_t = tonumber(ARGV[2])\n"
    "local burst = tonumber(ARGV[3])\n"
    "local maxc = tonumber(ARGV[4])\n"
    "local ttl = tonumber(ARGV[6])\n"
    "local by = ''\n"
    "local s = redis.call('GET', KEYS[4])\n"
    "if s then\n"
    "  local left = redis.call('PTTL', KEYS[4])\n"
    "  if left < 1 then left = 1 end\n"
    "  return {0, left * 1000, 'suspended', s, 0}\n"
    "end\n"
    "local r = redis.call('GET', KEYS[5])\n"
    "if r then\n"
    "  local iv, rb = string.match(r, '^(%d+) (.*)$')\n"
    "  if iv and tonumber(iv) > msg_t then\n"
    "    msg_t = tonumber(iv); burst = 1; by = rb\n"
    "  end\n"
    "end\n"
    "local c = redis.call('GET', KEYS[6])\n"
    "if c then\n"
    "  local n, cb = string.match(c, '^(%d+) (.*)$')\n"
    "  if n and (maxc == 0 or tonumber(n) < maxc) then\n"
    "    maxc = tonumber(n); by = cb\n"
    "  end\n"
    "end\n"
    "if burst < 1 then burst = 1 end\n"
    "if maxc > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
    "  if redis.call('ZCARD', KEYS[3]) >= maxc then\n"
    "    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')\n"
    "    local w = tonumber(first[2]) - now\n"
    "    if w < 1 then w = 1 end\n"
    "    return {0, w, 'full', by, 0}\n"
    "  end\n"
    "end\n"
    "local function tat_of(key, T)\n"
    "  if T <= 0 then return 0, 0 end\n"
    "  local tat = tonumber(redis.call('GET', key) or '0') or 0\n"
    "  local w = tat - (burst - 1) * T - now\n"
    "  if w < 0 then w = 0 end\n"
    "  if tat < now then tat = now end\n"
    "  return w, tat + T\n"
    "end\n"
    "local mw, mtat = tat_of(KEYS[1], msg_t)\n"
    "local cw, ctat = tat_of(KEYS[2], conn_t)\n"
    "if mw > 0 or cw > 0 then\n"
    "  return {0, math.max(mw, cw), 'rate', by, 0}\n"
    "end\n"
    "if msg_t > 0 then\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', mtat), 'PX',\n"
    "             math.floor((mtat - now) / 1000) + 1)\n"
    "end\n"
    "if conn_t > 0 then\n"
    "  redis.call('SET', KEYS[2], string.format('%.0f', ctat), 'PX',\n"
    "             math.floor((ctat - now) / 1000) + 1)\n"
    "end\n"
    "if maxc > 0 then\n"
    "  redis.call('ZADD', KEYS[3], string.format('%.0f', now + ttl), "
    "ARGV[5])\n"
    "  redis.call('PEXPIRE', KEYS[3], math.floor(ttl / 1000) + 1000)\n"
    "  return {1, 0, 'ok', by, 1}\n"
    "end\n"
    "return {1, 0, 'ok', by, 0}\n";

const char shaping_redis_renew_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local ttl = tonumber(ARGV[1])\n"
    "local n = 0\n"
    "for i = 2, #ARGV do\n"
    "  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH',\n"
    "                     string.format('%.0f', now + ttl), ARGV[i])\n"
    "end\n"
    "if n > 0 then\n"
    "  redis.call('PEXPIRE', KEYS[1], math.floor(ttl / 1000) + 1000)\n"
    "end\n"
    "return n\n";

const char shaping_redis_release_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "return redis.call('ZADD', KEYS[1], 'XX', 'CH',\n"
    "                  string.format('%.0f', now + tonumber(ARGV[1])), "
    "ARGV[2])\n";

const char shaping_redis_source_set_lua[] =
    "if tonumber(ARGV[3]) > 0 then\n"
    "  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])\n"
    "else\n"
    "  redis.call('SET', KEYS[2], ARGV[2])\n"
    "end\n"
    "return redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])\n";

const char shaping_redis_source_del_lua[] =
    "redis.call('DEL', KEYS[2])\n"
    "return redis.call('ZREM', KEYS[1], ARGV[1])\n";

const char shaping_redis_source_poll_lua[] =
    "local out = {}\n"
    "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  local v = redis.call('GET', ARGV[1] .. '{' .. m .. '}:pause')\n"
    "  if v then\n"
    "    out[#out + 1] = m\n"
    "    out[#out + 1] = v\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[1], m)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* shaping_redis_source_key - sluice:source:{K}:pause */
const char *shaping_redis_source_key(VSTR *buf, const char *key)
{
    vstr_sprintf(buf, "%s{%s}:pause", SHAPING_REDIS_SOURCE_PREFIX, key);
    return vstr_str(buf);
}

/* shaping_redis_key - the key what of bucket */
const char *shaping_redis_key(VSTR *buf, const char *bucket,
                              SHAPING_REDIS_KEY what)
{
    static const char *const names[SHAPING_REDIS_KEY_COUNT] = {
        "msg", "conn", "leases", "suspend", "rate", "connmax",
    };

    if ((unsigned) what >= SHAPING_REDIS_KEY_COUNT)
        msg_panic("%s: bad key %d", __func__, (int) what);
    vstr_sprintf(buf, "%s{%s}:%s", SHAPING_REDIS_KEY_PREFIX, bucket,
                 names[what]);
    return vstr_str(buf);
}

/* shaping_redis_port - a port number 1..65535, or -1 */
static int shaping_redis_port(const char *text)
{
    long value = 0;

    if (*text == 0 || strlen(text) > 5)
        return -1;
    for (const char *cp = text; *cp; cp++) {
        if (*cp < '0' || *cp > '9')
            return -1;
        value = value * 10 + (*cp - '0');
    }
    return value >= 1 && value <= 65535 ? (int) value : -1;
}

/* shaping_redis_addr_parse - where the server is */
int shaping_redis_addr_parse(const char *value, SHAPING_REDIS_ADDR *addr,
                             VSTR *why)
{
    const char *colon;
    const char *host;
    size_t host_len;

    memset(addr, 0, sizeof(*addr));
    if (value == NULL || *value == 0) {
        vstr_cpy(why, "shaping_redis_server: empty");
        return -1;
    }
    if (*value == '/') {
        addr->path = mystrdup(value);
        return 0;
    }
    if (*value == '[') {
        const char *end = strchr(value, ']');

        if (end == NULL || end[1] != ':' || end == value + 1) {
            vstr_sprintf(why,
                         "shaping_redis_server: \"%s\": expected "
                         "[address]:port",
                         value);
            return -1;
        }
        host = value + 1;
        host_len = (size_t) (end - host);
        colon = end + 1;
    } else {
        if ((colon = strrchr(value, ':')) == NULL || colon == value ||
            memchr(value, ':', (size_t) (colon - value)) != NULL) {
            vstr_sprintf(why,
                         "shaping_redis_server: \"%s\": expected host:port, "
                         "[address]:port or /path",
                         value);
            return -1;
        }
        host = value;
        host_len = (size_t) (colon - value);
    }
    if ((addr->port = shaping_redis_port(colon + 1)) < 0) {
        vstr_sprintf(why, "shaping_redis_server: \"%s\": bad port \"%s\"",
                     value, colon + 1);
        return -1;
    }
    addr->host = mystrndup(host, host_len);
    return 0;
}

/* shaping_redis_addr_done - free what parse made */
void shaping_redis_addr_done(SHAPING_REDIS_ADDR *addr)
{
    myfree(addr->host);
    myfree(addr->path);
    memset(addr, 0, sizeof(*addr));
}

/* shaping_redis_slow - a rate nodes times slower */
static void shaping_redis_slow(SHAPING_RATE *rate, long long nodes)
{
    if (rate->count <= 0)
        return;
    if (rate->period_usec > LLONG_MAX / nodes)
        rate->period_usec = LLONG_MAX;
    else
        rate->period_usec *= nodes;
}

/* shaping_redis_share - one node's share of rule */
void shaping_redis_share(const SHAPING_RULE *rule, long long nodes,
                         SHAPING_RULE *share)
{
    *share = *rule;
    if (nodes <= 1)
        return;
    shaping_redis_slow(&share->message_rate, nodes);
    shaping_redis_slow(&share->connection_rate, nodes);
    share->burst = rule->burst / nodes > 1 ? rule->burst / nodes : 1;
    if (rule->max_connections > 0)
        share->max_connections = rule->max_connections / nodes > 1
                                     ? rule->max_connections / nodes
                                     : 1;
}

/* shaping_redis_empty - a GCRA state whose next unit is due one interval
   from now, whatever the burst */
static void shaping_redis_empty(SHAPING_GCRA *gcra, const SHAPING_RATE *rate,
                                long long burst, long long now)
{
    long long interval = shaping_gcra_interval(rate);
    long long tat;

    if (interval == 0)
        return;
    if (burst < 1)
        burst = 1;
    tat = now + burst * interval;
    if (gcra->tat < tat)
        gcra->tat = tat;
}

/* shaping_redis_fallback - the node goes on alone with its share */
void shaping_redis_fallback(const SHAPING_RULE *share, SHAPING_STATE *state,
                            long long now)
{
    shaping_redis_empty(&state->messages, &share->message_rate, share->burst,
                        now);
    shaping_redis_empty(&state->connects, &share->connection_rate, share->burst,
                        now);
}

/* shaping_redis_verdict - what an answer of the take script means */
SHAPING_REDIS_VERDICT shaping_redis_verdict(long long allowed, long long wait,
                                            const char *reason,
                                            long long *wait_out)
{
    long long max;

    *wait_out = 0;
    if (reason == NULL)
        return SHAPING_REDIS_BAD;
    if (allowed == 1)
        return strcmp(reason, "ok") == 0 ? SHAPING_REDIS_GO : SHAPING_REDIS_BAD;
    if (allowed != 0 || wait < 0)
        return SHAPING_REDIS_BAD;
    if (strcmp(reason, "full") == 0)
        max = SHAPING_REDIS_POLL;
    else if (strcmp(reason, "rate") == 0 || strcmp(reason, "suspended") == 0)
        max = SHAPING_REDIS_MAX_WAIT;
    else
        return SHAPING_REDIS_BAD;
    *wait_out = wait < SHAPING_REDIS_MIN_WAIT ? SHAPING_REDIS_MIN_WAIT
                : wait > max                  ? max
                                              : wait;
    return SHAPING_REDIS_WAIT;
}

/* shaping_redis_link_up - a call succeeded */
bool shaping_redis_link_up(SHAPING_REDIS_LINK *link, long long now)
{
    link->failures = 0;
    if (link->state == SHAPING_REDIS_UP)
        return false;
    link->state = SHAPING_REDIS_UP;
    link->since = now;
    return true;
}

/* shaping_redis_link_down - a call failed */
bool shaping_redis_link_down(SHAPING_REDIS_LINK *link, long long now)
{
    if (link->failures < 30)
        link->failures++;
    if (link->state == SHAPING_REDIS_DOWN)
        return false;
    link->state = SHAPING_REDIS_DOWN;
    link->since = now;
    return true;
}

/* shaping_redis_link_retry - the wait before the next reconnect: doubling
   from RETRY_MIN to RETRY_MAX */
long long shaping_redis_link_retry(const SHAPING_REDIS_LINK *link)
{
    long long wait = SHAPING_REDIS_RETRY_MIN;

    for (int i = 1; i < link->failures && wait < SHAPING_REDIS_RETRY_MAX; i++)
        wait *= 2;
    return wait < SHAPING_REDIS_RETRY_MAX ? wait : SHAPING_REDIS_RETRY_MAX;
}

/* shaping_redis_state_name - for logs and `sluice shaping` */
const char *shaping_redis_state_name(SHAPING_REDIS_STATE state)
{
    switch (state) {
    case SHAPING_REDIS_UP:
        return "up";
    case SHAPING_REDIS_DOWN:
        return "down";
    case SHAPING_REDIS_UNKNOWN:
    default:
        return "connecting";
    }
}
