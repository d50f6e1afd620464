/*
 * dsn_parse_test - unit tests for the DSN parser and its MIME walk: RFC
 * 3464 reports, free-form bounces of several shapes, and the inputs that
 * must be refused (limits, no delivery-status, no reply)
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsn_parse.h"
#include "vstr.h"

static const REPORT_MIME_LIMITS limits = {
    .max_bytes = 1 << 20, .max_depth = 8, .max_parts = 64};

/* parse - dsn_parse of a C string; its return value */
static int parse(const char *text, DSN_PARSED *dsn, VSTR *why)
{
    return dsn_parse(text, strlen(text), &limits, dsn, why);
}

static const char rfc3464[] =
    "From: MAILER-DAEMON@mx.dest.test\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
    "\tboundary=\"=_b1\"\r\n"
    "\r\n"
    "preamble\r\n"
    "--=_b1\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "Your message could not be delivered: 421 4.4.2 not this one\r\n"
    "--=_b1\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; mx.dest.test\r\n"
    "Arrival-Date: Sat, 5 Dec 2026 10:00:00 +0000\r\n"
    "\r\n"
    "Original-Recipient: rfc822;Bob@Dest.test\r\n"
    "Final-Recipient: RFC822; bob@dest.test\r\n"
    "Action: Failed\r\n"
    "Status: 5.1.1 (bad destination mailbox)\r\n"
    "Remote-MTA: dns; mx.dest.test\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <bob@dest.test>:\r\n"
    "    Recipient address rejected: User unknown\r\n"
    "\r\n"
    "--=_b1\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "\r\n"
    "From: news@client.test\r\n"
    "--=_b1--\r\n";

/* test_rfc3464 - the fields of the first recipient block, folded lines
   unfolded, types removed, the action in lower case */
static void test_rfc3464(void **state)
{
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(10);

    assert_int_equal(parse(rfc3464, dsn, why), 0);
    assert_int_equal(dsn->form, DSN_PARSE_RFC3464);
    assert_string_equal(vstr_str(dsn->final_rcpt), "bob@dest.test");
    assert_string_equal(vstr_str(dsn->orig_rcpt), "Bob@Dest.test");
    assert_string_equal(vstr_str(dsn->action), "failed");
    assert_string_equal(vstr_str(dsn->status), "5.1.1");
    assert_string_equal(vstr_str(dsn->reply),
                        "550 5.1.1 <bob@dest.test>:    Recipient address "
                        "rejected: User unknown");
    dsn_parsed_free(dsn);
    vstr_free(why);
}

/* test_rfc3464_lf_delayed - LF line ends, an unquoted boundary, Action
   delayed */
static void test_rfc3464_lf_delayed(void **state)
{
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(10);
    const char *text = "Content-Type: multipart/report; boundary=XyZ; "
                       "report-type=delivery-status\n\n--XyZ\n"
                       "Content-Type: message/delivery-status\n\n"
                       "Reporting-MTA: dns; a.test\n\n\n"
                       "Final-Recipient: rfc822; c@d.test\nAction: delayed\n"
                       "Status: 4.2.2\n--XyZ--\n";

    assert_int_equal(parse(text, dsn, why), 0);
    assert_string_equal(vstr_str(dsn->action), "delayed");
    assert_string_equal(vstr_str(dsn->status), "4.2.2");
    assert_string_equal(vstr_str(dsn->final_rcpt), "c@d.test");
    assert_string_equal(vstr_str(dsn->reply), "");
    dsn_parsed_free(dsn);
    vstr_free(why);
}

/* test_free_form - the line with both a reply code and a status wins,
   else a code alone (status from its class), else a status alone */
