/*
 * curl_event - libcurl's multi interface on a libevent base
 *
 * A socket's event is created at libcurl's first word about it, kept in
 * libcurl's per-socket pointer (curl_multi_assign), re-armed when libcurl
 * wants other directions, and freed at CURL_POLL_REMOVE.
 */
#include "sys_defs.h"

#include "curl_event.h"
#include "msg.h"
#include "mymalloc.h"

struct CURL_EVENT {
    struct event_base *base;
    CURLM *multi;
    struct event *timer; /* libcurl's timeout */
    CURL_EVENT_DONE done;
    void *arg;
};

/* curl_event_check - hand the finished transfers to the caller */
static void curl_event_check(CURL_EVENT *ce)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(ce->multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE)
            ce->done(msg->easy_handle, msg->data.result, ce->arg);
}

/* curl_event_socket_ready - a socket libcurl watches is ready */
static void curl_event_socket_ready(evutil_socket_t fd, short what, void *arg)
{
    CURL_EVENT *ce = arg;
    int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                 ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;

    (void) curl_multi_socket_action(ce->multi, fd, action, &running);
    curl_event_check(ce);
}

/* curl_event_timer_ready - libcurl's timeout has come */
static void curl_event_timer_ready(evutil_socket_t fd, short what, void *arg)
{
    CURL_EVENT *ce = arg;
    int running;

    (void) curl_multi_socket_action(ce->multi, CURL_SOCKET_TIMEOUT, 0,
                                    &running);
    curl_event_check(ce);
}

/* curl_event_socket - CURLMOPT_SOCKETFUNCTION: watch fd as told, or stop */
static int curl_event_socket(CURL *easy, curl_socket_t fd, int what,
                             void *userp, void *socketp)
{
    CURL_EVENT *ce = userp;
    struct event *ev = socketp;
    short flags;

    if (what == CURL_POLL_REMOVE) {
        if (ev != NULL) {
            event_free(ev);
            (void) curl_multi_assign(ce->multi, fd, NULL);
        }
        return 0;
    }
    flags = (short) (EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                     ((what & CURL_POLL_OUT) ? EV_WRITE : 0));
    if (ev != NULL) {
        (void) event_del(ev);
        if (event_assign(ev, ce->base, fd, flags, curl_event_socket_ready, ce) <
            0)
            msg_fatal("cannot watch a libcurl socket");
    } else {
        if ((ev = event_new(ce->base, fd, flags, curl_event_socket_ready,
                            ce)) == NULL)
            msg_fatal("cannot watch a libcurl socket");
        (void) curl_multi_assign(ce->multi, fd, ev);
    }
    if (event_add(ev, NULL) < 0)
        msg_fatal("cannot watch a libcurl socket");
    return 0;
}

/* curl_event_timer - CURLMOPT_TIMERFUNCTION: wake in timeout_ms (-1:
   never) */
static int curl_event_timer(CURLM *multi, long timeout_ms, void *userp)
{
    CURL_EVENT *ce = userp;

    if (timeout_ms < 0) {
        (void) evtimer_del(ce->timer);
    } else {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

        if (evtimer_add(ce->timer, &tv) < 0)
            msg_fatal("cannot set the libcurl timer");
    }
    return 0;
}

/* curl_event_create - a multi handle run on base */
CURL_EVENT *curl_event_create(struct event_base *base, CURL_EVENT_DONE done,
                              void *arg)
{
    CURL_EVENT *ce = mycalloc(1, sizeof(*ce));

    ce->base = base;
    ce->done = done;
    ce->arg = arg;
    if ((ce->multi = curl_multi_init()) == NULL ||
        (ce->timer = evtimer_new(base, curl_event_timer_ready, ce)) == NULL)
        return curl_event_free(ce);
    (void) curl_multi_setopt(ce->multi, CURLMOPT_SOCKETFUNCTION,
                             curl_event_socket);
    (void) curl_multi_setopt(ce->multi, CURLMOPT_SOCKETDATA, ce);
    (void) curl_multi_setopt(ce->multi, CURLMOPT_TIMERFUNCTION,
                             curl_event_timer);
    (void) curl_multi_setopt(ce->multi, CURLMOPT_TIMERDATA, ce);
    return ce;
}

/* curl_event_multi - the multi handle */
CURLM *curl_event_multi(const CURL_EVENT *ce)
{
    return ce->multi;
}

/* curl_event_free - the multi handle and its events; NULL */
CURL_EVENT *curl_event_free(CURL_EVENT *ce)
{
    if (ce == NULL)
        return NULL;
    if (ce->multi != NULL)
        (void) curl_multi_cleanup(ce->multi);
    if (ce->timer != NULL)
        event_free(ce->timer);
    myfree(ce);
    return NULL;
}

/* curl_event_post_ok - the verdict on a finished POST */
bool curl_event_post_ok(CURL *easy, CURLcode code, const char *error,
                        VSTR *reply, VSTR *why)
{
    long status = 0;

    (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (code != CURLE_OK) {
        vstr_sprintf(why, "%s", *error ? error : curl_easy_strerror(code));
        return false;
    }
    if (status >= 200 && status < 300)
        return true;
    for (char *cp = vstr_str(reply); *cp; cp++)
        if ((unsigned char) *cp < 0x20 || (unsigned char) *cp >= 0x7f)
            *cp = ' ';
    vstr_sprintf(why, "HTTP status %ld%s%.200s", status,
                 vstr_len(reply) ? ": " : "", vstr_str(reply));
    return false;
}
