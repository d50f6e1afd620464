/*
 * maps - lookup tables named type:name, and lists of them
 *
 * One MAP is one opened table: its type's state (priv), the file to watch
 * for changes, and the buffer that holds the last value returned. A lookup
 * stats the watched file at most once a second and opens the table again
 * when dev, inode, size or mtime changed; a table that fails to open again
 * keeps answering from the copy it has (with a warning), because `sluice
 * map` replaces files by rename and a broken edit must not lose mail.
 *
 * This file holds the generic part and the small types (static, inline,
 * texthash, unix); Berkeley DB is in maps_db.c, PCRE2 in maps_pcre.c.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <time.h>

#include "argv.h"
#include "maps.h"
#include "maps_priv.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "vstr.h"

struct MAP {
    char *spec; /* "type:name" as given */
    char *name; /* after the ':' */
    int flags; /* MAP_FLAG_* */
    const MAP_TYPE *type;
    void *priv; /* the type's state */
    char *watch; /* file to stat, or NULL */
    struct stat st; /* what priv was loaded from */
    time_t checked; /* second of the last stat */
    VSTR *key; /* folded key */
    VSTR *result; /* last value returned */
};

struct MAPS {
    MAP **maps;
    size_t count;
    VSTR *key; /* address lookup candidates */
};

/*
 * Text files.
 */

/* map_lines_flush - hand one logical line to the caller */
static int map_lines_flush(VSTR *logical, int start_line, const char *path,
                           MAP_LINE_FN fn, void *ctx, VSTR *why)
{
    int status = 0;

    if (vstr_len(logical) > 0)
        status = fn(ctx, path, vstr_str(logical), start_line, why);
    vstr_reset(logical);
    return status;
}

/* map_lines_read - logical lines of a table's text file */
int map_lines_read(const char *path, MAP_LINE_FN fn, void *ctx, struct stat *st,
                   VSTR *why)
{
    VSTR *logical;
    FILE *fp;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    int fd;
    int lineno = 0;
    int start_line = 0;
    int status = 0;
    struct stat st_buf;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        vstr_sprintf(why, "open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, st ? st : &st_buf) < 0 || (fp = fdopen(fd, "r")) == NULL) {
        vstr_sprintf(why, "open %s: %s", path, strerror(errno));
        (void) close(fd);
        return -1;
    }
    logical = vstr_alloc(100);
    while (status == 0 && (got = getline(&line, &line_cap, fp)) >= 0) {
        char *cp;
        size_t len = (size_t) got;

        lineno++;
        while (len > 0 && isspace((unsigned char) line[len - 1]))
            len--;
        line[len] = 0;
        for (cp = line; isspace((unsigned char) *cp); cp++)
            /* void */;
        if (*cp == 0 || *cp == '#')
            continue;
        if (cp == line) {
            status = map_lines_flush(logical, start_line, path, fn, ctx, why);
            vstr_cpy(logical, line);
            start_line = lineno;
        } else if (vstr_len(logical) == 0) {
            vstr_sprintf(why,
                         "%s line %d: continuation line without a "
                         "preceding line (lines start with the key)",
                         path, lineno);
            status = -1;
        } else {
            vstr_addch(logical, ' ');
            vstr_cat(logical, cp);
        }
    }
    if (status == 0 && ferror(fp)) {
        vstr_sprintf(why, "read %s: %s", path, strerror(errno));
        status = -1;
    }
    if (status == 0)
        status = map_lines_flush(logical, start_line, path, fn, ctx, why);
    free(line);
    vstr_free(logical);
    (void) fclose(fp);
    return status;
}

typedef struct MAP_TEXT_CTX {
    int flags;
    MAP_TEXT_FN fn;
    void *ctx;
} MAP_TEXT_CTX;

