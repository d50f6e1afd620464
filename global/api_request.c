/*
 * api_request - the JSON body of POST /v1/messages, checked and made MIME
 *
 * jansson parses the body (duplicate keys refused, NUL in strings refused,
 * UTF-8 checked); every field is then checked here before anything is
 * built, so a request is either a whole message or an error naming the
 * first thing wrong. Multipart boundaries start with "=_", which no
 * quoted-printable part can contain.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <time.h>
#include <jansson.h>

#include "api_mime.h"
#include "api_request.h"
#include "argv.h"
#include "cleanup_proto.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "submit_check.h"
#include "vstr.h"

#define API_REQUEST_HEADERS_MAX 100 /* entries of "headers" */
#define API_REQUEST_HEADER_NAME_MAX 76
#define API_REQUEST_BOUNDARY "=_sluice_alternative"
#define API_REQUEST_MIXED "=_sluice_mixed"
#define API_REQUEST_ATTACHMENTS_MAX 100
#define API_REQUEST_TAGS_MAX 20 /* entries of "tags" */
#define API_REQUEST_TAG_LEN 64 /* bytes of one tag */
#define API_REQUEST_META_KEY_LEN 64 /* bytes of a "metadata" key */
#define API_REQUEST_META_MAX 4096 /* bytes of metadata keys and values */
#define API_REQUEST_POOL_LEN 64

/* Header fields the API writes itself: "headers" may not name them. */
static const char *const api_request_reserved[] = {
    "from",          "to",           "cc",
    "bcc",           "reply-to",     "subject",
    "mime-version",  "content-type", "content-transfer-encoding",
    "x-sluice-pool",
};

/* The fields a request may have; all others are refused by name. */
static const char *const api_request_fields[] = {
    "from",        "to",   "cc",       "bcc",     "reply_to",
    "subject",     "text", "html",     "headers", "raw",
    "attachments", "tags", "metadata", "pool",    "send_at",
};

/* api_error_init - an API_ERROR with empty strings */
void api_error_init(API_ERROR *err)
{
    err->status = 0;
    err->code = "";
    err->field = vstr_alloc(32);
    err->message = vstr_alloc(100);
}

/* api_error_free - release an API_ERROR's strings */
void api_error_free(API_ERROR *err)
{
    err->field = vstr_free(err->field);
    err->message = vstr_free(err->message);
}

/* api_error_set - fill in err; returns NULL for the caller to return */
static void *api_error_set(API_ERROR *err, int status, const char *code,
                           const char *field, const char *fmt, ...)
    SLUICE_PRINTF(5, 6);

static void *api_error_set(API_ERROR *err, int status, const char *code,
                           const char *field, const char *fmt, ...)
{
    va_list ap;

    err->status = status;
    err->code = code;
    vstr_cpy(err->field, field);
    vstr_reset(err->message);
    va_start(ap, fmt);
    vstr_vsprintf_append(err->message, fmt, ap);
    va_end(ap);
    return NULL;
}

/* api_error_string - a JSON string of text: as it is when it is UTF-8,
   else with every byte above 0x7f made '?' (a parser's message may quote
   the client's bad bytes) */
static json_t *api_error_string(const VSTR *text)
{
    json_t *str = json_stringn(vstr_str(text), vstr_len(text));

    if (str == NULL) {
        char *copy = mymemdup(vstr_str(text), vstr_len(text));

        for (size_t i = 0; i < vstr_len(text); i++)
            if ((unsigned char) copy[i] > 0x7f)
                copy[i] = '?';
        str = json_stringn(copy, vstr_len(text));
        myfree(copy);
    }
    return str;
}

/* api_error_json - append {"error":{"code":..,"message":..,"field":..}} */
void api_error_json(const API_ERROR *err, VSTR *out)
{
    json_t *obj = json_object();
    json_t *inner = json_object();
    char *text;

    json_object_set_new(inner, "code", json_string(err->code));
    json_object_set_new(inner, "message", api_error_string(err->message));
    if (vstr_len(err->field) > 0)
        json_object_set_new(inner, "field", api_error_string(err->field));
    json_object_set_new(obj, "error", inner);
    if ((text = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII)) != NULL) {
        vstr_cat(out, text);
        free(text);
    }
    json_decref(obj);
}

/* api_request_has_crlf - does text hold CR or LF? */
static bool api_request_has_crlf(const char *text, size_t len)
{
    return memchr(text, '\r', len) != NULL || memchr(text, '\n', len) != NULL;
}

/* api_request_no_controls - is text free of control characters but tab? */
static bool api_request_no_controls(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) text[i];

        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    return true;
}

/* API_MAILBOX - one "Name <addr>" or "addr" */
typedef struct API_MAILBOX {
    VSTR *name; /* display name, "" for none */
    VSTR *addr; /* bare address */
} API_MAILBOX;

