/*
 * fuzz_maps - lookup tables and match lists (global/maps.c, maps_pcre.c,
 * match_list.c)
 *
 * The first byte picks what the rest of the input is: a texthash: file, a
 * pcre: file, an alias-syntax texthash: file, the inside of an
 * inline:{...}, a list of tables, a domain or address match list, or a
 * file built into hash: whose every answer must be texthash:'s (its bit
 * 0x80 asks for case-sensitive tables, regexp:, parent domain matching
 * or the alias syntax). The table is opened and asked fixed keys and keys taken from
 * the input's lines, through maps_find, maps_find_fixed and
 * maps_find_addr (with and without a recipient delimiter), or the list is
 * asked whether items match. Answers must be consistent (a value with
 * MAP_OK, else NOTFOUND; a table built from a file never fails once
 * open). Lists may name only inline: and static: tables and no files, so
 * an input cannot read the disk.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <stdint.h>

#include "argv.h"
#include "fuzz_common.h"
#include "maps.h"
#include "match_list.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAPS_KEY_LINES 16 /* keys taken from the input */
#define FUZZ_MAPS_KEY_LEN 256 /* longest such key */

enum {
    FUZZ_MAPS_TEXTHASH,
    FUZZ_MAPS_PCRE,
    FUZZ_MAPS_ALIAS,
    FUZZ_MAPS_INLINE,
    FUZZ_MAPS_LIST,
    FUZZ_MAPS_DOMAINS,
    FUZZ_MAPS_ADDRS,
    FUZZ_MAPS_DIFF,
    FUZZ_MAPS_MODES,
};

static const char *const fuzz_maps_keys[] = {
    "",
    "a",
    "postmaster",
    "root",
    "user@example.test",
    "user+ext@example.test",
    "User+Ext-More@Sub.Example.TEST",
    "@example.test",
    "example.test",
    "sub.example.test",
    ".example.test",
    "x.",
    "1.2.3.4",
    "[1.2.3.4]",
    "::ffff:10.0.0.1",
    "::1",
    "[::1]",
    "Subject: hello $1 ${2}",
    "From: <a@b.test>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
};

/* fuzz_maps_check - one answer must be consistent: tables that
   were read (files, inline:, static:) never fail */
static void fuzz_maps_check(const char *value, int error)
{
    if (value != NULL) {
        if (error != MAP_OK)
            abort();
        (void) strlen(value);
    } else if (error != MAP_NOTFOUND) {
        abort();
    }
}

/* fuzz_maps_ask - every lookup of one key (a pattern table is asked
   only whole keys, so once or twice is all it can tell) */
static void fuzz_maps_ask(MAPS *maps, const char *key, bool pattern)
{
    static const char *const delims[] = {"", "+", "+-"};
    const char *value;
    int error;

    value = maps_find(maps, key, &error);
    fuzz_maps_check(value, error);
    if (pattern) {
        value = maps_find_addr(maps, key, "+", MAPS_ADDR_LOCAL, &error);
        fuzz_maps_check(value, error);
        return;
    }
    value = maps_find_fixed(maps, key, &error);
    fuzz_maps_check(value, error);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(delims); i++) {
        value = maps_find_addr(maps, key, delims[i], MAPS_ADDR_LOCAL, &error);
        fuzz_maps_check(value, error);
        value = maps_find_addr(maps, key, delims[i], 0, &error);
        fuzz_maps_check(value, error);
        value =
            maps_find_addr(maps, key, delims[i],
                           MAPS_ADDR_LOCAL | MAPS_ADDR_NO_AT_DOMAIN, &error);
        fuzz_maps_check(value, error);
    }
}

/* fuzz_maps_key_add - one key unless the list has it already */
static void fuzz_maps_key_add(ARGV *keys, const char *key, size_t len)
{
    for (size_t i = 0; i < keys->argc; i++)
        if (strlen(keys->argv[i]) == len &&
            memcmp(keys->argv[i], key, len) == 0)
            return;
    argv_addn(keys, key, len);
}