/* map_text_line - split one logical line into key and value */
static int map_text_line(void *context, const char *path, char *line,
                         int lineno, VSTR *why)
{
    MAP_TEXT_CTX *text = context;
    char *key = line;
    char *value;
    char *end;

    if (text->flags & MAP_FLAG_ALIAS) {
        if ((value = strchr(line, ':')) == NULL) {
            vstr_sprintf(why, "%s line %d: missing ':' after the alias name",
                         path, lineno);
            return -1;
        }
        *value++ = 0;
        for (end = value - 1; end > key && isspace((unsigned char) end[-1]);
             end--)
            /* void */;
        *end = 0;
        if (*key == 0) {
            vstr_sprintf(why, "%s line %d: empty alias name", path, lineno);
            return -1;
        }
    } else {
        for (value = line; *value && !isspace((unsigned char) *value); value++)
            /* void */;
        if (*value)
            *value++ = 0;
    }
    while (isspace((unsigned char) *value))
        value++;
    if (*value == 0) {
        vstr_sprintf(why,
                     "%s line %d: no value for key \"%s\" (expected "
                     "\"key%svalue\")",
                     path, lineno, key,
                     (text->flags & MAP_FLAG_ALIAS) ? ": " : " ");
        return -1;
    }
    if ((text->flags & MAP_FLAG_NOFOLD) == 0)
        for (char *cp = key; *cp; cp++)
            *cp = (char) tolower((unsigned char) *cp);
    return text->fn(text->ctx, path, key, value, lineno, why);
}

/* map_text_read - the key/value pairs of a table's text file */
int map_text_read(const char *path, int flags, MAP_TEXT_FN fn, void *ctx,
                  struct stat *st, VSTR *why)
{
    MAP_TEXT_CTX text = {flags, fn, ctx};

    return map_lines_read(path, map_text_line, &text, st, why);
}

/*
 * A small string hash for texthash: and inline:, first key wins.
 */
typedef struct MAP_HASH_ENTRY {
    char *key;
    char *value;
    struct MAP_HASH_ENTRY *next;
} MAP_HASH_ENTRY;

typedef struct MAP_HASH {
    MAP_HASH_ENTRY **buckets;
    size_t size; /* power of two */
    size_t count;
} MAP_HASH;

/* map_hash_code - FNV-1a */
static size_t map_hash_code(const char *key)
{
    uint64_t code = 14695981039346656037ULL;

    for (const unsigned char *cp = (const unsigned char *) key; *cp; cp++)
        code = (code ^ *cp) * 1099511628211ULL;
    return (size_t) code;
}

/* map_hash_create - an empty table */
static MAP_HASH *map_hash_create(void)
{
    MAP_HASH *hash = mymalloc(sizeof(*hash));

    hash->size = 64;
    hash->count = 0;
    hash->buckets = mycalloc(hash->size, sizeof(*hash->buckets));
    return hash;
}

/* map_hash_find - the entry for key, or NULL */
static MAP_HASH_ENTRY *map_hash_find(const MAP_HASH *hash, const char *key)
{
    MAP_HASH_ENTRY *entry;

    for (entry = hash->buckets[map_hash_code(key) & (hash->size - 1)]; entry;
         entry = entry->next)
        if (strcmp(entry->key, key) == 0)
            return entry;
    return NULL;
}

/* map_hash_grow - double the bucket array */
static void map_hash_grow(MAP_HASH *hash)
{
    size_t new_size = hash->size * 2;
    MAP_HASH_ENTRY **buckets = mycalloc(new_size, sizeof(*buckets));

    for (size_t i = 0; i < hash->size; i++) {
        MAP_HASH_ENTRY *entry;
        MAP_HASH_ENTRY *next;

        for (entry = hash->buckets[i]; entry; entry = next) {
            size_t slot = map_hash_code(entry->key) & (new_size - 1);

            next = entry->next;
            entry->next = buckets[slot];
            buckets[slot] = entry;
        }
    }
    myfree(hash->buckets);
    hash->buckets = buckets;
    hash->size = new_size;
}

