/*
 * fuzz_source_pool - one smtp_source_pools value (global/source_pool.h)
 *
 * The input's first line is a pool name, the rest its value. A value
 * that is refused has a reason and leaves the pool empty; one that is
 * taken has between 1 and SOURCE_POOL_SOURCES_MAX sources, each with a
 * weight in range and an address that parses again, and a round robin
 * over it picks only sources of weight above 0.
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "mymalloc.h"
#include "source_pool.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - a name line and a value */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *) data;
    const char *nl = memchr(text, '\n', size);
    size_t nlen = nl != NULL ? (size_t) (nl - text) : size;
    VSTR *name = vstr_alloc(64);
    VSTR *value = vstr_alloc(64);
    VSTR *why = vstr_alloc(64);
    SOURCE_POOL pool;

    fuzz_init("fuzz_source_pool");
    vstr_ncpy(name, text, nlen);
    vstr_truncate(name, strlen(vstr_str(name)));
    if (nl != NULL)
        vstr_ncpy(value, nl + 1, size - nlen - 1);
    vstr_truncate(value, strlen(vstr_str(value)));
    if (source_pool_parse(vstr_str(name), vstr_str(value), &pool, why) < 0) {
        if (vstr_len(why) == 0 || pool.sources != NULL || pool.count != 0)
            abort();
    } else {
        long long *current;
        unsigned char bin[16];

        if (pool.count == 0 || pool.count > SOURCE_POOL_SOURCES_MAX)
            abort();
        for (size_t i = 0; i < pool.count; i++) {
            const SOURCE_POOL_SOURCE *src = &pool.sources[i];

            if (src->weight < 0 || src->weight > SOURCE_POOL_WEIGHT_MAX ||
                inet_pton(src->family, src->address, bin) != 1)
                abort();
        }
        current = mycalloc(pool.count, sizeof(*current));
        for (int i = 0; i < 50; i++) {
            long pick = source_pool_wrr_next(&pool, current, NULL, NULL);

            if (pick < 0 || (size_t) pick >= pool.count ||
                pool.sources[pick].weight == 0)
                abort();
        }
        myfree(current);
        source_pool_clear(&pool);
    }
    vstr_free(name);
    vstr_free(value);
    vstr_free(why);
    return 0;
}
