/*
 * match_list - lists of domains or client addresses, with tables
 *
 * A list compiles into items in order (file words are expanded in place,
 * carrying the negation of the "!/file" that named them); the first item
 * that matches decides, negated items saying "not in the list". Address
 * and network words are handed to mynetworks one by one; tables go
 * through maps.
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <ctype.h>

#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "mynetworks.h"
#include "vstr.h"

#define MATCH_LIST_MAX_DEPTH 5 /* /file naming /file ... */

typedef enum MATCH_KIND {
    MATCH_KIND_DOMAIN, /* example.test */
    MATCH_KIND_SUBDOMAIN, /* .example.test */
    MATCH_KIND_NET, /* 10.0.0.0/8 */
    MATCH_KIND_TABLE, /* type:name */
} MATCH_KIND;

typedef struct MATCH_ITEM {
    MATCH_KIND kind;
    bool negate;
    char *text; /* domain, lower case */
    MYNETWORKS *nets;
    MAP *map;
} MATCH_ITEM;

struct MATCH_LIST {
    int flags;
    MATCH_ITEM *items;
    size_t count;
    size_t cap;
    VSTR *item; /* the item being matched */
    VSTR *key; /* table lookup key */
};

/* match_list_item - append one item */
static MATCH_ITEM *match_list_item(MATCH_LIST *list, MATCH_KIND kind,
                                   bool negate)
{
    MATCH_ITEM *item;

    if (list->count == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 8;
        list->items =
            myrealloc_array(list->items, list->cap, sizeof(*list->items));
    }
    item = list->items + list->count++;
    memset(item, 0, sizeof(*item));
    item->kind = kind;
    item->negate = negate;
    return item;
}

/* match_list_is_table - "type:name" with a word-like type */
static bool match_list_is_table(const char *word)
{
    const char *cp = word;

    if (!isalpha((unsigned char) *cp))
        return false;
    while (isalnum((unsigned char) *cp) || *cp == '_')
        cp++;
    return *cp == ':';
}

static int match_list_parse(MATCH_LIST *list, const char *value, bool negate,
                            int depth, VSTR *why);

/* match_list_file - the words of /path/file */
static int match_list_file(MATCH_LIST *list, const char *path, bool negate,
                           int depth, VSTR *why)
{
    FILE *fp;
    char *line = NULL;
    size_t line_cap = 0;
    int status = 0;

    if (depth >= MATCH_LIST_MAX_DEPTH) {
        vstr_sprintf(why, "%s: files nested too deeply", path);
        return -1;
    }
    if ((fp = fopen(path, "re")) == NULL) {
        vstr_sprintf(why, "open %s: %s", path, strerror(errno));
        return -1;
    }
    while (status == 0 && getline(&line, &line_cap, fp) >= 0) {
        char *hash = strchr(line, '#');

        if (hash)
            *hash = 0;
        status = match_list_parse(list, line, negate, depth + 1, why);
    }
    if (status == 0 && ferror(fp)) {
        vstr_sprintf(why, "read %s: %s", path, strerror(errno));
        status = -1;
    }
    free(line);
    (void) fclose(fp);
    return status;
}

/* match_list_word - compile one word */
static int match_list_word(MATCH_LIST *list, const char *word, bool negate,
                           int depth, VSTR *why)
{
    MATCH_ITEM *item;
    MYNETWORKS *nets;

    while (*word == '!') {
        negate = !negate;
        word++;
    }
    if (*word == 0) {
        vstr_sprintf(why, "empty word after '!'");
        return -1;
    }
    if (*word == '/')
        return match_list_file(list, word, negate, depth, why);
    if (list->flags & MATCH_LIST_ADDR) {
        if ((nets = mynetworks_parse(word, why)) != NULL) {
            item = match_list_item(list, MATCH_KIND_NET, negate);
            item->nets = nets;
            return 0;
        }
        if (!match_list_is_table(word)) {
            vstr_sprintf(why, "bad address or network \"%s\"", word);
            return -1;
        }
    }
    if (match_list_is_table(word)) {
        MAP *map;

        if ((map = map_open(word, MAP_FLAG_NONE, why)) == NULL)
            return -1;
        item = match_list_item(list, MATCH_KIND_TABLE, negate);
        item->map = map;
        return 0;
    }
    item = match_list_item(
        list, word[0] == '.' ? MATCH_KIND_SUBDOMAIN : MATCH_KIND_DOMAIN,
        negate);
    item->text = mystrdup(word);
    for (char *cp = item->text; *cp; cp++)
        *cp = (char) tolower((unsigned char) *cp);
    return 0;
}

/* match_list_parse - the words of a list (commas, white space) */
static int match_list_parse(MATCH_LIST *list, const char *value, bool negate,
                            int depth, VSTR *why)
{
    ARGV *words;
    int status = 0;

    /* inline:{ a, b } keeps its braces (and what is in them) whole */
    if ((words = maps_split(value, why)) == NULL)
        return -1;
    for (size_t i = 0; i < words->argc && status >= 0; i++)
        status = match_list_word(list, words->argv[i], negate, depth, why);
    argv_free(words);
    return status < 0 ? -1 : 0;
}

