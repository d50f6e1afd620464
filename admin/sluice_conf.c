/*
 * sluice_conf - `sluice conf`: show or set main.cf parameters, as postconf
 *
 *   sluice conf                 every parameter: main.cf's value, else the default
 *   sluice conf -n              only those set in main.cf
 *   sluice conf -d              the defaults
 *   sluice conf name ...        just those
 *   sluice conf -d name ...     their defaults, each followed by a line
 *                               "# TYPE: description"
 *   sluice conf name=value ...  edit main.cf in place (comments kept); -e
 *                               before them is accepted (postconf -e habit)
 *   sluice conf -X name ...     remove those settings from main.cf (with
 *                               their continuation lines; comments and
 *                               other lines kept); a name not set is no
 *                               error
 *
 * Values are shown as written ($name not expanded), one "name = value" per
 * line. A name set in main.cf that nothing uses gets a warning on stderr
 * ("sluice: warning: PATH line N: unknown parameter NAME"). Every value is
 * checked before anything is written, so a bad one changes nothing.
 */
#include "sys_defs.h"

#include "argv.h"
#include "mail_conf.h"
#include "mymalloc.h"
#include "sluice.h"
#include "vstr.h"

/* sluice_conf_type_name - the word for a parameter type */
static const char *sluice_conf_type_name(MAIL_PARAM_TYPE type)
{
    switch (type) {
    case MAIL_PARAM_STR:
        return "string";
    case MAIL_PARAM_INT:
        return "integer";
    case MAIL_PARAM_BOOL:
        return "boolean (yes or no)";
    case MAIL_PARAM_TIME:
        return "time (number + s, m, h, d or w; default s)";
    case MAIL_PARAM_SIZE:
        return "size in bytes (number + k, m or g)";
    case MAIL_PARAM_LIST:
        return "list (comma or space separated)";
    case MAIL_PARAM_TIME_LIST:
        return "list of times (comma or space separated)";
    }
    return "unknown";
}

/* sluice_conf_bounds - ", from 1 to 65535" or ", at least 1s" into out:
   the table's bounds of a number, "" when it takes any (a maximum that only
   keeps a value inside an int is not worth saying) */
static void sluice_conf_bounds(const MAIL_PARAM *param, VSTR *out)
{
    const char *unit =
        param->type == MAIL_PARAM_TIME || param->type == MAIL_PARAM_TIME_LIST
            ? "s"
            : "";
    const char *each = param->type == MAIL_PARAM_TIME_LIST ? " each" : "";

    vstr_reset(out);
    if (param->type != MAIL_PARAM_INT && param->type != MAIL_PARAM_TIME &&
        param->type != MAIL_PARAM_SIZE && param->type != MAIL_PARAM_TIME_LIST)
        return;
    if (param->max < INT32_MAX)
        vstr_sprintf(out, ",%s from %lld%s to %lld%s", each, param->min, unit,
                     param->max, unit);
    else if (param->min > 0)
        vstr_sprintf(out, ",%s at least %lld%s", each, param->min, unit);
}

/* sluice_conf_name_ok - a parameter name: letters, digits, '_' */
static bool sluice_conf_name_ok(const char *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(name[i] == '_' || (name[i] >= 'a' && name[i] <= 'z') ||
              (name[i] >= 'A' && name[i] <= 'Z') ||
              (name[i] >= '0' && name[i] <= '9')))
            return false;
    return true;
}

/* sluice_conf_split - "name = value" into its name and value (caller frees
   the name); NULL after one line when the argument is not a setting */
static char *sluice_conf_split(const char *arg, const char **value)
{
    const char *eq = strchr(arg, '=');
    size_t len = (size_t) (eq - arg);

    while (len > 0 && (arg[len - 1] == ' ' || arg[len - 1] == '\t'))
        len--;
    *value = eq + 1 + strspn(eq + 1, " \t");
    if (!sluice_conf_name_ok(arg, len)) {
        sluice_fail("conf: bad parameter name in \"%s\"", arg);
        return NULL;
    }
    if (strchr(*value, '\n') != NULL) {
        sluice_fail("conf: a value may not contain a newline");
        return NULL;
    }
    return mystrndup(arg, len);
}

/* sluice_conf_edit - apply name=value arguments, all checked first */
static int sluice_conf_edit(const char *config_dir, int argc, char **argv)
{
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf;
    const char *value;
    char *name;
    int status = 0;

    /* The instance must be readable as it is, before we touch it. */
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        status = sluice_fail("%s", vstr_str(why));
        goto out;
    }
    conf = mail_conf_free(conf);
    for (int i = 0; i < argc && status == 0; i++) {
        if ((name = sluice_conf_split(argv[i], &value)) == NULL)
            status = 1;
        else if (mail_conf_check_value(name, value, why) < 0)
            status = sluice_fail("conf: %s", vstr_str(why));
        myfree(name);
    }
    for (int i = 0; i < argc && status == 0; i++) {
        name = sluice_conf_split(argv[i], &value);
        if (mail_conf_edit(config_dir, name, value, why) < 0)
            status = sluice_fail("conf: %s", vstr_str(why));
        myfree(name);
    }
out:
    vstr_free(why);
    return status;
}

/* sluice_conf_remove - `sluice conf -X name ...`: every name is checked
   before anything is written. main.cf need not be readable as a whole:
   removing a bad setting is how one repairs it. */
