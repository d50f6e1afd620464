/*
 * track_html_test - unit tests for the link rewriter, the MIME walk and
 * the tracking token payloads: single quotes, upper-case HREF, entities,
 * bare values, mailto and anchors left alone, comments and scripts,
 * unclosed tags, the pixel, QP links split across soft line breaks,
 * base64, nesting, line lengths, huge parts, and unsub_token_parse
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "track_html.h"
#include "track_mime.h"
#include "track_token.h"
#include "vstr.h"

/* test_link - a link function: "T" followed by the URL's length */
static bool test_link(void *ctx, const char *url, VSTR *newurl)
{
    VSTR *seen = ctx;

    if (seen != NULL) {
        vstr_cat(seen, url);
        vstr_addch(seen, '|');
    }
    vstr_sprintf(newurl, "https://t.test/c/%zu", strlen(url));
    return true;
}

/* rewrite - the rewriter's output of html with test_link, no pixel */
static char *rewrite(const char *html, VSTR *seen, size_t *changes)
{
    TRACK_HTML_OPTS opts = {test_link, seen, NULL};
    VSTR *out = vstr_alloc(64);
    size_t n = track_html_rewrite(html, strlen(html), out, &opts);

    if (changes)
        *changes = n;
    return vstr_export(out);
}

/* test_quotes_case_entities - double, single, bare, upper case, an entity
   decoded before the URL is signed; the rest copied unchanged */
static void test_quotes_case_entities(void **state)
{
    VSTR *seen = vstr_alloc(64);
    size_t n;
    char *out = rewrite("<p><a href=\"http://a.test/x?a=1&amp;b=2\">1</a>"
                        "<A HREF='HTTPS://b.test/'>2</A>"
                        "<a class=c href = http://c.test/z>3</a>"
                        "<area shape=rect href=\" https://d.test/ \">",
                        seen, &n);

    assert_int_equal(n, 4);
    assert_string_equal(vstr_str(seen), "http://a.test/x?a=1&b=2|"
                                        "HTTPS://b.test/|http://c.test/z|"
                                        "https://d.test/|");
    assert_string_equal(out, "<p><a href=\"https://t.test/c/23\">1</a>"
                             "<A HREF=\"https://t.test/c/15\">2</A>"
                             "<a class=c href=\"https://t.test/c/15\">3</a>"
                             "<area shape=rect href=\"https://t.test/c/15\">");
    free(out);
    vstr_free(seen);
}

/* test_left_alone - mailto, anchors, relative links, comments, scripts,
   <abbr>, an href outside <a>, and an unclosed quote stay as written */
static void test_left_alone(void **state)
{
    const char *html =
        "<a href=\"mailto:x@y.test\">m</a><a href='#top'>t</a>"
        "<a href=\"/rel\">r</a><!-- <a href=\"http://c.test/\"> -->"
        "<script>var s='<a href=\"http://s.test/\">';</script>"
        "<abbr href=\"http://ab.test/\">x</abbr><link href=\"http://l.test/\">"
        "<a>plain</a><a href=\"http://u.test/ unclosed>";
    size_t n;
    char *out = rewrite(html, NULL, &n);

    assert_int_equal(n, 0);
    assert_string_equal(out, html);
    free(out);
}

/* test_pixel - before the last </body> (any case), else at the end */
static void test_pixel(void **state)
{
    TRACK_HTML_OPTS opts = {NULL, NULL, "https://t.test/o/TOK"};
    VSTR *out = vstr_alloc(64);
    const char *img = "<img src=\"https://t.test/o/TOK\" width=\"1\" "
                      "height=\"1\" alt=\"\" "
                      "style=\"border:0;width:1px;height:1px\">";
    VSTR *want = vstr_alloc(64);

    assert_int_equal(
        track_html_rewrite("<p>x</p></BODY></html>", 22, out, &opts), 1);
    vstr_sprintf(want, "<p>x</p>%s</BODY></html>", img);
    assert_string_equal(vstr_str(out), vstr_str(want));
    vstr_reset(out);
    track_html_rewrite("<p>x</p>", 8, out, &opts);
    vstr_sprintf(want, "<p>x</p>%s", img);
    assert_string_equal(vstr_str(out), vstr_str(want));
    vstr_free(out);
    vstr_free(want);
}

/* test_long_lines - rewriting a line full of links keeps lines short */
static void test_long_lines(void **state)
{
    VSTR *html = vstr_alloc(1024);
    char *out;
    size_t n;
    const char *line;

    for (int i = 0; i < 30; i++)
        vstr_cat(html, "<a href=\"http://a.test/\">x</a>");
    out = rewrite(vstr_str(html), NULL, &n);
    assert_int_equal(n, 30);
    for (line = out; *line;) {
        size_t len = strcspn(line, "\n");

        assert_true(len <= TRACK_HTML_LINE_MAX);
        line += len + (line[len] == '\n');
    }
    free(out);
    vstr_free(html);
}

