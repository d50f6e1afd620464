/*
 * events_view - one journal line read without building a jansson object:
 * the events daemon's parse of every line, for every exporter
 *
 * events_view_parse checks that a line is one JSON object (RFC 8259, as
 * strict as json_loadb with no flags: UTF-8 only, no \u0000, no lone
 * surrogate, no integer past 64 bits or real past a double, nothing after
 * the object but white space) and keeps its top-level members: strings
 * decoded (NUL-ended, in one buffer the view owns and reuses), numbers as
 * integers or reals, true, false, null; a nested object or array (tls,
 * tags, metadata) is checked and only its type kept. A member named twice
 * is found by its last value, as jansson keeps it. Parsing a line costs
 * no allocation once the view's buffers are grown, where json_loadb made
 * a string, a value and a hash-table entry per member.
 */
#ifndef EVENTS_VIEW_H
#define EVENTS_VIEW_H

#include "sys_defs.h"

#include "vstr.h"

typedef enum EVENTS_VIEW_TYPE {
    EVENTS_VIEW_NONE, /* no such member */
    EVENTS_VIEW_NULL,
    EVENTS_VIEW_TRUE,
    EVENTS_VIEW_FALSE,
    EVENTS_VIEW_INTEGER,
    EVENTS_VIEW_REAL,
    EVENTS_VIEW_STRING,
    EVENTS_VIEW_OBJECT,
    EVENTS_VIEW_ARRAY,
} EVENTS_VIEW_TYPE;

typedef struct EVENTS_VIEW EVENTS_VIEW;

extern EVENTS_VIEW *events_view_alloc(void);
extern void events_view_free(EVENTS_VIEW *view);

/* events_view_parse - line (len bytes, no LF needed) into view; 0, or -1
   with why when it is not one JSON object (view is then empty) */
extern int events_view_parse(EVENTS_VIEW *view, const char *line, size_t len,
                             VSTR *why);

/* events_view_type - the type of member name (EVENTS_VIEW_NONE: none) */
extern EVENTS_VIEW_TYPE events_view_type(const EVENTS_VIEW *view,
                                         const char *name);

/* events_view_str - member name's string (valid until the next parse), or
   NULL when it is missing or not a string */
extern const char *events_view_str(const EVENTS_VIEW *view, const char *name);

/* events_view_int - member name's value when it is an integer */
extern bool events_view_int(const EVENTS_VIEW *view, const char *name,
                            long long *value);

/* events_view_num - member name's value when it is a number (integer or
   real) */
extern bool events_view_num(const EVENTS_VIEW *view, const char *name,
                            double *value);

#endif
