/*
 * man_params - print the PARAMETERS section of main.cf(5) from the table
 *
 * Usage: man_params > params.roff
 *
 * Walks mail_param_table() (global/mail_params.c), the one list every
 * program reads, and prints each parameter as a man(7) .TP paragraph in
 * name order: name, type, default and description. main.cf.5 is built
 * from main.cf.5.in with this output in place of its @PARAMETERS@ line,
 * so a parameter added to the table is in the manual at the next make.
 * The directory defaults are those that ./configure compiled in.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "mail_conf.h"
#include "mymalloc.h"
#include "vstr.h"

/* man_params_type - the type as main.cf(5) names it (the words of
   `sluice conf -d`); a new type is a compile error here (-Wswitch) */
static const char *man_params_type(MAIL_PARAM_TYPE type)
{
    switch (type) {
    case MAIL_PARAM_STR:
        return "string";
    case MAIL_PARAM_INT:
        return "integer";
    case MAIL_PARAM_BOOL:
        return "boolean";
    case MAIL_PARAM_TIME:
        return "time";
    case MAIL_PARAM_SIZE:
        return "size";
    case MAIL_PARAM_LIST:
        return "list";
    case MAIL_PARAM_TIME_LIST:
        return "list of times";
    }
    return "unknown";
}

/* man_params_escape - text made safe for roff: a backslash as \e, a
   dash as \-, and a text line of at most about 72 bytes (broken at a
   space) that never starts with '.' or '\'' (a request) */
static const char *man_params_escape(VSTR *out, const char *text)
{
    size_t line_start = 0;

    vstr_cpy(out, "");
    for (const char *cp = text; *cp; cp++) {
        if (*cp == ' ' &&
            vstr_len(out) - line_start + strcspn(cp + 1, " ") > 72) {
            vstr_addch(out, '\n');
            line_start = vstr_len(out);
            continue;
        }
        if (vstr_len(out) == line_start && (*cp == '.' || *cp == '\''))
            vstr_cat(out, "\\&");
        if (*cp == '\\')
            vstr_cat(out, "\\e");
        else if (*cp == '-')
            vstr_cat(out, "\\-");
        else
            vstr_addch(out, *cp);
    }
    return vstr_str(out);
}

/* man_params_cmp - qsort by name */
static int man_params_cmp(const void *a, const void *b)
{
    return strcmp((*(const MAIL_PARAM *const *) a)->name,
                  (*(const MAIL_PARAM *const *) b)->name);
}

/* main - one .TP paragraph per parameter, sorted by name */
int main(int argc, char **argv)
{
    size_t count;
    const MAIL_PARAM *table = mail_param_table(&count);
    const MAIL_PARAM **sorted = mymalloc_array(count, sizeof(*sorted));
    VSTR *buf = vstr_alloc(200);

    if (argc != 1) {
        (void) fprintf(stderr, "usage: %s\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < count; i++)
        sorted[i] = table + i;
    qsort(sorted, count, sizeof(*sorted), man_params_cmp);
    for (size_t i = 0; i < count; i++) {
        const MAIL_PARAM *param = sorted[i];

        printf(".TP\n\\fB%s\\fR (%s)\n", man_params_escape(buf, param->name),
               man_params_type(param->type));
        man_params_escape(buf, param->desc);
        /* The table's descriptions start in lower case: a sentence here. */
        if (islower((unsigned char) vstr_str(buf)[0]))
            vstr_str(buf)[0] = (char) toupper((unsigned char) vstr_str(buf)[0]);
        printf("%s.\n", vstr_str(buf));
        if (param->def == NULL)
            printf(".br\nDefault: computed at run time.\n");
        else if (param->def[0] == 0)
            printf(".br\nDefault: empty.\n");
        else
            printf(".br\nDefault: \\fB%s\\fR.\n",
                   man_params_escape(buf, param->def));
    }
    vstr_free(buf);
    myfree(sorted);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("man_params: write");
        return 1;
    }
    return 0;
}
