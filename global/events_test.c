/*
 * events_test - unit tests for the event journal: formatting, segment
 * names and rolling, torn-tail detection and repair, and the writer in a
 * fresh temp directory (main.cf written there)
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <setjmp.h>
#include <cmocka.h>

#include <glob.h>

#include <jansson.h>

#include "events.h"
#include "mail_conf.h"
#include "mymalloc.h"
#include "testlib.h"
#include "vstr.h"

/* test_setup - a fresh directory, the log captured there */
static int test_setup(void **state)
{
    TESTLIB_DIR *tmp = testlib_dir_create("events_test");

    if (tmp == NULL || testlib_log_capture(tmp, "events_test") < 0)
        return -1;
    *state = tmp;
    return 0;
}

/* test_teardown - remove the temp directory */
static int test_teardown(void **state)
{
    return testlib_dir_remove(*state);
}

static void test_format_received(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 1796443200,
                          .tv_usec = 7}; /* 2026-12-05T04:00:00Z */
    EVENT event;

    events_event_init(&event, EVENTS_RECEIVED, "1MH73QWC9X200WSJ", "0");
    event.sender = "alice@src.test";
    event.size = 249;
    event.rcpt_count = 2;
    event.client = "unknown[127.0.0.1]";
    assert_int_equal(events_format(line, &event, "node1.test", &now, why), 0);
    assert_string_equal(
        vstr_str(line),
        "{\"id\":\"node1.test/1MH73QWC9X200WSJ/received/0\","
        "\"ts\":\"2026-12-05T04:00:00.000007Z\",\"kind\":\"received\","
        "\"qid\":\"1MH73QWC9X200WSJ\",\"recipient\":null,"
        "\"sender\":\"alice@src.test\",\"size\":249,\"rcpt_count\":2,"
        "\"client\":\"unknown[127.0.0.1]\",\"tenant\":null,\"pool\":null,"
        "\"source_ip\":null,\"provider\":null,\"trace_id\":null}\n");
    vstr_free(line);
    vstr_free(why);
}

/* A batch recipient never queued: the batch's ID as its queue ID, and
   as "batch" */
static void test_format_rejected(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 0, .tv_usec = 1};
    EVENT event;

    events_event_init(&event, EVENTS_REJECTED, "1MH73QWC9X200WSJ", "3");
    event.recipient = "p3@rcpt.test";
    event.tenant = "acme";
    event.batch = "1MH73QWC9X200WSJ";
    event.reply = "413 message_too_large: too big";
    event.hard = 1;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_string_equal(
        vstr_str(line),
        "{\"id\":\"n/1MH73QWC9X200WSJ/rejected/3\","
        "\"ts\":\"1970-01-01T00:00:00.000001Z\",\"kind\":\"rejected\","
        "\"qid\":\"1MH73QWC9X200WSJ\",\"recipient\":\"p3@rcpt.test\","
        "\"reply\":\"413 message_too_large: too big\",\"hard\":true,"
        "\"batch\":\"1MH73QWC9X200WSJ\",\"tenant\":\"acme\",\"pool\":null,"
        "\"source_ip\":null,\"provider\":null,\"trace_id\":null}\n");
    vstr_free(line);
    vstr_free(why);
}

static void test_format_delivered_escapes(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 0, .tv_usec = 999999};
    EVENT event;

    /* Appended: a line already there stays. */
    vstr_cpy(line, "x\n");
    events_event_init(&event, EVENTS_DELIVERED, "Q", "123");
    event.recipient = "b\"o\\b@dest.test";
    event.dsn = "2.0.0";
    event.reply = "250 ok\r\nnext \xff byte";
    event.relay = "mx[127.0.0.1]:25";
    event.delay = 1.23456;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_string_equal(
        vstr_str(line),
        "x\n{\"id\":\"n/Q/delivered/123\",\"ts\":\"1970-01-01T00:00:00.999999Z\","
        "\"kind\":\"delivered\",\"qid\":\"Q\","
        "\"recipient\":\"b\\\"o\\\\b@dest.test\",\"relay\":\"mx[127.0.0.1]:25\","
        "\"dsn\":\"2.0.0\",\"reply\":\"250 ok\\r\\nnext ? byte\","
        "\"delay\":1.23456,\"tenant\":null,\"pool\":null,"
        "\"source_ip\":null,\"provider\":null,\"trace_id\":null,"
        "\"tls\":null}\n");
    /* Exactly one LF per event: the reply's CR LF became escapes. */
    assert_int_equal(strchr(vstr_str(line) + 2, '\n') - (vstr_str(line) + 2),
                     (long) vstr_len(line) - 3);
    vstr_free(line);
    vstr_free(why);
}