/* match_list_create - compile param's value */
MATCH_LIST *match_list_create(const char *param, const char *value, int flags,
                              VSTR *why)
{
    MATCH_LIST *list = mycalloc(1, sizeof(*list));
    VSTR *reason = vstr_alloc(100);

    if ((flags & (MATCH_LIST_DOMAIN | MATCH_LIST_ADDR)) == 0)
        flags |= MATCH_LIST_DOMAIN;
    list->flags = flags;
    list->item = vstr_alloc(100);
    list->key = vstr_alloc(100);
    if (match_list_parse(list, value ? value : "", false, 0, reason) < 0) {
        vstr_sprintf(why, "%s: %s", param, vstr_str(reason));
        list = match_list_free(list);
    }
    vstr_free(reason);
    return list;
}

/* match_list_free - release a list; returns NULL */
MATCH_LIST *match_list_free(MATCH_LIST *list)
{
    if (list) {
        for (size_t i = 0; i < list->count; i++) {
            myfree(list->items[i].text);
            mynetworks_free(list->items[i].nets);
            map_close(list->items[i].map);
        }
        myfree(list->items);
        vstr_free(list->item);
        vstr_free(list->key);
        myfree(list);
    }
    return NULL;
}

/* match_list_lookup - 1 the table has key (not REJECT/DUNNO), 0, -1 */
static int match_list_lookup(MAP *map, const char *key)
{
    const char *value;
    int error;

    if ((value = map_get(map, key, &error)) == NULL)
        return error == MAP_FAIL ? -1 : 0;
    return strcasecmp(value, "REJECT") != 0 && strcasecmp(value, "DUNNO") != 0;
}

/* match_list_domain_table - the domain, then its parents */
static int match_list_domain_table(MATCH_LIST *list, MAP *map,
                                   const char *domain)
{
    const char *dot;
    int status;

    if ((status = match_list_lookup(map, domain)) != 0)
        return status;
    if (map_is_pattern(map))
        return 0;
    for (dot = strchr(domain, '.'); dot; dot = strchr(dot + 1, '.')) {
        if ((list->flags & MATCH_LIST_PARENT) && dot[1] &&
            (status = match_list_lookup(map, dot + 1)) != 0)
            return status;
        if ((status = match_list_lookup(map, dot)) != 0)
            return status;
    }
    return 0;
}

/* match_list_addr_table - the address, then 1.2.3, 1.2, 1 for IPv4 */
static int match_list_addr_table(MATCH_LIST *list, MAP *map, const char *addr)
{
    struct in_addr in4;
    char *dot;
    int status;

    if ((status = match_list_lookup(map, addr)) != 0)
        return status;
    if (map_is_pattern(map) || inet_pton(AF_INET, addr, &in4) != 1)
        return 0;
    vstr_cpy(list->key, addr);
    while ((dot = strrchr(vstr_str(list->key), '.')) != NULL) {
        vstr_truncate(list->key, (size_t) (dot - vstr_str(list->key)));
        if ((status = match_list_lookup(map, vstr_str(list->key))) != 0)
            return status;
    }
    return 0;
}

/* match_list_one - does item match (1, 0, -1) */
static int match_list_one(MATCH_LIST *list, const MATCH_ITEM *item,
                          const char *name)
{
    size_t name_len = strlen(name);
    size_t text_len;

    switch (item->kind) {
    case MATCH_KIND_DOMAIN:
        if (strcmp(name, item->text) == 0)
            return 1;
        text_len = strlen(item->text);
        return (list->flags & MATCH_LIST_PARENT) && name_len > text_len &&
               name[name_len - text_len - 1] == '.' &&
               strcmp(name + name_len - text_len, item->text) == 0;
    case MATCH_KIND_SUBDOMAIN:
        text_len = strlen(item->text);
        return name_len > text_len &&
               strcmp(name + name_len - text_len, item->text) == 0;
    case MATCH_KIND_NET:
        return mynetworks_match(item->nets, name);
    case MATCH_KIND_TABLE:
        if (list->flags & MATCH_LIST_ADDR)
            return match_list_addr_table(list, item->map, name);
        return match_list_domain_table(list, item->map, name);
    }
    msg_panic("%s: bad item kind %d", __func__, (int) item->kind);
}

/* match_list_match - 1 in the list, 0 not, -1 a table failed */
int match_list_match(MATCH_LIST *list, const char *item)
{
    const char *name;
    int status;

    vstr_cpy(list->item, item);
    if (list->flags & MATCH_LIST_ADDR) {
        size_t len = vstr_len(list->item);

        /* [1.2.3.4] and ::ffff:1.2.3.4 look tables up as 1.2.3.4 */
        if (len >= 2 && item[0] == '[' && item[len - 1] == ']')
            vstr_ncpy(list->item, item + 1, len - 2);
        if (strncasecmp(vstr_str(list->item), "::ffff:", 7) == 0 &&
            strchr(vstr_str(list->item) + 7, '.') != NULL) {
            len = vstr_len(list->item) - 7;
            memmove(vstr_str(list->item), vstr_str(list->item) + 7, len);
            vstr_truncate(list->item, len);
        }
    } else {
        vstr_lower(list->item);
        if (vstr_len(list->item) > 1 &&
            vstr_str(list->item)[vstr_len(list->item) - 1] == '.')
            vstr_truncate(list->item, vstr_len(list->item) - 1);
    }
    name = vstr_str(list->item);
    for (size_t i = 0; i < list->count; i++) {
        if ((status = match_list_one(list, list->items + i, name)) < 0)
            return -1;
        if (status > 0)
            return list->items[i].negate ? 0 : 1;
    }
    return 0;
}
