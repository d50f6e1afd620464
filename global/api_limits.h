/*
 * api_limits - the HTTP API's per-tenant limits (issue #21): messages per
 * UTC day (api_tenant_daily_limit) and per second (api_tenant_rate_limit)
 *
 * The day's count of each tenant lives in DIR/TENANT ("DAY COUNT\n",
 * rewritten in place with one pwrite at each change), read when the
 * tenant is first seen: a restart of the api (or of the whole instance)
 * goes on from the count it left. The file is not fsynced (a count is no
 * mail): after a power loss the count may be that of a few seconds
 * before. The rate is a token bucket of rate tokens per second holding
 * at most rate tokens (one second's worth), in memory: a request of n
 * messages needs min(n, rate) tokens and takes n, so a batch larger than
 * a second's worth is let through when the bucket is full and the
 * tenant's next requests wait until the debt is paid.
 */
#ifndef API_LIMITS_H
#define API_LIMITS_H

#include "sys_defs.h"

#include "vstr.h"

typedef struct API_LIMITS_STATE API_LIMITS_STATE;

/* api_limits_create - limits kept under dir (created when needed);
   daily, rate: 0 for none */
extern API_LIMITS_STATE *api_limits_create(const char *dir, long long daily,
                                           long long rate);
extern void api_limits_free(API_LIMITS_STATE *state);

/* api_limits_day - the UTC day number of a time */
extern long long api_limits_day(double now);

/* api_limits_take - count n messages of tenant at time now (seconds,
   fractional); 0 when they may go (counted, against *day), else the
   seconds to wait (at least 1) with *which "daily" or "rate" and nothing
   counted */
extern long long api_limits_take(API_LIMITS_STATE *state, const char *tenant,
                                 long long n, double now, long long *day,
                                 const char **which);

/* api_limits_give - n messages taken on day were not queued after all */
extern void api_limits_give(API_LIMITS_STATE *state, const char *tenant,
                            long long n, long long day);

/* api_limits_count - the tenant's count of day (for tests and logs) */
extern long long api_limits_count(API_LIMITS_STATE *state, const char *tenant,
                                  long long day);

#endif
