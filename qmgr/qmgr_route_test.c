/*
 * qmgr_route_test - a table of routing cases
 *
 * The tables are given as data: mydestination a list of domains (or
 * "FAIL": the lookup fails), transport_maps pairs of key and value (a key
 * "FAIL" makes every lookup fail). The full-address lookup is exact here;
 * the address forms of the real tables (user+ext@domain, user@domain) are
 * global/maps.c's and tested there.
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "qmgr_route.h"
#include "vstr.h"

typedef struct TEST_TABLES {
    const char *mydestination; /* space-separated, or "FAIL" */
    const char *const *transport; /* key, value, ..., NULL; NULL: none */
    VSTR *lookups; /* every key looked up, space-separated */
    const char *const *relaymap; /* sender_dependent_relayhost_maps */
    VSTR *sender_lookups; /* every key looked up there */
    const char *virtual_domains; /* as mydestination */
    const char *mailbox_domains; /* virtual_mailbox_domains, the same */
} TEST_TABLES;

/* test_is_local - mydestination of the case */
static int test_is_local(void *context, const char *domain)
{
    TEST_TABLES *tables = context;
    size_t len = strlen(domain);

    if (strcmp(tables->mydestination, "FAIL") == 0)
        return -1;
    for (const char *cp = tables->mydestination; *cp;) {
        size_t n = strcspn(cp, " ");

        if (n == len && strncmp(cp, domain, n) == 0)
            return 1;
        cp += n;
        cp += strspn(cp, " ");
    }
    return 0;
}

/* test_find - transport_maps of the case */
static int test_find(void *context, const char *key, const char **value)
{
    TEST_TABLES *tables = context;

    vstr_sprintf_append(tables->lookups, "%s%s",
                        *vstr_str(tables->lookups) ? " " : "", key);
    for (const char *const *kv = tables->transport; kv[0]; kv += 2) {
        if (strcmp(kv[0], "FAIL") == 0)
            return -1;
        if (strcmp(kv[0], key) == 0) {
            *value = kv[1];
            return 1;
        }
    }
    return 0;
}

/* test_find_sender - sender_dependent_relayhost_maps of the case */
static int test_find_sender(void *context, const char *key, const char **value)
{
    TEST_TABLES *tables = context;

    vstr_sprintf_append(tables->sender_lookups, "%s%s",
                        *vstr_str(tables->sender_lookups) ? " " : "", key);
    for (const char *const *kv = tables->relaymap; kv[0]; kv += 2) {
        if (strcmp(kv[0], "FAIL") == 0)
            return -1;
        if (strcmp(kv[0], key) == 0) {
            *value = kv[1];
            return 1;
        }
    }
    return 0;
}

/* test_is_virtual - virtual_alias_domains of the case */
static int test_is_virtual(void *context, const char *domain)
{
    TEST_TABLES *tables = context;
    TEST_TABLES as_local = {.mydestination = tables->virtual_domains};

    return test_is_local(&as_local, domain);
}

/* test_is_mailbox - virtual_mailbox_domains of the case */
static int test_is_mailbox(void *context, const char *domain)
{
    TEST_TABLES *tables = context;
    TEST_TABLES as_local = {.mydestination = tables->mailbox_domains};

    return test_is_local(&as_local, domain);
}

static const QMGR_ROUTE_CONF conf_direct = {
    .local_transport = "local",
    .default_transport = "smtp",
    .virtual_transport = "virtual",
    .relayhost = "",
    .myhostname = "mx.sluice.test",
};

static const QMGR_ROUTE_CONF conf_relay = {
    .local_transport = "local",
    .default_transport = "smtp",
    .virtual_transport = "virtual",
    .relayhost = "[relay.test]:2525",
    .myhostname = "mx.sluice.test",
};

