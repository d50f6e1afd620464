/*
 * cleanup_client - a blocking client of private/cleanup
 *
 * HELLO, BEGIN, RCPT..., DATA chunks, END over one connection, each reply
 * read with a time limit (attr streams); cleanup's HELLO is read before the
 * STATUS of BEGIN, and a mismatch fails the open with both versions in the
 * reason. Every list is built and read by the codec (cleanup_proto.c). Content
 * is collected into chunks of CLEANUP_CHUNK_MAX so a caller may write it in
 * pieces of any size. A failure anywhere leaves the client good only for abort:
 * the connection is closed before END and cleanup removes its partial file.
 */
#include "sys_defs.h"

#include "attr.h"
#include "cleanup_client.h"
#include "cleanup_proto.h"
#include "mymalloc.h"
#include "sock.h"
#include "vstr.h"

struct CLEANUP_CLIENT {
    ATTR_STREAM *stream;
    VSTR *queue_id;
    VSTR *chunk; /* content not yet sent */
    bool failed; /* sticky */
};

/* cleanup_client_send - write one list and free it; 0 or -1 (why) */
static int cleanup_client_send(CLEANUP_CLIENT *client, ATTR_LIST *list,
                               VSTR *why)
{
    int ret = attr_stream_write(client->stream, list, why);

    attr_list_free(list);
    if (ret < 0)
        client->failed = true;
    return ret;
}

/* cleanup_client_hello - read cleanup's HELLO: 0, or -1 with the reason
   (a mismatch names both sides' protocol and version) */
static int cleanup_client_hello(CLEANUP_CLIENT *client, VSTR *why)
{
    ATTR_LIST *list = NULL;
    int ret;

    if (attr_stream_read(client->stream, &list, why) < 0) {
        client->failed = true;
        return -1;
    }
    ret = cleanup_hello_take(list, why);
    attr_list_free(list);
    if (ret < 0) {
        char *reason = mystrdup(vstr_str(why));

        client->failed = true;
        vstr_sprintf(why, "cleanup: %s", reason);
        myfree(reason);
    }
    return ret;
}

/* cleanup_client_status - read one STATUS list: 0, or -1 with the reason
   in why (also for a status that is not 0, which then goes to *code when
   code is not NULL); the queue ID goes to queue_id when asked for */
static int cleanup_client_status(CLEANUP_CLIENT *client, VSTR *queue_id,
                                 int *code, VSTR *why)
{
    ATTR_LIST *list = NULL;
    CLEANUP_STATUS reply;

    if (attr_stream_read(client->stream, &list, why) < 0) {
        client->failed = true;
        return -1;
    }
    if (cleanup_status_take(list, &reply, why) < 0) {
        attr_list_free(list);
        client->failed = true;
        return -1;
    }
    if (code != NULL && reply.status != 0)
        *code = reply.status;
    if (reply.status != 0)
        vstr_sprintf(why, "cleanup: %d %s", reply.status,
                     reply.reason ? reply.reason : "no reason given");
    else if (queue_id != NULL && reply.queue_id != NULL)
        vstr_cpy(queue_id, reply.queue_id);
    attr_list_free(list);
    if (reply.status != 0)
        client->failed = true;
    return reply.status == 0 ? 0 : -1;
}

/* cleanup_client_flush - send what the chunk holds as one DATA list */
static int cleanup_client_flush(CLEANUP_CLIENT *client, VSTR *why)
{
    ATTR_LIST *list;

    if (vstr_len(client->chunk) == 0)
        return 0;
    list = cleanup_data_list(vstr_str(client->chunk), vstr_len(client->chunk));
    vstr_reset(client->chunk);
    return cleanup_client_send(client, list, why);
}

/* cleanup_client_free - close the connection, release the client */
static void cleanup_client_free(CLEANUP_CLIENT *client)
{
    attr_stream_close(client->stream);
    vstr_free(client->queue_id);
    vstr_free(client->chunk);
    myfree(client);
}

/* cleanup_client_open - connect and send BEGIN; see cleanup_client.h */
CLEANUP_CLIENT *cleanup_client_open(const char *path, int timeout_ms, int flags,
                                    const char *sender, const char *origin,
                                    VSTR *why)
{
    return cleanup_client_begin(path, timeout_ms, flags, sender, origin, NULL,
                                NULL, why);
}

/* cleanup_client_begin - cleanup_client_open with a full name and the
   refusal code; see cleanup_client.h */
CLEANUP_CLIENT *cleanup_client_begin(const char *path, int timeout_ms,
                                     int flags, const char *sender,
                                     const char *origin, const char *full_name,
                                     int *code, VSTR *why)
{
    return cleanup_client_begin_dsn(path, timeout_ms, flags, sender, origin,
                                    full_name, NULL, NULL, code, why);
}

