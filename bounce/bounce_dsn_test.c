/*
 * bounce_dsn_test - unit tests for DSN composition: NOTIFY filtering, the
 * header block, the report's structure and fields, RET=HDRS versus the
 * whole message, text from outside made safe
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "bounce_dsn.h"
#include "bounce_proto.h"
#include "dsn_log.h"
#include "vstr.h"

static const char test_msg[] = "Subject: hi\nFrom: a@src.test\n\nbody line\n";

/* test_rec - a log record */
static DSN_LOG_REC test_rec(const char *action, const char *address,
                            const char *notify)
{
    DSN_LOG_REC rec = {
        .action = action,
        .address = address,
        .orcpt = "",
        .notify = notify,
        .offset = -1,
        .status = "",
        .reason = "",
        .diagnostic = "",
        .remote_mta = "",
        .time = 1700000000,
    };

    return rec;
}

/* test_dsn - a notice with everything filled in */
static BOUNCE_DSN test_dsn(const DSN_LOG_REC *const *rcpts, size_t count)
{
    BOUNCE_DSN dsn = {
        .kind = BOUNCE_DSN_FAILURE,
        .myhostname = "mx.here.test",
        .queue_id = "0000010X00000000",
        .dsn_queue_id = "0000010Y00000000",
        .orig_sender = "a@src.test",
        .to = "a@src.test",
        .envid = "env-1",
        .arrival = 1700000000,
        .now = 1700000100,
        .retry_until = 1700086400,
        .boundary = "B0UND/mx.here.test",
        .rcpts = rcpts,
        .rcpt_count = count,
        .content = test_msg,
        .content_len = sizeof(test_msg) - 1,
        .content_full = true,
    };

    return dsn;
}

static void test_notify(void **state)
{
    DSN_LOG_REC failed = test_rec(DSN_ACTION_FAILED, "x@d.test", "");
    DSN_LOG_REC done = test_rec(DSN_ACTION_DELIVERED, "x@d.test", "");
    DSN_LOG_REC late = test_rec(DSN_ACTION_DELAYED, "x@d.test", "");

    assert_true(bounce_dsn_notify_has("SUCCESS,FAILURE", "failure"));
    assert_true(bounce_dsn_notify_has(" success , delay", "DELAY"));
    assert_false(bounce_dsn_notify_has("SUCCESSFUL", "SUCCESS"));
    assert_false(bounce_dsn_notify_has("", "FAILURE"));
    assert_false(bounce_dsn_notify_has("NEVER", "FAILURE"));

    /* No NOTIFY: failures and delays, never successes. */
    assert_true(bounce_dsn_wanted(BOUNCE_KIND_BOUNCE, &failed));
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_BOUNCE, &done));
    assert_true(bounce_dsn_wanted(BOUNCE_KIND_DELAY, &late));
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_DELAY, &failed));
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_BOUNCE, &late));
    failed.notify = done.notify = late.notify = "NEVER";
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_BOUNCE, &failed));
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_BOUNCE, &done));
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_DELAY, &late));
    failed.notify = done.notify = late.notify = "SUCCESS";
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_BOUNCE, &failed));
    assert_true(bounce_dsn_wanted(BOUNCE_KIND_BOUNCE, &done));
    assert_false(bounce_dsn_wanted(BOUNCE_KIND_DELAY, &late));
}

static void test_header_len(void **state)
{
    assert_int_equal(bounce_dsn_header_len(test_msg, strlen(test_msg)),
                     strlen("Subject: hi\nFrom: a@src.test\n\n"));
    assert_int_equal(bounce_dsn_header_len("\nbody\n", 6), 1);
    assert_int_equal(bounce_dsn_header_len("A: b\n", 5), 5);
    assert_int_equal(bounce_dsn_header_len("", 0), 0);
    assert_true(bounce_dsn_has_8bit("caf\xc3\xa9", 5));
    assert_false(bounce_dsn_has_8bit("cafe", 4));
}

