/*
 * curl_event - libcurl's multi interface on a libevent base
 *
 * libcurl names the sockets it wants watched (CURLMOPT_SOCKETFUNCTION)
 * and the one timeout it wants (CURLMOPT_TIMERFUNCTION); each gets a
 * libevent event on the caller's base, whose callback hands it back to
 * curl_multi_socket_action. After each action the finished transfers are
 * handed to the caller's done callback, one at a time. Nothing waits.
 *
 * The caller owns its easy handles: it adds them to curl_event_multi(),
 * and removes and cleans up each one (in done, or when it gives up on
 * it). mta_sts (MTA-STS policy fetches) and the events daemon's webhook
 * and OpenTelemetry exporters use it.
 */
#ifndef CURL_EVENT_H
#define CURL_EVENT_H

#include "sys_defs.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdbool.h>

#include "vstr.h"

typedef struct CURL_EVENT CURL_EVENT;

/* CURL_EVENT_DONE - a transfer ended with result; called from the loop */
typedef void (*CURL_EVENT_DONE)(CURL *easy, CURLcode result, void *arg);

/* curl_event_create - a multi handle run on base; NULL when libcurl or
   libevent cannot set it up (curl_global_init is the caller's) */
extern CURL_EVENT *curl_event_create(struct event_base *base,
                                     CURL_EVENT_DONE done, void *arg);
/* curl_event_multi - the multi handle to add transfers to */
extern CURLM *curl_event_multi(const CURL_EVENT *ce);
/* curl_event_free - the multi handle and its events, no callbacks (the
   caller removes its easy handles first); NULL */
extern CURL_EVENT *curl_event_free(CURL_EVENT *ce);
/* curl_event_post_ok - the verdict on a finished POST: true for a 2xx;
   else false with why set to libcurl's error (error: its
   CURLOPT_ERRORBUFFER, "" for none) or "HTTP status N: <reply>" (reply:
   the answer's body as collected, made printable in place, at most 200
   bytes of it quoted) */
extern bool curl_event_post_ok(CURL *easy, CURLcode code, const char *error,
                               VSTR *reply, VSTR *why);

#endif