/* api_request_mailbox - parse a mailbox string; 0, or -1 with err */
static int api_request_mailbox(const char *field, json_t *value,
                               API_MAILBOX *box, API_ERROR *err)
{
    const char *text;
    size_t len;
    const char *lt;
    VSTR *why;
    int ret = 0;

    if (!json_is_string(value)) {
        api_error_set(err, 400, "invalid_field", field, "%s must be a string",
                      field);
        return -1;
    }
    text = json_string_value(value);
    len = json_string_length(value);
    if (api_request_has_crlf(text, len)) {
        api_error_set(err, 400, "invalid_field", field,
                      "%s contains CR or LF (header injection)", field);
        return -1;
    }
    while (len > 0 && (*text == ' ' || *text == '\t'))
        text++, len--;
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
        len--;
    vstr_reset(box->name);
    if (len > 0 && text[len - 1] == '>' &&
        (lt = memrchr(text, '<', len)) != NULL) {
        size_t name_len = (size_t) (lt - text);

        while (name_len > 0 &&
               (text[name_len - 1] == ' ' || text[name_len - 1] == '\t'))
            name_len--;
        if (name_len >= 2 && text[0] == '"' && text[name_len - 1] == '"')
            vstr_ncpy(box->name, text + 1, name_len - 2);
        else
            vstr_ncpy(box->name, text, name_len);
        vstr_ncpy(box->addr, lt + 1, (size_t) (text + len - 1 - (lt + 1)));
    } else {
        vstr_ncpy(box->addr, text, len);
    }
    why = vstr_alloc(64);
    if (!api_request_no_controls(vstr_str(box->name), vstr_len(box->name))) {
        api_error_set(err, 400, "invalid_field", field,
                      "%s: the name contains a control character", field);
        ret = -1;
    } else if (vstr_len(box->addr) == 0 ||
               memchr(vstr_str(box->addr), 0, vstr_len(box->addr)) != NULL ||
               submit_check_address(vstr_str(box->addr), false, why) < 0 ||
               smtp_addr_check(vstr_str(box->addr), vstr_len(box->addr), why) <
                   0 ||
               smtp_addr_domain(vstr_str(box->addr)) == NULL) {
        VSTR *quoted = vstr_alloc(80);

        submit_check_quote(quoted, vstr_str(box->addr), SUBMIT_CHECK_QUOTE_MAX);
        api_error_set(err, 422, "invalid_address", field,
                      "%s: %s is not a valid address%s%s", field,
                      vstr_str(quoted), vstr_len(why) ? ": " : "",
                      vstr_str(why));
        vstr_free(quoted);
        ret = -1;
    }
    vstr_free(why);
    return ret;
}

/* api_request_check_mailbox - one mailbox, checked as "to" is */
int api_request_check_mailbox(const char *field, const char *text, size_t len,
                              VSTR *addr, API_ERROR *err)
{
    API_MAILBOX box = {vstr_alloc(32), vstr_alloc(64)};
    json_t *value = json_stringn(text, len);
    int ret;

    if (value == NULL) {
        api_error_set(err, 400, "invalid_field", field,
                      "%s must be a UTF-8 string", field);
        ret = -1;
    } else if ((ret = api_request_mailbox(field, value, &box, err)) == 0) {
        vstr_cpy(addr, vstr_str(box.addr));
    }
    json_decref(value);
    vstr_free(box.name);
    vstr_free(box.addr);
    return ret;
}

/* API_LIST - the mailboxes of one address field */
typedef struct API_LIST {
    ARGV *names;
    ARGV *addrs;
} API_LIST;

/* api_request_list - a string or array of mailboxes into list; 0 or -1 */
static int api_request_list(const char *name, json_t *value, API_LIST *list,
                            const API_LIMITS *limits, size_t *total,
                            API_ERROR *err)
{
    API_MAILBOX box = {vstr_alloc(32), vstr_alloc(64)};
    VSTR *field = vstr_alloc(32);
    size_t count = json_is_array(value) ? json_array_size(value) : 1;
    int ret = 0;

    if (!json_is_array(value) && !json_is_string(value)) {
        api_error_set(err, 400, "invalid_field", name,
                      "%s must be a string or an array of strings", name);
        ret = -1;
    } else if (count == 0) {
        api_error_set(err, 400, "invalid_field", name, "%s is empty", name);
        ret = -1;
    } else if (count > limits->max_recipients ||
               *total + count > limits->max_recipients) {
        api_error_set(err, 422, "too_many_recipients", name,
                      "more than %zu recipients (api_max_recipients)",
                      limits->max_recipients);
        ret = -1;
    }
    for (size_t i = 0; ret == 0 && i < count; i++) {
        json_t *item = json_is_array(value) ? json_array_get(value, i) : value;

        if (json_is_array(value))
            vstr_sprintf(field, "%s[%zu]", name, i);
        else
            vstr_cpy(field, name);
        if (api_request_mailbox(vstr_str(field), item, &box, err) < 0) {
            ret = -1;
        } else {
            argv_add(list->names, vstr_str(box.name));
            argv_add(list->addrs, vstr_str(box.addr));
        }
    }
    if (ret == 0)
        *total += count;
    vstr_free(box.name);
    vstr_free(box.addr);
    vstr_free(field);
    return ret;
}

