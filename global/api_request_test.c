/*
 * api_request_test - the HTTP API's codecs: quoted-printable lines, RFC
 * 2047 words, strict base64, the MIME a request builds (exact text), the
 * errors of bad requests, and api_keys: a created key is found with its
 * tenant and scopes, the file holds only its hash, a wrong secret, a
 * revoked key and a malformed line grant nothing
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>
#include <time.h>

#include "api_keys.h"
#include "api_mime.h"
#include "api_mustache.h"
#include "api_request.h"
#include "mymalloc.h"
#include "testlib.h"
#include "vstr.h"

/* test_qp - '=' escaped, trailing space escaped, soft breaks at 76 */
static void test_qp(void **state)
{
    VSTR *out = vstr_alloc(100);
    char long_line[200];

    api_mime_qp_append(out, "a=b \r\nc\xc3\xa9\rd", 11);
    assert_string_equal(vstr_str(out), "a=3Db=20\nc=C3=A9\nd\n");
    memset(long_line, 'x', 150);
    long_line[150] = 0;
    vstr_reset(out);
    api_mime_qp_append(out, long_line, 150);
    assert_int_equal(strcspn(vstr_str(out), "\n"), 76); /* 75 + '=' */
    assert_memory_equal(vstr_str(out) + 75, "=\n", 2);
    vstr_free(out);
}

/* test_header_text - plain ASCII kept; UTF-8 in words, never split */
static void test_header_text(void **state)
{
    VSTR *out = vstr_alloc(100);
    const char *hello = "Gr\xc3\xbc\xc3\x9f Gott";

    api_mime_header_text(out, "plain text", 10);
    assert_string_equal(vstr_str(out), "plain text");
    vstr_reset(out);
    api_mime_header_text(out, hello, strlen(hello));
    assert_string_equal(vstr_str(out), "=?UTF-8?B?R3LDvMOfIEdvdHQ=?=");
    vstr_reset(out);
    api_mime_phrase(out, "A \"B\"", 5);
    assert_string_equal(vstr_str(out), "\"A \\\"B\\\"\"");
    vstr_free(out);
}

/* test_base64 - decode, padding, bad characters, bad length */
static void test_base64(void **state)
{
    VSTR *out = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    assert_int_equal(api_mime_base64_decode(out, "aGk=\n", 5, why), 0);
    assert_string_equal(vstr_str(out), "hi");
    assert_int_equal(api_mime_base64_decode(out, "aGk", 3, why), 0);
    assert_string_equal(vstr_str(out), "hi");
    assert_int_equal(api_mime_base64_decode(out, "a*k=", 4, why), -1);
    assert_string_equal(vstr_str(why), "bad base64 character at offset 1");
    assert_int_equal(api_mime_base64_decode(out, "aGk=aa", 6, why), -1);
    assert_int_equal(api_mime_base64_decode(out, "aGkxa", 5, why), -1);
    assert_string_equal(vstr_str(why), "bad base64 length");
    vstr_free(out);
    vstr_free(why);
}

static const API_LIMITS limits = {3, 100000};

/* test_build - the exact MIME of a text + html request */
static void test_build(void **state)
{
    const char *req = "{\"from\": \"Shop <s@a.test>\", \"to\": [\"b@c.test\"],"
                      " \"bcc\": \"d@c.test\", \"subject\": \"Hi\","
                      " \"text\": \"t=1\", \"html\": \"<p>\","
                      " \"headers\": {\"X-Tag\": \"v\"}}";
    API_ERROR err;
    API_MESSAGE *msg;

    api_error_init(&err);
    msg = api_request_parse(req, strlen(req), &limits, &err);
    assert_non_null(msg);
    assert_string_equal(msg->sender, "s@a.test");
    assert_int_equal(msg->rcpts->argc, 2);
    assert_string_equal(msg->rcpts->argv[1], "d@c.test");
    assert_string_equal(vstr_str(msg->content),
                        "From: \"Shop\" <s@a.test>\n"
                        "To: b@c.test\n"
                        "Subject: Hi\n"
                        "X-Tag: v\n"
                        "MIME-Version: 1.0\n"
                        "Content-Type: multipart/alternative;\n"
                        "\tboundary=\"=_sluice_alternative\"\n\n"
                        "This is a message in MIME format.\n\n"
                        "--=_sluice_alternative\n"
                        "Content-Type: text/plain; charset=utf-8\n"
                        "Content-Transfer-Encoding: quoted-printable\n\n"
                        "t=3D1\n"
                        "\n--=_sluice_alternative\n"
                        "Content-Type: text/html; charset=utf-8\n"
                        "Content-Transfer-Encoding: quoted-printable\n\n"
                        "<p>\n"
                        "\n--=_sluice_alternative--\n");
    api_message_free(msg);
    api_error_free(&err);
}