static void test_date(void **state)
{
    char buf[64];

    setenv("TZ", "UTC", 1);
    tzset();
    bounce_dsn_date(buf, sizeof(buf), 0);
    assert_string_equal(buf, "Thu, 1 Jan 1970 00:00:00 +0000");
    bounce_dsn_date(buf, sizeof(buf), 1700000000);
    assert_string_equal(buf, "Tue, 14 Nov 2023 22:13:20 +0000");
}

/* test_count - occurrences of needle in haystack */
static int test_count(const char *haystack, const char *needle)
{
    int count = 0;

    for (const char *cp = haystack; (cp = strstr(cp, needle)) != NULL; cp++)
        count++;
    return count;
}

static void test_failure_full(void **state)
{
    DSN_LOG_REC gone = test_rec(DSN_ACTION_FAILED, "gone@d.test", "");
    DSN_LOG_REC ok = test_rec(DSN_ACTION_DELIVERED, "ok@d.test", "SUCCESS");
    const DSN_LOG_REC *rcpts[] = {&gone, &ok};
    BOUNCE_DSN dsn = test_dsn(rcpts, 2);
    VSTR *out = vstr_alloc(0);
    const char *s;

    setenv("TZ", "UTC", 1);
    tzset();
    gone.status = "5.1.1";
    gone.orcpt = "rfc822;Gone@d.test";
    gone.reason = "host mx.d.test said: 550 5.1.1 no such user";
    gone.diagnostic = "smtp; 550 5.1.1 no such user";
    gone.remote_mta = "dns; mx.d.test";
    gone.category = "user_unknown";
    ok.status = "2.0.0";
    bounce_dsn_compose(out, &dsn);
    s = vstr_str(out);
    assert_int_equal(strncmp(s, "Date: Tue, 14 Nov 2023 22:15:00 +0000\n", 38),
                     0);
    assert_non_null(strstr(s, "\nFrom: MAILER-DAEMON@mx.here.test "
                              "(Mail Delivery System)\n"));
    assert_non_null(strstr(s, "\nSubject: Undelivered Mail Returned to "
                              "Sender\n"));
    assert_non_null(strstr(s, "\nTo: <a@src.test>\n"));
    assert_non_null(strstr(s, "\nAuto-Submitted: auto-replied\n"));
    assert_non_null(strstr(s, "\nMessage-Id: <0000010Y00000000."
                              "0000010X00000000@mx.here.test>\n"));
    assert_non_null(strstr(s, "\nContent-Type: multipart/report; "
                              "report-type=delivery-status;\n"
                              "\tboundary=\"B0UND/mx.here.test\"\n"));
    assert_non_null(strstr(s, "\nContent-Transfer-Encoding: 7bit\n\n"));
    /* Three parts and the closing boundary. */
    assert_int_equal(test_count(s, "\n--B0UND/mx.here.test\n"), 3);
    assert_non_null(strstr(s, "\n--B0UND/mx.here.test--\n"));
    /* Human part names each recipient with its reason. */
    assert_non_null(strstr(s, "\n<gone@d.test>: host mx.d.test said: 550 "
                              "5.1.1 no such user\n"
                              "    (failure class: user_unknown)\n"));
    assert_non_null(strstr(s, "\n<ok@d.test>: delivered\n"));
    /* Per-message fields, then one block per recipient. */
    assert_non_null(strstr(s, "Content-Type: message/delivery-status\n\n"
                              "Reporting-MTA: dns; mx.here.test\n"
                              "X-Sluice-Queue-ID: 0000010X00000000\n"
                              "X-Sluice-Sender: rfc822; a@src.test\n"
                              "Original-Envelope-Id: env-1\n"
                              "Arrival-Date: Tue, 14 Nov 2023 22:13:20 "
                              "+0000\n\n"
                              "Final-Recipient: rfc822; gone@d.test\n"
                              "Original-Recipient: rfc822;Gone@d.test\n"
                              "Action: failed\n"
                              "Status: 5.1.1\n"
                              "Remote-MTA: dns; mx.d.test\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 no such user\n"
                              "X-Sluice-Category: user_unknown\n"
                              "Last-Attempt-Date: Tue, 14 Nov 2023 22:13:20 "
                              "+0000\n\n"
                              "Final-Recipient: rfc822; ok@d.test\n"
                              "Action: delivered\n"
                              "Status: 2.0.0\n"
                              "Last-Attempt-Date: "));
    assert_null(strstr(s, "Will-Retry-Until"));
    /* The whole original. */
    assert_non_null(strstr(s, "Content-Type: message/rfc822\n\n"
                              "Subject: hi\nFrom: a@src.test\n\nbody line\n"
                              "\n--B0UND/mx.here.test--\n"));
    vstr_free(out);
}

