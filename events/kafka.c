/*
 * kafka - the events daemon's Kafka backend (librdkafka)
 *
 * With events_kafka_brokers set, one exporter produces every journal
 * event as one Kafka message: the value is the event's JSON line (without
 * its LF), the key the event's tenant when it has one, else the domain of
 * its recipient, else the domain of its sender (a received event), else
 * none (librdkafka then spreads the messages); so one tenant's, or one
 * destination's, events stay in order in one partition. The topic is
 * events_kafka_topic, where "%k" stands for the event's kind: one topic
 * for everything ("sluice-events", the default) or one per kind
 * ("sluice-%k": sluice-received, sluice-delivered ...); "%%" is "%".
 *
 * The producer is idempotent (enable.idempotence: acks=all, retries
 * without duplicates or reordering within a session). The framework
 * (exporter.c) moves the durable position past a batch only once every
 * message of it has its delivery report, all of them successes; any
 * failure (a message timed out after events_kafka_timeout, a broker's
 * error) fails the batch, which the framework sends again, the same
 * events, after its back-off, and dead-letters after events_kafka_max_age.
 * So delivery is at least once: a re-sent batch can repeat events that
 * went the first time (a kill -9 between the delivery and the position,
 * or a batch that failed in part); consumers deduplicate by event id. A
 * cluster that is down only grows the backlog `sluice events status`
 * shows.
 *
 * librdkafka under the daemon's libevent loop: the producer's main queue
 * (delivery reports, errors, logs: log.queue) writes a byte to a
 * non-blocking pipe when it goes from empty to non-empty
 * (rd_kafka_queue_io_event_enable); libevent watches the other end, and
 * kafka_wake serves the queue with rd_kafka_poll(rk, 0) until it is empty.
 * Nothing polls on a timer, and every callback runs in the loop's thread.
 * A fatal error of the producer (idempotence broken) ends that producer:
 * the batch fails and the next one gets a new producer.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "exporter.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define KAFKA_TOPIC_MAX 249 /* Kafka's limit on a topic name */
#define KAFKA_DOMAIN_MAX 255

typedef struct KAFKA {
    EXPORTER *exp;
    char *brokers;
    char *topic; /* events_kafka_topic: may hold %k */
    long long timeout; /* message.timeout.ms, in seconds */
    long long max_age;
    struct event_base *base;
    rd_kafka_t *rk; /* NULL after a fatal error, until the next batch */
    int wake_pipe[2]; /* librdkafka writes, the loop reads */
    struct event *wake_ev;
    struct event *done_ev; /* a batch that failed before any message went */
    struct event *tick_ev; /* serves the queue each second while in flight */
    int waiting; /* delivery reports still due for the batch */
    int failed; /* messages of the batch that did not go */
    VSTR *why; /* the first failure of the batch */
    bool in_flight;
    bool fatal; /* the producer had a fatal error */
    int last_error; /* the last error logged, not repeated at once */
    time_t last_error_at;
} KAFKA;

/* kafka_fail - note why the batch in flight fails (the first reason) */
static void kafka_fail(KAFKA *kafka, const char *why)
{
    if (kafka->failed++ == 0)
        vstr_cpy(kafka->why, why);
}

/* kafka_finish - every report of the batch is in: tell the framework */
static void kafka_finish(KAFKA *kafka)
{
    bool ok = kafka->failed == 0;
    VSTR *why = vstr_alloc(100);

    if (!ok)
        vstr_sprintf(why, "%d of the messages failed, first: %s", kafka->failed,
                     vstr_str(kafka->why));
    kafka->in_flight = false;
    event_del(kafka->tick_ev);
    exporter_done(kafka->exp, ok, vstr_str(why));
    vstr_free(why);
}

/* kafka_delivered - a message's delivery report (from rd_kafka_poll) */
static void kafka_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                            void *opaque)
{
    KAFKA *kafka = opaque;

    if (!kafka->in_flight || kafka->waiting <= 0)
        msg_panic("%s: a delivery report with no message due", __func__);
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        kafka_fail(kafka, rd_kafka_err2str(msg->err));
    kafka->waiting--;
}

