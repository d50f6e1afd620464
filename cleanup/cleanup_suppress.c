/*
 * cleanup_suppress - drop the recipients the suppression list holds
 *
 * Each recipient, after canonical and virtual alias mapping (the address
 * that would be delivered to), is looked up in the suppression list
 * (global/suppress.h) for the message's tenant: the API key's for api
 * mail; SMTP, sendmail and bounce mail have none and see the global list
 * only. The database is opened once per process, lazily (a missing file
 * is an empty list, looked for again at the next recipient). An empty
 * list costs nothing per recipient: the reader answers from the rows
 * mark that the writers keep (global/suppress.h), without SQLite; a list
 * with rows costs one indexed lookup, one read transaction, a recipient.
 *
 * How a suppressed recipient is recorded: it is never written to the
 * queue file, so nothing can deliver it, before or after a crash. Its
 * "suppressed" event (recipient, tenant, reason; id QID/suppressed/N) is
 * the record, and follows the journal's rule: it is made durable (one
 * fdatasync for all of the message's) before the message is committed. A
 * crash in between leaves events for a message whose client was not told
 * 250 and sends it again (as for a held message's received event); a
 * crash before them leaves nothing. A message whose recipients are all
 * suppressed is answered as accepted (the events written) and no queue
 * file is committed: nothing is left to deliver or to get stuck.
 *
 * The list is opened read-only (SUPPRESS_READONLY): cleanup makes no
 * schema and takes no write lock, so a writer's transaction (the events
 * daemon's batch, `sluice suppress`, the api) never holds up a lookup.
 *
 * A missing database (or one whose writer has not yet made its table) is
 * an empty list: the recipient is kept. A database that exists but
 * cannot be read (corrupt, unreadable, a lookup error) fails the
 * message with 451 4.3.0, logged with the reason: mailing an address
 * the list holds would hurt the sender's reputation, and a deferral
 * loses nothing (the client sends again). The message, not the one
 * recipient, is deferred: cleanup answers for the whole message.
 */
#include "sys_defs.h"

#include <time.h>

#include <jansson.h>

#include "argv.h"
#include "cleanup.h"
#include "cleanup_proto.h"
#include "events.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "suppress.h"
#include "vstr.h"

#define CLEANUP_SUPPRESS_ERROR "4.3.0 suppression list lookup failed"

/* cleanup_suppress_conf - open the list (lazily) when suppression_enable */
void cleanup_suppress_conf(CLEANUP_CONF *cconf, const MAIL_CONF *conf)
{
    VSTR *why;

    if (!mail_conf_bool(conf, "suppression_enable"))
        return;
    why = vstr_alloc(100);
    cconf->suppress = suppress_open(mail_conf_str(conf, "suppression_database"),
                                    SUPPRESS_LAZY | SUPPRESS_READONLY, why);
    /* A read-only handle is always made: errors come with the lookups. */
    vstr_free(why);
}

/* cleanup_suppress_conf_free - close the list */
void cleanup_suppress_conf_free(CLEANUP_CONF *cconf)
{
    cconf->suppress = suppress_close(cconf->suppress);
}

/* cleanup_suppress_rcpt - is rcpt suppressed? then recorded, not queued */
bool cleanup_suppress_rcpt(CLEANUP_MSG *msg, const char *rcpt)
{
    VSTR *reason;
    VSTR *why;
    int rc;

    if (msg->status)
        return true; /* failed (the list unreadable): nothing is written */
    if (msg->conf->suppress == NULL)
        return false;
    reason = vstr_alloc(64);
    why = vstr_alloc(64);
    rc = suppress_lookup(msg->conf->suppress, msg->tenant, rcpt,
                         (long long) time(NULL), reason, NULL, why);
    if (rc < 0) {
        msg_warn("%s: to=<%s>: %s; message deferred", msg->qid, rcpt,
                 vstr_str(why));
        cleanup_msg_fail(msg, 451, CLEANUP_SUPPRESS_ERROR);
    }
    if (rc > 0) {
        if (msg->suppressed == NULL)
            msg->suppressed = argv_alloc(4);
        argv_add(msg->suppressed, rcpt);
        argv_add(msg->suppressed, vstr_str(reason));
        msg_info("%s: to=<%s>, status=suppressed (%s)", msg->qid, rcpt,
                 vstr_str(reason));
    }
    vstr_free(reason);
    vstr_free(why);
    return rc != 0;
}

/* cleanup_suppress_events - the suppressed events of msg, durable */
int cleanup_suppress_events(const CLEANUP_MSG *msg)
{
    VSTR *why;
    char seq[32];
    int ret;

    if (msg->suppressed == NULL)
        return 0;
    for (size_t i = 0; i + 1 < msg->suppressed->argc; i += 2) {
        EVENT event;

        (void) snprintf(seq, sizeof(seq), "%zu", i / 2 + 1);
        events_event_init(&event, EVENTS_SUPPRESSED, msg->qid, seq);
        event.recipient = msg->suppressed->argv[i];
        event.reason = msg->suppressed->argv[i + 1];
        event.sender = msg->sender;
        event.tenant = msg->tenant;
        event.tags = msg->tags;
        event.metadata = msg->metadata;
        event.traceparent = msg->traceparent;
        events_add(msg->conf->events, &event);
    }
    why = vstr_alloc(100);
    if ((ret = events_flush(msg->conf->events, why)) < 0)
        msg_warn("%s: suppressed events: %s", msg->qid, vstr_str(why));
    vstr_free(why);
    return ret;
}

/* cleanup_suppress_status - STATUS suppressed= of msg, or NULL */
char *cleanup_suppress_status(const CLEANUP_MSG *msg)
{
    json_t *obj;
    json_t *list;
    size_t used = 40; /* the object around the list */
    char *text;

    if (msg->suppressed == NULL)
        return NULL;
    list = json_array();
    for (size_t i = 0; i + 1 < msg->suppressed->argc; i += 2) {
        const char *addr = msg->suppressed->argv[i];
        const char *reason = msg->suppressed->argv[i + 1];

        /* JSON may escape a byte as six: a bound, not an exact size. */
        used += 6 * (strlen(addr) + strlen(reason)) + 32;
        if (used > CLEANUP_SUPPRESSED_MAX)
            break;
        (void) json_array_append_new(
            list, json_pack("{s:s, s:s}", "address", addr, "reason", reason));
    }
    obj = json_pack("{s:I, s:o}", "count",
                    (json_int_t) (msg->suppressed->argc / 2), "list", list);
    text = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                     JSON_ENSURE_ASCII)
               : NULL;
    json_decref(obj);
    if (text != NULL) {
        char *copy = mystrdup(text);

        free(text);
        return copy;
    }
    return NULL;
}
