/*
 * bev_direct - write to a plain socket bufferevent without a trip through
 * the event loop (bev_direct.h says when, and what it means for the write
 * callback)
 *
 * A failed send is not an error here: whatever the socket refused (EAGAIN,
 * or a peer that went away) is queued, and libevent's own write then meets
 * the same condition and reports it through the event callback as before.
 */
#include "sys_defs.h"

#include <errno.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "bev_direct.h"

/* bev_direct_plain - is bev a socket bufferevent without TLS? */
static bool bev_direct_plain(struct bufferevent *bev)
{
    return bufferevent_get_underlying(bev) == NULL &&
           bufferevent_openssl_get_ssl(bev) == NULL &&
           bufferevent_getfd(bev) >= 0;
}

/* bev_direct_write - send what the socket takes now, queue the rest */
int bev_direct_write(struct bufferevent *bev, const void *data, size_t len)
{
    const char *cp = data;
    ssize_t n;

    if (len == 0)
        return evbuffer_get_length(bufferevent_get_output(bev)) == 0
                   ? BEV_DIRECT_ALL_SENT
                   : BEV_DIRECT_QUEUED;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
        bev_direct_plain(bev)) {
        do {
            n = send(bufferevent_getfd(bev), cp, len,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n > 0) {
            cp += n;
            len -= (size_t) n;
            if (len == 0)
                return BEV_DIRECT_ALL_SENT;
        }
    }
    if (bufferevent_write(bev, cp, len) < 0)
        return BEV_DIRECT_ERROR;
    return BEV_DIRECT_QUEUED;
}
