/*
 * local_rules - the rules of local delivery, without I/O
 *
 * Address splitting, alias and .forward syntax, forward_path expansion,
 * mbox quoting and From_ lines, the Delivered-To loop check, what a
 * command's exit status means (sysexits.h, as Postfix reads it), Maildir
 * file names and the privilege rules (which mode, who may get mail).
 * Everything here is unit tested in local_rules_test.c and fuzzed by
 * fuzz/fuzz_local_rules.c.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>

#include "argv.h"
#include "local.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "vstr.h"

/* local_result_set - fill in one result */
void local_result_set(LOCAL_RESULT *res, LOCAL_STAT stat, const char *dsn,
                      const char *fmt, ...)
{
    va_list ap;

    res->stat = stat;
    res->category = NULL;
    snprintf(res->dsn, sizeof(res->dsn), "%s", dsn);
    vstr_reset(res->text);
    va_start(ap, fmt);
    vstr_vsprintf_append(res->text, fmt, ap);
    va_end(ap);
}

/* local_addr_split - user, extension and domain of an address */
void local_addr_split(const char *addr, const char *delims, VSTR *user,
                      VSTR *ext, VSTR *domain)
{
    size_t local_len;
    const char *at_domain = smtp_addr_split(addr, &local_len);
    size_t user_len = local_len;

    vstr_cpy(domain, at_domain ? at_domain : "");
    vstr_lower(domain);
    vstr_reset(ext);
    if (delims != NULL && *delims) {
        for (size_t i = 0; i < local_len; i++) {
            if (strchr(delims, addr[i]) != NULL) {
                user_len = i;
                vstr_ncat(ext, addr + i + 1, local_len - i - 1);
                break;
            }
        }
    }
    vstr_ncpy(user, addr, user_len);
    vstr_lower(user);
    vstr_lower(ext);
}

/* local_dest_add - one trimmed, unquoted destination */
static void local_dest_add(ARGV *out, const char *start, size_t len)
{
    while (len > 0 && isspace((unsigned char) *start)) {
        start++;
        len--;
    }
    while (len > 0 && isspace((unsigned char) start[len - 1]))
        len--;
    if (len >= 2 && start[0] == '"' && start[len - 1] == '"') {
        start++;
        len -= 2;
    }
    if (len > 0)
        argv_addn(out, start, len);
}

/* local_dest_split - the destinations of an alias value or a file */
ARGV *local_dest_split(const char *value)
{
    ARGV *out = argv_alloc(4);
    const char *cp = value;
    const char *start;
    bool quoted = false;
    bool bol = true;

    for (start = cp; *cp; cp++) {
        if (bol) {
            const char *sp = cp;

            while (*sp == ' ' || *sp == '\t')
                sp++;
            if (*sp == '#') {
                /* A comment line: skip it whole. */
                while (*cp && *cp != '\n')
                    cp++;
                start = cp + (*cp ? 1 : 0);
                if (*cp == 0)
                    break;
                continue;
            }
            bol = false;
        }
        if (*cp == '"') {
            quoted = !quoted;
        } else if (*cp == '\\' && quoted && cp[1]) {
            cp++;
        } else if ((*cp == ',' && !quoted) || *cp == '\n') {
            local_dest_add(out, start, (size_t) (cp - start));
            start = cp + 1;
            if (*cp == '\n') {
                quoted = false;
                bol = true;
            }
        }
    }
    if (*cp == 0 && cp > start)
        local_dest_add(out, start, (size_t) (cp - start));
    return out;
}

/* local_dest_type - classify one destination */
LOCAL_DEST_TYPE local_dest_type(const char *dest, const char **arg)
{
    static const char include[] = ":include:";

    if (*dest == '|') {
        *arg = dest + 1;
        return LOCAL_DEST_COMMAND;
    }
    if (*dest == '/') {
        *arg = dest;
        return LOCAL_DEST_FILE;
    }
    if (strncasecmp(dest, include, sizeof(include) - 1) == 0) {
        *arg = dest + sizeof(include) - 1;
        while (**arg == ' ' || **arg == '\t')
            (*arg)++;
        return LOCAL_DEST_INCLUDE;
    }
    if (*dest == '\\') {
        *arg = dest + 1;
        return LOCAL_DEST_MAILBOX;
    }
    *arg = dest;
    return LOCAL_DEST_ADDR;
}

/* local_allowed - is class named in the list? */
bool local_allowed(const ARGV *list, const char *class_name)
{
    for (size_t i = 0; i < list->argc; i++)
        if (strcasecmp(list->argv[i], class_name) == 0)
            return true;
    return false;
}

/* local_var - the value of one forward_path variable; *known false for a
   name we do not have */