/* map_hash_add - add key unless present; false when it was */
static bool map_hash_add(MAP_HASH *hash, const char *key, const char *value)
{
    MAP_HASH_ENTRY *entry;
    size_t slot;

    if (map_hash_find(hash, key))
        return false;
    if (hash->count >= hash->size)
        map_hash_grow(hash);
    entry = mymalloc(sizeof(*entry));
    entry->key = mystrdup(key);
    entry->value = mystrdup(value);
    slot = map_hash_code(key) & (hash->size - 1);
    entry->next = hash->buckets[slot];
    hash->buckets[slot] = entry;
    hash->count++;
    return true;
}

/* map_hash_free - release the table */
static void map_hash_free(void *context)
{
    MAP_HASH *hash = context;

    for (size_t i = 0; i < hash->size; i++) {
        MAP_HASH_ENTRY *entry;
        MAP_HASH_ENTRY *next;

        for (entry = hash->buckets[i]; entry; entry = next) {
            next = entry->next;
            myfree(entry->key);
            myfree(entry->value);
            myfree(entry);
        }
    }
    myfree(hash->buckets);
    myfree(hash);
}

/* map_hash_get - MAP_TYPE get for texthash: and inline: */
static const char *map_hash_get(void *context, const char *key, VSTR *result,
                                int *error)
{
    MAP_HASH_ENTRY *entry = map_hash_find(context, key);

    if (entry == NULL) {
        *error = MAP_NOTFOUND;
        return NULL;
    }
    *error = MAP_OK;
    return vstr_str(vstr_cpy(result, entry->value));
}

/*
 * texthash:/path - the text file, read when opened.
 */

/* map_texthash_add - one pair into the table */
static int map_texthash_add(void *context, const char *path, const char *key,
                            const char *value, int lineno, VSTR *why)
{
    if (!map_hash_add(context, key, value))
        msg_warn("%s line %d: duplicate key %s: ignored", path, lineno, key);
    return 0;
}

/* map_texthash_open - read the file */
static void *map_texthash_open(const char *name, int flags, VSTR *why,
                               char **watch, struct stat *st)
{
    MAP_HASH *hash = map_hash_create();

    if (map_text_read(name, flags, map_texthash_add, hash, st, why) < 0) {
        map_hash_free(hash);
        return NULL;
    }
    *watch = mystrdup(name);
    return hash;
}

static const MAP_TYPE map_type_texthash = {
    "texthash", 0, map_texthash_open, map_hash_get, map_hash_free, NULL,
};

/*
 * inline:{ key=value, { key = value with, commas } }
 */

/* map_trim - a copy of text[0..len) without white space at either end */
static char *map_trim(const char *text, size_t len)
{
    while (len > 0 && isspace((unsigned char) *text))
        text++, len--;
    while (len > 0 && isspace((unsigned char) text[len - 1]))
        len--;
    return mystrndup(text, len);
}

/* map_brace_end - the '}' that closes the '{' at open; NULL if none */
static const char *map_brace_end(const char *open_brace)
{
    int depth = 0;

    for (const char *cp = open_brace; *cp; cp++) {
        if (*cp == '{')
            depth++;
        else if (*cp == '}' && --depth == 0)
            return cp;
    }
    return NULL;
}

/* map_inline_pair - "key=value" into the table */
static int map_inline_pair(MAP_HASH *hash, const char *spec, const char *item,
                           size_t len, int flags, VSTR *why)
{
    const char *eq = memchr(item, '=', len);
    char *key;
    char *value;

    if (eq == NULL) {
        vstr_sprintf(why, "inline:%s: missing '=' in \"%.*s\"", spec, (int) len,
                     item);
        return -1;
    }
    key = map_trim(item, (size_t) (eq - item));
    value = map_trim(eq + 1, len - (size_t) (eq - item) - 1);
    if (*key == 0) {
        vstr_sprintf(why, "inline:%s: empty key in \"%.*s\"", spec, (int) len,
                     item);
        myfree(key);
        myfree(value);
        return -1;
    }
    if ((flags & MAP_FLAG_NOFOLD) == 0)
        for (char *cp = key; *cp; cp++)
            *cp = (char) tolower((unsigned char) *cp);
    if (!map_hash_add(hash, key, value))
        msg_warn("inline:%s: duplicate key %s: ignored", spec, key);
    myfree(key);
    myfree(value);
    return 0;
}

