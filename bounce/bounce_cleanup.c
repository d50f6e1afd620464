/*
 * bounce_cleanup - hand a notice to cleanup
 *
 * Through global/cleanup_client: BEGIN, one RCPT, the content, END. The
 * notice counts as queued only when cleanup answers END with status 0 (the
 * queue file and incoming/ are fsynced by then); any failure hangs up
 * before END, which makes cleanup remove the partial file: nothing
 * half-sent. The content is composed once cleanup has named the new file,
 * because a DSN's Message-ID carries its own queue ID.
 */
#include "sys_defs.h"

#include "bounce.h"
#include "cleanup_client.h"
#include "vstr.h"

/* bounce_cleanup_submit - queue one message; see bounce.h */
int bounce_cleanup_submit(const char *cleanup_path, int timeout_ms, int flags,
                          const char *sender, const char *recipient,
                          BOUNCE_COMPOSE compose, void *arg, VSTR *queue_id,
                          VSTR *why)
{
    CLEANUP_CLIENT *client;
    VSTR *content;
    VSTR *new_id;

    if ((client = cleanup_client_open(cleanup_path, timeout_ms, flags, sender,
                                      "bounce", why)) == NULL)
        return -1;
    if (cleanup_client_rcpt(client, recipient, NULL, NULL, why) < 0) {
        cleanup_client_abort(client);
        return -1;
    }
    new_id = vstr_alloc(32);
    vstr_cpy(new_id, cleanup_client_queue_id(client));
    content = vstr_alloc(8192);
    compose(arg, vstr_str(new_id), content);
    if (cleanup_client_write(client, vstr_str(content), vstr_len(content),
                             why) < 0) {
        cleanup_client_abort(client);
        vstr_free(content);
        vstr_free(new_id);
        return -1;
    }
    vstr_free(content);
    if (cleanup_client_commit(client, why) < 0) {
        vstr_free(new_id);
        return -1;
    }
    vstr_cpy(queue_id, vstr_str(new_id));
    vstr_free(new_id);
    return 0;
}