static const QMGR_ROUTE_CONF conf_feedback = {
    .local_transport = "local",
    .default_transport = "smtp",
    .virtual_transport = "virtual",
    .relayhost = "[relay.test]:2525",
    .myhostname = "mx.sluice.test",
    .verp_domain = "verp.test",
    .unsub_domain = "u.test",
    .complaint_addresses = "fbl@local.test, abuse@fbl.test",
};

static const char *const no_table[] = {NULL};
static const char *const table_wild[] = {"*", "relay:[smart.test]", NULL};
static const char *const table_mixed[] = {
    "vip@example.test",
    "fast:", /* transport only */
    "example.test",
    ":[mx9.test]:26", /* next hop only */
    ".sub.test",
    "error:", /* parents */
    "a.sub.test",
    "", /* empty: keeps both */
    "deep.a.sub.test",
    "smtp:[x.test]", /* exact before parent */
    "user@local.test",
    "lmtp:unix:/s", /* a colon in the next hop */
    "postmaster",
    "bulk:", /* an address without domain */
    NULL,
};
static const char *const table_fail[] = {"FAIL", "", NULL};
static const char *const relay_by_sender[] = {
    "a@corp.test",
    "[corp-relay.test]:587", /* the address */
    "@corp.test",
    "[corp-any.test]", /* then its domain */
    "<>",
    "[bounce-relay.test]", /* the null sender */
    "dunno@corp.test",
    "DUNNO", /* ends the search: relayhost */
    NULL,
};

typedef struct ROUTE_CASE {
    const QMGR_ROUTE_CONF *conf;
    const char *mydestination;
    const char *const *transport; /* NULL: no transport_maps */
    const char *address;
    QMGR_ROUTE_STATUS status;
    const char *want_transport; /* when OK */
    const char *want_nexthop;
    const char *want_lookups; /* transport_maps keys tried, in order */
    /* sender_dependent_relayhost_maps (NULL: none; then sender is
       "s@sender.test" and no sender lookup is made) */
    const char *sender;
    const char *const *relaymap;
    const char *want_sender_lookups;
    const char *virtual_domains; /* as mydestination; NULL: none */
    const char *mailbox_domains; /* the same, virtual_mailbox_domains */
} ROUTE_CASE;

