/*
 * suppress - the events daemon's suppression feed: hard bounces,
 * complaints and unsubscribes from the journal into the suppression list
 * (global/suppress.h)
 *
 * An exporter like the others (exporter.h): its own durable position,
 * one SQLite transaction per batch, committed before the framework moves
 * the position, so a crash or kill -9 repeats at most the batch in
 * flight, and an add repeated is the same entry. Configured by
 * suppression_feedback_enable (on by default; events_export.c names it
 * "suppress", its target the database). It holds journal segments back
 * while it is behind but does not make the daemon remove any
 * (events_export_removes): an instance with only it and the index keeps
 * its journal whole. The database is made at the first entry, so an
 * instance that never suppresses anything has no file (cleanup then
 * skips its lookups).
 *
 * What becomes an entry, for the event's recipient and tenant (none: the
 * global list):
 *   bounced      with "hard": true and a "category" in
 *                suppression_bounce_categories: source hard_bounce,
 *                reason "hard bounce (CATEGORY): REPLY", expiring
 *                suppression_bounce_expiry after the event (0: never)
 *   complained   source complaint, reason "complaint" and the reply or
 *                feedback type when there is one; never expires
 *   unsubscribed source unsubscribe, reason "unsubscribed" and the list
 *                when there is one; never expires
 * Anything else, an event without a usable recipient, or one with
 * "verified": false (feedback/ could not tie the report to the message
 * sent: its claim is believed by nothing), is passed over.
 * A batch SQLite refuses is rolled back and tried again with the
 * framework's back-off; never dead-lettered.
 */
#include "sys_defs.h"

#include <limits.h>
#include <time.h>

#include <event2/event.h>

#include "argv.h"
#include "events.h"
#include "events_stats.h"
#include "exporter.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "suppress.h"
#include "vstr.h"

#define SUPPRESS_FEED_REASON 300 /* bytes of a reason made from a reply */

typedef struct SUPPRESS_FEED {
    EXPORTER *exp;
    SUPPRESS *sup; /* NULL until the first entry */
    ARGV *categories; /* suppression_bounce_categories */
    long long bounce_expiry; /* seconds; 0: never */
    struct event *work_ev;
    const VSTR *lines; /* the batch in hand */
} SUPPRESS_FEED;

/* suppress_feed_str - the event's name as a non-empty string, or NULL */
static const char *suppress_feed_str(const EVENTS_VIEW *obj, const char *name)
{
    const char *value = events_view_str(obj, name);

    return value && *value ? value : NULL;
}

/* suppress_feed_reason - prefix and text (may be NULL) as a reason: control
   characters made spaces, cut to a bound (at a UTF-8 character start) */
static void suppress_feed_reason(VSTR *reason, const char *prefix,
                                 const char *text)
{
    size_t len;
    char *cp;

    vstr_cpy(reason, prefix);
    if (text) {
        vstr_cat(reason, ": ");
        vstr_cat(reason, text);
    }
    for (cp = vstr_str(reason); *cp; cp++)
        if ((unsigned char) *cp < 0x20 || *cp == 0x7f)
            *cp = ' ';
    len = vstr_len(reason);
    if (len > SUPPRESS_FEED_REASON) {
        len = SUPPRESS_FEED_REASON;
        while (len > 0 &&
               ((unsigned char) vstr_str(reason)[len] & 0xc0) == 0x80)
            len--;
        vstr_truncate(reason, len);
    }
}

/* suppress_feed_category - is category one that suppresses? */
static bool suppress_feed_category(const SUPPRESS_FEED *feed,
                                   const char *category)
{
    for (size_t i = 0; i < feed->categories->argc; i++)
        if (strcasecmp(feed->categories->argv[i], category) == 0)
            return true;
    return false;
}

/* suppress_feed_row - one event line: 0 (added or passed over), -1 with
   why when the database failed; the batch's transaction begins (began)
   at its first add */