static void test_free_form(void **state)
{
    static const struct {
        const char *text;
        const char *status;
        const char *reply;
        const char *rcpt;
        const char *action;
    } cases[] = {
        {"Subject: Undeliverable\r\n\r\nHi. This is qmail.\r\n"
         "<x@y.test>:\r\n1.2.3.4 does not like recipient.\r\n"
         "Remote host said: 550-5.1.1 The email account does not exist\r\n",
         "5.1.1", "550-5.1.1 The email account does not exist", "", "failed"},
        {"\r\nDelivery to the following recipient failed permanently:\r\n"
         "  a@b.test\r\nThe error that the other server returned was:\r\n"
         "554 delivery error: dd This user doesn't have an account\r\n",
         "5.0.0", "554 delivery error: dd This user doesn't have an account",
         "", "failed"},
        {"\r\nRemote Server returned '<user@dom.test> #5.2.2 mailbox full'\r\n",
         "5.2.2", "5.2.2 mailbox full'", "user@dom.test", "failed"},
        {"\r\n<p@q.test>: host mx[192.0.2.1] said: 452 4.2.2 Mailbox full "
         "(in reply to RCPT TO command)\r\n",
         "4.2.2", "452 4.2.2 Mailbox full (in reply to RCPT TO command)",
         "p@q.test", "delayed"}, /* a 4.x.x: a delay, no bounce */
        {"\r\nYour message is delayed; we will retry for 5 days.\r\n"
         "<d@e.test>: 550 5.7.1 greylisted, come back later\r\n",
         "5.7.1", "550 5.7.1 greylisted, come back later", "d@e.test",
         "delayed"}, /* the words say it is a warning */
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        DSN_PARSED *dsn = dsn_parsed_alloc();
        VSTR *why = vstr_alloc(10);

        assert_int_equal(parse(cases[i].text, dsn, why), 0);
        assert_int_equal(dsn->form, DSN_PARSE_FREEFORM);
        assert_string_equal(vstr_str(dsn->status), cases[i].status);
        assert_string_equal(vstr_str(dsn->reply), cases[i].reply);
        assert_string_equal(vstr_str(dsn->action), cases[i].action);
        assert_string_equal(vstr_str(dsn->final_rcpt), cases[i].rcpt);
        dsn_parsed_free(dsn);
        vstr_free(why);
    }
}

/* test_free_form_sender - a free-form text is read only from the null
   sender or a mailer daemon, and never in an automatic reply */
static void test_free_form_sender(void **state)
{
    static const char body[] = "\r\nRemote host said: 550 5.1.1 no such "
                               "user\r\n";
    static const struct {
        const char *head;
        const char *sender;
        const char *why; /* NULL: parsed */
    } cases[] = {
        {"From: MAILER-DAEMON@mx.test\r\n", "", NULL},
        {"From: Mail Delivery <mailer-daemon@mx.test>\r\n", "x@mx.test", NULL},
        {"From: postmaster@mx.test\r\n", "bounces@mx.test", NULL},
        {"From: Olive <olive@mx.test>\r\n", "olive@mx.test", "null sender"},
        {"From: olive@mx.test\r\nAuto-Submitted: auto-replied (vacation)"
         "\r\n",
         "", "automatic reply"},
        {"From: MAILER-DAEMON@mx.test\r\nAuto-Submitted: Auto-Replied\r\n", "",
         "automatic reply"},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        DSN_PARSED *dsn = dsn_parsed_alloc();
        VSTR *why = vstr_alloc(10);
        VSTR *text = vstr_alloc(100);

        vstr_sprintf(text, "%s%s", cases[i].head, body);
        if (cases[i].why == NULL) {
            assert_int_equal(dsn_parse_mail(vstr_str(text), vstr_len(text),
                                            &limits, cases[i].sender, dsn, why),
                             0);
            assert_string_equal(vstr_str(dsn->status), "5.1.1");
        } else {
            assert_int_equal(dsn_parse_mail(vstr_str(text), vstr_len(text),
                                            &limits, cases[i].sender, dsn, why),
                             -1);
            assert_non_null(strstr(vstr_str(why), cases[i].why));
        }
        dsn_parsed_free(dsn);
        vstr_free(why);
        vstr_free(text);
    }
}

/* test_refused - what is not a usable DSN says why */
static void test_refused(void **state)
{
    static const struct {
        const char *text;
        const char *why;
    } cases[] = {
        {"Subject: hello\r\n\r\nJust a letter, 2026 was a good year.\r\n",
         "no SMTP reply"},
        {"Content-Type: multipart/report; report-type=delivery-status\r\n"
         "\r\n--x\r\n\r\n550 5.1.1 x\r\n",
         "without a boundary"},
        {"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
         "Content-Type: text/plain\r\n\r\n550 5.1.1 no\r\n--x--\r\n",
         "without a delivery-status part"},
        {"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
         "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: "
         "dns; a\r\n--x--\r\n",
         "without a recipient block"},
        {"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
         "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: "
         "dns; a\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\n"
         "Status: 9.9.9\r\n--x--\r\n",
         "bad Status"},
        {"Content-Type: image/png\r\n\r\n\x89PNG", "no text part"},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        DSN_PARSED *dsn = dsn_parsed_alloc();
        VSTR *why = vstr_alloc(10);

        assert_int_equal(parse(cases[i].text, dsn, why), -1);
        if (strstr(vstr_str(why), cases[i].why) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, vstr_str(why),
                     cases[i].why);
        dsn_parsed_free(dsn);
        vstr_free(why);
    }
}