/* api_request_addr_header - "Name: a,\n\tb\n" from a list */
static void api_request_addr_header(VSTR *out, const char *header,
                                    const API_LIST *list)
{
    vstr_sprintf_append(out, "%s: ", header);
    for (size_t i = 0; i < list->addrs->argc; i++) {
        const char *name = list->names->argv[i];

        if (i > 0)
            vstr_cat(out, ",\n\t");
        if (*name) {
            api_mime_phrase(out, name, strlen(name));
            vstr_sprintf_append(out, " <%s>", list->addrs->argv[i]);
        } else {
            vstr_cat(out, list->addrs->argv[i]);
        }
    }
    vstr_addch(out, '\n');
}

/* api_request_header_name_ok - ftext (RFC 5322 3.6.8) of a sane length */
static bool api_request_header_name_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > API_REQUEST_HEADER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] < 33 || name[i] > 126 || name[i] == ':')
            return false;
    return true;
}

/* api_request_reserved - is name a header the API writes itself? */
static bool api_request_is_reserved(const char *name)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(api_request_reserved); i++)
        if (strcasecmp(name, api_request_reserved[i]) == 0)
            return true;
    return false;
}

/* api_request_headers - the "headers" object as header lines; 0 or -1 */
static int api_request_headers(json_t *headers, VSTR *out, API_ERROR *err)
{
    VSTR *field = vstr_alloc(64);
    const char *name;
    json_t *value;
    int ret = 0;

    if (!json_is_object(headers)) {
        api_error_set(err, 400, "invalid_field", "headers",
                      "headers must be an object of strings");
        ret = -1;
    } else if (json_object_size(headers) > API_REQUEST_HEADERS_MAX) {
        api_error_set(err, 400, "invalid_field", "headers",
                      "more than %d headers", API_REQUEST_HEADERS_MAX);
        ret = -1;
    }
    if (ret == 0) {
        json_object_foreach(headers, name, value)
        {
            const char *text;
            size_t len;

            vstr_cpy(field, "headers.");
            submit_check_quote(field, name, SUBMIT_CHECK_QUOTE_MAX);
            if (!api_request_header_name_ok(name)) {
                api_error_set(err, 400, "invalid_field", vstr_str(field),
                              "%s: not a valid header name", vstr_str(field));
                ret = -1;
                break;
            }
            vstr_sprintf(field, "headers.%s", name);
            if (api_request_is_reserved(name)) {
                api_error_set(err, 400, "invalid_field", vstr_str(field),
                              "%s: set by its own field, not by headers",
                              vstr_str(field));
                ret = -1;
                break;
            }
            if (!json_is_string(value)) {
                api_error_set(err, 400, "invalid_field", vstr_str(field),
                              "%s must be a string", vstr_str(field));
                ret = -1;
                break;
            }
            text = json_string_value(value);
            len = json_string_length(value);
            if (api_request_has_crlf(text, len) ||
                !api_request_no_controls(text, len)) {
                api_error_set(err, 400, "invalid_field", vstr_str(field),
                              "%s contains CR, LF or another control "
                              "character (header injection)",
                              vstr_str(field));
                ret = -1;
                break;
            }
            vstr_sprintf_append(out, "%s: ", name);
            api_mime_header_text(out, text, len);
            vstr_addch(out, '\n');
        }
    }
    vstr_free(field);
    return ret;
}

/* api_request_part - one text part's headers and quoted-printable body */
static void api_request_part(VSTR *out, const char *type, json_t *value)
{
    vstr_sprintf_append(out,
                        "Content-Type: text/%s; charset=utf-8\n"
                        "Content-Transfer-Encoding: quoted-printable\n\n",
                        type);
    api_mime_qp_append(out, json_string_value(value),
                       json_string_length(value));
}

/* api_request_string - an optional string field: NULL when absent, else
   it (or -1 through *bad, with err, when it is no string) */
static json_t *api_request_string(json_t *req, const char *name, bool *bad,
                                  API_ERROR *err)
{
    json_t *value = json_object_get(req, name);

    if (value != NULL && !json_is_string(value)) {
        api_error_set(err, 400, "invalid_field", name, "%s must be a string",
                      name);
        *bad = true;
        return NULL;
    }
    return value;
}

/* api_request_type_ok - a MIME type/subtype of ASCII token characters */
static bool api_request_type_ok(const char *type)
{
    const char *slash = strchr(type, '/');
    size_t len = strlen(type);

    if (slash == NULL || slash == type || slash[1] == 0 || len > 127)
        return false;
    for (size_t i = 0; i < len; i++)
        if (type[i] <= ' ' || type[i] > '~' ||
            strchr("()<>@,;:\\\"[]?=", type[i]) != NULL ||
            (type[i] == '/' && type + i != slash))
            return false;
    return true;
}

/* api_request_filename - filename="NAME" for plain ASCII, else RFC 2231's
   filename*=utf-8''%XX... */