/* map_inline_open - parse the braces */
static void *map_inline_open(const char *name, int flags, VSTR *why,
                             char **watch, struct stat *st)
{
    MAP_HASH *hash;
    const char *end;
    const char *cp;
    const char *last;

    if (name[0] != '{' || (end = map_brace_end(name)) == NULL || end[1] != 0) {
        vstr_sprintf(why, "inline:%s: expected inline:{ key=value, ... }",
                     name);
        return NULL;
    }
    hash = map_hash_create();
    for (cp = name + 1; cp < end; cp = last) {
        if (*cp == ',' || isspace((unsigned char) *cp)) {
            last = cp + 1;
            continue;
        }
        if (*cp == '{') {
            if ((last = map_brace_end(cp)) == NULL || last > end) {
                vstr_sprintf(why, "inline:%s: unbalanced braces", name);
                map_hash_free(hash);
                return NULL;
            }
            if (map_inline_pair(hash, name, cp + 1, (size_t) (last - cp - 1),
                                flags, why) < 0) {
                map_hash_free(hash);
                return NULL;
            }
            last++;
            continue;
        }
        for (last = cp;
             last < end && *last != ',' && !isspace((unsigned char) *last);
             last++)
            /* void */;
        if (map_inline_pair(hash, name, cp, (size_t) (last - cp), flags, why) <
            0) {
            map_hash_free(hash);
            return NULL;
        }
    }
    return hash;
}

static const MAP_TYPE map_type_inline = {
    "inline", 0, map_inline_open, map_hash_get, map_hash_free, NULL,
};

/*
 * static:value - every key finds value ("static:{ with spaces }" too).
 */

/* map_static_open - remember the value */
static void *map_static_open(const char *name, int flags, VSTR *why,
                             char **watch, struct stat *st)
{
    size_t len = strlen(name);

    if (name[0] == '{') {
        if (len < 2 || name[len - 1] != '}') {
            vstr_sprintf(why, "static:%s: unbalanced braces", name);
            return NULL;
        }
        return map_trim(name + 1, len - 2);
    }
    return mystrdup(name);
}

/* map_static_get - the one value */
static const char *map_static_get(void *context, const char *key, VSTR *result,
                                  int *error)
{
    *error = MAP_OK;
    return vstr_str(vstr_cpy(result, context));
}

/* map_static_close - free the value */
static void map_static_close(void *context)
{
    myfree(context);
}

static const MAP_TYPE map_type_static = {
    "static",         MAP_TYPE_PATTERN | MAP_TYPE_NOFOLD,
    map_static_open,  map_static_get,
    map_static_close, NULL,
};

/*
 * unix:passwd.byname - getpwnam(3).
 */

/* map_unix_open - only passwd.byname exists */
static void *map_unix_open(const char *name, int flags, VSTR *why, char **watch,
                           struct stat *st)
{
    static char dummy;

    if (strcmp(name, "passwd.byname") != 0) {
        vstr_sprintf(why, "unix:%s: unknown table (only unix:passwd.byname)",
                     name);
        return NULL;
    }
    return &dummy;
}