/* expect_error - req fails with status, code and field */
static void expect_error(const char *req, int status, const char *code,
                         const char *field)
{
    API_ERROR err;
    VSTR *json = vstr_alloc(100);

    api_error_init(&err);
    assert_null(api_request_parse(req, strlen(req), &limits, &err));
    assert_int_equal(err.status, status);
    assert_string_equal(err.code, code);
    assert_string_equal(vstr_str(err.field), field);
    api_error_json(&err, json);
    assert_non_null(strstr(vstr_str(json), code));
    api_error_free(&err);
    vstr_free(json);
}

/* test_errors - each bad request's status, code and field */
static void test_errors(void **state)
{
    expect_error("{", 400, "invalid_json", "");
    expect_error("{\"to\": \"b@c.test\", \"text\": \"t\"}", 400,
                 "missing_field", "from");
    expect_error("{\"from\": \"a@b.test\", \"to\": [\"b@c.test\", \"x y\"],"
                 " \"text\": \"t\"}",
                 422, "invalid_address", "to[1]");
    expect_error(
        "{\"from\": \"a@b.test\", \"to\": [\"1@c.test\", \"2@c.test\"],"
        " \"cc\": [\"3@c.test\", \"4@c.test\"], \"text\": \"t\"}",
        422, "too_many_recipients", "cc");
    expect_error("{\"from\": \"a@b.test\", \"to\": \"b@c.test\","
                 " \"subject\": \"x\\nBcc: e@c.test\", \"text\": \"t\"}",
                 400, "invalid_field", "subject");
    expect_error("{\"from\": \"a@b.test\", \"to\": \"b@c.test\","
                 " \"text\": \"t\", \"send_later\": 5}",
                 400, "invalid_field", "\"send_later\"");
}

#define EXTRA_REQ(extra)                                                       \
    "{\"from\": \"a@b.test\", \"to\": \"b@c.test\", \"text\": \"t\", " extra "}"

/* test_send_at - an RFC 3339 time with its offset applied; one past is
   at once (0) */
