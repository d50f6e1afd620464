/*
 * mta_sts - MTA-STS policies: parse, fetch without blocking, cache
 *
 * A lookup of a domain is a small state machine shared by every caller
 * that asks for that domain while it runs (MTA_STS_FETCH): the TXT
 * record, then (when the cache cannot answer) the address of
 * mta-sts.DOMAIN, then the HTTPS fetch. libcurl's multi interface runs on
 * the caller's libevent base (global/curl_event.h), which hands finished
 * transfers to mta_sts_curl_done. Nothing here waits, except the durable
 * write of a fetched policy to the cache folder.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <strings.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "curl_event.h"
#include "htable.h"
#include "msg.h"
#include "mta_sts.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define MTA_STS_CACHE_MAGIC "sluice-mta-sts 1"
#define MTA_STS_USER_AGENT "sluice MTA-STS"

/* A cached policy. */
typedef struct MTA_STS_ENTRY {
    char *id;
    time_t fetched;
    time_t expires;
    MTA_STS_POLICY policy;
} MTA_STS_ENTRY;

typedef struct MTA_STS_FETCH MTA_STS_FETCH;

struct MTA_STS_LOOKUP {
    MTA_STS_FETCH *fetch;
    MTA_STS_CALLBACK callback;
    void *arg;
    MTA_STS_LOOKUP *next;
};

/* One domain's lookup, shared by its callers. */
struct MTA_STS_FETCH {
    MTA_STS_CTX *ctx;
    char *domain;
    char *host; /* mta-sts.DOMAIN */
    VSTR *id; /* from the TXT record */
    DNS_LOOKUP *dns; /* TXT or address lookup in flight */
    CURL *easy; /* the transfer in flight */
    struct curl_slist *resolve; /* CURLOPT_RESOLVE */
    char curl_error[CURL_ERROR_SIZE];
    VSTR *body;
    bool too_big;
    struct event *later; /* runs the callbacks from the loop */
    VSTR *source; /* MTA_STS_RESULT.source */
    MTA_STS_ENTRY *entry; /* what applies (in ctx->cache), or NULL */
    MTA_STS_LOOKUP *waiters;
};

struct MTA_STS_CTX {
    struct event_base *base;
    DNS_CTX *dns;
    CURL_EVENT *curl; /* libcurl on base */
    CURLM *multi; /* its multi handle */
    char *cafile;
    char *cache_dir; /* NULL: memory only */
    bool cache_read_only;
    int dns_timeout;
    int fetch_timeout;
    int https_port;
    HTABLE *cache; /* domain -> MTA_STS_ENTRY */
    HTABLE *fetches; /* domain -> MTA_STS_FETCH in flight */
};

/* mta_sts_mode_name - for logs */
const char *mta_sts_mode_name(MTA_STS_MODE mode)
{
    switch (mode) {
    case MTA_STS_MODE_ENFORCE:
        return "enforce";
    case MTA_STS_MODE_TESTING:
        return "testing";
    case MTA_STS_MODE_NONE:
        return "none";
    }
    return "none";
}

/* mta_sts_domain_ok - safe as a host name in a URL and as a file name */
bool mta_sts_domain_ok(const char *domain)
{
    size_t len = strlen(domain);
    size_t label = 0;

    if (len == 0 || len > 253)
        return false;
    for (const char *cp = domain; *cp; cp++) {
        if (*cp == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (isalnum((unsigned char) *cp) || *cp == '-') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* mta_sts_mx_match - one mx: pattern against a host name */
bool mta_sts_mx_match(const char *pattern, const char *host)
{
    size_t hlen = strlen(host);
    size_t plen;

    if (hlen > 0 && host[hlen - 1] == '.')
        hlen--;
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *suffix = pattern + 1; /* ".example.com" */
        size_t slen = strlen(suffix);
        size_t first;

        if (hlen <= slen || strncasecmp(host + hlen - slen, suffix, slen) != 0)
            return false;
        first = hlen - slen; /* the one label the star stands for */
        return memchr(host, '.', first) == NULL;
    }
    plen = strlen(pattern);
    return plen == hlen && strncasecmp(pattern, host, hlen) == 0;
}

/* mta_sts_policy_allows - host matches one of the patterns */
bool mta_sts_policy_allows(const MTA_STS_POLICY *policy, const char *host)
{
    for (size_t i = 0; policy->mx && i < policy->mx->argc; i++)
        if (mta_sts_mx_match(policy->mx->argv[i], host))
            return true;
    return false;
}

/* mta_sts_policy_free - release the patterns */
void mta_sts_policy_free(MTA_STS_POLICY *policy)
{
    if (policy->mx)
        argv_free(policy->mx);
    memset(policy, 0, sizeof(*policy));
}

/* mta_sts_policy_text - the canonical text of a policy */
void mta_sts_policy_text(const MTA_STS_POLICY *policy, VSTR *out)
{
    vstr_sprintf(out, "version: STSv1\nmode: %s\n",
                 mta_sts_mode_name(policy->mode));
    for (size_t i = 0; policy->mx && i < policy->mx->argc; i++)
        vstr_sprintf_append(out, "mx: %s\n", policy->mx->argv[i]);
    vstr_sprintf_append(out, "max_age: %ld\n", policy->max_age);
}

/* mta_sts_printable - a piece of bad input as log text */
static void mta_sts_printable(VSTR *out, const char *data, size_t len)
{
    if (len > 60)
        len = 60;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) data[i];

        vstr_addch(out, ch < ' ' || ch >= 0x7f ? '?' : ch);
    }
}

