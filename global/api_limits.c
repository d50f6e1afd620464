/*
 * api_limits - the HTTP API's per-tenant limits (api_limits.h)
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "api_limits.h"
#include "htable.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define API_LIMITS_RECORD 48 /* bytes: "DAY COUNT\n" padded with spaces */

typedef struct API_TENANT_USE {
    long long day; /* the UTC day of count */
    long long count; /* messages counted that day */
    double tokens; /* the rate bucket; may be below 0 (a debt) */
    double stamp; /* when tokens was last brought up to date */
    int fd; /* DIR/TENANT, or -1 (then the count is memory only) */
} API_TENANT_USE;

struct API_LIMITS_STATE {
    char *dir;
    long long daily;
    long long rate;
    HTABLE *tenants; /* tenant -> API_TENANT_USE */
};

/* api_limits_create - see api_limits.h */
API_LIMITS_STATE *api_limits_create(const char *dir, long long daily,
                                    long long rate)
{
    API_LIMITS_STATE *state = mycalloc(1, sizeof(*state));

    state->dir = mystrdup(dir);
    state->daily = daily;
    state->rate = rate;
    state->tenants = htable_alloc(16);
    return state;
}

/* api_limits_use_free - one tenant's state (htable_free) */
static void api_limits_use_free(void *arg)
{
    API_TENANT_USE *use = arg;

    if (use->fd >= 0)
        (void) close(use->fd);
    myfree(use);
}

/* api_limits_free - see api_limits.h */
void api_limits_free(API_LIMITS_STATE *state)
{
    if (state == NULL)
        return;
    htable_free(state->tenants, api_limits_use_free);
    myfree(state->dir);
    myfree(state);
}

/* api_limits_day - see api_limits.h */
long long api_limits_day(double now)
{
    return now < 0 ? -1 : (long long) (now / 86400.0);
}

/* api_limits_save - write the tenant's day and count in place */
static void api_limits_save(const API_LIMITS_STATE *state, const char *tenant,
                            API_TENANT_USE *use)
{
    char record[API_LIMITS_RECORD + 1];
    int len;

    if (use->fd < 0)
        return;
    len = snprintf(record, sizeof(record), "%lld %lld\n", use->day, use->count);
    if (len < 0 || len >= API_LIMITS_RECORD)
        return;
    memset(record + len, ' ', (size_t) (API_LIMITS_RECORD - len));
    if (pwrite(use->fd, record, API_LIMITS_RECORD, 0) != API_LIMITS_RECORD)
        msg_warn("api: write %s/%s: %m (the count goes on in memory)",
                 state->dir, tenant);
}

/* api_limits_use - the tenant's state, read from its file when first
   seen, its count reset at a new day */
static API_TENANT_USE *api_limits_use(API_LIMITS_STATE *state,
                                      const char *tenant, double now)
{
    API_TENANT_USE *use = htable_find(state->tenants, tenant);
    long long today = api_limits_day(now);

    if (use == NULL) {
        VSTR *path = vstr_alloc(100);
        char record[API_LIMITS_RECORD + 1];
        ssize_t got;
        long long day;
        long long count;

        use = mycalloc(1, sizeof(*use));
        use->fd = -1;
        use->tokens = (double) state->rate;
        use->stamp = now;
        use->day = today;
        if (state->daily > 0) {
            vstr_sprintf(path, "%s/%s", state->dir, tenant);
            if (mkdir(state->dir, 0700) < 0 && errno != EEXIST)
                msg_warn("api: mkdir %s: %m", state->dir);
            if ((use->fd =
                     open(vstr_str(path),
                          O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
                msg_warn("api: open %s: %m (the count is kept in memory)",
                         vstr_str(path));
            else if ((got = pread(use->fd, record, API_LIMITS_RECORD, 0)) > 0) {
                record[got] = 0;
                if (sscanf(record, "%lld %lld", &day, &count) == 2 &&
                    count >= 0 && day == today)
                    use->count = count;
            }
        }
        vstr_free(path);
        htable_enter(state->tenants, tenant, use);
    }
    if (use->day != today) {
        use->day = today;
        use->count = 0;
        api_limits_save(state, tenant, use);
    }
    return use;
}

/* api_limits_take - see api_limits.h */
long long api_limits_take(API_LIMITS_STATE *state, const char *tenant,
                          long long n, double now, long long *day,
                          const char **which)
{
    API_TENANT_USE *use = api_limits_use(state, tenant, now);
    double need;

    *day = use->day;
    if (state->daily > 0 && use->count + n > state->daily) {
        *which = "daily";
        return (long long) (86400.0 * (double) (use->day + 1) - now) + 1;
    }
    if (state->rate > 0) {
        if (now > use->stamp) {
            use->tokens += (now - use->stamp) * (double) state->rate;
            if (use->tokens > (double) state->rate)
                use->tokens = (double) state->rate;
        }
        use->stamp = now;
        need = (double) (n < state->rate ? n : state->rate);
        if (use->tokens < need) {
            *which = "rate";
            long long wait =
                (long long) ((need - use->tokens) / (double) state->rate);

            return wait + 1; /* rounded up, and at least 1 */
        }
        use->tokens -= (double) n;
    }
    use->count += n;
    api_limits_save(state, tenant, use);
    return 0;
}

/* api_limits_give - see api_limits.h */
void api_limits_give(API_LIMITS_STATE *state, const char *tenant, long long n,
                     long long day)
{
    API_TENANT_USE *use = htable_find(state->tenants, tenant);

    if (use == NULL || use->day != day)
        return;
    use->count = use->count > n ? use->count - n : 0;
    api_limits_save(state, tenant, use);
}

/* api_limits_count - see api_limits.h */
long long api_limits_count(API_LIMITS_STATE *state, const char *tenant,
                           long long day)
{
    API_TENANT_USE *use = htable_find(state->tenants, tenant);

    return use != NULL && use->day == day ? use->count : 0;
}
