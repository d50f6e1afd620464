/*
 * smtpd - the SMTP server: one process, many clients, each message streamed
 * to cleanup
 *
 * Each client is a libevent bufferevent. Every complete command line in
 * the input is handed to the protocol module in order (PIPELINING), and
 * the replies are appended to the output in the same order. After DATA's
 * 354 the bytes that follow are content: they go through the DATA decoder
 * and on to cleanup in chunks of at most CLEANUP_CHUNK_MAX bytes as they
 * arrive, so a large message is never held in memory.
 *
 * Each transaction has a connection to cleanup from its first recipient
 * (HELLO and BEGIN, built by global/cleanup_proto.c, then wait for
 * cleanup's HELLO and the queue ID; a cleanup of another protocol version
 * is logged with both versions and the recipient gets 451). Once cleanup
 * has answered a transaction's END, the session keeps that connection as
 * its spare for SMTPD_CLEANUP_IDLE seconds and the next transaction's
 * BEGIN goes over it (no connect, no accept, no HELLO); a spare that ends
 * meanwhile is just closed, and one that ends before its BEGIN is answered
 * (cleanup closed it as idle or died; nothing of the new message can be
 * committed without our END) is replaced by a new connection. While smtpd
 * waits for cleanup (BEGIN, END) it stops reading that client, so input stays
 * in order and replies cannot overtake one another. The 250 reply to DATA is
 * sent only after cleanup's final STATUS, which cleanup sends only after
 * the queue file and incoming/ are on stable storage. A transaction that
 * ends any other way (RSET, EHLO, QUIT, a lost client, a refused message)
 * just closes its cleanup connection, and cleanup removes the partial file.
 *
 * SPF (smtpd_authentication_checks = spf, reject_spf_fail): when a
 * recipient's evaluation needs the transaction's SPF result and it is not
 * in yet, the session asks the spf service (global/spf_proto.h) in the
 * event loop and waits for it as it waits for cleanup: it reads no more of
 * that client, while every other session of the process goes on. The
 * answer, or the service's failure or silence past spf_lookup_timeout plus
 * a slack (451 4.3.0, never a pass), is stored and the recipient
 * evaluated again.
 *
 * DKIM (smtpd_authentication_checks = dkim): the content, as the client
 * sent it, goes to the same service (global/dkim_proto.h) chunk by chunk
 * beside cleanup's copy. At the end of DATA the session waits for the
 * verdict the same way, then hands cleanup its END with the one
 * Authentication-Results: header (SPF and DKIM results), which cleanup
 * puts before the content at commit. A verifier that fails or is silent
 * past dkim_lookup_timeout plus a slack gives dkim=temperror.
 *
 * Client names (smtpd_peername_lookup, with DNS on): before the greeting
 * the client's address is looked up through global/dns.c, asynchronously
 * (the PTR, then that name's A or AAAA, which must include the address:
 * forward-confirmed, as Postfix does), /etc/hosts first. The name goes to
 * the connect and disconnect lines, the Received: header and cleanup's
 * client_name; without a confirmed name the client is "unknown", and the
 * session remembers whether DNS failed (temporary) or said no. The lookup
 * is bounded by smtpd_peername_lookup_timeout; nothing is read or sent to
 * the client until it ends.
 *
 * Per-client limits (smtpd_client_connection_count_limit, concurrent
 * sessions from one IP address, and smtpd_client_connection_rate_limit,
 * connection attempts per smtpd_client_connection_rate_time_unit) answer
 * 421 4.7.0 and close; clients in smtpd_client_event_limit_exceptions
 * (default $mynetworks, as in Postfix) are exempt. The counts are kept PER
 * SMTPD PROCESS: with several smtpd processes a client may get up to the
 * limit from each. Postfix shares them through its anvil service; a
 * shared counter service is for later.
 *
 * Access control (smtpd_check.c) is configured here once: mydestination,
 * relay_domains, mynetworks and smtpd_client_event_limit_exceptions are
 * match lists (global/match_list.h, so they may hold tables), the five
 * smtpd_*_restrictions lists are compiled and their tables opened, and
 * local_recipient_maps is opened. A bad restriction word or an access or
 * local_recipient_maps table that cannot be opened is logged and answered
 * with 451 where it matters, never fatal: a crash loop would leave every
 * client without a greeting.
 *
 * Stand-alone mode (smtpd -S, which sendmail -bs runs): no master, no
 * listeners; one session on the socket at fd 0 (which is also the output),
 * a local submission (trusted, may relay, origin local, no client
 * address), talking to cleanup as usual; the process exits when the
 * session ends (QUIT or EOF).
 *
 * The modules are listed in smtpd.h.
 */
#include "sys_defs.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "argv.h"
#include "attr.h"
#include "attr_conn.h"
#include "bev_direct.h"
#include "cleanup_proto.h"
#include "conn_stats.h"
#include "dkim_proto.h"
#include "dns.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "maps.h"
#include "match_list.h"
#include "milter.h"
#include "smtp_addr.h"
#include "smtpd.h"
#include "sock.h"
#include "spf_proto.h"
#include "tls_server.h"
#include "vstr.h"

/* Stop reading a client while this much waits to go out to it or to
   cleanup; resume when it has drained. */
#define SMTPD_OUTPUT_HIGH (256 * 1024)
#define SMTPD_CLEANUP_HIGH (4 * CLEANUP_CHUNK_MAX)
/* Input read while cleanup answers (reading stays on then): past this,
   reading stops until the answer */
#define SMTPD_WAIT_INPUT_MAX (64 * 1024)
#define SMTPD_CHUNK_FILL (CLEANUP_CHUNK_MAX - 2) /* decoder may add 2 */
#define SMTPD_STATUS_MAX 4096 /* a cleanup STATUS list */
#define SMTPD_CLEANUP_IDLE 2 /* s a spare cleanup connection is kept */

/* One client IP address, for the per-client limits. */
typedef struct SMTPD_CLIENT {
    char *addr;
    int count; /* sessions open now */
    int rate_count; /* connection attempts in the current window */
    time_t window_start;
} SMTPD_CLIENT;

typedef struct SMTPD_CTX {
    SMTPD_CONF conf;
    /* Per-client counts of this process (linear: the clients of one
       process; entries without sessions are dropped when their window
       ends). */
    SMTPD_CLIENT *clients;
    size_t client_count;
    size_t client_cap;
    MAIL_SERVER *server;
    char *cleanup_path; /* queue_dir/private/cleanup */
    int conn_count;
    struct SMTPD_SESS *sessions; /* every open session, for post_loop */
    bool stand_alone; /* smtpd -S: one session on fd 0, then exit */
    DNS_CTX *dns; /* client name lookups; NULL when they are off */
    int peername_timeout; /* smtpd_peername_lookup_timeout */
    long local_uid; /* smtpd -S: who ran us, before privileges dropped */
    TLS_SERVER *tls; /* NULL: no TLS (none, or no certificate) */
    int starttls_timeout; /* smtpd_starttls_timeout */
    CONN_STATS *conn_stats; /* sessions and TLS for the metrics; NULL:
                               none (smtpd -S, or the file failed) */
} SMTPD_CTX;

/* What the session waits for from cleanup or the spf service; while it
   waits it reads no client input. */
typedef enum SMTPD_WAIT {
    SMTPD_WAIT_NONE,
    SMTPD_WAIT_BEGIN, /* STATUS with the queue ID */
    SMTPD_WAIT_END, /* STATUS after commit */
    SMTPD_WAIT_SPF, /* the spf service's answer (spf_ask) */
    SMTPD_WAIT_DKIM, /* the DKIM verdict, before cleanup's END */
    SMTPD_WAIT_MILTER, /* the milters' verdict (smtpd_milter.c) */
} SMTPD_WAIT;

typedef struct SMTPD_SESS {
    SMTPD_CTX *ctx;
    struct SMTPD_SESS *prev; /* ctx->sessions */
    struct SMTPD_SESS *next;
    struct bufferevent *bev; /* the client (the TLS filter once TLS) */
    /* TLS: bev is then an OpenSSL filter over raw, the socket. */
    struct bufferevent *raw;
    bool handshaking; /* the handshake has not finished */
    bool stats_counted; /* an active connection in ctx->conn_stats */
    bool tls_pending; /* STARTTLS answered: TLS after its line */
    /* Replies held back while the client's pipelined commands are still
       in the input (RFC 2920 section 3.2): sent as one write when the
       input runs out of commands (smtpd_replies_settle). Holding is
       allowed only while hold_depth > 0 (smtpd_process, smtpd_resume). */
    VSTR *held;
    int hold_depth;
    struct event *close_ev; /* TLS close: frees once raw has drained */
    SMTPD_PROTO *proto;
    /* The transaction's connection to cleanup, NULL when none. */
    ATTR_CONN *cleanup;
    bool cleanup_greeted; /* cleanup's HELLO came and was ours */
    bool cleanup_reused; /* BEGIN went over the spare, not yet answered */
    /* Between transactions: cleanup's connection of the last one, kept
       for the next (its END answered, nothing of ours in it), or NULL. */
    ATTR_CONN *cleanup_spare;
    SMTPD_WAIT wait;
    SPF_PROTO_ASK *spf_ask; /* the SPF question in flight, or NULL */
    /* DKIM verification of the message in DATA: dkim_on when it is
       verified, dkim the connection to the verifier (NULL once it
       failed: dkim_why says why), dkim_from the first byte of chunk that
       is the client's (our own headers come before it). */
    bool dkim_on;
    ATTR_CONN *dkim;
    bool dkim_greeted;
    size_t dkim_from;
    VSTR *dkim_why;
    VSTR *auth_results; /* Authentication-Results: for cleanup's END */
    /* Milters (smtpd_milters): the event in progress is for milter_stage,
       and once they let it through, milter_act is done; milter_hold says
       the content is held in milter_msg for the end of the message;
       milter_discard that a milter said discard; milter_sync that the
       event is being started (its verdict then must not read on). */
    SMTPD_MILTERS *milters;
    SMTPD_MILTER_STAGE milter_stage;
    SMTPD_ACT milter_act;
    bool milter_hold;
    bool milter_discard;
    bool milter_sync;
    VSTR *milter_msg;
    VSTR *milter_hold_why; /* a milter's quarantine: END's hold */
    char qid[64]; /* "" until BEGIN succeeded */
    /* Content. */
    bool in_data;
    SMTPD_DATA data;
    VSTR *chunk; /* decoded content not yet sent */
    /* Reading. */
    bool skipping; /* discarding an overlong command line */
    bool output_full; /* reading stopped: the client reads no replies */
    bool cleanup_full; /* reading stopped: cleanup is behind */
    bool closing; /* last reply queued: close when it is out */
    bool counted; /* holds one count in its SMTPD_CLIENT */
    /* Past smtpd_soft_error_limit each command waits before it is
       answered: reading stops while sleep_ev runs (sleeping), and the
       command in hand is then processed without waiting again (slept). */
    struct event *sleep_ev;
    bool sleeping;
    bool slept;
    struct event *deadline_ev; /* smtpd_session_deadline */
    /* The client's name is looked up before the greeting; until then
       nothing is read or sent. peer_status says whether "unknown" is
       final (DNS_PERM) or a DNS failure (DNS_TEMP), as Postfix keeps it
       for reject_unknown_client_hostname. */
    DNS_LOOKUP *peer_lookup;
    DNS_STATUS peer_status;
    VSTR *wire; /* scratch for attribute lists */
    /* While cleanup_hold, lists for cleanup collect in wire
       (cleanup_pending) and go with the next list sent: the message's
       last DATA chunk and its END in one write */
    bool cleanup_hold;
    bool cleanup_pending;
    VSTR *why;
} SMTPD_SESS;

static void smtpd_process(SMTPD_SESS *sess);
static const char *smtpd_state_name(const SMTPD_SESS *sess);
static void smtpd_tls_drained(struct evbuffer *buf,
                              const struct evbuffer_cb_info *info, void *arg);
static void smtpd_session_free(SMTPD_SESS *sess);
static void smtpd_read_event(struct bufferevent *bev, void *arg);
static void smtpd_write_event(struct bufferevent *bev, void *arg);
static void smtpd_event(struct bufferevent *bev, short what, void *arg);

/* smtpd_tls_close_event - the TLS close_notify and the last reply have
   left (or smtpd_timeout passed): free the session */
static void smtpd_tls_close_event(evutil_socket_t fd, short what, void *arg)
{
    smtpd_session_free(arg);
}

/* smtpd_tls_drained - raw output shrank: free the session once it is empty
   (from the event loop, not from inside libevent's write) */
static void smtpd_tls_drained(struct evbuffer *buf,
                              const struct evbuffer_cb_info *info, void *arg)
{
    SMTPD_SESS *sess = arg;

    if (info->orig_size + info->n_added - info->n_deleted == 0 &&
        sess->close_ev != NULL)
        event_active(sess->close_ev, EV_TIMEOUT, 0);
}

/* smtpd_tls_finish - a TLS session whose last reply went into the TLS
   layer: send close_notify, free the session when raw has sent it all.
   False when the session can be freed now. */
static bool smtpd_tls_finish(SMTPD_SESS *sess)
{
    SSL *ssl = bufferevent_openssl_get_ssl(sess->bev);
    struct evbuffer *out = bufferevent_get_output(sess->raw);
    struct timeval limit = {sess->ctx->conf.timeout, 0};

    if (sess->close_ev != NULL)
        return true; /* already waiting */
    if (ssl != NULL && !sess->handshaking && SSL_is_init_finished(ssl)) {
        (void) SSL_shutdown(ssl); /* close_notify, into raw's output */
        ERR_clear_error();
    }
    if (evbuffer_get_length(out) == 0)
        return false;
    if ((sess->close_ev = evtimer_new(mail_server_base(sess->ctx->server),
                                      smtpd_tls_close_event, sess)) == NULL ||
        evtimer_add(sess->close_ev, &limit) < 0)
        return false;
    bufferevent_disable(sess->bev, EV_READ);
    evbuffer_add_cb(out, smtpd_tls_drained, sess);
    return true;
}
static const ATTR_CONN_OPS smtpd_cleanup_ops;
static const ATTR_CONN_OPS smtpd_dkim_ops;

