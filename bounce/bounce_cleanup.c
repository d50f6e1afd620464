/*
 * bounce_cleanup - hand a notice to cleanup
 *
 * A blocking client of private/cleanup (global/cleanup_proto.h), like
 * pickup: BEGIN, one RCPT, DATA chunks, END, each read with a timeout. The
 * notice counts as queued only when cleanup answers END with status 0
 * (the queue file and incoming/ are fsynced by then). Any failure closes
 * the connection before END, which makes cleanup remove the partial file:
 * nothing half-sent.
 */
#include "sys_defs.h"

#include "attr.h"
#include "bounce.h"
#include "cleanup_proto.h"
#include "mymalloc.h"
#include "sock.h"
#include "vstr.h"

#define BOUNCE_STATUS_MAX 4096          /* a cleanup STATUS list */

/* bounce_cleanup_send - write one list and free it; 0 or -1 (why) */
static int bounce_cleanup_send(ATTR_STREAM *stream, ATTR_LIST *list, VSTR *why)
{
    int ret = attr_stream_write(stream, list, why);

    attr_list_free(list);
    return ret;
}

/* bounce_cleanup_status - one STATUS list: 0, or -1 with the reason in why
   (also for a status that is not 0) */
static int bounce_cleanup_status(ATTR_STREAM *stream, VSTR *queue_id,
                                 VSTR *why)
{
    ATTR_LIST *list = NULL;
    long long status = -1;
    const char *value;

    if (attr_stream_read(stream, &list, why) < 0)
        return -1;
    if (attr_list_check(list, cleanup_status_spec,
                        SLUICE_ARRAY_LEN(cleanup_status_spec), why) < 0) {
        attr_list_free(list);
        return -1;
    }
    (void) attr_get_int(list, "status", &status);
    if (status != 0) {
        value = attr_get_str(list, "reason");
        vstr_sprintf(why, "cleanup: %lld %s", status,
                     value ? value : "no reason given");
    } else if (queue_id != NULL &&
               (value = attr_get_str(list, "queue_id")) != NULL) {
        vstr_cpy(queue_id, value);
    }
    attr_list_free(list);
    return status == 0 ? 0 : -1;
}

/* bounce_cleanup_submit - queue one message; see bounce.h */
int bounce_cleanup_submit(const char *cleanup_path, int timeout_ms, int flags,
                          const char *sender, const char *recipient,
                          BOUNCE_COMPOSE compose, void *arg, VSTR *queue_id,
                          VSTR *why)
{
    ATTR_STREAM *stream;
    ATTR_LIST *list;
    VSTR *content = NULL;
    VSTR *new_id = vstr_alloc(32);
    int ret = -1;
    size_t pos;
    int sock;

    if ((sock = sock_unix_connect(cleanup_path)) < 0) {
        vstr_sprintf(why, "connect to %s: %s", cleanup_path, strerror(errno));
        vstr_free(new_id);
        return -1;
    }
    stream = attr_stream_open(sock, BOUNCE_STATUS_MAX, timeout_ms);

    list = attr_list_alloc();
    attr_add_str(list, "request", CLEANUP_REQ_BEGIN);
    attr_add_int(list, "flags", flags);
    attr_add_str(list, "sender", sender);
    attr_add_str(list, "origin", "bounce");
    if (bounce_cleanup_send(stream, list, why) < 0 ||
        bounce_cleanup_status(stream, new_id, why) < 0)
        goto out;
    if (vstr_len(new_id) == 0) {
        vstr_cpy(why, "cleanup: no queue ID in its reply");
        goto out;
    }

    list = attr_list_alloc();
    attr_add_str(list, "request", CLEANUP_REQ_RCPT);
    attr_add_str(list, "address", recipient);
    if (bounce_cleanup_send(stream, list, why) < 0)
        goto out;

    content = vstr_alloc(8192);
    compose(arg, vstr_str(new_id), content);
    for (pos = 0; pos < vstr_len(content); pos += CLEANUP_CHUNK_MAX) {
        size_t len = vstr_len(content) - pos;

        if (len > CLEANUP_CHUNK_MAX)
            len = CLEANUP_CHUNK_MAX;
        list = attr_list_alloc();
        attr_add_str(list, "request", CLEANUP_REQ_DATA);
        attr_add_data(list, "data", vstr_str(content) + pos, len);
        if (bounce_cleanup_send(stream, list, why) < 0)
            goto out;
    }

    list = attr_list_alloc();
    attr_add_str(list, "request", CLEANUP_REQ_END);
    attr_add_int(list, "abort", 0);
    if (bounce_cleanup_send(stream, list, why) < 0 ||
        bounce_cleanup_status(stream, NULL, why) < 0)
        goto out;
    vstr_cpy(queue_id, vstr_str(new_id));
    ret = 0;

out:
    /* Closing before a committed END makes cleanup drop the file. */
    attr_stream_close(stream);
    if (content != NULL)
        vstr_free(content);
    vstr_free(new_id);
    return ret;
}