/* kafka_error - librdkafka's error events (from rd_kafka_poll) */
static void kafka_error(rd_kafka_t *rk, int err, const char *reason,
                        void *opaque)
{
    KAFKA *kafka = opaque;
    char fatal[512];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        (void) rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        msg_warn("events: kafka %s: fatal producer error: %s; a new "
                 "producer takes over",
                 kafka->brokers, fatal);
        kafka->fatal = true;
        return;
    }
    /* Brokers down repeat this every few seconds: say it once a minute. */
    if (err == kafka->last_error && time(NULL) - kafka->last_error_at < 60)
        return;
    kafka->last_error = err;
    kafka->last_error_at = time(NULL);
    msg_warn("events: kafka %s: %s", kafka->brokers, reason);
}

/* kafka_log - librdkafka's log lines (log.queue: from rd_kafka_poll) */
static void kafka_log(const rd_kafka_t *rk, int level, const char *fac,
                      const char *buf)
{
    /* Errors (3) come to kafka_error as well: their log lines only with
       -v; debug lines (7) only when librdkafka's debug is on. */
    if (level <= 2)
        msg_warn("events: kafka: %s: %s", fac, buf);
    else if (level != 3 || msg_verbose_get())
        msg_info("events: kafka: %s: %s", fac, buf);
}

/* kafka_set - one property of conf, or msg_fatal */
static void kafka_set(rd_kafka_conf_t *conf, const char *name,
                      const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK)
        msg_fatal("events: kafka: %s = %s: %s", name, value, errstr);
}

/* kafka_start - a new producer, its main queue tied to the wake pipe */
static void kafka_start(KAFKA *kafka)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_queue_t *queue;
    char errstr[512];
    char timeout_ms[32];

    kafka_set(conf, "bootstrap.servers", kafka->brokers);
    kafka_set(conf, "client.id", "sluice-events");
    kafka_set(conf, "enable.idempotence", "true");
    kafka_set(conf, "acks", "all");
    if (snprintf(timeout_ms, sizeof(timeout_ms), "%lld",
                 kafka->timeout * 1000) >= (int) sizeof(timeout_ms))
        msg_panic("%s: timeout too long", __func__);
    kafka_set(conf, "message.timeout.ms", timeout_ms);
    /* A batch is at most events_webhook_batch_size (100000) events. */
    kafka_set(conf, "queue.buffering.max.messages", "200000");
    kafka_set(conf, "linger.ms", "5");
    kafka_set(conf, "log.queue", "true");
    rd_kafka_conf_set_dr_msg_cb(conf, kafka_delivered);
    rd_kafka_conf_set_error_cb(conf, kafka_error);
    rd_kafka_conf_set_log_cb(conf, kafka_log);
    rd_kafka_conf_set_opaque(conf, kafka);
    if ((kafka->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr,
                                  sizeof(errstr))) == NULL)
        msg_fatal("events: kafka %s: %s", kafka->brokers, errstr);
    /* Logs to the main queue too: every callback in this thread. */
    queue = rd_kafka_queue_get_main(kafka->rk);
    if (rd_kafka_set_log_queue(kafka->rk, queue) != RD_KAFKA_RESP_ERR_NO_ERROR)
        msg_fatal("events: kafka: cannot queue the logs");
    rd_kafka_queue_io_event_enable(queue, kafka->wake_pipe[1], "k", 1);
    rd_kafka_queue_destroy(queue);
    kafka->fatal = false;
}