/* smtpd_dkim_close - drop the verifier's connection */
static void smtpd_dkim_close(SMTPD_SESS *sess)
{
    /* maybe from the connection's own callback: attr_conn.h's rule */
    sess->dkim = attr_conn_free(sess->dkim);
    sess->dkim_greeted = false;
}

/* smtpd_replies_write - send the held replies now */
static void smtpd_replies_write(SMTPD_SESS *sess)
{
    VSTR *held = sess->held;

    if (vstr_len(held) == 0)
        return;
    /* Straight to the socket when nothing is queued (not TLS): no EPOLLOUT
       round. Nothing waits for the write callback of a reply but a closing
       session, and smtpd_close triggers that one itself when the output
       is empty. */
    if (bev_direct_write(sess->bev, vstr_str(held), vstr_len(held)) ==
        BEV_DIRECT_ERROR)
        msg_warn("cannot queue a reply to %s[%s]", sess->proto->client_name,
                 sess->proto->client_addr);
    vstr_reset(held);
}

/* smtpd_replies_may_wait - may the held replies wait for more? Only while
   the client has a complete command waiting in the input that will be
   answered without reading more (RFC 2920: a reply may be held only while
   the client's pipelined commands are pending; all of it is sent before
   smtpd waits for input). Across a wait for cleanup only (BEGIN, END: a
   local answer); never in DATA content, under TLS, when closing, or
   when the session has stopped reading for another reason. */
static bool smtpd_replies_may_wait(SMTPD_SESS *sess)
{
    if (sess->closing || sess->raw != NULL || sess->in_data ||
        sess->tls_pending || sess->handshaking || sess->output_full ||
        sess->cleanup_full || sess->sleeping || sess->skipping)
        return false;
    if (sess->wait != SMTPD_WAIT_NONE && sess->wait != SMTPD_WAIT_BEGIN &&
        sess->wait != SMTPD_WAIT_END)
        return false;
    return evbuffer_search(bufferevent_get_input(sess->bev), "\n", 1, NULL)
               .pos >= 0;
}

/* smtpd_replies_settle - send the held replies unless they may wait */
static void smtpd_replies_settle(SMTPD_SESS *sess)
{
    if (vstr_len(sess->held) > 0 &&
        (sess->wait == SMTPD_WAIT_NONE || !smtpd_replies_may_wait(sess)))
        smtpd_replies_write(sess);
}

/* smtpd_flush_reply - queue the protocol's reply text for the client:
   held (smtpd_process or smtpd_resume settle it) or sent now */
static void smtpd_flush_reply(SMTPD_SESS *sess)
{
    VSTR *reply = sess->proto->reply;

    vstr_ncat(sess->held, vstr_str(reply), vstr_len(reply));
    vstr_reset(reply);
    if (sess->hold_depth == 0 || !smtpd_replies_may_wait(sess))
        smtpd_replies_write(sess);
}

/* smtpd_cleanup_close - drop the cleanup connection (cleanup then removes
   any partial file) */
static void smtpd_cleanup_close(SMTPD_SESS *sess)
{
    /* maybe from the connection's own callback: attr_conn.h's rule */
    sess->cleanup = attr_conn_free(sess->cleanup);
    sess->cleanup_greeted = false;
    sess->cleanup_hold = sess->cleanup_pending = false;
    smtpd_dkim_close(sess); /* the transaction is over */
    sess->dkim_on = false;
    if (sess->wait == SMTPD_WAIT_BEGIN || sess->wait == SMTPD_WAIT_END ||
        sess->wait == SMTPD_WAIT_DKIM)
        sess->wait = SMTPD_WAIT_NONE;
    sess->qid[0] = 0;
}

/* smtpd_cleanup_park - cleanup answered the transaction's END: keep its
   connection as the spare for the next transaction, for a while (cleanup
   is then in its idle state: it takes a new BEGIN) */
static void smtpd_cleanup_park(SMTPD_SESS *sess)
{
    ATTR_CONN *conn = sess->cleanup;

    if (conn == NULL || !sess->cleanup_greeted ||
        attr_conn_input_len(conn) > 0 || sess->cleanup_spare != NULL) {
        smtpd_cleanup_close(sess);
        return;
    }
    sess->cleanup = NULL;
    smtpd_cleanup_close(sess); /* the rest of the transaction's state */
    sess->cleanup_spare = conn;
    attr_conn_timeouts(conn, SMTPD_CLEANUP_IDLE, sess->ctx->conf.timeout);
}

/* smtpd_cleanup_unpark - close the spare connection */
static void smtpd_cleanup_unpark(SMTPD_SESS *sess)
{
    /* maybe from the connection's own callback: attr_conn.h's rule */
    sess->cleanup_spare = attr_conn_free(sess->cleanup_spare);
}

/* smtpd_cleanup_send - encode and queue one list to cleanup */
static void smtpd_cleanup_send(SMTPD_SESS *sess, ATTR_LIST *list)
{
    if (!sess->cleanup_pending)
        vstr_reset(sess->wire);
    attr_list_encode(list, sess->wire);
    attr_list_free(list);
    if (sess->cleanup_hold && sess->cleanup != NULL) {
        sess->cleanup_pending = true;
        return;
    }
    sess->cleanup_pending = false;
    if (sess->cleanup != NULL)
        attr_conn_send_wire(sess->cleanup, sess->wire);
}

/* smtpd_cleanup_release - send what cleanup_hold kept back */
static void smtpd_cleanup_release(SMTPD_SESS *sess)
{
    sess->cleanup_hold = false;
    if (sess->cleanup_pending) {
        sess->cleanup_pending = false;
        if (sess->cleanup != NULL)
            attr_conn_send_wire(sess->cleanup, sess->wire);
    }
}

/* smtpd_client_find - the entry of addr, made when absent; stale entries
   (no session, window over) are dropped on the way */
static SMTPD_CLIENT *smtpd_client_find(SMTPD_CTX *ctx, const char *addr,
                                       time_t now)
{
    time_t unit = ctx->conf.client_connection_rate_time_unit;
    SMTPD_CLIENT *found = NULL;
    size_t i = 0;

    while (i < ctx->client_count) {
        SMTPD_CLIENT *client = ctx->clients + i;

        if (strcmp(client->addr, addr) == 0) {
            found = client;
            i++;
        } else if (client->count == 0 && now - client->window_start >= unit) {
            myfree(client->addr);
            *client = ctx->clients[--ctx->client_count];
            if (found == ctx->clients + ctx->client_count)
                found = client; /* it moved into this slot */
        } else {
            i++;
        }
    }
    if (found != NULL)
        return found;
    if (ctx->client_count == ctx->client_cap) {
        ctx->client_cap = ctx->client_cap ? ctx->client_cap * 2 : 16;
        ctx->clients = myrealloc_array(ctx->clients, ctx->client_cap,
                                       sizeof(*ctx->clients));
    }
    found = ctx->clients + ctx->client_count++;
    found->addr = mystrdup(addr);
    found->count = 0;
    found->rate_count = 0;
    found->window_start = now;
    return found;
}

/* smtpd_client_admit - count a new connection from addr; NULL, or the
   421 reply text when it is over a limit */
static const char *smtpd_client_admit(SMTPD_CTX *ctx, const char *addr,
                                      VSTR *reply)
{
    const SMTPD_CONF *sc = &ctx->conf;
    SMTPD_CLIENT *client;
    time_t now = time(NULL);

    if (sc->client_connection_count_limit <= 0 &&
        sc->client_connection_rate_limit <= 0)
        return NULL;
    if (sc->event_limit_exceptions != NULL &&
        match_list_match(sc->event_limit_exceptions, addr) == 1)
        return NULL;
    client = smtpd_client_find(ctx, addr, now);
    if (now - client->window_start >= sc->client_connection_rate_time_unit) {
        client->window_start = now;
        client->rate_count = 0;
    }
    client->rate_count++; /* attempts: a refused one counts too */
    if (sc->client_connection_count_limit > 0 &&
        client->count >= sc->client_connection_count_limit) {
        msg_warn("Connection concurrency limit exceeded: %d from unknown[%s]"
                 " for service %s",
                 client->count + 1, addr, mail_server_service(ctx->server));
        vstr_sprintf(reply,
                     "421 4.7.0 %s Error: too many connections from"
                     " %s\r\n",
                     sc->myhostname, addr);
        return vstr_str(reply);
    }
    if (sc->client_connection_rate_limit > 0 &&
        client->rate_count > sc->client_connection_rate_limit) {
        msg_warn("Connection rate limit exceeded: %d from unknown[%s] for"
                 " service %s",
                 client->rate_count, addr, mail_server_service(ctx->server));
        vstr_sprintf(reply,
                     "421 4.7.0 %s Error: too many connections from"
                     " %s in %d seconds\r\n",
                     sc->myhostname, addr,
                     sc->client_connection_rate_time_unit);
        return vstr_str(reply);
    }
    client->count++;
    return NULL;
}

/* smtpd_client_release - a counted session from addr ended */
static void smtpd_client_release(SMTPD_CTX *ctx, const char *addr)
{
    for (size_t i = 0; i < ctx->client_count; i++) {
        if (strcmp(ctx->clients[i].addr, addr) == 0) {
            if (ctx->clients[i].count > 0)
                ctx->clients[i].count--;
            return;
        }
    }
}

/* smtpd_session_free - close the client and whatever it had in hand */
static void smtpd_session_free(SMTPD_SESS *sess)
{
    SMTPD_CTX *ctx = sess->ctx;
    VSTR *counts = vstr_alloc(100);

    smtpd_cleanup_close(sess);
    smtpd_cleanup_unpark(sess);
    sess->spf_ask = spf_proto_ask_cancel(sess->spf_ask);
    sess->milters = smtpd_milters_free(sess->milters);
    if (sess->peer_lookup != NULL)
        dns_lookup_cancel(sess->peer_lookup);
    if (sess->counted)
        smtpd_client_release(ctx, sess->proto->client_addr);
    if (sess->stats_counted)
        conn_stats_disconnect(ctx->conn_stats);
    smtpd_proto_counts(sess->proto, counts);
    msg_info("disconnect from %s[%s]%s", sess->proto->client_name,
             sess->proto->client_addr, vstr_str(counts));
    vstr_free(counts);
    if (sess->prev)
        sess->prev->next = sess->next;
    else
        ctx->sessions = sess->next;
    if (sess->next)
        sess->next->prev = sess->prev;
    if (sess->sleep_ev != NULL)
        event_free(sess->sleep_ev);
    if (sess->deadline_ev != NULL)
        event_free(sess->deadline_ev);
    if (sess->close_ev != NULL)
        event_free(sess->close_ev);
    if (sess->raw != NULL)
        evbuffer_remove_cb(bufferevent_get_output(sess->raw), smtpd_tls_drained,
                           sess);
    bufferevent_free(sess->bev); /* a TLS filter frees raw with it */
    smtpd_proto_free(sess->proto);
    vstr_free(sess->chunk);
    vstr_free(sess->dkim_why);
    vstr_free(sess->auth_results);
    vstr_free(sess->milter_msg);
    vstr_free(sess->milter_hold_why);
    vstr_free(sess->wire);
    vstr_free(sess->why);
    vstr_free(sess->held);
    myfree(sess);
    if (ctx->conn_count-- == ctx->conf.process_connection_limit)
        mail_server_busy(ctx->server, false);
    if (ctx->conn_count == 0 &&
        (ctx->stand_alone || mail_server_retiring(ctx->server)))
        mail_server_exit(ctx->server, 0);
}

/* smtpd_close - send what is queued, then close. The session is freed
   from the write callback, never here, so callers may still use it. */
static void smtpd_close(SMTPD_SESS *sess)
{
    smtpd_replies_write(sess);
    sess->closing = true;
    smtpd_cleanup_close(sess);
    smtpd_cleanup_unpark(sess);
    sess->spf_ask = spf_proto_ask_cancel(sess->spf_ask);
    if (sess->wait == SMTPD_WAIT_SPF)
        sess->wait = SMTPD_WAIT_NONE;
    smtpd_milters_cancel(sess->milters);
    if (sess->wait == SMTPD_WAIT_MILTER)
        sess->wait = SMTPD_WAIT_NONE;
    bufferevent_disable(sess->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(sess->bev)) == 0)
        bufferevent_trigger(sess->bev, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS |
                                BEV_TRIG_DEFER_CALLBACKS);
}

/* smtpd_read_on - read and process again unless something still stops it */
static void smtpd_read_on(SMTPD_SESS *sess)
{
    if (sess->closing || sess->wait != SMTPD_WAIT_NONE || sess->output_full ||
        sess->cleanup_full || sess->sleeping)
        return;
    bufferevent_enable(sess->bev, EV_READ);
    smtpd_process(sess);
}

/* smtpd_wait - process no input until cleanup answers. Reading stays on
   (no epoll_ctl per wait) on a plain socket: what arrives meanwhile waits
   in the input (smtpd_read_event bounds it), an EOF or error is noticed
   again when reading goes on (smtpd_event). Under TLS reading stops. */
static void smtpd_wait(SMTPD_SESS *sess, SMTPD_WAIT what)
{
    sess->wait = what;
    if (sess->raw != NULL)
        bufferevent_disable(sess->bev, EV_READ);
    attr_conn_timeouts(sess->cleanup, sess->ctx->conf.timeout,
                       sess->ctx->conf.timeout);
}

