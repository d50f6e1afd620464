/*
 * bev_direct - write to a plain socket bufferevent without a trip through
 * the event loop
 *
 * bufferevent_write() only queues: libevent then turns EPOLLOUT on, writes
 * from the loop and turns it off again (two epoll_ctl calls per reply).
 * When the output buffer is empty the socket can usually take the bytes at
 * once: bev_direct_write() sends them, and queues only what the kernel did
 * not take (which arms EPOLLOUT as before). Order is kept: anything already
 * queued goes first, so then everything is queued.
 *
 * Only for a socket bufferevent that is not TLS (an OpenSSL bufferevent
 * or a filter over one is always written through libevent: its bytes must
 * go through OpenSSL).
 *
 * The write callback: libevent calls it when output it wrote fell to the
 * low watermark. Bytes that went out directly never were output, so no
 * callback follows them: a caller that waits for "the output is out"
 * looks at the return value (BEV_DIRECT_ALL_SENT) and acts at once, or
 * triggers the callback itself (bufferevent_trigger, deferred).
 */
#ifndef BEV_DIRECT_H
#define BEV_DIRECT_H

#include <stddef.h>

#include <event2/bufferevent.h>

#define BEV_DIRECT_ERROR (-1) /* could not even be queued */
#define BEV_DIRECT_QUEUED 0 /* some or all queued: the write callback follows */
#define BEV_DIRECT_ALL_SENT 1 /* all in the kernel: no write callback */

/* bev_direct_write - send or queue len bytes, in order (see above) */
extern int bev_direct_write(struct bufferevent *bev, const void *data,
                            size_t len);

#endif