static void api_request_filename(VSTR *out, const char *name, size_t len)
{
    if (len <= API_MIME_HEADER_PLAIN_MAX &&
        api_mime_printable(name, len, false) &&
        memchr(name, '"', len) == NULL && memchr(name, '\\', len) == NULL) {
        vstr_cat(out, "filename=\"");
        vstr_ncat(out, name, len);
        vstr_addch(out, '"');
        return;
    }
    vstr_cat(out, "filename*=utf-8''");
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) name[i];

        if (isalnum(ch) || strchr("!#$&+-.^_`|~", ch) != NULL)
            vstr_addch(out, (char) ch);
        else
            vstr_sprintf_append(out, "%%%02X", ch);
    }
}

/* api_request_attachments - the "attachments" array as MIME parts, each
   preceded by its boundary line; 0 or -1 */
static int api_request_attachments(json_t *list, const API_LIMITS *limits,
                                   VSTR *out, API_ERROR *err)
{
    VSTR *field = vstr_alloc(40);
    VSTR *bytes = vstr_alloc(1024);
    VSTR *why = vstr_alloc(64);
    int ret = 0;

    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > API_REQUEST_ATTACHMENTS_MAX) {
        api_error_set(err, 400, "invalid_field", "attachments",
                      "attachments must be an array of 1 to %d objects",
                      API_REQUEST_ATTACHMENTS_MAX);
        ret = -1;
    }
    for (size_t i = 0; ret == 0 && i < json_array_size(list); i++) {
        json_t *item = json_array_get(list, i);
        json_t *name = json_object_get(item, "filename");
        json_t *type = json_object_get(item, "content_type");
        json_t *content = json_object_get(item, "content");
        const char *key;
        json_t *value;

        vstr_sprintf(field, "attachments[%zu]", i);
        if (!json_is_object(item) || !json_is_string(name) ||
            !json_is_string(content) || (type && !json_is_string(type))) {
            api_error_set(err, 400, "invalid_field", vstr_str(field),
                          "%s needs filename and content (base64) strings, "
                          "and may have content_type",
                          vstr_str(field));
            ret = -1;
            break;
        }
        json_object_foreach(item, key, value)
        {
            if (strcmp(key, "filename") && strcmp(key, "content_type") &&
                strcmp(key, "content")) {
                api_error_set(err, 400, "invalid_field", vstr_str(field),
                              "%s has an unknown field", vstr_str(field));
                ret = -1;
                break;
            }
        }
        if (ret < 0)
            break;
        if (json_string_length(name) == 0 || json_string_length(name) > 255 ||
            !api_request_no_controls(json_string_value(name),
                                     json_string_length(name))) {
            vstr_cat(field, ".filename");
            api_error_set(err, 400, "invalid_field", vstr_str(field),
                          "%s is empty, longer than 255 bytes or has a "
                          "control character (header injection)",
                          vstr_str(field));
            ret = -1;
            break;
        }
        if (type != NULL && !api_request_type_ok(json_string_value(type))) {
            vstr_cat(field, ".content_type");
            api_error_set(err, 400, "invalid_field", vstr_str(field),
                          "%s is not a MIME type/subtype", vstr_str(field));
            ret = -1;
            break;
        }
        if (api_mime_base64_decode(bytes, json_string_value(content),
                                   json_string_length(content), why) < 0) {
            vstr_cat(field, ".content");
            api_error_set(err, 400, "invalid_field", vstr_str(field),
                          "%s is not base64: %s", vstr_str(field),
                          vstr_str(why));
            ret = -1;
            break;
        }
        if (limits->max_message_size > 0 &&
            vstr_len(out) + vstr_len(bytes) > limits->max_message_size) {
            api_error_set(err, 413, "message_too_large", vstr_str(field),
                          "the attachments exceed message_size_limit (%zu "
                          "bytes)",
                          limits->max_message_size);
            ret = -1;
            break;
        }
        vstr_sprintf_append(out, "\n--" API_REQUEST_MIXED "\nContent-Type: %s",
                            type ? json_string_value(type)
                                 : "application/octet-stream");
        vstr_cat(out, "\nContent-Disposition: attachment;\n\t");
        api_request_filename(out, json_string_value(name),
                             json_string_length(name));
        vstr_cat(out, "\nContent-Transfer-Encoding: base64\n\n");
        api_mime_base64_append(out, (const unsigned char *) vstr_str(bytes),
                               vstr_len(bytes));
    }
    vstr_free(field);
    vstr_free(bytes);
    vstr_free(why);
    return ret;
}

