/*
 * showq - list the queue for mailq run by an ordinary user
 *
 * Serves public/showq (global/showq_proto.h) as mail_owner, who may read
 * the queue directories an ordinary user may not: one request per
 * connection, answered with the listing of global/queue_list.h (the text
 * `sluice queue` prints, envelope only) in pieces, then an END. A request
 * that does not come within SHOWQ_REQUEST_TIMEOUT seconds, or that is not
 * one, ends the connection (a bad one after a failed END saying why); a
 * client that stops reading is dropped after ipc_timeout.
 *
 * Listings are rare, so the work is blocking, one connection at a time per
 * process: it says busy meanwhile and master starts a sibling for the next
 * client (up to maxproc).
 */
#include "sys_defs.h"

#include "attr.h"
#include "mail_conf.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "queue_list.h"
#include "showq_proto.h"
#include "vstr.h"

#define SHOWQ_WRITE_TIMEOUT_MAX_MS (3600 * 1000)

typedef struct SHOWQ_CTX {
    char *queue_dir;
    int write_timeout_ms;
} SHOWQ_CTX;

/* showq_warn - a queue file that cannot be listed: the log, not the user */
static void showq_warn(const char *text, void *ctx)
{
    (void) ctx;
    msg_warn("%s", text);
}

/* showq_send_text - send out as TEXT pieces and empty it; 0 or -1 */
static int showq_send_text(ATTR_STREAM *stream, VSTR *out, VSTR *why)
{
    for (size_t at = 0; at < vstr_len(out); at += SHOWQ_TEXT_MAX) {
        ATTR_LIST *list = attr_list_alloc();
        size_t len = vstr_len(out) - at;
        int ret;

        attr_add_data(list, "text", vstr_str(out) + at,
                      len > SHOWQ_TEXT_MAX ? SHOWQ_TEXT_MAX : len);
        ret = attr_stream_write(stream, list, why);
        attr_list_free(list);
        if (ret < 0)
            return -1;
    }
    vstr_reset(out);
    return 0;
}

/* showq_send_end - send the END; 0 or -1 */
static int showq_send_end(ATTR_STREAM *stream, const char *reason, VSTR *why)
{
    ATTR_LIST *list = attr_list_alloc();
    int ret;

    attr_add_str(list, "status", reason ? SHOWQ_STAT_FAIL : SHOWQ_STAT_OK);
    if (reason)
        attr_add_str(list, "reason", reason);
    ret = attr_stream_write(stream, list, why);
    attr_list_free(list);
    return ret;
}

/* showq_send_list - the listing, piece by piece as the client takes it */
static int showq_send_list(SHOWQ_CTX *ctx, ATTR_STREAM *stream,
                           const SHOWQ_REQUEST *req, VSTR *why)
{
    QUEUE_LIST_OPTS opts = {
        .json = req->json,
        .by_domain = req->by_domain,
        .sender = req->sender,
        .recipient = req->recipient,
        .domain = req->domain,
        .reason = req->reason,
        .warn = showq_warn,
    };
    QUEUE_LIST *list = queue_list_open(ctx->queue_dir, &opts);
    VSTR *out = vstr_alloc(SHOWQ_TEXT_MAX);
    int ret = 0;

    queue_list_header(list, out);
    while (ret == 0 && queue_list_next(list, out))
        if (vstr_len(out) >= SHOWQ_TEXT_MAX)
            ret = showq_send_text(stream, out, why);
    if (ret == 0) {
        queue_list_footer(list, out);
        ret = showq_send_text(stream, out, why);
    }
    if (ret == 0)
        ret = showq_send_end(stream, NULL, why);
    queue_list_free(list);
    vstr_free(out);
    return ret;
}

/* showq_serve - one connection: one request, the listing, the END */
static void showq_serve(SHOWQ_CTX *ctx, int fd)
{
    ATTR_STREAM *stream =
        attr_stream_open(fd, SHOWQ_REQUEST_MAX, SHOWQ_REQUEST_TIMEOUT * 1000);
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = NULL;
    SHOWQ_REQUEST req = {0};

    ATTR_LIST *hello = showq_hello_list();
    int greeted;

    /* Our HELLO, then the client's: another version is logged with both. */
    greeted = attr_stream_write(stream, hello, why);
    hello = attr_list_free(hello);
    if (greeted == 0 && (greeted = attr_stream_read(stream, &hello, why)) == 0)
        greeted = showq_hello_take(hello, why);
    attr_list_free(hello);
    if (greeted < 0) {
        msg_warn("showq: %s", vstr_str(why));
    } else if (attr_stream_read(stream, &list, why) < 0) {
        msg_warn("showq request: %s", vstr_str(why));
    } else if (showq_request_decode(list, &req, why) < 0) {
        msg_warn("bad showq request: %s", vstr_str(why));
        (void) showq_send_end(stream, vstr_str(why), why);
    } else {
        /* A stream has one timeout: the writes' is another. */
        int out_fd = dup(fd);
        ATTR_STREAM *out;

        if (out_fd < 0) {
            msg_warn("showq: dup: %m");
        } else {
            out = attr_stream_open(out_fd, SHOWQ_REQUEST_MAX,
                                   ctx->write_timeout_ms);
            if (showq_send_list(ctx, out, &req, why) < 0)
                msg_warn("showq reply: %s", vstr_str(why));
            attr_stream_close(out);
        }
    }
    attr_list_free(list);
    attr_stream_close(stream);
    vstr_free(why);
}

/* showq_accept - a connection from mailq */
static void showq_accept(MAIL_SERVER *server, int fd, void *arg)
{
    /* Blocking work: let master give new connections to a sibling. */
    mail_server_busy(server, true);
    showq_serve(arg, fd);
    mail_server_busy(server, false);
}

/* showq_pre_loop - read the configuration */
static void showq_pre_loop(MAIL_SERVER *server, void *arg)
{
    SHOWQ_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    long long timeout = mail_conf_time(conf, "ipc_timeout") * 1000;

    ctx->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    /* ipc_timeout is at least 1s (mail_params.c); the cap is ours. */
    if (timeout > SHOWQ_WRITE_TIMEOUT_MAX_MS)
        timeout = SHOWQ_WRITE_TIMEOUT_MAX_MS;
    ctx->write_timeout_ms = (int) timeout;
}

/* main - the showq daemon */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = showq_pre_loop,
        .on_accept = showq_accept,
    };
    SHOWQ_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "showq", &ops, &ctx);
    myfree(ctx.queue_dir);
    return status;
}