/* fuzz_maps_input_keys - keys from the first FUZZ_MAPS_KEY_LINES lines
   of the input: each line whole, its first word, and what lies between
   its first two '/' (a pcre rule's regex, which may match itself) */
static ARGV *fuzz_maps_input_keys(const char *text)
{
    ARGV *keys = argv_alloc(16);
    const char *cp = text;

    for (size_t lines = 0; *cp && lines < FUZZ_MAPS_KEY_LINES; lines++) {
        const char *nl = strchr(cp, '\n');
        size_t len = nl ? (size_t) (nl - cp) : strlen(cp);
        size_t word;
        const char *slash;

        if (len > FUZZ_MAPS_KEY_LEN)
            len = FUZZ_MAPS_KEY_LEN;
        fuzz_maps_key_add(keys, cp, len);
        for (word = 0; word < len && !isspace((unsigned char) cp[word]) &&
                       cp[word] != ':';
             word++)
            /* void */;
        fuzz_maps_key_add(keys, cp, word);
        if ((slash = memchr(cp, '/', len)) != NULL) {
            size_t rest = len - (size_t) (slash + 1 - cp);
            const char *end = memchr(slash + 1, '/', rest);

            if (end)
                fuzz_maps_key_add(keys, slash + 1, (size_t) (end - slash - 1));
        }
        if (nl == NULL)
            break;
        cp = nl + 1;
    }
    return keys;
}

/* fuzz_maps_reads_disk - could this list value open a file? */
static bool fuzz_maps_reads_disk(const char *value)
{
    static const char *const types[] = {
        "hash:", "btree:", "pcre:", "regexp:", "unix:",
    };
    VSTR *lower = vstr_lower(vstr_cpy(vstr_alloc(100), value));
    bool found = strchr(value, '/') != NULL;

    /* "hash:" covers texthash: too. */
    for (size_t i = 0; !found && i < SLUICE_ARRAY_LEN(types); i++)
        found = strstr(vstr_str(lower), types[i]) != NULL;
    vstr_free(lower);
    return found;
}

/* fuzz_maps_tables - open a table list and ask it everything */
static void fuzz_maps_tables(const char *value, int flags, bool pattern,
                             const char *text)
{
    VSTR *why = vstr_alloc(100);
    MAPS *maps;

    if ((maps = maps_create("fuzz_maps", value, flags, why)) == NULL) {
        if (vstr_len(why) == 0)
            abort(); /* refused without a reason */
    } else {
        ARGV *keys = fuzz_maps_input_keys(text);

        for (size_t i = 0; i < SLUICE_ARRAY_LEN(fuzz_maps_keys); i++)
            fuzz_maps_ask(maps, fuzz_maps_keys[i], pattern);
        for (size_t i = 0; i < keys->argc; i++)
            fuzz_maps_ask(maps, keys->argv[i], pattern);
        argv_free(keys);
        maps_free(maps);
    }
    vstr_free(why);
}

/* fuzz_maps_list - compile a match list and ask it */
static void fuzz_maps_list(const char *value, int flags)
{
    VSTR *why = vstr_alloc(100);
    MATCH_LIST *list;

    if ((list = match_list_create("fuzz_list", value, flags, why)) == NULL) {
        if (vstr_len(why) == 0)
            abort();
    } else {
        ARGV *keys = fuzz_maps_input_keys(value);

        for (size_t i = 0; i < SLUICE_ARRAY_LEN(fuzz_maps_keys); i++)
            if (match_list_match(list, fuzz_maps_keys[i]) < 0)
                abort(); /* inline: and static: never fail */
        for (size_t i = 0; i < keys->argc; i++)
            if (match_list_match(list, keys->argv[i]) < 0)
                abort();
        argv_free(keys);
        match_list_free(list);
    }
    vstr_free(why);
}

