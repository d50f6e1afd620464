/*
 * sluice_shaping - `sluice shaping [suspend NAME DURATION | resume NAME]`
 *
 * Without arguments: one line per shaping bucket qmgr holds (a recipient
 * domain, provider:NAME, or ?domain while its MX is looked up), with its
 * rule, its limits, the deliveries in flight against max_connections,
 * the tokens at hand against each rate's burst, a suspension and what
 * waits, and what response automation has in force (smtp_shaping_
 * automation_maps: the action and the rule that set it). suspend NAME
 * DURATION (90s, 30m, 2h, 1d...) holds everything
 * of that bucket for DURATION (a domain whose MX hosts put it under a
 * provider is held through provider:NAME, not its own name; a domain
 * without any rule is held for the mail that arrives from now on); resume
 * NAME ends a suspension now. A suspension lives in qmgr's memory: a
 * reload or a restart of qmgr ends it. When qmgr refused a malformed
 * rules file at its start (it then runs without rules), every answer
 * says so on stderr, with the file and line; the status stays 0. qmgr
 * is asked over private/qmgr-shaping (global/shaping_proto.h); a qmgr of
 * another protocol version is an error naming both.
 */
#include "sys_defs.h"

#include <time.h>

#include "attr.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mymalloc.h"
#include "shaping_proto.h"
#include "sluice.h"
#include "sock.h"
#include "vstr.h"

#define SLUICE_SHAPING_WAIT_MS 10000 /* for qmgr to answer */
#define SLUICE_SHAPING_USAGE                                                   \
    "usage: sluice shaping [suspend NAME DURATION | resume NAME]"

/* sluice_shaping_connect - a greeted stream to qmgr, or NULL after one
   line */
static ATTR_STREAM *sluice_shaping_connect(const char *queue_dir)
{
    VSTR *path = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    ATTR_STREAM *stream = NULL;
    ATTR_LIST *list;
    int connect_errno = 0;
    int fd;
    int ret;

    mail_queue_service(path, queue_dir, MAIL_QUEUE_PRIVATE,
                       SHAPING_PROTO_SERVICE);
    /* master runs but qmgr may be starting (or restarting): wait a little */
    for (int waited = 0;; waited += 100) {
        struct timespec pause = {0, 100 * 1000 * 1000};

        if ((fd = sock_unix_connect(vstr_str(path))) >= 0)
            break;
        connect_errno = errno;
        if (sluice_admin_master_down(queue_dir)) {
            sluice_fail("shaping: the mail system is not running");
            goto out;
        }
        if (waited >= SLUICE_SHAPING_WAIT_MS) {
            sluice_fail("shaping: cannot reach the queue manager at %s: %s",
                        vstr_str(path), strerror(connect_errno));
            goto out;
        }
        nanosleep(&pause, NULL);
    }
    stream =
        attr_stream_open(fd, SHAPING_PROTO_LIST_MAX, SLUICE_SHAPING_WAIT_MS);
    list = shaping_proto_hello_list();
    ret = attr_stream_write(stream, list, why);
    list = attr_list_free(list);
    if (ret == 0 && (ret = attr_stream_read(stream, &list, why)) == 0)
        ret = shaping_proto_hello_take(list, why);
    attr_list_free(list);
    if (ret < 0) {
        sluice_fail("shaping: queue manager: %s", vstr_str(why));
        stream = attr_stream_close(stream);
    }
out:
    vstr_free(path);
    vstr_free(why);
    return stream;
}

/* sluice_shaping_print - one BUCKET as a line */
static void sluice_shaping_print(const SHAPING_PROTO_BUCKET *b)
{
    VSTR *conns = vstr_alloc(20);

    if (b->max_connections > 0)
        vstr_sprintf(conns, "%lld/%lld", b->connections, b->max_connections);
    else
        vstr_sprintf(conns, "%lld/-", b->connections);
    printf("%-28s %-20s %9s %8s %6lld %8s %6lld %9lld %6lld %s\n", b->bucket,
           b->rule, vstr_str(conns), b->message_rate, b->message_tokens,
           b->connection_rate, b->connection_tokens, b->suspended, b->queued,
           b->automation);
    vstr_free(conns);
}