/* map_unix_get - the passwd line of user key */
static const char *map_unix_get(void *context, const char *key, VSTR *result,
                                int *error)
{
    struct passwd *pw;

    errno = 0;
    if ((pw = getpwnam(key)) == NULL) {
        if (errno == 0 || errno == ENOENT || errno == ESRCH || errno == EBADF ||
            errno == EPERM) {
            *error = MAP_NOTFOUND;
        } else {
            msg_warn("unix:passwd.byname: getpwnam %s: %m", key);
            *error = MAP_FAIL;
        }
        return NULL;
    }
    *error = MAP_OK;
    vstr_sprintf(result, "%s:%s:%ld:%ld:%s:%s:%s", pw->pw_name,
                 pw->pw_passwd ? pw->pw_passwd : "", (long) pw->pw_uid,
                 (long) pw->pw_gid, pw->pw_gecos ? pw->pw_gecos : "",
                 pw->pw_dir ? pw->pw_dir : "",
                 pw->pw_shell ? pw->pw_shell : "");
    return vstr_str(result);
}

/* map_unix_close - nothing to free */
static void map_unix_close(void *context) {}

static const MAP_TYPE map_type_unix = {
    "unix", MAP_TYPE_NOFOLD, map_unix_open, map_unix_get, map_unix_close, NULL,
};

/*
 * One table.
 */
static const MAP_TYPE *const map_types[] = {
    &map_type_hash,   &map_type_btree,  &map_type_texthash, &map_type_pcre,
    &map_type_regexp, &map_type_inline, &map_type_static,   &map_type_unix,
};

/* map_find_type - the type of spec; NULL with why */
static const MAP_TYPE *map_find_type(const char *spec, const char **name,
                                     VSTR *why)
{
    const char *colon = strchr(spec, ':');

    if (colon == NULL || colon == spec) {
        vstr_sprintf(why, "%s: bad table name (expected type:name)", spec);
        return NULL;
    }
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(map_types); i++) {
        if (strlen(map_types[i]->type) == (size_t) (colon - spec) &&
            strncasecmp(map_types[i]->type, spec, (size_t) (colon - spec)) ==
                0) {
            *name = colon + 1;
            return map_types[i];
        }
    }
    vstr_sprintf(why, "%s: unsupported table type \"%.*s\"", spec,
                 (int) (colon - spec), spec);
    return NULL;
}

/* map_open - open one table */
MAP *map_open(const char *spec, int flags, VSTR *why)
{
    const MAP_TYPE *type;
    const char *name;
    MAP *map;
    void *priv;
    char *watch = NULL;
    struct stat st;

    if ((type = map_find_type(spec, &name, why)) == NULL)
        return NULL;
    if (type->props & MAP_TYPE_NOFOLD)
        flags |= MAP_FLAG_NOFOLD;
    memset(&st, 0, sizeof(st));
    if ((priv = type->open(name, flags, why, &watch, &st)) == NULL)
        return NULL;
    map = mymalloc(sizeof(*map));
    map->spec = mystrdup(spec);
    map->name = map->spec + (name - spec);
    map->flags = flags;
    map->type = type;
    map->priv = priv;
    map->watch = watch;
    map->st = st;
    map->checked = time(NULL);
    map->key = vstr_alloc(64);
    map->result = vstr_alloc(64);
    return map;
}

/* map_close - release a table; returns NULL */
MAP *map_close(MAP *map)
{
    if (map) {
        map->type->close(map->priv);
        myfree(map->watch);
        myfree(map->spec);
        vstr_free(map->key);
        vstr_free(map->result);
        myfree(map);
    }
    return NULL;
}

/* map_force_check - tests: stat the file on the next lookup */
void map_force_check(MAP *map)
{
    map->checked = 0;
}

/* map_changed - the file is not the one loaded */
static bool map_changed(const struct stat *now, const struct stat *then)
{
    return now->st_dev != then->st_dev || now->st_ino != then->st_ino ||
           now->st_size != then->st_size ||
           now->st_mtim.tv_sec != then->st_mtim.tv_sec ||
           now->st_mtim.tv_nsec != then->st_mtim.tv_nsec;
}

