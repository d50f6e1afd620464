/*
 * cleanup_track - open and click tracking, List-Unsubscribe (tracker #22)
 *
 * Switched on by main.cf (the defaults for every message), per API tenant
 * (track_tenant_maps) and per message (an X-Sluice-Track header), each
 * overriding the one before:
 *
 *   tracking_base_url   the public base URL of the api service; empty:
 *                       no open or click tracking
 *   track_opens, track_clicks   the defaults (no)
 *   track_tenant_maps   tenant -> words: "opens", "clicks", "none",
 *                       "list=NAME"
 *   X-Sluice-Track: opens, clicks | none     (removed)
 *   X-Sluice-List: NAME                      (removed)
 *
 * Only mail from the submitters X-Sluice-Pool and traceparent trust
 * (mynetworks, SASL, local submission, the api) is tracked or given a
 * List-Unsubscribe: mail from anyone else (inbound, or relayed for
 * relay_domains) passes unchanged, whatever the defaults say. The two
 * headers are removed from every message. The api's "headers" field
 * carries them for a message sent through the API.
 *
 * A message is bulk when it names a list: X-Sluice-List, the tenant's
 * list=, or its own List-Id: header. A bulk message with one recipient
 * and no List-Unsubscribe of its own gets
 *
 *   List-Unsubscribe: <UNSUB_BASE/u/TOKEN>,
 *     <mailto:unsubscribe+QID-MAC@DOMAIN?subject=unsubscribe%20TOKEN>
 *   List-Unsubscribe-Post: List-Unsubscribe=One-Click
 *
 * (unsubscribe_base_url, default tracking_base_url; the mailto only with
 * unsubscribe_mailto_domain, its local part the short form of
 * global/track_token.h, within RFC 5321's 64 octets, its subject the
 * https URL's token (left out when the mailto would be longer than
 * CLEANUP_TRACK_MAILTO_MAX); List-Unsubscribe-Post
 * only with the https URL, RFC 8058). They are added at the end of the header block, before
 * DKIM signing (this filter runs before cleanup_dkim's, which signs the
 * content as it stands in the queue file, and dkim_signed_headers names
 * both headers by default).
 *
 * Tokens are per recipient (global/track_token.h): an API batch
 * ("recipients") queues one message per recipient, so its mail gets
 * per-recipient links. A message
 * with several recipients gets per-message open and click tokens (an
 * empty recipient: the events say which message, not who) and no
 * List-Unsubscribe (a link could not say whom to unsubscribe).
 *
 * Clicks and opens: the body is kept in memory (up to track_size_limit;
 * past it, the body is written as it is and not tracked), and at the end
 * of the content its text/html parts are rewritten (global/track_mime.h):
 * http(s) links become TRACKING_BASE/c/TOKEN, except links to our own
 * base URLs; the pixel TRACKING_BASE/o/TOKEN goes before </body>.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <strings.h>

#include "cleanup.h"
#include "mail_conf.h"
#include "maps.h"
#include "msg.h"
#include "mymalloc.h"
#include "sign_token.h"
#include "track_mime.h"
#include "track_token.h"
#include "vstr.h"

#define CLEANUP_TRACK_HEADER "X-Sluice-Track"
#define CLEANUP_TRACK_LIST_HEADER "X-Sluice-List"
#define CLEANUP_TRACK_URL_MAX 900 /* a longer tracking URL: link kept */
#define CLEANUP_TRACK_LIST_MAX 200 /* bytes of a list name */
#define CLEANUP_TRACK_MAILTO_MAX 900 /* a mailto with a subject, one word */

struct CLEANUP_TRACK {
    char *base; /* tracking_base_url without trailing '/', "" none */
    char *unsub_base; /* unsubscribe_base_url, the same */
    char *mailto_domain; /* unsubscribe_mailto_domain, "" none */
    bool opens; /* track_opens */
    bool clicks; /* track_clicks */
    MAPS *tenant_maps; /* track_tenant_maps, NULL none */
    long long size_limit; /* track_size_limit, 0 none */
    char *key_path; /* feedback_key_file */
    VSTR *key; /* loaded on first use */
};

typedef struct CLEANUP_TRACK_STATE {
    CLEANUP_TRACK *track;
    CLEANUP_MSG *msg;
    char *header_track; /* X-Sluice-Track's value */
    char *header_list; /* X-Sluice-List's value */
    char *list_id; /* List-Id's, inside <> */
    char *content_type; /* the message's */
    char *cte;
    bool has_unsubscribe; /* List-Unsubscribe: of its own */
    bool opens;
    bool clicks;
    const char *recipient; /* "" with several */
    VSTR *hold; /* the body while it is kept (msg->body_hold) */
    size_t links;
} CLEANUP_TRACK_STATE;