/* mta_sts_policy_parse - RFC 8461 3.2 */
int mta_sts_policy_parse(const char *text, size_t len, MTA_STS_POLICY *policy,
                         VSTR *why)
{
    bool have_version = false, have_mode = false, have_max_age = false;
    size_t pos = 0;
    int line_no = 0;

    memset(policy, 0, sizeof(*policy));
    if (len > MTA_STS_BODY_MAX) {
        vstr_sprintf(why, "policy larger than %d bytes", MTA_STS_BODY_MAX);
        return -1;
    }
    if (memchr(text, 0, len) != NULL) {
        vstr_cpy(why, "policy contains a NUL byte");
        return -1;
    }
    policy->mx = argv_alloc(4);
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t line_len = nl ? (size_t) (nl - line) : len - pos;
        size_t key_len, vstart, vend;
        const char *colon;

        pos += line_len + (nl ? 1 : 0);
        line_no++;
        if (line_len > 0 && line[line_len - 1] == '\r')
            line_len--;
        vend = line_len;
        while (vend > 0 && (line[vend - 1] == ' ' || line[vend - 1] == '\t'))
            vend--;
        if (vend == 0)
            continue; /* a blank line, as after the last one */
        if ((colon = memchr(line, ':', vend)) == NULL) {
            vstr_sprintf(why, "line %d: no \"key: value\": \"", line_no);
            mta_sts_printable(why, line, vend);
            vstr_cat(why, "\"");
            goto bad;
        }
        key_len = (size_t) (colon - line);
        vstart = key_len + 1;
        while (vstart < vend && (line[vstart] == ' ' || line[vstart] == '\t'))
            vstart++;
#define KEY_IS(k) (key_len == sizeof(k) - 1 && memcmp(line, k, key_len) == 0)
        if (KEY_IS("version")) {
            if (have_version) {
                vstr_sprintf(why, "line %d: version given twice", line_no);
                goto bad;
            }
            have_version = true;
            if (vend - vstart != 5 || memcmp(line + vstart, "STSv1", 5) != 0) {
                vstr_sprintf(why, "line %d: version is not STSv1", line_no);
                goto bad;
            }
        } else if (KEY_IS("mode")) {
            const char *v = line + vstart;
            size_t vlen = vend - vstart;

            if (have_mode) {
                vstr_sprintf(why, "line %d: mode given twice", line_no);
                goto bad;
            }
            have_mode = true;
            if (vlen == 7 && memcmp(v, "enforce", 7) == 0)
                policy->mode = MTA_STS_MODE_ENFORCE;
            else if (vlen == 7 && memcmp(v, "testing", 7) == 0)
                policy->mode = MTA_STS_MODE_TESTING;
            else if (vlen == 4 && memcmp(v, "none", 4) == 0)
                policy->mode = MTA_STS_MODE_NONE;
            else {
                vstr_sprintf(why, "line %d: unknown mode \"", line_no);
                mta_sts_printable(why, v, vlen);
                vstr_cat(why, "\"");
                goto bad;
            }
        } else if (KEY_IS("max_age")) {
            long value = 0;

            if (have_max_age) {
                vstr_sprintf(why, "line %d: max_age given twice", line_no);
                goto bad;
            }
            have_max_age = true;
            if (vend == vstart || vend - vstart > 10) {
                vstr_sprintf(why, "line %d: max_age is not 1 to 10 digits",
                             line_no);
                goto bad;
            }
            for (size_t i = vstart; i < vend; i++) {
                if (!isdigit((unsigned char) line[i])) {
                    vstr_sprintf(why, "line %d: max_age is not a number",
                                 line_no);
                    goto bad;
                }
                if (value <= MTA_STS_MAX_AGE_MAX)
                    value = value * 10 + (line[i] - '0');
            }
            /* RFC 8461 3.2: at most one year; more is taken as that. */
            policy->max_age =
                value > MTA_STS_MAX_AGE_MAX ? MTA_STS_MAX_AGE_MAX : value;
        } else if (KEY_IS("mx")) {
            const char *v = line + vstart;
            size_t vlen = vend - vstart;
            bool star = vlen > 2 && v[0] == '*' && v[1] == '.';
            char *name = mystrndup(v + (star ? 2 : 0), vlen - (star ? 2 : 0));
            VSTR *pattern;

            if (!mta_sts_domain_ok(name)) {
                myfree(name);
                vstr_sprintf(why, "line %d: bad mx pattern \"", line_no);
                mta_sts_printable(why, v, vlen);
                vstr_cat(why, "\"");
                goto bad;
            }
            pattern = vstr_alloc(vlen + 1);
            vstr_sprintf(pattern, "%s%s", star ? "*." : "", name);
            vstr_lower(pattern);
            argv_add(policy->mx, vstr_str(pattern));
            vstr_free(pattern);
            myfree(name);
        }
#undef KEY_IS
        /* Other keys are extensions: ignored (RFC 8461 3.2). */
    }
    if (!have_version) {
        vstr_cpy(why, "no version field");
        goto bad;
    }
    if (!have_mode) {
        vstr_cpy(why, "no mode field");
        goto bad;
    }
    if (!have_max_age) {
        vstr_cpy(why, "no max_age field");
        goto bad;
    }
    if (policy->mode != MTA_STS_MODE_NONE && policy->mx->argc == 0) {
        vstr_sprintf(why, "mode %s without any mx field",
                     mta_sts_mode_name(policy->mode));
        goto bad;
    }
    return 0;

