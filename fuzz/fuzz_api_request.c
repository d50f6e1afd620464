/*
 * fuzz_api_request - the HTTP API's request parser and MIME builder
 *
 * The input is a POST /v1/messages body. api_request_parse must either
 * build a message or fail with an error the API can send: a 400, 413 or
 * 422 with a code, a message and a JSON form that parses back. A message
 * has a sender and recipients, LF lines only (no CR anywhere: header
 * injection would need one), a header block whose lines are header fields
 * or continuations (raw MIME aside: cleanup ends its header block at the
 * first line that is no header), and, unless it came raw, no line over 998
 * bytes and 7-bit content. The input also goes through base64 (encode, then decode must
 * give it back) and quoted-printable (7-bit lines of at most 76).
 */
#include "sys_defs.h"

#include <stdint.h>

#include <jansson.h>

#include "api_mime.h"
#include "api_request.h"
#include "fuzz_common.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_check_message - the properties of a built message */
static void fuzz_check_message(const API_MESSAGE *msg)
{
    const char *text = vstr_str(msg->content);
    size_t len = vstr_len(msg->content);
    bool in_headers = true;
    size_t start = 0;

    if (*msg->sender == 0 || msg->rcpts->argc == 0)
        abort();
    if (memchr(text, '\r', len) != NULL || len == 0 || text[len - 1] != '\n')
        abort();
    for (size_t i = 0; i < len; i++) {
        if (!msg->eight_bit && (unsigned char) text[i] > 0x7f)
            abort();
        if (text[i] != '\n')
            continue;
        if (!msg->raw && i - start > 998)
            abort();
        if (in_headers && i == start) {
            in_headers = false;
        } else if (in_headers && !msg->raw && text[start] != ' ' &&
                   text[start] != '\t') {
            const char *colon = memchr(text + start, ':', i - start);

            if (colon == NULL || colon == text + start)
                abort();
        }
        start = i + 1;
    }
}

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    API_LIMITS limits = {5, 4096};
    API_ERROR err;
    API_MESSAGE *msg;
    VSTR *enc = vstr_alloc(100);
    VSTR *dec = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);

    fuzz_init("fuzz_api_request");
    api_error_init(&err);
    if ((msg = api_request_parse((const char *) data, size, &limits, &err)) !=
        NULL) {
        fuzz_check_message(msg);
        api_message_free(msg);
    } else {
        VSTR *json = vstr_alloc(100);
        json_error_t jerr;
        json_t *obj;

        if ((err.status != 400 && err.status != 413 && err.status != 422) ||
            *err.code == 0 || vstr_len(err.message) == 0)
            abort();
        api_error_json(&err, json);
        if ((obj = json_loadb(vstr_str(json), vstr_len(json), 0, &jerr)) ==
            NULL)
            abort();
        json_decref(obj);
        vstr_free(json);
    }
    api_error_free(&err);

    api_mime_base64_append(enc, data, size);
    if (api_mime_base64_decode(dec, vstr_str(enc), vstr_len(enc), why) < 0 ||
        vstr_len(dec) != size || (size && memcmp(vstr_str(dec), data, size)))
        abort();
    (void) api_mime_base64_decode(dec, (const char *) data, size, why);

    vstr_reset(enc);
    api_mime_qp_append(enc, (const char *) data, size);
    {
        size_t col = 0;

        for (size_t i = 0; i < vstr_len(enc); i++) {
            unsigned char ch = (unsigned char) vstr_str(enc)[i];

            if (ch > 0x7e || (ch < 0x20 && ch != '\n' && ch != '\t'))
                abort();
            col = ch == '\n' ? 0 : col + 1;
            if (col > API_MIME_QP_LINE)
                abort();
        }
    }
    vstr_reset(enc);
    api_mime_header_text(enc, (const char *) data, size);
    vstr_free(enc);
    vstr_free(dec);
    vstr_free(why);
    return 0;
}