/* cleanup_track_base - a base URL without its trailing slashes */
static char *cleanup_track_base(const char *value)
{
    VSTR *base = vstr_cpy(vstr_alloc(64), value);

    vstr_trim(base);
    while (vstr_len(base) > 0 && vstr_str(base)[vstr_len(base) - 1] == '/')
        vstr_truncate(base, vstr_len(base) - 1);
    return vstr_export(base);
}

/* cleanup_track_conf - read the tracking parameters (fatal when bad) */
void cleanup_track_conf(CLEANUP_CONF *cconf, const MAIL_CONF *conf)
{
    CLEANUP_TRACK *track;
    const char *maps = mail_conf_str(conf, "track_tenant_maps");
    VSTR *why = vstr_alloc(100);

    cconf->track = NULL;
    track = mycalloc(1, sizeof(*track));
    track->base = cleanup_track_base(mail_conf_str(conf, "tracking_base_url"));
    track->unsub_base =
        cleanup_track_base(mail_conf_str(conf, "unsubscribe_base_url"));
    track->mailto_domain =
        mystrdup(mail_conf_str(conf, "unsubscribe_mailto_domain"));
    track->opens = mail_conf_bool(conf, "track_opens");
    track->clicks = mail_conf_bool(conf, "track_clicks");
    track->size_limit = mail_conf_size(conf, "track_size_limit");
    if (*track->base && !track_url_ok(track->base))
        msg_fatal("tracking_base_url = %s: not an http or https URL",
                  track->base);
    if (*track->unsub_base && !track_url_ok(track->unsub_base))
        msg_fatal("unsubscribe_base_url = %s: not an http or https URL",
                  track->unsub_base);
    if (*maps != 0 &&
        (track->tenant_maps = maps_create("track_tenant_maps", maps,
                                          MAP_FLAG_NONE, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    vstr_reset(why);
    sign_token_key_path(conf, why);
    track->key_path = vstr_export(why);
    cconf->track = track;
    if (*track->base == 0 && *track->unsub_base == 0 &&
        *track->mailto_domain == 0)
        cleanup_track_conf_free(cconf); /* nothing to do: off */
}

/* cleanup_track_conf_free - release what cleanup_track_conf read */
void cleanup_track_conf_free(CLEANUP_CONF *cconf)
{
    CLEANUP_TRACK *track = cconf->track;

    if (track == NULL)
        return;
    myfree(track->base);
    myfree(track->unsub_base);
    myfree(track->mailto_domain);
    if (track->tenant_maps)
        maps_free(track->tenant_maps);
    myfree(track->key_path);
    vstr_free(track->key);
    myfree(track);
    cconf->track = NULL;
}

/* cleanup_track_key - the signing key, read (or made) on first use; NULL
   when it cannot be (logged) */
static const VSTR *cleanup_track_key(CLEANUP_TRACK *track, const char *qid)
{
    VSTR *why;

    if (track->key != NULL)
        return track->key;
    track->key = vstr_alloc(SIGN_TOKEN_KEY_LEN);
    why = vstr_alloc(100);
    if (sign_token_key_load(track->key_path, track->key, why) < 0) {
        msg_warn("%s: tracking: %s; message deferred", qid, vstr_str(why));
        track->key = vstr_free(track->key);
    }
    vstr_free(why);
    return track->key;
}

/* cleanup_track_value - a header's value, unfolded and trimmed */
static char *cleanup_track_value(const VSTR *header)
{
    const char *cp = strchr(vstr_str(header), ':') + 1;
    VSTR *value = vstr_alloc(64);

    for (; *cp; cp++) {
        if (*cp == '\r' || *cp == '\n')
            continue;
        if ((*cp == ' ' || *cp == '\t') && vstr_len(value) == 0)
            continue;
        vstr_addch(value, *cp == '\t' ? ' ' : *cp);
    }
    vstr_trim(value);
    return vstr_export(value);
}

/* cleanup_track_is - does the header have this name (any case) */
static bool cleanup_track_is(const VSTR *header, const char *name)
{
    size_t len = strlen(name);

    return vstr_len(header) > len && vstr_str(header)[len] == ':' &&
           strncasecmp(vstr_str(header), name, len) == 0;
}

/* cleanup_track_words - apply "opens clicks none list=NAME" (commas or
   spaces between) to the state; list= into *list when list is not NULL */
static void cleanup_track_words(CLEANUP_TRACK_STATE *state, const char *value,
                                char **list)
{
    VSTR *word = vstr_alloc(32);
    const char *cp = value;

    for (;;) {
        if (*cp == 0 || *cp == ',' || *cp == ' ' || *cp == '\t') {
            const char *w = vstr_str(word);

            if (strcasecmp(w, "opens") == 0 || strcasecmp(w, "open") == 0) {
                state->opens = true;
            } else if (strcasecmp(w, "clicks") == 0 ||
                       strcasecmp(w, "click") == 0) {
                state->clicks = true;
            } else if (strcasecmp(w, "none") == 0 || strcasecmp(w, "no") == 0) {
                state->opens = state->clicks = false;
            } else if (strncasecmp(w, "list=", 5) == 0 && list != NULL &&
                       w[5] != 0) {
                myfree(*list);
                *list = mystrdup(w + 5);
            } else if (*w != 0) {
                msg_info("%s: tracking: \"%s\" ignored (not opens, clicks, "
                         "none or list=NAME)",
                         state->msg->qid, w);
            }
            vstr_reset(word);
            if (*cp == 0)
                break;
        } else {
            vstr_addch(word, *cp);
        }
        cp++;
    }
    vstr_free(word);
}

/* cleanup_track_begin_msg - per-message state when tracking is on */
static void *cleanup_track_begin_msg(CLEANUP_MSG *msg)
{
    CLEANUP_TRACK_STATE *state;

    if (msg->conf->track == NULL)
        return NULL;
    state = mycalloc(1, sizeof(*state));
    state->track = msg->conf->track;
    state->msg = msg;
    return state;
}

/* cleanup_track_header - note the headers that matter; remove ours */
static CLEANUP_FILTER_ACT cleanup_track_header(void *arg, CLEANUP_MSG *msg,
                                               VSTR *header)
{
    CLEANUP_TRACK_STATE *state = arg;
    char **slot = NULL;

    if (cleanup_track_is(header, CLEANUP_TRACK_HEADER) ||
        cleanup_track_is(header, CLEANUP_TRACK_LIST_HEADER)) {
        /* Removed even when tracking is off: it is ours. */
        if (state != NULL && msg->trace_trusted) {
            slot = cleanup_track_is(header, CLEANUP_TRACK_HEADER)
                       ? &state->header_track
                       : &state->header_list;
            myfree(*slot);
            *slot = cleanup_track_value(header);
        } else if (state != NULL) {
            msg_info("%s: %.*s ignored (client %s is neither in mynetworks "
                     "nor authenticated) and removed",
                     msg->qid, (int) strcspn(vstr_str(header), ":"),
                     vstr_str(header), msg->client_info);
        }
        return CLEANUP_FILTER_DROP;
    }
    if (state == NULL)
        return CLEANUP_FILTER_KEEP;
    if (cleanup_track_is(header, "content-type"))
        slot = &state->content_type;
    else if (cleanup_track_is(header, "content-transfer-encoding"))
        slot = &state->cte;
    else if (cleanup_track_is(header, "list-unsubscribe"))
        state->has_unsubscribe = true;
    else if (cleanup_track_is(header, "list-id") && state->list_id == NULL) {
        char *value = cleanup_track_value(header);
        char *lt = strrchr(value, '<');
        char *gt = lt ? strchr(lt, '>') : NULL;

        if (lt && gt && gt > lt + 1)
            state->list_id = mystrndup(lt + 1, (size_t) (gt - lt - 1));
        myfree(value);
    }
    if (slot != NULL && *slot == NULL)
        *slot = cleanup_track_value(header);
    return CLEANUP_FILTER_KEEP;
}

/* cleanup_track_list_ok - a list name we put into a token */
static bool cleanup_track_list_ok(const char *list)
{
    if (*list == 0 || strlen(list) > CLEANUP_TRACK_LIST_MAX)
        return false;
    for (const unsigned char *cp = (const unsigned char *) list; *cp; cp++)
        if (*cp < 33 || *cp > 126)
            return false;
    return true;
}

/* cleanup_track_unsubscribe - the List-Unsubscribe headers into the file */
static void cleanup_track_unsubscribe(CLEANUP_TRACK_STATE *state,
                                      const VSTR *key, const char *list)
{
    CLEANUP_TRACK *track = state->track;
    CLEANUP_MSG *msg = state->msg;
    VSTR *token = vstr_alloc(128);
    VSTR *mailto = vstr_alloc(64);
    VSTR *buf = vstr_alloc(256);

    if (track_token_make(token, key, TRACK_PURPOSE_UNSUB, msg->qid,
                         state->recipient, msg->tenant, list) < 0) {
        msg_info("%s: List-Unsubscribe not added (a recipient or list that "
                 "cannot be signed)",
                 msg->qid);
        goto done;
    }
    /* The mailto's short form (track_token.h): a local part within 64
       octets */
    if (*track->mailto_domain &&
        unsub_mailto_make(mailto, key, msg->qid, state->recipient,
                          msg->tenant) < 0) {
        msg_warn("%s: no mailto in List-Unsubscribe (a bad queue ID)",
                 msg->qid);
        if (*track->unsub_base == 0)
            goto done;
    }
    vstr_cat(buf, "List-Unsubscribe: ");
    if (*track->unsub_base)
        vstr_sprintf_append(buf, "<%s/u/%s>", track->unsub_base,
                            vstr_str(token));
    if (vstr_len(mailto) > 0) {
        vstr_sprintf_append(buf, "%s<mailto:%s@%s",
                            *track->unsub_base ? ",\n " : "", vstr_str(mailto),
                            track->mailto_domain);
        /* The long token in the subject the recipient's program copies:
           it names the list, and works from any address (track_token.h) */
        if (vstr_len(mailto) + strlen(track->mailto_domain) + vstr_len(token) <
            CLEANUP_TRACK_MAILTO_MAX)
            vstr_sprintf_append(buf, "?subject=%s%s", TRACK_UNSUB_SUBJECT_URL,
                                vstr_str(token));
        vstr_addch(buf, '>');
    }
    vstr_addch(buf, '\n');
    if (*track->unsub_base)
        vstr_cat(buf, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n");
    cleanup_content_write(msg, vstr_str(buf), vstr_len(buf));
    msg_info("%s: List-Unsubscribe added: list=%s", msg->qid, list);
done:
    vstr_free(token);
    vstr_free(mailto);
    vstr_free(buf);
}

/* cleanup_track_end_headers - decide; add List-Unsubscribe; keep the body
   when it is to be rewritten */
static void cleanup_track_end_headers(void *arg, CLEANUP_MSG *msg)
{
    CLEANUP_TRACK_STATE *state = arg;
    CLEANUP_TRACK *track;
    char *list = NULL;
    const VSTR *key;

    if (state == NULL || msg->status || msg->discard)
        return;
    /* Mail that merely passes through (inbound, relayed for others) is
       not ours to track or to give our List-Unsubscribe. */
    if (!msg->trace_trusted)
        return;
    track = state->track;
    state->opens = track->opens;
    state->clicks = track->clicks;
    if (msg->tenant && track->tenant_maps) {
        int error = 0;
        const char *value = maps_find(track->tenant_maps, msg->tenant, &error);

        if (value == NULL && error == MAP_FAIL) {
            msg_warn("%s: track_tenant_maps: lookup of %s failed", msg->qid,
                     msg->tenant);
            cleanup_msg_fail(msg, 451, "4.3.0 tracking table lookup failed");
            return;
        }
        if (value != NULL)
            cleanup_track_words(state, value, &list);
    }
    if (state->header_track)
        cleanup_track_words(state, state->header_track, NULL);
    if (state->header_list && *state->header_list) {
        myfree(list);
        list = mystrdup(state->header_list);
    }
    if (list == NULL && state->list_id)
        list = mystrdup(state->list_id);
    if (*track->base == 0)
        state->opens = state->clicks = false;
    /* Per-recipient tokens only for a message queued to exactly one
       recipient: counted after virtual_alias_maps expansion and
       suppression (cleanup_msg_rcpt, all done before the content), not
       per RCPT record, so one address expanded to two gets per-message
       tokens rather than the first one's. */
    state->recipient =
        msg->queued_rcpts == 1 && msg->first_rcpt ? msg->first_rcpt : "";
    if (!state->opens && !state->clicks &&
        (list == NULL || state->has_unsubscribe || *state->recipient == 0 ||
         (*track->unsub_base == 0 && *track->mailto_domain == 0)))
        goto done;
    if ((key = cleanup_track_key(track, msg->qid)) == NULL) {
        cleanup_msg_fail(msg, 451, "4.3.0 tracking key unavailable");
        goto done;
    }
    if (list != NULL && !cleanup_track_list_ok(list)) {
        msg_info("%s: list name ignored (empty, too long or not printable "
                 "ASCII)",
                 msg->qid);
        list = myfree(list);
    }
    if (list != NULL && !state->has_unsubscribe && *state->recipient &&
        (*track->unsub_base || *track->mailto_domain))
        cleanup_track_unsubscribe(state, key, list);
    if (state->opens || state->clicks) {
        state->hold = vstr_alloc(8192);
        msg->body_hold = state->hold;
        msg->body_hold_limit = track->size_limit;
    }
done:
    myfree(list);
}

/* cleanup_track_link - a TRACK_HTML_LINK_FN: the click URL of url */
static bool cleanup_track_link(void *ctx, const char *url, VSTR *newurl)
{
    CLEANUP_TRACK_STATE *state = ctx;
    CLEANUP_TRACK *track = state->track;
    CLEANUP_MSG *msg = state->msg;
    size_t blen = strlen(track->base);
    size_t ulen = strlen(track->unsub_base);

    /* Our own links (unsubscribe, or already tracked) stay as they are. */
    if ((blen > 0 && strncasecmp(url, track->base, blen) == 0) ||
        (ulen > 0 && strncasecmp(url, track->unsub_base, ulen) == 0))
        return false;
    if (!track_url_ok(url))
        return false;
    vstr_sprintf(newurl, "%s/c/", track->base);
    if (track_token_make(newurl, track->key, TRACK_PURPOSE_CLICK, msg->qid,
                         state->recipient, msg->tenant, url) < 0 ||
        vstr_len(newurl) > CLEANUP_TRACK_URL_MAX)
        return false;
    state->links++;
    return true;
}

/* cleanup_track_end - rewrite the kept body into the file */
static void cleanup_track_end(void *arg, CLEANUP_MSG *msg)
{
    CLEANUP_TRACK_STATE *state = arg;
    CLEANUP_TRACK *track;
    TRACK_HTML_OPTS opts = {0};
    VSTR *pixel = NULL;
    VSTR *out;
    size_t changes;
    size_t skip = 0;

    if (state == NULL || state->hold == NULL)
        return;
    track = state->track;
    if (msg->body_hold == NULL) {
        /* cleanup_content wrote it out: past track_size_limit. */
        msg_info("%s: tracking skipped: body larger than track_size_limit",
                 msg->qid);
        return;
    }
    msg->body_hold = NULL;
    if (state->clicks) {
        opts.link = cleanup_track_link;
        opts.ctx = state;
    }
    if (state->opens) {
        pixel = vstr_alloc(128);
        vstr_sprintf(pixel, "%s/o/", track->base);
        if (track_token_make(pixel, track->key, TRACK_PURPOSE_OPEN, msg->qid,
                             state->recipient, msg->tenant, NULL) == 0)
            opts.pixel_url = vstr_str(pixel);
    }
    /* The empty line that ends the header block is no part of the body. */
    if (vstr_len(state->hold) > 0 && vstr_str(state->hold)[0] == '\n')
        skip = 1;
    cleanup_content_write(msg, vstr_str(state->hold), skip);
    out = vstr_alloc(vstr_len(state->hold) + 1024);
    changes = track_mime_rewrite(state->content_type, state->cte,
                                 vstr_str(state->hold) + skip,
                                 vstr_len(state->hold) - skip, out, &opts);
    if (changes == 0)
        cleanup_content_write(msg, vstr_str(state->hold) + skip,
                              vstr_len(state->hold) - skip);
    else
        cleanup_content_write(msg, vstr_str(out), vstr_len(out));
    msg_info("%s: tracking: opens=%s clicks=%s links=%zu recipient=%s",
             msg->qid, state->opens && changes > state->links ? "yes" : "no",
             state->clicks ? "yes" : "no", state->links,
             *state->recipient ? "one" : "all");
    vstr_free(out);
    vstr_free(pixel);
    state->hold = vstr_free(state->hold);
}

/* cleanup_track_free - the filter's state */
static void cleanup_track_free(void *arg)
{
    CLEANUP_TRACK_STATE *state = arg;

    if (state == NULL)
        return;
    if (state->hold != NULL && state->msg->body_hold == state->hold)
        state->msg->body_hold = NULL;
    vstr_free(state->hold);
    myfree(state->header_track);
    myfree(state->header_list);
    myfree(state->list_id);
    myfree(state->content_type);
    myfree(state->cte);
    myfree(state);
}

const CLEANUP_FILTER cleanup_track_filter = {
    .name = "track",
    .begin = cleanup_track_begin_msg,
    .header = cleanup_track_header,
    .end_headers = cleanup_track_end_headers,
    .end = cleanup_track_end,
    .free = cleanup_track_free,
};
