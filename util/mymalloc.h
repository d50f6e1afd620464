/*
 * mymalloc - memory allocation that never returns NULL
 *
 * Running out of memory is fatal for the process (master restarts it), so
 * callers never test for NULL. Size arithmetic that may overflow goes through
 * mymalloc_array(), which checks the multiplication.
 */
#ifndef MYMALLOC_H
#define MYMALLOC_H

#include "sys_defs.h"

extern void *mymalloc(size_t len);
extern void *mycalloc(size_t count, size_t len);
extern void *mymalloc_array(size_t count, size_t len);
extern void *myrealloc(void *ptr, size_t len);
extern void *myrealloc_array(void *ptr, size_t count, size_t len);
extern void *myfree(void *ptr);
extern char *mystrdup(const char *str);
extern char *mystrndup(const char *str, size_t len);
extern void *mymemdup(const void *ptr, size_t len);

#endif
