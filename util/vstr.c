/*
 * vstr - strings that grow themselves and cannot overflow
 *
 * Growth doubles the capacity, with every size computed through overflow
 * checks, so no caller ever does buffer arithmetic of its own.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

/* vstr_alloc - a new empty string */
VSTR *vstr_alloc(size_t initial_cap)
{
    VSTR *vs = mymalloc(sizeof(*vs));

    if (initial_cap < 16)
        initial_cap = 16;
    if (initial_cap == SIZE_MAX)
        msg_fatal("%s: capacity overflow", __func__);
    vs->data = mymalloc(initial_cap + 1);
    vs->cap = initial_cap;
    vs->len = 0;
    vs->data[0] = 0;
    return vs;
}

/* vstr_free - release a string; returns NULL */
VSTR *vstr_free(VSTR *vs)
{
    if (vs) {
        myfree(vs->data);
        myfree(vs);
    }
    return NULL;
}

/* vstr_export - hand the content to the caller and free the rest */
char *vstr_export(VSTR *vs)
{
    char *data = vs->data;

    myfree(vs);
    return data;
}

/* vstr_reserve - make room for extra more bytes */
void vstr_reserve(VSTR *vs, size_t extra)
{
    size_t need;
    size_t new_cap;
    size_t alloc_len;

    if (__builtin_add_overflow(vs->len, extra, &need))
        msg_fatal("%s: length overflow", __func__);
    if (need <= vs->cap)
        return;
    new_cap = vs->cap;
    while (new_cap < need)
        if (__builtin_mul_overflow(new_cap, 2, &new_cap))
            new_cap = need;
    if (__builtin_add_overflow(new_cap, 1, &alloc_len))
        msg_fatal("%s: length overflow", __func__);
    vs->data = myrealloc(vs->data, alloc_len);
    vs->cap = new_cap;
}

/* vstr_reset - make the string empty, keeping its memory */
VSTR *vstr_reset(VSTR *vs)
{
    vs->len = 0;
    vs->data[0] = 0;
    return vs;
}

/* vstr_truncate - shorten to len bytes (no-op when already shorter) */
VSTR *vstr_truncate(VSTR *vs, size_t len)
{
    if (len < vs->len) {
        vs->len = len;
        vs->data[len] = 0;
    }
    return vs;
}

/* vstr_ncat - append len bytes */
VSTR *vstr_ncat(VSTR *vs, const char *data, size_t len)
{
    vstr_reserve(vs, len);
    memcpy(vs->data + vs->len, data, len);
    vs->len += len;
    vs->data[vs->len] = 0;
    return vs;
}

/* vstr_cat - append a C string */
VSTR *vstr_cat(VSTR *vs, const char *str)
{
    return vstr_ncat(vs, str, strlen(str));
}

/* vstr_ncpy - replace the content with len bytes */
VSTR *vstr_ncpy(VSTR *vs, const char *data, size_t len)
{
    return vstr_ncat(vstr_reset(vs), data, len);
}

/* vstr_cpy - replace the content with a C string */
VSTR *vstr_cpy(VSTR *vs, const char *str)
{
    return vstr_ncpy(vs, str, strlen(str));
}

/* vstr_addch - append one byte */
VSTR *vstr_addch(VSTR *vs, int ch)
{
    char byte = (char) ch;

    return vstr_ncat(vs, &byte, 1);
}

/* vstr_vsprintf_append - append formatted text */
VSTR *vstr_vsprintf_append(VSTR *vs, const char *fmt, va_list ap)
{
    va_list ap2;
    int need;

    va_copy(ap2, ap);
    need = vsnprintf(vs->data + vs->len, vs->cap - vs->len + 1, fmt, ap2);
    va_end(ap2);
    if (need < 0)
        msg_panic("%s: bad format \"%s\"", __func__, fmt);
    if ((size_t) need > vs->cap - vs->len) {
        vstr_reserve(vs, (size_t) need);
        if (vsnprintf(vs->data + vs->len, vs->cap - vs->len + 1, fmt, ap) !=
            need)
            msg_panic("%s: format length changed", __func__);
    }
    vs->len += (size_t) need;
    return vs;
}

/* vstr_sprintf_append - append formatted text */
VSTR *vstr_sprintf_append(VSTR *vs, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vstr_vsprintf_append(vs, fmt, ap);
    va_end(ap);
    return vs;
}

/* vstr_sprintf - replace the content with formatted text */
VSTR *vstr_sprintf(VSTR *vs, const char *fmt, ...)
{
    va_list ap;

    vstr_reset(vs);
    va_start(ap, fmt);
    vstr_vsprintf_append(vs, fmt, ap);
    va_end(ap);
    return vs;
}

/* vstr_lower - fold ASCII letters to lower case */
VSTR *vstr_lower(VSTR *vs)
{
    for (size_t i = 0; i < vs->len; i++)
        vs->data[i] = (char) tolower((unsigned char) vs->data[i]);
    return vs;
}

/* vstr_trim - strip trailing white space */
VSTR *vstr_trim(VSTR *vs)
{
    while (vs->len > 0 && isspace((unsigned char) vs->data[vs->len - 1]))
        vs->len--;
    vs->data[vs->len] = 0;
    return vs;
}
