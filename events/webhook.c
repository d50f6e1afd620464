/*
 * webhook - the events daemon's HTTP backend (libcurl)
 *
 * Each URL of events_webhook_urls is an exporter of its own, with its own
 * curl multi handle, so a slow or silent endpoint holds only its own
 * batch. One POST per batch:
 *
 *   POST URL
 *   Content-Type: application/json
 *   X-Sluice-Timestamp: T          (Unix seconds when the POST was made)
 *   X-Sluice-Signature: v1=HEX     (only when events_webhook_secret is set)
 *
 *   [EVENT,EVENT,...]              (the journal's lines, as they are)
 *
 * HEX is the lower-case hex HMAC-SHA256, keyed with events_webhook_secret,
 * of T, ".", and the body's exact bytes. A receiver recomputes it, compares
 * in constant time, and refuses a T too far from its clock (replay). A
 * retried batch is signed afresh (new T), and carries the same events.
 *
 * A 2xx answer is success; anything else (another status, a connection
 * refused, events_webhook_timeout passed) is a failure the framework
 * retries (exporter.c). Redirects are not followed; only http and https.
 *
 * libcurl runs non-blocking under the daemon's libevent loop through its
 * multi-socket interface (global/curl_event.h), which hands the ended
 * POST to webhook_done.
 */
#include "sys_defs.h"

#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "curl_event.h"
#include "exporter.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define WEBHOOK_REPLY_MAX 1024 /* of the answer's body, for the log */

typedef struct WEBHOOK {
    EXPORTER *exp;
    char *url;
    char *secret; /* "": no signature */
    long long timeout;
    long long max_age;
    CURL_EVENT *curl; /* libcurl on the daemon's loop */
    CURLM *multi; /* its multi handle */
    CURL *easy; /* the POST in flight, or NULL */
    struct curl_slist *headers;
    VSTR *body;
    VSTR *reply; /* start of the answer's body */
    char error[CURL_ERROR_SIZE];
} WEBHOOK;

/* webhook_write - libcurl's answer body: keep the start, for the log */
static size_t webhook_write(char *data, size_t size, size_t nmemb, void *arg)
{
    WEBHOOK *hook = arg;
    size_t len = size * nmemb;

    if (vstr_len(hook->reply) < WEBHOOK_REPLY_MAX)
        vstr_ncat(hook->reply, data,
                  len < WEBHOOK_REPLY_MAX - vstr_len(hook->reply)
                      ? len
                      : WEBHOOK_REPLY_MAX - vstr_len(hook->reply));
    return len;
}

/* webhook_sign - "v1=" and the hex HMAC-SHA256 of ts "." body */
static void webhook_sign(VSTR *out, const char *secret, const char *ts,
                         const char *body, size_t len)
{
    VSTR *text = vstr_alloc(len + 32);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;

    vstr_sprintf(text, "%s.", ts);
    vstr_ncat(text, body, len);
    if (HMAC(EVP_sha256(), secret, (int) strlen(secret),
             (const unsigned char *) vstr_str(text), vstr_len(text), mac,
             &mac_len) == NULL)
        msg_fatal("HMAC-SHA256 failed");
    vstr_cpy(out, "v1=");
    for (unsigned int i = 0; i < mac_len; i++)
        vstr_sprintf_append(out, "%02x", mac[i]);
    vstr_free(text);
}

/* webhook_finish - the POST is over: tell the framework */
static void webhook_finish(WEBHOOK *hook, CURLcode code)
{
    VSTR *why = vstr_alloc(100);
    bool ok =
        curl_event_post_ok(hook->easy, code, hook->error, hook->reply, why);

    (void) curl_multi_remove_handle(hook->multi, hook->easy);
    curl_easy_cleanup(hook->easy);
    hook->easy = NULL;
    curl_slist_free_all(hook->headers);
    hook->headers = NULL;
    exporter_done(hook->exp, ok, vstr_str(why));
    vstr_free(why);
}

/* webhook_done - a transfer ended: the POST in flight? */
static void webhook_done(CURL *easy, CURLcode result, void *arg)
{
    WEBHOOK *hook = arg;

    if (hook->easy != NULL && easy == hook->easy)
        webhook_finish(hook, result);
}