/* Reals are kept to the microsecond however large: ts - delay is the
   arrival (events.h), also for a message that waited minutes (six
   significant digits made 612.345678 s 612.346); written as jansson's
   JSON_REAL_PRECISION(15) writes them (1.2e-5, 3.0). */
static void test_format_reals_microseconds(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 0, .tv_usec = 1};
    EVENT event;

    events_event_init(&event, EVENTS_DELIVERED, "Q", "1");
    event.delay = 612.3456784;
    event.attempt_seconds = 12.000001;
    event.connect_seconds = 0.000012;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(vstr_str(line), ",\"delay\":612.345678,"));
    assert_non_null(strstr(vstr_str(line), ",\"attempt_seconds\":12.000001,"));
    assert_non_null(strstr(vstr_str(line), ",\"connect_seconds\":1.2e-5}"));
    vstr_reset(line);
    event.delay = 3;
    event.attempt_seconds = 0;
    event.connect_seconds = 86400.5;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(vstr_str(line), ",\"delay\":3.0,"));
    assert_non_null(strstr(vstr_str(line), ",\"attempt_seconds\":0.0,"));
    assert_non_null(strstr(vstr_str(line), ",\"connect_seconds\":86400.5}"));
    vstr_free(line);
    vstr_free(why);
}

/* test_random_text - n random bytes (never NUL) into buf, drawn from
   pieces that exercise escaping: controls, quotes, backslashes, UTF-8 of
   every length, and bytes that are not UTF-8 */
static void test_random_text(char *buf, size_t size, unsigned *seed)
{
    static const char *const pieces[] = {"a",
                                         "Z",
                                         "@",
                                         ".",
                                         " ",
                                         "\"",
                                         "\\",
                                         "/",
                                         "\b",
                                         "\f",
                                         "\n",
                                         "\r",
                                         "\t",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80",
                                         "\xef\xbf\xbf",
                                         "\xff",
                                         "\xc0\xaf",
                                         "\xed\xa0\x80",
                                         "\xe2\x82",
                                         "\xf4\x90\x80\x80",
                                         "\x80",
                                         "<x@y.test>"};
    size_t len = 0;
    int n = (int) (rand_r(seed) % 12);

    for (int i = 0; i < n; i++) {
        const char *piece = pieces[(size_t) rand_r(seed) %
                                   (sizeof(pieces) / sizeof(pieces[0]))];

        if (len + strlen(piece) + 1 > size)
            break;
        memcpy(buf + len, piece, strlen(piece));
        len += strlen(piece);
    }
    buf[len] = 0;
}

/* test_as_written - text as the journal must hold it: itself when it is
   UTF-8, else every byte >= 0x80 made '?' */
static void test_as_written(const char *text, VSTR *out)
{
    json_t *str = json_string(text);

    vstr_cpy(out, text);
    if (str == NULL)
        for (char *cp = vstr_str(out); *cp; cp++)
            if ((unsigned char) *cp >= 0x80)
                *cp = '?';
    json_decref(str);
}

/* The hand-written lines are jansson's: each parses, its strings are the
   event's (or their '?' copies), and json_dumps with the flags the
   journal was written with gives back the same bytes. */