bad:
    mta_sts_policy_free(policy);
    return -1;
}

/* mta_sts_txt_ours - does the record start with "v=STSv1" and a ';' (or
   end there)? Returns the position after the version, or 0 */
static size_t mta_sts_txt_ours(const char *text)
{
    size_t pos = 7;

    if (strncmp(text, "v=STSv1", 7) != 0)
        return 0;
    while (text[pos] == ' ' || text[pos] == '\t')
        pos++;
    return text[pos] == ';' || text[pos] == 0 ? pos : 0;
}

/* mta_sts_txt_select - the one "v=STSv1" record and its id */
int mta_sts_txt_select(const ARGV *texts, VSTR *id, VSTR *why)
{
    const char *record = NULL;
    size_t count = 0;
    size_t pos = 0;
    bool have_id = false;

    for (size_t i = 0; texts && i < texts->argc; i++) {
        size_t at = mta_sts_txt_ours(texts->argv[i]);

        if (at > 0) {
            count++;
            record = texts->argv[i];
            pos = at;
        }
    }
    if (count == 0)
        return 0;
    if (count > 1) {
        vstr_sprintf(why, "%zu TXT records start with v=STSv1", count);
        return -1;
    }
    vstr_reset(id);
    while (record[pos] != 0) {
        const char *field;
        size_t flen;

        pos++; /* the ';' */
        while (record[pos] == ' ' || record[pos] == '\t')
            pos++;
        field = record + pos;
        flen = strcspn(field, ";");
        pos += flen;
        while (flen > 0 && (field[flen - 1] == ' ' || field[flen - 1] == '\t'))
            flen--;
        if (flen == 0)
            continue; /* a trailing ';' */
        if (flen > 3 && strncmp(field, "id=", 3) == 0) {
            if (have_id) {
                vstr_cpy(why, "the TXT record has two ids");
                return -1;
            }
            if (flen - 3 > MTA_STS_ID_MAX) {
                vstr_sprintf(why, "the TXT record's id is longer than %d",
                             MTA_STS_ID_MAX);
                return -1;
            }
            for (size_t i = 3; i < flen; i++) {
                if (!isalnum((unsigned char) field[i])) {
                    vstr_cpy(why, "the TXT record's id is not letters and "
                                  "digits");
                    return -1;
                }
            }
            vstr_ncpy(id, field + 3, flen - 3);
            have_id = true;
        } else if (memchr(field, '=', flen) == NULL) {
            vstr_cpy(why, "the TXT record has a field without '='");
            return -1;
        }
    }
    if (!have_id) {
        vstr_cpy(why, "the TXT record has no id");
        return -1;
    }
    return 1;
}