/* smtpd_resume - cleanup answered: go on with the input in hand */
static void smtpd_resume(SMTPD_SESS *sess, SMTPD_ACT act)
{
    sess->wait = SMTPD_WAIT_NONE;
    if (sess->cleanup != NULL)
        attr_conn_timeouts(sess->cleanup, 0, sess->ctx->conf.timeout);
    sess->hold_depth++; /* the commands in hand are answered together */
    smtpd_flush_reply(sess);
    if (act == SMTPD_ACT_CLOSE) {
        sess->hold_depth--;
        smtpd_close(sess);
        return;
    }
    smtpd_read_on(sess);
    sess->hold_depth--;
    smtpd_replies_settle(sess);
}

/* smtpd_cleanup_begin - connect to cleanup and send BEGIN; false when
   cleanup cannot be reached */
static bool smtpd_cleanup_begin(SMTPD_SESS *sess)
{
    SMTPD_CTX *ctx = sess->ctx;
    SMTPD_PROTO *proto = sess->proto;
    CLEANUP_BEGIN begin = {
        .flags = (proto->body_8bit ? CLEANUP_FLAG_8BIT : 0) |
                 (proto->local ? CLEANUP_FLAG_LOCAL : 0),
        .sender = vstr_str(proto->sender),
        .origin = proto->local ? CLEANUP_ORIGIN_LOCAL : CLEANUP_ORIGIN_SMTP,
        .client_name = proto->local ? NULL : proto->client_name,
        .client_addr = proto->local ? NULL : proto->client_addr,
        .helo_name = proto->helo_name,
        .protocol = smtpd_proto_protocol(proto),
        .size = proto->size,
        .ret = proto->ret,
        .envid = proto->envid,
        .sasl_username = proto->sasl_username,
    };

    if (sess->cleanup_spare != NULL) {
        /* cleanup answered our last END and waits for the next BEGIN. */
        sess->cleanup = sess->cleanup_spare;
        sess->cleanup_spare = NULL;
        sess->cleanup_greeted = true;
        sess->cleanup_reused = true;
        attr_conn_timeouts(sess->cleanup, 0, ctx->conf.timeout);
        smtpd_cleanup_send(sess, cleanup_begin_list(&begin));
        return true;
    }
    sess->cleanup_reused = false;
    /* A local stream connect: it completes or fails at once. */
    if ((sess->cleanup = attr_conn_connect(
             mail_server_base(ctx->server), ctx->cleanup_path, SMTPD_STATUS_MAX,
             &smtpd_cleanup_ops, sess, sess->why)) == NULL) {
        msg_warn("%s", vstr_str(sess->why));
        return false;
    }
    /* The drain callback runs when cleanup has taken our backlog. */
    attr_conn_drain_mark(sess->cleanup, CLEANUP_CHUNK_MAX);
    attr_conn_timeouts(sess->cleanup, 0, ctx->conf.timeout);
    /* Our HELLO first; cleanup's is checked when it comes. */
    smtpd_cleanup_send(sess, cleanup_hello_list());
    smtpd_cleanup_send(sess, cleanup_begin_list(&begin));
    return sess->cleanup != NULL;
}

/* smtpd_cleanup_rcpt - send the recipient the protocol just accepted */
static void smtpd_cleanup_rcpt(SMTPD_SESS *sess)
{
    SMTPD_PROTO *proto = sess->proto;
    CLEANUP_RCPT rcpt = {
        .address = vstr_str(proto->rcpt),
        .orcpt = vstr_str(proto->orcpt),
        .notify = vstr_str(proto->notify),
    };

    bool hold = sess->cleanup_hold;

    /* cleanup answers no RCPT: it goes with the next list (the content,
       END, or an abort), so cleanup wakes once for the recipients and the
       content, not once more per recipient. Whatever ends the transaction
       first either sends a list (which takes it) or closes the
       connection (which drops it with the transaction). */
    sess->cleanup_hold = true;
    smtpd_cleanup_send(sess, cleanup_rcpt_list(&rcpt));
    sess->cleanup_hold = hold;
}

/* smtpd_content_refused - the content will not be queued, whatever comes */
static bool smtpd_content_refused(const SMTPD_SESS *sess)
{
    return sess->data.too_big ||
           (sess->data.bare_lf && sess->ctx->conf.forbid_bare_newline);
}

/* smtpd_chunk_flush - send the decoded content in hand to cleanup, and
   the client's part of it to the DKIM verifier */
static void smtpd_chunk_flush(SMTPD_SESS *sess)
{
    if (smtpd_content_refused(sess))
        smtpd_cleanup_close(sess); /* nothing more to keep */
    if (sess->dkim != NULL && vstr_len(sess->chunk) > sess->dkim_from) {
        ATTR_LIST *list =
            dkim_data_list(vstr_str(sess->chunk) + sess->dkim_from,
                           vstr_len(sess->chunk) - sess->dkim_from);

        attr_conn_send(sess->dkim, list);
        attr_list_free(list);
    }
    sess->dkim_from = 0;
    if (sess->milter_hold) {
        /* The milters see the whole message before cleanup gets it. */
        if (!smtpd_content_refused(sess))
            vstr_ncat(sess->milter_msg, vstr_str(sess->chunk),
                      vstr_len(sess->chunk));
        vstr_reset(sess->chunk);
        return;
    }
    if (vstr_len(sess->chunk) > 0 && sess->cleanup != NULL)
        smtpd_cleanup_send(sess, cleanup_data_list(vstr_str(sess->chunk),
                                                   vstr_len(sess->chunk)));
    vstr_reset(sess->chunk);
}

static void smtpd_dkim_begin(SMTPD_SESS *sess);

/* smtpd_data_start - 354 was queued: the Received: header goes first */
static void smtpd_data_start(SMTPD_SESS *sess)
{
    sess->in_data = true;
    smtpd_data_init(&sess->data, sess->ctx->conf.message_size_limit);
    vstr_reset(sess->chunk);
    smtpd_auth_headers(sess->proto, sess->chunk);
    smtpd_proto_received(sess->proto, sess->qid, time(NULL), sess->chunk);
    sess->dkim_from = vstr_len(sess->chunk);
    if ((sess->dkim_on = smtpd_dkim_wanted(sess->proto)))
        smtpd_dkim_begin(sess);
    vstr_reset(sess->milter_msg);
    sess->milter_hold =
        !sess->milter_discard && smtpd_milters_active(sess->milters);
}

/* smtpd_dkim_begin - connect to the verifier and send BEGIN; a verifier
   that cannot be reached leaves dkim NULL with the reason */
static void smtpd_dkim_begin(SMTPD_SESS *sess)
{
    SMTPD_CTX *ctx = sess->ctx;
    VSTR *path = vstr_alloc(100);
    VSTR *spf_domain = vstr_alloc(100);
    DKIM_REQUEST begin = {.kind = DKIM_KIND_BEGIN};
    ATTR_LIST *list;

    vstr_reset(sess->dkim_why);
    mail_queue_service(path, ctx->conf.queue_dir, MAIL_QUEUE_PRIVATE,
                       SPF_SERVICE);
    sess->dkim =
        attr_conn_connect(mail_server_base(ctx->server), vstr_str(path),
                          DKIM_REPLY_MAX, &smtpd_dkim_ops, sess, sess->why);
    if (sess->dkim == NULL) {
        vstr_sprintf(sess->dkim_why,
                     "cannot connect to the spf service at "
                     "%s: %s",
                     vstr_str(path), strerror(errno));
        vstr_free(path);
        vstr_free(spf_domain);
        return;
    }
    vstr_free(path);
    (void) smtpd_dmarc_begin(sess->proto, &begin, spf_domain);
    attr_conn_drain_mark(sess->dkim, CLEANUP_CHUNK_MAX);
    attr_conn_timeouts(sess->dkim, 0, ctx->conf.timeout);
    list = spf_hello_list();
    attr_conn_send(sess->dkim, list);
    attr_list_free(list);
    list = dkim_begin_list(&begin);
    attr_conn_send(sess->dkim, list);
    attr_list_free(list);
    vstr_free(spf_domain);
}

/* smtpd_data_commit - the content is complete (and verified): END to
   cleanup, with the Authentication-Results: header when DKIM made one */
static void smtpd_data_commit(SMTPD_SESS *sess)
{
    CLEANUP_END end = {.abort = false};
    SMTPD_ACT act;

    if (vstr_len(sess->auth_results) > 0)
        end.prepend = vstr_str(sess->auth_results);
    if (vstr_len(sess->milter_hold_why) > 0)
        end.hold = vstr_str(sess->milter_hold_why);
    sess->cleanup_hold = false; /* END goes, with any chunk kept back */
    smtpd_cleanup_send(sess, cleanup_end_list(&end));
    vstr_reset(sess->auth_results);
    vstr_reset(sess->milter_hold_why);
    if (sess->cleanup == NULL) {
        act = smtpd_proto_data_done(sess->proto, SMTPD_DATA_CLEANUP, NULL, 0,
                                    NULL);
        smtpd_flush_reply(sess);
        if (act == SMTPD_ACT_CLOSE)
            smtpd_close(sess);
        return;
    }
    smtpd_wait(sess, SMTPD_WAIT_END);
}

/* smtpd_dkim_verdict - the verifier answered (reply) or failed (NULL,
   why): the header, then cleanup's END; the input in hand after that
   (from_loop: called by the verifier's connection, not by the session's
   own processing) */
static void smtpd_dkim_verdict(SMTPD_SESS *sess, const DKIM_REPLY *reply,
                               const char *why, bool from_loop)
{
    vstr_reset(sess->auth_results);
    smtpd_auth_results(sess->proto, reply, why, sess->auth_results);
    smtpd_dkim_close(sess);
    sess->dkim_on = false;
    sess->wait = SMTPD_WAIT_NONE;
    if (smtpd_dmarc_reject(sess->proto, reply, sess->why)) {
        /* Nothing is queued: cleanup removes the partial file. */
        SMTPD_ACT act;

        vstr_reset(sess->auth_results);
        smtpd_cleanup_close(sess);
        act = smtpd_proto_data_done(sess->proto, SMTPD_DATA_REJECT, NULL, 550,
                                    vstr_str(sess->why));
        smtpd_flush_reply(sess);
        if (act == SMTPD_ACT_CLOSE)
            smtpd_close(sess);
        else if (from_loop)
            smtpd_read_on(sess);
        return;
    }
    smtpd_data_commit(sess);
    if (from_loop)
        smtpd_read_on(sess);
}

static void smtpd_data_finish(SMTPD_SESS *sess, bool from_loop);
static void smtpd_milter_discard(SMTPD_SESS *sess);
static void smtpd_milter_eom(SMTPD_SESS *sess);

/* smtpd_data_end - CR LF . CR LF: commit, or refuse and go on */
static void smtpd_data_end(SMTPD_SESS *sess)
{
    SMTPD_DATA_STATUS status = SMTPD_DATA_OK;
    SMTPD_ACT act;

    sess->in_data = false;
    /* The plain case (no milter, no DKIM verdict, nothing refused): the
       last chunk waits for END, one write for both (smtpd_data_commit) */
    sess->cleanup_hold = !sess->data.too_big && !smtpd_content_refused(sess) &&
                         !sess->milter_discard && !sess->milter_hold &&
                         !sess->dkim_on;
    smtpd_chunk_flush(sess);
    if (sess->data.too_big) {
        status = SMTPD_DATA_TOO_BIG;
        msg_info("%s: reject: message size exceeds limit from %s[%s]",
                 sess->qid, sess->proto->client_name, sess->proto->client_addr);
    } else if (smtpd_content_refused(sess)) {
        status = SMTPD_DATA_BARE_LF;
        msg_info("%s: reject: bare <LF> received from %s[%s]", sess->qid,
                 sess->proto->client_name, sess->proto->client_addr);
    } else if (sess->cleanup == NULL) {
        status = SMTPD_DATA_CLEANUP;
    }
    if (status != SMTPD_DATA_OK) {
        smtpd_cleanup_close(sess);
        act = smtpd_proto_data_done(sess->proto, status, NULL, 0, NULL);
        smtpd_flush_reply(sess);
        if (act == SMTPD_ACT_CLOSE)
            smtpd_close(sess);
        return;
    }
    if (sess->milter_discard) {
        smtpd_milter_discard(sess);
        return;
    }
    if (sess->milter_hold) {
        smtpd_milter_eom(sess);
        return;
    }
    smtpd_data_finish(sess, false);
    smtpd_cleanup_release(sess); /* END took it, unless another way */
}

/* smtpd_data_finish - the content is with cleanup: the DKIM verdict if
   one is due, then cleanup's END (from_loop: not called by the
   session's own processing, which must then be resumed) */
static void smtpd_data_finish(SMTPD_SESS *sess, bool from_loop)
{
    if (sess->dkim_on) {
        ATTR_LIST *list;

        if (sess->dkim == NULL) {
            smtpd_dkim_verdict(sess, NULL, vstr_str(sess->dkim_why), from_loop);
            return;
        }
        /* The verdict before cleanup's END; the other sessions go on. */
        list = dkim_end_list();
        attr_conn_send(sess->dkim, list);
        attr_list_free(list);
        attr_conn_deadline(sess->dkim, smtpd_dkim_timeout(sess->proto));
        attr_conn_timeouts(sess->dkim, 0, 0);
        sess->wait = SMTPD_WAIT_DKIM;
        bufferevent_disable(sess->bev, EV_READ);
        return;
    }
    smtpd_data_commit(sess);
    if (from_loop)
        smtpd_read_on(sess);
}