/* test_limits - deep nesting, many parts and bytes beyond max_bytes stop
   the walk with the limit named */
static void test_limits(void **state)
{
    VSTR *text = vstr_alloc(100);
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(10);
    REPORT_MIME_LIMITS small = limits;

    for (int i = 0; i < 200; i++)
        vstr_sprintf_append(text,
                            "Content-Type: multipart/mixed; boundary=b%d\r\n"
                            "\r\n--b%d\r\n",
                            i, i);
    vstr_cat(text, "\r\n550 5.1.1 deep\r\n");
    assert_int_equal(parse(vstr_str(text), dsn, why), -1);
    assert_non_null(strstr(vstr_str(why), "nested more than 8 deep"));

    vstr_cpy(text, "Content-Type: multipart/mixed; boundary=p\r\n\r\n");
    for (int i = 0; i < 1000; i++)
        vstr_cat(text, "--p\r\n\r\nx\r\n");
    vstr_cat(text, "--p--\r\n");
    assert_int_equal(parse(vstr_str(text), dsn, why), -1);
    assert_non_null(strstr(vstr_str(why), "more than 64 MIME parts"));

    /* The delivery-status part beyond max_bytes is not seen. */
    small.max_bytes = 200;
    assert_int_equal(dsn_parse(rfc3464, strlen(rfc3464), &small, dsn, why), -1);
    assert_non_null(strstr(vstr_str(why), "without a delivery-status"));
    vstr_free(text);
    dsn_parsed_free(dsn);
    vstr_free(why);
}

/* test_base64_text - an Exchange-style free-form NDR whose text/plain
   part (or, with none, text/html part) is base64: decoded, then
   searched */
static void test_base64_text(void **state)
{
    static const char plain[] =
        "From: postmaster@dest.test\r\n"
        "Subject: Undeliverable: news\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=\"_000_\"\r\n"
        "\r\n"
        "--_000_\r\n"
        "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "RGVsaXZlcnkgaGFzIGZhaWxlZCB0byB0aGVzZSByZWNpcGllbnRzIG9yIGdyb3VwczoNCg0KYm9i\r\n"
        "QGRlc3QudGVzdA0KVGhlIGUtbWFpbCBhZGRyZXNzIHlvdSBlbnRlcmVkIGNvdWxkbid0IGJlIGZv\r\n"
        "dW5kLg0KDQpEaWFnbm9zdGljIGluZm9ybWF0aW9uIGZvciBhZG1pbmlzdHJhdG9yczoNCg0KUmVt\r\n"
        "b3RlIFNlcnZlciByZXR1cm5lZCAnNTUwIDUuMS4xMCBSRVNPTFZFUi5BRFIuUmVjaXBpZW50Tm90\r\n"
        "Rm91bmQ7IFJlY2lwaWVudCBub3QgZm91bmQgYnkgU01UUCBhZGRyZXNzIGxvb2t1cCcNCg==\r\n"
        "--_000_--\r\n";
    static const char html[] =
        "From: postmaster@dest.test\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: BASE64\r\n"
        "\r\n"
        "PGh0bWw+PGhlYWQ+PHN0eWxlPnAgeyBjb2xvcjogIzU1MCB9PC9zdHlsZT48L2hlYWQ+PGJvZHk+\r\n"
        "PHA+RGVsaXZlcnkgaGFzIGZhaWxlZC48L3A+PHA+UmVtb3RlIFNlcnZlciByZXR1cm5lZCAmbHQ7\r\n"
        "Ym9iQGRlc3QudGVzdCZndDs8YnI+JzU1MCA1LjEuMSBVc2VyJm5ic3A7dW5rbm93bic8L3A+PC9i\r\n"
        "b2R5PjwvaHRtbD4NCg==\r\n";
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(10);

    assert_int_equal(parse(plain, dsn, why), 0);
    assert_int_equal(dsn->form, DSN_PARSE_FREEFORM);
    assert_string_equal(vstr_str(dsn->status), "5.1.10");
    assert_string_equal(vstr_str(dsn->action), "failed");
    assert_string_equal(vstr_str(dsn->reply),
                        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient "
                        "not found by SMTP address lookup'");
    dsn_parsed_free(dsn);

    dsn = dsn_parsed_alloc();
    assert_int_equal(parse(html, dsn, why), 0);
    assert_string_equal(vstr_str(dsn->status), "5.1.1");
    assert_string_equal(vstr_str(dsn->reply), "550 5.1.1 User unknown'");
    dsn_parsed_free(dsn);
    vstr_free(why);
}