/* cleanup_client_begin_dsn - cleanup_client_begin with RET and ENVID; see
   cleanup_client.h */
CLEANUP_CLIENT *cleanup_client_begin_dsn(const char *path, int timeout_ms,
                                         int flags, const char *sender,
                                         const char *origin,
                                         const char *full_name, const char *ret,
                                         const char *envid, int *code,
                                         VSTR *why)
{
    CLEANUP_CLIENT *client;
    CLEANUP_BEGIN begin = {.flags = flags,
                           .sender = sender,
                           .origin = origin,
                           .size = -1,
                           .ret = ret,
                           .envid = envid,
                           .full_name = full_name};
    int sock;

    if (code != NULL)
        *code = 0;

    if ((sock = sock_unix_connect(path)) < 0) {
        vstr_sprintf(why, "connect to %s: %s", path, strerror(errno));
        return NULL;
    }
    client = mycalloc(1, sizeof(*client));
    client->stream = attr_stream_open(sock, CLEANUP_STATUS_MAX, timeout_ms);
    client->queue_id = vstr_alloc(32);
    client->chunk = vstr_alloc(8192);
    /* Our HELLO and BEGIN at once; cleanup's HELLO precedes its STATUS. */
    if (cleanup_client_send(client, cleanup_hello_list(), why) < 0 ||
        cleanup_client_send(client, cleanup_begin_list(&begin), why) < 0 ||
        cleanup_client_hello(client, why) < 0 ||
        cleanup_client_status(client, client->queue_id, code, why) < 0) {
        cleanup_client_free(client);
        return NULL;
    }
    if (vstr_len(client->queue_id) == 0) {
        vstr_cpy(why, "cleanup: no queue ID in its reply");
        cleanup_client_free(client);
        return NULL;
    }
    return client;
}

/* cleanup_client_queue_id - the ID cleanup gave the message */
const char *cleanup_client_queue_id(const CLEANUP_CLIENT *client)
{
    return vstr_str(client->queue_id);
}

/* cleanup_client_rcpt - send one RCPT list */
int cleanup_client_rcpt(CLEANUP_CLIENT *client, const char *address,
                        const char *orcpt, const char *notify, VSTR *why)
{
    CLEANUP_RCPT rcpt = {.address = address, .orcpt = orcpt, .notify = notify};

    if (client->failed) {
        vstr_cpy(why, "cleanup client: earlier error");
        return -1;
    }
    return cleanup_client_send(client, cleanup_rcpt_list(&rcpt), why);
}

/* cleanup_client_write - buffer content, sending whole chunks */
int cleanup_client_write(CLEANUP_CLIENT *client, const char *data, size_t len,
                         VSTR *why)
{
    if (client->failed) {
        vstr_cpy(why, "cleanup client: earlier error");
        return -1;
    }
    while (len > 0) {
        size_t room = CLEANUP_CHUNK_MAX - vstr_len(client->chunk);
        size_t take = len < room ? len : room;

        vstr_ncat(client->chunk, data, take);
        data += take;
        len -= take;
        if (vstr_len(client->chunk) == CLEANUP_CHUNK_MAX &&
            cleanup_client_flush(client, why) < 0)
            return -1;
    }
    return 0;
}

/* cleanup_client_commit - END and its STATUS; frees the client */
int cleanup_client_commit(CLEANUP_CLIENT *client, VSTR *why)
{
    return cleanup_client_end(client, NULL, why);
}

/* cleanup_client_end - cleanup_client_commit with the refusal code */
int cleanup_client_end(CLEANUP_CLIENT *client, int *code, VSTR *why)
{
    return cleanup_client_end_hold(client, NULL, code, why);
}

/* cleanup_client_end_hold - cleanup_client_end, into hold/ when hold */
int cleanup_client_end_hold(CLEANUP_CLIENT *client, const char *hold, int *code,
                            VSTR *why)
{
    CLEANUP_END end = {.abort = false, .hold = hold};
    int ret = -1;

    if (code != NULL)
        *code = 0;
    if (client->failed) {
        vstr_cpy(why, "cleanup client: earlier error");
    } else if (cleanup_client_flush(client, why) == 0) {
        if (cleanup_client_send(client, cleanup_end_list(&end), why) == 0 &&
            cleanup_client_status(client, NULL, code, why) == 0)
            ret = 0;
    }
    cleanup_client_free(client);
    return ret;
}

/* cleanup_client_abort - hang up before END */
CLEANUP_CLIENT *cleanup_client_abort(CLEANUP_CLIENT *client)
{
    if (client != NULL)
        cleanup_client_free(client);
    return NULL;
}