static void test_send_at(void)
{
    char req[256];
    char stamp[64];
    time_t ahead = time(NULL) + 3600;
    struct tm tm;
    API_ERROR err;
    API_MESSAGE *msg;

    /* One hour ahead, written as local time at -02:30. */
    time_t shifted = ahead - (2 * 3600 + 1800);

    gmtime_r(&shifted, &tm);
    assert_true(
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S.25-02:30", &tm) > 0);
    (void) snprintf(req, sizeof(req), EXTRA_REQ("\"send_at\": \"%s\""), stamp);
    api_error_init(&err);
    msg = api_request_parse(req, strlen(req), &limits, &err);
    assert_non_null(msg);
    assert_int_equal(msg->not_before, (long long) ahead);
    api_message_free(msg);
    (void) snprintf(req, sizeof(req),
                    EXTRA_REQ("\"send_at\": \"2020-01-01T00:00:00Z\""));
    msg = api_request_parse(req, strlen(req), &limits, &err);
    assert_non_null(msg);
    assert_int_equal(msg->not_before, 0);
    api_message_free(msg);
    api_error_free(&err);
}

/* test_extras - tags and metadata as compact JSON, pool as the first
   header; each bad value a 422 naming its field */
static void test_extras(void **state)
{
    const char *req =
        EXTRA_REQ("\"tags\": [\"welcome\", \"t 2\"], "
                  "\"metadata\": {\"user\": \"42\", \"a\": \"\"}, "
                  "\"pool\": \"bulk-1\"");
    API_ERROR err;
    API_MESSAGE *msg;
    VSTR *big = vstr_alloc(100);

    api_error_init(&err);
    msg = api_request_parse(req, strlen(req), &limits, &err);
    assert_non_null(msg);
    assert_string_equal(msg->tags, "[\"welcome\",\"t 2\"]");
    assert_string_equal(msg->metadata, "{\"a\":\"\",\"user\":\"42\"}");
    assert_memory_equal(vstr_str(msg->content),
                        "X-Sluice-Pool: bulk-1\nFrom: ", 28);
    api_message_free(msg);
    api_error_free(&err);

    expect_error(EXTRA_REQ("\"tags\": \"x\""), 422, "invalid_value", "tags");
    expect_error(EXTRA_REQ("\"tags\": [\"ok\", \"\"]"), 422, "invalid_value",
                 "tags[1]");
    expect_error(EXTRA_REQ("\"tags\": [\"a\\nb\"]"), 422, "invalid_value",
                 "tags[0]");
    expect_error(EXTRA_REQ("\"metadata\": [1]"), 422, "invalid_value",
                 "metadata");
    expect_error(EXTRA_REQ("\"metadata\": {\"k\": {\"nested\": \"x\"}}"), 422,
                 "invalid_value", "metadata.k");
    expect_error(EXTRA_REQ("\"metadata\": {\"bad key\": \"x\"}"), 422,
                 "invalid_value", "metadata");
    expect_error(EXTRA_REQ("\"pool\": \"a/b\""), 422, "invalid_value", "pool");
    expect_error(EXTRA_REQ("\"send_at\": \"2026-12-05\""), 422, "invalid_value",
                 "send_at");
    expect_error(EXTRA_REQ("\"send_at\": \"2026-13-05T00:00:00Z\""), 422,
                 "invalid_value", "send_at");
    expect_error(EXTRA_REQ("\"send_at\": \"9999-01-01T00:00:00Z\""), 422,
                 "invalid_value", "send_at");
    expect_error(EXTRA_REQ("\"headers\": {\"X-Sluice-Pool\": \"p\"}"), 400,
                 "invalid_field", "headers.X-Sluice-Pool");
    /* 4096 bytes of keys and values at most. */
    vstr_cpy(big, EXTRA_REQ("\"metadata\": {\"k\": \""));
    vstr_truncate(big, vstr_len(big) - 1);
    for (int i = 0; i < 4096; i++)
        vstr_addch(big, 'v');
    vstr_cat(big, "\"}}");
    expect_error(vstr_str(big), 422, "invalid_value", "metadata");
    /* Within the raw limits, but longer than cleanup takes once escaped:
       20 tags of 64 '"' (2621 bytes as JSON) and 2000 "é" (12 KB). */
    vstr_cpy(big, EXTRA_REQ("\"tags\": ["));
    vstr_truncate(big, vstr_len(big) - 1);
    for (int t = 0; t < 20; t++) {
        vstr_cat(big, t ? ", \"" : "\"");
        for (int i = 0; i < 64; i++)
            vstr_cat(big, "\\\"");
        vstr_addch(big, '"');
    }
    vstr_cat(big, "]}");
    expect_error(vstr_str(big), 422, "invalid_value", "tags");
    vstr_cpy(big, EXTRA_REQ("\"metadata\": {\"k\": \""));
    vstr_truncate(big, vstr_len(big) - 1);
    for (int i = 0; i < 2000; i++)
        vstr_cat(big, "\xc3\xa9");
    vstr_cat(big, "\"}}");
    expect_error(vstr_str(big), 422, "invalid_value", "metadata");
    expect_error(EXTRA_REQ("\"metadata\": {\"k\": \"a\\u0001b\"}"), 422,
                 "invalid_value", "metadata.k");
    vstr_free(big);
    test_send_at();
}

/* test_keys - create, look up, list, revoke */
static void test_keys(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("api_keys_test");
    const char *path;
    VSTR *key = vstr_alloc(80);
    VSTR *why = vstr_alloc(80);
    VSTR *list = vstr_alloc(80);
    API_KEY found;
    char *text;

    assert_non_null(dir);
    path = mystrdup(testlib_path(dir, "api_keys"));
    assert_int_equal(api_keys_create(path, "acme", API_SCOPE_SEND, key, why),
                     0);
    assert_int_equal(vstr_len(key), 3 + 12 + 1 + 48);
    assert_int_equal(api_keys_lookup(path, vstr_str(key), &found, why),
                     API_KEYS_OK);
    assert_string_equal(found.tenant, "acme");
    assert_int_equal(found.scopes, API_SCOPE_SEND);
    text = testlib_read(path, NULL);
    assert_null(strstr(text, vstr_str(key) + 16)); /* no secret */
    myfree(text);
    /* One wrong digit of the secret. */
    vstr_str(key)[20] = vstr_str(key)[20] == '0' ? '1' : '0';
    assert_int_equal(api_keys_lookup(path, vstr_str(key), &found, why),
                     API_KEYS_UNKNOWN);
    assert_int_equal(api_keys_lookup(path, "sk_short", &found, why),
                     API_KEYS_UNKNOWN);
    assert_int_equal(api_keys_list(path, list, why), 0);
    assert_non_null(strstr(vstr_str(list), " acme send\n"));
    assert_int_equal(
        api_keys_create(path, "bad tenant", API_SCOPE_SEND, key, why), -1);
    /* "." and ".." would name a folder that is not the tenant's */
    assert_int_equal(api_keys_create(path, "..", API_SCOPE_SEND, key, why), -1);
    assert_non_null(strstr(vstr_str(why), "bad tenant name"));
    assert_int_equal(api_keys_create(path, ".", API_SCOPE_SEND, key, why), -1);
    assert_false(api_keys_tenant_ok(".."));
    assert_true(api_keys_tenant_ok("..a"));
    assert_int_equal(api_keys_revoke(path, "acme", why), 1);
    assert_int_equal(api_keys_revoke(path, "acme", why), 0);
    assert_int_equal(api_keys_scopes("send,admin"),
                     API_SCOPE_SEND | API_SCOPE_ADMIN);
    assert_int_equal(api_keys_scopes("send,root"), -1);
    myfree((void *) path);
    vstr_free(key);
    vstr_free(why);
    vstr_free(list);
    assert_int_equal(testlib_dir_remove(dir), 0);
}

/* render - text rendered with JSON data; NULL (why) when it fails */
static char *render(const char *text, const char *data, bool escape, VSTR *why)
{
    json_error_t jerr;
    json_t *json = json_loads(data, 0, &jerr);
    API_MUSTACHE *tmpl = api_mustache_compile(text, strlen(text), why);
    VSTR *out = vstr_alloc(100);
    char *result = NULL;

    assert_non_null(json);
    if (tmpl != NULL &&
        api_mustache_render(tmpl, json, escape, 1000, 0, out, why) == 0)
        result = mystrdup(vstr_str(out));
    api_mustache_free(tmpl);
    json_decref(json);
    vstr_free(out);
    return result;
}

/* expect_render - text with data gives want */
static void expect_render(const char *text, const char *data, bool escape,
                          const char *want)
{
    VSTR *why = vstr_alloc(100);
    char *got = render(text, data, escape, why);

    assert_non_null(got);
    assert_string_equal(got, want);
    myfree(got);
    vstr_free(why);
}

/* expect_compile_error - text fails to compile with why */
static void expect_compile_error(const char *text, const char *want)
{
    VSTR *why = vstr_alloc(100);

    assert_null(api_mustache_compile(text, strlen(text), why));
    assert_string_equal(vstr_str(why), want);
    vstr_free(why);
}

/* test_mustache - the language, its errors and its bounds */
static void test_mustache(void **state)
{
    VSTR *why = vstr_alloc(100);

    expect_render("Hi {{name}}!", "{\"name\": \"<A&B>\"}", true,
                  "Hi &lt;A&amp;B&gt;!");
    expect_render("Hi {{name}}!", "{\"name\": \"<A&B>\"}", false, "Hi <A&B>!");
    expect_render("{{{name}}}{{& name}}", "{\"name\": \"<b>\"}", true,
                  "<b><b>");
    expect_render("{{a.b.c}} {{n}} {{f}} {{t}} {{none}}",
                  "{\"a\": {\"b\": {\"c\": \"deep\"}}, \"n\": 3, "
                  "\"f\": 1.5, \"t\": true}",
                  false, "deep 3 1.5 true ");
    expect_render("{{#l}}[{{.}}{{x}}]{{/l}}{{^l}}none{{/l}}",
                  "{\"l\": [1, {\"x\": \"y\"}], \"x\": \"o\"}", false,
                  "[1o][y]");
    expect_render("{{#l}}x{{/l}}{{^l}}none{{/l}}{{! gone }}", "{\"l\": []}",
                  false, "none");
    expect_render("{{#o}}{{k}}{{/o}}{{#f}}no{{/f}}",
                  "{\"o\": {\"k\": \"v\"}, \"f\": false}", false, "v");
    expect_compile_error("a\n{{#s}} open",
                         "line 2: section \"s\" is not closed");
    expect_compile_error("{{#a}}{{/b}}",
                         "line 1: {{/b}} closes section \"a\" of line 1");
    expect_compile_error("{{/a}}", "line 1: {{/a}} closes no section");
    expect_compile_error("{{> p}}", "line 1: partial tags are not supported");
    expect_compile_error("{{}}", "line 1: an empty or malformed tag");
    expect_compile_error("{{a", "line 1: a tag is not closed with }}");
    /* Bounds: output past max_out, steps past the limit. */
    assert_null(render("{{#l}}0123456789{{/l}}",
                       "{\"l\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,"
                       "19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,"
                       "37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,"
                       "55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,"
                       "73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,"
                       "91,92,93,94,95,96,97,98,99,100,101]}",
                       false, why));
    assert_string_equal(vstr_str(why), "the rendered text exceeds 1000 bytes");
    assert_null(render(
        "{{#l}}{{#l}}{{#l}}{{#l}}{{#l}}{{#l}}{{#l}}{{/l}}{{/l}}{{/l}}{{/l}}"
        "{{/l}}{{/l}}{{/l}}",
        "{\"l\": [1,2,3,4,5,6,7,8,9,10]}", false, why));
    assert_string_equal(vstr_str(why),
                        "the template takes more than 1000000 steps to render");
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qp),       cmocka_unit_test(test_header_text),
        cmocka_unit_test(test_base64),   cmocka_unit_test(test_build),
        cmocka_unit_test(test_errors),   cmocka_unit_test(test_keys),
        cmocka_unit_test(test_mustache), cmocka_unit_test(test_extras),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
