/*
 * smtpd_check - access restrictions: who may send what to whom
 *
 * Postfix's restriction lists are the model. The five lists
 * (smtpd_client_restrictions, smtpd_helo_restrictions,
 * smtpd_sender_restrictions, smtpd_relay_restrictions,
 * smtpd_recipient_restrictions) are all evaluated at RCPT TO, in that
 * order, as Postfix does with smtpd_delay_reject = yes: by then the
 * client, the HELO name, the sender and the recipient are all known, and
 * a client that is refused still sees why (and for which recipient).
 *
 * Within a list the first word that decides wins: a permit ends that list
 * (evaluation goes on with the next list), a reject or defer ends them
 * all. A list that ends without a decision goes on with the next list;
 * reaching the end of all lists accepts. After the lists the recipient of
 * a local domain (mydestination) must be in local_recipient_maps when that
 * is not empty (or in virtual_alias_maps), and one of a virtual alias
 * domain (virtual_alias_domains) in virtual_alias_maps, and one of a
 * virtual mailbox domain (virtual_mailbox_domains) in virtual_alias_maps or
 * virtual_mailbox_maps (its address, or "@domain"), whatever the lists
 * decided (Postfix does the same). Virtual alias and mailbox domains are
 * destinations of ours for reject_unauth_destination, never relayed.
 *
 * Access tables answer as access(5): OK or PERMIT, REJECT [text],
 * DEFER [text], DUNNO, "4NN text" / "5NN text" (an all-numerical value is
 * OK, for compatibility with Postfix), anything else is logged and
 * ignored. A key that is found ends the search of that table, whatever
 * its value: "DUNNO" for 1.2.3.4 keeps the entry for 1.2.3 from applying. A
 * table that cannot be read never lets a client pass: the answer is 451 4.3.0,
 * try again later.
 *
 * A configuration error never stops smtpd (master would restart it in a
 * loop while clients get no greeting): a table that cannot be opened (a
 * missing .db) is logged and opened again at most once a second when a
 * lookup needs it, and until then what depends on it answers 451 4.3.0; an
 * unknown restriction word (or a table word without its table) is logged
 * and, when evaluation reaches it, answers 451 4.3.5 Server configuration
 * error, as Postfix does. local_recipient_maps is opened table by table, so
 * a recipient found in a table before the missing one still passes.
 *
 * Lookup keys, as Postfix asks them (pattern tables, pcre: and regexp:,
 * get only the whole string):
 *   client     the address, its shorter IPv4 forms 1.2.3, 1.2, 1, then
 *              the client name unless it is "unknown"
 *   helo       the name, then its parent domains (sub.a.test: a.test, test)
 *   sender,    the address, then without its extension (recipient_
 *   recipient  delimiter), the domain and its parents, then "user+ext@"
 *              and "user@"; the null sender is looked up as "<>"
 */
#include "sys_defs.h"

#include <ctype.h>
#include <strings.h>
#include <time.h>

#include "argv.h"
#include "dkim_proto.h"
#include "mail_conf.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "smtpd.h"
#include "smtpd_words.h"
#include "spf_proto.h"
#include "verp_addr.h"
#include "vstr.h"

/* Postfix's smtpd_null_access_lookup_key: how "MAIL FROM:<>" is asked. */
#define SMTPD_NULL_SENDER_KEY "<>"

/* Postfix's default reply codes (reject_code, defer_code,
   access_map_reject_code, access_map_defer_code, relay_domains_reject_code,
   unknown_local_recipient_reject_code). */
#define SMTPD_REJECT_CODE 554
#define SMTPD_DEFER_CODE 450
#define SMTPD_RELAY_REJECT_CODE 554
#define SMTPD_UNKNOWN_LOCAL_CODE 550

/* How often a table that could not be opened is tried again. */
#define SMTPD_TABLE_RETRY 1

typedef struct SMTPD_RESTRICTION {
    SMTPD_WORD word;
    MAP *table; /* check_*_access; NULL while it cannot be opened */
    char *spec; /* its type:table; the bad word of a CONFIG_ERROR */
    time_t tried; /* last attempt to open table */
} SMTPD_RESTRICTION;

/* One table of local_recipient_maps, opened alone. */
typedef struct SMTPD_MAPS_ENTRY {
    char *spec;
    MAPS *maps; /* NULL while it cannot be opened */
    time_t tried;
} SMTPD_MAPS_ENTRY;

struct SMTPD_MAPS {
    char *param;
    SMTPD_MAPS_ENTRY *entries;
    size_t count;
};

/* A domain list whose tables may fail to open: compiled again by lookups. */
typedef struct SMTPD_DOMAINS {
    const char *param;
    char *value; /* expanded; "": none */
    MATCH_LIST *list; /* NULL while it cannot be compiled */
    time_t tried; /* last attempt to compile it */
} SMTPD_DOMAINS;

struct SMTPD_VIRTUAL {
    SMTPD_DOMAINS alias_domains; /* virtual_alias_domains */
    SMTPD_MAPS *maps; /* virtual_alias_maps */
    SMTPD_DOMAINS mailbox_domains; /* virtual_mailbox_domains */
    SMTPD_MAPS *mailbox_maps; /* virtual_mailbox_maps */
};

struct SMTPD_RESTRICTIONS {
    char *param; /* for messages */
    SMTPD_RESTRICTION *items;
    size_t count;
};

/* What one word (or one table answer) decided. */
typedef enum SMTPD_DECISION {
    SMTPD_DUNNO, /* go on */
    SMTPD_PERMIT, /* this list passes */
    SMTPD_REJECT, /* refused (or deferred): reply holds the reply */
    SMTPD_NEED_SPF, /* stop: the SPF answer is not in yet */
} SMTPD_DECISION;

/* The evaluation of one recipient. */
typedef struct SMTPD_CHECK {
    const SMTPD_PROTO *proto;
    const char *rcpt;
    const char *param; /* the list being evaluated */
    SMTPD_LIST list;
    VSTR *reply;
    VSTR *key; /* scratch for lookup keys */
    VSTR *name; /* scratch: "unknown[1.2.3.4]" */
} SMTPD_CHECK;

/* smtpd_check_next_word - the next word of *cp into word (a table's
   "{...}" kept whole); 0 at the end, 1 a word, -1 unbalanced braces */
static int smtpd_check_next_word(const char **cp, VSTR *word)
{
    const char *p = *cp;
    const char *start;
    int depth = 0;

    p += strspn(p, ", \t\r\n");
    if (*p == 0) {
        *cp = p;
        return 0;
    }
    start = p;
    for (; *p; p++) {
        if (*p == '{') {
            depth++;
        } else if (*p == '}') {
            if (--depth < 0)
                return -1;
        } else if (depth == 0 && strchr(", \t\r\n", *p) != NULL) {
            break;
        }
    }
    if (depth != 0)
        return -1;
    vstr_ncpy(word, start, (size_t) (p - start));
    *cp = p;
    return 1;
}

/* smtpd_check_add - append one item to list */
static SMTPD_RESTRICTION *smtpd_check_add(SMTPD_RESTRICTIONS *list, size_t *cap,
                                          SMTPD_WORD word, const char *spec)
{
    SMTPD_RESTRICTION *item;

    if (list->count == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        list->items = myrealloc_array(list->items, *cap, sizeof(*item));
    }
    item = list->items + list->count++;
    item->word = word;
    item->table = NULL;
    item->spec = spec ? mystrdup(spec) : NULL;
    item->tried = 0;
    return item;
}

