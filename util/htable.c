/*
 * htable - a string-keyed hash table
 *
 * Separate chaining over a power-of-two bucket array that doubles when the
 * entries outnumber the buckets. The hash is SipHash-2-4 (Aumasson and
 * Bernstein, "SipHash: a fast short-input PRF", 2012) keyed per table from
 * getrandom(), so chains stay short even when an adversary names the keys.
 */
#include "sys_defs.h"

#include <sys/random.h>
#include <time.h>

#include "htable.h"
#include "msg.h"
#include "mymalloc.h"

#define HTABLE_MIN_SIZE 16

struct HTABLE_ENTRY {
    char *key;
    void *value;
    uint64_t hash;
    HTABLE_ENTRY *next;
};

/* htable_rotl - rotate a 64-bit word left */
static inline uint64_t htable_rotl(uint64_t word, int bits)
{
    return (word << bits) | (word >> (64 - bits));
}

/* htable_load64 - a little-endian 64-bit word */
static inline uint64_t htable_load64(const unsigned char *bytes)
{
    uint64_t word = 0;

    for (int i = 7; i >= 0; i--)
        word = (word << 8) | bytes[i];
    return word;
}

/* htable_sipround - one SipRound over the state */
static inline void htable_sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = htable_rotl(v[1], 13);
    v[1] ^= v[0];
    v[0] = htable_rotl(v[0], 32);
    v[2] += v[3];
    v[3] = htable_rotl(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = htable_rotl(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = htable_rotl(v[1], 17);
    v[1] ^= v[2];
    v[2] = htable_rotl(v[2], 32);
}

/* htable_siphash - SipHash-2-4 of data under a 16-byte key */
uint64_t htable_siphash(const unsigned char key[16], const void *data,
                        size_t len)
{
    const unsigned char *in = data;
    uint64_t k0 = htable_load64(key);
    uint64_t k1 = htable_load64(key + 8);
    uint64_t v[4] = {
        k0 ^ 0x736f6d6570736575ULL,
        k1 ^ 0x646f72616e646f6dULL,
        k0 ^ 0x6c7967656e657261ULL,
        k1 ^ 0x7465646279746573ULL,
    };
    size_t whole = len - len % 8;
    uint64_t last = (uint64_t) (len & 0xff) << 56;

    for (size_t pos = 0; pos < whole; pos += 8) {
        uint64_t word = htable_load64(in + pos);

        v[3] ^= word;
        htable_sipround(v);
        htable_sipround(v);
        v[0] ^= word;
    }
    for (size_t i = 0; i < len % 8; i++)
        last |= (uint64_t) in[whole + i] << (8 * i);
    v[3] ^= last;
    htable_sipround(v);
    htable_sipround(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for (int round = 0; round < 4; round++)
        htable_sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* htable_hash - the hash of a key in this table */
static uint64_t htable_hash(const HTABLE *table, const char *key)
{
    return htable_siphash(table->seed, key, strlen(key));
}

/* htable_seed - a fresh random SipHash key */
static void htable_seed(unsigned char seed[16])
{
    ssize_t got = getrandom(seed, 16, GRND_NONBLOCK);

    if (got != 16) {
        /* No entropy yet (early boot): weaker, but the table still works. */
        struct timespec now;
        uint64_t mix[2];

        clock_gettime(CLOCK_MONOTONIC, &now);
        mix[0] = (uint64_t) now.tv_nsec ^ ((uint64_t) now.tv_sec << 30);
        mix[1] = (uint64_t) getpid() ^ (uint64_t) (uintptr_t) seed;
        memcpy(seed, mix, 16);
    }
}

/* htable_alloc - an empty table sized for about size_hint entries */
HTABLE *htable_alloc(size_t size_hint)
{
    HTABLE *table = mymalloc(sizeof(*table));
    size_t size = HTABLE_MIN_SIZE;

    while (size < size_hint && size < (SIZE_MAX / sizeof(HTABLE_ENTRY *)) / 2)
        size *= 2;
    table->buckets = mycalloc(size, sizeof(HTABLE_ENTRY *));
    table->size = size;
    table->count = 0;
    htable_seed(table->seed);
    return table;
}

/* htable_free - free the table, its keys, and (free_value) its values */
HTABLE *htable_free(HTABLE *table, void (*free_value)(void *))
{
    if (table == NULL)
        return NULL;
    for (size_t i = 0; i < table->size; i++) {
        HTABLE_ENTRY *entry = table->buckets[i];

        while (entry) {
            HTABLE_ENTRY *next = entry->next;

            if (free_value)
                free_value(entry->value);
            myfree(entry->key);
            myfree(entry);
            entry = next;
        }
    }
    myfree(table->buckets);
    myfree(table);
    return NULL;
}

/* htable_lookup - the link that points at key's entry (or at NULL) */
static HTABLE_ENTRY **htable_lookup(const HTABLE *table, const char *key,
                                    uint64_t hash)
{
    HTABLE_ENTRY **link = &table->buckets[hash & (table->size - 1)];

    while (*link && ((*link)->hash != hash || strcmp((*link)->key, key) != 0))
        link = &(*link)->next;
    return link;
}

/* htable_locate - the value under key, telling a NULL value from absence */
bool htable_locate(const HTABLE *table, const char *key, void **value)
{
    HTABLE_ENTRY *entry = *htable_lookup(table, key, htable_hash(table, key));

    if (entry == NULL)
        return false;
    if (value)
        *value = entry->value;
    return true;
}

/* htable_find - the value stored under key, or NULL */
void *htable_find(const HTABLE *table, const char *key)
{
    void *value = NULL;

    (void) htable_locate(table, key, &value);
    return value;
}

/* htable_grow - double the bucket array and rehash */
static void htable_grow(HTABLE *table)
{
    size_t size;
    HTABLE_ENTRY **buckets;

    if (__builtin_mul_overflow(table->size, (size_t) 2, &size) ||
        size > SIZE_MAX / sizeof(HTABLE_ENTRY *))
        return; /* chains get longer; lookups still work */
    buckets = mycalloc(size, sizeof(HTABLE_ENTRY *));
    for (size_t i = 0; i < table->size; i++) {
        HTABLE_ENTRY *entry = table->buckets[i];

        while (entry) {
            HTABLE_ENTRY *next = entry->next;
            HTABLE_ENTRY **head = &buckets[entry->hash & (size - 1)];

            entry->next = *head;
            *head = entry;
            entry = next;
        }
    }
    myfree(table->buckets);
    table->buckets = buckets;
    table->size = size;
}

/* htable_enter - store value under key; false when key is there already */
bool htable_enter(HTABLE *table, const char *key, void *value)
{
    uint64_t hash = htable_hash(table, key);
    HTABLE_ENTRY **link = htable_lookup(table, key, hash);
    HTABLE_ENTRY *entry;

    if (*link)
        return false;
    entry = mymalloc(sizeof(*entry));
    entry->key = mystrdup(key);
    entry->value = value;
    entry->hash = hash;
    entry->next = NULL;
    *link = entry;
    table->count++;
    if (table->count > table->size)
        htable_grow(table);
    return true;
}

/* htable_delete - remove key; its value (NULL when absent) is returned */
void *htable_delete(HTABLE *table, const char *key)
{
    HTABLE_ENTRY **link = htable_lookup(table, key, htable_hash(table, key));
    HTABLE_ENTRY *entry = *link;
    void *value;

    if (entry == NULL)
        return NULL;
    *link = entry->next;
    value = entry->value;
    myfree(entry->key);
    myfree(entry);
    if (table->count == 0)
        msg_panic("%s: count underflow", __func__);
    table->count--;
    return value;
}

/* htable_iter_init - start an iteration over table */
void htable_iter_init(HTABLE_ITER *iter, const HTABLE *table)
{
    iter->table = table;
    iter->bucket = 0;
    iter->next = NULL;
}

/* htable_iter_next - the next entry, or false at the end */
bool htable_iter_next(HTABLE_ITER *iter, const char **key, void **value)
{
    HTABLE_ENTRY *entry;

    while (iter->next == NULL) {
        if (iter->bucket >= iter->table->size)
            return false;
        iter->next = iter->table->buckets[iter->bucket++];
    }
    entry = iter->next;
    /* Step past it now, so the caller may delete it. */
    iter->next = entry->next;
    if (key)
        *key = entry->key;
    if (value)
        *value = entry->value;
    return true;
}