/* smtpd_content - decode the content in the input; false: stop for now */
static bool smtpd_content(SMTPD_SESS *sess)
{
    struct evbuffer *input = bufferevent_get_input(sess->bev);
    struct evbuffer_iovec vec;

    while (sess->in_data) {
        size_t used;

        if ((sess->cleanup != NULL &&
             attr_conn_output_len(sess->cleanup) > SMTPD_CLEANUP_HIGH) ||
            (sess->dkim != NULL &&
             attr_conn_output_len(sess->dkim) > SMTPD_CLEANUP_HIGH)) {
            sess->cleanup_full = true; /* cleanup's drain callback resumes */
            bufferevent_disable(sess->bev, EV_READ);
            return false;
        }
        if (evbuffer_peek(input, -1, NULL, &vec, 1) < 1 || vec.iov_len == 0)
            return false;
        used = smtpd_data_feed(&sess->data, vec.iov_base, vec.iov_len,
                               sess->chunk, SMTPD_CHUNK_FILL);
        evbuffer_drain(input, used);
        if (vstr_len(sess->chunk) >= SMTPD_CHUNK_FILL ||
            smtpd_content_refused(sess))
            smtpd_chunk_flush(sess);
        if (sess->data.done)
            smtpd_data_end(sess);
    }
    return true;
}

/* smtpd_rcpt - the protocol accepted a recipient: hand it to cleanup */
static void smtpd_rcpt(SMTPD_SESS *sess)
{
    SMTPD_ACT act;

    if (sess->cleanup == NULL) {
        /* A transaction that lost cleanup cannot get it back. */
        if (sess->proto->rcpt_count > 0 || !smtpd_cleanup_begin(sess)) {
            act = smtpd_proto_rcpt_done(sess->proto, false);
            smtpd_flush_reply(sess);
            if (act == SMTPD_ACT_CLOSE)
                smtpd_close(sess);
            return;
        }
        smtpd_wait(sess, SMTPD_WAIT_BEGIN);
        return;
    }
    smtpd_cleanup_rcpt(sess);
    act = smtpd_proto_rcpt_done(sess->proto, sess->cleanup != NULL);
    smtpd_flush_reply(sess);
    if (act == SMTPD_ACT_CLOSE)
        smtpd_close(sess);
}

/* smtpd_tls_start - TLS over the client's connection: STARTTLS (its 220
   is queued in clear) or smtps. Input that came with or after STARTTLS
   is dropped unread (CVE-2011-0411: a command injected before the
   handshake must not run as if it came over TLS). */