static void test_format_as_jansson(void **state)
{
    static const char *const kinds[] = {EVENTS_RECEIVED, EVENTS_DELIVERED,
                                        EVENTS_DEFERRED, EVENTS_BOUNCED};
    VSTR *line = vstr_alloc(100);
    VSTR *why = vstr_alloc(10);
    VSTR *want = vstr_alloc(100);
    struct timeval now = {.tv_sec = 1796443200, .tv_usec = 42};
    unsigned seed = 14;
    char rcpt[64], reply[64], client[64], qid[32], tls[32];

    for (int round = 0; round < 3000; round++) {
        EVENT event;
        json_t *obj;
        char *dump;

        test_random_text(rcpt, sizeof(rcpt), &seed);
        test_random_text(reply, sizeof(reply), &seed);
        test_random_text(client, sizeof(client), &seed);
        test_random_text(qid, sizeof(qid), &seed);
        test_random_text(tls, sizeof(tls), &seed);
        events_event_init(&event, kinds[round % 4], qid, "7");
        event.recipient = round % 5 ? rcpt : NULL;
        event.reply = reply;
        event.client = client;
        event.size = round;
        event.hard = round % 3 - 1;
        event.tls_version = round % 2 ? tls : NULL;
        event.tls_cipher = reply;
        event.tags = round % 7 ? NULL : "[\"t\\u00e9\",1,{\"k\":null},0.5]";
        /* whole microseconds up to about 35 minutes, some tiny */
        event.delay = (double) ((unsigned) rand_r(&seed) % 10000000000ULL) /
                      (round % 3 ? 1e6 : 1e12);
        /* ... and across the range written by hand (100 us to 10^9 s)
           and past it */
        event.attempt_seconds =
            round % 4 ? (double) (rand_r(&seed) % 100000) / 1e6
                      : (double) ((long long) rand_r(&seed) * rand_r(&seed) %
                                  2000000000000000LL) /
                            1e6;
        vstr_reset(line);
        assert_int_equal(events_format(line, &event, "n\xc3\xa9", &now, why),
                         0);
        obj = json_loadb(vstr_str(line), vstr_len(line) - 1, 0, NULL);
        assert_non_null(obj);
        dump = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                   JSON_ENSURE_ASCII | JSON_REAL_PRECISION(15));
        assert_non_null(dump);
        vstr_cpy(want, dump);
        vstr_addch(want, '\n');
        assert_string_equal(vstr_str(line), vstr_str(want));
        test_as_written(reply, want);
        assert_string_equal(json_string_value(json_object_get(obj, "reply")),
                            vstr_str(want));
        test_as_written(client, want);
        assert_string_equal(json_string_value(json_object_get(obj, "client")),
                            vstr_str(want));
        test_as_written(qid, want);
        assert_string_equal(json_string_value(json_object_get(obj, "qid")),
                            vstr_str(want));
        if (event.recipient) {
            test_as_written(rcpt, want);
            assert_string_equal(
                json_string_value(json_object_get(obj, "recipient")),
                vstr_str(want));
        } else {
            assert_true(json_is_null(json_object_get(obj, "recipient")));
        }
        free(dump);
        json_decref(obj);
    }
    vstr_free(line);
    vstr_free(why);
    vstr_free(want);
}

/* A bounce's class: category a string, hard and async JSON booleans;
   left out when not set */
static void test_format_bounced_class(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 0, .tv_usec = 0};
    EVENT event;

    events_event_init(&event, EVENTS_BOUNCED, "Q", "7");
    event.dsn = "5.1.1";
    event.category = "user_unknown";
    event.hard = 1;
    event.async = 0;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(vstr_str(line),
                           "\"dsn\":\"5.1.1\",\"category\":\"user_unknown\","
                           "\"hard\":true,\"async\":false,"));
    vstr_reset(line);
    events_event_init(&event, EVENTS_DEFERRED, "Q", "7.1");
    event.category = "mailbox_full";
    event.hard = 0;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(vstr_str(line),
                           "\"category\":\"mailbox_full\",\"hard\":false,"));
    assert_null(strstr(vstr_str(line), "async"));
    vstr_reset(line);
    events_event_init(&event, EVENTS_DELIVERED, "Q", "7");
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_null(strstr(vstr_str(line), "category"));
    assert_null(strstr(vstr_str(line), "hard"));
    vstr_free(line);
    vstr_free(why);
}

/* queued_at: a UTC time as ts (microseconds), attempt a number; both
   left out when not set */