static const char *local_var(const LOCAL_VARS *vars, const char *name,
                             size_t len, bool *known)
{
    static const struct {
        const char *name;
        size_t offset;
    } table[] = {
        {"home", offsetof(LOCAL_VARS, home)},
        {"user", offsetof(LOCAL_VARS, user)},
        {"local", offsetof(LOCAL_VARS, local)},
        {"extension", offsetof(LOCAL_VARS, extension)},
        {"domain", offsetof(LOCAL_VARS, domain)},
        {"recipient", offsetof(LOCAL_VARS, recipient)},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(table); i++) {
        if (strlen(table[i].name) == len &&
            strncmp(table[i].name, name, len) == 0) {
            *known = true;
            return *(const char *const *) ((const char *) vars +
                                           table[i].offset);
        }
    }
    *known = false;
    return NULL;
}

/* local_expand_path - expand the variables of a forward_path entry */
int local_expand_path(const char *tmpl, const LOCAL_VARS *vars, VSTR *out)
{
    const char *cp = tmpl;

    vstr_reset(out);
    while (*cp) {
        const char *name;
        const char *value;
        size_t len;
        bool known;

        if (*cp != '$') {
            vstr_addch(out, *cp++);
            continue;
        }
        cp++;
        if (*cp == '$') {
            vstr_addch(out, *cp++);
            continue;
        }
        if (*cp == '{') {
            const char *end = strchr(cp, '}');

            if (end == NULL)
                return -1;
            name = cp + 1;
            len = (size_t) (end - name);
            cp = end + 1;
        } else {
            name = cp;
            while (isalnum((unsigned char) *cp) || *cp == '_')
                cp++;
            len = (size_t) (cp - name);
        }
        value = local_var(vars, name, len, &known);
        if (!known || value == NULL)
            return -1;
        vstr_cat(out, value);
    }
    return 0;
}

/* local_header_len - the header block's length, its empty line included */
size_t local_header_len(const char *content, size_t len)
{
    size_t pos = 0;

    while (pos < len) {
        const char *nl = memchr(content + pos, '\n', len - pos);

        if (content[pos] == '\n')
            return pos + 1;
        if (nl == NULL)
            return len;
        pos = (size_t) (nl - content) + 1;
    }
    return len;
}

/* local_delivered_to_seen - the loop check */
bool local_delivered_to_seen(const char *content, size_t len, const char *addr)
{
    static const char name[] = "delivered-to:";
    size_t hlen = local_header_len(content, len);
    size_t addr_len = strlen(addr);
    size_t pos = 0;

    while (pos < hlen) {
        const char *line = content + pos;
        const char *nl = memchr(line, '\n', hlen - pos);
        size_t line_len = nl ? (size_t) (nl - line) : hlen - pos;

        if (line_len >= sizeof(name) - 1 &&
            strncasecmp(line, name, sizeof(name) - 1) == 0) {
            const char *value = line + sizeof(name) - 1;
            size_t value_len = line_len - (sizeof(name) - 1);

            while (value_len > 0 && isspace((unsigned char) *value)) {
                value++;
                value_len--;
            }
            while (value_len > 0 &&
                   isspace((unsigned char) value[value_len - 1]))
                value_len--;
            if (value_len >= 2 && value[0] == '<' &&
                value[value_len - 1] == '>') {
                value++;
                value_len -= 2;
            }
            if (value_len == addr_len &&
                strncasecmp(value, addr, addr_len) == 0)
                return true;
        }
        pos += line_len + 1;
    }
    return false;
}

/* local_mbox_quote - ">From " quoting */
void local_mbox_quote(const char *data, size_t len, bool *bol, VSTR *out)
{
    size_t pos = 0;

    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t line_len = nl ? (size_t) (nl - (data + pos)) + 1 : len - pos;

        /* A "From " split across two calls is not caught; the callers
           pass whole contents. */
        if (*bol && line_len >= 5 && strncmp(data + pos, "From ", 5) == 0)
            vstr_addch(out, '>');
        vstr_ncat(out, data + pos, line_len);
        *bol = nl != NULL;
        pos += line_len;
    }
}

/* local_from_line - the mbox separator */
void local_from_line(VSTR *out, const char *sender, time_t when)
{
    struct tm tm;
    char date[64];

    if (gmtime_r(&when, &tm) == NULL ||
        strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm) == 0)
        snprintf(date, sizeof(date), "Thu Jan  1 00:00:00 1970");
    vstr_sprintf(out, "From %s  %s\n", *sender ? sender : "MAILER-DAEMON",
                 date);
}

