/*
 * sluice_map - `sluice map`: build, query and edit lookup tables
 *
 *   sluice map [-a] TYPE:FILE            build FILE.db from the text FILE
 *   sluice map [-a] -q KEY TYPE:FILE     print KEY's value
 *   sluice map -d KEY TYPE:FILE          remove KEY from FILE.db
 *
 * -a reads the text as an alias file ("name: value"). Building and -d
 * write a new FILE.db beside the old one and rename it into place, so
 * running servers see the old table or the new one, never a partial one.
 * -d edits FILE.db only: the text FILE is not touched, and the key comes
 * back at the next build unless it is removed from FILE too.
 *
 * Exit status: 0 done (the value printed for -q); 1 no such key (nothing
 * printed); 2 bad usage or a table that cannot be opened or built; 75
 * (EX_TEMPFAIL) when the table could not be read.
 */
#include "sys_defs.h"

#include <sysexits.h>

#include "maps.h"
#include "sluice.h"
#include "vstr.h"

#define SLUICE_MAP_ERROR 2

static const char sluice_map_usage[] =
    "usage: sluice map [-a] [-q KEY | -d KEY] TYPE:FILE (-d edits FILE.db "
    "only, not the text FILE)";

/* sluice_map_query - -q: value on stdout */
static int sluice_map_query(const char *spec, int flags, const char *key)
{
    VSTR *why = vstr_alloc(100);
    const char *value;
    MAP *map;
    int error;
    int status;

    if ((map = map_open(spec, flags, why)) == NULL) {
        sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        return SLUICE_MAP_ERROR;
    }
    if ((value = map_get(map, key, &error)) != NULL) {
        printf("%s\n", value);
        status = fflush(stdout) == 0 ? 0 : SLUICE_MAP_ERROR;
    } else if (error == MAP_NOTFOUND) {
        status = 1;
    } else {
        sluice_fail("%s: lookup of \"%s\" failed: try again later", spec, key);
        status = EX_TEMPFAIL;
    }
    map_close(map);
    vstr_free(why);
    return status;
}

/* sluice_map - the subcommand; argv[0] is "map" */
int sluice_map(const char *config_dir, int argc, char **argv)
{
    const char *query = NULL;
    const char *delete = NULL;
    int flags = MAP_FLAG_NONE;
    VSTR *why;
    int status;
    int i;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "-a") == 0) {
            flags |= MAP_FLAG_ALIAS;
        } else if ((strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "-d") == 0) &&
                   i + 1 < argc) {
            if (argv[i][1] == 'q')
                query = argv[++i];
            else
                delete = argv[++i];
        } else {
            sluice_fail("map: bad option \"%s\"; %s", argv[i],
                        sluice_map_usage);
            return SLUICE_MAP_ERROR;
        }
    }
    if (i + 1 != argc || (query && delete)) {
        sluice_fail("%s", sluice_map_usage);
        return SLUICE_MAP_ERROR;
    }
    if (query)
        return sluice_map_query(argv[i], flags, query);
    why = vstr_alloc(100);
    if (delete) {
        if ((status = map_delete(argv[i], delete, flags, why)) < 0) {
            sluice_fail("%s", vstr_str(why));
            status = SLUICE_MAP_ERROR;
        }
    } else if ((status = map_build(argv[i], flags, why)) < 0) {
        sluice_fail("%s", vstr_str(why));
        status = SLUICE_MAP_ERROR;
    }
    vstr_free(why);
    return status;
}