static void test_format_queued_at(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 1700000100, .tv_usec = 5};
    EVENT event;

    events_event_init(&event, EVENTS_DEFERRED, "Q", "7.1");
    event.queued_usec = 1700000040LL * 1000000 + 123456;
    event.attempt = 2;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(
        strstr(vstr_str(line), "\"ts\":\"2023-11-14T22:15:00.000005Z\""));
    assert_non_null(strstr(vstr_str(line),
                           ",\"queued_at\":\"2023-11-14T22:14:00.123456Z\","
                           "\"attempt\":2"));
    vstr_reset(line);
    event.queued_usec = 0; /* the epoch is a time */
    event.attempt = -1;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(vstr_str(line),
                           "\"queued_at\":\"1970-01-01T00:00:00.000000Z\""));
    assert_null(strstr(vstr_str(line), "attempt"));
    vstr_reset(line);
    events_event_init(&event, EVENTS_DELIVERED, "Q", "7");
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_null(strstr(vstr_str(line), "queued_at"));
    assert_null(strstr(vstr_str(line), "attempt"));
    vstr_free(line);
    vstr_free(why);
}

/* committed_at: a UTC time as ts (microseconds), left out when not set */
static void test_format_committed_at(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 1700000100, .tv_usec = 5};
    EVENT event;

    events_event_init(&event, EVENTS_RECEIVED, "Q", "0");
    event.committed_usec = 1700000099LL * 1000000 + 654321;
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(vstr_str(line),
                           "\"committed_at\":\"2023-11-14T22:14:59.654321Z\""));
    vstr_reset(line);
    events_event_init(&event, EVENTS_RECEIVED, "Q", "0");
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_null(strstr(vstr_str(line), "committed_at"));
    vstr_free(line);
    vstr_free(why);
}

/* The message's tenant, pool, provider and source IP as strings; tags and
   metadata as the JSON they are, left out when they are not JSON of their
   kind; trace_id stays null. */
static void test_format_tenant_fields(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 0, .tv_usec = 0};
    EVENT event;

    events_event_init(&event, EVENTS_DELIVERED, "Q", "9");
    event.recipient = "r@d.test";
    event.tenant = "acme";
    event.pool = "bulk";
    event.source_ip = "127.0.0.2";
    event.provider = "gmail";
    event.tags = "[\"welcome\",\"a b\"]";
    event.metadata = "{\"user\":\"42\"}";
    event.tls_version = "TLSv1.3";
    event.tls_cipher = "TLS_AES_256_GCM_SHA384";
    event.tls_level = "Verified";
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_string_equal(
        vstr_str(line),
        "{\"id\":\"n/Q/delivered/9\",\"ts\":\"1970-01-01T00:00:00.000000Z\","
        "\"kind\":\"delivered\",\"qid\":\"Q\",\"recipient\":\"r@d.test\","
        "\"tenant\":\"acme\",\"pool\":\"bulk\",\"source_ip\":\"127.0.0.2\","
        "\"provider\":\"gmail\",\"trace_id\":null,"
        "\"tls\":{\"version\":\"TLSv1.3\",\"cipher\":"
        "\"TLS_AES_256_GCM_SHA384\",\"level\":\"Verified\"},"
        "\"tags\":[\"welcome\",\"a b\"],\"metadata\":{\"user\":\"42\"}}\n");
    vstr_reset(line);
    event.tags = "{\"not\":\"an array\"}";
    event.metadata = "[broken";
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_null(strstr(vstr_str(line), "tags"));
    assert_null(strstr(vstr_str(line), "metadata"));
    vstr_free(line);
    vstr_free(why);
}

/* The message's traceparent (the queue file's, global/trace.h) fills
   trace_id and is kept whole; one that is not valid leaves trace_id null
   and is left out. */
static void test_format_trace(void **state)
{
    VSTR *line = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    struct timeval now = {.tv_sec = 0, .tv_usec = 0};
    EVENT event;

    events_event_init(&event, EVENTS_RECEIVED, "Q", "0");
    event.traceparent =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(
        vstr_str(line), "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
                        "\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-"
                        "0000000000000000-01\""));
    vstr_reset(line);
    event.traceparent = "00-zz-0000000000000000-01";
    assert_int_equal(events_format(line, &event, "n", &now, why), 0);
    assert_non_null(strstr(vstr_str(line), "\"trace_id\":null"));
    assert_null(strstr(vstr_str(line), "traceparent"));
    vstr_free(line);
    vstr_free(why);
}

