/*
 * vstr - strings that grow themselves and cannot overflow
 *
 * A VSTR holds bytes (NULs allowed) with a length and a capacity, and always
 * keeps a spare NUL after the last byte so vstr_str() is a C string whenever
 * the content has no NUL of its own.
 */
#ifndef VSTR_H
#define VSTR_H

#include "sys_defs.h"

typedef struct VSTR {
    char *data; /* content, NUL after len bytes */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated, less the NUL */
} VSTR;

extern VSTR *vstr_alloc(size_t initial_cap);
extern VSTR *vstr_free(VSTR *vs);
extern char *vstr_export(VSTR *vs); /* frees vs, returns its data */
extern void vstr_reserve(VSTR *vs, size_t extra);
extern VSTR *vstr_reset(VSTR *vs);
extern VSTR *vstr_truncate(VSTR *vs, size_t len);
extern VSTR *vstr_cpy(VSTR *vs, const char *str);
extern VSTR *vstr_ncpy(VSTR *vs, const char *data, size_t len);
extern VSTR *vstr_cat(VSTR *vs, const char *str);
extern VSTR *vstr_ncat(VSTR *vs, const char *data, size_t len);
extern VSTR *vstr_addch(VSTR *vs, int ch);
extern VSTR *vstr_sprintf(VSTR *vs, const char *fmt, ...) SLUICE_PRINTF(2, 3);
extern VSTR *vstr_sprintf_append(VSTR *vs, const char *fmt, ...)
    SLUICE_PRINTF(2, 3);
extern VSTR *vstr_vsprintf_append(VSTR *vs, const char *fmt, va_list ap)
    SLUICE_PRINTF(2, 0);
extern VSTR *vstr_lower(VSTR *vs);
extern VSTR *vstr_trim(VSTR *vs); /* strip trailing white space */

static inline char *vstr_str(const VSTR *vs)
{
    return vs->data;
}
static inline size_t vstr_len(const VSTR *vs)
{
    return vs->len;
}

#endif