static void smtpd_tls_start(SMTPD_SESS *sess)
{
    SMTPD_CTX *ctx = sess->ctx;
    SMTPD_PROTO *proto = sess->proto;
    struct evbuffer *input = bufferevent_get_input(sess->bev);
    struct timeval limit = {ctx->starttls_timeout, 0};
    size_t pipelined = evbuffer_get_length(input);
    struct bufferevent *filter;
    SSL *ssl;

    if (pipelined > 0) {
        msg_info("%s[%s]: discarding %zu byte(s) the client sent after"
                 " STARTTLS before the TLS handshake",
                 proto->client_name, proto->client_addr, pipelined);
        evbuffer_drain(input, pipelined);
    }
    if ((ssl = tls_server_ssl(ctx->tls)) == NULL) {
        msg_warn("cannot create a TLS session for %s[%s]", proto->client_name,
                 proto->client_addr);
        smtpd_close(sess);
        return;
    }
    filter = bufferevent_openssl_filter_new(
        mail_server_base(ctx->server), sess->bev, ssl,
        BUFFEREVENT_SSL_ACCEPTING,
        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (filter == NULL) {
        msg_warn("cannot start TLS for %s[%s]", proto->client_name,
                 proto->client_addr);
        SSL_free(ssl);
        smtpd_close(sess);
        return;
    }
    sess->raw = sess->bev;
    sess->bev = filter;
    sess->handshaking = true;
    /* The filter took raw's callbacks; timeouts are the filter's now,
       the handshake's first (smtpd_starttls_timeout). */
    bufferevent_set_timeouts(sess->raw, NULL, NULL);
    bufferevent_setcb(filter, smtpd_read_event, smtpd_write_event, smtpd_event,
                      sess);
    bufferevent_set_timeouts(filter, &limit, &limit);
    bufferevent_enable(filter, EV_READ | EV_WRITE);
}

/* smtpd_tls_done - the handshake finished: log it, start the session over */
static void smtpd_tls_done(SMTPD_SESS *sess)
{
    SMTPD_PROTO *proto = sess->proto;
    SSL *ssl = bufferevent_openssl_get_ssl(sess->bev);
    struct timeval timeout = {sess->ctx->conf.timeout, 0};

    sess->handshaking = false;
    tls_server_summary(ssl, sess->why);
    conn_stats_tls(sess->ctx->conn_stats, SSL_get_version(ssl));
    msg_info("Anonymous TLS connection %s from %s[%s]: %s",
             SSL_session_reused(ssl) ? "reused" : "established",
             proto->client_name, proto->client_addr, vstr_str(sess->why));
    smtpd_proto_tls(proto, vstr_str(sess->why));
    bufferevent_set_timeouts(sess->bev, &timeout, &timeout);
    smtpd_read_on(sess);
}

/* smtpd_tls_error - what OpenSSL said about a failed TLS session; true
   when it was a close without close_notify (a truncated session) */
static bool smtpd_tls_error(SMTPD_SESS *sess, VSTR *out)
{
    unsigned long err;
    bool truncated = false;

    vstr_reset(out);
    while ((err = bufferevent_get_openssl_error(sess->bev)) != 0) {
        char buf[256];

        if (ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            truncated = true;
        ERR_error_string_n(err, buf, sizeof(buf));
        vstr_sprintf_append(out, "%s%s", vstr_len(out) ? "; " : "", buf);
    }
    ERR_clear_error();
    return truncated;
}

static void smtpd_act(SMTPD_SESS *sess, SMTPD_ACT act);

/* smtpd_spf_done - the spf service answered (or failed): the recipient
   is evaluated again, then the input in hand */
static void smtpd_spf_done(const SPF_REPLY *reply, const char *why, void *arg)
{
    SMTPD_SESS *sess = arg;

    sess->spf_ask = NULL; /* gone when this returns */
    sess->wait = SMTPD_WAIT_NONE;
    smtpd_spf_store(sess->proto, reply, why);
    smtpd_act(sess, smtpd_proto_spf_done(sess->proto));
    smtpd_read_on(sess);
}

/* smtpd_spf_ask - ask the spf service for the transaction and wait for
   it without blocking the other sessions; a service that cannot be
   reached is answered at once */
static void smtpd_spf_ask(SMTPD_SESS *sess)
{
    SMTPD_PROTO *proto = sess->proto;
    SPF_REQUEST req;

    smtpd_spf_request(proto, &req);
    sess->spf_ask = spf_proto_ask(
        mail_server_base(sess->ctx->server), smtpd_spf_queue_dir(proto),
        smtpd_spf_timeout(proto), &req, smtpd_spf_done, sess, sess->why);
    if (sess->spf_ask == NULL) {
        smtpd_spf_store(proto, NULL, vstr_str(sess->why));
        smtpd_act(sess, smtpd_proto_spf_done(proto));
        return;
    }
    sess->wait = SMTPD_WAIT_SPF;
    bufferevent_disable(sess->bev, EV_READ);
}

/* smtpd_txn_ended - the protocol forgot the transaction (RSET, EHLO, a
   refused MAIL): cleanup's connection and the milters' message go too */
static void smtpd_txn_ended(SMTPD_SESS *sess)
{
    if (sess->proto->have_sender)
        return;
    if (sess->cleanup != NULL)
        smtpd_cleanup_close(sess);
    smtpd_milters_abort(sess->milters);
    sess->milter_discard = false;
    sess->milter_hold = false;
}

/* smtpd_milter_text - the reply of a milter's verdict */
static const char *smtpd_milter_text(SMTPD_MILTER_STATUS status,
                                     const char *reply)
{
    switch (status) {
    case SMTPD_MILTER_REPLY:
        return reply;
    case SMTPD_MILTER_REJECT:
        return "550 5.7.1 Command rejected";
    default:
        return "451 4.7.1 Service unavailable - try again later";
    }
}

/* smtpd_milter_stage_name - the event, for the log */
static const char *smtpd_milter_stage_name(SMTPD_MILTER_STAGE stage)
{
    switch (stage) {
    case SMTPD_MILTER_CONNECT:
        return "CONNECT";
    case SMTPD_MILTER_HELO:
        return "HELO";
    case SMTPD_MILTER_MAIL:
        return "MAIL";
    case SMTPD_MILTER_RCPT:
        return "RCPT";
    case SMTPD_MILTER_DATA:
        return "DATA";
    default:
        return "END-OF-MESSAGE";
    }
}

/* smtpd_milter_log - "QID: milter-reject: STAGE from host[addr]: text;
   from=<> to=<> proto= helo=<>", as Postfix logs it */
static void smtpd_milter_log(SMTPD_SESS *sess, const char *what,
                             const char *text)
{
    SMTPD_PROTO *proto = sess->proto;

    msg_info("%s: %s: %s from %s[%s]: %s; from=<%s> to=<%s> proto=%s"
             " helo=<%s>",
             sess->qid[0] ? sess->qid : "NOQUEUE", what,
             smtpd_milter_stage_name(sess->milter_stage), proto->client_name,
             proto->client_addr, text, vstr_str(proto->sender),
             sess->milter_stage == SMTPD_MILTER_RCPT ? vstr_str(proto->rcpt)
             : proto->first_rcpt                     ? proto->first_rcpt
                                                     : "",
             smtpd_proto_protocol(proto),
             proto->helo_name ? proto->helo_name : "");
}

/* smtpd_milter_run - send the event built for stage; act is done once
   the milters let it through (smtpd_milter_done) */
static void smtpd_milter_run(SMTPD_SESS *sess, SMTPD_ACT act)
{
    sess->milter_act = act;
    sess->wait = SMTPD_WAIT_MILTER;
    sess->milter_sync = true;
    smtpd_milters_run(sess->milters);
    sess->milter_sync = false;
    /* Decided at once (no milter wanted it), or wait without reading. */
    if (sess->wait == SMTPD_WAIT_MILTER)
        bufferevent_disable(sess->bev, EV_READ);
}

/* smtpd_milter_event - the milters' event for the command just
   answered (its reply is held); false when no milter wants it */
static bool smtpd_milter_event(SMTPD_SESS *sess, SMTPD_ACT act)
{
    SMTPD_PROTO *proto = sess->proto;
    SMTPD_MILTERS *ms = sess->milters;
    VSTR *arg;

    if (ms == NULL || sess->milter_discard)
        return false;
    switch (act) {
    case SMTPD_ACT_RCPT:
        sess->milter_stage = SMTPD_MILTER_RCPT;
        break;
    case SMTPD_ACT_DATA:
        sess->milter_stage = SMTPD_MILTER_DATA;
        break;
    case SMTPD_ACT_REPLY:
        if (strncmp(vstr_str(proto->reply), "250", 3) != 0)
            return false;
        if (proto->last_cmd == SMTPD_CMD_HELO ||
            proto->last_cmd == SMTPD_CMD_EHLO)
            sess->milter_stage = SMTPD_MILTER_HELO;
        else if (proto->last_cmd == SMTPD_CMD_MAIL && proto->have_sender)
            sess->milter_stage = SMTPD_MILTER_MAIL;
        else
            return false;
        break;
    default:
        return false;
    }
    if (sess->milter_stage >= SMTPD_MILTER_MAIL && !smtpd_milters_active(ms))
        return false;
    smtpd_milters_begin(ms, sess->milter_stage);
    arg = vstr_alloc(100);
    switch (sess->milter_stage) {
    case SMTPD_MILTER_HELO:
        smtpd_milters_add(ms, MILTER_CMD_HELO, proto->helo_name,
                          strlen(proto->helo_name) + 1);
        break;
    case SMTPD_MILTER_MAIL:
        sess->milter_discard = false;
        vstr_sprintf(arg, "<%s>", vstr_str(proto->sender));
        smtpd_milters_macros(ms, MILTER_CMD_MAIL, "{mail_addr}",
                             vstr_str(proto->sender), "{auth_authen}",
                             proto->sasl_username, "{auth_type}",
                             proto->sasl_method, (char *) NULL);
        smtpd_milters_add(ms, MILTER_CMD_MAIL, vstr_str(arg),
                          vstr_len(arg) + 1);
        break;
    case SMTPD_MILTER_RCPT:
        vstr_sprintf(arg, "<%s>", vstr_str(proto->rcpt));
        smtpd_milters_macros(ms, MILTER_CMD_RCPT, "{rcpt_addr}",
                             vstr_str(proto->rcpt), (char *) NULL);
        smtpd_milters_add(ms, MILTER_CMD_RCPT, vstr_str(arg),
                          vstr_len(arg) + 1);
        break;
    default:
        smtpd_milters_macros(ms, MILTER_CMD_DATA, "i",
                             sess->qid[0] ? sess->qid : NULL, (char *) NULL);
        smtpd_milters_add(ms, MILTER_CMD_DATA, NULL, 0);
        break;
    }
    vstr_free(arg);
    smtpd_milter_run(sess, act);
    return true;
}

/* smtpd_milter_connect_done - the connect event's verdict: greet, or
   refuse the session */
static void smtpd_milter_connect_done(SMTPD_SESS *sess,
                                      SMTPD_MILTER_STATUS status,
                                      const char *reply)
{
    VSTR *out = sess->proto->reply;
    const char *host = sess->ctx->conf.myhostname;

    if (status == SMTPD_MILTER_CONTINUE || status == SMTPD_MILTER_DISCARD) {
        vstr_sprintf(out, "220 %s\r\n", sess->ctx->conf.banner);
        smtpd_flush_reply(sess);
        return;
    }
    if (status == SMTPD_MILTER_REPLY)
        vstr_sprintf(out, "%s\r\n", reply);
    else if (status == SMTPD_MILTER_REJECT)
        vstr_sprintf(out, "554 5.7.1 %s Error: connection rejected\r\n", host);
    else
        vstr_sprintf(out,
                     "421 4.7.1 %s Service unavailable - try again later\r\n",
                     host);
    smtpd_milter_log(sess, "milter-reject", smtpd_milter_text(status, reply));
    smtpd_flush_reply(sess);
    smtpd_close(sess);
}

/* smtpd_milter_discard - a milter said discard: the client hears 250,
   nothing is queued (cleanup removes the partial file) */
static void smtpd_milter_discard(SMTPD_SESS *sess)
{
    char qid[sizeof(sess->qid)];
    SMTPD_ACT act;

    sess->milter_stage = SMTPD_MILTER_EOM;
    smtpd_milter_log(sess, "milter-discard", "milter triggers DISCARD action");
    snprintf(qid, sizeof(qid), "%s", sess->qid);
    smtpd_cleanup_close(sess);
    smtpd_milters_abort(sess->milters);
    sess->milter_discard = false;
    sess->milter_hold = false;
    vstr_reset(sess->milter_msg);
    act = smtpd_proto_data_done(sess->proto, SMTPD_DATA_OK, qid, 0, NULL);
    smtpd_flush_reply(sess);
    if (act == SMTPD_ACT_CLOSE)
        smtpd_close(sess);
}

/* smtpd_milter_eom - the held message goes to the milters */
static void smtpd_milter_eom(SMTPD_SESS *sess)
{
    sess->milter_stage = SMTPD_MILTER_EOM;
    smtpd_milters_begin(sess->milters, SMTPD_MILTER_EOM);
    smtpd_milters_message(sess->milters, vstr_str(sess->milter_msg),
                          vstr_len(sess->milter_msg), sess->qid);
    smtpd_milter_run(sess, SMTPD_ACT_REPLY);
}

/* smtpd_milter_add_rcpts - the recipients the milters added go to
   cleanup before the content (a malformed one is logged and skipped) */
static void smtpd_milter_add_rcpts(SMTPD_SESS *sess)
{
    const ARGV *rcpts = smtpd_milters_rcpts(sess->milters);
    VSTR *path = vstr_alloc(100);
    VSTR *addr = vstr_alloc(100);

    for (size_t i = 0; i < rcpts->argc && sess->cleanup != NULL; i++) {
        const char *text = rcpts->argv[i];
        const char *rest;
        CLEANUP_RCPT rcpt = {.orcpt = "", .notify = ""};

        vstr_sprintf(path, text[0] == '<' ? "%s" : "<%s>", text);
        if (smtp_addr_parse_path(vstr_str(path), 0, addr, &rest, sess->why) <
                0 ||
            *rest != 0) {
            msg_warn("%s: milter added a malformed recipient %s: skipped",
                     sess->qid, vstr_str(path));
            continue;
        }
        rcpt.address = vstr_str(addr);
        msg_info("%s: milter: added recipient <%s>", sess->qid, vstr_str(addr));
        smtpd_cleanup_send(sess, cleanup_rcpt_list(&rcpt));
    }
    vstr_free(path);
    vstr_free(addr);
}

/* smtpd_milter_eom_done - the end of message's verdict: the changed
   message to cleanup and commit, or the refusal */
static void smtpd_milter_eom_done(SMTPD_SESS *sess, SMTPD_MILTER_STATUS status,
                                  const char *reply, bool from_loop)
{
    SMTPD_ACT act;

    sess->milter_hold = false;
    if (status == SMTPD_MILTER_CONTINUE) {
        int changes = smtpd_milters_apply(sess->milters, sess->milter_msg);
        size_t off = 0;

        if (changes > 0)
            msg_info("%s: milter: %d change(s) to the message", sess->qid,
                     changes);
        smtpd_milter_add_rcpts(sess);
        vstr_reset(sess->milter_hold_why);
        if (smtpd_milters_quarantine(sess->milters) != NULL)
            vstr_sprintf(sess->milter_hold_why, "milter quarantine: %s",
                         smtpd_milters_quarantine(sess->milters));
        while (off < vstr_len(sess->milter_msg) && sess->cleanup != NULL) {
            size_t n = vstr_len(sess->milter_msg) - off;

            if (n > CLEANUP_CHUNK_MAX)
                n = CLEANUP_CHUNK_MAX;
            smtpd_cleanup_send(
                sess, cleanup_data_list(vstr_str(sess->milter_msg) + off, n));
            off += n;
        }
        vstr_reset(sess->milter_msg);
        smtpd_data_finish(sess, from_loop);
        return;
    }
    vstr_reset(sess->milter_msg);
    if (status == SMTPD_MILTER_DISCARD) {
        smtpd_milter_discard(sess);
    } else {
        const char *text = smtpd_milter_text(status, reply);

        smtpd_milter_log(sess, "milter-reject", text);
        smtpd_cleanup_close(sess);
        act = smtpd_proto_milter_reply(sess->proto, SMTPD_CMD_DATA, text);
        smtpd_flush_reply(sess);
        if (act == SMTPD_ACT_CLOSE) {
            smtpd_close(sess);
            return;
        }
    }
    if (from_loop)
        smtpd_read_on(sess);
}

/* smtpd_milter_done - the milters decided the event in progress */
static void smtpd_milter_done(void *arg, SMTPD_MILTER_STATUS status,
                              const char *reply)
{
    SMTPD_SESS *sess = arg;
    SMTPD_PROTO *proto = sess->proto;
    bool from_loop = !sess->milter_sync;
    SMTPD_ACT act;

    sess->wait = SMTPD_WAIT_NONE;
    if (sess->milter_stage == SMTPD_MILTER_CONNECT) {
        /* Never inside smtpd_process: reading starts here. */
        smtpd_milter_connect_done(sess, status, reply);
        if (!sess->closing)
            smtpd_read_on(sess);
        return;
    }
    if (sess->milter_stage == SMTPD_MILTER_EOM) {
        smtpd_milter_eom_done(sess, status, reply, from_loop);
        return;
    }
    if (status == SMTPD_MILTER_DISCARD &&
        sess->milter_stage == SMTPD_MILTER_HELO)
        status = SMTPD_MILTER_CONTINUE;
    if (status == SMTPD_MILTER_CONTINUE || status == SMTPD_MILTER_DISCARD) {
        if (status == SMTPD_MILTER_DISCARD)
            sess->milter_discard = true; /* answered at the end of DATA */
        switch (sess->milter_act) {
        case SMTPD_ACT_RCPT:
            smtpd_rcpt(sess);
            break;
        case SMTPD_ACT_DATA:
            smtpd_flush_reply(sess);
            smtpd_data_start(sess);
            break;
        default:
            smtpd_flush_reply(sess);
            break;
        }
    } else {
        const char *text = smtpd_milter_text(status, reply);
        SMTPD_CMD cmd =
            sess->milter_stage == SMTPD_MILTER_HELO   ? proto->last_cmd
            : sess->milter_stage == SMTPD_MILTER_MAIL ? SMTPD_CMD_MAIL
            : sess->milter_stage == SMTPD_MILTER_RCPT ? SMTPD_CMD_RCPT
                                                      : SMTPD_CMD_DATA;

        smtpd_milter_log(sess, "milter-reject", text);
        act = smtpd_proto_milter_reply(proto, cmd, text);
        smtpd_flush_reply(sess);
        if (act == SMTPD_ACT_CLOSE) {
            smtpd_close(sess);
            return;
        }
        smtpd_txn_ended(sess);
    }
    if (from_loop)
        smtpd_read_on(sess);
}

/* smtpd_milter_connect_event - the session's first event, before the
   greeting: connect to each milter, CONNECT */
static void smtpd_milter_connect_event(SMTPD_SESS *sess)
{
    SMTPD_CTX *ctx = sess->ctx;
    SMTPD_PROTO *proto = sess->proto;
    SMTPD_MILTERS *ms;
    VSTR *pkt = vstr_alloc(100);
    VSTR *who = vstr_alloc(100);

    ms = sess->milters =
        smtpd_milters_new(mail_server_base(ctx->server), ctx->conf.milters,
                          smtpd_milter_done, sess);
    sess->milter_stage = SMTPD_MILTER_CONNECT;
    smtpd_milters_begin(ms, SMTPD_MILTER_CONNECT);
    vstr_sprintf(who, "%s [%s]", proto->client_name, proto->client_addr);
    smtpd_milters_macros(ms, MILTER_CMD_CONNECT, "j", ctx->conf.myhostname,
                         "{daemon_name}", ctx->conf.myhostname, "v",
                         ctx->conf.mail_name, "_", vstr_str(who),
                         "{client_addr}", proto->client_addr, "{client_name}",
                         proto->client_name, (char *) NULL);
    milter_connect(pkt, proto->client_name,
                   strchr(proto->client_addr, ':') ? '6' : '4', 0,
                   proto->client_addr);
    /* The packet is built whole: add its data without the length and
       command that milter_connect put first. */
    smtpd_milters_add(ms, MILTER_CMD_CONNECT, vstr_str(pkt) + 5,
                      vstr_len(pkt) - 5);
    vstr_free(pkt);
    vstr_free(who);
    smtpd_milter_run(sess, SMTPD_ACT_REPLY);
}

/* smtpd_command - one complete command line from the input */
static void smtpd_command(SMTPD_SESS *sess, const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    smtpd_act(sess, smtpd_proto_command(sess->proto, line, len));
}

/* smtpd_act - do what the protocol asked after a command */
static void smtpd_act(SMTPD_SESS *sess, SMTPD_ACT act)
{
    switch (act) {
    case SMTPD_ACT_RCPT:
        smtpd_flush_reply(sess);
        if (smtpd_milter_event(sess, act))
            return;
        smtpd_rcpt(sess);
        return;
    case SMTPD_ACT_SPF:
        smtpd_spf_ask(sess);
        return;
    case SMTPD_ACT_DATA:
        /* The 354 waits for the milters' DATA verdict. */
        if (smtpd_milter_event(sess, act))
            return;
        smtpd_flush_reply(sess);
        smtpd_data_start(sess);
        return;
    case SMTPD_ACT_CLOSE:
        smtpd_flush_reply(sess);
        smtpd_close(sess);
        return;
    case SMTPD_ACT_STARTTLS:
        smtpd_flush_reply(sess);
        smtpd_cleanup_close(sess);
        sess->tls_pending = true; /* once the line is drained */
        return;
    case SMTPD_ACT_REPLY:
        /* RSET, EHLO or a failed command ended the transaction. */
        smtpd_txn_ended(sess);
        /* HELO, EHLO and MAIL wait for the milters' verdict. */
        if (smtpd_milter_event(sess, act))
            return;
        smtpd_flush_reply(sess);
        return;
    }
}

/* smtpd_sleep_event - the error delay is over: answer the command */
static void smtpd_sleep_event(evutil_socket_t fd, short what, void *arg)
{
    SMTPD_SESS *sess = arg;

    sess->sleeping = false;
    sess->slept = true;
    smtpd_read_on(sess);
}

/* smtpd_error_sleep - past smtpd_soft_error_limit: wait
   smtpd_error_sleep_time before the command in hand is answered (without
   blocking the other sessions); true while it waits */
static bool smtpd_error_sleep(SMTPD_SESS *sess)
{
    int ms = sess->ctx->conf.error_sleep_ms;
    struct timeval delay = {ms / 1000, (ms % 1000) * 1000};

    if (sess->slept) {
        sess->slept = false;
        return false;
    }
    if (!smtpd_proto_slow(sess->proto))
        return false;
    if (sess->sleep_ev == NULL &&
        (sess->sleep_ev = evtimer_new(mail_server_base(sess->ctx->server),
                                      smtpd_sleep_event, sess)) == NULL) {
        msg_warn("cannot create a timer: no error delay");
        return false;
    }
    if (evtimer_add(sess->sleep_ev, &delay) < 0) {
        msg_warn("cannot add a timer: no error delay");
        return false;
    }
    sess->sleeping = true;
    bufferevent_disable(sess->bev, EV_READ);
    return true;
}

/* smtpd_deadline_arm - (re)start the session deadline */
static void smtpd_deadline_arm(SMTPD_SESS *sess)
{
    struct timeval limit = {sess->ctx->conf.session_deadline, 0};

    if (sess->deadline_ev != NULL && evtimer_add(sess->deadline_ev, &limit) < 0)
        msg_warn("cannot add the session deadline timer");
}

/* smtpd_deadline_event - smtpd_session_deadline passed: 421 and close. A
   message that cleanup is committing is answered first. */
static void smtpd_deadline_event(evutil_socket_t fd, short what, void *arg)
{
    SMTPD_SESS *sess = arg;
    SMTPD_PROTO *proto = sess->proto;
    struct timeval again = {1, 0};

    if (sess->closing)
        return;
    if (sess->wait != SMTPD_WAIT_NONE) {
        (void) evtimer_add(sess->deadline_ev, &again);
        return;
    }
    msg_info("timeout after %s from %s[%s]: smtpd_session_deadline %ds"
             " exceeded",
             smtpd_state_name(sess), proto->client_name, proto->client_addr,
             sess->ctx->conf.session_deadline);
    vstr_sprintf(proto->reply, "421 4.4.2 %s Error: timeout exceeded\r\n",
                 sess->ctx->conf.myhostname);
    smtpd_flush_reply(sess);
    smtpd_close(sess);
}

/* smtpd_process_input - handle every complete command line and content
   byte in the input, in order, until the session must wait */
static void smtpd_process_input(SMTPD_SESS *sess)
{
    size_t limit = (size_t) sess->ctx->conf.line_length_limit;

    while (!sess->closing && sess->wait == SMTPD_WAIT_NONE &&
           !sess->output_full && !sess->cleanup_full && !sess->sleeping &&
           !sess->handshaking) {
        struct evbuffer *input = bufferevent_get_input(sess->bev);
        struct evbuffer_ptr eol;
        size_t avail = evbuffer_get_length(input);
        size_t len;

        if (evbuffer_get_length(bufferevent_get_output(sess->bev)) >
            SMTPD_OUTPUT_HIGH) {
            sess->output_full = true; /* the write callback resumes */
            bufferevent_disable(sess->bev, EV_READ);
            return;
        }
        if (sess->in_data) {
            if (!smtpd_content(sess))
                return;
            continue;
        }
        if (avail == 0)
            return;
        eol = evbuffer_search(input, "\n", 1, NULL);
        if (sess->skipping) {
            if (eol.pos < 0) {
                evbuffer_drain(input, avail);
                return;
            }
            evbuffer_drain(input, (size_t) eol.pos + 1);
            sess->skipping = false;
            continue;
        }
        if (eol.pos < 0 && avail <= limit)
            return; /* the rest of the line comes later */
        if (eol.pos < 0 || (size_t) eol.pos > limit) {
            /* Too long: answer now, discard through the end of line. */
            if (smtpd_proto_line_too_long(sess->proto) == SMTPD_ACT_CLOSE) {
                smtpd_flush_reply(sess);
                smtpd_close(sess);
                return;
            }
            smtpd_flush_reply(sess);
            sess->skipping = true;
            continue;
        }
        if (smtpd_error_sleep(sess))
            return; /* the timer processes this line */
        len = (size_t) eol.pos;
        /* The protocol copies the line; nothing after QUIT is read. */
        smtpd_command(sess,
                      (const char *) evbuffer_pullup(input, (ssize_t) len + 1),
                      len);
        evbuffer_drain(input, len + 1);
        if (sess->tls_pending) {
            sess->tls_pending = false;
            smtpd_replies_write(sess); /* 220 in plain text */
            smtpd_tls_start(sess); /* the rest of the input is dropped */
        }
    }
}

/* smtpd_process - smtpd_process_input, its replies held while more
   commands are in hand and sent as one write at the end */
static void smtpd_process(SMTPD_SESS *sess)
{
    sess->hold_depth++;
    smtpd_process_input(sess);
    sess->hold_depth--;
    smtpd_replies_settle(sess);
}

/* smtpd_read_event - client input */
static void smtpd_read_event(struct bufferevent *bev, void *arg)
{
    SMTPD_SESS *sess = arg;

    /* Input that came while cleanup answers waits; past a bound, reading
       stops until smtpd_read_on. */
    if ((sess->wait == SMTPD_WAIT_BEGIN || sess->wait == SMTPD_WAIT_END) &&
        evbuffer_get_length(bufferevent_get_input(bev)) > SMTPD_WAIT_INPUT_MAX)
        bufferevent_disable(bev, EV_READ);
    smtpd_process(sess);
}

/* smtpd_write_event - client output drained */
static void smtpd_write_event(struct bufferevent *bev, void *arg)
{
    SMTPD_SESS *sess = arg;

    if (sess->closing) {
        if (sess->raw != NULL && smtpd_tls_finish(sess))
            return; /* smtpd_tls_close_event frees it */
        smtpd_session_free(sess);
        return;
    }
    if (sess->output_full) {
        sess->output_full = false;
        smtpd_read_on(sess);
    }
}

/* smtpd_state_name - what the client was doing, for the log */
static const char *smtpd_state_name(const SMTPD_SESS *sess)
{
    static const char *const names[SMTPD_CMD_COUNT] = {
        "HELO", "EHLO", "MAIL", "RCPT",     "DATA", "RSET",    "NOOP",
        "VRFY", "HELP", "QUIT", "STARTTLS", "AUTH", "UNKNOWN",
    };

    if (sess->in_data)
        return "DATA";
    return names[sess->proto->last_cmd];
}

/* smtpd_event - client EOF, error or timeout */
static void smtpd_event(struct bufferevent *bev, short what, void *arg)
{
    SMTPD_SESS *sess = arg;
    SMTPD_PROTO *proto = sess->proto;

    if (what & BEV_EVENT_CONNECTED) {
        if (sess->handshaking)
            smtpd_tls_done(sess);
        return;
    }
    if (sess->closing) {
        smtpd_session_free(sess);
        return;
    }
    if (sess->raw == NULL && (what & BEV_EVENT_READING) &&
        (sess->wait == SMTPD_WAIT_BEGIN || sess->wait == SMTPD_WAIT_END)) {
        /* EOF, error or timeout while cleanup answers (reading stays on
           then: smtpd_wait): libevent stopped reading; the input in hand
           is answered first and smtpd_read_on finds the EOF again (an
           idle client's timer starts over). */
        bufferevent_disable(bev, EV_READ);
        return;
    }
    if (sess->handshaking) {
        /* No reply can reach a client whose handshake failed. */
        if (what & BEV_EVENT_TIMEOUT)
            vstr_sprintf(sess->why, "handshake timed out after %ds",
                         sess->ctx->starttls_timeout);
        else if (what & BEV_EVENT_ERROR)
            (void) smtpd_tls_error(sess, sess->why);
        if (vstr_len(sess->why) == 0 && (what & BEV_EVENT_ERROR) &&
            EVUTIL_SOCKET_ERROR() != 0)
            vstr_sprintf(sess->why, "%s", strerror(EVUTIL_SOCKET_ERROR()));
        if (vstr_len(sess->why) == 0)
            vstr_sprintf(sess->why, "lost connection during the handshake");
        msg_info("SSL_accept error from %s[%s]: %s", proto->client_name,
                 proto->client_addr, vstr_str(sess->why));
        smtpd_session_free(sess);
        return;
    }
    if (sess->raw != NULL && (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))) {
        SSL *ssl = bufferevent_openssl_get_ssl(sess->bev);
        int sock_err = EVUTIL_SOCKET_ERROR();
        bool truncated = smtpd_tls_error(sess, sess->why);

        /* A client that ends a TLS session properly sends close_notify
           first; one that only closes the connection may have lost data
           to an attacker (a truncation attack), and is named so. */
        if (ssl != NULL && !(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN))
            truncated = true;
        if (vstr_len(sess->why) == 0 && (what & BEV_EVENT_ERROR) &&
            sock_err != 0)
            vstr_sprintf(sess->why, "%s", strerror(sock_err));
        if (truncated)
            msg_info("lost connection after %s from %s[%s]: TLS session"
                     " truncated (no close_notify)%s%s",
                     smtpd_state_name(sess), proto->client_name,
                     proto->client_addr, vstr_len(sess->why) ? ": " : "",
                     vstr_str(sess->why));
        else if (what & BEV_EVENT_ERROR)
            msg_info("TLS error after %s from %s[%s]: %s",
                     smtpd_state_name(sess), proto->client_name,
                     proto->client_addr,
                     vstr_len(sess->why) ? vstr_str(sess->why) : "I/O error");
        else if (sess->in_data || proto->have_sender)
            msg_info("lost connection after %s from %s[%s]",
                     smtpd_state_name(sess), proto->client_name,
                     proto->client_addr);
        smtpd_session_free(sess);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING)) {
        msg_info("timeout after %s from %s[%s]", smtpd_state_name(sess),
                 proto->client_name, proto->client_addr);
        vstr_sprintf(proto->reply, "421 4.4.2 %s Error: timeout exceeded\r\n",
                     sess->ctx->conf.myhostname);
        smtpd_flush_reply(sess);
        smtpd_close(sess);
        return;
    }
    if (sess->in_data || proto->have_sender || (what & BEV_EVENT_ERROR) ||
        (what & BEV_EVENT_TIMEOUT))
        msg_info("lost connection after %s from %s[%s]", smtpd_state_name(sess),
                 proto->client_name, proto->client_addr);
    smtpd_session_free(sess);
}