/* smtpd_check_parse - compile a restriction list */
SMTPD_RESTRICTIONS *smtpd_check_parse(const char *param, const char *value,
                                      VSTR *why)
{
    SMTPD_RESTRICTIONS *list = mycalloc(1, sizeof(*list));
    VSTR *word = vstr_alloc(64);
    VSTR *map_why = vstr_alloc(64);
    const char *cp = value;
    size_t cap = 0;
    int ret;

    list->param = mystrdup(param);
    vstr_reset(why);
    while ((ret = smtpd_check_next_word(&cp, word)) > 0) {
        SMTPD_RESTRICTION *item;
        const SMTPD_WORD_INFO *info = smtpd_word_find(vstr_str(word));

        if (info == NULL) {
            vstr_sprintf(why, "%s: unknown restriction \"%s\"", param,
                         vstr_str(word));
            smtpd_check_add(list, &cap, SMTPD_WORD_CONFIG_ERROR,
                            vstr_str(word));
            break; /* nothing after it is reached */
        }
        if (!info->table) {
            smtpd_check_add(list, &cap, info->word, NULL);
            continue;
        }
        if ((ret = smtpd_check_next_word(&cp, word)) < 0)
            break;
        if (ret == 0 || strchr(vstr_str(word), ':') == NULL) {
            vstr_sprintf(why, "%s: %s needs a type:table argument", param,
                         info->name);
            smtpd_check_add(list, &cap, SMTPD_WORD_CONFIG_ERROR, info->name);
            break;
        }
        item = smtpd_check_add(list, &cap, info->word, vstr_str(word));
        item->tried = time(NULL);
        vstr_reset(map_why);
        if ((item->table = map_open(item->spec, MAP_FLAG_NONE, map_why)) ==
                NULL &&
            vstr_len(why) == 0)
            vstr_sprintf(why, "%s: %s", param, vstr_str(map_why));
    }
    if (ret < 0) {
        vstr_sprintf(why, "%s: unbalanced braces in \"%s\"", param, value);
        smtpd_check_add(list, &cap, SMTPD_WORD_CONFIG_ERROR, "{");
    }
    vstr_free(word);
    vstr_free(map_why);
    return list;
}

/* smtpd_check_free - release a list and close its tables; returns NULL */
SMTPD_RESTRICTIONS *smtpd_check_free(SMTPD_RESTRICTIONS *list)
{
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < list->count; i++) {
        if (list->items[i].table != NULL)
            map_close(list->items[i].table);
        myfree(list->items[i].spec);
    }
    myfree(list->items);
    myfree(list->param);
    myfree(list);
    return NULL;
}

/* smtpd_check_table - the table of a check_*_access item, opened again
   (at most once every SMTPD_TABLE_RETRY seconds) when it could not be;
   NULL while it still cannot */
static MAP *smtpd_check_table(const char *param, SMTPD_RESTRICTION *item)
{
    time_t now;
    VSTR *why;

    if (item->table != NULL)
        return item->table;
    now = time(NULL);
    if (now - item->tried < SMTPD_TABLE_RETRY && now >= item->tried)
        return NULL;
    item->tried = now;
    why = vstr_alloc(64);
    if ((item->table = map_open(item->spec, MAP_FLAG_NONE, why)) == NULL)
        msg_warn("%s: %s", param, vstr_str(why));
    else
        msg_info("%s: %s: opened", param, item->spec);
    vstr_free(why);
    return item->table;
}

/* smtpd_maps_entry_open - open one local_recipient_maps table */
static MAPS *smtpd_maps_entry_open(const char *param, SMTPD_MAPS_ENTRY *entry)
{
    VSTR *why = vstr_alloc(64);

    entry->tried = time(NULL);
    if ((entry->maps = maps_create(param, entry->spec, MAP_FLAG_NONE, why)) ==
        NULL)
        msg_warn("%s: %s: lookups answer 451 until it can be opened", param,
                 vstr_str(why));
    vstr_free(why);
    return entry->maps;
}

/* smtpd_maps_create - a list of tables, each opened alone */
SMTPD_MAPS *smtpd_maps_create(const char *param, const char *value, VSTR *why)
{
    SMTPD_MAPS *maps;
    ARGV *words;

    if ((words = maps_split(value, why)) == NULL)
        return NULL;
    maps = mycalloc(1, sizeof(*maps));
    maps->param = mystrdup(param);
    maps->count = words->argc;
    maps->entries =
        mycalloc(words->argc ? words->argc : 1, sizeof(*maps->entries));
    for (size_t i = 0; i < words->argc; i++) {
        maps->entries[i].spec = mystrdup(words->argv[i]);
        (void) smtpd_maps_entry_open(param, maps->entries + i);
    }
    argv_free(words);
    return maps;
}

/* smtpd_maps_free - close the tables; returns NULL */
SMTPD_MAPS *smtpd_maps_free(SMTPD_MAPS *maps)
{
    if (maps == NULL)
        return NULL;
    for (size_t i = 0; i < maps->count; i++) {
        if (maps->entries[i].maps != NULL)
            maps_free(maps->entries[i].maps);
        myfree(maps->entries[i].spec);
    }
    myfree(maps->entries);
    myfree(maps->param);
    myfree(maps);
    return NULL;
}

/* smtpd_maps_count - how many tables the list names */
size_t smtpd_maps_count(const SMTPD_MAPS *maps)
{
    return maps ? maps->count : 0;
}

/* smtpd_maps_find_addr - maps_find_addr() over the tables in order; a
   table that cannot be opened (or read) fails the lookup with *error
   MAP_FAIL and *failed naming it, unless an earlier table found addr */
static const char *smtpd_maps_find_addr(SMTPD_MAPS *maps, const char *addr,
                                        const char *delim, int flags,
                                        int *error, const char **failed)
{
    for (size_t i = 0; i < maps->count; i++) {
        SMTPD_MAPS_ENTRY *entry = maps->entries + i;
        const char *value;
        time_t now = time(NULL);

        if (entry->maps == NULL &&
            (now - entry->tried < SMTPD_TABLE_RETRY && now >= entry->tried
                 ? NULL
                 : smtpd_maps_entry_open(maps->param, entry)) == NULL) {
            *error = MAP_FAIL;
            *failed = entry->spec;
            return NULL;
        }
        *error = MAP_OK;
        if ((value = maps_find_addr(entry->maps, addr, delim, flags, error)) !=
            NULL)
            return value;
        if (*error == MAP_FAIL) {
            *failed = entry->spec;
            return NULL;
        }
    }
    *error = MAP_NOTFOUND;
    return NULL;
}

/* smtpd_domains_open - compile a domain list; NULL (and logged) when a
   table in it cannot be opened now */
static MATCH_LIST *smtpd_domains_open(SMTPD_DOMAINS *domains)
{
    VSTR *why = vstr_alloc(64);

    domains->tried = time(NULL);
    if ((domains->list = match_list_create(domains->param, domains->value,
                                           MATCH_LIST_DOMAIN, why)) == NULL)
        msg_warn("%s: answering 451 for what depends on it", vstr_str(why));
    vstr_free(why);
    return domains->list;
}

/* smtpd_domains_init - a domain list from main.cf, compiled when set */
static void smtpd_domains_init(SMTPD_DOMAINS *domains, const MAIL_CONF *conf,
                               const char *param)
{
    domains->param = param;
    domains->value = mystrdup(mail_conf_str(conf, param));
    if (*domains->value != 0)
        (void) smtpd_domains_open(domains);
}

/* smtpd_domains_match - is domain in the list? 1 yes, 0 no (or the list
   is empty), -1 the list (or a table in it) failed */
static int smtpd_domains_match(SMTPD_DOMAINS *domains, const char *domain)
{
    time_t now = time(NULL);

    if (*domains->value == 0)
        return 0;
    if (domains->list == NULL &&
        (now - domains->tried < SMTPD_TABLE_RETRY && now >= domains->tried
             ? NULL
             : smtpd_domains_open(domains)) == NULL)
        return -1;
    return match_list_match(domains->list, domain);
}

/* smtpd_virtual_maps - a list of tables that answers 451 (empty) when its
   value cannot even be split */
static SMTPD_MAPS *smtpd_virtual_maps(const MAIL_CONF *conf, const char *param)
{
    VSTR *why = vstr_alloc(64);
    SMTPD_MAPS *maps;

    if ((maps = smtpd_maps_create(param, mail_conf_str(conf, param), why)) ==
        NULL) {
        msg_warn("%s: answering 451 for what depends on it", vstr_str(why));
        maps = smtpd_maps_create(param, "", why);
    }
    vstr_free(why);
    return maps;
}

