/*
 * argv - growable, NULL-terminated arrays of strings
 */
#ifndef ARGV_H
#define ARGV_H

#include "sys_defs.h"

typedef struct ARGV {
    char **argv; /* NULL-terminated */
    size_t argc;
    size_t cap;
} ARGV;

extern ARGV *argv_alloc(size_t initial_cap);
extern ARGV *argv_free(ARGV *av); /* frees the strings too */
extern void argv_add(ARGV *av, const char *str); /* copies str */
extern void argv_addn(ARGV *av, const char *str, size_t len);
/* argv_split - split at any byte of delims, dropping empty fields */
extern ARGV *argv_split(const char *str, const char *delims);

#endif