/* kafka_stop - destroy the producer (what it still holds is abandoned) */
static void kafka_stop(KAFKA *kafka)
{
    rd_kafka_queue_t *queue;

    if (kafka->rk == NULL)
        return;
    queue = rd_kafka_queue_get_main(kafka->rk);
    rd_kafka_queue_io_event_enable(queue, -1, NULL, 0);
    rd_kafka_queue_destroy(queue);
    (void) rd_kafka_purge(kafka->rk,
                          RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(kafka->rk);
    kafka->rk = NULL;
}

/* kafka_wake - the main queue has something: serve all of it */
static void kafka_wake(evutil_socket_t fd, short what, void *arg)
{
    KAFKA *kafka = arg;
    char buf[64];

    while (read(fd, buf, sizeof(buf)) > 0)
        /* void */;
    if (kafka->rk != NULL)
        while (rd_kafka_poll(kafka->rk, 0) > 0)
            /* void */;
    if (kafka->in_flight && kafka->waiting == 0) {
        if (kafka->fatal) {
            kafka_fail(kafka, "fatal producer error");
            kafka_stop(kafka);
        }
        kafka_finish(kafka);
    }
}

/* kafka_tick - while a batch is in flight, serve the queue once a second
   too: the wake pipe is the fast path, this makes a wake-up that never
   came (a full run once waited 60 s for reports that did not arrive)
   cost a second, not the batch */
static void kafka_tick(evutil_socket_t fd, short what, void *arg)
{
    KAFKA *kafka = arg;

    (void) what;
    kafka_wake(kafka->wake_pipe[0], EV_READ, kafka);
}

/* kafka_done_event - a batch that failed before a message went */
static void kafka_done_event(evutil_socket_t fd, short what, void *arg)
{
    KAFKA *kafka = arg;

    if (kafka->in_flight && kafka->waiting == 0)
        kafka_finish(kafka);
}

/* kafka_domain - the lower-cased domain of address into out; false when
   it has none */
static bool kafka_domain(VSTR *out, const char *address)
{
    const char *at = address ? strrchr(address, '@') : NULL;

    if (at == NULL || at[1] == 0 || strlen(at + 1) > KAFKA_DOMAIN_MAX)
        return false;
    vstr_cpy(out, at + 1);
    for (char *cp = vstr_str(out); *cp; cp++)
        if (*cp >= 'A' && *cp <= 'Z')
            *cp = (char) (*cp - 'A' + 'a');
    return true;
}

/* kafka_string - obj[name] when it is a non-empty string, else NULL */
static const char *kafka_string(json_t *obj, const char *name)
{
    const char *value = json_string_value(json_object_get(obj, name));

    return value && *value ? value : NULL;
}

/* kafka_key - the message key of event into key; false: no key */
static bool kafka_key(VSTR *key, json_t *event)
{
    const char *tenant = kafka_string(event, "tenant");

    if (tenant != NULL) {
        vstr_cpy(key, tenant);
        return true;
    }
    return kafka_domain(key, kafka_string(event, "recipient")) ||
           kafka_domain(key, kafka_string(event, "sender"));
}

/* kafka_topic - the topic of an event of kind: events_kafka_topic with %k
   replaced (a kind's characters that Kafka refuses become "_") */
static void kafka_topic(VSTR *topic, const char *pattern, const char *kind)
{
    vstr_reset(topic);
    for (const char *cp = pattern; *cp; cp++) {
        if (cp[0] == '%' && cp[1] == 'k') {
            for (const char *kp = kind; *kp; kp++)
                vstr_addch(topic, (*kp >= 'a' && *kp <= 'z') ||
                                          (*kp >= 'A' && *kp <= 'Z') ||
                                          (*kp >= '0' && *kp <= '9') ||
                                          *kp == '-' || *kp == '_' || *kp == '.'
                                      ? *kp
                                      : '_');
            cp++;
        } else if (cp[0] == '%' && cp[1] == '%') {
            vstr_addch(topic, '%');
            cp++;
        } else {
            vstr_addch(topic, *cp);
        }
    }
    if (vstr_len(topic) > KAFKA_TOPIC_MAX)
        vstr_truncate(topic, KAFKA_TOPIC_MAX);
}

/* kafka_produce - one event line (without its LF) */
static void kafka_produce(KAFKA *kafka, const char *line, size_t len,
                          VSTR *topic, VSTR *key)
{
    json_error_t error;
    json_t *event = json_loadb(line, len, 0, &error);
    const char *kind;
    bool keyed;
    rd_kafka_resp_err_t err;

    /* The framework sends JSON objects only. */
    if (event == NULL || !json_is_object(event))
        msg_panic("%s: a batch line that is not a JSON object", __func__);
    kind = json_string_value(json_object_get(event, "kind"));
    kafka_topic(topic, kafka->topic, kind ? kind : "unknown");
    keyed = kafka_key(key, event);
    err = rd_kafka_producev(
        kafka->rk, RD_KAFKA_V_TOPIC(vstr_str(topic)),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE((void *) line, len),
        RD_KAFKA_V_KEY(keyed ? vstr_str(key) : NULL, keyed ? vstr_len(key) : 0),
        RD_KAFKA_V_END);
    json_decref(event);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        kafka_fail(kafka, rd_kafka_err2str(err));
    else
        kafka->waiting++;
}

/* kafka_send - produce the batch; kafka_wake finishes it */
static void kafka_send(void *state, const VSTR *lines, int count)
{
    KAFKA *kafka = state;
    const char *cp = vstr_str((VSTR *) lines);
    const char *end = cp + vstr_len((VSTR *) lines);
    VSTR *topic = vstr_alloc(100);
    VSTR *key = vstr_alloc(100);

    if (kafka->in_flight)
        msg_panic("%s: a batch is in flight", __func__);
    if (kafka->fatal)
        kafka_stop(kafka);
    if (kafka->rk == NULL)
        kafka_start(kafka);
    kafka->in_flight = true;
    kafka->waiting = 0;
    kafka->failed = 0;
    vstr_reset(kafka->why);
    while (cp < end && kafka->failed == 0) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));

        if (nl == NULL)
            msg_panic("%s: a batch line without its LF", __func__);
        kafka_produce(kafka, cp, (size_t) (nl - cp), topic, key);
        cp = nl + 1;
    }
    /* Nothing in flight (the first produce failed): no report will come
       to finish the batch, so finish it from the loop, not from here. */
    if (kafka->waiting == 0)
        event_active(kafka->done_ev, EV_TIMEOUT, 0);
    else if (event_add(kafka->tick_ev, &(struct timeval){1, 0}) < 0)
        msg_fatal("events: kafka: cannot add the queue timer");
    vstr_free(topic);
    vstr_free(key);
}

