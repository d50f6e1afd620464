/*
 * fuzz_events_pos - the exporter position file's parser (events_pos.h)
 *
 * Any input either is refused with a reason and leaves an empty position,
 * or parses to a position whose text (events_pos_format) parses again to
 * the same text, with every listed segment after the floor and the list
 * ascending, and offsets never negative.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "events_pos.h"
#include "fuzz_common.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    EVENTS_POS *pos = events_pos_alloc();
    EVENTS_POS *again = events_pos_alloc();
    VSTR *why = vstr_alloc(100);
    VSTR *text = vstr_alloc(100);
    VSTR *text2 = vstr_alloc(100);

    fuzz_init("fuzz_events_pos");
    if (events_pos_parse(pos, (const char *) data, size, why) < 0) {
        if (vstr_len(why) == 0 || pos->floor != NULL || pos->count != 0)
            abort();
    } else {
        for (size_t i = 0; i < pos->count; i++) {
            if (pos->segs[i].offset < 0 ||
                (pos->floor && strcmp(pos->segs[i].name, pos->floor) <= 0) ||
                (i > 0 &&
                 strcmp(pos->segs[i - 1].name, pos->segs[i].name) >= 0))
                abort();
        }
        events_pos_format(pos, text);
        if (events_pos_parse(again, vstr_str(text), vstr_len(text), why) < 0)
            abort();
        events_pos_format(again, text2);
        if (strcmp(vstr_str(text), vstr_str(text2)) != 0)
            abort();
        /* What was parsed is exactly what is written back. */
        if (vstr_len(text) != size || memcmp(vstr_str(text), data, size) != 0)
            abort();
    }
    events_pos_free(pos);
    events_pos_free(again);
    vstr_free(why);
    vstr_free(text);
    vstr_free(text2);
    return 0;
}
