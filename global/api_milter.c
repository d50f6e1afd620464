/*
 * api_milter - non_smtpd_milters for the API's mail, off the event loop
 *
 * (api_milter.h says what and why.) The child's answer on the pipe is a
 * list of fields, each "LEN\n" then LEN bytes: the status (a digit of
 * PICKUP_MILTER_STATUS), the stage, the reply, the quarantine reason, the
 * number of added recipients, each added recipient, and the content as
 * the milters left it. The parent reads it all (at most the milters'
 * limit and some) and takes it only when it is whole.
 *
 * A child is reaped without waiting: SIGKILL (it has said all it will,
 * or has taken too long), waitpid(WNOHANG), and while it is not gone yet
 * a timer looks again; it holds its place among the children until then.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "api_milter.h"
#include "argv.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "smtp_addr.h"
#include "vstr.h"

#define API_MILTER_READ 65536 /* bytes per read from the child */
#define API_MILTER_SLACK (1024 * 1024) /* answer beyond the content limit */
#define API_MILTER_TIME_SLACK 5 /* seconds beyond the milters' timeouts */
#define API_MILTER_REAP_MS 50 /* first look again for a killed child */

typedef struct API_MILTER API_MILTER;

/* Test hook: api_milter_test.c includes this file with a child body of its
   own (one that writes a made-up answer, or stalls) in place of the milter
   client's; the program always runs api_milter_child. */
#ifndef API_MILTER_CHILD
#define API_MILTER_CHILD api_milter_child
#endif

/* A killed child not reaped yet. */
typedef struct API_MILTER_REAP {
    API_MILTERS *ams;
    pid_t pid;
    int delay_ms; /* till the next look; doubles up to a second */
    struct event *timer;
    struct API_MILTER_REAP *next;
} API_MILTER_REAP;

struct API_MILTERS {
    PICKUP_MILTER_CONF *pmc;
    int process_limit;
    int children; /* forked and not reaped */
    long long deadline; /* seconds a child may take */
    API_MILTER *wait_head; /* messages waiting for a child, in order */
    API_MILTER *wait_tail;
    API_MILTER_REAP *reaps;
    struct event *kick; /* starts waiting messages, from the loop */
};

struct API_MILTER {
    struct event_base *base;
    API_MILTERS *ams;
    const PICKUP_MILTER_CONF *pmc;
    char *path; /* cleanup's */
    int timeout_sec;
    API_MESSAGE *msg;
    char *tenant;
    API_HANDOFF_DONE done;
    void *arg;
    pid_t pid;
    int fd; /* the pipe's read end */
    struct event *ev; /* the pipe */
    struct event *timer; /* the wait for a child, then the child's time */
    bool waiting; /* in the wait list */
    API_MILTER *next_wait;
    VSTR *in; /* the child's answer so far */
    VSTR *reply; /* the milters' verdict, for result->milter */
    VSTR *hold; /* "milter quarantine: REASON", borrowed by msg->hold */
    const char *quarantine; /* result->quarantine, NULL: none */
};

/* api_milter_field - append one field */
static void api_milter_field(VSTR *out, const char *data, size_t len)
{
    vstr_sprintf_append(out, "%zu\n", len);
    vstr_ncat(out, data, len);
}

/* api_milter_child - in the child: run the milters, write the answer,
   exit (no return) */
static void api_milter_child(const API_MILTER *am, int fd)
{
    PICKUP_MILTER_RESULT res;
    VSTR *content = vstr_alloc(vstr_len(am->msg->content) + 1);
    VSTR *out;
    char status;

    /* Nothing of the parent's: its clients' and cleanup's connections
       must end when it closes them. The milter client opens its own. */
    msg_close_fds(fd);
    vstr_ncpy(content, vstr_str(am->msg->content), vstr_len(am->msg->content));
    pickup_milter_result_init(&res);
    if (vstr_len(content) > pickup_milter_limit(am->pmc) &&
        pickup_milter_too_big(am->pmc, "NOQUEUE", &res)) {
        /* milter_default_action, the milters not asked */
    } else {
        pickup_milter_run(am->pmc, "NOQUEUE", am->msg->sender, am->msg->rcpts,
                          content, &res);
    }
    out = vstr_alloc(vstr_len(content) + 256);
    status = (char) ('0' + (int) res.status);
    api_milter_field(out, &status, 1);
    api_milter_field(out, res.stage, strlen(res.stage));
    api_milter_field(out, vstr_str(res.reply), vstr_len(res.reply));
    api_milter_field(out, vstr_str(res.hold), vstr_len(res.hold));
    vstr_sprintf_append(out, "%zu\n", res.rcpts->argc);
    for (size_t i = 0; i < res.rcpts->argc; i++)
        api_milter_field(out, res.rcpts->argv[i], strlen(res.rcpts->argv[i]));
    api_milter_field(out, vstr_str(content), vstr_len(content));
    _exit(safe_file_write_all(fd, vstr_str(out), vstr_len(out)) < 0 ? 1 : 0);
}

