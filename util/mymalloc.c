/*
 * mymalloc - memory allocation that never returns NULL
 *
 * Each function either returns usable memory or ends the process with
 * msg_fatal(). A zero-length request still returns a unique pointer.
 */
#include "sys_defs.h"

#include "msg.h"
#include "mymalloc.h"

/* mymalloc - allocate len bytes or die */
void *mymalloc(size_t len)
{
    void *ptr = malloc(len ? len : 1);

    if (ptr == NULL)
        msg_fatal("out of memory allocating %zu bytes", len);
    return ptr;
}

/* mycalloc - allocate count*len zeroed bytes or die */
void *mycalloc(size_t count, size_t len)
{
    void *ptr;

    if (count == 0 || len == 0)
        count = len = 1;
    if ((ptr = calloc(count, len)) == NULL)
        msg_fatal("out of memory allocating %zu*%zu bytes", count, len);
    return ptr;
}

/* mymalloc_array - allocate count*len bytes, checking the product */
void *mymalloc_array(size_t count, size_t len)
{
    size_t total;

    if (__builtin_mul_overflow(count, len, &total))
        msg_fatal("allocation size overflow: %zu*%zu", count, len);
    return mymalloc(total);
}

/* myrealloc - resize or die; a NULL ptr allocates */
void *myrealloc(void *ptr, size_t len)
{
    void *new_ptr = realloc(ptr, len ? len : 1);

    if (new_ptr == NULL)
        msg_fatal("out of memory reallocating %zu bytes", len);
    return new_ptr;
}

/* myrealloc_array - resize to count*len bytes, checking the product */
void *myrealloc_array(void *ptr, size_t count, size_t len)
{
    size_t total;

    if (__builtin_mul_overflow(count, len, &total))
        msg_fatal("allocation size overflow: %zu*%zu", count, len);
    return myrealloc(ptr, total);
}

/* myfree - release memory; returns NULL for `p = myfree(p);` */
void *myfree(void *ptr)
{
    free(ptr);
    return NULL;
}

/* mystrdup - copy a string */
char *mystrdup(const char *str)
{
    return mymemdup(str, strlen(str) + 1);
}

/* mystrndup - copy at most len bytes of a string, always terminated */
char *mystrndup(const char *str, size_t len)
{
    size_t copy_len = strnlen(str, len);
    char *copy = mymalloc(copy_len + 1);

    memcpy(copy, str, copy_len);
    copy[copy_len] = 0;
    return copy;
}

/* mymemdup - copy len bytes */
void *mymemdup(const void *ptr, size_t len)
{
    void *copy = mymalloc(len);

    memcpy(copy, ptr, len);
    return copy;
}
