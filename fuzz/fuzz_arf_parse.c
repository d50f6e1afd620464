/*
 * fuzz_arf_parse - the ARF parser (global/arf_parse.h) over any bytes
 *
 * With small limits, so that deep nesting and many parts are reached. A
 * report that parses has a Feedback-Type; one that does not has a reason.
 */
#include "sys_defs.h"

#include <stdint.h>
#include <stdlib.h>

#include "arf_parse.h"
#include "fuzz_common.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one report */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    REPORT_MIME_LIMITS limits = {
        .max_bytes = 4096, .max_depth = 4, .max_parts = 16};
    ARF_PARSED *arf = arf_parsed_alloc();
    VSTR *why = vstr_alloc(64);
    char *copy = malloc(size ? size : 1);

    fuzz_init("fuzz_arf_parse");
    memcpy(copy, data, size);
    if (arf_parse(copy, size, &limits, arf, why) == 0) {
        if (vstr_len(arf->feedback_type) == 0)
            abort();
    } else if (vstr_len(why) == 0) {
        abort();
    }
    free(copy);
    arf_parsed_free(arf);
    vstr_free(why);
    return 0;
}