static void test_delay_headers_only(void **state)
{
    DSN_LOG_REC late = test_rec(DSN_ACTION_DELAYED, "slow@d.test", "");
    const DSN_LOG_REC *rcpts[] = {&late};
    BOUNCE_DSN dsn = test_dsn(rcpts, 1);
    VSTR *out = vstr_alloc(0);
    const char *s;

    setenv("TZ", "UTC", 1);
    tzset();
    late.status = "4.4.1";
    dsn.kind = BOUNCE_DSN_DELAY;
    dsn.envid = NULL;
    dsn.content_len = bounce_dsn_header_len(test_msg, strlen(test_msg));
    dsn.content_full = false;
    bounce_dsn_compose(out, &dsn);
    s = vstr_str(out);
    assert_non_null(strstr(s, "\nSubject: Delayed Mail (still being "
                              "retried)\n"));
    assert_non_null(strstr(s, "Action: delayed\nStatus: 4.4.1\n"));
    assert_non_null(strstr(s, "\nWill-Retry-Until: Wed, 15 Nov 2023 22:13:20 "
                              "+0000\n"));
    assert_null(strstr(s, "Original-Envelope-Id"));
    assert_non_null(strstr(s, "Content-Type: text/rfc822-headers\n\n"
                              "Subject: hi\nFrom: a@src.test\n\n"
                              "\n--B0UND/mx.here.test--\n"));
    assert_null(strstr(s, "body line"));
    assert_null(strstr(s, "message/rfc822"));
    vstr_free(out);
}

static void test_success_and_safety(void **state)
{
    DSN_LOG_REC ok = test_rec(DSN_ACTION_DELIVERED, "ok@d.test", "SUCCESS");
    const DSN_LOG_REC *rcpts[] = {&ok};
    BOUNCE_DSN dsn = test_dsn(rcpts, 1);
    VSTR *out = vstr_alloc(0);
    const char *s;

    /* A reply that tries to add a field, with 8-bit and control bytes. */
    ok.diagnostic = "smtp; 250 ok\r\nAction: failed\x01 caf\xc3\xa9";
    dsn.kind = BOUNCE_DSN_SUCCESS;
    bounce_dsn_compose(out, &dsn);
    s = vstr_str(out);
    assert_non_null(strstr(s, "\nSubject: Successful Mail Delivery Report\n"));
    assert_non_null(strstr(s, "\nDiagnostic-Code: smtp; 250 ok Action: "
                              "failed? caf??\n"));
    assert_null(strstr(s, "\nAction: failed"));
    assert_false(bounce_dsn_has_8bit(s, vstr_len(out)));

    /* 8-bit content makes the notice 8-bit, and says so. */
    dsn.content = "Subject: caf\xc3\xa9\n\nx\n";
    dsn.content_len = strlen(dsn.content);
    bounce_dsn_compose(out, &dsn);
    s = vstr_str(out);
    assert_non_null(strstr(s, "\nContent-Transfer-Encoding: 8bit\n\n"));

    /* The postmaster's copy. */
    dsn.kind = BOUNCE_DSN_FAILURE;
    dsn.postmaster_copy = true;
    dsn.orig_sender = "";
    assert_string_equal(bounce_dsn_subject(&dsn),
                        "Postmaster Copy: Undelivered Mail");
    vstr_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify),
        cmocka_unit_test(test_header_len),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_failure_full),
        cmocka_unit_test(test_delay_headers_only),
        cmocka_unit_test(test_success_and_safety),
    };

    return cmocka_run_group_tests_name("bounce_dsn", tests, NULL, NULL);
}