static const ROUTE_CASE route_cases[] = {
    /* DSNs to VERP addresses and complaints go to feedback, before
       mydestination, relayhost and transport_maps; nothing else does. */
    {&conf_feedback, "local.test", table_wild, "bounce+abc@Verp.Test",
     QMGR_ROUTE_OK, "feedback", "verp.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_feedback, "local.test", table_wild, "FBL@local.test", QMGR_ROUTE_OK,
     "feedback", "local.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_feedback, "local.test", NULL, "abuse@fbl.test", QMGR_ROUTE_OK,
     "feedback", "fbl.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_feedback, "local.test", table_wild, "Unsubscribe+abc@U.test",
     QMGR_ROUTE_OK, "feedback", "u.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_feedback, "local.test", NULL, "unsubscribe+abc@verp.test",
     QMGR_ROUTE_OK, "smtp", "[relay.test]:2525", "", NULL, NULL, NULL, NULL,
     NULL},
    {&conf_feedback, "local.test", NULL, "other@verp.test", QMGR_ROUTE_OK,
     "smtp", "[relay.test]:2525", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_feedback, "local.test", NULL, "u@local.test", QMGR_ROUTE_OK, "local",
     "local.test", "", NULL, NULL, NULL, NULL, NULL},
    /* The defaults. */
    {&conf_direct, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "remote.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", NULL, "u@Remote.TEST", QMGR_ROUTE_OK, "smtp",
     "remote.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", NULL, "u@LOCAL.test", QMGR_ROUTE_OK, "local",
     "local.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[relay.test]:2525", "", NULL, NULL, NULL, NULL, NULL},
    /* relayhost is for remote mail only. */
    {&conf_relay, "local.test", NULL, "u@local.test", QMGR_ROUTE_OK, "local",
     "local.test", "", NULL, NULL, NULL, NULL, NULL},
    /* No domain: local, next hop myhostname, even with a relayhost. */
    {&conf_relay, "local.test", NULL, "postmaster", QMGR_ROUTE_OK, "local",
     "mx.sluice.test", "", NULL, NULL, NULL, NULL, NULL},
    /* A quoted '@' is never a route; the last unquoted one is. */
    {&conf_direct, "local.test", NULL, "\"v@outside.test\"", QMGR_ROUTE_OK,
     "local", "mx.sluice.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", NULL, "\"v@outside.test\"@local.test",
     QMGR_ROUTE_OK, "local", "local.test", "", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", NULL, "v%outside.test@local.test",
     QMGR_ROUTE_OK, "local", "local.test", "", NULL, NULL, NULL, NULL, NULL},
    /* A failed mydestination lookup defers; with no domain it is not
       asked. */
    {&conf_direct, "FAIL", NULL, "u@remote.test", QMGR_ROUTE_LOCAL_FAILED, NULL,
     NULL, "", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "FAIL", NULL, "postmaster", QMGR_ROUTE_OK, "local",
     "mx.sluice.test", "", NULL, NULL, NULL, NULL, NULL},

    /* transport_maps: the lookup order and what a value overrides. */
    {&conf_direct, "local.test", table_wild, "u@remote.test", QMGR_ROUTE_OK,
     "relay", "[smart.test]", "u@remote.test remote.test .test *", NULL, NULL,
     NULL, NULL, NULL},
    {&conf_direct, "local.test", table_wild, "u@local.test", QMGR_ROUTE_OK,
     "relay", "[smart.test]", "u@local.test local.test .test *", NULL, NULL,
     NULL, NULL, NULL},
    /* No domain: the full address only, never "*". */
    {&conf_direct, "local.test", table_wild, "postmaster", QMGR_ROUTE_OK,
     "local", "mx.sluice.test", "postmaster", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", table_mixed, "postmaster", QMGR_ROUTE_OK,
     "bulk", "mx.sluice.test", "postmaster", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", table_mixed, "vip@example.test", QMGR_ROUTE_OK,
     "fast", "example.test", "vip@example.test", NULL, NULL, NULL, NULL, NULL},
    {&conf_relay, "local.test", table_mixed, "other@example.test",
     QMGR_ROUTE_OK, "smtp", "[mx9.test]:26", "other@example.test example.test",
     NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", table_mixed, "u@b.sub.test", QMGR_ROUTE_OK,
     "error", "b.sub.test", "u@b.sub.test b.sub.test .sub.test", NULL, NULL,
     NULL, NULL, NULL},
    {&conf_direct, "local.test", table_mixed, "u@a.sub.test", QMGR_ROUTE_OK,
     "smtp", "a.sub.test", "u@a.sub.test a.sub.test", NULL, NULL, NULL, NULL,
     NULL},
    {&conf_direct, "local.test", table_mixed, "u@deep.a.sub.test",
     QMGR_ROUTE_OK, "smtp", "[x.test]", "u@deep.a.sub.test deep.a.sub.test",
     NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", table_mixed, "user@local.test", QMGR_ROUTE_OK,
     "lmtp", "unix:/s", "user@local.test", NULL, NULL, NULL, NULL, NULL},
    {&conf_direct, "local.test", table_mixed, "u@nowhere.test", QMGR_ROUTE_OK,
     "smtp", "nowhere.test", "u@nowhere.test nowhere.test .test *", NULL, NULL,
     NULL, NULL, NULL},
    /* A table that fails defers the recipient. */
    {&conf_direct, "local.test", table_fail, "u@remote.test",
     QMGR_ROUTE_TABLE_FAILED, NULL, NULL, "u@remote.test", NULL, NULL, NULL,
     NULL, NULL},
    /* An empty table is asked, and changes nothing. */
    {&conf_direct, "local.test", no_table, "u@x.test", QMGR_ROUTE_OK, "smtp",
     "x.test", "u@x.test x.test .test *", NULL, NULL, NULL, NULL, NULL},

    /* sender_dependent_relayhost_maps: the sender, then @domain. */
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[corp-relay.test]:587", "", "a@corp.test", relay_by_sender, "a@corp.test",
     NULL, NULL},
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[corp-any.test]", "", "b@corp.test", relay_by_sender,
     "b@corp.test @corp.test", NULL, NULL},
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[corp-any.test]", "", "B@Corp.TEST", relay_by_sender,
     "B@Corp.TEST @corp.test", NULL, NULL},
    /* The null sender is asked as "<>". */
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[bounce-relay.test]", "", "", relay_by_sender, "<>", NULL, NULL},
    /* DUNNO ends the search; no entry keeps relayhost. */
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[relay.test]:2525", "", "dunno@corp.test", relay_by_sender,
     "dunno@corp.test", NULL, NULL},
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[relay.test]:2525", "", "x@other.test", relay_by_sender,
     "x@other.test @other.test", NULL, NULL},
    /* Without relayhost too: it replaces direct delivery. */
    {&conf_direct, "local.test", NULL, "u@remote.test", QMGR_ROUTE_OK, "smtp",
     "[corp-relay.test]:587", "", "a@corp.test", relay_by_sender, "a@corp.test",
     NULL, NULL},
    /* Local mail never asks. */
    {&conf_relay, "local.test", NULL, "u@local.test", QMGR_ROUTE_OK, "local",
     "local.test", "", "a@corp.test", relay_by_sender, "", NULL, NULL},
    /* transport_maps overrides the next hop it names, not the rest. */
    {&conf_relay, "local.test", table_mixed, "other@example.test",
     QMGR_ROUTE_OK, "smtp", "[mx9.test]:26", "other@example.test example.test",
     "a@corp.test", relay_by_sender, "a@corp.test", NULL, NULL},
    {&conf_relay, "local.test", table_mixed, "vip@example.test", QMGR_ROUTE_OK,
     "fast", "[corp-relay.test]:587", "vip@example.test", "a@corp.test",
     relay_by_sender, "a@corp.test", NULL, NULL},
    /* A table that fails defers the recipient. */
    {&conf_relay, "local.test", NULL, "u@remote.test", QMGR_ROUTE_SENDER_FAILED,
     NULL, NULL, "", "a@corp.test", table_fail, "a@corp.test", NULL, NULL},
    /* virtual_alias_domains: an address left there is unknown, whatever
       transport_maps or the sender's relayhost say; mydestination wins. */
    {&conf_relay, "local.test", table_wild, "u@virt.test",
     QMGR_ROUTE_VIRTUAL_UNKNOWN, NULL, NULL, "", "a@corp.test", relay_by_sender,
     "", "virt.test", NULL},
    {&conf_direct, "local.test", NULL, "u@local.test", QMGR_ROUTE_OK, "local",
     "local.test", "", NULL, NULL, NULL, "local.test", NULL},
    {&conf_direct, "local.test", NULL, "u@other.test", QMGR_ROUTE_OK, "smtp",
     "other.test", "", NULL, NULL, NULL, "virt.test", NULL},
    {&conf_direct, "local.test", NULL, "u@virt.test", QMGR_ROUTE_VIRTUAL_FAILED,
     NULL, NULL, "", NULL, NULL, NULL, "FAIL", NULL},
    /* virtual_mailbox_domains: virtual_transport, the domain as next hop,
       even with a relayhost and a sender's relayhost (not asked);
       transport_maps still overrides; mydestination and
       virtual_alias_domains win over it; a failed lookup defers. */
    {&conf_relay, "local.test", NULL, "u@Box.test", QMGR_ROUTE_OK, "virtual",
     "box.test", "", "a@corp.test", relay_by_sender, "", NULL, "box.test"},
    {&conf_direct, "local.test", table_mixed, "u@example.test", QMGR_ROUTE_OK,
     "virtual", "[mx9.test]:26", "u@example.test example.test", NULL, NULL,
     NULL, NULL, "example.test"},
    {&conf_direct, "local.test", NULL, "u@local.test", QMGR_ROUTE_OK, "local",
     "local.test", "", NULL, NULL, NULL, NULL, "local.test"},
    {&conf_direct, "local.test", NULL, "u@virt.test",
     QMGR_ROUTE_VIRTUAL_UNKNOWN, NULL, NULL, "", NULL, NULL, NULL, "virt.test",
     "virt.test"},
    {&conf_direct, "local.test", NULL, "u@other.test", QMGR_ROUTE_OK, "smtp",
     "other.test", "", NULL, NULL, NULL, NULL, "box.test"},
    {&conf_direct, "local.test", NULL, "u@box.test", QMGR_ROUTE_MAILBOX_FAILED,
     NULL, NULL, "", NULL, NULL, NULL, NULL, "FAIL"},
    {&conf_direct, "local.test", NULL, "postmaster", QMGR_ROUTE_OK, "local",
     "mx.sluice.test", "", NULL, NULL, NULL, NULL, "FAIL"},
};

