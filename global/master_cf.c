/*
 * master_cf - parse master.cf into a table of services
 *
 * Each logical line (a line that starts with white space continues the
 * previous one; blank and '#' lines are skipped and do not end it) has the
 * fields service, type, private, unpriv, chroot, wakeup, maxproc, command
 * and arguments. Every error names the file and the line, so master can
 * refuse to start (or to reload) with a reason the administrator can act on.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "argv.h"
#include "master_cf.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define MASTER_CF_FILE_MAX (4 * 1024 * 1024)
#define MASTER_CF_FIELDS 7 /* before the command */

/* master_serv_type_name - "inet" or "unix" */
const char *master_serv_type_name(MASTER_SERV_TYPE type)
{
    switch (type) {
    case MASTER_SERV_INET:
        return "inet";
    case MASTER_SERV_UNIX:
        return "unix";
    }
    msg_panic("%s: unknown type %d", __func__, (int) type);
}

/* master_cf_bool - a y/n/- field; false when bad */
static bool master_cf_bool(const char *field, bool def, bool *value)
{
    if (strcmp(field, "-") == 0)
        *value = def;
    else if (strcmp(field, "y") == 0)
        *value = true;
    else if (strcmp(field, "n") == 0)
        *value = false;
    else
        return false;
    return true;
}

/* master_cf_number - a decimal int, '-' for def; false when bad */
static bool master_cf_number(const char *field, int def, bool allow_query,
                             int *value)
{
    size_t len = strlen(field);
    int number = 0;

    if (strcmp(field, "-") == 0) {
        *value = def;
        return true;
    }
    /* Postfix: a wakeup time ending in '?' only wakes a used service. */
    if (allow_query && len > 1 && field[len - 1] == '?')
        len--;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char) field[i]))
            return false;
        if (__builtin_mul_overflow(number, 10, &number) ||
            __builtin_add_overflow(number, field[i] - '0', &number))
            return false;
    }
    *value = number;
    return true;
}

/* master_cf_entry - parse one logical line into ent; -1 with why */
static int master_cf_entry(MASTER_CF *cf, const char *text, const char *path,
                           int line, int default_maxproc, VSTR *why)
{
    ARGV *fields = argv_split(text, " \t\r\n\v\f");
    char **field = fields->argv;
    MASTER_ENT ent;
    const char *bad_what = NULL;
    const char *bad_value = NULL;

    memset(&ent, 0, sizeof(ent));
    if (fields->argc < MASTER_CF_FIELDS) {
        vstr_sprintf(why,
                     "%s line %d: too few fields (%zu, need %d and a "
                     "command)",
                     path, line, fields->argc, MASTER_CF_FIELDS);
        goto bad;
    }
    if (fields->argc == MASTER_CF_FIELDS) {
        vstr_sprintf(why, "%s line %d: missing command", path, line);
        goto bad;
    }
    if (strcmp(field[1], "inet") == 0) {
        ent.type = MASTER_SERV_INET;
    } else if (strcmp(field[1], "unix") == 0) {
        ent.type = MASTER_SERV_UNIX;
    } else {
        vstr_sprintf(why, "%s line %d: bad type \"%s\" (use inet or unix)",
                     path, line, field[1]);
        goto bad;
    }
    if (ent.type == MASTER_SERV_UNIX &&
        (strchr(field[0], '/') != NULL || strcmp(field[0], ".") == 0 ||
         strcmp(field[0], "..") == 0)) {
        vstr_sprintf(why, "%s line %d: bad unix service name \"%s\"", path,
                     line, field[0]);
        goto bad;
    }
    if (!master_cf_bool(field[2], true, &ent.private_service))
        bad_what = "private", bad_value = field[2];
    else if (!master_cf_bool(field[3], true, &ent.unpriv))
        bad_what = "unpriv", bad_value = field[3];
    else if (!master_cf_bool(field[4], false, &ent.chroot))
        bad_what = "chroot", bad_value = field[4];
    if (bad_what != NULL) {
        vstr_sprintf(why, "%s line %d: bad %s field \"%s\" (use y, n or -)",
                     path, line, bad_what, bad_value);
        goto bad;
    }
    if (!master_cf_number(field[5], 0, true, &ent.wakeup)) {
        vstr_sprintf(why, "%s line %d: bad wakeup time \"%s\"", path, line,
                     field[5]);
        goto bad;
    }
    if (!master_cf_number(field[6], default_maxproc, false, &ent.maxproc)) {
        vstr_sprintf(why, "%s line %d: bad maxproc \"%s\"", path, line,
                     field[6]);
        goto bad;
    }
    for (size_t i = 0; i < cf->count; i++) {
        if (cf->ents[i].type == ent.type &&
            strcmp(cf->ents[i].name, field[0]) == 0) {
            vstr_sprintf(why,
                         "%s line %d: duplicate service \"%s\" type %s "
                         "(first at line %d)",
                         path, line, field[0], master_serv_type_name(ent.type),
                         cf->ents[i].line);
            goto bad;
        }
    }
    ent.name = mystrdup(field[0]);
    ent.line = line;
    ent.argv = argv_alloc(fields->argc - MASTER_CF_FIELDS);
    for (size_t i = MASTER_CF_FIELDS; i < fields->argc; i++)
        argv_add(ent.argv, field[i]);
    cf->ents = myrealloc_array(cf->ents, cf->count + 1, sizeof(*cf->ents));
    cf->ents[cf->count++] = ent;
    argv_free(fields);
    return 0;

bad:
    argv_free(fields);
    return -1;
}

