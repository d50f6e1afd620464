/*
 * fuzz_dsn_parse - the DSN parser (global/dsn_parse.h) over any bytes
 *
 * With small limits, so that deep nesting and many parts are reached. A
 * DSN that parses has a valid status, an action and a bounded reply; one
 * that does not has a reason.
 */
#include "sys_defs.h"

#include <stdint.h>
#include <stdlib.h>

#include "dsn_parse.h"
#include "fuzz_common.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one message */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    REPORT_MIME_LIMITS limits = {
        .max_bytes = 4096, .max_depth = 4, .max_parts = 16};
    DSN_PARSED *dsn = dsn_parsed_alloc();
    VSTR *why = vstr_alloc(64);
    /* A copy of exactly size bytes: reading past it is ASan's to catch. */
    char *copy = malloc(size ? size : 1);

    fuzz_init("fuzz_dsn_parse");
    memcpy(copy, data, size);
    if (dsn_parse(copy, size, &limits, dsn, why) == 0) {
        if (!dsn_parse_status_ok(vstr_str(dsn->status)) ||
            vstr_len(dsn->action) == 0 ||
            vstr_len(dsn->reply) > DSN_PARSE_REPLY_MAX ||
            dsn->rcpt_count > DSN_PARSE_BLOCKS_MAX)
            abort();
        /* Every kept block is a valid one, and any may be picked. */
        (void) dsn_parsed_pick(dsn, "c@b.test", NULL);
        if (dsn->form == DSN_PARSE_RFC3464 &&
            (!dsn_parse_status_ok(vstr_str(dsn->status)) ||
             vstr_len(dsn->action) == 0))
            abort();
    } else if (vstr_len(why) == 0) {
        abort();
    }
    free(copy);
    dsn_parsed_free(dsn);
    vstr_free(why);
    return 0;
}
