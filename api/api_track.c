/*
 * api_track - the public tracking and unsubscribe endpoints of the api
 *
 * See api_track.h. The signing key is read (or made) on the first request
 * that needs it, from feedback_key_file, the file cleanup signs with.
 *
 * A request with a good token is never refused for rate: it records its
 * event and is answered. Its event goes into a batch written (one
 * fdatasync) when API_TRACK_BATCH_MAX events wait or API_TRACK_BATCH_MS
 * after the first, and only then are the batch's requests answered, so a
 * burst of opens costs a few syncs, not one each, on the event loop the
 * message submissions share. tracking_rate_limit bounds the bad tokens a
 * client address may send a second (beyond: 429), a cheap HMAC check each.
 *
 * Event seq: an unsubscribe POST's is derived from its token's payload
 * (a client that retries, or posts twice, makes the same event id, so
 * consumers can drop the repeat); an open's or click's is the time it was
 * recorded: the same recipient opening or clicking again is a new open or
 * click and gets a new id.
 */
#include "sys_defs.h"

#include <sys/time.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "api_track.h"
#include "events.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "sign_token.h"
#include "track_token.h"
#include "vstr.h"

#define API_TRACK_UA_MAX 256 /* bytes of a User-Agent kept in an event */
#define API_TRACK_BATCH_MAX 64 /* events written with one fdatasync */
#define API_TRACK_BATCH_MS 5 /* the longest the first of them waits */
#define API_TRACK_BAD_SLOTS 256 /* client addresses counted (bad tokens) */
#define API_TRACK_ADDR_MAX 64 /* bytes of an address kept */

/* Bad tokens of one client address in one second. */
typedef struct API_TRACK_BAD {
    char addr[API_TRACK_ADDR_MAX];
    time_t window;
    long long count;
} API_TRACK_BAD;

/* A request whose event is in the batch, to be answered once it is written. */
typedef struct API_TRACK_WAIT {
    struct evhttp_request *req;
    char kind; /* 'o', 'c', 'u' */
    char *location; /* 'c': the redirect */
    char *logline; /* 'u': logged once recorded */
} API_TRACK_WAIT;

struct API_TRACK {
    char *key_path;
    VSTR *key; /* NULL until loaded */
    EVENTS *events; /* NULL: events_enable = no */
    long long rate_limit; /* tracking_rate_limit (bad tokens), 0 none */
    API_TRACK_BAD bad[API_TRACK_BAD_SLOTS];
    API_TRACK_WAIT wait[API_TRACK_BATCH_MAX];
    int waiting; /* entries of wait[] in use */
    struct event *timer; /* flushes the batch; NULL until needed */
};

/* The 1x1 transparent GIF of the open pixel (GIF89a, 43 bytes). */
static const unsigned char api_track_gif[] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

/* api_track_create - the endpoints' state */
API_TRACK *api_track_create(const MAIL_CONF *conf)
{
    API_TRACK *track = mycalloc(1, sizeof(*track));
    VSTR *path = vstr_alloc(100);

    sign_token_key_path(conf, path);
    track->key_path = vstr_export(path);
    track->events = events_open(conf, "api");
    track->rate_limit = mail_conf_int(conf, "tracking_rate_limit");
    return track;
}

/* api_track_free - release; NULL */
API_TRACK *api_track_free(API_TRACK *track)
{
    if (track == NULL)
        return NULL;
    for (int i = 0; i < track->waiting; i++) {
        myfree(track->wait[i].location);
        myfree(track->wait[i].logline);
    }
    if (track->waiting > 0)
        msg_warn("tracking: %d requests never answered (no api_track_stop)",
                 track->waiting);
    myfree(track->key_path);
    vstr_free(track->key);
    events_close(track->events);
    myfree(track);
    return NULL;
}

/* api_track_text - send status with a short text or HTML body */
static void api_track_text(struct evhttp_request *req, int status,
                           const char *reason, const char *type,
                           const char *text)
{
    struct evbuffer *buf = evbuffer_new();
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);

    if (buf == NULL)
        msg_fatal("out of memory");
    evbuffer_add(buf, text, strlen(text));
    evhttp_add_header(headers, "Content-Type", type);
    evhttp_add_header(headers, "Cache-Control", "no-store");
    evhttp_add_header(headers, "X-Content-Type-Options", "nosniff");
    evhttp_send_reply(req, status, reason, buf);
    evbuffer_free(buf);
}

/* api_track_refuse - a token that does not check out: 404, nothing else */
static void api_track_refuse(struct evhttp_request *req)
{
    api_track_text(req, 404, "Not Found", "text/plain; charset=utf-8",
                   "unknown or damaged link\n");
}

/* api_track_key - the signing key, NULL when it cannot be had (logged) */
static const VSTR *api_track_key(API_TRACK *track)
{
    VSTR *why;

    if (track->key != NULL)
        return track->key;
    track->key = vstr_alloc(SIGN_TOKEN_KEY_LEN);
    why = vstr_alloc(100);
    if (sign_token_key_load(track->key_path, track->key, why) < 0) {
        msg_warn("tracking: %s", vstr_str(why));
        track->key = vstr_free(track->key);
    }
    vstr_free(why);
    return track->key;
}