/* master_cf_blank_or_comment - a line that neither starts nor continues */
static bool master_cf_blank_or_comment(const char *line, size_t len)
{
    size_t skip = 0;

    while (skip < len && isspace((unsigned char) line[skip]))
        skip++;
    return skip == len || line[skip] == '#';
}

/* master_cf_parse - parse master.cf text */
MASTER_CF *master_cf_parse(const char *text, const char *path,
                           int default_maxproc, VSTR *why)
{
    MASTER_CF *cf = mymalloc(sizeof(*cf));
    VSTR *logical = vstr_alloc(100);
    const char *cp = text;
    int line = 0;
    int logical_line = 0; /* 0: none pending */
    int status = 0;

    cf->ents = NULL;
    cf->count = 0;
    while (*cp && status == 0) {
        size_t line_len = strcspn(cp, "\n");

        line++;
        if (master_cf_blank_or_comment(cp, line_len)) {
            /* Skipped; a logical line may continue after it. */
        } else if (isspace((unsigned char) *cp)) {
            if (logical_line == 0) {
                vstr_sprintf(why,
                             "%s line %d: continuation line without a "
                             "service before it",
                             path, line);
                status = -1;
            } else {
                vstr_addch(logical, ' ');
                vstr_ncat(logical, cp, line_len);
            }
        } else {
            if (logical_line != 0)
                status = master_cf_entry(cf, vstr_str(logical), path,
                                         logical_line, default_maxproc, why);
            vstr_ncpy(logical, cp, line_len);
            logical_line = line;
        }
        cp += line_len;
        if (*cp == '\n')
            cp++;
    }
    if (status == 0 && logical_line != 0)
        status = master_cf_entry(cf, vstr_str(logical), path, logical_line,
                                 default_maxproc, why);
    vstr_free(logical);
    if (status < 0)
        return master_cf_free(cf);
    return cf;
}

/* master_cf_read - read and parse a master.cf file */
MASTER_CF *master_cf_read(const char *path, int default_maxproc, VSTR *why)
{
    char *text;
    size_t len;
    MASTER_CF *cf;

    if ((text = safe_file_read(path, MASTER_CF_FILE_MAX, &len)) == NULL) {
        vstr_sprintf(why, "open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (memchr(text, 0, len) != NULL) {
        vstr_sprintf(why, "%s: NUL byte in file", path);
        myfree(text);
        return NULL;
    }
    cf = master_cf_parse(text, path, default_maxproc, why);
    myfree(text);
    return cf;
}

/* master_cf_free - release a table; returns NULL */
MASTER_CF *master_cf_free(MASTER_CF *cf)
{
    if (cf == NULL)
        return NULL;
    for (size_t i = 0; i < cf->count; i++) {
        myfree(cf->ents[i].name);
        argv_free(cf->ents[i].argv);
    }
    myfree(cf->ents);
    myfree(cf);
    return NULL;
}

/* master_cf_runs - does a service run program? */
bool master_cf_runs(const MASTER_CF *cf, const char *program)
{
    for (size_t i = 0; i < cf->count; i++) {
        const char *command = cf->ents[i].argv->argv[0];
        const char *base = strrchr(command, '/');

        /* A service of that name runs it through a wrapper (valgrind). */
        if (strcmp(base ? base + 1 : command, program) == 0 ||
            strcmp(cf->ents[i].name, program) == 0)
            return true;
    }
    return false;
}