/* test_unescape - named and numeric references; others kept */
static void test_unescape(void **state)
{
    VSTR *out = vstr_alloc(16);
    const char *in = "a&amp;b&#61;c&#x3D;d&nbsp;e&#99999999;&";

    track_html_unescape(in, strlen(in), out);
    assert_string_equal(vstr_str(out), "a&b=c=d&nbsp;e&#99999999;&");
    vstr_free(out);
}

/* test_qp_split_link - a link split by QP soft line breaks (and an =3D in
   it) is found whole; the part comes back as QP of lines <= 76 */
static void test_qp_split_link(void **state)
{
    const char *body = "<a hr=\nef=3D\"http://split.exa=\nmple.test/p?q=3D1\">"
                       "x</a>\n";
    VSTR *seen = vstr_alloc(64);
    TRACK_HTML_OPTS opts = {test_link, seen, NULL};
    VSTR *out = vstr_alloc(64);
    VSTR *back = vstr_alloc(64);

    assert_int_equal(track_mime_rewrite("text/html", "Quoted-Printable", body,
                                        strlen(body), out, &opts),
                     1);
    assert_string_equal(vstr_str(seen), "http://split.example.test/p?q=1|");
    track_qp_decode(vstr_str(out), vstr_len(out), back);
    assert_string_equal(vstr_str(back),
                        "<a href=\"https://t.test/c/31\">x</a>\n");
    vstr_free(seen);
    vstr_free(out);
    vstr_free(back);
}

/* test_multipart_base64 - nested multipart: the base64 HTML part is
   rewritten and re-encoded, the text part and the delimiters copied */
static void test_multipart_base64(void **state)
{
    VSTR *b64 = vstr_alloc(64);
    VSTR *body = vstr_alloc(256);
    VSTR *out = vstr_alloc(256);
    VSTR *plain = vstr_alloc(64);
    TRACK_HTML_OPTS opts = {test_link, NULL, "https://t.test/o/P"};
    const char *html = "<html><body><a href=\"http://b.test/\">b</a>"
                       "</body></html>\r\n";
    const char *at;

    track_b64_encode(html, strlen(html), b64);
    vstr_sprintf(body,
                 "pre\n--out\nContent-Type: multipart/alternative;\n"
                 " boundary=\"in\"\n\n--in\nContent-Type: text/plain\n\n"
                 "<a href=\"http://t.test/\">\n--in\nContent-Type: text/html\n"
                 "Content-Transfer-Encoding: base64\n\n%s--in--\n"
                 "--out--\nepilogue\n",
                 vstr_str(b64));
    assert_int_equal(track_mime_rewrite("multipart/mixed; boundary=out", NULL,
                                        vstr_str(body), vstr_len(body), out,
                                        &opts),
                     2);
    /* Everything before the HTML part's body is unchanged. */
    at = strstr(vstr_str(body), "base64\n\n") + 8;
    assert_memory_equal(vstr_str(out), vstr_str(body),
                        (size_t) (at - vstr_str(body)));
    assert_non_null(strstr(vstr_str(out), "--in--\n--out--\nepilogue\n"));
    {
        const char *start = vstr_str(out) + (at - vstr_str(body));
        const char *end = strstr(start, "--in--");

        assert_int_equal(track_b64_decode(start, (size_t) (end - start), plain),
                         0);
    }
    assert_non_null(strstr(vstr_str(plain), "href=\"https://t.test/c/14\""));
    assert_non_null(strstr(vstr_str(plain), "/o/P"));
    vstr_free(b64);
    vstr_free(body);
    vstr_free(out);
    vstr_free(plain);
}

/* test_huge_and_deep - a 4 MB part of links and 100 nested multiparts
   finish (depth is bounded; deeper parts are copied) */
static void test_huge_and_deep(void **state)
{
    VSTR *html = vstr_alloc(1 << 22);
    VSTR *out = vstr_alloc(1 << 22);
    TRACK_HTML_OPTS opts = {test_link, NULL, NULL};
    size_t n;

    while (vstr_len(html) < (4u << 20))
        vstr_cat(html, "<a href=\"http://h.test/\">h</a> \n");
    n = track_mime_rewrite("text/html", "8bit", vstr_str(html), vstr_len(html),
                           out, &opts);
    assert_true(n > 100000);
    vstr_reset(html);
    vstr_reset(out);
    for (int i = 0; i < 100; i++)
        vstr_cat(html, "--b\nContent-Type: multipart/mixed; boundary=b\n\n");
    vstr_cat(html, "<a href=\"http://h.test/\">h</a>\n");
    (void) track_mime_rewrite("multipart/mixed; boundary=b", NULL,
                              vstr_str(html), vstr_len(html), out, &opts);
    assert_int_equal(vstr_len(out), vstr_len(html));
    vstr_free(html);
    vstr_free(out);
}