/* api_track_answer - the answer of a request whose event is written */
static void api_track_answer(API_TRACK_WAIT *w)
{
    struct evhttp_request *req = w->req;
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);

    if (w->kind == 'o') {
        struct evbuffer *buf = evbuffer_new();

        if (buf == NULL)
            msg_fatal("out of memory");
        evbuffer_add(buf, api_track_gif, sizeof(api_track_gif));
        evhttp_add_header(headers, "Content-Type", "image/gif");
        evhttp_add_header(headers, "Cache-Control", "no-store");
        evhttp_send_reply(req, 200, "OK", buf);
        evbuffer_free(buf);
    } else if (w->kind == 'c') {
        evhttp_add_header(headers, "Location", w->location);
        api_track_text(req, 302, "Found", "text/plain; charset=utf-8",
                       "redirecting\n");
    } else {
        msg_info("%s", w->logline);
        api_track_text(req, 200, "OK", "text/html; charset=utf-8",
                       "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                       "<title>Unsubscribed</title></head><body>"
                       "<p>You are unsubscribed.</p></body></html>\n");
    }
}

/* api_track_flush - write the batch, then answer its requests (503 each
   when it could not be written) */
static void api_track_flush(API_TRACK *track)
{
    VSTR *why = vstr_alloc(100);
    bool ok = events_flush(track->events, why) == 0;
    API_TRACK_WAIT batch[API_TRACK_BATCH_MAX];
    int count = track->waiting;

    if (!ok)
        msg_warn("tracking: %d events not written: %s", count, vstr_str(why));
    vstr_free(why);
    if (track->timer != NULL)
        event_del(track->timer);
    /* Answered from a copy: the batch is a new one from here on. */
    memcpy(batch, track->wait, sizeof(batch[0]) * (size_t) count);
    track->waiting = 0;
    for (int i = 0; i < count; i++) {
        API_TRACK_WAIT *w = batch + i;

        if (ok)
            api_track_answer(w);
        else
            api_track_text(w->req, 503, "Service Unavailable",
                           "text/plain; charset=utf-8", "try again later\n");
        myfree(w->location);
        myfree(w->logline);
    }
}

/* api_track_timer - API_TRACK_BATCH_MS after the first event of a batch */
static void api_track_timer(evutil_socket_t fd, short what, void *arg)
{
    api_track_flush(arg);
}

/* api_track_stop - write and answer the waiting batch; drop the timer */
void api_track_stop(API_TRACK *track)
{
    if (track == NULL)
        return;
    if (track->waiting > 0)
        api_track_flush(track);
    if (track->timer != NULL)
        event_free(track->timer);
    track->timer = NULL;
}

/* api_track_seq - an unsubscribe's seq: FNV-1a (64 bits) of the token's
   payload, the same for every POST of the same token */
static void api_track_seq(char *seq, size_t size, const TRACK_TOKEN *tok)
{
    unsigned long long hash = 0xcbf29ce484222325ULL;
    const unsigned char *cp = (const unsigned char *) vstr_str(tok->buf);

    for (size_t i = 0; i < vstr_len(tok->buf); i++) {
        hash ^= cp[i];
        hash *= 0x100000001b3ULL;
    }
    (void) snprintf(seq, size, "post.%016llx", hash);
}

/* api_track_record - add the event of a good token to the batch; the
   request is answered once it is written */
static void api_track_record(API_TRACK *track, struct evhttp_request *req,
                             char kind, const TRACK_TOKEN *tok)
{
    struct timeval now;
    char seq[64];
    EVENT event;
    const char *agent =
        evhttp_find_header(evhttp_request_get_input_headers(req), "User-Agent");
    char *ua = agent ? mystrndup(agent, API_TRACK_UA_MAX) : NULL;
    API_TRACK_WAIT *w = track->wait + track->waiting++;

    if (kind == 'u') {
        api_track_seq(seq, sizeof(seq), tok);
    } else {
        gettimeofday(&now, NULL);
        (void) snprintf(seq, sizeof(seq), "%lld.%06ld", (long long) now.tv_sec,
                        (long) now.tv_usec);
    }
    track_token_event(&event,
                      kind == 'o'   ? EVENTS_OPENED
                      : kind == 'c' ? EVENTS_CLICKED
                                    : EVENTS_UNSUBSCRIBED,
                      tok, seq);
    event.user_agent = ua;
    events_add(track->events, &event);
    myfree(ua);
    w->req = req;
    w->kind = kind;
    w->location = kind == 'c' ? mystrdup(tok->extra) : NULL;
    w->logline = NULL;
    if (kind == 'u') {
        VSTR *line = vstr_alloc(200);

        vstr_sprintf(line, "%s: unsubscribed: recipient=%s tenant=%s list=%s",
                     tok->qid, *tok->recipient ? tok->recipient : "(none)",
                     *tok->tenant ? tok->tenant : "(none)",
                     *tok->extra ? tok->extra : "(none)");
        w->logline = vstr_export(line);
    }
    if (track->events == NULL || track->waiting == API_TRACK_BATCH_MAX) {
        api_track_flush(track);
        return;
    }
    if (track->waiting == 1) {
        struct timeval delay = {0, API_TRACK_BATCH_MS * 1000};

        if (track->timer == NULL &&
            (track->timer = evtimer_new(
                 evhttp_connection_get_base(evhttp_request_get_connection(req)),
                 api_track_timer, track)) == NULL)
            msg_fatal("out of memory");
        evtimer_add(track->timer, &delay);
    }
}

