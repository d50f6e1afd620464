/*
 * smtpd_milter - smtpd's milter client (smtpd_milters)
 *
 * Each session has its own connection to each milter, made at the
 * client's connect event (as Postfix does). An SMTP event (connect, HELO,
 * MAIL, RCPT, DATA, the end of the message) is a list of packets
 * (global/milter.h) that goes to each milter in turn: a packet the milter
 * asked to skip is not sent, one it answers is answered before the next
 * goes, and the first milter that does not say continue decides (reject,
 * tempfail, a reply code, discard). A milter that says accept hears no
 * more of the message (or of the session, at connect and HELO).
 *
 * Everything is in the event loop: while a session waits for a milter
 * the other sessions of the process go on. A milter that cannot be
 * reached, breaks the protocol, or is silent past milter_connect_timeout
 * (connecting and negotiating), milter_command_timeout (connect, HELO,
 * MAIL, RCPT, DATA) or milter_content_timeout (headers, body, end of
 * message) is dropped for the rest of the session and
 * milter_default_action applies to the event (tempfail: 451, reject:
 * 550, accept: go on without it).
 *
 * Modifications the milters ask for at the end of the message (add,
 * insert, change or delete a header, replace the body) are collected
 * (global/milter_edit.h) and applied by smtpd_milters_apply() to the
 * message smtpd holds; smtpd then
 * hands the result to cleanup, after the recipients they added
 * (smtpd_milters_rcpts: cleanup has had no content yet). Deleting a
 * recipient and changing the sender are not offered in the negotiation
 * (cleanup has them already), so a milter that needs them is told so by
 * libmilter.
 *
 * The modifications are bounded as the client's message is: the replaced
 * body, the header changes and the added recipients together by
 * message_size_limit, each header change by header_size_limit. Past a bound the rest of the milter's
 * changes are read and dropped, and the message is refused with 552 5.3.4
 * (permanent, as Postfix's cleanup answers a message file that grew too
 * big); cleanup then drops its partial file, so nothing is queued.
 *
 * The message is in memory once, in smtpd's copy: its BODY packets are
 * framed from that copy one at a time as they are sent, and body packets
 * a milter does not answer wait in its output at most
 * SMTPD_MILTER_OUT_MAX bytes at a time.
 */
#include "sys_defs.h"

#include <netdb.h>
#include <stdarg.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "argv.h"
#include "mail_conf.h"
#include "milter.h"
#include "milter_edit.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtpd.h"
#include "vstr.h"

/* One milter as main.cf names it, resolved once. */
typedef struct SMTPD_MILTER_ADDR {
    char *spec; /* as written, for logs */
    struct sockaddr_storage sa;
    socklen_t salen;
} SMTPD_MILTER_ADDR;

struct SMTPD_MILTER_CONF {
    SMTPD_MILTER_ADDR *addrs;
    size_t count;
    MILTER_DEFAULT default_action;
    int connect_timeout; /* seconds */
    int command_timeout;
    int content_timeout;
    size_t message_size_limit; /* 0: none */
    size_t header_size_limit;
};

/* A session's connection to one milter. */
typedef struct SMTPD_MILTER {
    const SMTPD_MILTER_ADDR *addr;
    struct bufferevent *bev; /* NULL until connected, or once dead */
    bool connecting; /* connect or OPTNEG in progress */
    bool ready; /* negotiated */
    bool dead; /* failed: skipped for the rest of the session */
    bool accepted_conn; /* said accept at connect or HELO */
    bool accepted_msg; /* said accept for this message */
    bool in_msg; /* heard MAIL: an ABORT ends the transaction */
    bool waiting; /* a reply is due */
    bool draining; /* body packets it need not answer fill its output */
    uint32_t actions; /* negotiated */
    uint32_t steps;
    struct SMTPD_MILTERS *set;
} SMTPD_MILTER;

/* One packet of the event in progress: in event, or (a BODY packet) a
   piece of the caller's message, framed only when it is sent, so the
   message is not held a second time. */
typedef struct SMTPD_MILTER_PKT {
    int cmd;
    size_t off; /* into event */
    size_t len; /* the whole packet */
    const char *src; /* BODY: LF-ended text, or NULL */
    size_t src_len;
} SMTPD_MILTER_PKT;

struct SMTPD_MILTERS {
    const SMTPD_MILTER_CONF *conf;
    struct event_base *base;
    SMTPD_MILTER *milters;
    size_t count;
    /* The event in progress. */
    SMTPD_MILTER_STAGE stage;
    VSTR *event;
    VSTR *piece; /* a BODY packet's data, CR LF line endings */
    VSTR *framed; /* a BODY packet as it is sent */
    SMTPD_MILTER_PKT *pkts;
    size_t pkt_count;
    size_t pkt_cap;
    size_t cur; /* the milter */
    size_t next; /* its next packet */
    bool running;
    SMTPD_MILTER_DONE done;
    void *arg;
    VSTR *reply; /* the REPLY text */
    VSTR *why;
    /* Modifications of the end of message. */
    MILTER_EDIT *edit; /* header changes, the new body */
    const char *too_big; /* the bound they crossed, or NULL */
    ARGV *rcpts; /* recipients added */
    VSTR *quarantine; /* the reason; NULL: not quarantined */
};