/* test_tokens - round trips; the mailto form; tampering and the wrong
   purpose refused; a click token for a non-http URL refused */
static void test_tokens(void **state)
{
    VSTR *key =
        vstr_ncpy(vstr_alloc(32), "0123456789abcdef0123456789abcdef", 32);
    VSTR *tok = vstr_alloc(64);
    VSTR *addr = vstr_alloc(64);
    TRACK_TOKEN t;

    assert_int_equal(track_token_make(tok, key, TRACK_PURPOSE_UNSUB, "QID1",
                                      "a@b.test", "acme", "news"),
                     0);
    assert_int_equal(
        track_token_parse(key, TRACK_PURPOSE_UNSUB, vstr_str(tok), &t), 0);
    assert_string_equal(t.qid, "QID1");
    assert_string_equal(t.recipient, "a@b.test");
    assert_string_equal(t.tenant, "acme");
    assert_string_equal(t.extra, "news");
    track_token_free(&t);
    vstr_sprintf(addr, "Unsubscribe+%s@Bounce.Test", vstr_str(tok));
    assert_int_equal(unsub_token_parse(key, vstr_str(addr), &t), 0);
    assert_string_equal(t.recipient, "a@b.test");
    track_token_free(&t);
    assert_int_equal(unsub_token_parse(key, vstr_str(tok), &t), -1);
    assert_int_equal(
        track_token_parse(key, TRACK_PURPOSE_CLICK, vstr_str(tok), &t), -1);
    vstr_str(tok)[3] = vstr_str(tok)[3] == 'a' ? 'b' : 'a';
    assert_int_equal(
        track_token_parse(key, TRACK_PURPOSE_UNSUB, vstr_str(tok), &t), -1);
    vstr_reset(tok);
    assert_int_equal(
        track_token_make(tok, key, TRACK_PURPOSE_OPEN, "Q", "", NULL, NULL), 0);
    assert_int_equal(
        track_token_parse(key, TRACK_PURPOSE_OPEN, vstr_str(tok), &t), 0);
    assert_string_equal(t.recipient, "");
    track_token_free(&t);
    vstr_reset(tok);
    assert_int_equal(track_token_make(tok, key, TRACK_PURPOSE_CLICK, "Q", "",
                                      "", "javascript:alert(1)"),
                     0);
    assert_int_equal(
        track_token_parse(key, TRACK_PURPOSE_CLICK, vstr_str(tok), &t), -1);
    assert_int_equal(
        track_token_make(tok, key, TRACK_PURPOSE_OPEN, "Q", "a\nb", NULL, NULL),
        -1);
    vstr_free(key);
    vstr_free(tok);
    vstr_free(addr);
}

/* test_token_event - the event a token records: the fields of the kind,
   "" as unknown (NULL), the caller's seq */
static void test_token_event(void **state)
{
    VSTR *key =
        vstr_ncpy(vstr_alloc(32), "0123456789abcdef0123456789abcdef", 32);
    VSTR *tok = vstr_alloc(64);
    TRACK_TOKEN t;
    EVENT ev;

    assert_int_equal(track_token_make(tok, key, TRACK_PURPOSE_UNSUB, "QID1",
                                      "a@b.test", "", "news"),
                     0);
    assert_int_equal(
        track_token_parse(key, TRACK_PURPOSE_UNSUB, vstr_str(tok), &t), 0);
    track_token_event(&ev, EVENTS_UNSUBSCRIBED, &t, "QIN.42");
    assert_string_equal(ev.kind, EVENTS_UNSUBSCRIBED);
    assert_string_equal(ev.qid, "QID1");
    assert_string_equal(ev.seq, "QIN.42");
    assert_string_equal(ev.recipient, "a@b.test");
    assert_null(ev.tenant);
    assert_string_equal(ev.list, "news");
    assert_null(ev.url);
    track_token_free(&t);
    vstr_reset(tok);
    assert_int_equal(track_token_make(tok, key, TRACK_PURPOSE_CLICK, "QID2", "",
                                      "acme", "https://x.test/"),
                     0);
    assert_int_equal(
        track_token_parse(key, TRACK_PURPOSE_CLICK, vstr_str(tok), &t), 0);
    track_token_event(&ev, EVENTS_CLICKED, &t, "1.000002");
    assert_null(ev.recipient);
    assert_string_equal(ev.tenant, "acme");
    assert_string_equal(ev.url, "https://x.test/");
    assert_null(ev.list);
    track_token_free(&t);
    vstr_free(key);
    vstr_free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quotes_case_entities),
        cmocka_unit_test(test_left_alone),
        cmocka_unit_test(test_pixel),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_qp_split_link),
        cmocka_unit_test(test_multipart_base64),
        cmocka_unit_test(test_huge_and_deep),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_token_event),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