/* mta_sts_cache_parse - a cache file */
int mta_sts_cache_parse(const char *text, size_t len, VSTR *id, time_t *fetched,
                        time_t *expires, MTA_STS_POLICY *policy, VSTR *why)
{
    const char *end = text + len;
    const char *cp = text;
    bool have_id = false, have_fetched = false, have_expires = false;
    size_t magic_len = strlen(MTA_STS_CACHE_MAGIC);

    if (len < magic_len + 1 || memcmp(text, MTA_STS_CACHE_MAGIC, magic_len) ||
        text[magic_len] != '\n') {
        vstr_cpy(why, "not a cached MTA-STS policy");
        return -1;
    }
    cp += magic_len + 1;
    while (cp < end && *cp != '\n') {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));
        size_t llen;
        long long value = 0;
        const char *num;

        if (nl == NULL)
            break;
        llen = (size_t) (nl - cp);
        if (llen > 4 && strncmp(cp, "id: ", 4) == 0) {
            vstr_ncpy(id, cp + 4, llen - 4);
            have_id = llen - 4 <= MTA_STS_ID_MAX;
            for (size_t i = 4; i < llen && have_id; i++)
                have_id = isalnum((unsigned char) cp[i]);
        } else if ((llen > 9 && strncmp(cp, "fetched: ", 9) == 0) ||
                   (llen > 9 && strncmp(cp, "expires: ", 9) == 0)) {
            num = cp + 9;
            if (llen - 9 > 18) {
                vstr_cpy(why, "bad time");
                return -1;
            }
            for (const char *d = num; d < nl; d++) {
                if (!isdigit((unsigned char) *d)) {
                    vstr_cpy(why, "bad time");
                    return -1;
                }
                value = value * 10 + (*d - '0');
            }
            if (*cp == 'f') {
                *fetched = (time_t) value;
                have_fetched = true;
            } else {
                *expires = (time_t) value;
                have_expires = true;
            }
        }
        cp = nl + 1;
    }
    if (!have_id || !have_fetched || !have_expires || cp >= end) {
        vstr_cpy(why, "incomplete header");
        return -1;
    }
    cp++; /* the empty line */
    return mta_sts_policy_parse(cp, (size_t) (end - cp), policy, why);
}

/*
 * The cache.
 */

/* mta_sts_entry_free - for htable_free */
static void mta_sts_entry_free(void *value)
{
    MTA_STS_ENTRY *entry = value;

    if (entry == NULL)
        return;
    myfree(entry->id);
    mta_sts_policy_free(&entry->policy);
    myfree(entry);
}

/* mta_sts_cache_path - cache_dir/domain */
static void mta_sts_cache_path(const MTA_STS_CTX *ctx, const char *domain,
                               VSTR *out)
{
    vstr_sprintf(out, "%s/%s", ctx->cache_dir, domain);
}

/* mta_sts_cache_load - the cached policy of domain: in memory, else from
   its file (which then stays in memory); NULL when there is none */
static MTA_STS_ENTRY *mta_sts_cache_load(MTA_STS_CTX *ctx, const char *domain)
{
    MTA_STS_ENTRY *entry = htable_find(ctx->cache, domain);
    VSTR *path, *why, *id;
    char *data;
    size_t len;

    if (entry != NULL || ctx->cache_dir == NULL)
        return entry;
    path = vstr_alloc(100);
    mta_sts_cache_path(ctx, domain, path);
    if ((data = safe_file_read(vstr_str(path), 2 * MTA_STS_BODY_MAX, &len)) ==
        NULL) {
        if (errno != ENOENT)
            msg_warn("MTA-STS: cannot read %s: %m", vstr_str(path));
        vstr_free(path);
        return NULL;
    }
    why = vstr_alloc(100);
    id = vstr_alloc(40);
    entry = mycalloc(1, sizeof(*entry));
    if (mta_sts_cache_parse(data, len, id, &entry->fetched, &entry->expires,
                            &entry->policy, why) < 0) {
        msg_warn("MTA-STS: %s: %s: ignored", vstr_str(path), vstr_str(why));
        myfree(entry);
        entry = NULL;
    } else {
        entry->id = vstr_export(id);
        id = NULL;
        htable_enter(ctx->cache, domain, entry);
    }
    myfree(data);
    if (id)
        vstr_free(id);
    vstr_free(why);
    vstr_free(path);
    return entry;
}