/* kafka_max_age - events_kafka_max_age */
static long long kafka_max_age(void *state)
{
    return ((KAFKA *) state)->max_age;
}

/* kafka_open - the producer of events_kafka_brokers */
static void *kafka_open(EXPORTER *exp, struct event_base *base,
                        const MAIL_CONF *conf)
{
    KAFKA *kafka = mycalloc(1, sizeof(*kafka));
    VSTR *probe = vstr_alloc(100);

    kafka->exp = exp;
    kafka->base = base;
    kafka->brokers = mystrdup(mail_conf_str(conf, "events_kafka_brokers"));
    kafka->topic = mystrdup(mail_conf_str(conf, "events_kafka_topic"));
    kafka->timeout = mail_conf_time(conf, "events_kafka_timeout");
    kafka->max_age = mail_conf_time(conf, "events_kafka_max_age");
    kafka->why = vstr_alloc(100);
    /* A topic Kafka refuses would fail every batch for a day: say so now. */
    kafka_topic(probe, kafka->topic, "received");
    if (vstr_len(probe) == 0 ||
        strspn(vstr_str(probe),
               "abcdefghijklmnopqrstuvwxyz"
               "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != vstr_len(probe) ||
        strlen(kafka->topic) > KAFKA_TOPIC_MAX)
        msg_fatal("events_kafka_topic = \"%s\": a Kafka topic is 1 to %d of "
                  "a-z A-Z 0-9 . _ - (and %%k for the event's kind)",
                  kafka->topic, KAFKA_TOPIC_MAX);
    vstr_free(probe);
    if (pipe2(kafka->wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        msg_fatal("events: kafka: pipe: %m");
    kafka->wake_ev = event_new(base, kafka->wake_pipe[0], EV_READ | EV_PERSIST,
                               kafka_wake, kafka);
    kafka->done_ev = evtimer_new(base, kafka_done_event, kafka);
    kafka->tick_ev = event_new(base, -1, EV_PERSIST, kafka_tick, kafka);
    if (kafka->wake_ev == NULL || kafka->done_ev == NULL ||
        kafka->tick_ev == NULL || event_add(kafka->wake_ev, NULL) < 0)
        msg_fatal("events: kafka: cannot watch the producer's queue");
    kafka_start(kafka);
    return kafka;
}

/* kafka_close - free (a batch in flight is abandoned) */
static void kafka_close(void *state)
{
    KAFKA *kafka = state;

    kafka_stop(kafka);
    event_free(kafka->wake_ev);
    event_free(kafka->done_ev);
    event_free(kafka->tick_ev);
    (void) close(kafka->wake_pipe[0]);
    (void) close(kafka->wake_pipe[1]);
    vstr_free(kafka->why);
    myfree(kafka->brokers);
    myfree(kafka->topic);
    myfree(kafka);
}

const EXPORTER_BACKEND kafka_backend = {
    .kind = "kafka",
    .open = kafka_open,
    .send = kafka_send,
    .close = kafka_close,
    .max_age = kafka_max_age,
};
