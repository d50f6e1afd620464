/*
 * master_unserved_test - unit tests for the warnings about daemons main.cf
 * asks for that master.cf does not run: one table of main.cf and
 * master.cf pairs, each with the warnings it must give (and only those)
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"
#include "mail_conf.h"
#include "master_cf.h"
#include "master_unserved.h"
#include "testlib.h"
#include "vstr.h"

/* master.cf lines */
#define CF_SMTP "smtp inet n - n - - smtpd\n"
#define CF_METRICS "metrics unix n - n - 1 metrics\n"
#define CF_API "api unix n - n - 1 api\n"
#define CF_EVENTS "events unix - - n - 1 events\n"

/* Exporters off: the events daemon would have nothing to export. */
#define MAIN_NO_EXPORTS                                                        \
    "events_index_enable = no\nsuppression_feedback_enable = no\n"

typedef struct UNSERVED_CASE {
    const char *label;
    const char *main_cf;
    const char *master_cf;
    /* each expected warning: a text it must hold, and one it must not
       (NULL: none); the rest of the slots NULL */
    const char *want[3];
    const char *never;
} UNSERVED_CASE;

/* clang-format off */
static const UNSERVED_CASE unserved_cases[] = {
    {"all served",
     "metrics_listen = 127.0.0.1:9100\napi_listen = 127.0.0.1:8080\n",
     CF_SMTP CF_METRICS CF_API CF_EVENTS, {NULL}, NULL},
    {"nothing asked, nothing run",
     MAIN_NO_EXPORTS, CF_SMTP, {NULL}, NULL},
    {"metrics_listen without metrics",
     "metrics_listen = 127.0.0.1:9100\n", CF_SMTP CF_EVENTS,
     {"metrics_listen = 127.0.0.1:9100, but master.cf runs no metrics "
      "service"}, NULL},
    {"api_listen without api",
     "api_listen = [::1]:8080\n", CF_SMTP CF_METRICS CF_EVENTS,
     {"api_listen = [::1]:8080, but master.cf runs no api service"}, NULL},
    {"both listens, neither daemon",
     "metrics_listen = 127.0.0.1:9100\napi_listen = 127.0.0.1:8080\n",
     CF_SMTP CF_EVENTS,
     {"but master.cf runs no metrics service",
      "but master.cf runs no api service"}, NULL},
    {"default exporters (index, suppress) without events",
     "", CF_SMTP,
     {"master.cf runs no events service: no event reaches the exporters"},
     NULL},
    {"only the metrics daemon's passive reader: no events needed",
     MAIN_NO_EXPORTS "metrics_listen = 127.0.0.1:9100\n",
     CF_SMTP CF_METRICS, {NULL}, NULL},
    {"a webhook without events: named without its secrets",
     MAIN_NO_EXPORTS
     "events_webhook_urls = https://user:secret@hook.test/in?token=t0k\n",
     CF_SMTP, {"(webhook https://hook.test/in?..."}, "secret"},
    {"daemons under other service names, by command path",
     "metrics_listen = 127.0.0.1:9100\napi_listen = 127.0.0.1:8080\n",
     CF_SMTP "stats unix n - n - 1 /opt/sluice/libexec/metrics\n"
     "rest unix n - n - 1 /opt/sluice/libexec/api -v\n"
     "journal unix - - n - 1 /opt/sluice/libexec/events\n", {NULL}, NULL},
    {"a service named like the daemon runs it (a wrapper)",
     "api_listen = 127.0.0.1:8080\n",
     CF_SMTP CF_EVENTS "api unix n - n - 1 valgrind\n", {NULL}, NULL},
};
/* clang-format on */

/* test_table - each case gives exactly its warnings */
static void test_table(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("unserved");
    VSTR *why = vstr_alloc(100);

    assert_non_null(dir);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(unserved_cases); i++) {
        const UNSERVED_CASE *uc = unserved_cases + i;
        ARGV *warnings = argv_alloc(2);
        MAIL_CONF *conf;
        MASTER_CF *cf;
        size_t want = 0;

        (void) testlib_write(dir, "main.cf", uc->main_cf);
        if ((conf = mail_conf_read(dir->path, why)) == NULL)
            fail_msg("%s: main.cf: %s", uc->label, vstr_str(why));
        if ((cf = master_cf_parse(uc->master_cf, "master.cf", 1, why)) == NULL)
            fail_msg("%s: master.cf: %s", uc->label, vstr_str(why));
        master_unserved(cf, conf, warnings);
        while (want < SLUICE_ARRAY_LEN(uc->want) && uc->want[want] != NULL)
            want++;
        if (warnings->argc != want)
            fail_msg("%s: %zu warnings, want %zu (first: %s)", uc->label,
                     warnings->argc, want,
                     warnings->argc ? warnings->argv[0] : "none");
        for (size_t w = 0; w < want; w++) {
            if (strstr(warnings->argv[w], uc->want[w]) == NULL)
                fail_msg("%s: warning \"%s\" lacks \"%s\"", uc->label,
                         warnings->argv[w], uc->want[w]);
            if (uc->never != NULL && strstr(warnings->argv[w], uc->never))
                fail_msg("%s: warning \"%s\" shows \"%s\"", uc->label,
                         warnings->argv[w], uc->never);
        }
        argv_free(warnings);
        master_cf_free(cf);
        mail_conf_free(conf);
    }
    vstr_free(why);
    assert_int_equal(testlib_dir_remove(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
