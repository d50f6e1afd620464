/*
 * events_export_test - unit tests for events_export_display: what logs
 * and `sluice events status` may show of an exporter's target
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "events.h"
#include "events_export.h"
#include "mail_conf.h"
#include "testlib.h"

/* check - target shows as want */
static void check(const char *target, const char *want)
{
    VSTR *out = vstr_alloc(10);

    events_export_display(out, target);
    if (strcmp(vstr_str(out), want) != 0)
        fail_msg("\"%s\" shows as \"%s\", not \"%s\"", target, vstr_str(out),
                 want);
    vstr_free(out);
}

static void test_userinfo_and_query_hidden(void **state)
{
    check("http://user:pw@127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook");
    check("https://user:p@ss@hooks.test/x?token=abc#frag",
          "https://hooks.test/x?...");
    check("https://token@hooks.test", "https://hooks.test");
    check("http://hooks.test/a@b", "http://hooks.test/a@b");
    check("http://hooks.test?k=v", "http://hooks.test?...");
    check("http://hooks.test/x#frag", "http://hooks.test/x");
}

static void test_other_targets_unchanged(void **state)
{
    check("/var/lib/sluice/stats.db", "/var/lib/sluice/stats.db");
    check("broker1:9092,broker2:9092/mail-events",
          "broker1:9092,broker2:9092/mail-events");
    check("", "");
}

static void test_route_parse(void **state)
{
    VSTR *sel = vstr_alloc(10);
    VSTR *url = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    assert_int_equal(
        events_export_route_parse(
            "tenant:acme+kind:bounced=http://h.test/x?a=b", sel, url, why),
        0);
    assert_string_equal(vstr_str(sel), "tenant:acme+kind:bounced");
    assert_string_equal(vstr_str(url), "http://h.test/x?a=b");
    assert_int_equal(
        events_export_route_parse("http://h.test/x", sel, url, why), -1);
    assert_int_equal(
        events_export_route_parse("kind:=http://h.test/", sel, url, why), -1);
    assert_int_equal(
        events_export_route_parse("kind:a+=http://h.test/", sel, url, why), -1);
    assert_int_equal(
        events_export_route_parse("pool:x=http://h.test/", sel, url, why), -1);
    assert_non_null(strstr(vstr_str(why), "\"pool:x\""));
    assert_int_equal(
        events_export_route_parse("kind:a=ftp://h/", sel, url, why), -1);
    assert_int_equal(events_export_route_parse("kind:a=", sel, url, why), -1);
    vstr_free(sel);
    vstr_free(url);
    vstr_free(why);
}

static void test_route_match(void **state)
{
    const char *routes = "kind:bounced tenant:acme+kind:delivered";

    assert_true(events_export_match(NULL, "received", NULL));
    assert_true(events_export_match(routes, "bounced", NULL));
    assert_true(events_export_match(routes, "bounced", "beta"));
    assert_true(events_export_match(routes, "delivered", "acme"));
    assert_false(events_export_match(routes, "delivered", "beta"));
    assert_false(events_export_match(routes, "delivered", NULL));
    assert_false(events_export_match(routes, "received", "acme"));
    /* exact names: no prefixes */
    assert_false(events_export_match("tenant:acme", "received", "acme2"));
    assert_false(events_export_match("tenant:acme2", "received", "acme"));
    assert_true(events_export_match("tenant:acme", "received", "acme"));
    assert_false(events_export_match("kind:bounce", "bounced", NULL));
}

/* test_removes - which kinds turn segment removal on */
static void test_removes(void **state)
{
    static const struct {
        const char *kind;
        bool removes;
        bool passive;
    } kinds[] = {
        {EVENTS_EXPORT_WEBHOOK, true, false},
        {EVENTS_EXPORT_KAFKA, true, false},
        {EVENTS_EXPORT_OTEL, true, false},
        {EVENTS_EXPORT_STATS, true, false},
        {EVENTS_EXPORT_INDEX, false, false},
        {EVENTS_EXPORT_SUPPRESS, false, false},
        {EVENTS_EXPORT_METRICS, false, true},
        {"unheard-of", false, false},
    };

    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        EVENTS_EXPORT exp = {.kind = (char *) kinds[i].kind};

        if (events_export_removes(&exp) != kinds[i].removes ||
            events_export_passive(&exp) != kinds[i].passive)
            fail_msg("%s: removes %d passive %d", kinds[i].kind,
                     events_export_removes(&exp), events_export_passive(&exp));
    }
}

/* test_suppress_routes - the suppression feed takes only the kinds it
   uses (bounced, complained, unsubscribed): every other line is passed
   over unparsed by the events daemon */
static void test_suppress_routes(void **state)
{
    TESTLIB_DIR *tmp = testlib_dir_create("events_export_test");
    VSTR *text = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    EVENTS_EXPORT_LIST *list;
    const EVENTS_EXPORT *feed = NULL;
    MAIL_CONF *conf;

    assert_non_null(tmp);
    vstr_sprintf(text, "queue_directory = %s\nmyhostname = n.test\n",
                 tmp->path);
    testlib_write(tmp, "main.cf", vstr_str(text));
    if ((conf = mail_conf_read(tmp->path, why)) == NULL)
        fail_msg("%s", vstr_str(why));
    list = events_export_list(conf);
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->exports[i].kind, EVENTS_EXPORT_SUPPRESS) == 0)
            feed = &list->exports[i];
    assert_non_null(feed);
    assert_true(events_export_match(feed->routes, EVENTS_BOUNCED, NULL));
    assert_true(events_export_match(feed->routes, EVENTS_COMPLAINED, "t"));
    assert_true(events_export_match(feed->routes, EVENTS_UNSUBSCRIBED, NULL));
    assert_false(events_export_match(feed->routes, EVENTS_DELIVERED, NULL));
    assert_false(events_export_match(feed->routes, EVENTS_RECEIVED, NULL));
    assert_false(events_export_match(feed->routes, EVENTS_DEFERRED, NULL));
    events_export_list_free(list);
    mail_conf_free(conf);
    vstr_free(text);
    vstr_free(why);
    testlib_dir_remove(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_userinfo_and_query_hidden),
        cmocka_unit_test(test_other_targets_unchanged),
        cmocka_unit_test(test_route_parse),
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_removes),
        cmocka_unit_test(test_suppress_routes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