#define SMTPD_MILTER_OUT_MAX (4 * MILTER_CHUNK_MAX) /* unanswered output */

static void smtpd_milters_step(SMTPD_MILTERS *ms);

/* smtpd_milter_conf - smtpd_milters and its companions; NULL when the
   list is empty. A bad address is fatal (sluice check reports it). */
SMTPD_MILTER_CONF *smtpd_milter_conf(const MAIL_CONF *conf)
{
    ARGV *list = mail_conf_list(conf, "smtpd_milters");
    SMTPD_MILTER_CONF *mc;
    VSTR *why = vstr_alloc(100);

    if (list->argc == 0) {
        argv_free(list);
        vstr_free(why);
        return NULL;
    }
    mc = mycalloc(1, sizeof(*mc));
    mc->addrs = mycalloc(list->argc, sizeof(*mc->addrs));
    if (milter_default_parse(mail_conf_str(conf, "milter_default_action"),
                             &mc->default_action) < 0)
        msg_fatal("milter_default_action: unknown action \"%s\" (tempfail,"
                  " accept or reject)",
                  mail_conf_str(conf, "milter_default_action"));
    mc->connect_timeout = (int) mail_conf_time(conf, "milter_connect_timeout");
    mc->command_timeout = (int) mail_conf_time(conf, "milter_command_timeout");
    mc->content_timeout = (int) mail_conf_time(conf, "milter_content_timeout");
    mc->message_size_limit =
        (size_t) mail_conf_size(conf, "message_size_limit");
    mc->header_size_limit = (size_t) mail_conf_size(conf, "header_size_limit");
    for (size_t i = 0; i < list->argc; i++) {
        SMTPD_MILTER_ADDR *ma = mc->addrs + mc->count;
        MILTER_ADDR addr;

        /* A bad or unknown address is logged; that milter then fails
           each session's connect (milter_default_action), never the
           daemon (a crash loop would leave every client without a
           greeting). */
        ma->spec = mystrdup(list->argv[i]);
        if (milter_addr_parse(list->argv[i], &addr, why) < 0) {
            msg_warn("smtpd_milters: %s", vstr_str(why));
        } else if (addr.is_unix) {
            struct sockaddr_un *sun = (struct sockaddr_un *) &ma->sa;

            if (strlen(addr.path) >= sizeof(sun->sun_path)) {
                msg_warn("smtpd_milters: %s: path too long", ma->spec);
            } else {
                sun->sun_family = AF_UNIX;
                memcpy(sun->sun_path, addr.path, strlen(addr.path) + 1);
                ma->salen = sizeof(*sun);
            }
        } else {
            struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
            struct addrinfo *res;
            int err;

            /* Once, at start: a name is looked up as the resolver
               library does (/etc/hosts first). */
            if ((err = getaddrinfo(addr.host, addr.port, &hints, &res)) != 0) {
                msg_warn("smtpd_milters: %s: %s", ma->spec, gai_strerror(err));
            } else {
                memcpy(&ma->sa, res->ai_addr, res->ai_addrlen);
                ma->salen = res->ai_addrlen;
                freeaddrinfo(res);
            }
        }
        milter_addr_free(&addr);
        mc->count++;
    }
    argv_free(list);
    vstr_free(why);
    return mc;
}

/* smtpd_milter_conf_free - the configuration; NULL */
SMTPD_MILTER_CONF *smtpd_milter_conf_free(SMTPD_MILTER_CONF *mc)
{
    if (mc == NULL)
        return NULL;
    for (size_t i = 0; i < mc->count; i++)
        myfree(mc->addrs[i].spec);
    myfree(mc->addrs);
    myfree(mc);
    return NULL;
}

/* smtpd_milter_edit_alloc - an empty list of changes, bounded as the
   client's message is */
static MILTER_EDIT *smtpd_milter_edit_alloc(const SMTPD_MILTER_CONF *mc)
{
    MILTER_EDIT *edit = milter_edit_alloc(mc->message_size_limit);

    milter_edit_header_limit(edit, mc->header_size_limit);
    return edit;
}