/* mta_sts_cache_store - remember a fetched policy, in memory and on disk */
static MTA_STS_ENTRY *mta_sts_cache_store(MTA_STS_CTX *ctx, const char *domain,
                                          const char *id,
                                          MTA_STS_POLICY *policy)
{
    MTA_STS_ENTRY *entry = mycalloc(1, sizeof(*entry));
    MTA_STS_ENTRY *old;

    entry->id = mystrdup(id);
    entry->fetched = time(NULL);
    entry->expires = entry->fetched + policy->max_age;
    entry->policy = *policy;
    memset(policy, 0, sizeof(*policy));
    if ((old = htable_delete(ctx->cache, domain)) != NULL)
        mta_sts_entry_free(old);
    htable_enter(ctx->cache, domain, entry);
    if (ctx->cache_dir != NULL && !ctx->cache_read_only) {
        VSTR *path = vstr_alloc(100);
        VSTR *text = vstr_alloc(200);
        VSTR *body = vstr_alloc(200);

        mta_sts_cache_path(ctx, domain, path);
        mta_sts_policy_text(&entry->policy, body);
        vstr_sprintf(text,
                     MTA_STS_CACHE_MAGIC "\nid: %s\nfetched: %lld\n"
                                         "expires: %lld\n\n%s",
                     entry->id, (long long) entry->fetched,
                     (long long) entry->expires, vstr_str(body));
        if (safe_file_write(vstr_str(path), vstr_str(text), vstr_len(text),
                            0600) < 0)
            msg_warn("MTA-STS: cannot write %s: %m (the policy is cached in "
                     "memory only)",
                     vstr_str(path));
        vstr_free(body);
        vstr_free(text);
        vstr_free(path);
    }
    return entry;
}

/*
 * A domain's lookup.
 */

/* mta_sts_fetch_release - free a finished (or cancelled) fetch */
static void mta_sts_fetch_release(MTA_STS_FETCH *fetch)
{
    MTA_STS_CTX *ctx = fetch->ctx;
    MTA_STS_LOOKUP *lookup;

    if (htable_find(ctx->fetches, fetch->domain) == fetch)
        (void) htable_delete(ctx->fetches, fetch->domain);
    if (fetch->dns)
        dns_lookup_cancel(fetch->dns);
    if (fetch->easy) {
        curl_multi_remove_handle(ctx->multi, fetch->easy);
        curl_easy_cleanup(fetch->easy);
    }
    if (fetch->resolve)
        curl_slist_free_all(fetch->resolve);
    while ((lookup = fetch->waiters) != NULL) {
        fetch->waiters = lookup->next;
        myfree(lookup);
    }
    if (fetch->later)
        event_free(fetch->later);
    vstr_free(fetch->id);
    vstr_free(fetch->body);
    vstr_free(fetch->source);
    myfree(fetch->host);
    myfree(fetch->domain);
    myfree(fetch);
}

/* mta_sts_fetch_deliver - run the callbacks (from the loop), then free */
static void mta_sts_fetch_deliver(evutil_socket_t fd, short what, void *arg)
{
    MTA_STS_FETCH *fetch = arg;
    MTA_STS_RESULT result;
    MTA_STS_LOOKUP *lookup;

    if (htable_find(fetch->ctx->fetches, fetch->domain) == fetch)
        (void) htable_delete(fetch->ctx->fetches, fetch->domain);
    result.policy = fetch->entry ? &fetch->entry->policy : NULL;
    result.id = fetch->entry ? fetch->entry->id : NULL;
    result.source = vstr_str(fetch->source);
    /* A callback may start another lookup of this domain: a new fetch. */
    while ((lookup = fetch->waiters) != NULL) {
        fetch->waiters = lookup->next;
        lookup->callback(&result, lookup->arg);
        myfree(lookup);
    }
    mta_sts_fetch_release(fetch);
}

/* mta_sts_fetch_finish - decide what applies and hand it over soon */
static void mta_sts_fetch_finish(MTA_STS_FETCH *fetch, MTA_STS_ENTRY *entry,
                                 const char *source)
{
    static const struct timeval now = {0, 0};

    fetch->entry = entry;
    vstr_cpy(fetch->source, source);
    if (fetch->later == NULL &&
        (fetch->later = evtimer_new(fetch->ctx->base, mta_sts_fetch_deliver,
                                    fetch)) == NULL)
        msg_fatal("cannot create an MTA-STS timer");
    event_add(fetch->later, &now);
}

/* mta_sts_fetch_fallback - the fresh policy cannot be had: the cached one
   while it lasts, else none; logged */
static void mta_sts_fetch_fallback(MTA_STS_FETCH *fetch, const char *what)
{
    MTA_STS_ENTRY *entry = mta_sts_cache_load(fetch->ctx, fetch->domain);
    VSTR *source = vstr_alloc(100);

    if (entry != NULL && entry->expires > time(NULL)) {
        msg_warn("MTA-STS policy for %s: %s; using the cached policy (id %s, "
                 "mode %s, expires in %llds)",
                 fetch->domain, what, entry->id,
                 mta_sts_mode_name(entry->policy.mode),
                 (long long) (entry->expires - time(NULL)));
        vstr_sprintf(source, "cached (%s)", what);
        mta_sts_fetch_finish(fetch, entry, vstr_str(source));
    } else {
        msg_warn("MTA-STS policy for %s: %s; no policy applies", fetch->domain,
                 what);
        mta_sts_fetch_finish(fetch, NULL, what);
    }
    vstr_free(source);
}

