/*
 * fuzz_local_rules - the I/O-free rules of local delivery
 * (local/local_rules.c)
 *
 * The input is an alias value or a .forward / :include: file: it is split
 * into destinations and each is classified; it is also a forward_path
 * template, an address to split, a host name for a Maildir file name, a
 * sender for a From_ line, and a message whose header block is searched
 * for Delivered-To and whose lines are ">From " quoted. Each result must
 * keep its contract (no empty destination, the argument inside the
 * destination, user and extension adding up to the local part, no '/'
 * or ':' in a Maildir name, quoting adding only '>').
 */
#include "sys_defs.h"

#include <stdint.h>
#include <sys/time.h>

#include "argv.h"
#include "fuzz_common.h"
#include "local.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_local_dests - split and classify */
static void fuzz_local_dests(const char *text)
{
    ARGV *dests = local_dest_split(text);
    size_t separators = 1;

    for (const char *cp = text; *cp; cp++)
        if (*cp == ',' || *cp == '\n')
            separators++;
    if (dests->argc > separators)
        abort();
    for (size_t i = 0; i < dests->argc; i++) {
        const char *dest = dests->argv[i];
        size_t len = strlen(dest);
        const char *arg = NULL;
        LOCAL_DEST_TYPE type;

        if (len == 0)
            abort(); /* empty destinations are dropped */
        type = local_dest_type(dest, &arg);
        if (arg == NULL || arg < dest || arg > dest + len)
            abort();
        switch (type) {
        case LOCAL_DEST_COMMAND:
            if (dest[0] != '|' || arg != dest + 1)
                abort();
            break;
        case LOCAL_DEST_FILE:
            if (dest[0] != '/' || arg != dest)
                abort();
            break;
        case LOCAL_DEST_INCLUDE:
            if (strncasecmp(dest, ":include:", 9) != 0 || arg < dest + 9)
                abort();
            break;
        case LOCAL_DEST_MAILBOX:
            if (dest[0] != '\\' || arg != dest + 1)
                abort();
            break;
        case LOCAL_DEST_ADDR:
            if (arg != dest || dest[0] == '|' || dest[0] == '/')
                abort();
            break;
        }
    }
    argv_free(dests);
}

/* fuzz_local_path - forward_path expansion with all and with some values */
static void fuzz_local_path(const char *text)
{
    static const LOCAL_VARS full = {
        "/home/user", "user",         "user+ext",
        "ext",        "example.test", "user+ext@example.test",
    };
    static const LOCAL_VARS part = {NULL, "user",         "user",
                                    NULL, "example.test", "user@example.test"};
    VSTR *out = vstr_alloc(100);

    if (local_expand_path(text, &full, out) == 0 && strchr(text, '$') == NULL &&
        strcmp(vstr_str(out), text) != 0)
        abort(); /* nothing to expand: the same text */
    (void) local_expand_path(text, &part, out);
    vstr_free(out);
}

/* fuzz_local_addr - user + delimiter + extension is the local part (as
   smtp_addr_split cuts it: a quoted '@' stays in it) */
static void fuzz_local_addr(const char *text)
{
    static const char *const delims[] = {"", "+", "+-", "@"};
    VSTR *user = vstr_alloc(10), *ext = vstr_alloc(10), *dom = vstr_alloc(10);
    size_t local_len;
    const char *domain = smtp_addr_split(text, &local_len);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(delims); i++) {
        size_t total;

        local_addr_split(text, delims[i], user, ext, dom);
        total = vstr_len(user) + vstr_len(ext) +
                (vstr_len(user) < local_len ? 1 : 0);
        if (total != local_len ||
            strlen(vstr_str(dom)) != (domain ? strlen(domain) : 0))
            abort();
        for (const char *cp = vstr_str(user); *cp; cp++)
            if (strchr(delims[i], *cp) != NULL && *delims[i])
                abort(); /* the user part stops at the first delimiter */
        (void) local_name_safe(vstr_str(user));
        (void) local_name_safe(vstr_str(ext));
    }
    (void) local_name_safe(text);
    vstr_free(user);
    vstr_free(ext);
    vstr_free(dom);
}

/* fuzz_local_content - header block, loop check, mbox quoting */
static void fuzz_local_content(const char *data, size_t size, const char *text)
{
    VSTR *out = vstr_alloc(size + 16);
    size_t hlen = local_header_len(data, size);
    size_t lines = 1, added;
    bool bol = true;
    const char *nl;

    if (hlen > size)
        abort();
    (void) local_delivered_to_seen(data, size, "user@example.test");
    (void) local_delivered_to_seen(data, size, "");
    if ((nl = memchr(data, '\n', size)) != NULL && nl - data > 14) {
        /* "Delivered-To: X" as the first line: X is seen when within the
           header block */
        char *addr = mystrndup(data + 14, (size_t) (nl - data) - 14);

        (void) local_delivered_to_seen(data, size, addr);
        myfree(addr);
    }
    for (size_t i = 0; i < size; i++)
        if (data[i] == '\n')
            lines++;
    local_mbox_quote(data, size, &bol, out);
    added = vstr_len(out) - size;
    if (vstr_len(out) < size || added > lines)
        abort();
    if (bol != (size == 0 || data[size - 1] == '\n'))
        abort();
    local_from_line(out, text, 0);
    if (strncmp(vstr_str(out), "From ", 5) != 0)
        abort();
    vstr_free(out);
}

/* fuzz_local_maildir - no '/' or ':' in a Maildir file name */
static void fuzz_local_maildir(const char *text)
{
    struct timeval tv = {1700000000, 123456};
    VSTR *out = vstr_alloc(100);

    local_maildir_name(out, &tv, 4242, 7, text);
    if (strchr(vstr_str(out), '/') != NULL ||
        strchr(vstr_str(out), ':') != NULL)
        abort();
    vstr_free(out);
}

/* LLVMFuzzerTestOneInput - one alias value, file or message */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;

    fuzz_init("fuzz_local_rules");
    text = mystrndup((const char *) data, size);
    fuzz_local_dests(text);
    fuzz_local_path(text);
    fuzz_local_addr(text);
    fuzz_local_content((const char *) data, size, text);
    fuzz_local_maildir(text);
    myfree(text);
    return 0;
}