/* api_request_raw - the raw MIME of a request, as LF lines; 0 or -1 */
static int api_request_raw(json_t *raw, const API_LIMITS *limits,
                           API_MESSAGE *msg, API_ERROR *err)
{
    VSTR *bytes = vstr_alloc(json_string_length(raw) / 4 * 3 + 4);
    VSTR *why = vstr_alloc(64);
    const char *data;
    size_t len;
    size_t colon;
    int ret = 0;

    if (api_mime_base64_decode(bytes, json_string_value(raw),
                               json_string_length(raw), why) < 0) {
        api_error_set(err, 400, "invalid_field", "raw", "raw is not base64: %s",
                      vstr_str(why));
        ret = -1;
        goto out;
    }
    data = vstr_str(bytes);
    len = vstr_len(bytes);
    /* A message starts with a header field: NAME ':' */
    for (colon = 0; colon < len && data[colon] > 32 && data[colon] < 127 &&
                    data[colon] != ':';
         colon++)
        /* void */;
    if (colon == 0 || colon >= len || data[colon] != ':') {
        api_error_set(err, 400, "invalid_field", "raw",
                      "raw is not a MIME message (it does not start with a "
                      "header field)");
        ret = -1;
        goto out;
    }
    if (memchr(data, 0, len) != NULL) {
        api_error_set(err, 400, "invalid_field", "raw",
                      "raw contains a NUL byte");
        ret = -1;
        goto out;
    }
    if (limits->max_message_size > 0 && len > limits->max_message_size) {
        api_error_set(err, 413, "message_too_large", "raw",
                      "the message has %zu bytes; the limit is %zu "
                      "(message_size_limit)",
                      len, limits->max_message_size);
        ret = -1;
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
            continue;
        if (data[i] == '\r') {
            /* RFC 5322 2.3: CR only before LF; a bare one could end a
               header line for one reader and not another. */
            api_error_set(err, 400, "invalid_field", "raw",
                          "raw contains a CR that is not followed by LF "
                          "(at byte %zu)",
                          i);
            ret = -1;
            goto out;
        }
        if ((unsigned char) data[i] > 0x7f)
            msg->eight_bit = true;
        vstr_addch(msg->content, data[i]);
    }
    if (vstr_len(msg->content) > 0 &&
        vstr_str(msg->content)[vstr_len(msg->content) - 1] != '\n')
        vstr_addch(msg->content, '\n');
out:
    vstr_free(bytes);
    vstr_free(why);
    return ret;
}

/* api_request_build - the message's content from its parts; 0 or -1 */
static int api_request_build(json_t *req, const API_LIST *from,
                             const API_LIST *to, const API_LIST *cc,
                             const API_LIST *reply_to, const API_LIMITS *limits,
                             API_MESSAGE *msg, API_ERROR *err)
{
    VSTR *out = msg->content;
    bool bad = false;
    json_t *subject = api_request_string(req, "subject", &bad, err);
    json_t *text = bad ? NULL : api_request_string(req, "text", &bad, err);
    json_t *html = bad ? NULL : api_request_string(req, "html", &bad, err);
    json_t *headers = json_object_get(req, "headers");
    json_t *attachments = json_object_get(req, "attachments");
    VSTR *attached;

    if (bad)
        return -1;
    attached = vstr_alloc(attachments ? 4096 : 1);
    if (attachments != NULL &&
        api_request_attachments(attachments, limits, attached, err) < 0) {
        vstr_free(attached);
        return -1;
    }
    if (text == NULL && html == NULL) {
        api_error_set(err, 400, "missing_field", "text",
                      "a message needs text, html or raw");
        vstr_free(attached);
        return -1;
    }
    if (subject != NULL &&
        (api_request_has_crlf(json_string_value(subject),
                              json_string_length(subject)) ||
         !api_request_no_controls(json_string_value(subject),
                                  json_string_length(subject)))) {
        api_error_set(err, 400, "invalid_field", "subject",
                      "subject contains CR, LF or another control character "
                      "(header injection)");
        vstr_free(attached);
        return -1;
    }
    api_request_addr_header(out, "From", from);
    api_request_addr_header(out, "To", to);
    if (cc->addrs->argc > 0)
        api_request_addr_header(out, "Cc", cc);
    if (reply_to->addrs->argc > 0)
        api_request_addr_header(out, "Reply-To", reply_to);
    if (subject != NULL) {
        vstr_cat(out, "Subject: ");
        api_mime_header_text(out, json_string_value(subject),
                             json_string_length(subject));
        vstr_addch(out, '\n');
    }
    if (headers != NULL && api_request_headers(headers, out, err) < 0) {
        vstr_free(attached);
        return -1;
    }
    vstr_cat(out, "MIME-Version: 1.0\n");
    if (attachments != NULL) {
        vstr_cat(out, "Content-Type: multipart/mixed;\n"
                      "\tboundary=\"" API_REQUEST_MIXED "\"\n\n"
                      "This is a message in MIME format.\n\n"
                      "--" API_REQUEST_MIXED "\n");
    }
    if (text != NULL && html != NULL) {
        vstr_cat(out, "Content-Type: multipart/alternative;\n"
                      "\tboundary=\"" API_REQUEST_BOUNDARY "\"\n\n"
                      "This is a message in MIME format.\n\n"
                      "--" API_REQUEST_BOUNDARY "\n");
        api_request_part(out, "plain", text);
        vstr_cat(out, "\n--" API_REQUEST_BOUNDARY "\n");
        api_request_part(out, "html", html);
        vstr_cat(out, "\n--" API_REQUEST_BOUNDARY "--\n");
    } else {
        api_request_part(out, text != NULL ? "plain" : "html",
                         text != NULL ? text : html);
    }
    if (attachments != NULL) {
        vstr_cat(out, vstr_str(attached));
        vstr_cat(out, "\n--" API_REQUEST_MIXED "--\n");
    }
    vstr_free(attached);
    if (limits->max_message_size > 0 &&
        vstr_len(out) > limits->max_message_size) {
        api_error_set(err, 413, "message_too_large", "",
                      "the message has %zu bytes; the limit is %zu "
                      "(message_size_limit)",
                      vstr_len(out), limits->max_message_size);
        return -1;
    }
    return 0;
}