/* fuzz_maps_diff - hash: built from the file answers as texthash: reads it */
static void fuzz_maps_diff(const char *text, int flags)
{
    VSTR *spec = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    MAP *texthash;
    MAP *hash;
    ARGV *keys;

    vstr_sprintf(spec, "texthash:%s/table", fuzz_dir());
    texthash = map_open(vstr_str(spec), flags, why);
    vstr_sprintf(spec, "hash:%s/table", fuzz_dir());
    if ((map_build(vstr_str(spec), flags, why) == 0) != (texthash != NULL))
        abort(); /* the same text parser: both read it or neither */
    if (texthash == NULL) {
        vstr_free(spec);
        vstr_free(why);
        return;
    }
    if ((hash = map_open(vstr_str(spec), flags, why)) == NULL)
        abort();
    keys = fuzz_maps_input_keys(text);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(fuzz_maps_keys); i++)
        argv_add(keys, fuzz_maps_keys[i]);
    for (size_t i = 0; i < keys->argc; i++) {
        int error1, error2;
        const char *value1 = map_get(texthash, keys->argv[i], &error1);
        const char *value2 = map_get(hash, keys->argv[i], &error2);

        fuzz_maps_check(value1, error1);
        fuzz_maps_check(value2, error2);
        if ((value1 == NULL) != (value2 == NULL) ||
            (value1 && strcmp(value1, value2) != 0))
            abort();
    }
    argv_free(keys);
    map_close(hash);
    map_close(texthash);
    vstr_free(spec);
    vstr_free(why);
}

/* LLVMFuzzerTestOneInput - one table or list */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *spec;
    char *text;
    int mode;
    bool high;

    fuzz_init("fuzz_maps");
    if (size == 0)
        return 0;
    mode = data[0] % FUZZ_MAPS_MODES;
    high = (data[0] & 0x80) != 0;
    data++;
    size--;
    text = mystrndup((const char *) data, size);
    spec = vstr_alloc(100);
    switch (mode) {
    case FUZZ_MAPS_TEXTHASH:
    case FUZZ_MAPS_ALIAS:
        fuzz_write_file("table", data, size);
        vstr_sprintf(spec, "texthash:%s/table", fuzz_dir());
        fuzz_maps_tables(vstr_str(spec),
                         (mode == FUZZ_MAPS_ALIAS ? MAP_FLAG_ALIAS : 0) |
                             (high ? MAP_FLAG_NOFOLD : 0),
                         false, text);
        break;
    case FUZZ_MAPS_PCRE:
        fuzz_write_file("table", data, size);
        vstr_sprintf(spec, "%s:%s/table", high ? "regexp" : "pcre", fuzz_dir());
        fuzz_maps_tables(vstr_str(spec), MAP_FLAG_NONE, true, text);
        break;
    case FUZZ_MAPS_INLINE:
        vstr_sprintf(spec, "inline:{%s}", text);
        fuzz_maps_tables(vstr_str(spec), high ? MAP_FLAG_NOFOLD : 0, false,
                         text);
        break;
    case FUZZ_MAPS_LIST:
        if (!fuzz_maps_reads_disk(text))
            fuzz_maps_tables(text, high ? MAP_FLAG_NOFOLD : 0, false, text);
        break;
    case FUZZ_MAPS_DOMAINS:
        if (!fuzz_maps_reads_disk(text))
            fuzz_maps_list(text,
                           MATCH_LIST_DOMAIN | (high ? MATCH_LIST_PARENT : 0));
        break;
    case FUZZ_MAPS_ADDRS:
        if (!fuzz_maps_reads_disk(text))
            fuzz_maps_list(text, MATCH_LIST_ADDR);
        break;
    case FUZZ_MAPS_DIFF:
        fuzz_write_file("table", data, size);
        fuzz_maps_diff(text, high ? MAP_FLAG_ALIAS : 0);
        break;
    }
    vstr_free(spec);
    myfree(text);
    return 0;
}