static void test_segment_names(void **state)
{
    VSTR *name = vstr_alloc(10);
    struct timeval start = {.tv_sec = 1796443200, .tv_usec = 42};

    events_segment_name(name, &start, 4321, "qmgr");
    assert_string_equal(vstr_str(name),
                        "20261205T040000.000042Z-4321-qmgr.jsonl");
    assert_int_equal(events_segment_pid(vstr_str(name)), 4321);
    /* Names sort by start time. */
    vstr_reset(name);
    start.tv_usec = 43;
    events_segment_name(name, &start, 1, "cleanup");
    assert_true(
        strcmp("20261205T040000.000042Z-4321-qmgr.jsonl", vstr_str(name)) < 0);
    assert_int_equal(events_segment_pid("20261204T120000.000042Z-1-x.jsonl"),
                     1);
    assert_int_equal(events_segment_pid("20261204T120000.000042Z-1-x.json"),
                     -1);
    assert_int_equal(events_segment_pid("20261204T120000.000042Z--x.jsonl"),
                     -1);
    assert_int_equal(events_segment_pid("20261204T120000.000042Z-0-x.jsonl"),
                     -1);
    assert_int_equal(events_segment_pid("20261204T120000.000042Z-12x.jsonl"),
                     -1);
    assert_int_equal(
        events_segment_pid("20261204T120000.000042Z-99999999999-x.jsonl"), -1);
    assert_int_equal(events_segment_pid(".jsonl"), -1);
    assert_int_equal(events_segment_pid("lock"), -1);
    vstr_free(name);
}

static void test_need_roll(void **state)
{
    /* Empty: takes anything. */
    assert_false(events_need_roll(0, 100, 100000, 1 << 30, 4096, 60));
    assert_false(events_need_roll(100, 100, 110, 3996, 4096, 60));
    assert_true(events_need_roll(100, 100, 110, 3997, 4096, 60));
    assert_true(events_need_roll(100, 100, 160, 1, 4096, 60));
    assert_false(events_need_roll(100, 100, 159, 1, 4096, 60));
    /* No overflow near the top. */
    assert_true(events_need_roll(LLONG_MAX - 1, 0, 0, LLONG_MAX, LLONG_MAX, 0));
}

static void test_whole_length(void **state)
{
    assert_int_equal(events_whole_length("", 0), 0);
    assert_int_equal(events_whole_length("abc", 3), 0);
    assert_int_equal(events_whole_length("a\nbc", 4), 2);
    assert_int_equal(events_whole_length("a\nbc\n", 5), 5);
    assert_int_equal(events_whole_length("\n", 1), 1);
}

/* test_conf - main.cf in tmp with the journal in tmp/ev */
static MAIL_CONF *test_conf(TESTLIB_DIR *tmp, const char *extra)
{
    VSTR *text = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf;

    vstr_sprintf(text,
                 "queue_directory = %s\nevents_directory = %s/ev\n"
                 "myhostname = n.test\n%s",
                 tmp->path, tmp->path, extra);
    testlib_write(tmp, "main.cf", vstr_str(text));
    conf = mail_conf_read(tmp->path, why);
    if (conf == NULL)
        fail_msg("%s", vstr_str(why));
    vstr_free(text);
    vstr_free(why);
    return conf;
}

/* test_segments - the segment files in tmp/ev */
static size_t test_segments(TESTLIB_DIR *tmp, glob_t *found)
{
    VSTR *pattern = vstr_alloc(100);

    vstr_sprintf(pattern, "%s/ev/*" EVENTS_SUFFIX, tmp->path);
    memset(found, 0, sizeof(*found));
    (void) glob(vstr_str(pattern), 0, NULL, found);
    vstr_free(pattern);
    return found->gl_pathc;
}