/* api_list_init, api_list_free - an empty API_LIST and its release */
static void api_list_init(API_LIST *list)
{
    list->names = argv_alloc(4);
    list->addrs = argv_alloc(4);
}

static void api_list_free(API_LIST *list)
{
    argv_free(list->names);
    argv_free(list->addrs);
}

/* api_request_name_ok - [A-Za-z0-9._-]{1,max} */
static bool api_request_name_ok(const char *text, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) text[i];

        if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-')
            return false;
    }
    return true;
}

/* api_request_tags - "tags": a list of short printable strings, as
   compact JSON text into *out; 0, or -1 with err (422, the field) */
static int api_request_tags(json_t *tags, char **out, API_ERROR *err)
{
    VSTR *field = vstr_alloc(16);
    json_t *tag;
    size_t i;

    if (!json_is_array(tags)) {
        vstr_free(field);
        api_error_set(err, 422, "invalid_value", "tags",
                      "tags must be an array of strings");
        return -1;
    }
    if (json_array_size(tags) > API_REQUEST_TAGS_MAX) {
        vstr_free(field);
        api_error_set(err, 422, "invalid_value", "tags", "more than %d tags",
                      API_REQUEST_TAGS_MAX);
        return -1;
    }
    json_array_foreach(tags, i, tag)
    {
        vstr_sprintf(field, "tags[%zu]", i);
        if (!json_is_string(tag) || json_string_length(tag) == 0 ||
            json_string_length(tag) > API_REQUEST_TAG_LEN ||
            !api_request_no_controls(json_string_value(tag),
                                     json_string_length(tag))) {
            api_error_set(err, 422, "invalid_value", vstr_str(field),
                          "%s: a tag is a string of 1 to %d characters, no "
                          "control characters",
                          vstr_str(field), API_REQUEST_TAG_LEN);
            vstr_free(field);
            return -1;
        }
    }
    vstr_free(field);
    *out = json_dumps(tags, JSON_COMPACT | JSON_ENSURE_ASCII);
    /* Escaping can make the text six times longer than the tags (a '"'
       is \", an "é" \u00e9): what we accept, cleanup must take. */
    if (*out == NULL || strlen(*out) > CLEANUP_TAGS_MAX) {
        api_error_set(err, 422, "invalid_value", "tags",
                      "the tags take %zu bytes as JSON (escapes counted); at "
                      "most %d",
                      *out ? strlen(*out) : (size_t) 0, CLEANUP_TAGS_MAX);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* api_request_metadata - "metadata": a flat object of string values,
   bounded, as compact JSON text into *out; 0, or -1 with err */
static int api_request_metadata(json_t *meta, char **out, API_ERROR *err)
{
    VSTR *field = vstr_alloc(32);
    const char *name;
    json_t *value;
    size_t total = 0;

    if (!json_is_object(meta)) {
        vstr_free(field);
        api_error_set(err, 422, "invalid_value", "metadata",
                      "metadata must be an object of string values");
        return -1;
    }
    json_object_foreach(meta, name, value)
    {
        if (!api_request_name_ok(name, strlen(name),
                                 API_REQUEST_META_KEY_LEN)) {
            VSTR *quoted = vstr_alloc(64);

            submit_check_quote(quoted, name, SUBMIT_CHECK_QUOTE_MAX);
            api_error_set(err, 422, "invalid_value", "metadata",
                          "metadata: the key %s is not 1 to %d of "
                          "[A-Za-z0-9._-]",
                          vstr_str(quoted), API_REQUEST_META_KEY_LEN);
            vstr_free(quoted);
            vstr_free(field);
            return -1;
        }
        vstr_sprintf(field, "metadata.%s", name);
        if (!json_is_string(value)) {
            api_error_set(err, 422, "invalid_value", vstr_str(field),
                          "%s must be a string (metadata is flat)",
                          vstr_str(field));
            vstr_free(field);
            return -1;
        }
        /* Refused rather than escaped, as in tags: a control character in
           a value is almost always a mistake, and would reach every
           exporter and webhook. */
        if (!api_request_no_controls(json_string_value(value),
                                     json_string_length(value))) {
            api_error_set(err, 422, "invalid_value", vstr_str(field),
                          "%s: no control characters (tab is allowed)",
                          vstr_str(field));
            vstr_free(field);
            return -1;
        }
        total += strlen(name) + json_string_length(value);
    }
    vstr_free(field);
    if (total > API_REQUEST_META_MAX) {
        api_error_set(err, 422, "invalid_value", "metadata",
                      "metadata holds %zu bytes of keys and values; at most "
                      "%d",
                      total, API_REQUEST_META_MAX);
        return -1;
    }
    *out = json_dumps(meta, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_SORT_KEYS);
    /* Escapes ("\u00e9" for an "é") can grow the text up to six times:
       what we accept, cleanup must take. */
    if (*out == NULL || strlen(*out) > CLEANUP_METADATA_MAX) {
        api_error_set(err, 422, "invalid_value", "metadata",
                      "metadata takes %zu bytes as JSON (escapes counted); "
                      "at most %d",
                      *out ? strlen(*out) : (size_t) 0, CLEANUP_METADATA_MAX);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* api_request_digits - n decimal digits at text, or -1 */
static int api_request_digits(const char *text, int n)
{
    int value = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char) text[i]))
            return -1;
        value = value * 10 + (text[i] - '0');
    }
    return value;
}