/* smtpd_milters_new - a session's milters, not yet connected */
SMTPD_MILTERS *smtpd_milters_new(struct event_base *base,
                                 const SMTPD_MILTER_CONF *mc,
                                 SMTPD_MILTER_DONE done, void *arg)
{
    SMTPD_MILTERS *ms = mycalloc(1, sizeof(*ms));

    ms->conf = mc;
    ms->base = base;
    ms->count = mc->count;
    ms->milters = mycalloc(mc->count, sizeof(*ms->milters));
    for (size_t i = 0; i < mc->count; i++) {
        ms->milters[i].addr = mc->addrs + i;
        ms->milters[i].set = ms;
    }
    ms->event = vstr_alloc(1024);
    ms->piece = vstr_alloc(100);
    ms->framed = vstr_alloc(100);
    ms->reply = vstr_alloc(100);
    ms->why = vstr_alloc(100);
    ms->edit = smtpd_milter_edit_alloc(mc);
    ms->rcpts = argv_alloc(2);
    ms->done = done;
    ms->arg = arg;
    return ms;
}

/* smtpd_milter_close - drop one connection */
static void smtpd_milter_close(SMTPD_MILTER *m)
{
    if (m->bev != NULL)
        bufferevent_free(m->bev);
    m->bev = NULL;
    m->ready = false;
    m->connecting = false;
    m->waiting = false;
    m->draining = false;
}

/* smtpd_milters_free - QUIT to each milter, close; NULL */
SMTPD_MILTERS *smtpd_milters_free(SMTPD_MILTERS *ms)
{
    if (ms == NULL)
        return NULL;
    for (size_t i = 0; i < ms->count; i++) {
        SMTPD_MILTER *m = ms->milters + i;

        if (m->bev != NULL && m->ready && !m->waiting) {
            /* Best effort: the socket is closed right after. */
            VSTR *quit = vstr_alloc(8);

            milter_packet(quit, MILTER_CMD_QUIT, NULL, 0);
            (void) write(bufferevent_getfd(m->bev), vstr_str(quit),
                         vstr_len(quit));
            vstr_free(quit);
        }
        smtpd_milter_close(m);
    }
    myfree(ms->milters);
    myfree(ms->pkts);
    vstr_free(ms->event);
    vstr_free(ms->piece);
    vstr_free(ms->framed);
    vstr_free(ms->reply);
    vstr_free(ms->why);
    milter_edit_free(ms->edit);
    argv_free(ms->rcpts);
    vstr_free(ms->quarantine);
    myfree(ms);
    return NULL;
}

/* smtpd_milters_begin - start building the packets of an event */
void smtpd_milters_begin(SMTPD_MILTERS *ms, SMTPD_MILTER_STAGE stage)
{
    if (ms->running)
        msg_panic("%s: an event is in progress", __func__);
    ms->stage = stage;
    vstr_reset(ms->event);
    ms->pkt_count = 0;
    vstr_reset(ms->reply);
    if (stage == SMTPD_MILTER_EOM) {
        milter_edit_free(ms->edit);
        ms->edit = smtpd_milter_edit_alloc(ms->conf);
        ms->rcpts = argv_free(ms->rcpts);
        ms->rcpts = argv_alloc(2);
        ms->quarantine = vstr_free(ms->quarantine);
        ms->too_big = NULL;
    }
}

/* smtpd_milters_note - remember the packet just appended to the event */
static void smtpd_milters_note(SMTPD_MILTERS *ms, int cmd, size_t off)
{
    if (ms->pkt_count == ms->pkt_cap) {
        ms->pkt_cap = ms->pkt_cap ? ms->pkt_cap * 2 : 16;
        ms->pkts = myrealloc_array(ms->pkts, ms->pkt_cap, sizeof(*ms->pkts));
    }
    ms->pkts[ms->pkt_count].cmd = cmd;
    ms->pkts[ms->pkt_count].off = off;
    ms->pkts[ms->pkt_count].len = vstr_len(ms->event) - off;
    ms->pkts[ms->pkt_count].src = NULL;
    ms->pkts[ms->pkt_count].src_len = 0;
    ms->pkt_count++;
}

/* smtpd_milters_add - one packet of the event (data, len) */
void smtpd_milters_add(SMTPD_MILTERS *ms, int cmd, const char *data, size_t len)
{
    size_t off = vstr_len(ms->event);

    milter_packet(ms->event, cmd, data, len);
    smtpd_milters_note(ms, cmd, off);
}

/* smtpd_milters_macros - a MACRO packet for command cmd: name, value
   pairs ending with NULL; a NULL value leaves its pair out */
void smtpd_milters_macros(SMTPD_MILTERS *ms, int cmd, ...)
{
    VSTR *data = vstr_alloc(100);
    const char *name;
    va_list ap;

    vstr_addch(data, cmd);
    va_start(ap, cmd);
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);

        if (value == NULL)
            continue;
        vstr_cat(data, name);
        vstr_addch(data, 0);
        vstr_cat(data, value);
        vstr_addch(data, 0);
    }
    va_end(ap);
    smtpd_milters_add(ms, MILTER_CMD_MACRO, vstr_str(data), vstr_len(data));
    vstr_free(data);
}