/* local_exit_result - a command's wait status as a delivery result */
void local_exit_result(int wait_status, LOCAL_RESULT *res)
{
    static const struct {
        int code;
        const char *dsn;
        const char *text;
    } table[] = {
        {EX_USAGE, "5.3.0", "command line usage error"},
        {EX_DATAERR, "5.6.0", "data format error"},
        {EX_NOINPUT, "5.3.0", "cannot open input"},
        {EX_NOUSER, "5.1.1", "user unknown"},
        {EX_NOHOST, "5.1.2", "host name unknown"},
        {EX_UNAVAILABLE, "5.3.0", "service unavailable"},
        {EX_SOFTWARE, "5.3.0", "internal software error"},
        {EX_OSERR, "4.3.0", "system resource problem"},
        {EX_OSFILE, "5.3.0", "critical OS file missing"},
        {EX_CANTCREAT, "5.2.0", "can't create user output file"},
        {EX_IOERR, "5.3.0", "input/output error"},
        {EX_TEMPFAIL, "4.3.0", "temporary failure"},
        {EX_PROTOCOL, "5.5.0", "remote error in protocol"},
        {EX_NOPERM, "5.7.0", "permission denied"},
        {EX_CONFIG, "5.3.5", "local configuration error"},
    };
    int code;

    if (WIFSIGNALED(wait_status)) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "command died with signal %d", WTERMSIG(wait_status));
        return;
    }
    if (!WIFEXITED(wait_status)) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "command ended abnormally");
        return;
    }
    if ((code = WEXITSTATUS(wait_status)) == 0) {
        local_result_set(res, LOCAL_STAT_SENT, "2.0.0", "command");
        return;
    }
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(table); i++) {
        if (table[i].code == code) {
            local_result_set(res,
                             table[i].dsn[0] == '4' ? LOCAL_STAT_DEFER
                                                    : LOCAL_STAT_BOUNCE,
                             table[i].dsn,
                             "command failed with exit "
                             "status %d: %s",
                             code, table[i].text);
            return;
        }
    }
    local_result_set(res, LOCAL_STAT_BOUNCE, "5.3.0",
                     "command failed with exit status %d: unknown mail "
                     "system error",
                     code);
}

/* local_maildir_name - a unique file name in a Maildir */
void local_maildir_name(VSTR *out, const struct timeval *tv, long pid,
                        unsigned long count, const char *host)
{
    vstr_sprintf(out, "%lld.M%ldP%ldQ%lu.", (long long) tv->tv_sec,
                 (long) tv->tv_usec, pid, count);
    for (const char *cp = host; *cp; cp++) {
        if (*cp == '/')
            vstr_cat(out, "\\057");
        else if (*cp == ':')
            vstr_cat(out, "\\072");
        else
            vstr_addch(out, *cp);
    }
}

/* local_mode - SYSTEM when root runs us for a non-root mail_owner */
LOCAL_MODE local_mode(uid_t euid, uid_t owner_uid)
{
    return euid == 0 && owner_uid != 0 ? LOCAL_MODE_SYSTEM
                                       : LOCAL_MODE_INSTANCE;
}

/* local_user_check - the unknown-user rule */
bool local_user_check(LOCAL_MODE mode, const char *user, bool found,
                      LOCAL_RESULT *res)
{
    if (found || mode == LOCAL_MODE_INSTANCE)
        return true;
    local_result_set(res, LOCAL_STAT_BOUNCE, "5.1.1", "unknown user: \"%s\"",
                     user);
    return false;
}

/* local_name_safe - may this local part (or extension) name a mailbox or
   fill $user in a path? No '/', no leading '.', no control characters */
bool local_name_safe(const char *name)
{
    if (*name == '.')
        return false;
    for (const char *cp = name; *cp; cp++)
        if (*cp == '/' || (unsigned char) *cp < 0x20 || *cp == 0x7f)
            return false;
    return true;
}

/* local_virtual_path - base + "/" + value, or -1 with why when value
   would leave base or base is not an absolute path */
int local_virtual_path(const char *base, const char *value, VSTR *out,
                       VSTR *why)
{
    size_t base_len = strlen(base);

    while (base_len > 0 && base[base_len - 1] == '/')
        base_len--;
    if (*base != '/' || base_len == 0) {
        vstr_sprintf(why,
                     "virtual_mailbox_base \"%s\" is not an absolute path"
                     " below /",
                     base);
        return -1;
    }
    if (*value == 0 || *value == '/') {
        vstr_sprintf(why,
                     "mailbox \"%s\" in virtual_mailbox_maps is not a path"
                     " relative to virtual_mailbox_base",
                     value);
        return -1;
    }
    for (const char *cp = value; *cp; cp += strcspn(cp, "/"), cp += *cp != 0) {
        size_t len = strcspn(cp, "/");

        if (len == 2 && cp[0] == '.' && cp[1] == '.') {
            vstr_sprintf(why,
                         "mailbox \"%s\" in virtual_mailbox_maps leaves"
                         " virtual_mailbox_base (a \"..\" part)",
                         value);
            return -1;
        }
        for (size_t i = 0; i < len; i++) {
            if (iscntrl((unsigned char) cp[i])) {
                vstr_sprintf(why,
                             "mailbox in virtual_mailbox_maps has a control"
                             " character");
                return -1;
            }
        }
    }
    vstr_ncpy(out, base, base_len);
    vstr_addch(out, '/');
    vstr_cat(out, value);
    return 0;
}