static int sluice_conf_remove(const char *config_dir, int argc, char **argv)
{
    VSTR *why;
    int status = 0;

    if (argc == 0)
        return sluice_fail("conf: -X needs the names of the parameters to "
                           "remove");
    for (int i = 0; i < argc; i++)
        if (!sluice_conf_name_ok(argv[i], strlen(argv[i])))
            return sluice_fail("conf: -X: bad parameter name \"%s\"%s", argv[i],
                               strchr(argv[i], '=') ? " (give only names)"
                                                    : "");
    why = vstr_alloc(100);
    for (int i = 0; i < argc && status == 0; i++)
        if (mail_conf_remove(config_dir, argv[i], why) < 0)
            status = sluice_fail("conf: %s", vstr_str(why));
    vstr_free(why);
    return status;
}

/* sluice_conf_cmp - qsort by name */
static int sluice_conf_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* sluice_conf_show_one - print "name = value" for one parameter (and,
   with describe, its type and description) */
static int sluice_conf_show_one(const MAIL_CONF *conf, const char *name,
                                bool defaults, bool describe)
{
    const MAIL_PARAM *param = mail_param_find(name);
    const char *raw = defaults ? NULL : mail_conf_raw(conf, name);

    if (raw != NULL) {
        printf("%s = %s\n", name, raw);
    } else if (param == NULL) {
        return sluice_fail("conf: unknown parameter \"%s\"", name);
    } else if (param->def != NULL && strcmp(name, "config_directory") != 0) {
        printf("%s = %s\n", name, param->def);
    } else if (defaults && mail_conf_default(conf, name) != NULL) {
        /* Computed at run time (myhostname, mail_owner ...), and
           config_directory, which is always the folder read. */
        printf("%s = %s\n", name, mail_conf_default(conf, name));
    } else {
        printf("%s = %s\n", name, mail_conf_str(conf, name));
    }
    if (describe && param != NULL) {
        VSTR *bounds = vstr_alloc(40);

        sluice_conf_bounds(param, bounds);
        printf("# %s%s: %s\n", sluice_conf_type_name(param->type),
               vstr_str(bounds), param->desc);
        vstr_free(bounds);
    }
    return 0;
}

/* sluice_conf - `sluice conf [-n] [-d] [-e] [-X] [name ...] [name=value ...]` */
int sluice_conf(const char *config_dir, int argc, char **argv)
{
    bool only_set = false;
    bool defaults = false;
    bool remove = false;
    int edits = 0;
    int names = 0;
    int first = 1;
    int status = 0;
    VSTR *why;
    MAIL_CONF *conf;
    const ARGV *warnings;
    ARGV *show;

    for (; first < argc && argv[first][0] == '-'; first++) {
        if (strcmp(argv[first], "-n") == 0)
            only_set = true;
        else if (strcmp(argv[first], "-d") == 0)
            defaults = true;
        else if (strcmp(argv[first], "-e") == 0)
            continue; /* postconf -e: name=value edits anyway */
        else if (strcmp(argv[first], "-X") == 0)
            remove = true;
        else if (strcmp(argv[first], "--") == 0) {
            first++;
            break;
        } else
            return sluice_fail(
                "conf: unknown option \"%s\" (usage: sluice conf "
                "[-n] [-d] [name ...] [name=value ...], "
                "sluice conf -X name ...)",
                argv[first]);
    }
    if (remove) {
        if (only_set || defaults)
            return sluice_fail("conf: -X does not go with -n or -d");
        return sluice_conf_remove(config_dir, argc - first, argv + first);
    }
    for (int i = first; i < argc; i++) {
        if (strchr(argv[i], '=') != NULL)
            edits++;
        else
            names++;
    }
    if (edits > 0) {
        if (names > 0 || only_set || defaults)
            return sluice_fail("conf: give either names to show or name=value "
                               "to set, not both");
        return sluice_conf_edit(config_dir, argc - first, argv + first);
    }
    if (only_set && defaults)
        return sluice_fail("conf: -n and -d do not go together");

    why = vstr_alloc(100);
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        status = sluice_fail("%s", vstr_str(why));
        vstr_free(why);
        return status;
    }
    vstr_free(why);
    warnings = mail_conf_warnings(conf);
    for (size_t i = 0; i < warnings->argc; i++)
        (void) fprintf(stderr, "sluice: warning: %s\n", warnings->argv[i]);
    show = argv_alloc(200);
    if (names > 0) {
        for (int i = first; i < argc; i++)
            argv_add(show, argv[i]);
    } else {
        const ARGV *set = mail_conf_names(conf);

        if (!defaults)
            for (size_t i = 0; i < set->argc; i++)
                argv_add(show, set->argv[i]);
        if (!only_set) {
            size_t count;
            const MAIL_PARAM *table = mail_param_table(&count);

            for (size_t i = 0; i < count; i++)
                if (defaults || mail_conf_raw(conf, table[i].name) == NULL)
                    argv_add(show, table[i].name);
        }
        qsort(show->argv, show->argc, sizeof(char *), sluice_conf_cmp);
    }
    for (size_t i = 0; i < show->argc; i++) {
        if (i > 0 && names == 0 &&
            strcmp(show->argv[i], show->argv[i - 1]) == 0)
            continue;
        if (sluice_conf_show_one(conf, show->argv[i], defaults,
                                 defaults && names > 0) != 0)
            status = 1;
    }
    argv_free(show);
    mail_conf_free(conf);
    return status;
}