/* smtpd_virtual_create - see smtpd.h */
SMTPD_VIRTUAL *smtpd_virtual_create(const MAIL_CONF *conf)
{
    SMTPD_VIRTUAL *virt = mycalloc(1, sizeof(*virt));

    smtpd_domains_init(&virt->alias_domains, conf, "virtual_alias_domains");
    virt->maps = smtpd_virtual_maps(conf, "virtual_alias_maps");
    smtpd_domains_init(&virt->mailbox_domains, conf, "virtual_mailbox_domains");
    virt->mailbox_maps = smtpd_virtual_maps(conf, "virtual_mailbox_maps");
    return virt;
}

/* smtpd_virtual_free - returns NULL */
SMTPD_VIRTUAL *smtpd_virtual_free(SMTPD_VIRTUAL *virt)
{
    if (virt == NULL)
        return NULL;
    if (virt->alias_domains.list != NULL)
        match_list_free(virt->alias_domains.list);
    if (virt->mailbox_domains.list != NULL)
        match_list_free(virt->mailbox_domains.list);
    smtpd_maps_free(virt->maps);
    smtpd_maps_free(virt->mailbox_maps);
    myfree(virt->alias_domains.value);
    myfree(virt->mailbox_domains.value);
    myfree(virt);
    return NULL;
}

/* smtpd_virtual_domain - is domain a virtual alias domain? 1 yes, 0 no,
   -1 the list (or a table in it) failed */
static int smtpd_virtual_domain(SMTPD_VIRTUAL *virt, const char *domain)
{
    return virt == NULL ? 0 : smtpd_domains_match(&virt->alias_domains, domain);
}

/* smtpd_mailbox_domain - is domain a virtual mailbox domain? 1 yes, 0 no,
   -1 the list (or a table in it) failed */
static int smtpd_mailbox_domain(SMTPD_VIRTUAL *virt, const char *domain)
{
    return virt == NULL ? 0
                        : smtpd_domains_match(&virt->mailbox_domains, domain);
}

/* smtpd_check_reply - set the reply "code dsn <name>: what text" and
   return SMTPD_REJECT */
static SMTPD_DECISION smtpd_check_reply(SMTPD_CHECK *chk, int code,
                                        const char *dsn, const char *name,
                                        const char *what, const char *text)
{
    vstr_sprintf(chk->reply, "%d %s <%s>: %s", code, dsn, name, what);
    if (text != NULL)
        vstr_sprintf_append(chk->reply, ": %s", text);
    return SMTPD_REJECT;
}

/* smtpd_check_fail - a table could not be read: 451, try again later */
static SMTPD_DECISION smtpd_check_fail(SMTPD_CHECK *chk, const char *name,
                                       const char *table, const char *key)
{
    msg_warn("%s: %s lookup of \"%s\" failed: answering 451", chk->param, table,
             key);
    vstr_sprintf(chk->reply, "451 4.3.0 <%s>: Temporary lookup failure", name);
    return SMTPD_REJECT;
}

/* smtpd_check_dsn_len - the length of an enhanced status code "c.d.d" at
   text whose class is cls, followed by white space or the end; 0 if none */
static size_t smtpd_check_dsn_len(const char *text, char cls)
{
    const char *p = text;

    if (*p++ != cls || *p++ != '.')
        return 0;
    for (int part = 0; part < 2; part++) {
        size_t digits = strspn(p, "0123456789");

        if (digits < 1 || digits > 3)
            return 0;
        p += digits;
        if (part == 0 && *p++ != '.')
            return 0;
    }
    return (*p == 0 || *p == ' ' || *p == '\t') ? (size_t) (p - text) : 0;
}

/* smtpd_check_result - what an access table's value means (access(5));
   name and what make the reply ("<a@b>", "Sender address rejected") */
