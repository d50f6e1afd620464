/*
 * api_track - the public tracking and unsubscribe endpoints of the api
 *
 *   GET  /o/TOKEN   200 a 1x1 GIF; records an "opened" event
 *   GET  /c/TOKEN   302 to the URL the token signs; records "clicked"
 *   GET  /u/TOKEN   200 a page with a form that POSTs One-Click (RFC 8058:
 *                   a GET never unsubscribes: mail scanners follow links)
 *   POST /u/TOKEN   body List-Unsubscribe=One-Click: 200; records
 *                   "unsubscribed" (recipient, tenant, list), which the
 *                   suppression follower turns into a suppression
 *
 * No API key: the signed token (global/track_token.h) is the
 * authorization. A token that does not check out gets 404 and nothing
 * else: no redirect, no event. Each event is fsynced into the journal
 * (events_open(conf, "api")) before the answer, in batches of the
 * requests of a few milliseconds (one fdatasync for them all); a journal
 * that cannot take them gets 503. A good token is never refused for rate:
 * tracking_rate_limit bounds the bad tokens one client address may send
 * per second (beyond: 429, Retry-After: 1).
 */
#ifndef API_TRACK_H
#define API_TRACK_H

#include "sys_defs.h"

#include <event2/http.h>

#include "mail_conf.h"

typedef struct API_TRACK API_TRACK;

/* api_track_create - the endpoints' state from main.cf */
extern API_TRACK *api_track_create(const MAIL_CONF *conf);
/* api_track_request - answer req when path is one of the endpoints' (true),
   else false and req is untouched */
extern bool api_track_request(API_TRACK *track, struct evhttp_request *req,
                              const char *path);
/* api_track_stop - before the http server and the event base go: write
   the waiting batch and answer it, drop the batch timer */
extern void api_track_stop(API_TRACK *track);
/* api_track_free - release (after api_track_stop); NULL */
extern API_TRACK *api_track_free(API_TRACK *track);

#endif