/* api_milter_take - the next field of the answer at *cp (end: its end);
   false when the answer is cut short */
static bool api_milter_take(const char **cp, const char *end, const char **data,
                            size_t *len)
{
    const char *nl = memchr(*cp, '\n', (size_t) (end - *cp));
    char *stop;
    unsigned long long n;

    if (nl == NULL || nl == *cp)
        return false;
    errno = 0;
    n = strtoull(*cp, &stop, 10);
    if (stop != nl || errno != 0 || n > (unsigned long long) (end - nl - 1))
        return false;
    *data = nl + 1;
    *len = (size_t) n;
    *cp = nl + 1 + n;
    return true;
}

static void api_milter_kick_soon(API_MILTERS *ams, struct event_base *base);

/* api_milter_reaped - one child less */
static void api_milter_reaped(API_MILTERS *ams, struct event_base *base)
{
    ams->children--;
    if (ams->wait_head != NULL)
        api_milter_kick_soon(ams, base);
}

/* api_milter_reap_look - look again for a killed child */
static void api_milter_reap_look(evutil_socket_t fd, short what, void *arg)
{
    API_MILTER_REAP *r = arg;
    API_MILTERS *ams = r->ams;
    pid_t got = waitpid(r->pid, NULL, WNOHANG);

    (void) fd;
    (void) what;
    if (got == 0 || (got < 0 && errno == EINTR)) {
        struct timeval tv;

        r->delay_ms = r->delay_ms < 500 ? r->delay_ms * 2 : 1000;
        tv.tv_sec = r->delay_ms / 1000;
        tv.tv_usec = (r->delay_ms % 1000) * 1000;
        evtimer_add(r->timer, &tv);
        return;
    }
    for (API_MILTER_REAP **rp = &ams->reaps; *rp != NULL; rp = &(*rp)->next)
        if (*rp == r) {
            *rp = r->next;
            break;
        }
    api_milter_reaped(ams, event_get_base(r->timer));
    event_free(r->timer);
    myfree(r);
}

/* api_milter_reap - kill the child and reap it, now or from the loop */
static void api_milter_reap(API_MILTERS *ams, struct event_base *base,
                            pid_t pid)
{
    API_MILTER_REAP *r;
    struct timeval tv = {0, API_MILTER_REAP_MS * 1000};
    pid_t got;

    /* It has closed its end (all said) or must go: either way, now. */
    (void) kill(pid, SIGKILL);
    while ((got = waitpid(pid, NULL, WNOHANG)) < 0 && errno == EINTR)
        continue;
    if (got != 0) {
        api_milter_reaped(ams, base);
        return;
    }
    /* Not gone yet (exiting, or stuck in the kernel): never wait here. */
    r = mycalloc(1, sizeof(*r));
    r->ams = ams;
    r->pid = pid;
    r->delay_ms = API_MILTER_REAP_MS;
    if ((r->timer = evtimer_new(base, api_milter_reap_look, r)) == NULL)
        msg_fatal("cannot create an event");
    r->next = ams->reaps;
    ams->reaps = r;
    evtimer_add(r->timer, &tv);
}

/* api_milter_free - the state, the child killed and reaped */
static void api_milter_free(API_MILTER *am)
{
    if (am->ev != NULL)
        event_free(am->ev);
    if (am->timer != NULL)
        event_free(am->timer);
    if (am->fd >= 0)
        (void) close(am->fd);
    if (am->pid > 0)
        api_milter_reap(am->ams, am->base, am->pid);
    vstr_free(am->in);
    vstr_free(am->reply);
    vstr_free(am->hold);
    myfree(am->path);
    myfree(am->tenant);
    myfree(am);
}

/* api_milter_cleanup_done - cleanup's verdict, with the quarantine */
static void api_milter_cleanup_done(const API_HANDOFF_RESULT *result, void *arg)
{
    API_MILTER *am = arg;
    API_HANDOFF_RESULT mine = *result;

    mine.quarantine = am->quarantine;
    am->done(&mine, am->arg);
    api_milter_free(am);
}

