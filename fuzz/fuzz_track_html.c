/*
 * fuzz_track_html - the tracking rewriter (global/track_html.h,
 * global/track_mime.h) and the token payloads (global/track_token.h)
 *
 * The input's first line is a Content-Type value, its second a
 * Content-Transfer-Encoding, the rest a body. Checked: a rewrite whose
 * link function declines everything and adds no pixel changes nothing
 * (the body comes back byte for byte); a rewrite that signs every link
 * finishes; quoted-printable of the body decodes back to it (when it has
 * no CR) in lines of at most 76; base64 decodes back to it; the body as a
 * tracking token or unsubscribe address never checks out under a key it
 * was not made with.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "fuzz_common.h"
#include "track_html.h"
#include "track_mime.h"
#include "track_token.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_track_yes - a link function that rewrites every link */
static bool fuzz_track_yes(void *ctx, const char *url, VSTR *newurl)
{
    vstr_sprintf(newurl, "https://t.test/c/%zu", strlen(url));
    return true;
}

/* fuzz_track_no - a link function that declines every link */
static bool fuzz_track_no(void *ctx, const char *url, VSTR *newurl)
{
    return false;
}

/* fuzz_track_line - the next line of text[*pos..size) into line */
static void fuzz_track_line(const char *text, size_t size, size_t *pos,
                            VSTR *line)
{
    const char *nl = memchr(text + *pos, '\n', size - *pos);
    size_t len = nl ? (size_t) (nl - text) - *pos : size - *pos;

    vstr_ncpy(line, text + *pos, len);
    vstr_truncate(line, strlen(vstr_str(line))); /* a C string's end */
    *pos += len + (nl != NULL);
}

/* LLVMFuzzerTestOneInput - type line, encoding line, body */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *) data;
    size_t pos = 0;
    VSTR *ctype = vstr_alloc(64);
    VSTR *cte = vstr_alloc(64);
    VSTR *out = vstr_alloc(256);
    VSTR *back = vstr_alloc(256);
    VSTR *key =
        vstr_ncpy(vstr_alloc(32), "fuzz-key-fuzz-key-fuzz-key-32byt", 32);
    TRACK_HTML_OPTS none = {fuzz_track_no, NULL, NULL};
    TRACK_HTML_OPTS all = {fuzz_track_yes, NULL, "https://t.test/o/P"};
    TRACK_TOKEN tok;
    const char *body;
    size_t len;

    fuzz_init("fuzz_track_html");
    fuzz_track_line(text, size, &pos, ctype);
    fuzz_track_line(text, size, &pos, cte);
    body = text + pos;
    len = size - pos;
    if (track_mime_rewrite(vstr_str(ctype), vstr_str(cte), body, len, out,
                           &none) != 0 ||
        vstr_len(out) != len || memcmp(vstr_str(out), body, len) != 0)
        abort();
    vstr_reset(out);
    (void) track_mime_rewrite(vstr_str(ctype), vstr_str(cte), body, len, out,
                              &all);
    vstr_reset(out);
    track_qp_encode(body, len, out);
    for (const char *cp = vstr_str(out); *cp;) {
        size_t line = strcspn(cp, "\n");

        if (line > 76)
            abort();
        cp += line + (cp[line] == '\n');
    }
    if (memchr(body, '\r', len) == NULL) {
        track_qp_decode(vstr_str(out), vstr_len(out), back);
        if (vstr_len(back) != len || memcmp(vstr_str(back), body, len) != 0)
            abort();
    }
    vstr_reset(out);
    vstr_reset(back);
    track_b64_encode(body, len, out);
    if (track_b64_decode(vstr_str(out), vstr_len(out), back) < 0 ||
        vstr_len(back) != len || memcmp(vstr_str(back), body, len) != 0)
        abort();
    vstr_ncpy(back, body, len);
    vstr_truncate(back, strlen(vstr_str(back)));
    if (track_token_parse(key, TRACK_PURPOSE_CLICK, vstr_str(back), &tok) == 0)
        abort(); /* a forgery under an unknown key */
    if (unsub_token_parse(key, vstr_str(back), &tok) == 0)
        abort();
    vstr_free(ctype);
    vstr_free(cte);
    vstr_free(out);
    vstr_free(back);
    vstr_free(key);
    return 0;
}
