/*
 * fuzz_api_mustache - the API's Mustache compiler and renderer
 *
 * The input, split at its first NUL, is a template and a JSON value. A
 * template either compiles or fails with a reason; a compiled one renders
 * any data, HTML-escaped or not, within the output limit: the result
 * stays under the limit plus one escape, and with escaping on, a template
 * without '<' in its text and data without '<' (or with escaping) put no
 * raw '<' from the data into the output.
 */
#include "sys_defs.h"

#include <stdint.h>

#include <jansson.h>

#include "api_mustache.h"
#include "fuzz_common.h"
#include "vstr.h"

#define FUZZ_OUT_MAX 65536
#define FUZZ_STEPS 100000 /* far below the daemon's, to stay fast */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *) data;
    const char *nul = memchr(text, 0, size);
    size_t tlen = nul ? (size_t) (nul - text) : size;
    VSTR *why = vstr_alloc(100);
    VSTR *out = vstr_alloc(100);
    API_MUSTACHE *tmpl;
    json_t *json = NULL;
    json_error_t jerr;

    fuzz_init("fuzz_api_mustache");
    if (nul != NULL)
        json = json_loadb(nul + 1, size - tlen - 1,
                          JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (json == NULL)
        json = json_object();
    if ((tmpl = api_mustache_compile(text, tlen, why)) == NULL) {
        if (vstr_len(why) == 0)
            abort();
    } else {
        for (int escape = 0; escape < 2; escape++) {
            vstr_reset(out);
            vstr_reset(why);
            if (api_mustache_render(tmpl, json, escape, FUZZ_OUT_MAX,
                                    FUZZ_STEPS, out, why) < 0) {
                if (vstr_len(why) == 0)
                    abort();
            }
            if (vstr_len(out) > FUZZ_OUT_MAX + 8)
                abort();
            /* Escaped output: any '<' came from the template's text or a
               raw {{{ }}} / {{& }} tag, never from an escaped variable. */
            if (escape && memchr(text, '<', tlen) == NULL &&
                memmem(text, tlen, "{{{", 3) == NULL &&
                memmem(text, tlen, "{{&", 3) == NULL &&
                memchr(vstr_str(out), '<', vstr_len(out)) != NULL)
                abort();
        }
        api_mustache_free(tmpl);
    }
    json_decref(json);
    vstr_free(why);
    vstr_free(out);
    return 0;
}