/* api_milter_end - tell the owner code and why (not from cleanup) */
static void api_milter_end(API_MILTER *am, int code, const char *why,
                           bool milter, bool discarded)
{
    API_HANDOFF_RESULT result = {
        .code = code,
        .queue_id = "",
        .why = why,
        .milter = milter ? vstr_str(am->reply) : NULL,
        .discarded = discarded,
    };

    am->done(&result, am->arg);
    api_milter_free(am);
}

/* api_milter_code - the SMTP code of a verdict: "550 5.7.1 .." gives
   550; pickup_milter's replies start at the enhanced code, so its class
   digit (fallback when there is none) makes x50 or x51 */
static int api_milter_code(const char *reply, int fallback)
{
    if (reply[0] == '5')
        return 550;
    if (reply[0] == '4')
        return 451;
    return fallback;
}

/* api_milter_answer - the child's whole answer: the verdict, or the
   changed message on to cleanup */
static void api_milter_answer(API_MILTER *am)
{
    const char *cp = vstr_str(am->in);
    const char *end = cp + vstr_len(am->in);
    const char *status, *stage, *reply, *hold, *count, *content;
    size_t status_len, stage_len, reply_len, hold_len, count_len, content_len;
    unsigned long long rcpts;
    ARGV *added = argv_alloc(2);
    VSTR *why = vstr_alloc(100);
    VSTR *addr = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    bool ok = api_milter_take(&cp, end, &status, &status_len) &&
              status_len == 1 &&
              api_milter_take(&cp, end, &stage, &stage_len) &&
              api_milter_take(&cp, end, &reply, &reply_len) &&
              api_milter_take(&cp, end, &hold, &hold_len);
    const char *nl = ok ? memchr(cp, '\n', (size_t) (end - cp)) : NULL;

    ok = nl != NULL && (rcpts = strtoull(cp, NULL, 10)) < 100000;
    if (ok) {
        cp = nl + 1;
        for (unsigned long long i = 0; ok && i < rcpts; i++) {
            ok = api_milter_take(&cp, end, &count, &count_len);
            if (ok)
                argv_addn(added, count, count_len);
        }
    }
    ok = ok && api_milter_take(&cp, end, &content, &content_len) && cp == end;
    if (!ok) {
        api_milter_end(am, -1, "the milter process ended without an answer",
                       false, false);
        goto out;
    }
    vstr_ncpy(am->reply, reply, reply_len);
    switch (status[0] - '0') {
    case PICKUP_MILTER_DISCARD:
        msg_info("api: milter-discard: %.*s from localhost[127.0.0.1]:"
                 " milter triggers DISCARD action; from=<%s>",
                 (int) stage_len, stage, am->msg->sender);
        vstr_cpy(am->reply, "discarded by a milter");
        api_milter_end(am, 550, "discarded by a milter", true, true);
        goto out;
    case PICKUP_MILTER_REJECT:
        msg_info("api: milter-reject: %.*s from localhost[127.0.0.1]: %s;"
                 " from=<%s>",
                 (int) stage_len, stage, vstr_str(am->reply), am->msg->sender);
        vstr_sprintf(why, "rejected by a milter: %s", vstr_str(am->reply));
        api_milter_end(am, api_milter_code(vstr_str(am->reply), 550),
                       vstr_str(why), true, false);
        goto out;
    case PICKUP_MILTER_TEMPFAIL:
        msg_info("api: milter-reject: %.*s from localhost[127.0.0.1]: %s;"
                 " from=<%s>",
                 (int) stage_len, stage, vstr_str(am->reply), am->msg->sender);
        vstr_sprintf(why, "a milter said try again later: %s",
                     vstr_str(am->reply));
        api_milter_end(am, api_milter_code(vstr_str(am->reply), 451),
                       vstr_str(why), true, false);
        goto out;
    case PICKUP_MILTER_ACCEPT:
        break;
    default:
        api_milter_end(am, -1, "the milter process gave an unknown verdict",
                       false, false);
        goto out;
    }
    /* Through: the changed message. */
    vstr_ncpy(am->msg->content, content, content_len);
    for (size_t i = 0; i < added->argc; i++) {
        const char *text = added->argv[i];
        const char *rest;

        vstr_sprintf(path, text[0] == '<' ? "%s" : "<%s>", text);
        if (smtp_addr_parse_path(vstr_str(path), 0, addr, &rest, why) < 0 ||
            *rest != 0) {
            msg_warn("api: milter added a malformed recipient %s: skipped",
                     vstr_str(path));
            continue;
        }
        msg_info("api: milter: added recipient <%s>", vstr_str(addr));
        argv_add(am->msg->rcpts, vstr_str(addr));
    }
    if (hold_len > 0) {
        vstr_cpy(am->hold, "milter quarantine: ");
        vstr_ncat(am->hold, hold, hold_len);
        am->msg->hold = vstr_str(am->hold);
        am->quarantine = vstr_str(am->hold);
    }
    if (api_handoff_start(am->base, am->path, am->timeout_sec, am->msg,
                          am->tenant, api_milter_cleanup_done, am, why) == NULL)
        api_milter_end(am, -1, vstr_str(why), false, false);
out:
    argv_free(added);
    vstr_free(why);
    vstr_free(addr);
    vstr_free(path);
}