/* smtpd_milters_message - the end-of-message event's packets for content
   (LF line endings: headers, an empty line, the body): each header,
   EOH, the body in pieces with CR LF line endings, then EOM. The body
   pieces point into content, which must stay as it is until the event
   is decided (or cancelled). */
void smtpd_milters_message(SMTPD_MILTERS *ms, const char *content, size_t len,
                           const char *queue_id)
{
    const char *cp = content;
    const char *end = content + len;
    VSTR *hdr = vstr_alloc(256);

    while (cp < end && *cp != '\n') {
        const char *start = cp;
        const char *colon;
        const char *value;

        /* One header: its line and the continuation lines. */
        do {
            const char *nl = memchr(cp, '\n', (size_t) (end - cp));

            cp = nl ? nl + 1 : end;
        } while (cp < end && (*cp == ' ' || *cp == '\t'));
        colon = memchr(start, ':', (size_t) (cp - start));
        if (colon == NULL)
            continue; /* not a header: cleanup's business */
        vstr_reset(hdr);
        vstr_ncat(hdr, start, (size_t) (colon - start));
        vstr_trim(hdr);
        vstr_addch(hdr, 0);
        value = colon + 1;
        while (value < cp && (*value == ' ' || *value == '\t'))
            value++;
        vstr_ncat(hdr, value, (size_t) (cp - value));
        if (vstr_len(hdr) > 0 && vstr_str(hdr)[vstr_len(hdr) - 1] == '\n')
            vstr_truncate(hdr, vstr_len(hdr) - 1);
        vstr_addch(hdr, 0);
        smtpd_milters_add(ms, MILTER_CMD_HEADER, vstr_str(hdr), vstr_len(hdr));
    }
    if (cp < end)
        cp++; /* the empty line */
    smtpd_milters_macros(ms, MILTER_CMD_EOH, "i", queue_id, (char *) NULL);
    smtpd_milters_add(ms, MILTER_CMD_EOH, NULL, 0);
    while (cp < end) {
        const char *start = cp;
        size_t out = 0;

        /* As much as makes at most MILTER_CHUNK_MAX bytes with CR LF. */
        while (cp < end && out < MILTER_CHUNK_MAX - 1)
            out += *cp++ == '\n' ? 2 : 1;
        smtpd_milters_note(ms, MILTER_CMD_BODY, vstr_len(ms->event));
        ms->pkts[ms->pkt_count - 1].src = start;
        ms->pkts[ms->pkt_count - 1].src_len = (size_t) (cp - start);
    }
    smtpd_milters_macros(ms, MILTER_CMD_EOM, "i", queue_id, (char *) NULL);
    smtpd_milters_add(ms, MILTER_CMD_EOM, NULL, 0);
    vstr_free(hdr);
}

/* smtpd_milter_send - write one packet of the event to m */
static void smtpd_milter_send(SMTPD_MILTERS *ms, SMTPD_MILTER *m,
                              const SMTPD_MILTER_PKT *pkt)
{
    if (pkt->src == NULL) {
        bufferevent_write(m->bev, vstr_str(ms->event) + pkt->off, pkt->len);
        return;
    }
    vstr_reset(ms->piece);
    for (size_t i = 0; i < pkt->src_len; i++) {
        if (pkt->src[i] == '\n')
            vstr_addch(ms->piece, '\r');
        vstr_addch(ms->piece, pkt->src[i]);
    }
    vstr_reset(ms->framed);
    milter_packet(ms->framed, MILTER_CMD_BODY, vstr_str(ms->piece),
                  vstr_len(ms->piece));
    bufferevent_write(m->bev, vstr_str(ms->framed), vstr_len(ms->framed));
}

/* smtpd_milter_written - m's output drained: body packets it need not
   answer go on */
static void smtpd_milter_written(struct bufferevent *bev, void *arg)
{
    SMTPD_MILTER *m = arg;
    SMTPD_MILTERS *ms = m->set;

    if (!m->draining)
        return;
    m->draining = false;
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(bev, NULL, NULL);
    if (ms->running && ms->milters + ms->cur == m)
        smtpd_milters_step(ms);
}

/* smtpd_milter_skips - the milter asked not to get cmd */
static bool smtpd_milter_skips(const SMTPD_MILTER *m, int cmd)
{
    switch (cmd) {
    case MILTER_CMD_CONNECT:
        return m->steps & MILTER_P_NOCONNECT;
    case MILTER_CMD_HELO:
        return m->steps & MILTER_P_NOHELO;
    case MILTER_CMD_MAIL:
        return m->steps & MILTER_P_NOMAIL;
    case MILTER_CMD_RCPT:
        return m->steps & MILTER_P_NORCPT;
    case MILTER_CMD_DATA:
        return m->steps & MILTER_P_NODATA;
    case MILTER_CMD_HEADER:
        return m->steps & MILTER_P_NOHDRS;
    case MILTER_CMD_EOH:
        return m->steps & MILTER_P_NOEOH;
    case MILTER_CMD_BODY:
        return m->steps & MILTER_P_NOBODY;
    default:
        return false;
    }
}

