/*
 * attr - the attribute protocol every request and reply between daemons uses
 *
 * A list is a sequence of attributes and an end marker. On the wire each
 * attribute is
 *     NAME '=' LENGTH ':' VALUE '\n'
 * with NAME in [a-z0-9_]{1,64}, LENGTH the decimal byte count of VALUE
 * (which may hold any byte, newline and NUL included, so no value can inject
 * a record), and the list ends with a lone '\n'. Integers travel as decimal
 * text. A list larger than the reader's limit is an error, not a truncation.
 *
 * Readers are strict: attr_list_check() rejects a list with a missing
 * required attribute, an attribute the spec does not name, a repeated name
 * (unless the spec allows repeats), or an integer that is not one.
 * Each protocol is a table of ATTR_SPEC in its own header.
 */
#ifndef ATTR_H
#define ATTR_H

#include "sys_defs.h"
#include "vstr.h"

typedef enum ATTR_TYPE {
    ATTR_TYPE_STR, /* text without NUL */
    ATTR_TYPE_INT, /* signed decimal, fits long long */
    ATTR_TYPE_DATA, /* any bytes */
} ATTR_TYPE;

typedef struct ATTR_SPEC {
    const char *name;
    ATTR_TYPE type;
    bool required;
    bool repeat; /* may appear more than once */
    const char *meaning; /* documentation */
} ATTR_SPEC;

typedef struct ATTR_LIST ATTR_LIST;

extern ATTR_LIST *attr_list_alloc(void);
extern ATTR_LIST *attr_list_free(ATTR_LIST *list);
extern size_t attr_list_count(const ATTR_LIST *list);
extern void attr_add_str(ATTR_LIST *list, const char *name, const char *value);
extern void attr_add_int(ATTR_LIST *list, const char *name, long long value);
extern void attr_add_data(ATTR_LIST *list, const char *name, const void *value,
                          size_t len);

/* Lookups return the first attribute of that name. */
extern const char *attr_get_str(const ATTR_LIST *list, const char *name);
extern bool attr_get_int(const ATTR_LIST *list, const char *name,
                         long long *value);
extern const char *attr_get_data(const ATTR_LIST *list, const char *name,
                                 size_t *len);
/* The i-th attribute, for repeated names and iteration. */
extern const char *attr_name_at(const ATTR_LIST *list, size_t i);
extern const char *attr_value_at(const ATTR_LIST *list, size_t i, size_t *len);

/* attr_list_encode - append the wire form of list to out */
extern void attr_list_encode(const ATTR_LIST *list, VSTR *out);

/* attr_list_decode - parse one list from buf[0..len). Returns 1 with *used
   bytes consumed and *out set; 0 when more bytes are needed; -1 when the
   bytes are malformed or the list exceeds max_len (reason in why). */
extern int attr_list_decode(const char *buf, size_t len, size_t max_len,
                            size_t *used, ATTR_LIST **out, VSTR *why);

/* attr_list_check - strict validation against a protocol table */
extern int attr_list_check(const ATTR_LIST *list, const ATTR_SPEC *spec,
                           size_t spec_count, VSTR *why);

/*
 * Blocking streams, for clients and simple servers: a buffered reader on a
 * descriptor, with a timeout per call.
 */
typedef struct ATTR_STREAM ATTR_STREAM;

extern ATTR_STREAM *attr_stream_open(int fd, size_t max_len, int timeout_ms);
extern ATTR_STREAM *attr_stream_close(ATTR_STREAM *stream); /* closes fd */
extern int attr_stream_fd(const ATTR_STREAM *stream);
/* 0 or -1 (reason in why: timeout, EOF, I/O error, malformed) */
extern int attr_stream_write(ATTR_STREAM *stream, const ATTR_LIST *list,
                             VSTR *why);
extern int attr_stream_read(ATTR_STREAM *stream, ATTR_LIST **out, VSTR *why);

#endif