static void test_writer_rolls(void **state)
{
    TESTLIB_DIR *tmp = *state;
    MAIL_CONF *conf = test_conf(tmp, "events_segment_size = 4096\n");
    EVENTS *events = events_open(conf, "unit");
    VSTR *why = vstr_alloc(10);
    VSTR *seq = vstr_alloc(10);
    EVENT event;
    glob_t found;
    size_t total = 0;

    assert_non_null(events);
    /* Nothing pending: nothing made. */
    assert_int_equal(events_flush(events, why), 0);
    assert_int_equal(test_segments(tmp, &found), 0);
    globfree(&found);
    for (int i = 0; i < 40; i++) {
        vstr_sprintf(seq, "%d", i);
        events_event_init(&event, EVENTS_DELIVERED, "QQQQ", vstr_str(seq));
        event.recipient = "someone@dest.test";
        event.reply = "250 2.0.0 a reply long enough to fill a segment soon";
        assert_int_equal(events_emit(events, &event), 0);
    }
    /* About 300 bytes each: several 4k segments, each of whole lines,
       none above the limit, every event once. */
    assert_true(test_segments(tmp, &found) >= 3);
    for (size_t i = 0; i < found.gl_pathc; i++) {
        size_t len;
        char *data = testlib_read(found.gl_pathv[i], &len);

        assert_non_null(data);
        assert_true(len <= 4096);
        assert_int_equal(events_whole_length(data, len), len);
        for (char *cp = data; (cp = strstr(cp, "\"kind\":\"delivered\"")); cp++)
            total++;
        myfree(data);
    }
    assert_int_equal(total, 40);
    globfree(&found);
    events_close(events);
    vstr_free(why);
    vstr_free(seq);
    mail_conf_free(conf);
}

/* An event given the arrival: ts - delay is the arrival to the
   microsecond (the receive span's start, events/otel.c), delay taken from
   ts's own clock reading; an arrival in the future is a delay of 0. */
static void test_arrival_delay(void **state)
{
    TESTLIB_DIR *tmp = *state;
    MAIL_CONF *conf = test_conf(tmp, "");
    EVENTS *events = events_open(conf, "unit");
    struct timeval tv;
    long long arrival[2];
    EVENT event;
    glob_t found;
    size_t len;
    char *data;
    char *cp;

    assert_non_null(events);
    gettimeofday(&tv, NULL);
    arrival[0] = (long long) tv.tv_sec * 1000000 + tv.tv_usec - 1000339;
    arrival[1] = arrival[0] + 3600000000LL;
    for (int i = 0; i < 2; i++) {
        events_event_init(&event, EVENTS_RECEIVED, "QQQQ", i ? "1" : "0");
        event.arrival_usec = arrival[i];
        event.delay = 99; /* replaced */
        assert_int_equal(events_emit(events, &event), 0);
    }
    assert_int_equal(test_segments(tmp, &found), 1);
    data = testlib_read(found.gl_pathv[0], &len);
    assert_non_null(data);
    cp = data;
    for (int i = 0; i < 2; i++) {
        struct tm tm = {0};
        long usec;
        double delay;
        char *ts = strstr(cp, "\"ts\":\"");
        char *dp = strstr(cp, "\"delay\":");

        assert_non_null(ts);
        assert_non_null(dp);
        assert_int_equal(sscanf(ts + 6, "%4d-%2d-%2dT%2d:%2d:%2d.%6ldZ",
                                &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                                &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &usec),
                         7);
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        delay = strtod(dp + 8, NULL);
        if (i == 0)
            assert_int_equal((long long) timegm(&tm) * 1000000 + usec -
                                 (long long) (delay * 1e6 + 0.5),
                             arrival[0]);
        else
            assert_true(delay == 0);
        cp = strchr(dp, '\n');
        assert_non_null(cp);
    }
    myfree(data);
    globfree(&found);
    events_close(events);
    mail_conf_free(conf);
}

static void test_disabled(void **state)
{
    TESTLIB_DIR *tmp = *state;
    MAIL_CONF *conf = test_conf(tmp, "events_enable = no\n");
    EVENT event;

    assert_null(events_open(conf, "unit"));
    /* Every call takes NULL: nothing is written. */
    events_event_init(&event, EVENTS_RECEIVED, "Q", "0");
    assert_int_equal(events_emit(NULL, &event), 0);
    assert_int_equal(events_flush(NULL, NULL), 0);
    assert_null(events_close(NULL));
    mail_conf_free(conf);
}

