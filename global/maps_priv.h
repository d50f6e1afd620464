/*
 * maps_priv - what global/maps.c shares with its per-type modules
 *
 * Not for use outside maps*.c (and their unit tests). Each table type is a
 * MAP_TYPE row: open loads the table and says which file to watch for
 * changes (with the stat of what it actually read, so a file replaced
 * between open and stat is still noticed); get answers one (already
 * folded) key into result.
 */
#ifndef MAPS_PRIV_H
#define MAPS_PRIV_H

#include <sys/stat.h>

#include "sys_defs.h"
#include "vstr.h"

#define MAP_TYPE_PATTERN 0x01 /* matched against whole strings */
#define MAP_TYPE_NOFOLD 0x02 /* keys are never folded */

typedef struct MAP_TYPE {
    const char *type;
    int props; /* MAP_TYPE_* */
    /* open - NULL with why; *watch (mymalloc) and *st when a file backs it */
    void *(*open)(const char *name, int flags, VSTR *why, char **watch,
                  struct stat *st);
    /* get - value (in result), or NULL with *error */
    const char *(*get)(void *priv, const char *key, VSTR *result, int *error);
    void (*close)(void *priv);
    /* build - NULL when the type has nothing to build */
    int (*build)(const char *name, int flags, VSTR *why);
} MAP_TYPE;

extern const MAP_TYPE map_type_hash;
extern const MAP_TYPE map_type_btree;
extern const MAP_TYPE map_type_pcre;
extern const MAP_TYPE map_type_regexp;

/* map_lines_read - call fn for each logical line of path (comments and
   blank lines dropped, continuation lines joined with one space); fn
   returns 0 or -1 (with why). st gets the fstat of the file read. */
typedef int (*MAP_LINE_FN)(void *ctx, const char *path, char *line, int lineno,
                           VSTR *why);
extern int map_lines_read(const char *path, MAP_LINE_FN fn, void *ctx,
                          struct stat *st, VSTR *why);

/* map_text_read - "key value" (or alias "key: value") lines; keys folded
   unless MAP_FLAG_NOFOLD */
typedef int (*MAP_TEXT_FN)(void *ctx, const char *path, const char *key,
                           const char *value, int lineno, VSTR *why);
extern int map_text_read(const char *path, int flags, MAP_TEXT_FN fn, void *ctx,
                         struct stat *st, VSTR *why);

/* map_db_delete - remove key from name.db (copy and rename); 0 removed,
   1 absent, -1 error with why */
extern int map_db_delete(const char *name, bool btree, const char *key,
                         int flags, VSTR *why);

/* map_force_check - tests: make the next lookup stat the file now */
struct MAP;
extern void map_force_check(struct MAP *map);

#endif
