/*
 * fuzz_events_view - the events daemon's journal line reader against
 * jansson, on any bytes
 *
 * events_view_parse must accept exactly what json_loadb (no flags) reads
 * as one JSON object, and then find each top-level member with jansson's
 * type and value (strings byte for byte, integers exactly, reals equal);
 * a refused line leaves no member. The view is reused across inputs, as
 * the daemon reuses it across lines. An input with a raw NUL byte is only
 * read, not compared: jansson's lexer takes one after a number as the end
 * of the input and accepts {"b":1<NUL>}, which the reader refuses (the
 * journal's writer never leaves a raw NUL in a line).
 */
#include "sys_defs.h"

#include <stdint.h>

#include <jansson.h>

#include "events_view.h"
#include "fuzz_common.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_events_view_member - does view hold member key as jansson's value? */
static bool fuzz_events_view_member(const EVENTS_VIEW *view, const char *key,
                                    const json_t *value)
{
    long long ival;
    double rval;
    const char *str;

    switch (json_typeof(value)) {
    case JSON_STRING:
        str = events_view_str(view, key);
        return str != NULL && strcmp(str, json_string_value(value)) == 0;
    case JSON_INTEGER:
        return events_view_int(view, key, &ival) &&
               ival == json_integer_value(value) &&
               events_view_num(view, key, &rval);
    case JSON_REAL:
        return events_view_type(view, key) == EVENTS_VIEW_REAL &&
               events_view_num(view, key, &rval) &&
               rval == json_real_value(value) &&
               !events_view_int(view, key, &ival);
    case JSON_TRUE:
        return events_view_type(view, key) == EVENTS_VIEW_TRUE;
    case JSON_FALSE:
        return events_view_type(view, key) == EVENTS_VIEW_FALSE;
    case JSON_NULL:
        return events_view_type(view, key) == EVENTS_VIEW_NULL;
    case JSON_OBJECT:
        return events_view_type(view, key) == EVENTS_VIEW_OBJECT;
    case JSON_ARRAY:
        return events_view_type(view, key) == EVENTS_VIEW_ARRAY;
    }
    return false;
}

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static EVENTS_VIEW *view;
    static VSTR *why;
    json_t *obj;
    bool want;
    int got;
    const char *key;
    json_t *value;

    fuzz_init("fuzz_events_view");
    if (view == NULL) {
        view = events_view_alloc();
        why = vstr_alloc(100);
    }
    obj = json_loadb((const char *) data, size, 0, NULL);
    want = obj != NULL && json_is_object(obj);
    got = events_view_parse(view, (const char *) data, size, why);
    if (memchr(data, 0, size) != NULL) {
        json_decref(obj);
        return 0;
    }
    if ((got == 0) != want)
        abort();
    if (want) {
        json_object_foreach(obj, key, value)
        {
            if (!fuzz_events_view_member(view, key, value))
                abort();
        }
    } else if (events_view_type(view, "kind") != EVENTS_VIEW_NONE) {
        abort();
    }
    json_decref(obj);
    return 0;
}
