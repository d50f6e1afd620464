/*
 * deliver_log_test - the delivery log line: its fields in Postfix's order,
 * orig_to only when it differs, the four delays adding up, no negative
 * delay when the clocks disagree
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "deliver_log.h"
#include "vstr.h"

#define BASE 1700000000000000LL

/* check - the line for times given in microseconds after BASE */
static void check(const DELIVER_LOG *entry, long long arrival, long long active,
                  long long request, long long conn, long long now,
                  const char *want)
{
    DELIVER_TIMES times = {
        .arrival = deliver_log_usec(BASE + arrival),
        .active = deliver_log_usec(BASE + active),
        .request = deliver_log_usec(BASE + request),
        .conn = deliver_log_usec(BASE + conn),
        .now = deliver_log_usec(BASE + now),
    };
    VSTR *line = vstr_alloc(10);

    deliver_log_format(line, entry, &times);
    assert_string_equal(vstr_str(line), want);
    vstr_free(line);
}

static void test_line(void **state)
{
    DELIVER_LOG entry = {.qid = "0123456789ABCDEF",
                         .to = "a@b.test",
                         .orig_to = "A@B.test",
                         .relay = "mx.test[192.0.2.1]:25",
                         .dsn = "2.0.0",
                         .status = "sent",
                         .reason = "250 2.0.0 Ok"};

    check(&entry, 0, 1200000, 1210000, 1620000, 4720000,
          "to=<a@b.test>, relay=mx.test[192.0.2.1]:25, delay=4.7, "
          "delays=1.2/0.01/0.41/3.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)");
    entry.orig_to = "list@b.test";
    entry.relay = NULL;
    entry.dsn = "4.3.0";
    entry.status = "deferred";
    entry.reason = "mail transport unavailable";
    /* qmgr's own line: nothing after the request */
    check(&entry, 0, 20000000, 21000000, 21000000, 21000000,
          "to=<a@b.test>, orig_to=<list@b.test>, relay=none, delay=21, "
          "delays=20/1/0/0, dsn=4.3.0, status=deferred (mail transport "
          "unavailable)");
    /* a clock that went back: no negative delay, and they still add up */
    check(&entry, 5000000, 1000000, 4000000, 0, 6000000,
          "to=<a@b.test>, orig_to=<list@b.test>, relay=none, delay=1, "
          "delays=0/0/0/1, dsn=4.3.0, status=deferred (mail transport "
          "unavailable)");
    /* a failure's class: after the reason */
    entry.category = "transient_network";
    check(&entry, 0, 20000000, 21000000, 21000000, 21000000,
          "to=<a@b.test>, orig_to=<list@b.test>, relay=none, delay=21, "
          "delays=20/1/0/0, dsn=4.3.0, status=deferred (mail transport "
          "unavailable), category=transient_network");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