/* smtpd_cleanup_status - a STATUS from cleanup */
static void smtpd_cleanup_status(SMTPD_SESS *sess, const CLEANUP_STATUS *reply)
{
    long long status = reply->status;
    const char *qid = reply->queue_id;
    const char *reason = reply->reason;
    SMTPD_ACT act;

    if (sess->wait == SMTPD_WAIT_BEGIN) {
        bool ok = status == 0 && qid != NULL && *qid != 0 &&
                  strlen(qid) < sizeof(sess->qid);

        sess->cleanup_reused = false;
        if (ok) {
            snprintf(sess->qid, sizeof(sess->qid), "%s", qid);
            if (sess->proto->sasl_username != NULL)
                msg_info("%s: client=%s[%s], sasl_method=%s,"
                         " sasl_username=%s",
                         sess->qid, sess->proto->client_name,
                         sess->proto->client_addr, sess->proto->sasl_method,
                         sess->proto->sasl_username);
            else
                msg_info("%s: client=%s[%s]", sess->qid,
                         sess->proto->client_name, sess->proto->client_addr);
            smtpd_cleanup_rcpt(sess);
            ok = sess->cleanup != NULL;
        } else {
            msg_warn("cleanup refused a new message: %lld %s", status,
                     reason ? reason : "");
            smtpd_cleanup_close(sess);
        }
        act = smtpd_proto_rcpt_done(sess->proto, ok);
    } else {
        if (status == 0 && sess->qid[0] != 0) {
            act = smtpd_proto_data_done(sess->proto, SMTPD_DATA_OK, sess->qid,
                                        0, NULL);
            smtpd_deadline_arm(sess); /* a new session deadline per message */
        } else {
            msg_info("%s: cleanup: %lld %s", sess->qid, status,
                     reason ? reason : "");
            act = smtpd_proto_data_done(sess->proto, SMTPD_DATA_REJECT, NULL,
                                        (int) status, reason);
        }
        smtpd_cleanup_park(sess); /* the next message may use it */
    }
    smtpd_resume(sess, act);
}

/* smtpd_cleanup_fail - cleanup broke the protocol or went away */
static void smtpd_cleanup_fail(SMTPD_SESS *sess, const char *why)
{
    SMTPD_WAIT wait = sess->wait;
    SMTPD_ACT act;

    if (wait == SMTPD_WAIT_BEGIN && sess->cleanup_reused) {
        /* The spare ended under our BEGIN: cleanup closed it (idle, or
           retiring) or died. It cannot have committed anything of this
           message (no END was sent): begin again on a new connection. */
        if (msg_verbose_get())
            msg_info("spare cleanup connection: %s; connecting again", why);
        smtpd_cleanup_close(sess);
        if (smtpd_cleanup_begin(sess)) {
            smtpd_wait(sess, SMTPD_WAIT_BEGIN);
            return;
        }
        act = smtpd_proto_rcpt_done(sess->proto, false);
        smtpd_resume(sess, act);
        return;
    }
    msg_warn("%s%scleanup connection: %s", sess->qid, sess->qid[0] ? ": " : "",
             why);
    smtpd_cleanup_close(sess);
    if (wait == SMTPD_WAIT_BEGIN) {
        act = smtpd_proto_rcpt_done(sess->proto, false);
    } else if (wait == SMTPD_WAIT_END || wait == SMTPD_WAIT_DKIM) {
        act = smtpd_proto_data_done(sess->proto, SMTPD_DATA_CLEANUP, NULL, 0,
                                    NULL);
    } else {
        /* Not waiting: the transaction learns at its next step. */
        if (sess->cleanup_full) {
            sess->cleanup_full = false;
            smtpd_read_on(sess);
        }
        return;
    }
    smtpd_resume(sess, act);
}

/* smtpd_cleanup_on_list - cleanup's HELLO, then STATUS lists, one at a
   time */
static void smtpd_cleanup_on_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    SMTPD_SESS *sess = arg;
    CLEANUP_STATUS reply;

    if (conn == sess->cleanup_spare) {
        msg_warn("spare cleanup connection: unexpected reply; closed");
        smtpd_cleanup_unpark(sess);
        return;
    }
    vstr_reset(sess->why);
    if (!sess->cleanup_greeted) {
        /* cleanup's HELLO comes first: a mismatch is logged with both
           versions and the connection given up (the transaction gets
           451 4.3.0; cleanup has queued nothing). */
        if (cleanup_hello_take(list, sess->why) < 0) {
            smtpd_cleanup_fail(sess, vstr_str(sess->why));
            return;
        }
        sess->cleanup_greeted = true;
        return;
    }
    if (cleanup_status_take(list, &reply, sess->why) < 0) {
        smtpd_cleanup_fail(sess, vstr_str(sess->why));
        return;
    }
    if ((sess->wait != SMTPD_WAIT_BEGIN && sess->wait != SMTPD_WAIT_END) ||
        attr_conn_input_len(conn) > 0) {
        smtpd_cleanup_fail(sess, "unexpected reply");
        return;
    }
    smtpd_cleanup_status(sess, &reply);
}

/* smtpd_cleanup_on_drain - cleanup took our backlog: read on */
static void smtpd_cleanup_on_drain(ATTR_CONN *conn, void *arg)
{
    SMTPD_SESS *sess = arg;

    if (conn == sess->cleanup_spare)
        return;
    if (sess->cleanup_full) {
        sess->cleanup_full = false;
        smtpd_read_on(sess);
    }
}

/* smtpd_cleanup_on_end - cleanup EOF, error, timeout or a malformed list */
static void smtpd_cleanup_on_end(ATTR_CONN *conn, ATTR_CONN_END kind,
                                 const char *why, void *arg)
{
    SMTPD_SESS *sess = arg;

    /* The spare's end (its idle time is up, cleanup closed it, retired
       or died) costs nothing: the next transaction connects anew. */
    if (conn == sess->cleanup_spare) {
        smtpd_cleanup_unpark(sess);
        return;
    }
    smtpd_cleanup_fail(sess, kind == ATTR_CONN_IO ? "I/O error" : why);
}

static const ATTR_CONN_OPS smtpd_cleanup_ops = {
    .on_list = smtpd_cleanup_on_list,
    .on_end = smtpd_cleanup_on_end,
    .on_drain = smtpd_cleanup_on_drain,
};