/* smtpd_milter_replies - the milter answers cmd */
static bool smtpd_milter_replies(const SMTPD_MILTER *m, int cmd)
{
    switch (cmd) {
    case MILTER_CMD_CONNECT:
        return !(m->steps & MILTER_P_NR_CONN);
    case MILTER_CMD_HELO:
        return !(m->steps & MILTER_P_NR_HELO);
    case MILTER_CMD_MAIL:
        return !(m->steps & MILTER_P_NR_MAIL);
    case MILTER_CMD_RCPT:
        return !(m->steps & MILTER_P_NR_RCPT);
    case MILTER_CMD_DATA:
        return !(m->steps & MILTER_P_NR_DATA);
    case MILTER_CMD_HEADER:
        return !(m->steps & MILTER_P_NR_HDR);
    case MILTER_CMD_EOH:
        return !(m->steps & MILTER_P_NR_EOH);
    case MILTER_CMD_BODY:
        return !(m->steps & MILTER_P_NR_BODY);
    case MILTER_CMD_EOM:
        return true;
    default:
        return false; /* MACRO, ABORT, QUIT */
    }
}

/* smtpd_milter_timeout - the bound on m's answer to cmd */
static void smtpd_milter_timeout(SMTPD_MILTER *m, int seconds)
{
    struct timeval tv = {seconds, 0};

    bufferevent_set_timeouts(m->bev, &tv, &tv);
}

/* smtpd_milter_idle - no reply is due: no timeout either */
static void smtpd_milter_idle(SMTPD_MILTER *m)
{
    m->waiting = false;
    if (m->bev != NULL)
        bufferevent_set_timeouts(m->bev, NULL, NULL);
}

/* smtpd_milters_finish - the event is decided: tell the session */
static void smtpd_milters_finish(SMTPD_MILTERS *ms, SMTPD_MILTER_STATUS status)
{
    ms->running = false;
    if (ms->stage == SMTPD_MILTER_EOM && ms->too_big != NULL &&
        status == SMTPD_MILTER_CONTINUE) {
        vstr_sprintf(ms->reply,
                     "552 5.3.4 Message size exceeds fixed limit (%s, after"
                     " milter changes)",
                     ms->too_big);
        status = SMTPD_MILTER_REPLY;
    }
    if (ms->stage == SMTPD_MILTER_EOM)
        for (size_t i = 0; i < ms->count; i++) {
            /* The message is over: the next one of the session is the
               milters' again, even for one that said accept to this. */
            ms->milters[i].in_msg = false;
            ms->milters[i].accepted_msg = false;
        }
    ms->done(ms->arg, status, vstr_str(ms->reply));
}

/* smtpd_milter_fail - the milter cannot go on: milter_default_action */
static void smtpd_milter_fail(SMTPD_MILTER *m, const char *why)
{
    SMTPD_MILTERS *ms = m->set;
    bool current = ms->running && ms->milters + ms->cur == m;

    msg_warn("milter %s: %s", m->addr->spec, why);
    smtpd_milter_close(m);
    m->dead = true;
    if (!current)
        return;
    switch (ms->conf->default_action) {
    case MILTER_DEFAULT_ACCEPT:
        ms->cur++;
        ms->next = 0;
        smtpd_milters_step(ms);
        return;
    case MILTER_DEFAULT_REJECT:
        smtpd_milters_finish(ms, SMTPD_MILTER_REJECT);
        return;
    case MILTER_DEFAULT_TEMPFAIL:
    default:
        smtpd_milters_finish(ms, SMTPD_MILTER_TEMPFAIL);
        return;
    }
}

/* smtpd_milter_too_big - a change crossed a bound: what was collected is
   dropped, the rest of the changes too, and the message will be refused */
static void smtpd_milter_too_big(SMTPD_MILTERS *ms, SMTPD_MILTER *m)
{
    ms->too_big = milter_edit_exceeded(ms->edit);
    if (ms->too_big == NULL)
        msg_panic("%s: a change refused within the bounds", __func__);
    msg_warn("milter %s: its changes to the message exceed %s: the message"
             " is refused",
             m->addr->spec, ms->too_big);
    milter_edit_free(ms->edit);
    ms->edit = smtpd_milter_edit_alloc(ms->conf);
    ms->rcpts = argv_free(ms->rcpts);
    ms->rcpts = argv_alloc(2);
}

