/*
 * queue_list - the queue listing mailq shows, for `sluice queue` and showq
 *
 * Every message in maildrop/, incoming/, active/, deferred/ and hold/, in
 * that order and by queue ID within each: queue ID (with '*' when active,
 * '!' when on hold), size, arrival time, sender, then each recipient not
 * yet done, after the reason of its last temporary failure (the latest
 * "delayed" record of the message's defer log, global/dsn_log.h) when it
 * has one; a control byte in an address or a reason is shown as \xHH.
 * With json one JSON object per message per line with postqueue -j's
 * fields. With by_domain qshape's table instead (one row per recipient
 * domain, by the age of the message in minutes). Filters, combinable:
 * sender ("" for the null sender), and per pending recipient recipient,
 * domain and reason (a substring of its delay reason): a message is shown
 * when one of its pending recipients meets all three.
 *
 * Only the envelope is shown: never a header or a byte of the body. The
 * listing only reads the queue; a file that cannot be read or parsed is
 * reported through the warn callback, never touched.
 *
 * The text comes in pieces so that a server can send it as its client
 * reads it: queue_list_header(), queue_list_next() once per message until
 * it returns false, queue_list_footer().
 */
#ifndef QUEUE_LIST_H
#define QUEUE_LIST_H

#include "sys_defs.h"

#include "argv.h"
#include "vstr.h"

typedef struct QUEUE_LIST QUEUE_LIST;

typedef struct QUEUE_LIST_OPTS {
    bool json;
    bool by_domain;
    /* Filters; NULL: any. */
    const char *sender;
    const char *recipient;
    const char *domain;
    const char *reason;
    /* A file that cannot be read or parsed (one line, no newline). */
    void (*warn)(const char *text, void *ctx);
    void *warn_ctx;
} QUEUE_LIST_OPTS;

/* queue_list_open - a listing of the queue under queue_dir; opts (and the
   strings it points to) must outlive the listing */
extern QUEUE_LIST *queue_list_open(const char *queue_dir,
                                   const QUEUE_LIST_OPTS *opts);
/* queue_list_header - append the column heading (text listing only) */
extern void queue_list_header(QUEUE_LIST *list, VSTR *out);
/* queue_list_next - append the next message shown; false at the end */
extern bool queue_list_next(QUEUE_LIST *list, VSTR *out);
/* queue_list_footer - append the totals ("Mail queue is empty" when none)
   or the qshape table */
extern void queue_list_footer(QUEUE_LIST *list, VSTR *out);
extern QUEUE_LIST *queue_list_free(QUEUE_LIST *list);

/* queue_list_ids - every queue ID of one queue, hashed or not (unsorted;
   caller frees) */
extern ARGV *queue_list_ids(const char *queue_dir, const char *queue);

#endif
