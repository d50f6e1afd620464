/*
 * fuzz_events - the journal's pure parts: event formatting, segment names,
 * torn-tail detection
 *
 * The input, split at its first NUL into a recipient and a reply (any
 * bytes), is formatted as an event: the line must end in its only LF,
 * parse back with jansson as an object whose recipient is the input
 * (exactly, when it was UTF-8; '?' replaced the other bytes). The input as
 * a segment name must give a pid only when it has a segment's shape, and
 * events_whole_length must stop after an LF or at 0.
 */
#include "sys_defs.h"

#include <stdint.h>

#include <jansson.h>

#include "events.h"
#include "fuzz_common.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = mystrndup((const char *) data, size);
    const char *nul = memchr(data, 0, size);
    const char *reply =
        nul && (size_t) (nul - (const char *) data) + 1 < size ? nul + 1 : NULL;
    char *reply_copy =
        reply ? mystrndup(reply, size - (size_t) (reply - (const char *) data))
              : NULL;
    VSTR *line = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    struct timeval now = {.tv_sec = (time_t) size * 1000003, .tv_usec = 5};
    json_t *obj;
    json_error_t error;
    EVENT event;
    size_t whole;
    long pid;

    fuzz_init("fuzz_events");
    events_event_init(&event, EVENTS_BOUNCED, "QQQQ", text);
    event.recipient = text;
    event.reply = reply_copy;
    event.delay = (double) size / 7;
    if (events_format(line, &event, "n.test", &now, why) < 0)
        abort();
    if (vstr_len(line) == 0 || vstr_str(line)[vstr_len(line) - 1] != '\n' ||
        memchr(vstr_str(line), '\n', vstr_len(line) - 1) != NULL)
        abort();
    obj = json_loadb(vstr_str(line), vstr_len(line), 0, &error);
    if (obj == NULL || !json_is_object(obj) ||
        !json_is_string(json_object_get(obj, "recipient")) ||
        strlen(json_string_value(json_object_get(obj, "recipient"))) !=
            strlen(text))
        abort();
    {
        json_t *same = json_string(text); /* NULL: not UTF-8 */

        if (same && !json_equal(same, json_object_get(obj, "recipient")))
            abort();
        json_decref(same);
    }
    json_decref(obj);

    pid = events_segment_pid(text);
    if (pid == 0 || pid < -1)
        abort();
    if (pid > 0 && (strlen(text) < 24 || text[23] != '-'))
        abort();

    whole = events_whole_length((const char *) data, size);
    if (whole > size || (whole > 0 && data[whole - 1] != '\n') ||
        memchr(data + whole, '\n', size - whole) != NULL)
        abort();

    myfree(text);
    myfree(reply_copy);
    vstr_free(line);
    vstr_free(why);
    return 0;
}