/* sluice_shaping_ask - one request; the bucket lines of "list" printed */
static int sluice_shaping_ask(ATTR_STREAM *stream,
                              const SHAPING_PROTO_REQUEST *req)
{
    ATTR_LIST *list = shaping_proto_request_list(req);
    VSTR *why = vstr_alloc(100);
    int status = 1;

    if (attr_stream_write(stream, list, why) < 0)
        goto fail;
    list = attr_list_free(list);
    if (strcmp(req->request, SHAPING_PROTO_REQ_LIST) == 0)
        printf("%-28s %-20s %9s %8s %6s %8s %6s %9s %6s %s\n", "BUCKET", "RULE",
               "CONNS", "MSGRATE", "TOKENS", "CONNRATE", "TOKENS", "SUSPENDED",
               "QUEUED", "AUTOMATION");
    for (;;) {
        SHAPING_PROTO_BUCKET bucket;
        SHAPING_PROTO_REPLY reply;

        if (attr_stream_read(stream, &list, why) < 0)
            goto fail;
        if (shaping_proto_is_bucket(list)) {
            if (shaping_proto_bucket_take(list, &bucket, why) < 0)
                goto fail;
            sluice_shaping_print(&bucket);
            list = attr_list_free(list);
            continue;
        }
        if (shaping_proto_reply_take(list, &reply, why) < 0)
            goto fail;
        if (reply.refused != NULL)
            fprintf(stderr,
                    "sluice: shaping: warning: qmgr refused a rules file "
                    "and runs without its rules: %s\n",
                    reply.refused);
        if (reply.redis != NULL &&
            strcmp(req->request, SHAPING_PROTO_REQ_LIST) == 0)
            printf("redis: %s\n", reply.redis);
        if (reply.status != SHAPING_PROTO_STAT_OK) {
            sluice_fail("shaping: queue manager: %s",
                        reply.reason ? reply.reason : "failed");
        } else {
            status = 0;
        }
        break;
    }
    attr_list_free(list);
    vstr_free(why);
    return status;
fail:
    sluice_fail("shaping: queue manager: %s", vstr_str(why));
    attr_list_free(list);
    vstr_free(why);
    return 1;
}

/* sluice_shaping - the subcommand */
int sluice_shaping(const char *config_dir, int argc, char **argv)
{
    SHAPING_PROTO_REQUEST req = {.request = SHAPING_PROTO_REQ_LIST};
    ATTR_STREAM *stream;
    char *queue_dir;
    int status;

    if (argc == 4 && strcmp(argv[1], "suspend") == 0) {
        bool ok = false;

        req.request = SHAPING_PROTO_REQ_SUSPEND;
        req.name = argv[2];
        req.seconds = mail_conf_parse_time(argv[3], &ok);
        if (!ok || req.seconds < 1 || req.seconds > SHAPING_PROTO_MAX_SECONDS)
            return sluice_fail("shaping: suspend: \"%s\" is not a duration "
                               "from 1s to 366d (90s, 30m, 2h, 1d)",
                               argv[3]);
    } else if (argc == 3 && strcmp(argv[1], "resume") == 0) {
        req.request = SHAPING_PROTO_REQ_RESUME;
        req.name = argv[2];
    } else if (argc != 1) {
        return sluice_fail("%s", SLUICE_SHAPING_USAGE);
    }
    if (req.name && !shaping_proto_name_ok(req.name))
        return sluice_fail("shaping: \"%s\" is not a domain or provider:NAME",
                           req.name);
    if ((queue_dir = sluice_queue_dir(config_dir)) == NULL)
        return 1;
    if ((stream = sluice_shaping_connect(queue_dir)) == NULL) {
        myfree(queue_dir);
        return 1;
    }
    status = sluice_shaping_ask(stream, &req);
    if (status == 0 && req.name)
        printf("sluice: shaping: %s %s\n", req.name,
               strcmp(req.request, SHAPING_PROTO_REQ_SUSPEND) == 0 ? "suspended"
                                                                   : "resumed");
    attr_stream_close(stream);
    myfree(queue_dir);
    return status;
}
