/*
 * arf_parse_test - unit tests for the ARF parser: an RFC 5965 report (the
 * RFC's own example, adapted), one with only the original's header, and
 * the malformed ones that must be refused with a reason
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arf_parse.h"
#include "vstr.h"

static const REPORT_MIME_LIMITS limits = {
    .max_bytes = 1 << 20, .max_depth = 8, .max_parts = 64};

static const char report[] =
    "From: <abusedesk@example.test>\r\n"
    "To: <fbl@fbl.test>\r\n"
    "Subject: FW: Earn money\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/report; report-type=feedback-report;\r\n"
    "     boundary=\"part1_13d.2e68ed54_boundary\"\r\n"
    "\r\n"
    "--part1_13d.2e68ed54_boundary\r\n"
    "Content-Type: text/plain; charset=\"US-ASCII\"\r\n"
    "\r\n"
    "This is an email abuse report for an email message received from IP\r\n"
    "192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.\r\n"
    "--part1_13d.2e68ed54_boundary\r\n"
    "Content-Type: message/feedback-report\r\n"
    "\r\n"
    "Feedback-Type: Abuse\r\n"
    "User-Agent: SomeGenerator/1.0\r\n"
    "Version: 1\r\n"
    "Original-Mail-From: <bounce+abc@verp.test>\r\n"
    "Original-Rcpt-To: <user@example.test>\r\n"
    "Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT\r\n"
    "Source-IP: 192.0.2.1\r\n"
    "Reported-Domain: client.test\r\n"
    "\r\n"
    "--part1_13d.2e68ed54_boundary\r\n"
    "Content-Type: message/rfc822\r\n"
    "Content-Disposition: inline\r\n"
    "\r\n"
    "Return-Path: <bounce+def@verp.test>\r\n"
    "From: \"News\" <news@client.test>\r\n"
    "To: User <user@example.test>\r\n"
    "Message-ID: <8787KJKJ3K4J3K4J3K4J3.mail@client.test>\r\n"
    "Subject: Earn money\r\n"
    "\r\n"
    "Spam Spam Spam\r\n"
    "--part1_13d.2e68ed54_boundary--\r\n";

/* test_report - every field, the addresses without their brackets */
static void test_report(void **state)
{
    ARF_PARSED *arf = arf_parsed_alloc();
    VSTR *why = vstr_alloc(10);

    assert_int_equal(arf_parse(report, strlen(report), &limits, arf, why), 0);
    assert_string_equal(vstr_str(arf->feedback_type), "abuse");
    assert_string_equal(vstr_str(arf->user_agent), "SomeGenerator/1.0");
    assert_string_equal(vstr_str(arf->version), "1");
    assert_string_equal(vstr_str(arf->orig_mail_from), "bounce+abc@verp.test");
    assert_string_equal(vstr_str(arf->orig_rcpt_to), "user@example.test");
    assert_string_equal(vstr_str(arf->source_ip), "192.0.2.1");
    assert_string_equal(vstr_str(arf->reported_domain), "client.test");
    assert_string_equal(vstr_str(arf->return_path), "bounce+def@verp.test");
    assert_string_equal(vstr_str(arf->from), "news@client.test");
    assert_string_equal(vstr_str(arf->to), "user@example.test");
    assert_string_equal(vstr_str(arf->message_id),
                        "<8787KJKJ3K4J3K4J3K4J3.mail@client.test>");
    arf_parsed_free(arf);
    vstr_free(why);
}

/* replace - text with the first from replaced by to, in out */
static const char *replace(VSTR *out, const char *text, const char *from,
                           const char *to)
{
    const char *at = strstr(text, from);

    assert_non_null(at);
    vstr_ncpy(out, text, (size_t) (at - text));
    vstr_cat(out, to);
    vstr_cat(out, at + strlen(from));
    return vstr_str(out);
}

/* test_headers_only - text/rfc822-headers as the third part */
static void test_headers_only(void **state)
{
    ARF_PARSED *arf = arf_parsed_alloc();
    VSTR *why = vstr_alloc(10);
    VSTR *text = vstr_alloc(100);

    replace(text, report, "Content-Type: message/rfc822",
            "Content-Type: text/rfc822-headers");
    assert_int_equal(
        arf_parse(vstr_str(text), vstr_len(text), &limits, arf, why), 0);
    assert_string_equal(vstr_str(arf->return_path), "bounce+def@verp.test");
    arf_parsed_free(arf);
    vstr_free(why);
    vstr_free(text);
}

/* test_refused - malformed reports say why */
static void test_refused(void **state)
{
    static const struct {
        const char *from;
        const char *to;
        const char *why;
    } cases[] = {
        {"report-type=feedback-report", "report-type=delivery-status",
         "not a multipart/report"},
        {"Feedback-Type: Abuse\r\n", "", "without a Feedback-Type"},
        {"Content-Type: message/rfc822", "Content-Type: text/plain",
         "without the original message"},
        {"Content-Type: message/feedback-report", "Content-Type: text/plain",
         "no message/feedback-report part"},
        {"     boundary=\"part1_13d.2e68ed54_boundary\"", "     charset=x",
         "without a boundary"},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        ARF_PARSED *arf = arf_parsed_alloc();
        VSTR *why = vstr_alloc(10);
        VSTR *text = vstr_alloc(100);

        replace(text, report, cases[i].from, cases[i].to);
        assert_int_equal(
            arf_parse(vstr_str(text), vstr_len(text), &limits, arf, why), -1);
        if (strstr(vstr_str(why), cases[i].why) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, vstr_str(why),
                     cases[i].why);
        arf_parsed_free(arf);
        vstr_free(why);
        vstr_free(text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report),
        cmocka_unit_test(test_headers_only),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
