/*
 * qmgr_route - which transport and next hop an address goes to
 *
 * A pure function of the address, the configuration and the answers of
 * the lookup tables, which come in through callbacks (qmgr passes its
 * mydestination list and transport_maps; the tests pass tables of
 * cases). The rules:
 *
 *   - the domain is what smtp_addr_split says, as in smtpd and cleanup (a
 *     quoted local part with '@' is never a route); an address without a
 *     domain is local, with myhostname as its next hop;
 *   - a domain in mydestination goes to local_transport, the next hop being
 *     the domain; a domain in virtual_alias_domains has no mailboxes: an
 *     address there that cleanup's virtual_alias_maps left as it was is
 *     unknown (QMGR_ROUTE_VIRTUAL_UNKNOWN: bounced 5.1.1, as Postfix's
 *     error:User unknown in virtual alias table, which no table
 *     overrides); a domain in virtual_mailbox_domains goes to
 *     virtual_transport, the next hop being the domain (mydestination
 *     wins for a domain in both, as in Postfix, which warns, and so does
 *     sluice check); any other goes to default_transport, to relayhost
 *     when set, else to the domain;
 *   - transport_maps may override either part, looked up as transport(5)
 *     says: the full address (the table's own address forms), then the
 *     domain, then its parents as ".parent", then "*". A value is
 *     "transport:nexthop"; an empty part keeps the default
 *     (":[host]:port" keeps the transport);
 *   - sender_dependent_relayhost_maps overrides relayhost for mail that
 *     would go to it (not local, default_transport), as Postfix's: looked
 *     up by the envelope sender (the table's own address forms; the null
 *     sender as "<>"), then by "@domain" of the sender; a value "DUNNO"
 *     (any case) ends the search and keeps relayhost; transport_maps
 *     still overrides what it names;
 *   - a table that fails is an answer of its own: the recipient waits.
 */
#ifndef QMGR_ROUTE_H
#define QMGR_ROUTE_H

#include "sys_defs.h"

#include "vstr.h"

typedef struct QMGR_ROUTE_CONF {
    const char *local_transport;
    const char *default_transport;
    const char *virtual_transport;
    const char *relayhost; /* "" when none */
    const char *myhostname; /* next hop of an address with no domain */
    /* bounce_verp_domain, unsubscribe_mailto_domain and
       complaint_addresses (NULL: none): their mail goes to the feedback
       service (global/verp_addr.h), before any rule */
    const char *verp_domain;
    const char *unsub_domain;
    const char *complaint_addresses;
} QMGR_ROUTE_CONF;

/*
 * The tables. Each returns 1 (found, *value set: a string that stays valid
 * until the next call), 0 (not found) or -1 (the table failed).
 * is_local is never NULL; a NULL find_addr means there is no transport
 * table at all (find_fixed is then not called either).
 */
typedef struct QMGR_ROUTE_TABLES {
    /* is_local - is domain (lowercase) in mydestination? */
    int (*is_local)(void *context, const char *domain);
    /* find_addr - transport_maps entry for the full address */
    int (*find_addr)(void *context, const char *address, const char **value);
    /* find_fixed - transport_maps entry for exactly key */
    int (*find_fixed)(void *context, const char *key, const char **value);
    void *context;
    /* find_sender_addr - sender_dependent_relayhost_maps entry for the
       sender address (or "<>"); NULL: no such table (find_sender_fixed
       is then not called either) */
    int (*find_sender_addr)(void *context, const char *sender,
                            const char **value);
    /* find_sender_fixed - sender_dependent_relayhost_maps entry for
       exactly key ("@domain") */
    int (*find_sender_fixed)(void *context, const char *key,
                             const char **value);
    /* is_virtual - is domain (lowercase) in virtual_alias_domains? NULL:
       there are none */
    int (*is_virtual)(void *context, const char *domain);
    /* is_mailbox - is domain (lowercase) in virtual_mailbox_domains?
       NULL: there are none */
    int (*is_mailbox)(void *context, const char *domain);
} QMGR_ROUTE_TABLES;

typedef enum QMGR_ROUTE_STATUS {
    QMGR_ROUTE_OK,
    QMGR_ROUTE_LOCAL_FAILED, /* mydestination lookup failed */
    QMGR_ROUTE_TABLE_FAILED, /* transport table lookup failed */
    QMGR_ROUTE_SENDER_FAILED, /* sender_dependent_relayhost_maps failed */
    QMGR_ROUTE_VIRTUAL_FAILED, /* virtual_alias_domains lookup failed */
    QMGR_ROUTE_VIRTUAL_UNKNOWN, /* an unmapped virtual alias address */
    QMGR_ROUTE_MAILBOX_FAILED, /* virtual_mailbox_domains lookup failed */
} QMGR_ROUTE_STATUS;

/* qmgr_route - route address of a message from sender ("" the null
   sender): QMGR_ROUTE_OK with transport and nexthop set, or why it cannot
   be routed now */
extern QMGR_ROUTE_STATUS qmgr_route(const QMGR_ROUTE_CONF *conf,
                                    const QMGR_ROUTE_TABLES *tables,
                                    const char *sender, const char *address,
                                    VSTR *transport, VSTR *nexthop);

#endif