/* map_recheck - open the table again when its file changed */
static void map_recheck(MAP *map)
{
    struct stat st;
    time_t now = time(NULL);
    char *watch = NULL;
    void *priv;
    VSTR *why;

    if (map->watch == NULL || now == map->checked)
        return;
    map->checked = now;
    if (stat(map->watch, &st) < 0 || !map_changed(&st, &map->st))
        return;
    why = vstr_alloc(100);
    if ((priv = map->type->open(map->name, map->flags, why, &watch, &st)) ==
        NULL) {
        msg_warn("%s changed but cannot be read: %s; using the old table",
                 map->spec, vstr_str(why));
    } else {
        map->type->close(map->priv);
        myfree(map->watch);
        map->priv = priv;
        map->watch = watch;
        map->st = st;
    }
    vstr_free(why);
}

/* map_get - look a key up (folded unless the table is case-sensitive) */
const char *map_get(MAP *map, const char *key, int *error)
{
    map_recheck(map);
    if ((map->flags & MAP_FLAG_NOFOLD) == 0) {
        vstr_lower(vstr_cpy(map->key, key));
        key = vstr_str(map->key);
    }
    return map->type->get(map->priv, key, map->result, error);
}

/* map_is_pattern - asked whole strings only */
bool map_is_pattern(const MAP *map)
{
    return (map->type->props & MAP_TYPE_PATTERN) != 0;
}

/* map_spec - "type:name" */
const char *map_spec(const MAP *map)
{
    return map->spec;
}

/* map_build - build the indexed file of a table */
int map_build(const char *spec, int flags, VSTR *why)
{
    const MAP_TYPE *type;
    const char *name;

    if ((type = map_find_type(spec, &name, why)) == NULL)
        return -1;
    if (type->build == NULL) {
        vstr_sprintf(why,
                     "%s: cannot build a %s: table (only hash: and "
                     "btree:)",
                     spec, type->type);
        return -1;
    }
    return type->build(name, flags, why);
}

/* map_delete - remove key from a hash:/btree: table's .db file */
int map_delete(const char *spec, const char *key, int flags, VSTR *why)
{
    const MAP_TYPE *type;
    const char *name;

    if ((type = map_find_type(spec, &name, why)) == NULL)
        return -1;
    if (type != &map_type_hash && type != &map_type_btree) {
        vstr_sprintf(why,
                     "%s: cannot delete from a %s: table (only hash: "
                     "and btree:)",
                     spec, type->type);
        return -1;
    }
    return map_db_delete(name, type == &map_type_btree, key, flags, why);
}

/*
 * Lists of tables.
 */

/* maps_split - the entries of a list; inline:{...} stays whole */
ARGV *maps_split(const char *value, VSTR *why)
{
    ARGV *words = argv_alloc(4);
    const char *cp = value;
    const char *start;

    while (*cp) {
        if (*cp == ',' || isspace((unsigned char) *cp)) {
            cp++;
            continue;
        }
        for (start = cp; *cp && *cp != ',' && !isspace((unsigned char) *cp);
             cp++) {
            if (*cp == '{') {
                const char *end = map_brace_end(cp);

                if (end == NULL) {
                    vstr_sprintf(why, "unbalanced '{' in \"%s\"", start);
                    argv_free(words);
                    return NULL;
                }
                cp = end;
            }
        }
        argv_addn(words, start, (size_t) (cp - start));
    }
    return words;
}

/* maps_create - open every table of a list */
MAPS *maps_create(const char *param, const char *value, int flags, VSTR *why)
{
    ARGV *words;
    MAPS *maps;
    VSTR *reason;

    reason = vstr_alloc(100);
    if ((words = maps_split(value, reason)) == NULL) {
        vstr_sprintf(why, "%s: %s", param, vstr_str(reason));
        vstr_free(reason);
        return NULL;
    }
    maps = mymalloc(sizeof(*maps));
    maps->maps =
        mymalloc_array(words->argc ? words->argc : 1, sizeof(*maps->maps));
    maps->count = 0;
    maps->key = vstr_alloc(100);
    for (size_t i = 0; i < words->argc; i++) {
        if ((maps->maps[i] = map_open(words->argv[i], flags, reason)) == NULL) {
            vstr_sprintf(why, "%s: %s", param, vstr_str(reason));
            maps = maps_free(maps);
            break;
        }
        maps->count++;
    }
    argv_free(words);
    vstr_free(reason);
    return maps;
}