/* test_qp_text - a quoted-printable text part: soft line breaks (CRLF and
   LF) joined, =XX escapes decoded */
static void test_qp_text(void **state)
{
    static const char *const texts[] = {
        "From: MAILER-DAEMON@dest.test\r\n"
        "Content-Type: text/plain; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Your message to <bob@dest.test> could not be delivered. a=\r\n"
        "=3Db =\r\n"
        "The server said: 55=\r\n"
        "2 5.2=\r\n"
        ".2 Mailbox full =3D over quota=20\r\n",
        "From: MAILER-DAEMON@dest.test\n"
        "Content-Type: text/plain\n"
        "Content-Transfer-Encoding: Quoted-Printable\n"
        "\n"
        "The server said: 55=\n"
        "2 5.2=\n"
        ".2 Mailbox full =3D over quota=20\n",
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(texts); i++) {
        DSN_PARSED *dsn = dsn_parsed_alloc();
        VSTR *why = vstr_alloc(10);

        assert_int_equal(parse(texts[i], dsn, why), 0);
        assert_string_equal(vstr_str(dsn->status), "5.2.2");
        assert_string_equal(vstr_str(dsn->reply),
                            "552 5.2.2 Mailbox full = over quota");
        dsn_parsed_free(dsn);
        vstr_free(why);
    }
}

/* test_base64_status - a message/delivery-status part that is itself
   base64 */
static void test_base64_status(void **state)
{
    static const char text[] =
        "From: MAILER-DAEMON@mx.dest.test\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; "
        "boundary=b\r\n"
        "\r\n"
        "--b\r\n"
        "\r\n"
        "Undeliverable.\r\n"
        "--b\r\n"
        "Content-Type: message/delivery-status\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "UmVwb3J0aW5nLU1UQTogZG5zOyBteC5kZXN0LnRlc3QNCg0KRmluYWwtUmVjaXBpZW50OiByZmM4\r\n"
        "MjI7IGJvYkBkZXN0LnRlc3QNCkFjdGlvbjogZmFpbGVkDQpTdGF0dXM6IDUuMi4yDQpEaWFnbm9z\r\n"
        "dGljLUNvZGU6IHNtdHA7IDU1MiA1LjIuMiBtYWlsYm94IGZ1bGwNCg==\r\n"
        "--b--\r\n";
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(10);

    assert_int_equal(parse(text, dsn, why), 0);
    assert_int_equal(dsn->form, DSN_PARSE_RFC3464);
    assert_string_equal(vstr_str(dsn->final_rcpt), "bob@dest.test");
    assert_string_equal(vstr_str(dsn->action), "failed");
    assert_string_equal(vstr_str(dsn->status), "5.2.2");
    assert_string_equal(vstr_str(dsn->reply), "552 5.2.2 mailbox full");
    dsn_parsed_free(dsn);
    vstr_free(why);
}

/* test_three_rcpts - every recipient block is kept; dsn_parsed_pick
   chooses by Final- or Original-Recipient, else the first failed one */
static void test_three_rcpts(void **state)
{
    static const char text[] =
        "From: MAILER-DAEMON@mx.dest.test\n"
        "Content-Type: multipart/report; report-type=delivery-status; "
        "boundary=b\n"
        "\n"
        "--b\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.dest.test\n"
        "\n"
        "Final-Recipient: rfc822; a@dest.test\n"
        "Action: delayed\n"
        "Status: 4.2.2\n"
        "\n"
        "Final-Recipient: rfc822; b@dest.test\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no b\n"
        "\n"
        "Original-Recipient: rfc822; Carol@Client.test\n"
        "Final-Recipient: rfc822; c@dest.test\n"
        "Action: failed\n"
        "Status: 5.2.1\n"
        "Diagnostic-Code: smtp; 550 5.2.1 c disabled\n"
        "--b--\n";
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(10);

    assert_int_equal(parse(text, dsn, why), 0);
    assert_int_equal(dsn->rcpt_count, 3);
    assert_string_equal(vstr_str(dsn->final_rcpt), "a@dest.test");
    assert_string_equal(vstr_str(dsn->rcpts[2].final_rcpt), "c@dest.test");
    assert_string_equal(vstr_str(dsn->rcpts[2].orig_rcpt), "Carol@Client.test");
    assert_string_equal(vstr_str(dsn->rcpts[2].reply), "550 5.2.1 c disabled");

    assert_true(dsn_parsed_pick(dsn, "C@dest.test", NULL));
    assert_string_equal(vstr_str(dsn->status), "5.2.1");
    assert_string_equal(vstr_str(dsn->final_rcpt), "c@dest.test");
    assert_true(dsn_parsed_pick(dsn, "nobody@x.test", "carol@client.test"));
    assert_string_equal(vstr_str(dsn->status), "5.2.1");
    assert_true(dsn_parsed_pick(dsn, "a@dest.test", NULL));
    assert_string_equal(vstr_str(dsn->action), "delayed");
    /* None matches: the first failed block, not the delayed one. */
    assert_false(dsn_parsed_pick(dsn, "z@dest.test", NULL));
    assert_string_equal(vstr_str(dsn->final_rcpt), "b@dest.test");
    assert_string_equal(vstr_str(dsn->action), "failed");
    assert_string_equal(vstr_str(dsn->reply), "550 5.1.1 no b");
    assert_false(dsn_parsed_pick(dsn, NULL, NULL));
    assert_string_equal(vstr_str(dsn->final_rcpt), "b@dest.test");
    dsn_parsed_free(dsn);
    vstr_free(why);
}