/* smtpd_milter_mod - a modification at the end of the message */
static void smtpd_milter_mod(SMTPD_MILTERS *ms, SMTPD_MILTER *m,
                             const MILTER_REPLY *rep)
{
    switch (rep->cmd) {
    case MILTER_REP_ADDHEADER:
    case MILTER_REP_INSHEADER:
    case MILTER_REP_CHGHEADER:
        if (!(m->actions &
              (rep->cmd == MILTER_REP_CHGHEADER ? MILTER_ACT_CHGHDRS
                                                : MILTER_ACT_ADDHDRS)))
            break;
        if (ms->too_big == NULL &&
            milter_edit_header(ms->edit, rep->cmd, rep->index, rep->name,
                               rep->value) < 0)
            smtpd_milter_too_big(ms, m);
        return;
    case MILTER_REP_ADDRCPT:
        if (!(m->actions & MILTER_ACT_ADDRCPT))
            break;
        if (ms->too_big != NULL)
            return;
        if (milter_edit_reserve(ms->edit, strlen(rep->text) + 1) < 0)
            smtpd_milter_too_big(ms, m);
        else
            argv_add(ms->rcpts, rep->text);
        return;
    case MILTER_REP_QUARANTINE:
        if (!(m->actions & MILTER_ACT_QUARANTINE))
            break;
        if (ms->quarantine == NULL)
            ms->quarantine = vstr_alloc(64);
        /* cleanup logs it: printable, bounded */
        vstr_reset(ms->quarantine);
        for (const char *cp = rep->text; *cp && vstr_len(ms->quarantine) < 200;
             cp++)
            vstr_addch(ms->quarantine,
                       (unsigned char) *cp < 0x20 || (unsigned char) *cp >= 0x7f
                           ? '?'
                           : *cp);
        return;
    case MILTER_REP_REPLBODY:
        if (!(m->actions & MILTER_ACT_CHGBODY))
            break;
        if (ms->too_big == NULL &&
            milter_edit_body(ms->edit, rep->data, rep->len) < 0)
            smtpd_milter_too_big(ms, m);
        return;
    default:
        break;
    }
    msg_warn("milter %s: ignoring a '%c' request (not negotiated or not"
             " supported)",
             m->addr->spec, rep->cmd);
}

/* smtpd_milter_reply - one reply from m */
static void smtpd_milter_reply(SMTPD_MILTER *m, const char *buf, size_t len)
{
    SMTPD_MILTERS *ms = m->set;
    MILTER_REPLY rep;

    if (milter_reply_parse(buf, len, &rep, ms->why) < 0) {
        smtpd_milter_fail(m, vstr_str(ms->why));
        return;
    }
    if (m->connecting) {
        if (rep.cmd != MILTER_REP_OPTNEG) {
            smtpd_milter_fail(m, "no OPTNEG reply");
            return;
        }
        if (rep.version < 2 || rep.version > MILTER_PROTO_VERSION) {
            vstr_sprintf(ms->why, "protocol version %lu",
                         (unsigned long) rep.version);
            smtpd_milter_fail(m, vstr_str(ms->why));
            return;
        }
        if ((rep.steps & ~(uint32_t) MILTER_STEPS_OFFERED) != 0 &&
            (rep.steps & ~(uint32_t) MILTER_STEPS_OFFERED) !=
                MILTER_P_RCPT_REJ) {
            vstr_sprintf(ms->why,
                         "asks for protocol steps 0x%lx we do not"
                         " offer",
                         (unsigned long) rep.steps);
            smtpd_milter_fail(m, vstr_str(ms->why));
            return;
        }
        m->actions = rep.actions & MILTER_ACTIONS_OFFERED;
        m->steps = rep.steps & MILTER_STEPS_OFFERED;
        m->connecting = false;
        m->ready = true;
        smtpd_milter_idle(m);
        smtpd_milters_step(ms);
        return;
    }
    if (!m->waiting || !ms->running || ms->milters + ms->cur != m) {
        smtpd_milter_fail(m, "reply when none was due");
        return;
    }
    switch (rep.cmd) {
    case MILTER_REP_PROGRESS:
        return; /* the timeout starts over with each read */
    case MILTER_REP_CONTINUE:
    case MILTER_REP_SKIP:
        smtpd_milter_idle(m);
        if (rep.cmd == MILTER_REP_SKIP)
            while (ms->next < ms->pkt_count &&
                   ms->pkts[ms->next].cmd == MILTER_CMD_BODY)
                ms->next++;
        smtpd_milters_step(ms);
        return;
    case MILTER_REP_ACCEPT:
        smtpd_milter_idle(m);
        if (ms->stage == SMTPD_MILTER_CONNECT || ms->stage == SMTPD_MILTER_HELO)
            m->accepted_conn = true;
        else
            m->accepted_msg = true;
        ms->cur++;
        ms->next = 0;
        smtpd_milters_step(ms);
        return;
    case MILTER_REP_REJECT:
        smtpd_milter_idle(m);
        smtpd_milters_finish(ms, SMTPD_MILTER_REJECT);
        return;
    case MILTER_REP_TEMPFAIL:
        smtpd_milter_idle(m);
        smtpd_milters_finish(ms, SMTPD_MILTER_TEMPFAIL);
        return;
    case MILTER_REP_DISCARD:
        smtpd_milter_idle(m);
        smtpd_milters_finish(ms, SMTPD_MILTER_DISCARD);
        return;
    case MILTER_REP_REPLYCODE:
        smtpd_milter_idle(m);
        vstr_cpy(ms->reply, rep.text);
        smtpd_milters_finish(ms, SMTPD_MILTER_REPLY);
        return;
    case MILTER_REP_CONN_FAIL:
    case MILTER_REP_SHUTDOWN:
        smtpd_milter_fail(m, "the milter gave up the connection");
        return;
    default:
        if (ms->stage == SMTPD_MILTER_EOM &&
            ms->pkts[ms->next - 1].cmd == MILTER_CMD_EOM) {
            smtpd_milter_mod(ms, m, &rep);
            return;
        }
        vstr_sprintf(ms->why, "reply '%c' out of place", rep.cmd);
        smtpd_milter_fail(m, vstr_str(ms->why));
        return;
    }
}