/* api_milter_read - more of the child's answer; all of it at EOF */
static void api_milter_read(evutil_socket_t fd, short what, void *arg)
{
    API_MILTER *am = arg;
    char buf[API_MILTER_READ];
    ssize_t n = read(am->fd, buf, sizeof(buf));

    (void) fd;
    (void) what;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        if (vstr_len(am->in) + (size_t) n > pickup_milter_limit(am->pmc) +
                                                API_MILTER_SLACK +
                                                vstr_len(am->msg->content)) {
            api_milter_end(am, -1, "the milter process's answer is too long",
                           false, false);
            return;
        }
        vstr_ncat(am->in, buf, (size_t) n);
        return;
    }
    if (n < 0) {
        msg_warn("api: read from the milter process: %m");
        api_milter_end(am, -1, "cannot read the milter process's answer", false,
                       false);
        return;
    }
    event_free(am->ev);
    am->ev = NULL;
    event_free(am->timer);
    am->timer = NULL;
    (void) close(am->fd);
    am->fd = -1;
    /* EOF: the child has written all it will; reap it. */
    api_milter_reap(am->ams, am->base, am->pid);
    am->pid = 0;
    api_milter_answer(am);
}

/* api_milter_late - the child has taken too long: kill it, fail */
static void api_milter_late(evutil_socket_t fd, short what, void *arg)
{
    API_MILTER *am = arg;
    VSTR *why = vstr_alloc(100);

    (void) fd;
    (void) what;
    msg_warn("api: the milter process %ld took longer than %llds: killed",
             (long) am->pid, am->ams->deadline);
    vstr_sprintf(why,
                 "the milters took longer than %llds (non_smtpd_milters);"
                 " try again later",
                 am->ams->deadline);
    api_milter_end(am, -1, vstr_str(why), false, false);
    vstr_free(why);
}

/* api_milter_fork - the child for am, watched: 0, or -1 with why (am
   left to the caller) */
static int api_milter_fork(API_MILTER *am, VSTR *why)
{
    struct timeval tv = {(time_t) am->ams->deadline, 0};
    int pipefd[2];

    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        vstr_sprintf(why, "pipe: %m");
        return -1;
    }
    if ((am->pid = fork()) < 0) {
        vstr_sprintf(why, "fork: %m");
        (void) close(pipefd[0]);
        (void) close(pipefd[1]);
        am->pid = 0;
        return -1;
    }
    if (am->pid == 0) {
        (void) close(pipefd[0]);
        API_MILTER_CHILD(am, pipefd[1]);
    }
    am->ams->children++;
    (void) close(pipefd[1]);
    am->fd = pipefd[0];
    if (am->timer != NULL)
        event_free(am->timer);
    if (evutil_make_socket_nonblocking(am->fd) < 0 ||
        (am->ev = event_new(am->base, am->fd, EV_READ | EV_PERSIST,
                            api_milter_read, am)) == NULL ||
        (am->timer = evtimer_new(am->base, api_milter_late, am)) == NULL ||
        event_add(am->ev, NULL) < 0 || evtimer_add(am->timer, &tv) < 0) {
        vstr_sprintf(why, "cannot watch the milter process: %m");
        return -1;
    }
    return 0;
}

/* api_milter_unwait - am out of the wait list */
static void api_milter_unwait(API_MILTER *am)
{
    API_MILTERS *ams = am->ams;
    API_MILTER *prev = NULL;

    for (API_MILTER *cur = ams->wait_head; cur != NULL;
         prev = cur, cur = cur->next_wait) {
        if (cur != am)
            continue;
        if (prev == NULL)
            ams->wait_head = am->next_wait;
        else
            prev->next_wait = am->next_wait;
        if (ams->wait_tail == am)
            ams->wait_tail = prev;
        break;
    }
    am->next_wait = NULL;
    am->waiting = false;
}