/* mta_sts_curl_write - the body, up to MTA_STS_BODY_MAX */
static size_t mta_sts_curl_write(char *data, size_t size, size_t nmemb,
                                 void *arg)
{
    MTA_STS_FETCH *fetch = arg;
    size_t len = size * nmemb;

    if (vstr_len(fetch->body) + len > MTA_STS_BODY_MAX) {
        fetch->too_big = true;
        return 0; /* libcurl stops with CURLE_WRITE_ERROR */
    }
    vstr_ncat(fetch->body, data, len);
    return len;
}

/* mta_sts_fetch_done - the transfer ended: check and parse */
static void mta_sts_fetch_done(MTA_STS_FETCH *fetch, CURLcode code)
{
    VSTR *what = vstr_alloc(200);
    long status = 0;
    char *ctype = NULL;
    MTA_STS_POLICY policy;
    MTA_STS_ENTRY *entry;

    vstr_sprintf(what, "https://%s/.well-known/mta-sts.txt: ", fetch->host);
    (void) curl_easy_getinfo(fetch->easy, CURLINFO_RESPONSE_CODE, &status);
    (void) curl_easy_getinfo(fetch->easy, CURLINFO_CONTENT_TYPE, &ctype);
    if (fetch->too_big) {
        vstr_sprintf_append(what, "policy larger than %d bytes",
                            MTA_STS_BODY_MAX);
    } else if (code != CURLE_OK) {
        vstr_sprintf_append(what, "%s",
                            *fetch->curl_error ? fetch->curl_error
                                               : curl_easy_strerror(code));
    } else if (status != 200) {
        /* 3xx too: redirects MUST NOT be followed (RFC 8461 3.3). */
        vstr_sprintf_append(what, "HTTP status %ld", status);
    } else if (ctype == NULL || strncasecmp(ctype, "text/plain", 10) != 0 ||
               (ctype[10] != 0 && ctype[10] != ';' && ctype[10] != ' ')) {
        vstr_sprintf_append(what, "Content-Type is not text/plain: ");
        if (ctype)
            mta_sts_printable(what, ctype, strlen(ctype));
        else
            vstr_cat(what, "none");
    } else if (mta_sts_policy_parse(vstr_str(fetch->body),
                                    vstr_len(fetch->body), &policy,
                                    fetch->source) < 0) {
        vstr_sprintf_append(what, "malformed policy: %s",
                            vstr_str(fetch->source));
    } else {
        VSTR *mx = vstr_alloc(100);

        entry = mta_sts_cache_store(fetch->ctx, fetch->domain,
                                    vstr_str(fetch->id), &policy);
        for (size_t i = 0; i < entry->policy.mx->argc; i++)
            vstr_sprintf_append(mx, "%s%s", i ? " " : "",
                                entry->policy.mx->argv[i]);
        msg_info("MTA-STS policy for %s fetched: id %s, mode %s, mx %s, "
                 "max_age %ld",
                 fetch->domain, entry->id,
                 mta_sts_mode_name(entry->policy.mode), vstr_str(mx),
                 entry->policy.max_age);
        vstr_free(mx);
        vstr_free(what);
        mta_sts_fetch_finish(fetch, entry, "fetched");
        return;
    }
    mta_sts_fetch_fallback(fetch, vstr_str(what));
    vstr_free(what);
}

/* mta_sts_curl_done - a transfer ended: its fetch goes on */
static void mta_sts_curl_done(CURL *easy, CURLcode result, void *arg)
{
    MTA_STS_CTX *ctx = arg;
    MTA_STS_FETCH *fetch = NULL;

    (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &fetch);
    if (fetch == NULL)
        msg_panic("%s: a transfer without its fetch", __func__);
    mta_sts_fetch_done(fetch, result);
    curl_multi_remove_handle(ctx->multi, fetch->easy);
    curl_easy_cleanup(fetch->easy);
    fetch->easy = NULL;
}