/* smtpd_milter_read - whole packets from the milter */
static void smtpd_milter_read(struct bufferevent *bev, void *arg)
{
    SMTPD_MILTER *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (m->bev != NULL && evbuffer_get_length(in) >= 4) {
        unsigned char hdr[4];
        long len;
        char *buf;

        evbuffer_copyout(in, hdr, 4);
        if ((len = milter_packet_length(hdr)) < 0) {
            smtpd_milter_fail(m, "bad packet length");
            return;
        }
        if (evbuffer_get_length(in) < 4 + (size_t) len)
            return;
        evbuffer_drain(in, 4);
        buf = mymalloc((size_t) len);
        evbuffer_remove(in, buf, (size_t) len);
        smtpd_milter_reply(m, buf, (size_t) len);
        myfree(buf);
        /* The reply may have ended the session's event, or freed the
           milters (the session closed): the callback frees m->set only
           from outside this loop, see smtpd_milters_done's contract. */
    }
}

/* smtpd_milter_event - connected, or EOF, error, timeout */
static void smtpd_milter_event(struct bufferevent *bev, short what, void *arg)
{
    SMTPD_MILTER *m = arg;

    if (what & BEV_EVENT_CONNECTED) {
        VSTR *optneg = vstr_alloc(32);

        milter_optneg(optneg);
        bufferevent_write(bev, vstr_str(optneg), vstr_len(optneg));
        vstr_free(optneg);
        m->waiting = true;
        return;
    }
    if (what & BEV_EVENT_TIMEOUT)
        smtpd_milter_fail(m, m->connecting ? "timeout while connecting or"
                                             " negotiating"
                                           : "timeout waiting for a reply");
    else if (what & BEV_EVENT_EOF)
        smtpd_milter_fail(m, "connection closed by the milter");
    else
        smtpd_milter_fail(m, m->connecting ? "cannot connect" : "I/O error");
}

/* smtpd_milter_connect - start connecting to m; false when it failed at
   once (m is then dead) */