/* test_add_n - add n delivered events (about 300 bytes each) */
static void test_add_n(EVENTS *events, int n)
{
    VSTR *seq = vstr_alloc(10);
    EVENT event;

    for (int i = 0; i < n; i++) {
        vstr_sprintf(seq, "%d", i);
        events_event_init(&event, EVENTS_DELIVERED, "QQQQ", vstr_str(seq));
        event.recipient = "someone@dest.test";
        event.reply = "250 2.0.0 a reply long enough to fill a segment soon";
        events_add(events, &event);
    }
    vstr_free(seq);
}

/* test_count - delivered events in the segments of tmp/ev */
static size_t test_count(TESTLIB_DIR *tmp)
{
    glob_t found;
    size_t total = 0;

    test_segments(tmp, &found);
    for (size_t i = 0; i < found.gl_pathc; i++) {
        size_t len;
        char *data = testlib_read(found.gl_pathv[i], &len);

        assert_non_null(data);
        for (char *cp = data; (cp = strstr(cp, "\"kind\":\"delivered\"")); cp++)
            total++;
        myfree(data);
    }
    globfree(&found);
    return total;
}

/* A write that fails (EFBIG past RLIMIT_FSIZE, which binds root too):
   a retaining writer keeps the batch and puts up the stall mark, which
   events_check heeds, until a flush writes it; a plain one drops it and
   puts up no mark. */
static void test_retain_and_stall_mark(void **state)
{
    TESTLIB_DIR *tmp = *state;
    MAIL_CONF *conf = test_conf(tmp, "events_minfree = 0\n");
    EVENTS *events = events_open(conf, "unit");
    EVENTS *plain = events_open(conf, "plain");
    VSTR *why = vstr_alloc(10);
    VSTR *mark = vstr_alloc(10);
    struct rlimit old;
    struct rlimit small;
    struct stat st;

    vstr_sprintf(mark, "%s/ev/%s", tmp->path, EVENTS_STALL_MARK);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    events_retain(events);
    test_add_n(events, 1);
    assert_int_equal(events_flush(events, why), 0);
    assert_int_equal(events_check(events, why), 0);
    small = old;
    small.rlim_cur = 1000;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    test_add_n(plain, 5);
    assert_int_equal(events_flush(plain, why), -1);
    assert_int_equal(stat(vstr_str(mark), &st), -1);
    test_add_n(events, 5);
    assert_int_equal(events_flush(events, why), -1);
    assert_non_null(strstr(vstr_str(why), "File too large"));
    assert_int_equal(stat(vstr_str(mark), &st), 0);
    assert_int_equal(events_check(plain, why), -1);
    assert_non_null(strstr(vstr_str(why), "could not be written"));
    /* Still failing: still pending (nothing of it in the journal). */
    assert_int_equal(events_flush(events, why), -1);
    assert_int_equal(test_count(tmp), 1);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    /* The retry writes the batch kept, once; the mark goes. */
    assert_int_equal(events_flush(events, why), 0);
    assert_int_equal(test_count(tmp), 6);
    assert_int_equal(stat(vstr_str(mark), &st), -1);
    assert_int_equal(events_check(plain, why), 0);
    /* The plain writer's batch was dropped: its next flush has nothing. */
    assert_int_equal(events_flush(plain, why), 0);
    assert_int_equal(test_count(tmp), 6);
    events_close(events);
    events_close(plain);
    mail_conf_free(conf);
    /* events_minfree above what any disk has free: refused. */
    conf = test_conf(tmp, "events_minfree = 1000000g\n");
    events = events_open(conf, "unit");
    assert_int_equal(events_check(events, why), -1);
    assert_non_null(strstr(vstr_str(why), "not enough free space"));
    assert_int_equal(events_check(NULL, why), 0);
    events_close(events);
    mail_conf_free(conf);
    vstr_free(why);
    vstr_free(mark);
}

/* Two writers repairing at once: the second waits for the first and
   finds the tail cut (it cut and logged a second time before). The
   parent holds the segment's lock as a first repairer would, cuts the
   tail, and lets go; the child's repair then has nothing to cut. */