/* api_milter_waited - no child came free in time */
static void api_milter_waited(evutil_socket_t fd, short what, void *arg)
{
    API_MILTER *am = arg;
    VSTR *why = vstr_alloc(100);

    (void) fd;
    (void) what;
    api_milter_unwait(am);
    msg_warn("api: all %d milter processes busy for %ds: a message refused"
             " for now (api_milter_process_limit)",
             am->ams->process_limit, API_MILTER_WAIT);
    vstr_sprintf(why,
                 "too many messages with the milters at once"
                 " (api_milter_process_limit = %d); try again later",
                 am->ams->process_limit);
    api_milter_end(am, -1, vstr_str(why), false, false);
    vstr_free(why);
}

/* api_milter_kick - start waiting messages while children are free */
static void api_milter_kick(evutil_socket_t fd, short what, void *arg)
{
    API_MILTERS *ams = arg;
    VSTR *why = vstr_alloc(100);

    (void) fd;
    (void) what;
    while (ams->wait_head != NULL && ams->children < ams->process_limit) {
        API_MILTER *am = ams->wait_head;

        api_milter_unwait(am);
        if (api_milter_fork(am, why) < 0)
            api_milter_end(am, -1, vstr_str(why), false, false);
    }
    vstr_free(why);
}

/* api_milter_kick_soon - api_milter_kick from the loop, not from within
   a done callback */
static void api_milter_kick_soon(API_MILTERS *ams, struct event_base *base)
{
    static const struct timeval now = {0, 0};

    if (ams->kick == NULL &&
        (ams->kick = evtimer_new(base, api_milter_kick, ams)) == NULL)
        msg_fatal("cannot create an event");
    evtimer_add(ams->kick, &now);
}

/* api_milter_open - the milters and the limit */
API_MILTERS *api_milter_open(const MAIL_CONF *conf)
{
    PICKUP_MILTER_CONF *pmc = pickup_milter_conf(conf);
    API_MILTERS *ams;

    if (pmc == NULL)
        return NULL;
    ams = mycalloc(1, sizeof(*ams));
    ams->pmc = pmc;
    ams->process_limit = (int) mail_conf_int(conf, "api_milter_process_limit");
    ams->deadline = pickup_milter_time_limit(pmc) + API_MILTER_TIME_SLACK;
    return ams;
}

/* api_milter_close - free what is left */
API_MILTERS *api_milter_close(API_MILTERS *ams)
{
    if (ams == NULL)
        return NULL;
    while (ams->wait_head != NULL) {
        API_MILTER *am = ams->wait_head;

        api_milter_unwait(am);
        api_milter_free(am);
    }
    while (ams->reaps != NULL) {
        API_MILTER_REAP *r = ams->reaps;

        ams->reaps = r->next;
        event_free(r->timer);
        myfree(r);
    }
    if (ams->kick != NULL)
        event_free(ams->kick);
    pickup_milter_conf_free(ams->pmc);
    myfree(ams);
    return NULL;
}

/* api_submit_start - start the child (or wait for one); its answer
   comes to the loop */
int api_submit_start(struct event_base *base, API_MILTERS *ams,
                     const char *path, int timeout_sec, API_MESSAGE *msg,
                     const char *tenant, API_HANDOFF_DONE done, void *arg,
                     VSTR *why)
{
    API_MILTER *am;

    if (ams == NULL)
        return api_handoff_start(base, path, timeout_sec, msg, tenant, done,
                                 arg, why) == NULL
                   ? -1
                   : 0;
    am = mycalloc(1, sizeof(*am));
    am->base = base;
    am->ams = ams;
    am->pmc = ams->pmc;
    am->path = mystrdup(path);
    am->timeout_sec = timeout_sec;
    am->msg = msg;
    am->tenant = mystrdup(tenant);
    am->done = done;
    am->arg = arg;
    am->fd = -1;
    am->in = vstr_alloc(vstr_len(msg->content) + 256);
    am->reply = vstr_alloc(100);
    am->hold = vstr_alloc(64);
    if (ams->children >= ams->process_limit || ams->wait_head != NULL) {
        /* All busy: wait in order for one, API_MILTER_WAIT at most. */
        struct timeval tv = {API_MILTER_WAIT, 0};

        if ((am->timer = evtimer_new(base, api_milter_waited, am)) == NULL ||
            evtimer_add(am->timer, &tv) < 0) {
            vstr_sprintf(why, "cannot wait for a milter process");
            api_milter_free(am);
            return -1;
        }
        am->waiting = true;
        if (ams->wait_tail != NULL)
            ams->wait_tail->next_wait = am;
        else
            ams->wait_head = am;
        ams->wait_tail = am;
        if (ams->children < ams->process_limit)
            api_milter_kick_soon(ams, base);
        return 0;
    }
    if (api_milter_fork(am, why) < 0) {
        api_milter_free(am);
        return -1;
    }
    return 0;
}