/* api_request_rfc3339 - the Unix time of an RFC 3339 date-time
   (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)), or -1 when it is not */
static long long api_request_rfc3339(const char *text)
{
    struct tm tm;
    const char *cp;
    int year, mon, day, hour, min, sec;
    long long when;

    if (strlen(text) < 20 || (year = api_request_digits(text, 4)) < 0 ||
        text[4] != '-' || (mon = api_request_digits(text + 5, 2)) < 1 ||
        mon > 12 || text[7] != '-' ||
        (day = api_request_digits(text + 8, 2)) < 1 || day > 31 ||
        (text[10] != 'T' && text[10] != 't') ||
        (hour = api_request_digits(text + 11, 2)) < 0 || hour > 23 ||
        text[13] != ':' || (min = api_request_digits(text + 14, 2)) < 0 ||
        min > 59 || text[16] != ':' ||
        (sec = api_request_digits(text + 17, 2)) < 0 || sec > 60)
        return -1;
    cp = text + 19;
    if (*cp == '.') {
        if (!isdigit((unsigned char) cp[1]))
            return -1;
        for (cp++; isdigit((unsigned char) *cp); cp++)
            /* void */;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    when = (long long) timegm(&tm);
    if ((*cp == 'Z' || *cp == 'z') && cp[1] == 0)
        return when;
    if ((*cp == '+' || *cp == '-') && strlen(cp) == 6 && cp[3] == ':') {
        int off_h = api_request_digits(cp + 1, 2);
        int off_m = api_request_digits(cp + 4, 2);

        if (off_h < 0 || off_h > 23 || off_m < 0 || off_m > 59)
            return -1;
        /* 10:00+02:00 is 08:00Z. */
        return when + (*cp == '+' ? -1 : 1) * (off_h * 3600LL + off_m * 60LL);
    }
    return -1;
}

/* api_request_send_at - "send_at" into msg->not_before (0 when it is
   not in the future: sent at once); 0, or -1 with err */
static int api_request_send_at(json_t *value, API_MESSAGE *msg, API_ERROR *err)
{
    long long when;
    long long now = (long long) time(NULL);

    if (!json_is_string(value) ||
        (when = api_request_rfc3339(json_string_value(value))) < 0) {
        api_error_set(err, 422, "invalid_value", "send_at",
                      "send_at must be an RFC 3339 time "
                      "(2026-12-05T10:00:00Z)");
        return -1;
    }
    if (when - now > API_REQUEST_SEND_AHEAD) {
        api_error_set(err, 422, "invalid_value", "send_at",
                      "send_at is more than 30 days ahead");
        return -1;
    }
    msg->not_before = when > now ? when : 0;
    return 0;
}

/* api_request_extras - tags, metadata and pool into msg (pool as the
   X-Sluice-Pool header cleanup reads); 0, or -1 with err */
static int api_request_extras(json_t *req, API_MESSAGE *msg, API_ERROR *err)
{
    json_t *value;

    if ((value = json_object_get(req, "tags")) != NULL &&
        api_request_tags(value, &msg->tags, err) < 0)
        return -1;
    if ((value = json_object_get(req, "metadata")) != NULL &&
        api_request_metadata(value, &msg->metadata, err) < 0)
        return -1;
    if ((value = json_object_get(req, "send_at")) != NULL &&
        api_request_send_at(value, msg, err) < 0)
        return -1;
    if ((value = json_object_get(req, "pool")) != NULL) {
        VSTR *content;

        if (!json_is_string(value) ||
            !api_request_name_ok(json_string_value(value),
                                 json_string_length(value),
                                 API_REQUEST_POOL_LEN)) {
            api_error_set(err, 422, "invalid_value", "pool",
                          "pool must be a name of 1 to %d of [A-Za-z0-9._-]",
                          API_REQUEST_POOL_LEN);
            return -1;
        }
        content = vstr_alloc(vstr_len(msg->content) + 64);
        vstr_sprintf(content, "X-Sluice-Pool: %s\n", json_string_value(value));
        vstr_ncat(content, vstr_str(msg->content), vstr_len(msg->content));
        vstr_free(msg->content);
        msg->content = content;
        msg->pool = mystrdup(json_string_value(value));
    }
    return 0;
}

/* api_message_free - release a message; returns NULL */
API_MESSAGE *api_message_free(API_MESSAGE *msg)
{
    if (msg != NULL) {
        myfree(msg->sender);
        argv_free(msg->rcpts);
        vstr_free(msg->content);
        free(msg->tags); /* jansson's */
        free(msg->metadata);
        myfree(msg->pool);
        myfree(msg);
    }
    return NULL;
}

/* api_request_parse - the message a request body asks for, or NULL */
API_MESSAGE *api_request_parse(const char *body, size_t len,
                               const API_LIMITS *limits, API_ERROR *err)
{
    static const char *const excluded_by_raw[] = {
        "subject", "text", "html", "headers", "reply_to", "attachments"};
    API_LIST from, to, cc, bcc, reply_to;
    API_MESSAGE *msg = NULL;
    json_error_t jerr;
    json_t *req;
    json_t *value;
    json_t *raw;
    const char *key;
    size_t total = 0;
    int ok = 0;

    req = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL) {
        VSTR *text = vstr_alloc(80);

        submit_check_quote(text, jerr.text, 120);
        api_error_set(err, 400, "invalid_json", "",
                      "the body is not valid JSON: %s at line %d column %d",
                      vstr_str(text), jerr.line, jerr.column);
        vstr_free(text);
        return NULL;
    }
    if (!json_is_object(req)) {
        json_decref(req);
        return api_error_set(err, 400, "invalid_json", "",
                             "the body must be a JSON object");
    }
    json_object_foreach(req, key, value)
    {
        bool known = false;

        for (size_t i = 0; i < SLUICE_ARRAY_LEN(api_request_fields); i++)
            known |= strcmp(key, api_request_fields[i]) == 0;
        if (!known) {
            VSTR *quoted = vstr_alloc(64);

            submit_check_quote(quoted, key, SUBMIT_CHECK_QUOTE_MAX);
            api_error_set(err, 400, "invalid_field", vstr_str(quoted),
                          "unknown or unsupported field %s", vstr_str(quoted));
            vstr_free(quoted);
            json_decref(req);
            return NULL;
        }
    }
    api_list_init(&from);
    api_list_init(&to);
    api_list_init(&cc);
    api_list_init(&bcc);
    api_list_init(&reply_to);
    raw = json_object_get(req, "raw");
    if ((value = json_object_get(req, "from")) == NULL) {
        api_error_set(err, 400, "missing_field", "from", "from is required");
        ok = -1;
    } else if (!json_is_string(value)) {
        api_error_set(err, 400, "invalid_field", "from",
                      "from must be a string");
        ok = -1;
    } else {
        /* One sender: the limit of recipients does not apply. */
        API_LIMITS one = {1, 0};
        size_t none = 0;

        ok = api_request_list("from", value, &from, &one, &none, err);
    }
    if (ok == 0 && (value = json_object_get(req, "to")) == NULL) {
        api_error_set(err, 400, "missing_field", "to", "to is required");
        ok = -1;
    }
    if (ok == 0)
        ok = api_request_list("to", value, &to, limits, &total, err);
    if (ok == 0 && (value = json_object_get(req, "cc")) != NULL)
        ok = api_request_list("cc", value, &cc, limits, &total, err);
    if (ok == 0 && (value = json_object_get(req, "bcc")) != NULL)
        ok = api_request_list("bcc", value, &bcc, limits, &total, err);
    if (ok == 0 && (value = json_object_get(req, "reply_to")) != NULL) {
        size_t none = 0;

        ok = api_request_list("reply_to", value, &reply_to, limits, &none, err);
    }
    if (ok == 0 && raw != NULL) {
        for (size_t i = 0; i < SLUICE_ARRAY_LEN(excluded_by_raw); i++) {
            if (json_object_get(req, excluded_by_raw[i]) != NULL) {
                api_error_set(err, 400, "invalid_field", excluded_by_raw[i],
                              "%s cannot be given with raw (the raw message "
                              "has its own)",
                              excluded_by_raw[i]);
                ok = -1;
                break;
            }
        }
        if (ok == 0 && !json_is_string(raw)) {
            api_error_set(err, 400, "invalid_field", "raw",
                          "raw must be a base64 string");
            ok = -1;
        }
    }
    if (ok == 0) {
        msg = mycalloc(1, sizeof(*msg));
        msg->sender = mystrdup(from.addrs->argv[0]);
        msg->rcpts = argv_alloc(total);
        msg->content = vstr_alloc(1024);
        for (size_t i = 0; i < to.addrs->argc; i++)
            argv_add(msg->rcpts, to.addrs->argv[i]);
        for (size_t i = 0; i < cc.addrs->argc; i++)
            argv_add(msg->rcpts, cc.addrs->argv[i]);
        for (size_t i = 0; i < bcc.addrs->argc; i++)
            argv_add(msg->rcpts, bcc.addrs->argv[i]);
        msg->raw = raw != NULL;
        if (raw != NULL)
            ok = api_request_raw(raw, limits, msg, err);
        else
            ok = api_request_build(req, &from, &to, &cc, &reply_to, limits, msg,
                                   err);
        if (ok == 0)
            ok = api_request_extras(req, msg, err);
        if (ok < 0)
            msg = api_message_free(msg);
    }
    api_list_free(&from);
    api_list_free(&to);
    api_list_free(&cc);
    api_list_free(&bcc);
    api_list_free(&reply_to);
    json_decref(req);
    return msg;
}