static SMTPD_DECISION smtpd_check_result(SMTPD_CHECK *chk, const MAP *table,
                                         const char *value, const char *name,
                                         const char *what)
{
    size_t len;
    const char *text;
    char dsn[16];

    value += strspn(value, " \t");
    len = strcspn(value, " \t");
    text = value + len;
    text += strspn(text, " \t");
    if (len == 0) {
        /* an empty value: nothing to act on */
    } else if ((len == 2 && strncasecmp(value, "OK", 2) == 0) ||
               (len == 6 && strncasecmp(value, "PERMIT", 6) == 0)) {
        return SMTPD_PERMIT;
    } else if (len == 5 && strncasecmp(value, "DUNNO", 5) == 0) {
        return SMTPD_DUNNO;
    } else if (len == 6 && strncasecmp(value, "REJECT", 6) == 0) {
        return smtpd_check_reply(chk, SMTPD_REJECT_CODE, "5.7.1", name, what,
                                 *text ? text : "Access denied");
    } else if (len == 5 && strncasecmp(value, "DEFER", 5) == 0) {
        return smtpd_check_reply(chk, SMTPD_DEFER_CODE, "4.7.1", name, what,
                                 *text ? text : "Access denied");
    } else if (len == 3 && (value[0] == '4' || value[0] == '5') &&
               isdigit((unsigned char) value[1]) &&
               isdigit((unsigned char) value[2])) {
        int code =
            (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        size_t dsn_len = smtpd_check_dsn_len(text, value[0]);

        if (dsn_len > 0 && dsn_len < sizeof(dsn)) {
            snprintf(dsn, sizeof(dsn), "%.*s", (int) dsn_len, text);
            text += dsn_len;
            text += strspn(text, " \t");
        } else {
            snprintf(dsn, sizeof(dsn), "%c.7.1", value[0]);
        }
        return smtpd_check_reply(chk, code, dsn, name, what,
                                 *text ? text : "Access denied");
    } else if (strspn(value, "0123456789") == len && *text == 0) {
        return SMTPD_PERMIT; /* all-numerical: OK, as Postfix */
    }
    msg_warn("%s: %s: unknown access table result \"%s\": ignored", chk->param,
             map_spec(table), value);
    return SMTPD_DUNNO;
}

/* smtpd_check_key - look key up in table; true when the key was found
   (DUNNO too: it stops the search for shorter keys, as in Postfix) or the
   table failed, with the decision in *decision */
static bool smtpd_check_key(SMTPD_CHECK *chk, MAP *table, const char *key,
                            const char *name, const char *what,
                            SMTPD_DECISION *decision)
{
    int error = MAP_OK;
    const char *value = map_get(table, key, &error);

    if (value != NULL) {
        *decision = smtpd_check_result(chk, table, value, name, what);
        return true;
    }
    if (error == MAP_FAIL) {
        *decision = smtpd_check_fail(chk, name, map_spec(table), key);
        return true;
    }
    return false;
}

/* smtpd_check_domain - domain, then its parent domains (plain names, as
   Postfix's default parent_domain_matches_subdomains asks access maps) */
static bool smtpd_check_domain(SMTPD_CHECK *chk, MAP *table, const char *domain,
                               const char *name, const char *what,
                               SMTPD_DECISION *decision)
{
    const char *cp = domain;

    while (cp != NULL && *cp != 0) {
        if (smtpd_check_key(chk, table, cp, name, what, decision))
            return true;
        if (map_is_pattern(table) || *domain == '[')
            return false; /* a whole string only; no parents of a literal */
        if ((cp = strchr(cp, '.')) != NULL)
            cp++;
    }
    return false;
}

/* smtpd_check_client_access - check_client_access: address, its shorter
   IPv4 forms, then the client name */
static SMTPD_DECISION smtpd_check_client_access(SMTPD_CHECK *chk, MAP *table)
{
    const SMTPD_PROTO *proto = chk->proto;
    const char *addr = proto->client_addr;
    const char *name;
    SMTPD_DECISION decision = SMTPD_DUNNO;
    char *dot;

    vstr_sprintf(chk->name, "%s[%s]", proto->client_name, addr);
    name = vstr_str(chk->name);
    if (smtpd_check_key(chk, table, addr, name, "Client host rejected",
                        &decision))
        return decision;
    if (!map_is_pattern(table) && strchr(addr, ':') == NULL) {
        vstr_cpy(chk->key, addr);
        while ((dot = strrchr(vstr_str(chk->key), '.')) != NULL) {
            vstr_truncate(chk->key, (size_t) (dot - vstr_str(chk->key)));
            if (smtpd_check_key(chk, table, vstr_str(chk->key), name,
                                "Client host rejected", &decision))
                return decision;
        }
    }
    if (strcmp(proto->client_name, "unknown") != 0 &&
        smtpd_check_domain(chk, table, proto->client_name, name,
                           "Client host rejected", &decision))
        return decision;
    return SMTPD_DUNNO;
}

/* smtpd_check_addr_access - check_sender_access, check_recipient_access */
static SMTPD_DECISION smtpd_check_addr_access(SMTPD_CHECK *chk, MAP *table,
                                              const char *addr,
                                              const char *what)
{
    const char *delim = chk->proto->conf->recipient_delimiter;
    size_t local_len;
    const char *domain = smtp_addr_split(addr, &local_len);
    size_t base_len = local_len;
    SMTPD_DECISION decision = SMTPD_DUNNO;

    if (*addr == 0)
        return smtpd_check_key(chk, table, SMTPD_NULL_SENDER_KEY, "", what,
                               &decision)
                   ? decision
                   : SMTPD_DUNNO;
    if (smtpd_check_key(chk, table, addr, addr, what, &decision))
        return decision;
    if (map_is_pattern(table))
        return SMTPD_DUNNO;
    /* user+ext@domain: user@domain */
    if (delim != NULL && *delim != 0) {
        size_t cut = strcspn(addr, delim);

        if (cut > 0 && cut < local_len)
            base_len = cut;
    }
    if (base_len < local_len) {
        vstr_ncpy(chk->key, addr, base_len);
        if (domain != NULL)
            vstr_sprintf_append(chk->key, "@%s", domain);
        if (smtpd_check_key(chk, table, vstr_str(chk->key), addr, what,
                            &decision))
            return decision;
    }
    if (domain != NULL &&
        smtpd_check_domain(chk, table, domain, addr, what, &decision))
        return decision;
    /* user+ext@, user@ */
    vstr_ncpy(chk->key, addr, local_len);
    vstr_addch(chk->key, '@');
    if (smtpd_check_key(chk, table, vstr_str(chk->key), addr, what, &decision))
        return decision;
    if (base_len < local_len) {
        vstr_ncpy(chk->key, addr, base_len);
        vstr_addch(chk->key, '@');
        if (smtpd_check_key(chk, table, vstr_str(chk->key), addr, what,
                            &decision))
            return decision;
    }
    return SMTPD_DUNNO;
}

/* smtpd_check_dest_domain - the domain that decides where address goes:
   its own (smtp_addr_split: a quoted '@' is not one), else $myorigin, which
   cleanup appends to an address without a domain; NULL (local) when both
   are missing, and for a bare "postmaster", which RFC 5321 4.5.1 says
   MUST be accepted (Postfix does the same) */
static const char *smtpd_check_dest_domain(const SMTPD_CONF *conf,
                                           const char *address)
{
    const char *domain = smtp_addr_split(address, NULL);

    if (domain == NULL && conf->myorigin != NULL && *conf->myorigin != 0 &&
        strcasecmp(address, "postmaster") != 0)
        domain = conf->myorigin;
    return domain;
}

/* smtpd_check_auth_destination - is address's domain ours (mydestination,
   virtual_alias_domains, virtual_mailbox_domains) or one we relay to (relay_domains)? An address without
   a domain is judged by $myorigin, as cleanup will qualify it. 1 yes, 0 no, -1
   a table failed */
int smtpd_check_auth_destination(const SMTPD_CONF *conf, const char *address)
{
    const char *domain = smtpd_check_dest_domain(conf, address);
    int match = 0;

    if (domain == NULL)
        return 1; /* no myorigin, or "postmaster": local */
    if (verp_addr_kind(address, conf->verp_domain, conf->unsub_domain,
                       conf->complaint_addresses) != VERP_ADDR_NONE)
        return 1; /* DSNs, unsubscribes, complaints: the feedback service's */
    if (conf->mydestination != NULL &&
        (match = match_list_match(conf->mydestination, domain)) != 0)
        return match;
    if ((match = smtpd_virtual_domain(conf->virtual_alias, domain)) != 0)
        return match;
    if ((match = smtpd_mailbox_domain(conf->virtual_alias, domain)) != 0)
        return match;
    if (conf->relay_domains != NULL)
        match = match_list_match(conf->relay_domains, domain);
    return match;
}

/* smtpd_check_virtual - is key in virtual_alias_maps (flags as
   maps_find_addr's)? SMTPD_PERMIT yes, SMTPD_DUNNO no, SMTPD_REJECT (451)
   a table failed */
static SMTPD_DECISION smtpd_check_virtual(SMTPD_CHECK *chk, const char *key,
                                          int flags)
{
    const SMTPD_CONF *conf = chk->proto->conf;
    const char *failed = "virtual_alias_maps";
    int error = MAP_OK;

    if (conf->virtual_alias == NULL ||
        smtpd_maps_count(conf->virtual_alias->maps) == 0)
        return SMTPD_DUNNO;
    if (smtpd_maps_find_addr(
            conf->virtual_alias->maps, key,
            conf->recipient_delimiter ? conf->recipient_delimiter : "", flags,
            &error, &failed) != NULL)
        return SMTPD_PERMIT;
    if (error == MAP_FAIL)
        return smtpd_check_fail(chk, chk->rcpt, failed, key);
    return SMTPD_DUNNO;
}

/* smtpd_check_mailbox - a recipient in virtual_mailbox_domains must be in
   virtual_alias_maps or virtual_mailbox_maps (key: the address; an
   "@domain" entry catches all); other domains are not judged here */
static SMTPD_DECISION smtpd_check_mailbox(SMTPD_CHECK *chk, const char *domain,
                                          const char *key)
{
    const SMTPD_CONF *conf = chk->proto->conf;
    const char *failed = "virtual_mailbox_maps";
    SMTPD_DECISION decision;
    int error = MAP_OK;
    int mailbox = smtpd_mailbox_domain(conf->virtual_alias, domain);

    if (mailbox < 0)
        return smtpd_check_fail(chk, chk->rcpt, "virtual_mailbox_domains",
                                domain);
    if (mailbox == 0)
        return SMTPD_DUNNO;
    if ((decision = smtpd_check_virtual(chk, key, 0)) != SMTPD_DUNNO)
        return decision == SMTPD_PERMIT ? SMTPD_DUNNO : decision;
    if (smtpd_maps_find_addr(
            conf->virtual_alias->mailbox_maps, key,
            conf->recipient_delimiter ? conf->recipient_delimiter : "", 0,
            &error, &failed) != NULL)
        return SMTPD_DUNNO;
    if (error == MAP_FAIL)
        return smtpd_check_fail(chk, chk->rcpt, failed, key);
    return smtpd_check_reply(chk, SMTPD_UNKNOWN_LOCAL_CODE, "5.1.1", chk->rcpt,
                             "Recipient address rejected",
                             "User unknown in virtual mailbox table");
}

/* smtpd_check_rcptmap - a recipient in mydestination must be in
   local_recipient_maps (when that is not empty) or virtual_alias_maps; one
   without a domain is looked up as cleanup will write it, with @$myorigin.
   A recipient in virtual_alias_domains must be in virtual_alias_maps (its
   address, or its domain's "@domain" catch-all), and one in
   virtual_mailbox_domains in virtual_alias_maps or virtual_mailbox_maps
   (the same keys), as Postfix's smtpd_reject_unlisted_recipient has it. */
static SMTPD_DECISION smtpd_check_rcptmap(SMTPD_CHECK *chk)
{
    const SMTPD_CONF *conf = chk->proto->conf;
    const char *domain = smtpd_check_dest_domain(conf, chk->rcpt);
    const char *key = chk->rcpt;
    const char *failed = "local_recipient_maps";
    SMTPD_DECISION decision;
    int error = MAP_OK;
    int local;

    if (verp_addr_kind(chk->rcpt, conf->verp_domain, conf->unsub_domain,
                       conf->complaint_addresses) != VERP_ADDR_NONE)
        return SMTPD_DUNNO; /* no mailbox: the feedback service's */
    if (domain != NULL) {
        local = conf->mydestination != NULL
                    ? match_list_match(conf->mydestination, domain)
                    : 0;
        if (local < 0)
            return smtpd_check_fail(chk, chk->rcpt, "mydestination", domain);
        if (smtp_addr_split(chk->rcpt, NULL) == NULL) {
            vstr_sprintf(chk->key, "%s@%s", chk->rcpt, domain);
            key = vstr_str(chk->key);
        }
        if (local == 0) {
            int virt = smtpd_virtual_domain(conf->virtual_alias, domain);

            if (virt < 0)
                return smtpd_check_fail(chk, chk->rcpt, "virtual_alias_domains",
                                        domain);
            if (virt == 0)
                return smtpd_check_mailbox(chk, domain, key);
            if ((decision = smtpd_check_virtual(chk, key, 0)) != SMTPD_DUNNO)
                return decision == SMTPD_PERMIT ? SMTPD_DUNNO : decision;
            return smtpd_check_reply(chk, SMTPD_UNKNOWN_LOCAL_CODE, "5.1.1",
                                     chk->rcpt, "Recipient address rejected",
                                     "User unknown in virtual alias table");
        }
    }
    if (smtpd_maps_count(conf->local_recipient_maps) == 0)
        return SMTPD_DUNNO;
    if (smtpd_maps_find_addr(
            conf->local_recipient_maps, key,
            conf->recipient_delimiter ? conf->recipient_delimiter : "",
            MAPS_ADDR_LOCAL, &error, &failed) != NULL)
        return SMTPD_DUNNO;
    if (error == MAP_FAIL)
        return smtpd_check_fail(chk, chk->rcpt, failed, key);
    /* A virtual alias of a local address makes it known too. */
    if ((decision = smtpd_check_virtual(chk, key, MAPS_ADDR_LOCAL)) !=
        SMTPD_DUNNO)
        return decision == SMTPD_PERMIT ? SMTPD_DUNNO : decision;
    return smtpd_check_reply(chk, SMTPD_UNKNOWN_LOCAL_CODE, "5.1.1", chk->rcpt,
                             "Recipient address rejected",
                             "User unknown in local recipient table");
}

/* smtpd_check_unknown_client - reject_unknown_client_hostname (status:
   the forward-confirmed name) and reject_unknown_reverse_client_hostname
   (the PTR alone), as Postfix: unknown_client_reject_code when DNS said
   no (or no lookup was made), always 450 when it failed; RFC 7372's
   X.7.25. A local (sendmail -bs) client is never refused. */
static SMTPD_DECISION smtpd_check_unknown_client(SMTPD_CHECK *chk,
                                                 SMTPD_PEER_CODE status,
                                                 const char *what)
{
    const SMTPD_PROTO *proto = chk->proto;
    int code;

    if (proto->local || status == SMTPD_PEER_OK)
        return SMTPD_DUNNO;
    code = status == SMTPD_PEER_TEMP ? 450 : proto->conf->unknown_client_code;
    vstr_sprintf(chk->reply,
                 "%d %c.7.25 Client host rejected: cannot find your %s, [%s]",
                 code, code >= 500 ? '5' : '4', what, proto->client_addr);
    return SMTPD_REJECT;
}

/* smtpd_check_list_name - who a plain reject/defer in the list names:
   (the client, the HELO name, the sender or the recipient) */
static const char *smtpd_check_list_name(SMTPD_CHECK *chk, const char **what)
{
    const SMTPD_PROTO *proto = chk->proto;

    switch (chk->list) {
    case SMTPD_LIST_CLIENT:
        *what = "Client host rejected";
        vstr_sprintf(chk->name, "%s[%s]", proto->client_name,
                     proto->client_addr);
        return vstr_str(chk->name);
    case SMTPD_LIST_HELO:
        if (proto->helo_name != NULL) {
            *what = "Helo command rejected";
            return proto->helo_name;
        }
        *what = "Client host rejected";
        vstr_sprintf(chk->name, "%s[%s]", proto->client_name,
                     proto->client_addr);
        return vstr_str(chk->name);
    case SMTPD_LIST_SENDER:
        *what = "Sender address rejected";
        return vstr_str(proto->sender);
    default:
        *what = "Recipient address rejected";
        return chk->rcpt;
    }
}

/* smtpd_check_unopened - a check_*_access table that cannot be opened:
   451 4.3.0 naming who the lookup was for */
static SMTPD_DECISION smtpd_check_unopened(SMTPD_CHECK *chk,
                                           const SMTPD_RESTRICTION *item)
{
    const SMTPD_PROTO *proto = chk->proto;
    const char *name;

    switch (item->word) {
    case SMTPD_WORD_CHECK_CLIENT_ACCESS:
        vstr_sprintf(chk->name, "%s[%s]", proto->client_name,
                     proto->client_addr);
        name = vstr_str(chk->name);
        break;
    case SMTPD_WORD_CHECK_HELO_ACCESS:
        name = proto->helo_name;
        break;
    case SMTPD_WORD_CHECK_SENDER_ACCESS:
        name = vstr_str(proto->sender);
        break;
    default:
        name = chk->rcpt;
        break;
    }
    return smtpd_check_fail(chk, name, item->spec, name);
}

/*
 * Sender authentication: SPF through the spf service (spf/spf.c; libspf2
 * never runs in smtpd's memory). With spf in smtpd_authentication_checks
 * every transaction of a remote client is checked at its first RCPT (the
 * client address, the HELO name and MAIL FROM are known by then), and
 * the message gets Authentication-Results: (RFC 8601) and Received-SPF:
 * (RFC 7208 9.1) headers; reject_spf_fail checks too when it is reached,
 * whatever smtpd_authentication_checks says. The result is kept for the
 * session and asked again only when the HELO name or the sender change.
 * With smtpd_spf_helo_check the same question checks the HELO identity
 * too (RFC 7208 2.3); its result is in the header when not none, and
 * reject_spf_fail rejects its fail when MAIL FROM's result is none.
 * An spf service that cannot be asked (not running, a timeout, a bad
 * reply) is 451 4.3.0, never a pass. With disable_dns_lookups = yes no
 * check is made (logged once at the start): no header, no rejection.
 *
 * The checks never wait: a recipient whose evaluation needs an SPF
 * result that is not in yet stops with SMTPD_CHECK_NEED_SPF, the I/O layer
 * asks the spf service in its event loop (smtpd_spf_request, at most
 * spf_lookup_timeout plus SMTPD_SPF_SLACK seconds) while the process's
 * other sessions go on, stores the answer (smtpd_spf_store) and evaluates
 * the recipient again. A service that could not answer is remembered for
 * the rest of the transaction (451 to each recipient), not longer.
 */
#define SMTPD_SPF_SLACK 5
#define SMTPD_SPF_FAIL_CODE 550
#define SMTPD_SPF_TEMP_CODE 451

struct SMTPD_AUTH_CONF {
    bool spf; /* spf in smtpd_authentication_checks */
    bool dkim; /* dkim in smtpd_authentication_checks */
    bool dmarc; /* dmarc in it (spf and dkim are then checked too) */
    bool dmarc_enforce; /* reject p=reject failures */
    bool helo_check; /* smtpd_spf_helo_check: the HELO identity too */
    int dkim_timeout; /* s for a DKIM verification after END */
    bool dns_off; /* disable_dns_lookups: no check */
    char *authserv_id;
    char *queue_dir;
    int timeout_ms; /* for each step of the question */
};

struct SMTPD_SPF {
    char *helo; /* what was checked ("" for no HELO) */
    char *sender;
    bool unavailable; /* the service could not answer: 451 */
    SPF_PROTO_RESULT result;
    SPF_PROTO_RESULT helo_result; /* of the HELO identity; none: none or
                                     not checked */
    VSTR *explanation;
    VSTR *received;
};

/* smtpd_auth_create - smtpd_authentication_checks and authserv_id */
SMTPD_AUTH_CONF *smtpd_auth_create(const MAIL_CONF *conf)
{
    SMTPD_AUTH_CONF *auth = mycalloc(1, sizeof(*auth));
    ARGV *words = mail_conf_list(conf, "smtpd_authentication_checks");
    const char *id = mail_conf_str(conf, "authserv_id");

    for (size_t i = 0; i < words->argc; i++) {
        if (strcasecmp(words->argv[i], "spf") == 0)
            auth->spf = true;
        else if (strcasecmp(words->argv[i], "dkim") == 0)
            auth->dkim = true;
        else if (strcasecmp(words->argv[i], "dmarc") == 0)
            auth->dmarc = true;
        else
            msg_warn("smtpd_authentication_checks: unknown check \"%s\": "
                     "ignored (known: spf, dkim, dmarc)",
                     words->argv[i]);
    }
    argv_free(words);
    /* An authserv-id is a value (RFC 8601 2.5): a token, no ";" or space. */
    if (*id == 0 || strpbrk(id, " \t;()\"\\") != NULL) {
        msg_warn("authserv_id \"%s\" is not a token: using myhostname", id);
        id = mail_conf_str(conf, "myhostname");
    }
    auth->authserv_id = mystrdup(id);
    auth->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    auth->dns_off = mail_conf_bool(conf, "disable_dns_lookups");
    auth->timeout_ms =
        (int) (mail_conf_time(conf, "spf_lookup_timeout") + SMTPD_SPF_SLACK) *
        1000;
    /* DMARC stands on both. */
    if (auth->dmarc)
        auth->spf = auth->dkim = true;
    auth->dmarc_enforce = mail_conf_bool(conf, "dmarc_enforce");
    auth->helo_check = mail_conf_bool(conf, "smtpd_spf_helo_check");
    auth->dkim_timeout =
        (int) mail_conf_time(conf, "dkim_lookup_timeout") + SMTPD_SPF_SLACK;
    if ((auth->spf || auth->dkim) && auth->dns_off)
        msg_info("smtpd_authentication_checks: disable_dns_lookups = yes: "
                 "%s not checked",
                 auth->spf && auth->dkim ? "SPF and DKIM are"
                 : auth->spf             ? "SPF is"
                                         : "DKIM is");
    return auth;
}

/* smtpd_auth_free - free; NULL */
SMTPD_AUTH_CONF *smtpd_auth_free(SMTPD_AUTH_CONF *auth)
{
    if (auth != NULL) {
        myfree(auth->authserv_id);
        myfree(auth->queue_dir);
        myfree(auth);
    }
    return NULL;
}

/* smtpd_spf_free - a session's SPF result; NULL */
SMTPD_SPF *smtpd_spf_free(SMTPD_SPF *spf)
{
    if (spf != NULL) {
        myfree(spf->helo);
        myfree(spf->sender);
        vstr_free(spf->explanation);
        vstr_free(spf->received);
        myfree(spf);
    }
    return NULL;
}

/* smtpd_spf_current - the session's result, when it is for the
   transaction's HELO name and sender; else NULL */
static const SMTPD_SPF *smtpd_spf_current(const SMTPD_PROTO *proto)
{
    const SMTPD_SPF *spf = proto->spf;
    const char *helo = proto->helo_name ? proto->helo_name : "";

    if (spf == NULL || spf->sender == NULL ||
        strcmp(spf->sender, vstr_str(proto->sender)) != 0 ||
        strcmp(spf->helo, helo) != 0)
        return NULL;
    return spf;
}

/* smtpd_spf_request - what the spf service is to be asked for the
   transaction; the pointers are proto's */
void smtpd_spf_request(const SMTPD_PROTO *proto, SPF_REQUEST *req)
{
    req->client_address = proto->client_addr;
    req->helo_name = proto->helo_name ? proto->helo_name : "";
    req->sender = vstr_str(proto->sender);
    req->helo_check =
        proto->conf->auth != NULL && proto->conf->auth->helo_check;
}

/* smtpd_spf_timeout - seconds the I/O layer gives the spf service */
int smtpd_spf_timeout(const SMTPD_PROTO *proto)
{
    return proto->conf->auth->timeout_ms / 1000;
}

/* smtpd_spf_queue_dir - where the spf service's socket is */
const char *smtpd_spf_queue_dir(const SMTPD_PROTO *proto)
{
    return proto->conf->auth->queue_dir;
}

/* smtpd_spf_store - the answer to smtpd_spf_request (NULL: the service
   could not answer, why says why) for the transaction */
void smtpd_spf_store(SMTPD_PROTO *proto, const SPF_REPLY *reply,
                     const char *why)
{
    SMTPD_SPF *spf;
    SPF_REQUEST req;

    if ((spf = proto->spf) == NULL) {
        spf = proto->spf = mycalloc(1, sizeof(*spf));
        spf->explanation = vstr_alloc(100);
        spf->received = vstr_alloc(200);
    }
    smtpd_spf_request(proto, &req);
    myfree(spf->helo);
    myfree(spf->sender);
    spf->helo = mystrdup(req.helo_name);
    spf->sender = mystrdup(req.sender);
    spf->unavailable = reply == NULL;
    if (reply == NULL) {
        msg_warn("SPF check of <%s> from %s[%s] failed: %s: answering 451 "
                 "4.3.0",
                 req.sender, proto->client_name, proto->client_addr, why);
        vstr_reset(spf->explanation);
        vstr_reset(spf->received);
        return;
    }
    spf->result = reply->result;
    spf->helo_result = reply->helo_result;
    vstr_cpy(spf->explanation, reply->explanation);
    vstr_cpy(spf->received, reply->received_spf);
}

/* smtpd_spf_reset - the transaction ended: an unavailable service is
   asked again by the next one */
void smtpd_spf_reset(SMTPD_PROTO *proto)
{
    if (proto->spf != NULL && proto->spf->unavailable)
        proto->spf = smtpd_spf_free(proto->spf);
}

/* smtpd_spf_check - the transaction's SPF result: the result, NULL when
   no check is made (local submission, DNS off), NULL with a 451 in
   chk->reply (*status SMTPD_REJECT) when the service could not answer, or
   NULL with *status SMTPD_NEED_SPF when it has not been asked yet */
static const SMTPD_SPF *smtpd_spf_check(SMTPD_CHECK *chk,
                                        SMTPD_DECISION *status)
{
    const SMTPD_PROTO *proto = chk->proto;
    const SMTPD_AUTH_CONF *auth = proto->conf->auth;
    const SMTPD_SPF *known;

    *status = SMTPD_DUNNO;
    if (proto->local || auth == NULL || auth->dns_off || !proto->have_sender)
        return NULL;
    if ((known = smtpd_spf_current(proto)) == NULL) {
        *status = SMTPD_NEED_SPF;
        return NULL;
    }
    if (known->unavailable) {
        vstr_sprintf(chk->reply,
                     "451 4.3.0 <%s>: Temporary failure: SPF check "
                     "unavailable, try again later",
                     chk->rcpt);
        *status = SMTPD_REJECT;
        return NULL;
    }
    return known;
}

/* smtpd_check_spf_fail - reject_spf_fail: 550 on fail, 451 on temperror
   (of the MAIL FROM identity); 550 too on a fail of the HELO identity
   when MAIL FROM's result is none: a sender domain that publishes a
   policy has the last word on its mail (a HELO name that fails a
   sender's pass is a misconfigured relay more often than a forger), and
   the HELO policy stands for the mail that has no other */
static SMTPD_DECISION smtpd_check_spf_fail(SMTPD_CHECK *chk)
{
    SMTPD_DECISION status;
    const SMTPD_SPF *spf = smtpd_spf_check(chk, &status);
    const char *sender = vstr_str(chk->proto->sender);
    const char *helo = chk->proto->helo_name;

    if (spf == NULL)
        return status;
    if (spf->result == SPF_PROTO_FAIL) {
        vstr_sprintf(chk->reply,
                     "%d 5.7.23 <%s>: Sender address rejected: Message "
                     "rejected due to: SPF fail - not authorized",
                     SMTPD_SPF_FAIL_CODE, *sender ? sender : "<>");
        if (vstr_len(spf->explanation) > 0)
            vstr_sprintf_append(chk->reply, ". %s", vstr_str(spf->explanation));
        return SMTPD_REJECT;
    }
    if (spf->result == SPF_PROTO_NONE && spf->helo_result == SPF_PROTO_FAIL &&
        helo != NULL) {
        vstr_sprintf(chk->reply,
                     "%d 5.7.23 <%s>: Helo command rejected: Message rejected "
                     "due to: SPF fail of the HELO name - not authorized",
                     SMTPD_SPF_FAIL_CODE, helo);
        return SMTPD_REJECT;
    }
    if (spf->result == SPF_PROTO_TEMPERROR) {
        vstr_sprintf(chk->reply,
                     "%d 4.7.24 <%s>: Sender address rejected: Temporary SPF "
                     "error (DNS), try again later",
                     SMTPD_SPF_TEMP_CODE, *sender ? sender : "<>");
        return SMTPD_REJECT;
    }
    return SMTPD_DUNNO;
}

/* smtpd_auth_fold - append "name: value" folded at spaces near 78 */
static void smtpd_auth_fold(VSTR *out, const char *name, const char *value)
{
    size_t col = strlen(name) + 2;
    const char *word = value;

    vstr_sprintf_append(out, "%s:", name);
    while (*word != 0) {
        size_t len = strcspn(word, " ");

        if (col + 1 + len > 78 && col > strlen(name) + 2) {
            vstr_cat(out, "\n\t");
            col = 8;
        } else {
            vstr_addch(out, ' ');
            col++;
        }
        vstr_ncat(out, word, len);
        col += len;
        word += len;
        word += strspn(word, " ");
    }
    vstr_addch(out, '\n');
}

/* smtpd_dkim_wanted - DKIM verification for this session's messages */
bool smtpd_dkim_wanted(const SMTPD_PROTO *proto)
{
    const SMTPD_AUTH_CONF *auth = proto->conf->auth;

    return auth != NULL && auth->dkim && !auth->dns_off && !proto->local;
}

/* smtpd_dmarc_begin - the DMARC part of the verifier's BEGIN (SPF's
   result and domain; scratch holds text); false: no DMARC */
bool smtpd_dmarc_begin(const SMTPD_PROTO *proto, DKIM_REQUEST *begin,
                       VSTR *scratch)
{
    const SMTPD_SPF *spf = smtpd_spf_current(proto);
    const char *at;

    if (proto->conf->auth == NULL || !proto->conf->auth->dmarc)
        return false;
    begin->dmarc = true;
    begin->client_address = proto->client_addr;
    begin->spf_result = spf != NULL && !spf->unavailable
                            ? spf_proto_result_name(spf->result)
                            : "none";
    vstr_reset(scratch);
    if (spf != NULL && !spf->unavailable) {
        if (*spf->sender != 0 && (at = strrchr(spf->sender, '@')) != NULL)
            vstr_cpy(scratch, at + 1);
        else if (*spf->sender == 0)
            vstr_cpy(scratch, spf->helo);
    }
    begin->spf_domain = vstr_str(scratch);
    return true;
}

/* smtpd_dmarc_reject - dmarc_enforce and a p=reject failure: the reply
   text ("5.7.1 ...") in reason */
bool smtpd_dmarc_reject(const SMTPD_PROTO *proto, const DKIM_REPLY *dkim,
                        VSTR *reason)
{
    if (dkim == NULL || !dkim->dmarc || proto->conf->auth == NULL ||
        !proto->conf->auth->dmarc_enforce ||
        dkim->dmarc_result != DMARC_PROTO_FAIL ||
        strcmp(dkim->dmarc_policy, "reject") != 0)
        return false;
    vstr_sprintf(reason,
                 "5.7.1 Message rejected: it fails the DMARC policy of %s",
                 dkim->dmarc_from);
    msg_info("reject: DMARC policy of %s (p=reject) from %s[%s]",
             dkim->dmarc_from, proto->client_name, proto->client_addr);
    return true;
}

/* smtpd_dkim_timeout - seconds a verification may take after END */
int smtpd_dkim_timeout(const SMTPD_PROTO *proto)
{
    return proto->conf->auth->dkim_timeout;
}

/* smtpd_auth_spf_resinfo - "spf=pass smtp.mailfrom=..." of the
   transaction into value; false when no SPF result is known */
static bool smtpd_auth_spf_resinfo(const SMTPD_PROTO *proto, VSTR *value)
{
    const SMTPD_SPF *spf = smtpd_spf_current(proto);

    if (spf == NULL || spf->unavailable)
        return false;
    vstr_sprintf_append(value, "; spf=%s", spf_proto_result_name(spf->result));
    if (*spf->sender != 0)
        vstr_sprintf_append(value, " smtp.mailfrom=%s", spf->sender);
    else
        vstr_sprintf_append(value, " smtp.helo=%s", spf->helo);
    /* The HELO identity's own result, when its name has a policy (none
       is left out: most HELO names publish none). */
    if (*spf->sender != 0 && spf->helo_result != SPF_PROTO_NONE)
        vstr_sprintf_append(value, "; spf=%s smtp.helo=%s",
                            spf_proto_result_name(spf->helo_result), spf->helo);
    return true;
}

/* smtpd_auth_headers - Authentication-Results: and Received-SPF: */
void smtpd_auth_headers(const SMTPD_PROTO *proto, VSTR *out)
{
    const SMTPD_SPF *spf = smtpd_spf_current(proto);
    VSTR *value;

    if (spf == NULL || spf->unavailable || proto->conf->auth == NULL)
        return;
    /* With DKIM the one Authentication-Results: comes at the end of DATA
       (smtpd_auth_results). */
    if (!smtpd_dkim_wanted(proto)) {
        value = vstr_alloc(200);
        vstr_cpy(value, proto->conf->auth->authserv_id);
        (void) smtpd_auth_spf_resinfo(proto, value);
        smtpd_auth_fold(out, "Authentication-Results", vstr_str(value));
        vstr_free(value);
    }
    smtpd_auth_fold(out, "Received-SPF", vstr_str(spf->received));
}

/* smtpd_auth_results - the Authentication-Results: header of a message
   whose DKIM verification ended: dkim's reply, or NULL and why */
void smtpd_auth_results(const SMTPD_PROTO *proto, const DKIM_REPLY *dkim,
                        const char *why, VSTR *out)
{
    VSTR *value = vstr_alloc(200);

    vstr_cpy(value, proto->conf->auth->authserv_id);
    (void) smtpd_auth_spf_resinfo(proto, value);
    if (dkim == NULL) {
        msg_warn("DKIM verification for %s[%s] failed: %s: dkim=temperror",
                 proto->client_name, proto->client_addr, why);
        vstr_cat(value, "; dkim=temperror reason=\"verifier unavailable\"");
    } else if (dkim->count == 0) {
        vstr_cat(value, "; dkim=none");
    }
    for (size_t i = 0; dkim != NULL && i < dkim->count; i++) {
        const DKIM_SIG_RESULT *sig = dkim->sigs + i;

        vstr_sprintf_append(value, "; dkim=%s",
                            dkim_proto_result_name(sig->result));
        if (*sig->domain)
            vstr_sprintf_append(value, " header.d=%s", sig->domain);
        if (*sig->selector)
            vstr_sprintf_append(value, " header.s=%s", sig->selector);
    }
    if (proto->conf->auth->dmarc) {
        if (dkim == NULL || !dkim->dmarc) {
            vstr_cat(value, "; dmarc=temperror");
        } else {
            vstr_sprintf_append(value, "; dmarc=%s",
                                dmarc_proto_result_name(dkim->dmarc_result));
            if (*dkim->dmarc_policy)
                vstr_sprintf_append(value, " (p=%s)", dkim->dmarc_policy);
            if (*dkim->dmarc_from)
                vstr_sprintf_append(value, " header.from=%s", dkim->dmarc_from);
        }
    }
    smtpd_auth_fold(out, "Authentication-Results", vstr_str(value));
    vstr_free(value);
}

/* smtpd_check_word - evaluate one restriction */
static SMTPD_DECISION smtpd_check_word(SMTPD_CHECK *chk,
                                       SMTPD_RESTRICTION *item)
{
    const SMTPD_PROTO *proto = chk->proto;
    const SMTPD_CONF *conf = proto->conf;
    SMTPD_DECISION decision = SMTPD_DUNNO;
    const char *what;
    const char *name;
    MAP *table = NULL;
    int match;

    switch (item->word) {
    case SMTPD_WORD_CHECK_CLIENT_ACCESS:
    case SMTPD_WORD_CHECK_SENDER_ACCESS:
    case SMTPD_WORD_CHECK_RECIPIENT_ACCESS:
        if ((table = smtpd_check_table(chk->param, item)) == NULL)
            return smtpd_check_unopened(chk, item);
        break;
    case SMTPD_WORD_CHECK_HELO_ACCESS:
        if (proto->helo_name == NULL)
            return SMTPD_DUNNO;
        if ((table = smtpd_check_table(chk->param, item)) == NULL)
            return smtpd_check_unopened(chk, item);
        break;
    default:
        break;
    }
    switch (item->word) {
    case SMTPD_WORD_CONFIG_ERROR:
        msg_warn("%s: unknown restriction \"%s\": answering 451 4.3.5",
                 chk->param, item->spec);
        vstr_cpy(chk->reply, "451 4.3.5 Server configuration error");
        return SMTPD_REJECT;
    case SMTPD_WORD_PERMIT:
        return SMTPD_PERMIT;
    case SMTPD_WORD_REJECT:
        name = smtpd_check_list_name(chk, &what);
        return smtpd_check_reply(chk, SMTPD_REJECT_CODE, "5.7.1", name, what,
                                 "Access denied");
    case SMTPD_WORD_DEFER:
        name = smtpd_check_list_name(chk, &what);
        return smtpd_check_reply(chk, SMTPD_DEFER_CODE, "4.7.1", name, what,
                                 "Access denied");
    case SMTPD_WORD_PERMIT_MYNETWORKS:
        if (proto->local)
            return SMTPD_PERMIT;
        match = conf->mynetworks != NULL
                    ? match_list_match(conf->mynetworks, proto->client_addr)
                    : 0;
        if (match < 0) {
            vstr_sprintf(chk->name, "%s[%s]", proto->client_name,
                         proto->client_addr);
            return smtpd_check_fail(chk, vstr_str(chk->name), "mynetworks",
                                    proto->client_addr);
        }
        return match ? SMTPD_PERMIT : SMTPD_DUNNO;
    case SMTPD_WORD_PERMIT_SASL_AUTHENTICATED:
        /* the client logged in with AUTH in this session */
        return proto->sasl_username != NULL ? SMTPD_PERMIT : SMTPD_DUNNO;
    case SMTPD_WORD_REJECT_UNAUTH_DESTINATION:
    case SMTPD_WORD_DEFER_UNAUTH_DESTINATION:
    case SMTPD_WORD_PERMIT_AUTH_DESTINATION:
        match = smtpd_check_auth_destination(conf, chk->rcpt);
        if (match < 0)
            return smtpd_check_fail(
                chk, chk->rcpt, "mydestination or relay_domains", chk->rcpt);
        if (item->word == SMTPD_WORD_PERMIT_AUTH_DESTINATION)
            return match ? SMTPD_PERMIT : SMTPD_DUNNO;
        if (match)
            return SMTPD_DUNNO;
        /* Postfix: defer_code with 4.7.1 (Debian's default list) */
        if (item->word == SMTPD_WORD_DEFER_UNAUTH_DESTINATION)
            vstr_sprintf(chk->reply, "%d 4.7.1 <%s>: Relay access denied",
                         SMTPD_DEFER_CODE, chk->rcpt);
        else
            vstr_sprintf(chk->reply, "%d 5.7.1 <%s>: Relay access denied",
                         SMTPD_RELAY_REJECT_CODE, chk->rcpt);
        return SMTPD_REJECT;
    case SMTPD_WORD_REJECT_UNLISTED_RECIPIENT:
        return smtpd_check_rcptmap(chk);
    case SMTPD_WORD_REJECT_UNKNOWN_CLIENT:
        return smtpd_check_unknown_client(chk, proto->name_status, "hostname");
    case SMTPD_WORD_REJECT_UNKNOWN_REVERSE_CLIENT:
        return smtpd_check_unknown_client(chk, proto->reverse_status,
                                          "reverse hostname");
    case SMTPD_WORD_REJECT_SPF_FAIL:
        return smtpd_check_spf_fail(chk);
    case SMTPD_WORD_CHECK_CLIENT_ACCESS:
        return smtpd_check_client_access(chk, table);
    case SMTPD_WORD_CHECK_HELO_ACCESS:
        (void) smtpd_check_domain(chk, table, proto->helo_name,
                                  proto->helo_name, "Helo command rejected",
                                  &decision);
        return decision;
    case SMTPD_WORD_CHECK_SENDER_ACCESS:
        if (!proto->have_sender)
            return SMTPD_DUNNO;
        return smtpd_check_addr_access(chk, table, vstr_str(proto->sender),
                                       "Sender address rejected");
    case SMTPD_WORD_CHECK_RECIPIENT_ACCESS:
        return smtpd_check_addr_access(chk, table, chk->rcpt,
                                       "Recipient address rejected");
    }
    msg_panic("%s: unknown restriction %d", __func__, (int) item->word);
}

/* smtpd_check_rcpt - every restriction list, then local_recipient_maps */
int smtpd_check_rcpt(const SMTPD_PROTO *proto, const char *rcpt, VSTR *reply)
{
    static const char *const params[SMTPD_LIST_COUNT] = {
        "smtpd_client_restrictions",    "smtpd_helo_restrictions",
        "smtpd_sender_restrictions",    "smtpd_relay_restrictions",
        "smtpd_recipient_restrictions",
    };
    SMTPD_CHECK chk = {
        .proto = proto,
        .rcpt = rcpt,
        .reply = reply,
        .key = vstr_alloc(100),
        .name = vstr_alloc(100),
    };
    SMTPD_DECISION decision = SMTPD_DUNNO;
    int code = 0;

    vstr_reset(reply);
    /* smtpd_authentication_checks = spf: every message gets its result. */
    if (proto->conf->auth != NULL && proto->conf->auth->spf) {
        chk.param = "smtpd_authentication_checks";
        (void) smtpd_spf_check(&chk, &decision);
    }
    for (int list = 0; decision == SMTPD_DUNNO && list < SMTPD_LIST_COUNT;
         list++) {
        SMTPD_RESTRICTIONS *items = proto->conf->restrictions[list];

        if (items == NULL)
            continue;
        chk.list = (SMTPD_LIST) list;
        chk.param = params[list];
        for (size_t i = 0; i < items->count; i++) {
            decision = smtpd_check_word(&chk, items->items + i);
            if (decision != SMTPD_DUNNO)
                break;
        }
        if (decision == SMTPD_REJECT || decision == SMTPD_NEED_SPF)
            break;
        decision = SMTPD_DUNNO; /* a PERMIT ends its list alone */
    }
    if (decision == SMTPD_NEED_SPF) {
        vstr_reset(reply);
        code = SMTPD_CHECK_NEED_SPF;
    } else if (decision != SMTPD_REJECT) {
        chk.param = "local_recipient_maps";
        decision = smtpd_check_rcptmap(&chk);
    }
    if (decision == SMTPD_REJECT) {
        const char *text = vstr_str(reply);

        code = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
        if (code < 400 || code > 599 || !isdigit((unsigned char) text[1]) ||
            !isdigit((unsigned char) text[2]))
            msg_panic("%s: bad reply \"%s\"", __func__, text);
    }
    vstr_free(chk.key);
    vstr_free(chk.name);
    return code;
}
