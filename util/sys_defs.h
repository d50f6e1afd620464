/*
 * sys_defs - the one header every sluice source includes first
 *
 * It sets the feature macros, pulls in the system headers nearly every module
 * needs, and defines the attribute macros the compiler uses to check us.
 */
#ifndef SYS_DEFS_H
#define SYS_DEFS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <sys/types.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLUICE_PRINTF(fmt_idx, arg_idx)                                        \
    __attribute__((format(printf, fmt_idx, arg_idx)))
#define SLUICE_NORETURN __attribute__((noreturn))
#define SLUICE_UNUSED __attribute__((unused))

#define SLUICE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
