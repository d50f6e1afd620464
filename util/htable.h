/*
 * htable - a string-keyed hash table
 *
 * Keys are NUL-terminated strings, copied into the table; values are the
 * caller's pointers. Separate chaining; the bucket array doubles when the
 * table holds more entries than buckets, so a lookup stays O(1) on average
 * whatever the size. Keys often come from the network (recipient domains),
 * so the hash is SipHash-2-4 with a key drawn at random per table: nobody
 * outside can pick names that all land in one chain.
 *
 * Iteration visits every entry once, in no particular order. While it
 * runs, the entry just returned may be deleted; entering or deleting any
 * other entry leaves the rest of the iteration undefined.
 */
#ifndef HTABLE_H
#define HTABLE_H

#include "sys_defs.h"

typedef struct HTABLE_ENTRY HTABLE_ENTRY;

typedef struct HTABLE {
    HTABLE_ENTRY **buckets;
    size_t size; /* buckets, a power of two */
    size_t count; /* entries */
    unsigned char seed[16]; /* the SipHash key */
} HTABLE;

typedef struct HTABLE_ITER {
    const HTABLE *table;
    size_t bucket; /* next bucket to look in */
    HTABLE_ENTRY *next; /* next entry to return, or NULL */
} HTABLE_ITER;

/* htable_alloc - an empty table sized for about size_hint entries */
extern HTABLE *htable_alloc(size_t size_hint);
/* htable_free - free the table and its keys; free_value (may be NULL) is
   called on each value; returns NULL */
extern HTABLE *htable_free(HTABLE *table, void (*free_value)(void *));
/* htable_find - the value stored under key, or NULL */
extern void *htable_find(const HTABLE *table, const char *key);
/* htable_locate - like htable_find, but tells a NULL value from absence */
extern bool htable_locate(const HTABLE *table, const char *key, void **value);
/* htable_enter - store value under key (copied); false, and the table
   unchanged, when key is there already */
extern bool htable_enter(HTABLE *table, const char *key, void *value);
/* htable_delete - remove key; its value (NULL when absent) is returned */
extern void *htable_delete(HTABLE *table, const char *key);
/* htable_count - entries in the table */
static inline size_t htable_count(const HTABLE *table)
{
    return table->count;
}

/* htable_iter_init - start an iteration over table */
extern void htable_iter_init(HTABLE_ITER *iter, const HTABLE *table);
/* htable_iter_next - the next entry: true with *key (owned by the table)
   and *value set (either may be NULL when not wanted); false at the end */
extern bool htable_iter_next(HTABLE_ITER *iter, const char **key, void **value);

/* htable_siphash - SipHash-2-4 of data under a 16-byte key */
extern uint64_t htable_siphash(const unsigned char key[16], const void *data,
                               size_t len);

#endif