/* maps_free - close every table; returns NULL */
MAPS *maps_free(MAPS *maps)
{
    if (maps) {
        for (size_t i = 0; i < maps->count; i++)
            map_close(maps->maps[i]);
        myfree(maps->maps);
        vstr_free(maps->key);
        myfree(maps);
    }
    return NULL;
}

/* maps_count - number of tables */
size_t maps_count(const MAPS *maps)
{
    return maps->count;
}

/* maps_find - the first table that has key answers */
const char *maps_find(MAPS *maps, const char *key, int *error)
{
    const char *value;

    for (size_t i = 0; i < maps->count; i++) {
        if ((value = map_get(maps->maps[i], key, error)) != NULL)
            return value;
        if (*error == MAP_FAIL)
            return NULL;
    }
    *error = MAP_NOTFOUND;
    return NULL;
}

/* maps_find_fixed - maps_find, asking only the tables that are not
   pattern tables (for the partial keys of an address: domain, parents) */
const char *maps_find_fixed(MAPS *maps, const char *key, int *error)
{
    const char *value;

    for (size_t i = 0; i < maps->count; i++) {
        if (map_is_pattern(maps->maps[i]))
            continue;
        if ((value = map_get(maps->maps[i], key, error)) != NULL)
            return value;
        if (*error == MAP_FAIL)
            return NULL;
    }
    *error = MAP_NOTFOUND;
    return NULL;
}

/* maps_try - one candidate key; true when the search ends (hit or fail) */
static bool maps_try(MAP *map, VSTR *key, const char **value, int *error)
{
    *value = map_get(map, vstr_str(key), error);
    return *value != NULL || *error == MAP_FAIL;
}

/* maps_find_addr - Postfix's address lookup order */
const char *maps_find_addr(MAPS *maps, const char *addr, const char *delim,
                           int flags, int *error)
{
    size_t local_len;
    const char *at =
        smtp_addr_split(addr, &local_len) ? addr + local_len : NULL;
    size_t user_len = local_len;
    const char *value;
    VSTR *key = maps->key;

    /* The extension starts at the first delimiter after the user name. */
    if (delim && *delim) {
        for (size_t i = 1; i < local_len; i++) {
            if (strchr(delim, addr[i])) {
                user_len = i;
                break;
            }
        }
    }
    for (size_t i = 0; i < maps->count; i++) {
        MAP *map = maps->maps[i];

        vstr_cpy(key, addr);
        if (maps_try(map, key, &value, error))
            return value;
        if (map_is_pattern(map))
            continue;
        if (at && user_len < local_len) {
            vstr_ncpy(key, addr, user_len);
            vstr_cat(key, at);
            if (maps_try(map, key, &value, error))
                return value;
        }
        if (at && (flags & MAPS_ADDR_LOCAL)) {
            vstr_ncpy(key, addr, local_len);
            if (maps_try(map, key, &value, error))
                return value;
        }
        if (user_len < local_len && (at == NULL || (flags & MAPS_ADDR_LOCAL))) {
            vstr_ncpy(key, addr, user_len);
            if (maps_try(map, key, &value, error))
                return value;
        }
        if (at && (flags & MAPS_ADDR_NO_AT_DOMAIN) == 0) {
            vstr_cpy(key, at);
            if (maps_try(map, key, &value, error))
                return value;
        }
    }
    *error = MAP_NOTFOUND;
    return NULL;
}