/* smtpd_dkim_fail - the verifier broke the protocol or went away: a
   verdict of temperror now, or at the end of DATA */
static void smtpd_dkim_fail(SMTPD_SESS *sess, const char *why)
{
    if (sess->wait == SMTPD_WAIT_DKIM) {
        smtpd_dkim_verdict(sess, NULL, why, true);
        return;
    }
    vstr_cpy(sess->dkim_why, why);
    smtpd_dkim_close(sess);
    if (sess->cleanup_full) {
        sess->cleanup_full = false;
        smtpd_read_on(sess);
    }
}

/* smtpd_dkim_on_list - the verifier's HELLO, then its REPLY */
static void smtpd_dkim_on_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    SMTPD_SESS *sess = arg;
    DKIM_REPLY reply;

    vstr_reset(sess->why);
    if (!sess->dkim_greeted) {
        if (spf_hello_take(list, sess->why) < 0) {
            smtpd_dkim_fail(sess, vstr_str(sess->why));
            return;
        }
        sess->dkim_greeted = true;
        return;
    }
    if (dkim_reply_take(list, &reply, sess->why) < 0) {
        VSTR *text = vstr_alloc(100);

        vstr_sprintf(text, "spf service: bad reply: %s", vstr_str(sess->why));
        smtpd_dkim_fail(sess, vstr_str(text));
        vstr_free(text);
        return;
    }
    if (sess->wait != SMTPD_WAIT_DKIM) {
        smtpd_dkim_fail(sess, "unexpected reply");
        return;
    }
    if (!reply.ok) {
        smtpd_dkim_fail(sess, reply.reason);
        return;
    }
    smtpd_dkim_verdict(sess, &reply, NULL, true);
}

/* smtpd_dkim_on_end - the verifier's EOF, error, deadline, bad list */
static void smtpd_dkim_on_end(ATTR_CONN *conn, ATTR_CONN_END kind,
                              const char *why, void *arg)
{
    SMTPD_SESS *sess = arg;

    vstr_sprintf(sess->why, "spf service: %s",
                 kind == ATTR_CONN_IO ? "I/O error" : why);
    smtpd_dkim_fail(sess, vstr_str(sess->why));
}

static const ATTR_CONN_OPS smtpd_dkim_ops = {
    .on_list = smtpd_dkim_on_list,
    .on_end = smtpd_dkim_on_end,
    .on_drain = smtpd_cleanup_on_drain,
};

/* smtpd_peer - the client's numeric address ("unknown" when none) */
static void smtpd_peer(int fd, char *addr, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);

    snprintf(addr, len, "unknown");
    if (getpeername(fd, (struct sockaddr *) &ss, &sslen) < 0)
        return;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
        return;
    /* Numeric only: no DNS in this process without dns_servers. */
    if (getnameinfo((struct sockaddr *) &ss, sslen, addr, (socklen_t) len, NULL,
                    0, NI_NUMERICHOST) != 0) {
        snprintf(addr, len, "unknown");
        return;
    }
    if (strncasecmp(addr, "::ffff:", 7) == 0 && strchr(addr + 7, '.'))
        memmove(addr, addr + 7, strlen(addr + 7) + 1);
}

static void smtpd_session_start(SMTPD_SESS *sess);

/* smtpd_peer_named - the client's name lookup is over: greet it */
static void smtpd_peer_named(const DNS_REPLY *reply, void *arg)
{
    SMTPD_SESS *sess = arg;
    SMTPD_PROTO *proto = sess->proto;

    sess->peer_lookup = NULL; /* dns frees it after this returns */
    sess->peer_status = reply->status;
    /* For reject_unknown_(reverse_)client_hostname (smtpd_check.c). */
    proto->name_status = reply->status == DNS_OK && reply->name != NULL
                             ? SMTPD_PEER_OK
                         : reply->status == DNS_TEMP ? SMTPD_PEER_TEMP
                                                     : SMTPD_PEER_PERM;
    proto->reverse_status =
        reply->ptr_name != NULL || proto->name_status == SMTPD_PEER_OK
            ? SMTPD_PEER_OK
        : reply->status == DNS_TEMP ? SMTPD_PEER_TEMP
                                    : SMTPD_PEER_PERM;
    if (reply->status == DNS_OK && reply->name != NULL) {
        myfree(proto->client_name);
        proto->client_name = mystrdup(reply->name);
    } else if (reply->status == DNS_TEMP || reply->ptr_name != NULL) {
        /* a name that does not lead back, or a DNS failure; a missing
           PTR is common and not logged (Postfix's choice too) */
        msg_warn("%s", vstr_str(reply->reason));
    }
    smtpd_session_start(sess);
}

/* smtpd_session_new - serve a client on fd: look its name up (when
   smtpd_peername_lookup and DNS are on), then greet it */
static void smtpd_session_new(SMTPD_CTX *ctx, int fd, const char *name,
                              const char *addr, bool local)
{
    MAIL_SERVER *server = ctx->server;
    SMTPD_SESS *sess;
    struct timeval timeout = {ctx->conf.timeout, 0};

    sess = mycalloc(1, sizeof(*sess));
    sess->ctx = ctx;
    sess->bev = bufferevent_socket_new(mail_server_base(server), fd,
                                       BEV_OPT_CLOSE_ON_FREE);
    if (sess->bev == NULL) {
        msg_warn("cannot create a bufferevent for %s", addr);
        (void) close(fd);
        myfree(sess);
        if (ctx->stand_alone)
            mail_server_exit(server, 1);
        return;
    }
    sess->next = ctx->sessions;
    if (sess->next)
        sess->next->prev = sess;
    ctx->sessions = sess;
    sess->proto = smtpd_proto_alloc(&ctx->conf, name, addr);
    if (local)
        smtpd_proto_set_local(sess->proto, ctx->local_uid);
    sess->chunk = vstr_alloc(CLEANUP_CHUNK_MAX);
    sess->dkim_why = vstr_alloc(100);
    sess->auth_results = vstr_alloc(200);
    sess->milter_msg = vstr_alloc(100);
    sess->milter_hold_why = vstr_alloc(100);
    sess->wire = vstr_alloc(CLEANUP_CHUNK_MAX + 64);
    sess->why = vstr_alloc(64);
    sess->held = vstr_alloc(256);
    sess->peer_status = DNS_PERM;
    if (++ctx->conn_count == ctx->conf.process_connection_limit)
        mail_server_busy(server, true);
    if (!local && ctx->conn_stats != NULL) {
        conn_stats_connect(ctx->conn_stats);
        sess->stats_counted = true;
    }
    bufferevent_setcb(sess->bev, smtpd_read_event, smtpd_write_event,
                      smtpd_event, sess);
    bufferevent_set_timeouts(sess->bev, &timeout, &timeout);
    /* Postfix greets after the lookup; the lookup has its own bound, so
       a resolver that does not answer delays the greeting, never stops
       it. Nothing is read meanwhile: early input waits in the socket. */
    if (!local && ctx->dns != NULL && strcmp(addr, "unknown") != 0) {
        sess->peer_lookup = dns_lookup_ptr(
            ctx->dns, addr, ctx->peername_timeout, smtpd_peer_named, sess);
        return;
    }
    smtpd_session_start(sess);
}

/* smtpd_session_start - the client's name is known: log the connection,
   apply the per-client limits, send the 220 greeting */
static void smtpd_session_start(SMTPD_SESS *sess)
{
    SMTPD_CTX *ctx = sess->ctx;
    MAIL_SERVER *server = ctx->server;
    const char *addr = sess->proto->client_addr;
    bool local = sess->proto->local;

    msg_info("connect from %s[%s]", sess->proto->client_name, addr);
    bufferevent_enable(sess->bev, EV_READ | EV_WRITE);
    if (!local && smtpd_client_admit(ctx, addr, sess->proto->reply) != NULL) {
        smtpd_flush_reply(sess);
        smtpd_close(sess);
        return;
    }
    sess->counted = !local;
    if (!local && ctx->conf.tls_wrappermode) {
        /* smtps: the greeting is queued into TLS, sent after the
           handshake */
        smtpd_tls_start(sess);
        if (sess->closing)
            return;
    }
    if (!local && ctx->conf.session_deadline > 0) {
        sess->deadline_ev =
            evtimer_new(mail_server_base(server), smtpd_deadline_event, sess);
        if (sess->deadline_ev == NULL)
            msg_warn("cannot create the session deadline timer");
        smtpd_deadline_arm(sess);
    }
    if (!local && ctx->conf.milters != NULL) {
        smtpd_milter_connect_event(sess); /* greets once they decide */
        return;
    }
    vstr_sprintf(sess->proto->reply, "220 %s\r\n", ctx->conf.banner);
    smtpd_flush_reply(sess);
}

/* smtpd_accept - a new client from a listener */
static void smtpd_accept(MAIL_SERVER *server, int fd, void *arg)
{
    SMTPD_CTX *ctx = arg;
    char addr[NI_MAXHOST];
    int on = 1;

    smtpd_peer(fd, addr, sizeof(addr));
    /* Replies to a pipelined group go out as they are made: without
       TCP_NODELAY the second small write of a group waits for the client's
       delayed ACK (about 40 ms a message, measured by make bench). */
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    smtpd_session_new(ctx, fd, "unknown", addr, false);
}

/* smtpd_shed - at the descriptor limit a waiting client is turned away
   (mail_server closes fd): tell it to come back later */
