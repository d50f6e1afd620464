/*
 * mynetworks - match a client IP address against a list of networks
 *
 * Entries are kept as (family, network bytes, prefix length, negated); a
 * network whose host bits are not zero is accepted and masked, as Postfix
 * does with a warning-free "10.1.2.3/8".
 */
#include "sys_defs.h"

#include <arpa/inet.h>

#include "mymalloc.h"
#include "mynetworks.h"
#include "vstr.h"

typedef struct MYNETWORKS_ENTRY {
    int family; /* AF_INET or AF_INET6 */
    unsigned char net[16]; /* masked network */
    int prefix; /* bits */
    bool negate;
} MYNETWORKS_ENTRY;

struct MYNETWORKS {
    MYNETWORKS_ENTRY *entries;
    size_t count;
    size_t cap;
};

/* mynetworks_mask - clear the bits past prefix */
static void mynetworks_mask(unsigned char *bytes, size_t len, int prefix)
{
    for (size_t i = 0; i < len; i++) {
        int keep = prefix - (int) i * 8;

        if (keep >= 8)
            continue;
        bytes[i] &= keep <= 0 ? 0 : (unsigned char) (0xff << (8 - keep));
    }
}

/* mynetworks_addr - parse a numeric address, mapped IPv6 as IPv4 */
static int mynetworks_addr(const char *text, int *family, unsigned char *out)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                             0, 0, 0, 0, 0xff, 0xff};

    if (inet_pton(AF_INET, text, out) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, out) == 1) {
        if (memcmp(out, mapped, sizeof(mapped)) == 0) {
            memmove(out, out + 12, 4);
            *family = AF_INET;
        } else {
            *family = AF_INET6;
        }
        return 0;
    }
    return -1;
}

/* mynetworks_add - compile one word */
static int mynetworks_add(MYNETWORKS *nets, const char *word, VSTR *why)
{
    MYNETWORKS_ENTRY entry;
    char buf[INET6_ADDRSTRLEN + 1];
    const char *slash;
    const char *host = word;
    size_t host_len;
    int max_bits;

    memset(&entry, 0, sizeof(entry));
    if (*host == '!') {
        entry.negate = true;
        host++;
    }
    slash = strchr(host, '/');
    host_len = slash ? (size_t) (slash - host) : strlen(host);
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
    }
    if (host_len == 0 || host_len >= sizeof(buf))
        goto bad;
    memcpy(buf, host, host_len);
    buf[host_len] = 0;
    if (mynetworks_addr(buf, &entry.family, entry.net) < 0)
        goto bad;
    /* a mapped IPv4 network written as IPv6 takes an IPv6 prefix length */
    max_bits = strchr(buf, ':') != NULL ? 128 : 32;
    entry.prefix = entry.family == AF_INET ? 32 : 128;
    if (slash) {
        char *end;
        long bits;

        /* digits only: strtol would take a sign or leading space */
        if (slash[1] < '0' || slash[1] > '9')
            goto bad;
        errno = 0;
        bits = strtol(slash + 1, &end, 10);
        if (errno != 0 || *end != 0 || bits > max_bits)
            goto bad;
        /* a mapped IPv4 network given as IPv6 keeps its IPv4 bits */
        if (entry.family == AF_INET && strchr(buf, ':') != NULL) {
            if (bits < 96)
                goto bad;
            bits -= 96;
        }
        entry.prefix = (int) bits;
    }
    mynetworks_mask(entry.net, sizeof(entry.net), entry.prefix);
    if (nets->count == nets->cap) {
        nets->cap = nets->cap ? nets->cap * 2 : 8;
        nets->entries =
            myrealloc_array(nets->entries, nets->cap, sizeof(*nets->entries));
    }
    nets->entries[nets->count++] = entry;
    return 0;

bad:
    vstr_sprintf(why, "bad network \"%s\"", word);
    return -1;
}

/* mynetworks_parse - compile a list */
MYNETWORKS *mynetworks_parse(const char *list, VSTR *why)
{
    static const char sep[] = ", \t\r\n";
    MYNETWORKS *nets = mycalloc(1, sizeof(*nets));
    const char *p = list ? list : "";

    while (*(p += strspn(p, sep))) {
        size_t len = strcspn(p, sep);
        char *word = mystrndup(p, len);
        int ret = mynetworks_add(nets, word, why);

        myfree(word);
        if (ret < 0)
            return mynetworks_free(nets);
        p += len;
    }
    return nets;
}

/* mynetworks_free - release a list; returns NULL */
MYNETWORKS *mynetworks_free(MYNETWORKS *nets)
{
    if (nets) {
        myfree(nets->entries);
        myfree(nets);
    }
    return NULL;
}

/* mynetworks_match - the numeric address addr is in the list */
bool mynetworks_match(const MYNETWORKS *nets, const char *addr)
{
    unsigned char bytes[16];
    char buf[INET6_ADDRSTRLEN + 1];
    size_t len = strlen(addr);
    int family;

    if (len >= 2 && addr[0] == '[' && addr[len - 1] == ']') {
        addr++;
        len -= 2;
    }
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, addr, len);
    buf[len] = 0;
    memset(bytes, 0, sizeof(bytes));
    if (mynetworks_addr(buf, &family, bytes) < 0)
        return false;
    for (size_t i = 0; i < nets->count; i++) {
        const MYNETWORKS_ENTRY *entry = nets->entries + i;
        unsigned char masked[16];

        if (entry->family != family)
            continue;
        memcpy(masked, bytes, sizeof(masked));
        mynetworks_mask(masked, sizeof(masked), entry->prefix);
        if (memcmp(masked, entry->net, family == AF_INET ? 4 : 16) == 0)
            return !entry->negate;
    }
    return false;
}

/* mynetworks_count - number of entries */
size_t mynetworks_count(const MYNETWORKS *nets)
{
    return nets->count;
}
