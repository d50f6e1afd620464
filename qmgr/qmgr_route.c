/*
 * qmgr_route - which transport and next hop an address goes to
 *
 * See qmgr_route.h for the rules. The tables answer through callbacks, so
 * the decision itself reads no file and keeps no state.
 */
#include "sys_defs.h"

#include "qmgr_route.h"
#include "smtp_addr.h"
#include "verp_addr.h"
#include "vstr.h"

/* qmgr_route_transport - transport_maps as transport(5) says: the full
   address, then (with a domain) the domain, its parents as ".parent", and
   "*"; 1 with *value, 0 when nothing matched, -1 when a table failed */
static int qmgr_route_transport(const QMGR_ROUTE_TABLES *tables,
                                const char *address, const char *domain,
                                const char **value)
{
    int found;

    if (tables->find_addr == NULL)
        return 0;
    if ((found = tables->find_addr(tables->context, address, value)) != 0)
        return found;
    if (domain == NULL)
        return 0;
    for (const char *name = domain; name; name = strchr(name + 1, '.'))
        if ((found = tables->find_fixed(tables->context, name, value)) != 0)
            return found;
    return tables->find_fixed(tables->context, "*", value);
}

/* Postfix's empty_address_relayhost_maps_lookup_key. */
#define QMGR_ROUTE_NULL_SENDER_KEY "<>"

/* qmgr_route_sender - sender_dependent_relayhost_maps: the sender address,
   then "@domain"; 1 with *value (not DUNNO), 0 when nothing matched or a
   DUNNO ended the search, -1 when a table failed */
static int qmgr_route_sender(const QMGR_ROUTE_TABLES *tables,
                             const char *sender, const char **value)
{
    const char *domain;
    VSTR *key;
    int found;

    if (tables->find_sender_addr == NULL)
        return 0;
    if (*sender == 0)
        sender = QMGR_ROUTE_NULL_SENDER_KEY;
    found = tables->find_sender_addr(tables->context, sender, value);
    if (found == 0 && (domain = smtp_addr_split(sender, NULL)) != NULL) {
        key = vstr_alloc(64);
        vstr_lower(vstr_sprintf(key, "@%s", domain));
        found =
            tables->find_sender_fixed(tables->context, vstr_str(key), value);
        vstr_free(key);
    }
    if (found > 0) {
        while (**value == ' ' || **value == '\t')
            (*value)++;
        if (**value == 0 || (strncasecmp(*value, "DUNNO", 5) == 0 &&
                             strchr(" \t", (*value)[5]) != NULL))
            found = 0;
    }
    return found;
}

/* qmgr_route - transport and next hop of address, or why not now */
QMGR_ROUTE_STATUS qmgr_route(const QMGR_ROUTE_CONF *conf,
                             const QMGR_ROUTE_TABLES *tables,
                             const char *sender, const char *address,
                             VSTR *transport, VSTR *nexthop)
{
    /* The split smtpd and cleanup use: a quoted '@' is never a route. */
    const char *rcpt_domain = smtp_addr_split(address, NULL);
    VSTR *domain = vstr_alloc(64);
    const char *value = NULL;
    const char *colon;
    int local = 1;
    int mailbox = 0;
    int found;

    /* DSNs, unsubscribes and complaints are parsed, never delivered
       (feedback/). */
    if (verp_addr_kind(address, conf->verp_domain, conf->unsub_domain,
                       conf->complaint_addresses) != VERP_ADDR_NONE) {
        vstr_cpy(transport, VERP_ADDR_TRANSPORT);
        vstr_cpy(nexthop, rcpt_domain ? rcpt_domain : conf->myhostname);
        vstr_lower(nexthop);
        vstr_free(domain);
        return QMGR_ROUTE_OK;
    }
    if (rcpt_domain == NULL) {
        vstr_cpy(domain, conf->myhostname);
    } else {
        vstr_lower(vstr_cpy(domain, rcpt_domain));
        local = tables->is_local(tables->context, vstr_str(domain));
    }
    if (local < 0) {
        vstr_free(domain);
        return QMGR_ROUTE_LOCAL_FAILED;
    }
    if (!local && tables->is_virtual != NULL) {
        int virt = tables->is_virtual(tables->context, vstr_str(domain));

        if (virt != 0) {
            vstr_free(domain);
            return virt < 0 ? QMGR_ROUTE_VIRTUAL_FAILED
                            : QMGR_ROUTE_VIRTUAL_UNKNOWN;
        }
    }
    if (!local && tables->is_mailbox != NULL &&
        (mailbox = tables->is_mailbox(tables->context, vstr_str(domain))) < 0) {
        vstr_free(domain);
        return QMGR_ROUTE_MAILBOX_FAILED;
    }
    if (local) {
        vstr_cpy(transport, conf->local_transport);
        vstr_cpy(nexthop, vstr_str(domain));
    } else if (mailbox) {
        vstr_cpy(transport, conf->virtual_transport);
        vstr_cpy(nexthop, vstr_str(domain));
    } else {
        vstr_cpy(transport, conf->default_transport);
        vstr_cpy(nexthop,
                 *conf->relayhost ? conf->relayhost : vstr_str(domain));
        if ((found = qmgr_route_sender(tables, sender, &value)) < 0) {
            vstr_free(domain);
            return QMGR_ROUTE_SENDER_FAILED;
        }
        if (found > 0)
            vstr_cpy(nexthop, value);
        value = NULL;
    }
    /* The table overrides what it names; an empty part keeps the default. */
    found = qmgr_route_transport(tables, address,
                                 rcpt_domain ? vstr_str(domain) : NULL, &value);
    vstr_free(domain);
    if (found < 0)
        return QMGR_ROUTE_TABLE_FAILED;
    if (found > 0) {
        if ((colon = strchr(value, ':')) != NULL) {
            if (colon[1])
                vstr_cpy(nexthop, colon + 1);
            if (colon > value)
                vstr_ncpy(transport, value, (size_t) (colon - value));
        } else if (*value) {
            vstr_cpy(transport, value);
        }
    }
    return QMGR_ROUTE_OK;
}
