/*
 * events_stats - pure helpers of the embedded store (events_stats.h)
 */
#include "sys_defs.h"

#include <ctype.h>

#include "events_stats.h"

/* events_stats_domain - the lower-case domain of address */
bool events_stats_domain(const char *address, VSTR *domain)
{
    const char *at = address ? strrchr(address, '@') : NULL;

    vstr_reset(domain);
    if (at == NULL || at[1] == 0)
        return false;
    vstr_cpy(domain, at + 1);
    vstr_lower(domain);
    return true;
}

/* events_stats_digits - n decimal digits at text into *value */
static bool events_stats_digits(const char *text, int n, int *value)
{
    *value = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char) text[i]))
            return false;
        *value = *value * 10 + (text[i] - '0');
    }
    return true;
}

/* events_stats_time - the Unix time of an event's ts, or -1 */
long long events_stats_time(const char *ts)
{
    struct tm tm;
    const char *cp;
    int year, mon, day, hour, min, sec;

    if (ts == NULL || strlen(ts) < 20 || !events_stats_digits(ts, 4, &year) ||
        ts[4] != '-' || !events_stats_digits(ts + 5, 2, &mon) || ts[7] != '-' ||
        !events_stats_digits(ts + 8, 2, &day) || ts[10] != 'T' ||
        !events_stats_digits(ts + 11, 2, &hour) || ts[13] != ':' ||
        !events_stats_digits(ts + 14, 2, &min) || ts[16] != ':' ||
        !events_stats_digits(ts + 17, 2, &sec))
        return -1;
    cp = ts + 19;
    if (*cp == '.') {
        for (cp++; isdigit((unsigned char) *cp); cp++)
            /* void */;
    }
    if (strcmp(cp, "Z") != 0 || mon < 1 || mon > 12 || day < 1 || day > 31 ||
        hour > 23 || min > 59 || sec > 60)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    return (long long) timegm(&tm);
}