static void smtpd_shed(MAIL_SERVER *server, int fd, void *arg)
{
    SMTPD_CTX *ctx = arg;
    char reply[512];
    int len;

    len = snprintf(reply, sizeof(reply),
                   "421 4.3.2 %s Service temporarily unavailable, try again"
                   " later\r\n",
                   ctx->conf.myhostname);
    if (len > 0 && (size_t) len < sizeof(reply))
        (void) send(fd, reply, (size_t) len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* smtpd_stand_alone - smtpd -S: the one session on fd 0 */
static void smtpd_stand_alone(SMTPD_CTX *ctx)
{
    struct stat st;
    int fd;

    /* fd 0 is both input and output: a socket (sendmail -bs makes one). */
    if (fstat(0, &st) < 0 || !S_ISSOCK(st.st_mode))
        msg_fatal("-S: standard input must be a socket"
                  " (run it through sendmail -bs)");
    if ((fd = fcntl(0, F_DUPFD_CLOEXEC, 3)) < 0)
        msg_fatal("-S: dup standard input: %m");
    if (sock_nonblock(fd, true) < 0)
        msg_fatal("-S: cannot make standard input non-blocking: %m");
    smtpd_session_new(ctx, fd, "localhost", "local", true);
}

/* smtpd_match_list - compile a domain or address list parameter; a bad
   word or a table that cannot be opened is fatal */
static MATCH_LIST *smtpd_match_list(const MAIL_CONF *conf, const char *param,
                                    int flags)
{
    ARGV *parent = mail_conf_list(conf, "parent_domain_matches_subdomains");
    VSTR *why = vstr_alloc(64);
    MATCH_LIST *list;

    for (size_t i = 0; i < parent->argc; i++)
        if (strcmp(parent->argv[i], param) == 0)
            flags |= MATCH_LIST_PARENT;
    argv_free(parent);
    if ((list = match_list_create(param, mail_conf_str(conf, param), flags,
                                  why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
    return list;
}

/* smtpd_access_init - the lists and tables of access control, opened once.
   A bad restriction word or a table that cannot be opened is logged, not
   fatal: smtpd keeps greeting clients and answers 451 for what depends on
   it (smtpd_check.c). A bad mydestination, relay_domains or mynetworks is
   still fatal (every recipient depends on them). */
static void smtpd_access_init(SMTPD_CONF *sc, const MAIL_CONF *conf)
{
    static const char *const params[SMTPD_LIST_COUNT] = {
        "smtpd_client_restrictions",    "smtpd_helo_restrictions",
        "smtpd_sender_restrictions",    "smtpd_relay_restrictions",
        "smtpd_recipient_restrictions",
    };
    VSTR *why = vstr_alloc(64);

    sc->myorigin = mystrdup(mail_conf_str(conf, "myorigin"));
    sc->verp_domain = mystrdup(mail_conf_str(conf, "bounce_verp_domain"));
    sc->unsub_domain =
        mystrdup(mail_conf_str(conf, "unsubscribe_mailto_domain"));
    sc->complaint_addresses =
        mystrdup(mail_conf_str(conf, "complaint_addresses"));
    sc->mydestination =
        smtpd_match_list(conf, "mydestination", MATCH_LIST_DOMAIN);
    sc->relay_domains =
        smtpd_match_list(conf, "relay_domains", MATCH_LIST_DOMAIN);
    sc->mynetworks = smtpd_match_list(conf, "mynetworks", MATCH_LIST_ADDR);
    for (int i = 0; i < SMTPD_LIST_COUNT; i++) {
        sc->restrictions[i] =
            smtpd_check_parse(params[i], mail_conf_str(conf, params[i]), why);
        if (vstr_len(why) > 0)
            msg_warn("%s: answering 451 for what depends on it", vstr_str(why));
    }
    if ((sc->local_recipient_maps = smtpd_maps_create(
             "local_recipient_maps",
             mail_conf_str(conf, "local_recipient_maps"), why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    sc->recipient_delimiter =
        mystrdup(mail_conf_str(conf, "recipient_delimiter"));
    sc->virtual_alias = smtpd_virtual_create(conf);
    sc->unknown_client_code =
        (int) mail_conf_int(conf, "unknown_client_reject_code");
    sc->auth = smtpd_auth_create(conf);
    vstr_free(why);
}

/* smtpd_conf_ms - a delay "1", "1s", "0.2s", "200ms" in milliseconds;
   -1 when it is not one (at most a minute) */
static int smtpd_conf_ms(const char *value)
{
    long long whole = 0;
    long long frac = 0;
    long long scale = 1000;
    long long ms;
    const char *cp = value;
    int digits = 0;

    for (; *cp >= '0' && *cp <= '9' && digits < 6; cp++, digits++)
        whole = whole * 10 + (*cp - '0');
    if (*cp == '.') {
        for (cp++; *cp >= '0' && *cp <= '9'; cp++, digits++)
            if (scale > 1) {
                scale /= 10;
                frac += (*cp - '0') * scale;
            }
    }
    if (digits == 0)
        return -1;
    if (strcmp(cp, "ms") == 0)
        ms = whole + (frac >= 500 ? 1 : 0);
    else if (*cp == 0 || strcmp(cp, "s") == 0)
        ms = whole * 1000 + frac;
    else
        return -1;
    return ms <= 60000 ? (int) ms : -1;
}

/* smtpd_peername_init - DNS for client names, when smtpd_peername_lookup
   and DNS are on. A resolver that cannot be set up is logged, not fatal:
   clients are then greeted as unknown. */
static void smtpd_peername_init(SMTPD_CTX *ctx, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(64);

    ctx->peername_timeout =
        (int) mail_conf_time(conf, "smtpd_peername_lookup_timeout");
    if (ctx->stand_alone || !mail_conf_bool(conf, "smtpd_peername_lookup") ||
        mail_conf_bool(conf, "disable_dns_lookups")) {
        vstr_free(why);
        return;
    }
    if ((ctx->dns = dns_ctx_create(mail_server_base(ctx->server), conf, why)) ==
        NULL)
        msg_warn("DNS: %s: client host names are not looked up", vstr_str(why));
    else if (dns_ctx_hosts(ctx->dns, NULL, why) < 0)
        msg_warn("DNS: %s: client host names come from DNS alone",
                 vstr_str(why));
    vstr_free(why);
}

/* smtpd_tls_init - smtpd_tls_security_level and the certificate. At
   level may a certificate that cannot be loaded is a warning and STARTTLS
   is not offered; at encrypt and in wrapper mode it is fatal. */
static void smtpd_tls_init(SMTPD_CTX *ctx, const MAIL_CONF *conf)
{
    SMTPD_CONF *sc = &ctx->conf;
    const char *level = mail_conf_str(conf, "smtpd_tls_security_level");
    VSTR *why;

    sc->tls_wrappermode = mail_conf_bool(conf, "smtpd_tls_wrappermode");
    sc->tls_received_header = mail_conf_bool(conf, "smtpd_tls_received_header");
    sc->tls_auth_only = mail_conf_bool(conf, "smtpd_tls_auth_only");
    ctx->starttls_timeout =
        (int) mail_conf_time(conf, "smtpd_starttls_timeout");
    if (*level == 0 || strcasecmp(level, "none") == 0) {
        sc->tls_level = SMTPD_TLS_NONE;
    } else if (strcasecmp(level, "may") == 0) {
        sc->tls_level = SMTPD_TLS_MAY;
    } else if (strcasecmp(level, "encrypt") == 0) {
        sc->tls_level = SMTPD_TLS_ENCRYPT;
    } else if (strcasecmp(level, "verify") == 0 ||
               strcasecmp(level, "secure") == 0 ||
               strcasecmp(level, "fingerprint") == 0) {
        msg_warn("smtpd_tls_security_level = %s: client certificates are"
                 " not checked; using encrypt",
                 level);
        sc->tls_level = SMTPD_TLS_ENCRYPT;
    } else {
        msg_fatal("smtpd_tls_security_level: unknown level \"%s\" (use none,"
                  " may or encrypt)",
                  level);
    }
    if (ctx->stand_alone) { /* sendmail -bs: a local pipe, no TLS */
        sc->tls_level = SMTPD_TLS_NONE;
        sc->tls_wrappermode = false;
        return;
    }
    if (sc->tls_level == SMTPD_TLS_NONE && !sc->tls_wrappermode)
        return;
    why = vstr_alloc(100);
    if ((ctx->tls = tls_server_create(conf, sc->tls_level == SMTPD_TLS_ENCRYPT,
                                      why)) == NULL) {
        if (sc->tls_wrappermode)
            msg_fatal("smtpd_tls_wrappermode = yes: %s", vstr_str(why));
        if (sc->tls_level == SMTPD_TLS_ENCRYPT)
            msg_fatal("smtpd_tls_security_level = encrypt: %s", vstr_str(why));
        msg_warn("%s: STARTTLS is not offered", vstr_str(why));
    }
    vstr_free(why);
    sc->tls_offer = ctx->tls != NULL && !sc->tls_wrappermode;
}

/* smtpd_sasl_setup - Cyrus SASL when smtpd_sasl_auth_enable; a library
   that cannot be set up is logged and AUTH is not offered */
static void smtpd_sasl_setup(SMTPD_CTX *ctx, const MAIL_CONF *conf)
{
    SMTPD_CONF *sc = &ctx->conf;
    VSTR *why;

    sc->sasl_service = mystrdup(mail_conf_str(conf, "smtpd_sasl_service"));
    sc->sasl_local_domain =
        mystrdup(mail_conf_str(conf, "smtpd_sasl_local_domain"));
    sc->sasl_security_options =
        mystrdup(mail_conf_str(conf, "smtpd_sasl_security_options"));
    sc->sasl_tls_security_options =
        mystrdup(mail_conf_str(conf, "smtpd_sasl_tls_security_options"));
    sc->auth_failure_limit =
        (int) mail_conf_int(conf, "smtpd_auth_failure_limit");
    if (ctx->stand_alone || !mail_conf_bool(conf, "smtpd_sasl_auth_enable"))
        return;
    why = vstr_alloc(100);
    if (smtpd_sasl_init(conf, why) < 0)
        msg_warn("SASL: %s: AUTH is not offered", vstr_str(why));
    else
        sc->sasl_enable = true;
    vstr_free(why);
}

/* smtpd_pre_loop - read main.cf once */
static void smtpd_pre_loop(MAIL_SERVER *server, void *arg)
{
    SMTPD_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    SMTPD_CONF *sc = &ctx->conf;
    VSTR *path = vstr_alloc(100);

    ctx->server = server;
    signal(SIGPIPE, SIG_IGN);
    sc->myhostname = mystrdup(mail_conf_str(conf, "myhostname"));
    sc->mail_name = mystrdup(mail_conf_str(conf, "mail_name"));
    if (*sc->mail_name == 0) {
        myfree((char *) sc->mail_name);
        sc->mail_name = mystrdup("sluice");
    }
    sc->banner = mystrdup(mail_conf_str(conf, "smtpd_banner"));
    sc->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    if (*sc->queue_dir == 0)
        msg_fatal("queue_directory is not set");
    smtpd_access_init(sc, conf);
    sc->message_size_limit = mail_conf_size(conf, "message_size_limit");
    sc->queue_minfree = mail_conf_size(conf, "queue_minfree");
    sc->space = mymalloc(sizeof(*sc->space));
    sc->space->when_usec = -1;
    /* Room for one more message of the largest size, and then some
       (Postfix's rule), whatever queue_minfree says; 0 said "no check". */
    if (sc->message_size_limit > 0 &&
        sc->queue_minfree < sc->message_size_limit / 2 * 3)
        sc->queue_minfree = sc->message_size_limit / 2 * 3;
    /* mail_conf_read() has checked the bounds of mail_params.c: at least
       512 bytes a line (RFC 5321 4.5.3.1.4), timeouts and counts that fit
       an int, and limits of at least 1 where 0 means nothing. */
    sc->line_length_limit = mail_conf_int(conf, "line_length_limit");
    sc->timeout = (int) mail_conf_time(conf, "smtpd_timeout");
    sc->recipient_limit = (int) mail_conf_int(conf, "smtpd_recipient_limit");
    sc->hard_error_limit = (int) mail_conf_int(conf, "smtpd_hard_error_limit");
    sc->soft_error_limit = (int) mail_conf_int(conf, "smtpd_soft_error_limit");
    sc->junk_command_limit =
        (int) mail_conf_int(conf, "smtpd_junk_command_limit");
    if ((sc->error_sleep_ms = smtpd_conf_ms(
             mail_conf_str(conf, "smtpd_error_sleep_time"))) < 0) {
        msg_warn("smtpd_error_sleep_time: bad delay \"%s\" (use \"1s\","
                 " \"0.5s\", at most 60s): using 1s",
                 mail_conf_str(conf, "smtpd_error_sleep_time"));
        sc->error_sleep_ms = 1000;
    }
    sc->session_deadline = (int) mail_conf_time(conf, "smtpd_session_deadline");
    sc->process_connection_limit =
        (int) mail_conf_int(conf, "smtpd_process_connection_limit");
    sc->client_connection_count_limit =
        (int) mail_conf_int(conf, "smtpd_client_connection_count_limit");
    sc->client_connection_rate_limit =
        (int) mail_conf_int(conf, "smtpd_client_connection_rate_limit");
    sc->client_connection_rate_time_unit =
        (int) mail_conf_time(conf, "smtpd_client_connection_rate_time_unit");
    sc->event_limit_exceptions = smtpd_match_list(
        conf, "smtpd_client_event_limit_exceptions", MATCH_LIST_ADDR);
    sc->forbid_bare_newline = mail_conf_bool(conf, "smtpd_forbid_bare_newline");
    sc->disable_vrfy = mail_conf_bool(conf, "disable_vrfy_command");
    mail_queue_service(path, sc->queue_dir, MAIL_QUEUE_PRIVATE,
                       CLEANUP_SERVICE);
    ctx->cleanup_path = vstr_export(path);
    smtpd_peername_init(ctx, conf);
    smtpd_tls_init(ctx, conf);
    smtpd_sasl_setup(ctx, conf);
    sc->milters = smtpd_milter_conf(conf);
    if (!ctx->stand_alone) {
        VSTR *why = vstr_alloc(100);

        if ((ctx->conn_stats =
                 conn_stats_open(sc->queue_dir, CONN_STATS_IN, why)) == NULL)
            msg_warn("%s; sessions are not counted for the metrics",
                     vstr_str(why));
        vstr_free(why);
    }
    if (ctx->stand_alone)
        smtpd_stand_alone(ctx);
}

/* smtpd_retire - finish the sessions in hand, then exit */
static void smtpd_retire(MAIL_SERVER *server, void *arg)
{
    SMTPD_CTX *ctx = arg;

    if (ctx->conn_count == 0)
        mail_server_exit(server, 0);
}

/* smtpd_post_loop - the loop ended (SIGTERM): close what is still open */
static void smtpd_post_loop(MAIL_SERVER *server, void *arg)
{
    SMTPD_CTX *ctx = arg;

    while (ctx->sessions)
        smtpd_session_free(ctx->sessions);
    ctx->conn_stats = conn_stats_close(ctx->conn_stats);
    if (ctx->dns != NULL)
        ctx->dns = dns_ctx_free(ctx->dns);
}

/* smtpd_ctx_release - free what pre_loop read (ASan leak reports) */
static void smtpd_ctx_release(SMTPD_CTX *ctx)
{
    SMTPD_CONF *sc = &ctx->conf;

    myfree((char *) sc->myhostname);
    myfree((char *) sc->mail_name);
    myfree((char *) sc->banner);
    myfree((char *) sc->queue_dir);
    sc->space = myfree(sc->space);
    myfree((char *) sc->myorigin);
    myfree((char *) sc->verp_domain);
    myfree((char *) sc->unsub_domain);
    myfree((char *) sc->complaint_addresses);
    sc->mydestination = match_list_free(sc->mydestination);
    sc->relay_domains = match_list_free(sc->relay_domains);
    sc->mynetworks = match_list_free(sc->mynetworks);
    sc->event_limit_exceptions = match_list_free(sc->event_limit_exceptions);
    for (int i = 0; i < SMTPD_LIST_COUNT; i++)
        sc->restrictions[i] = smtpd_check_free(sc->restrictions[i]);
    sc->local_recipient_maps = smtpd_maps_free(sc->local_recipient_maps);
    sc->virtual_alias = smtpd_virtual_free(sc->virtual_alias);
    sc->auth = smtpd_auth_free(sc->auth);
    sc->milters = smtpd_milter_conf_free(sc->milters);
    myfree((char *) sc->recipient_delimiter);
    myfree(ctx->cleanup_path);
    ctx->tls = tls_server_free(ctx->tls);
    if (sc->sasl_enable)
        smtpd_sasl_done();
    myfree((char *) sc->sasl_service);
    myfree((char *) sc->sasl_local_domain);
    myfree((char *) sc->sasl_security_options);
    myfree((char *) sc->sasl_tls_security_options);
    for (size_t i = 0; i < ctx->client_count; i++)
        myfree(ctx->clients[i].addr);
    myfree(ctx->clients);
}

/* main - the SMTP server */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = smtpd_pre_loop,
        .on_accept = smtpd_accept,
        .on_shed = smtpd_shed,
        .on_retire = smtpd_retire,
        .post_loop = smtpd_post_loop,
    };
    SMTPD_CTX ctx;
    int status;

    memset(&ctx, 0, sizeof(ctx));
    /* -S (first): stand-alone for sendmail -bs. No master and no
       listeners: without SLUICE_SERVICE, mail_server takes nothing on fd 3
       for master's status socket. */
    if (argc > 1 && strcmp(argv[1], "-S") == 0) {
        ctx.stand_alone = true;
        ctx.local_uid = (long) getuid();
        memmove(argv + 1, argv + 2, (size_t) (argc - 1) * sizeof(*argv));
        argc--;
        (void) unsetenv("SLUICE_LISTEN_FDS");
        (void) unsetenv("SLUICE_SERVICE");
    }
    status = mail_server_main(argc, argv, "smtpd", &ops, &ctx);
    smtpd_ctx_release(&ctx);
    return status;
}