/* mta_sts_fetch_addrs - the addresses of mta-sts.DOMAIN are known: GET */
static void mta_sts_fetch_addrs(const DNS_REPLY *reply, void *arg)
{
    MTA_STS_FETCH *fetch = arg;
    MTA_STS_CTX *ctx = fetch->ctx;
    VSTR *what, *entry, *url;
    CURL *easy;

    fetch->dns = NULL;
    what = vstr_alloc(100);
    if (reply->status != DNS_OK) {
        vstr_sprintf(what, "cannot find %s: %s", fetch->host,
                     vstr_str(reply->reason));
        mta_sts_fetch_fallback(fetch, vstr_str(what));
        vstr_free(what);
        return;
    }
    /* libcurl asks nobody: it gets the addresses we found. */
    entry = vstr_alloc(100);
    vstr_sprintf(entry, "%s:%d:", fetch->host, ctx->https_port);
    for (size_t i = 0; i < reply->count; i++)
        vstr_sprintf_append(
            entry, reply->addrs[i].family == AF_INET6 ? "%s[%s]" : "%s%s",
            i ? "," : "", reply->addrs[i].ip);
    fetch->resolve = curl_slist_append(NULL, vstr_str(entry));
    vstr_free(entry);
    url = vstr_alloc(100);
    if (ctx->https_port == 443)
        vstr_sprintf(url, "https://%s/.well-known/mta-sts.txt", fetch->host);
    else
        vstr_sprintf(url, "https://%s:%d/.well-known/mta-sts.txt", fetch->host,
                     ctx->https_port);
    if (fetch->resolve == NULL || (easy = curl_easy_init()) == NULL)
        msg_fatal("libcurl: out of memory");
    fetch->easy = easy;
    curl_easy_setopt(easy, CURLOPT_URL, vstr_str(url));
    curl_easy_setopt(easy, CURLOPT_RESOLVE, fetch->resolve);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *) fetch);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, fetch->curl_error);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, mta_sts_curl_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, fetch);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_PROXY, ""); /* not http_proxy & co. */
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT, (long) ctx->fetch_timeout);
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                     (curl_off_t) MTA_STS_BODY_MAX);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (ctx->cafile != NULL)
        curl_easy_setopt(easy, CURLOPT_CAINFO, ctx->cafile);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, MTA_STS_USER_AGENT);
    vstr_free(url);
    if (curl_multi_add_handle(ctx->multi, easy) != CURLM_OK) {
        vstr_cpy(what, "libcurl refused the transfer");
        curl_easy_cleanup(easy);
        fetch->easy = NULL;
        mta_sts_fetch_fallback(fetch, vstr_str(what));
    }
    vstr_free(what);
}

/* mta_sts_fetch_txt - the TXT records of _mta-sts.DOMAIN are in */
static void mta_sts_fetch_txt(const DNS_REPLY *reply, void *arg)
{
    MTA_STS_FETCH *fetch = arg;
    MTA_STS_ENTRY *entry;
    VSTR *why;
    int found;

    fetch->dns = NULL;
    if (reply->status == DNS_TEMP) {
        mta_sts_fetch_fallback(fetch, vstr_str(reply->reason));
        return;
    }
    why = vstr_alloc(100);
    found = reply->status == DNS_OK
                ? mta_sts_txt_select(reply->texts, fetch->id, why)
                : 0;
    entry = mta_sts_cache_load(fetch->ctx, fetch->domain);
    if (found <= 0) {
        /* No (usable) record: a cached policy still holds until it
           expires (RFC 8461 5.1); without one there is nothing to do,
           quietly unless the record was broken. */
        if (found < 0) {
            vstr_sprintf_append(why, " (_mta-sts.%s)", fetch->domain);
            mta_sts_fetch_fallback(fetch, vstr_str(why));
        } else if (entry != NULL && entry->expires > time(NULL)) {
            mta_sts_fetch_finish(fetch, entry, "cached (no TXT record)");
        } else {
            mta_sts_fetch_finish(fetch, NULL, "no TXT record");
        }
    } else if (entry != NULL && entry->expires > time(NULL) &&
               strcmp(entry->id, vstr_str(fetch->id)) == 0) {
        mta_sts_fetch_finish(fetch, entry, "cached");
    } else {
        fetch->dns =
            dns_lookup(fetch->ctx->dns, fetch->host, false,
                       fetch->ctx->dns_timeout, mta_sts_fetch_addrs, fetch);
    }
    vstr_free(why);
}