/* b64_append - base64 of data[0..len) appended to out in 76-column
   lines (the test's own encoder) */
static void b64_append(VSTR *out, const char *data, size_t len)
{
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t col = 0;

    for (size_t i = 0; i < len; i += 3) {
        unsigned int v = (unsigned char) data[i] << 16;
        size_t n = len - i < 3 ? len - i : 3;

        if (n > 1)
            v |= (unsigned char) data[i + 1] << 8;
        if (n > 2)
            v |= (unsigned char) data[i + 2];
        vstr_addch(out, digits[(v >> 18) & 63]);
        vstr_addch(out, digits[(v >> 12) & 63]);
        vstr_addch(out, n > 1 ? digits[(v >> 6) & 63] : '=');
        vstr_addch(out, n > 2 ? digits[v & 63] : '=');
        if ((col += 4) >= 76) {
            vstr_cat(out, "\r\n");
            col = 0;
        }
    }
    vstr_cat(out, "\r\n");
}

/* test_limits_base64 - a 2 MB base64 text part over the 1 MB limit is
   cut at the limit and decoded up to there: a reply before the cut is
   found, one after it is not */
static void test_limits_base64(void **state)
{
    VSTR *plain = vstr_alloc(100);
    VSTR *text = vstr_alloc(100);
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(10);
    static const char head[] = "From: postmaster@dest.test\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Transfer-Encoding: base64\r\n"
                               "\r\n";

    for (int where = 0; where < 2; where++) {
        vstr_reset(plain);
        if (where == 0)
            vstr_cat(plain, "Remote Server returned '550 5.1.1 first'\r\n");
        while (vstr_len(plain) < 1500000)
            vstr_cat(plain, "filler text of a large bounce, no reply here\r\n");
        if (where == 1)
            vstr_cat(plain, "Remote Server returned '550 5.1.1 last'\r\n");
        vstr_cpy(text, head);
        b64_append(text, vstr_str(plain), vstr_len(plain));
        assert_true(vstr_len(text) > 2000000);
        if (where == 0) {
            assert_int_equal(parse(vstr_str(text), dsn, why), 0);
            assert_string_equal(vstr_str(dsn->reply), "550 5.1.1 first'");
        } else {
            assert_int_equal(parse(vstr_str(text), dsn, why), -1);
            assert_non_null(strstr(vstr_str(why), "no SMTP reply"));
        }
    }
    vstr_free(plain);
    vstr_free(text);
    dsn_parsed_free(dsn);
    vstr_free(why);
}

/* test_status_ok - the enhanced status code syntax */
static void test_status_ok(void **state)
{
    assert_true(dsn_parse_status_ok("5.1.1"));
    assert_true(dsn_parse_status_ok("4.123.999"));
    assert_true(dsn_parse_status_ok("2.0.0"));
    assert_false(dsn_parse_status_ok("3.1.1"));
    assert_false(dsn_parse_status_ok("5.1"));
    assert_false(dsn_parse_status_ok("5.1.1 "));
    assert_false(dsn_parse_status_ok("5.1234.1"));
    assert_false(dsn_parse_status_ok(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3464),
        cmocka_unit_test(test_rfc3464_lf_delayed),
        cmocka_unit_test(test_free_form),
        cmocka_unit_test(test_free_form_sender),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_status_ok),
        cmocka_unit_test(test_base64_text),
        cmocka_unit_test(test_qp_text),
        cmocka_unit_test(test_base64_status),
        cmocka_unit_test(test_three_rcpts),
        cmocka_unit_test(test_limits_base64),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
