/*
 * maps - lookup tables named type:name, and lists of them
 *
 * Every parameter that takes tables (alias_maps, transport_maps,
 * canonical_maps, header_checks, check_*_access ...) goes through this one
 * interface. Types:
 *
 *   hash:/path, btree:/path   Berkeley DB 5.3 file /path.db, built from the
 *                             text file /path by `sluice map` (map_build)
 *   texthash:/path            the text file /path, read when opened
 *   pcre:/path, regexp:/path  PCRE2 patterns in Postfix's syntax:
 *                             "/regex/flags result", "!/regex/ result",
 *                             if /regex/ ... endif, $1..$9 and ${1} in the
 *                             result; matching is case-insensitive
 *                             unless the flag i (which toggles it, as in
 *                             Postfix) is given; flags m and x as PCRE2
 *   inline:{ key=value, { key = value with, commas }, ... }
 *   static:value              every key finds value
 *   unix:passwd.byname        the system's users (getpwnam): the value is
 *                             the passwd line
 *
 * Text files (hash, btree, texthash): one "key value" per line, white
 * space or ':' after the key for alias files (MAP_FLAG_ALIAS), '#'
 * comments, continuation lines start with white space, empty lines
 * ignored. Keys are folded to lower case when the table is built and when
 * it is searched (MAP_FLAG_FOLD, the default for every table); values
 * keep their case.
 *
 * A table whose file changes (inode, size or mtime) is opened again on
 * the next lookup after the change, at most once a second; a file that
 * is being replaced by `sluice map` (rename) is never seen half-built.
 *
 * Lookup results: a value, or NULL with *error set to MAP_NOTFOUND (no
 * such key) or MAP_FAIL (the table could not be read: the caller answers
 * "try again later", never "no such user"). A returned value stays valid
 * until the next lookup in the same MAP or MAPS.
 */
#ifndef MAPS_H
#define MAPS_H

#include "sys_defs.h"
#include "argv.h"
#include "vstr.h"

#define MAP_FLAG_NONE 0
#define MAP_FLAG_ALIAS 0x01 /* "key: value" text syntax */
#define MAP_FLAG_NOFOLD 0x02 /* keys are case-sensitive */

#define MAP_OK 0
#define MAP_NOTFOUND 1
#define MAP_FAIL 2

typedef struct MAP MAP;

/* map_open - open one table "type:name"; NULL with the reason in why
   ("hash:/etc/aliases: open /etc/aliases.db: No such file or directory") */
extern MAP *map_open(const char *spec, int flags, VSTR *why);
extern MAP *map_close(MAP *map);
/* map_get - look a key up as it is (after folding) */
extern const char *map_get(MAP *map, const char *key, int *error);
/* map_is_pattern - pcre:/regexp: (or static:): matched against whole
   strings, so address lookups ask them only the full address */
extern bool map_is_pattern(const MAP *map);
extern const char *map_spec(const MAP *map);

/* map_build - `sluice map TYPE:FILE`: build FILE.db from the text FILE
   (hash, btree) through a temporary file and rename, so readers see the
   old or the new table, never a partial one. Other types: -1, "cannot
   build". 0, or -1 with the file and line in why. */
extern int map_build(const char *spec, int flags, VSTR *why);
/* map_delete - `sluice map -d KEY`: remove key (folded unless
   MAP_FLAG_NOFOLD) from FILE.db of a hash:/btree: table, again through a
   temporary copy and rename (the text FILE is not touched). 0 removed,
   1 no such key, -1 error with why. */
extern int map_delete(const char *spec, const char *key, int flags, VSTR *why);

/*
 * MAPS: a parameter's list of tables ("hash:/etc/aliases, pcre:/x"),
 * searched in order; the first table that has the key answers. Entries are
 * separated by commas or white space; an inline:{...} entry keeps its
 * braces whole. A table that fails to open makes maps_create fail.
 */
typedef struct MAPS MAPS;

/* maps_split - the words of a list (separated by commas or white space),
   a "{...}" group (inline:{ a=b, c=d }) kept whole with what it holds;
   NULL with the reason in why when a '{' is not closed */
extern ARGV *maps_split(const char *value, VSTR *why);

/* maps_create - param names the parameter, for messages; value may be ""
   (an empty list: every lookup is MAP_NOTFOUND) */
extern MAPS *maps_create(const char *param, const char *value, int flags,
                         VSTR *why);
extern MAPS *maps_free(MAPS *maps);
extern const char *maps_find(MAPS *maps, const char *key, int *error);
/* maps_find_fixed - the same, skipping pattern tables: for keys that are
   parts of what a pattern table would be asked whole (domains of an
   address, parent domains, "*") */
extern const char *maps_find_fixed(MAPS *maps, const char *key, int *error);
extern size_t maps_count(const MAPS *maps);

/*
 * maps_find_addr - Postfix's address lookup order, per table, stopping at
 * the first hit (pattern tables are asked the full address only):
 *   user+ext@domain, user@domain (when delim is set and the local part has
 *   an extension), then, when flags has MAPS_ADDR_LOCAL (the domain is one
 *   of ours: canonical, aliases), user+ext and user, then @domain.
 * delim is recipient_delimiter ("" for none). An address without '@' is
 * looked up as user+ext, user.
 */
#define MAPS_ADDR_LOCAL 0x01
#define MAPS_ADDR_NO_AT_DOMAIN 0x02 /* skip the @domain step */
extern const char *maps_find_addr(MAPS *maps, const char *addr,
                                  const char *delim, int flags, int *error);

#endif