static void test_route_cases(void **state)
{
    (void) state;
    VSTR *transport = vstr_alloc(10);
    VSTR *nexthop = vstr_alloc(10);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(route_cases); i++) {
        const ROUTE_CASE *rc = &route_cases[i];
        TEST_TABLES data = {rc->mydestination,  rc->transport,
                            vstr_alloc(10),     rc->relaymap,
                            vstr_alloc(10),     rc->virtual_domains,
                            rc->mailbox_domains};
        QMGR_ROUTE_TABLES tables = {.is_local = test_is_local,
                                    .context = &data};
        QMGR_ROUTE_STATUS status;

        if (rc->transport) {
            tables.find_addr = test_find;
            tables.find_fixed = test_find;
        }
        if (rc->virtual_domains)
            tables.is_virtual = test_is_virtual;
        if (rc->mailbox_domains)
            tables.is_mailbox = test_is_mailbox;
        if (rc->relaymap) {
            tables.find_sender_addr = test_find_sender;
            tables.find_sender_fixed = test_find_sender;
        }
        vstr_cpy(transport, "junk");
        vstr_cpy(nexthop, "junk");
        status = qmgr_route(rc->conf, &tables,
                            rc->sender ? rc->sender : "s@sender.test",
                            rc->address, transport, nexthop);
        if (status != rc->status)
            fail_msg("case %zu (%s): status %d, want %d", i, rc->address,
                     (int) status, (int) rc->status);
        if (status == QMGR_ROUTE_OK &&
            (strcmp(vstr_str(transport), rc->want_transport) != 0 ||
             strcmp(vstr_str(nexthop), rc->want_nexthop) != 0))
            fail_msg("case %zu (%s): %s:%s, want %s:%s", i, rc->address,
                     vstr_str(transport), vstr_str(nexthop), rc->want_transport,
                     rc->want_nexthop);
        if (strcmp(vstr_str(data.lookups), rc->want_lookups) != 0)
            fail_msg("case %zu (%s): looked up \"%s\", want \"%s\"", i,
                     rc->address, vstr_str(data.lookups), rc->want_lookups);
        if (strcmp(vstr_str(data.sender_lookups),
                   rc->want_sender_lookups ? rc->want_sender_lookups : "") != 0)
            fail_msg("case %zu (%s from %s): sender looked up \"%s\", want "
                     "\"%s\"",
                     i, rc->address, rc->sender, vstr_str(data.sender_lookups),
                     rc->want_sender_lookups);
        vstr_free(data.lookups);
        vstr_free(data.sender_lookups);
    }
    vstr_free(transport);
    vstr_free(nexthop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_cases),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