/* webhook_send - POST the batch */
static void webhook_send(void *state, const VSTR *lines, int count)
{
    WEBHOOK *hook = state;
    const char *cp = vstr_str((VSTR *) lines);
    const char *end = cp + vstr_len((VSTR *) lines);
    VSTR *header = vstr_alloc(100);
    VSTR *sig = vstr_alloc(100);
    char ts[32];

    if (hook->easy != NULL)
        msg_panic("%s: a POST is in flight", __func__);
    /* The lines, LF-ended JSON objects, as one JSON array. */
    vstr_cpy(hook->body, "[");
    while (cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            msg_panic("%s: a batch line without its LF", __func__);
        if (vstr_len(hook->body) > 1)
            vstr_addch(hook->body, ',');
        vstr_ncat(hook->body, cp, (size_t) (nl - cp));
        cp = nl + 1;
    }
    vstr_addch(hook->body, ']');
    if (snprintf(ts, sizeof(ts), "%lld", (long long) time(NULL)) >=
        (int) sizeof(ts))
        msg_panic("%s: time stamp too long", __func__);

    hook->headers =
        curl_slist_append(hook->headers, "Content-Type: application/json");
    hook->headers = curl_slist_append(hook->headers, "Expect:");
    vstr_sprintf(header, "X-Sluice-Timestamp: %s", ts);
    hook->headers = curl_slist_append(hook->headers, vstr_str(header));
    if (*hook->secret) {
        webhook_sign(sig, hook->secret, ts, vstr_str(hook->body),
                     vstr_len(hook->body));
        vstr_sprintf(header, "X-Sluice-Signature: %s", vstr_str(sig));
        hook->headers = curl_slist_append(hook->headers, vstr_str(header));
    }
    vstr_sprintf(header, "X-Sluice-Events: %d", count);
    hook->headers = curl_slist_append(hook->headers, vstr_str(header));
    if (hook->headers == NULL)
        msg_fatal("out of memory");

    if ((hook->easy = curl_easy_init()) == NULL)
        msg_fatal("curl_easy_init failed");
    *hook->error = 0;
    vstr_reset(hook->reply);
    (void) curl_easy_setopt(hook->easy, CURLOPT_URL, hook->url);
    (void) curl_easy_setopt(hook->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    (void) curl_easy_setopt(hook->easy, CURLOPT_NOSIGNAL, 1L);
    (void) curl_easy_setopt(hook->easy, CURLOPT_TIMEOUT, (long) hook->timeout);
    (void) curl_easy_setopt(hook->easy, CURLOPT_FOLLOWLOCATION, 0L);
    (void) curl_easy_setopt(hook->easy, CURLOPT_HTTPHEADER, hook->headers);
    (void) curl_easy_setopt(hook->easy, CURLOPT_POST, 1L);
    (void) curl_easy_setopt(hook->easy, CURLOPT_POSTFIELDS,
                            vstr_str(hook->body));
    (void) curl_easy_setopt(hook->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t) vstr_len(hook->body));
    (void) curl_easy_setopt(hook->easy, CURLOPT_WRITEFUNCTION, webhook_write);
    (void) curl_easy_setopt(hook->easy, CURLOPT_WRITEDATA, hook);
    (void) curl_easy_setopt(hook->easy, CURLOPT_ERRORBUFFER, hook->error);
    (void) curl_easy_setopt(hook->easy, CURLOPT_USERAGENT, "sluice-events");
    /* libcurl asks for a timeout of 0 here: the POST starts from the
       loop, never from inside send (exporter_done must not run there). */
    if (curl_multi_add_handle(hook->multi, hook->easy) != CURLM_OK)
        msg_fatal("curl_multi_add_handle failed");
    vstr_free(header);
    vstr_free(sig);
}

/* webhook_max_age - events_webhook_max_age */
static long long webhook_max_age(void *state)
{
    return ((WEBHOOK *) state)->max_age;
}

/* webhook_secret - the HMAC key: events_webhook_secret_file's first line
   (its LF or CR LF not included), else events_webhook_secret; a file that
   cannot be read, or is empty, is fatal (unsigned POSTs are not what was
   asked for) */
static char *webhook_secret(const MAIL_CONF *conf)
{
    const char *path = mail_conf_str(conf, "events_webhook_secret_file");
    char buf[1024];
    char *secret;
    size_t len;
    FILE *fp;

    if (*path == 0)
        return mystrdup(mail_conf_str(conf, "events_webhook_secret"));
    if (*mail_conf_str(conf, "events_webhook_secret"))
        msg_fatal("set events_webhook_secret or events_webhook_secret_file,"
                  " not both");
    if ((fp = fopen(path, "r")) == NULL)
        msg_fatal("events_webhook_secret_file: cannot read %s: %m", path);
    if (fgets(buf, sizeof(buf), fp) == NULL)
        buf[0] = 0;
    (void) fclose(fp);
    len = strcspn(buf, "\r\n");
    buf[len] = 0;
    if (len == 0)
        msg_fatal("events_webhook_secret_file: %s: the first line is empty",
                  path);
    secret = mystrdup(buf);
    explicit_bzero(buf, sizeof(buf));
    return secret;
}

/* webhook_open - one URL */
static void *webhook_open(EXPORTER *exp, struct event_base *base,
                          const MAIL_CONF *conf)
{
    WEBHOOK *hook = mycalloc(1, sizeof(*hook));

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        msg_fatal("curl_global_init failed");
    hook->exp = exp;
    hook->url = mystrdup(exporter_target(exp));
    hook->secret = webhook_secret(conf);
    hook->timeout = mail_conf_time(conf, "events_webhook_timeout");
    hook->max_age = mail_conf_time(conf, "events_webhook_max_age");
    if ((hook->curl = curl_event_create(base, webhook_done, hook)) == NULL)
        msg_fatal("cannot set up libcurl's multi interface");
    hook->multi = curl_event_multi(hook->curl);
    hook->body = vstr_alloc(4096);
    hook->reply = vstr_alloc(WEBHOOK_REPLY_MAX + 1);
    if (*hook->secret == 0)
        msg_warn("events: %s: events_webhook_secret is empty: the POSTs "
                 "are not signed",
                 exporter_display(exp));
    return hook;
}

/* webhook_close - free (a POST in flight is abandoned) */
static void webhook_close(void *state)
{
    WEBHOOK *hook = state;

    if (hook->easy) {
        (void) curl_multi_remove_handle(hook->multi, hook->easy);
        curl_easy_cleanup(hook->easy);
    }
    curl_slist_free_all(hook->headers);
    curl_event_free(hook->curl);
    vstr_free(hook->body);
    vstr_free(hook->reply);
    myfree(hook->url);
    myfree(hook->secret);
    myfree(hook);
    curl_global_cleanup();
}

const EXPORTER_BACKEND webhook_backend = {
    .kind = "webhook",
    .open = webhook_open,
    .send = webhook_send,
    .close = webhook_close,
    .max_age = webhook_max_age,
};
