/*
 * argv - growable, NULL-terminated arrays of strings
 */
#include "sys_defs.h"

#include "argv.h"
#include "mymalloc.h"

/* argv_alloc - an empty array */
ARGV *argv_alloc(size_t initial_cap)
{
    ARGV *av = mymalloc(sizeof(*av));

    av->cap = initial_cap > 0 ? initial_cap : 4;
    av->argc = 0;
    av->argv = mymalloc_array(av->cap + 1, sizeof(char *));
    av->argv[0] = NULL;
    return av;
}

/* argv_free - free the array and its strings; returns NULL */
ARGV *argv_free(ARGV *av)
{
    if (av == NULL)
        return NULL;
    for (size_t i = 0; i < av->argc; i++)
        myfree(av->argv[i]);
    myfree(av->argv);
    myfree(av);
    return NULL;
}

/* argv_addn - append a copy of len bytes of str */
void argv_addn(ARGV *av, const char *str, size_t len)
{
    if (av->argc >= av->cap) {
        av->cap *= 2;
        av->argv = myrealloc_array(av->argv, av->cap + 1, sizeof(char *));
    }
    av->argv[av->argc++] = mystrndup(str, len);
    av->argv[av->argc] = NULL;
}

/* argv_add - append a copy of str */
void argv_add(ARGV *av, const char *str)
{
    argv_addn(av, str, strlen(str));
}

/* argv_split - split at any byte of delims, dropping empty fields */
ARGV *argv_split(const char *str, const char *delims)
{
    ARGV *av = argv_alloc(4);
    const char *cp = str;

    while (*cp) {
        size_t skip = strspn(cp, delims);
        cp += skip;
        if (*cp == 0)
            break;
        size_t len = strcspn(cp, delims);
        argv_addn(av, cp, len);
        cp += len;
    }
    return av;
}