static int suppress_feed_row(SUPPRESS_FEED *feed, int i, bool *began, VSTR *why)
{
    const EVENTS_VIEW *obj = exporter_view(feed->exp, i);
    const char *kind = suppress_feed_str(obj, "kind");
    const char *rcpt = suppress_feed_str(obj, "recipient");
    const char *tenant = suppress_feed_str(obj, "tenant");
    long long when = events_stats_time(suppress_feed_str(obj, "ts"));
    VSTR *reason = vstr_alloc(100);
    SUPPRESS_ENTRY entry = {0};
    int ret = 0;

    if (when < 0)
        when = (long long) time(NULL);
    entry.created = when;
    if (kind == NULL || rcpt == NULL ||
        events_view_type(obj, "verified") == EVENTS_VIEW_FALSE) {
        /* not about one recipient, or not tied to the original message by
           the journal (feedback/: a report's claim believed by nothing) */
    } else if (strcmp(kind, EVENTS_BOUNCED) == 0) {
        const char *category = suppress_feed_str(obj, "category");

        if (events_view_type(obj, "hard") == EVENTS_VIEW_TRUE && category &&
            suppress_feed_category(feed, category)) {
            VSTR *prefix = vstr_alloc(60);

            vstr_sprintf(prefix, "hard bounce (%.60s)", category);
            suppress_feed_reason(reason, vstr_str(prefix),
                                 suppress_feed_str(obj, "reply"));
            vstr_free(prefix);
            entry.source = SUPPRESS_SRC_HARD_BOUNCE;
            if (feed->bounce_expiry > 0)
                entry.expires = when + feed->bounce_expiry;
        }
    } else if (strcmp(kind, "complained") == 0) {
        const char *text = suppress_feed_str(obj, "feedback_type");

        suppress_feed_reason(reason, "complaint",
                             text ? text : suppress_feed_str(obj, "reply"));
        entry.source = SUPPRESS_SRC_COMPLAINT;
    } else if (strcmp(kind, "unsubscribed") == 0) {
        const char *list = suppress_feed_str(obj, "list");
        VSTR *prefix = vstr_alloc(60);

        if (list)
            vstr_sprintf(prefix, "unsubscribed from list %.100s", list);
        else
            vstr_cpy(prefix, "unsubscribed");
        suppress_feed_reason(reason, vstr_str(prefix), NULL);
        vstr_free(prefix);
        entry.source = SUPPRESS_SRC_UNSUBSCRIBE;
    }
    if (entry.source != NULL) {
        VSTR *key = vstr_alloc(64);

        entry.tenant = tenant && suppress_tenant_ok(tenant) ? tenant : "";
        entry.address = rcpt;
        entry.reason = vstr_str(reason);
        if (suppress_key(key, rcpt, why) < 0) {
            msg_warn("events: suppress: %s: passed over", vstr_str(why));
        } else if (feed->sup == NULL &&
                   (feed->sup = suppress_open(exporter_target(feed->exp),
                                              SUPPRESS_CREATE, why)) == NULL) {
            ret = -1;
        } else if (!*began && suppress_begin(feed->sup, why) < 0) {
            ret = -1;
        } else {
            *began = true;
            ret = suppress_add(feed->sup, &entry, (long long) time(NULL), why);
            if (ret == 0)
                msg_info("events: suppress: %s%s%s: %s (%s)", rcpt,
                         *entry.tenant ? " tenant " : "", entry.tenant,
                         entry.source, entry.reason);
        }
        vstr_free(key);
    }
    vstr_free(reason);
    return ret;
}

/* suppress_feed_work - store the batch in hand, from the loop */
static void suppress_feed_work(evutil_socket_t fd, short what, void *arg)
{
    SUPPRESS_FEED *feed = arg;
    const char *cp = vstr_str((VSTR *) feed->lines);
    const char *end = cp + vstr_len((VSTR *) feed->lines);
    VSTR *why = vstr_alloc(100);
    bool began = false;
    int row = 0; /* of the batch: the line at cp */
    int rc = 0;

    while (rc == 0 && cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            msg_panic("%s: a batch line without its LF", __func__);
        rc = suppress_feed_row(feed, row++, &began, why);
        cp = nl + 1;
    }
    if (rc == 0 && began)
        rc = suppress_commit(feed->sup, why);
    if (rc < 0 && began)
        suppress_rollback(feed->sup);
    /* Only now, the commit done, may the framework move the position. */
    exporter_done(feed->exp, rc == 0, vstr_str(why));
    vstr_free(why);
}

/* suppress_feed_send - store count events (from the loop, not from here) */
static void suppress_feed_send(void *state, const VSTR *lines, int count)
{
    SUPPRESS_FEED *feed = state;

    feed->lines = lines;
    event_active(feed->work_ev, EV_TIMEOUT, 0);
}

/* suppress_feed_max_age - never dead-lettered */
static long long suppress_feed_max_age(void *state)
{
    return LLONG_MAX / 4;
}

/* suppress_feed_open - read the parameters; the database waits for the
   first entry */
static void *suppress_feed_open(EXPORTER *exp, struct event_base *base,
                                const MAIL_CONF *conf)
{
    SUPPRESS_FEED *feed = mycalloc(1, sizeof(*feed));
    VSTR *why = vstr_alloc(100);

    feed->exp = exp;
    feed->categories = mail_conf_list(conf, "suppression_bounce_categories");
    feed->bounce_expiry = mail_conf_time(conf, "suppression_bounce_expiry");
    /* An existing database is opened now, so a broken one is told at
       once; a missing one is made at the first entry. */
    feed->sup = suppress_open(exporter_target(exp), SUPPRESS_LAZY, why);
    if (feed->sup == NULL)
        msg_warn("events: suppress: %s (tried again with each batch)",
                 vstr_str(why));
    else
        feed->sup = suppress_close(feed->sup);
    if ((feed->work_ev = event_new(base, -1, 0, suppress_feed_work, feed)) ==
        NULL)
        msg_fatal("cannot create the suppress exporter's event");
    vstr_free(why);
    return feed;
}

/* suppress_feed_close - free (a batch in hand is abandoned) */
static void suppress_feed_close(void *state)
{
    SUPPRESS_FEED *feed = state;

    feed->sup = suppress_close(feed->sup);
    argv_free(feed->categories);
    event_free(feed->work_ev);
    myfree(feed);
}

const EXPORTER_BACKEND suppress_backend = {
    .kind = "suppress",
    .open = suppress_feed_open,
    .send = suppress_feed_send,
    .close = suppress_feed_close,
    .max_age = suppress_feed_max_age,
};