/* mta_sts_lookup - join the domain's lookup, or start one */
MTA_STS_LOOKUP *mta_sts_lookup(MTA_STS_CTX *ctx, const char *domain,
                               MTA_STS_CALLBACK callback, void *arg)
{
    MTA_STS_LOOKUP *lookup = mycalloc(1, sizeof(*lookup));
    MTA_STS_FETCH *fetch;
    VSTR *key = vstr_alloc(64);

    vstr_cpy(key, domain);
    vstr_lower(key);
    if (vstr_len(key) > 0 && vstr_str(key)[vstr_len(key) - 1] == '.')
        vstr_truncate(key, vstr_len(key) - 1);
    lookup->callback = callback;
    lookup->arg = arg;
    /* A fetch already decided still answers later, and freshly. */
    if ((fetch = htable_find(ctx->fetches, vstr_str(key))) == NULL) {
        VSTR *name = vstr_alloc(80);

        fetch = mycalloc(1, sizeof(*fetch));
        fetch->ctx = ctx;
        fetch->domain = mystrdup(vstr_str(key));
        fetch->id = vstr_alloc(40);
        fetch->body = vstr_alloc(1024);
        fetch->source = vstr_alloc(100);
        htable_enter(ctx->fetches, fetch->domain, fetch);
        vstr_sprintf(name, "mta-sts.%s", fetch->domain);
        fetch->host = vstr_export(name);
        if (!mta_sts_domain_ok(fetch->domain)) {
            mta_sts_fetch_finish(fetch, NULL, "not a domain name");
        } else {
            name = vstr_alloc(80);
            vstr_sprintf(name, "_mta-sts.%s", fetch->domain);
            fetch->dns =
                dns_lookup_txt(ctx->dns, vstr_str(name), ctx->dns_timeout,
                               mta_sts_fetch_txt, fetch);
            vstr_free(name);
        }
    }
    lookup->fetch = fetch;
    lookup->next = fetch->waiters;
    fetch->waiters = lookup;
    vstr_free(key);
    return lookup;
}

/* mta_sts_lookup_cancel - leave the domain's lookup */
void mta_sts_lookup_cancel(MTA_STS_LOOKUP *lookup)
{
    MTA_STS_FETCH *fetch = lookup->fetch;

    for (MTA_STS_LOOKUP **lp = &fetch->waiters; *lp; lp = &(*lp)->next) {
        if (*lp == lookup) {
            *lp = lookup->next;
            break;
        }
    }
    myfree(lookup);
}

/* mta_sts_ctx_create - libcurl on the event loop */
MTA_STS_CTX *mta_sts_ctx_create(struct event_base *base, DNS_CTX *dns,
                                const MTA_STS_CONF *conf, VSTR *why)
{
    MTA_STS_CTX *ctx;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        vstr_cpy(why, "libcurl: curl_global_init failed");
        return NULL;
    }
    ctx = mycalloc(1, sizeof(*ctx));
    ctx->base = base;
    ctx->dns = dns;
    ctx->cafile = conf->cafile && *conf->cafile ? mystrdup(conf->cafile) : NULL;
    ctx->dns_timeout = conf->dns_timeout;
    ctx->fetch_timeout = conf->fetch_timeout > 0 ? conf->fetch_timeout : 1;
    ctx->https_port = conf->https_port > 0 ? conf->https_port : 443;
    ctx->cache = htable_alloc(16);
    ctx->fetches = htable_alloc(16);
    if ((ctx->curl = curl_event_create(base, mta_sts_curl_done, ctx)) == NULL) {
        vstr_cpy(why, "libcurl: cannot set up the multi interface");
        mta_sts_ctx_free(ctx);
        return NULL;
    }
    ctx->multi = curl_event_multi(ctx->curl);
    ctx->cache_read_only = conf->cache_read_only;
    if (conf->cache_dir != NULL && *conf->cache_dir && conf->cache_read_only) {
        ctx->cache_dir = mystrdup(conf->cache_dir);
    } else if (conf->cache_dir != NULL && *conf->cache_dir) {
        if (mkdir(conf->cache_dir, 0700) < 0 && errno != EEXIST)
            msg_warn("MTA-STS: cannot make %s: %m (make it, owned by "
                     "mail_owner, mode 0700); policies are cached in memory "
                     "only",
                     conf->cache_dir);
        else if (access(conf->cache_dir, W_OK | X_OK) < 0)
            msg_warn("MTA-STS: cannot write %s: %m (it must belong to "
                     "mail_owner); policies are cached in memory only",
                     conf->cache_dir);
        else
            ctx->cache_dir = mystrdup(conf->cache_dir);
    }
    return ctx;
}

/* mta_sts_ctx_free - everything, no callbacks */
MTA_STS_CTX *mta_sts_ctx_free(MTA_STS_CTX *ctx)
{
    HTABLE_ITER iter;
    const char *key;
    void *value;

    htable_iter_init(&iter, ctx->fetches);
    while (htable_iter_next(&iter, &key, &value))
        mta_sts_fetch_release(value); /* deletes the entry just returned */
    htable_free(ctx->fetches, NULL);
    htable_free(ctx->cache, mta_sts_entry_free);
    curl_event_free(ctx->curl);
    myfree(ctx->cafile);
    myfree(ctx->cache_dir);
    myfree(ctx);
    return NULL;
}
