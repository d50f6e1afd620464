/*
 * qmgr - the queue manager, first cut
 *
 * Exactly one qmgr runs per instance (maxproc 1), listening on
 * public/qmgr for one-byte wake-ups from cleanup, master (every `wakeup`
 * seconds) and later `sluice flush`. This first cut only takes the
 * triggers and looks at incoming/: it counts what waits and logs that.
 * Scheduling and delivery (moving incoming/ to active/, retries, agents)
 * are issue #4; nothing here moves or removes a queue file, so nothing can
 * be lost by it.
 */
#include "sys_defs.h"

#include <dirent.h>

#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "qid.h"
#include "trigger.h"
#include "vstr.h"

#define QMGR_TICK 60                    /* seconds between periodic scans */

typedef struct QMGR_CTX {
    char *queue_dir;
    size_t last_count;                  /* incoming/ at the last scan */
} QMGR_CTX;

/* qmgr_scan_incoming - count the committed queue files in incoming/ */
static void qmgr_scan_incoming(QMGR_CTX *ctx, const char *why)
{
    VSTR *path = vstr_alloc(100);
    struct dirent *de;
    size_t count = 0;
    DIR *dp;

    vstr_sprintf(path, "%s/%s", ctx->queue_dir, MAIL_QUEUE_INCOMING);
    if ((dp = opendir(vstr_str(path))) == NULL) {
        msg_warn("open %s: %m", vstr_str(path));
    } else {
        /* Temporary files of cleanup (".tmp.QID") are not queue files. */
        while ((de = readdir(dp)) != NULL)
            if (qid_valid(de->d_name))
                count++;
        closedir(dp);
        if (count != ctx->last_count || msg_verbose_get())
            msg_info("%s: %zu message%s in incoming (delivery is not built yet)",
                     why, count, count == 1 ? "" : "s");
        ctx->last_count = count;
    }
    vstr_free(path);
}

/* qmgr_pre_loop - read the configuration once */
static void qmgr_pre_loop(MAIL_SERVER *server, void *arg)
{
    QMGR_CTX *ctx = arg;

    ctx->queue_dir = mystrdup(mail_conf_str(mail_server_conf(server),
                                            "queue_directory"));
    qmgr_scan_incoming(ctx, "start");
}

/* qmgr_trigger - a wake-up arrived */
static void qmgr_trigger(MAIL_SERVER *server, int byte, void *arg)
{
    QMGR_CTX *ctx = arg;

    if (byte == TRIGGER_WAKEUP || byte == TRIGGER_SCAN_ALL)
        qmgr_scan_incoming(ctx, "wakeup");
    else if (msg_verbose_get())
        msg_info("ignoring trigger byte %d", byte);
}

/* qmgr_tick - the periodic scan that catches any lost trigger */
static void qmgr_tick(MAIL_SERVER *server, void *arg)
{
    qmgr_scan_incoming(arg, "scan");
}

/* main - the queue manager */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = qmgr_pre_loop,
        .on_trigger = qmgr_trigger,
        .on_tick = qmgr_tick,
        .tick_seconds = QMGR_TICK,
    };
    QMGR_CTX ctx = {0};
    int status;

    status = mail_server_main(argc, argv, "qmgr", &ops, &ctx);
    myfree(ctx.queue_dir);
    return status;
}