static bool smtpd_milter_connect(SMTPD_MILTERS *ms, SMTPD_MILTER *m)
{
    if (m->addr->salen == 0) {
        smtpd_milter_fail(m, "unusable address (see the log at smtpd start)");
        return false;
    }
    m->bev = bufferevent_socket_new(ms->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (m->bev == NULL) {
        smtpd_milter_fail(m, "cannot create a bufferevent");
        return false;
    }
    m->connecting = true;
    bufferevent_setcb(m->bev, smtpd_milter_read, smtpd_milter_written,
                      smtpd_milter_event, m);
    smtpd_milter_timeout(m, ms->conf->connect_timeout);
    bufferevent_enable(m->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(m->bev, (struct sockaddr *) &m->addr->sa,
                                   (int) m->addr->salen) < 0) {
        smtpd_milter_fail(m, "cannot connect");
        return false;
    }
    return true;
}

/* smtpd_milter_content - cmd belongs to the message's content */
static bool smtpd_milter_content(int cmd)
{
    return cmd == MILTER_CMD_HEADER || cmd == MILTER_CMD_EOH ||
           cmd == MILTER_CMD_BODY || cmd == MILTER_CMD_EOM;
}

/* smtpd_milters_step - send what can be sent; finish when every milter
   has had the event */
static void smtpd_milters_step(SMTPD_MILTERS *ms)
{
    while (ms->cur < ms->count) {
        SMTPD_MILTER *m = ms->milters + ms->cur;
        const SMTPD_MILTER_PKT *pkt;

        if (m->dead && ms->conf->default_action != MILTER_DEFAULT_ACCEPT) {
            /* Failed earlier in the session: its default action stands
               for every event (no message slips past a broken milter). */
            smtpd_milters_finish(ms, ms->conf->default_action ==
                                             MILTER_DEFAULT_REJECT
                                         ? SMTPD_MILTER_REJECT
                                         : SMTPD_MILTER_TEMPFAIL);
            return;
        }
        if (m->dead || m->accepted_conn ||
            (m->accepted_msg && ms->stage >= SMTPD_MILTER_MAIL)) {
            ms->cur++;
            ms->next = 0;
            continue;
        }
        if (m->bev == NULL) {
            if (!smtpd_milter_connect(ms, m))
                return; /* smtpd_milter_fail went on */
            return; /* OPTNEG's reply steps again */
        }
        if (m->connecting || m->waiting || m->draining)
            return;
        if (ms->next >= ms->pkt_count) {
            ms->cur++;
            ms->next = 0;
            continue;
        }
        pkt = ms->pkts + ms->next++;
        if (smtpd_milter_skips(m, pkt->cmd))
            continue;
        if (pkt->cmd == MILTER_CMD_MAIL)
            m->in_msg = true;
        smtpd_milter_send(ms, m, pkt);
        if (smtpd_milter_replies(m, pkt->cmd)) {
            m->waiting = true;
            smtpd_milter_timeout(m, smtpd_milter_content(pkt->cmd)
                                        ? ms->conf->content_timeout
                                        : ms->conf->command_timeout);
            return;
        }
        if (pkt->src != NULL && evbuffer_get_length(bufferevent_get_output(
                                    m->bev)) > SMTPD_MILTER_OUT_MAX) {
            /* Unanswered body packets: no more than this in memory;
               smtpd_milter_written goes on once it has drained. */
            m->draining = true;
            bufferevent_setwatermark(m->bev, EV_WRITE, MILTER_CHUNK_MAX, 0);
            smtpd_milter_timeout(m, ms->conf->content_timeout);
            return;
        }
    }
    smtpd_milters_finish(ms, SMTPD_MILTER_CONTINUE);
}

/* smtpd_milters_run - send the event; done is called when it is decided
   (maybe before this returns) */
void smtpd_milters_run(SMTPD_MILTERS *ms)
{
    ms->running = true;
    ms->cur = 0;
    ms->next = 0;
    smtpd_milters_step(ms);
}

/* smtpd_milters_cancel - the session no longer waits: a milter whose
   reply is due is dropped (its conversation is out of step) */
void smtpd_milters_cancel(SMTPD_MILTERS *ms)
{
    if (ms == NULL || !ms->running)
        return;
    ms->running = false;
    for (size_t i = 0; i < ms->count; i++) {
        SMTPD_MILTER *m = ms->milters + i;

        if (m->waiting || m->connecting || m->draining) {
            smtpd_milter_close(m);
            m->dead = true;
        }
    }
}

/* smtpd_milters_abort - the transaction ended without its end of
   message: ABORT to the milters that heard its MAIL */
void smtpd_milters_abort(SMTPD_MILTERS *ms)
{
    VSTR *abort_pkt;

    if (ms == NULL || ms->running)
        return;
    abort_pkt = vstr_alloc(8);
    milter_packet(abort_pkt, MILTER_CMD_ABORT, NULL, 0);
    for (size_t i = 0; i < ms->count; i++) {
        SMTPD_MILTER *m = ms->milters + i;

        if (m->in_msg && m->bev != NULL && m->ready && !m->waiting)
            bufferevent_write(m->bev, vstr_str(abort_pkt), vstr_len(abort_pkt));
        m->in_msg = false;
        m->accepted_msg = false;
    }
    vstr_free(abort_pkt);
}

/* smtpd_milters_active - some milter still wants this transaction's
   events (the content is then held for the end of the message) */
bool smtpd_milters_active(const SMTPD_MILTERS *ms)
{
    if (ms == NULL)
        return false;
    for (size_t i = 0; i < ms->count; i++) {
        const SMTPD_MILTER *m = ms->milters + i;

        if (m->dead) {
            if (ms->conf->default_action != MILTER_DEFAULT_ACCEPT)
                return true; /* its default action answers */
            continue;
        }
        if (!m->accepted_conn && !m->accepted_msg)
            return true;
    }
    return false;
}

/* smtpd_milters_rcpts - the recipients the last end of message added,
   as the milters wrote them ("<a@b>" or "a@b") */
const ARGV *smtpd_milters_rcpts(const SMTPD_MILTERS *ms)
{
    return ms->rcpts;
}

/* smtpd_milters_quarantine - the reason a milter quarantined the last
   message, or NULL */
const char *smtpd_milters_quarantine(const SMTPD_MILTERS *ms)
{
    return ms->quarantine ? vstr_str(ms->quarantine) : NULL;
}

/* smtpd_milters_apply - the modifications of the last end of message,
   applied to content (LF line endings) in place; the count of changes */
int smtpd_milters_apply(SMTPD_MILTERS *ms, VSTR *content)
{
    return (int) milter_edit_apply(ms->edit, content);
}