static void test_repair_serialized(void **state)
{
    TESTLIB_DIR *tmp = *state;
    const char *seg = "ev/20261204T120000.000001Z-99999999-qmgr.jsonl";
    char *path;
    int status;
    pid_t pid;
    int fd;

    assert_int_equal(mkdir(testlib_path(tmp, "ev"), 0700), 0);
    testlib_write(tmp, seg, "{\"a\":1}\n{\"c\":");
    path = mystrdup(testlib_path(tmp, seg));
    assert_true((fd = open(path, O_RDWR)) >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    if ((pid = fork()) == 0)
        _exit(events_repair_file(path) == 0 ? 0 : 1);
    assert_true(pid > 0);
    sleep(1); /* the child is at the lock (or, unlocked, done) */
    assert_int_equal(ftruncate(fd, 8), 0);
    assert_int_equal(flock(fd, LOCK_UN), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    (void) close(fd);
    myfree(path);
}

static void test_repair(void **state)
{
    TESTLIB_DIR *tmp = *state;
    VSTR *path = vstr_alloc(100);
    MAIL_CONF *conf;
    EVENTS *events;
    char *data;
    size_t len;
    /* A pid nobody has: above the usual pid_max. */
    const char *dead = "ev/20261204T120000.000001Z-99999999-qmgr.jsonl";
    const char *live = "ev/20261204T120000.000001Z-1-init.jsonl";
    const char *whole = "ev/20261204T120000.000002Z-99999998-qmgr.jsonl";

    assert_int_equal(mkdir(testlib_path(tmp, "ev"), 0700), 0);
    testlib_write(tmp, dead, "{\"a\":1}\n{\"b\":2}\n{\"c\":");
    testlib_write(tmp, live, "{\"a\":1}\n{\"b\":");
    testlib_write(tmp, whole, "{\"a\":1}\n");
    testlib_write(tmp, "ev/notes.txt", "no LF");
    conf = test_conf(tmp, "");
    /* events_open repairs. */
    events = events_open(conf, "unit");
    assert_non_null(events);
    assert_true(testlib_log_has(tmp, "torn last event (5 bytes) cut at offset "
                                     "16"));
    data = testlib_read(testlib_path(tmp, dead), &len);
    assert_string_equal(data, "{\"a\":1}\n{\"b\":2}\n");
    myfree(data);
    /* A live writer's segment and other files are left alone. */
    data = testlib_read(testlib_path(tmp, live), &len);
    assert_string_equal(data, "{\"a\":1}\n{\"b\":");
    myfree(data);
    data = testlib_read(testlib_path(tmp, "ev/notes.txt"), &len);
    assert_string_equal(data, "no LF");
    myfree(data);
    /* Once whole, nothing more to do. */
    assert_int_equal(events_repair(testlib_path(tmp, "ev")), 0);
    assert_false(testlib_log_has(tmp, "torn"));
    /* A segment of one torn line only is cut to nothing. */
    testlib_write(tmp, dead, "{\"c\":");
    assert_int_equal(events_repair(testlib_path(tmp, "ev")), 1);
    data = testlib_read(testlib_path(tmp, dead), &len);
    assert_int_equal(len, 0);
    myfree(data);
    events_close(events);
    mail_conf_free(conf);
    vstr_free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_received),
        cmocka_unit_test(test_format_rejected),
        cmocka_unit_test(test_format_delivered_escapes),
        cmocka_unit_test(test_format_bounced_class),
        cmocka_unit_test(test_format_reals_microseconds),
        cmocka_unit_test(test_format_as_jansson),
        cmocka_unit_test(test_format_queued_at),
        cmocka_unit_test_setup_teardown(test_arrival_delay, test_setup,
                                        test_teardown),
        cmocka_unit_test(test_format_committed_at),
        cmocka_unit_test(test_format_tenant_fields),
        cmocka_unit_test(test_format_trace),
        cmocka_unit_test(test_segment_names),
        cmocka_unit_test(test_need_roll),
        cmocka_unit_test(test_whole_length),
        cmocka_unit_test_setup_teardown(test_writer_rolls, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_disabled, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_repair, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_repair_serialized, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_retain_and_stall_mark, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