/* api_track_body_one_click - does a POST body say List-Unsubscribe=One-Click
   (form-urlencoded, or multipart/form-data as some clients send it) */
static bool api_track_body_one_click(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body;
    bool ok;

    if (len == 0 || len > 64 * 1024)
        return false;
    body = (const char *) evbuffer_pullup(in, (ssize_t) len);
    if (body == NULL)
        return false;
    {
        VSTR *text = vstr_ncpy(vstr_alloc(len + 1), body, len);

        ok = strstr(vstr_str(text), "List-Unsubscribe=One-Click") != NULL ||
             (strstr(vstr_str(text), "name=\"List-Unsubscribe\"") != NULL &&
              strstr(vstr_str(text), "One-Click") != NULL);
        vstr_free(text);
    }
    return ok;
}

/* api_track_unsub_page - the confirmation page of a GET /u/TOKEN */
static void api_track_unsub_page(struct evhttp_request *req, const char *token)
{
    VSTR *page = vstr_alloc(512);

    /* The token is base32: nothing in it needs escaping. */
    vstr_sprintf(page,
                 "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                 "<title>Unsubscribe</title></head><body>\n"
                 "<p>Stop receiving these messages?</p>\n"
                 "<form method=\"post\" action=\"%s\">"
                 "<input type=\"hidden\" name=\"List-Unsubscribe\" "
                 "value=\"One-Click\">"
                 "<button type=\"submit\">Unsubscribe</button></form>\n"
                 "</body></html>\n",
                 token);
    api_track_text(req, 200, "OK", "text/html; charset=utf-8", vstr_str(page));
    vstr_free(page);
}

/* api_track_bad_token - a token that does not check out: 404, or 429
   when its client address sent more than tracking_rate_limit this second */
static void api_track_bad_token(API_TRACK *track, struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    char *addr = NULL;
    const char *peer;
    ev_uint16_t port = 0;
    unsigned long hash = 5381;
    API_TRACK_BAD *slot;
    time_t now = time(NULL);

    if (track->rate_limit <= 0 || conn == NULL) {
        api_track_refuse(req);
        return;
    }
    evhttp_connection_get_peer(conn, &addr, &port);
    peer = addr != NULL ? addr : "";
    for (const unsigned char *cp = (const unsigned char *) peer; *cp; cp++)
        hash = hash * 33 + *cp;
    slot = track->bad + hash % API_TRACK_BAD_SLOTS;
    if (now != slot->window ||
        strncmp(slot->addr, peer, sizeof(slot->addr) - 1) != 0) {
        (void) snprintf(slot->addr, sizeof(slot->addr), "%s", peer);
        slot->window = now;
        slot->count = 0;
    }
    if (++slot->count <= track->rate_limit) {
        api_track_refuse(req);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                      "1");
    api_track_text(req, 429, "Too Many Requests", "text/plain; charset=utf-8",
                   "too many requests\n");
}

/* api_track_request - route /o/, /c/ and /u/ */
bool api_track_request(API_TRACK *track, struct evhttp_request *req,
                       const char *path)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const char *purpose;
    const char *token = path + 3;
    const VSTR *key;
    TRACK_TOKEN tok;
    char kind;

    if (strlen(path) < 3 || path[0] != '/' || path[2] != '/' ||
        strchr("ocu", path[1]) == NULL)
        return false;
    kind = path[1];
    purpose = kind == 'o'   ? TRACK_PURPOSE_OPEN
              : kind == 'c' ? TRACK_PURPOSE_CLICK
                            : TRACK_PURPOSE_UNSUB;
    if (method != EVHTTP_REQ_GET &&
        !(kind == 'u' && method == EVHTTP_REQ_POST)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          kind == 'u' ? "GET, POST" : "GET");
        api_track_text(req, 405, "Method Not Allowed",
                       "text/plain; charset=utf-8", "method not allowed\n");
        return true;
    }
    if ((key = api_track_key(track)) == NULL) {
        api_track_text(req, 503, "Service Unavailable",
                       "text/plain; charset=utf-8", "try again later\n");
        return true;
    }
    if (track_token_parse(key, purpose, token, &tok) < 0) {
        api_track_bad_token(track, req);
        return true;
    }
    if (kind == 'u' && method == EVHTTP_REQ_GET)
        api_track_unsub_page(req, token);
    else if (kind == 'u' && !api_track_body_one_click(req))
        api_track_text(req, 400, "Bad Request", "text/plain; charset=utf-8",
                       "expected List-Unsubscribe=One-Click\n");
    else
        api_track_record(track, req, kind, &tok);
    track_token_free(&tok);
    return true;
}
