/*
 * mail_server - the skeleton every daemon that master starts runs on
 *
 * The contract with master is in mail_server.h. In short: configuration in
 * SLUICE_CONFIG, listeners from fd 4 on, a status socket to master on fd 3
 * ('A' available / 'B' busy; EOF means master is gone), SIGHUP retires,
 * SIGTERM ends. Everything the program does happens in callbacks from one
 * libevent loop.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <event2/event.h>

#include "mail_conf.h"
#include "mail_server.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define MAIL_SERVER_STATUS_FD 3
#define MAIL_SERVER_LISTEN_FD 4
#define MAIL_SERVER_MAX_LISTEN 64
#define MAIL_SERVER_TRIGGER_MAX                                                \
    64 /* bytes read at a time per trigger connection */
#define MAIL_SERVER_FULL_PAUSE 1 /* s without accept at the fd limit */
#define MAIL_SERVER_FULL_WARN 10 /* s between two warnings of it */
#define MAIL_SERVER_SHED_MAX 64 /* clients turned away per pause */

typedef struct MAIL_SERVER_LISTENER {
    int fd;
    struct event *ev;
} MAIL_SERVER_LISTENER;

/* One trigger connection: bytes, then EOF (or the idle timeout). */
typedef struct MAIL_SERVER_TRIGGER {
    MAIL_SERVER *server;
    int fd;
    struct event *ev;
    struct MAIL_SERVER_TRIGGER *prev; /* open trigger connections */
    struct MAIL_SERVER_TRIGGER *next;
} MAIL_SERVER_TRIGGER;

struct MAIL_SERVER {
    const MAIL_SERVER_OPS *ops;
    void *ctx;
    char *config_dir;
    char *service;
    MAIL_CONF *conf;
    struct event_base *base;
    MAIL_SERVER_LISTENER listeners[MAIL_SERVER_MAX_LISTEN];
    int listen_count;
    struct event *status_ev; /* EOF from master */
    struct event *sighup_ev;
    struct event *sigterm_ev;
    struct event *tick_ev;
    MAIL_SERVER_TRIGGER *triggers; /* open trigger connections */
    bool busy;
    bool retiring;
    int exit_status;
    /* At the descriptor limit (mail_server_accept_full). */
    int spare_fd; /* closed to make room to shed one */
    struct event *full_ev; /* ends the pause of the listeners */
    time_t full_warned; /* last warning */
    long full_shed; /* clients shed since then */
};

/* mail_server_base - the event base of the daemon */
struct event_base *mail_server_base(MAIL_SERVER *server)
{
    return server->base;
}

/* mail_server_conf - main.cf as read at start */
const MAIL_CONF *mail_server_conf(MAIL_SERVER *server)
{
    return server->conf;
}

/* mail_server_config_dir - the instance's configuration directory */
const char *mail_server_config_dir(MAIL_SERVER *server)
{
    return server->config_dir;
}

/* mail_server_service - the master.cf service name */
const char *mail_server_service(MAIL_SERVER *server)
{
    return server->service;
}

/* mail_server_retiring - has master asked this process to go? */
bool mail_server_retiring(MAIL_SERVER *server)
{
    return server->retiring;
}

/* mail_server_status - tell master one status byte; master may be gone */
static void mail_server_status(MAIL_SERVER *server, char byte)
{
    if (server->status_ev == NULL)
        return;
    if (send(MAIL_SERVER_STATUS_FD, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) <
            0 &&
        errno != EAGAIN && msg_verbose_get())
        msg_info("status to master: %m");
}

/* mail_server_busy - tell master whether this process is at capacity */
void mail_server_busy(MAIL_SERVER *server, bool busy)
{
    if (busy == server->busy || server->retiring)
        return;
    server->busy = busy;
    /* A busy process leaves new connections to its siblings. */
    for (int i = 0; i < server->listen_count; i++) {
        struct event *ev = server->listeners[i].ev;

        if (ev && (busy ? event_del(ev) : event_add(ev, NULL)) < 0)
            msg_warn("cannot %s listener", busy ? "pause" : "resume");
    }
    mail_server_status(server, busy ? 'B' : 'A');
}

/* mail_server_exit - leave the event loop; main returns status */
void mail_server_exit(MAIL_SERVER *server, int status)
{
    server->exit_status = status;
    event_base_loopbreak(server->base);
}

/* mail_server_close_listeners - stop taking new work */
static void mail_server_close_listeners(MAIL_SERVER *server)
{
    for (int i = 0; i < server->listen_count; i++) {
        MAIL_SERVER_LISTENER *lsn = &server->listeners[i];

        if (lsn->ev) {
            event_free(lsn->ev);
            lsn->ev = NULL;
        }
        if (lsn->fd >= 0) {
            (void) close(lsn->fd);
            lsn->fd = -1;
        }
    }
}

/* mail_server_retire - stop accepting, let the program finish its work */
static void mail_server_retire(MAIL_SERVER *server, const char *why)
{
    if (server->retiring)
        return;
    if (msg_verbose_get())
        msg_info("retiring: %s", why);
    server->retiring = true;
    mail_server_close_listeners(server);
    if (server->ops->on_retire)
        server->ops->on_retire(server, server->ctx);
    else
        mail_server_exit(server, 0);
}

/* mail_server_trigger_free - close one trigger connection */
static void mail_server_trigger_free(MAIL_SERVER_TRIGGER *trig)
{
    MAIL_SERVER *server = trig->server;

    if (trig->prev)
        trig->prev->next = trig->next;
    else
        server->triggers = trig->next;
    if (trig->next)
        trig->next->prev = trig->prev;
    if (trig->ev)
        event_free(trig->ev);
    (void) close(trig->fd);
    myfree(trig);
}

/* mail_server_trigger_event - bytes (or EOF) on a trigger connection. A
   sender may keep its connection for many wake-ups (trigger_conn), so any
   number of bytes is taken; one idle for 10 s is closed. Bytes that came
   with the timeout are read first, never dropped with the connection. */
static void mail_server_trigger_event(evutil_socket_t fd, short what, void *arg)
{
    MAIL_SERVER_TRIGGER *trig = arg;
    MAIL_SERVER *server = trig->server;
    unsigned char buf[MAIL_SERVER_TRIGGER_MAX];
    ssize_t got;
    bool done = false;

    /* On a timeout too: a byte that came just then is not dropped. */
    if (what & (EV_READ | EV_TIMEOUT)) {
        got = read(fd, buf, sizeof(buf));
        if (got < 0 && (errno == EAGAIN || errno == EINTR) &&
            !(what & EV_TIMEOUT))
            return;
        if (got <= 0 || (what & EV_TIMEOUT))
            done = true;
        for (ssize_t i = 0; i < got; i++)
            server->ops->on_trigger(server, buf[i], server->ctx);
    }
    if (done)
        mail_server_trigger_free(trig);
}

/* mail_server_full_event - the pause is over: listen again */
static void mail_server_full_event(evutil_socket_t fd, short what, void *arg)
{
    MAIL_SERVER *server = arg;

    if (server->spare_fd < 0)
        server->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (server->busy || server->retiring)
        return; /* mail_server_busy() resumes */
    for (int i = 0; i < server->listen_count; i++)
        if (server->listeners[i].ev &&
            event_add(server->listeners[i].ev, NULL) < 0)
            msg_warn("cannot resume listener");
}

/* mail_server_accept_full - accept failed for want of a descriptor
   (errno err). Retrying at once would spin (the listener stays readable):
   turn the waiting clients away, each through the spare descriptor (close
   it, accept, let the program answer, close, open the spare again), pause
   the listeners for MAIL_SERVER_FULL_PAUSE seconds, and warn at most once
   every MAIL_SERVER_FULL_WARN seconds. Sessions in hand go on. */
static void mail_server_accept_full(MAIL_SERVER *server, int lfd, int err)
{
    struct timeval pause = {MAIL_SERVER_FULL_PAUSE, 0};
    time_t now = time(NULL);

    for (int i = 0; i < MAIL_SERVER_SHED_MAX && server->spare_fd >= 0; i++) {
        int fd;

        (void) close(server->spare_fd);
        fd = accept(lfd, NULL, NULL);
        if (fd >= 0) {
            if (server->ops->on_shed)
                server->ops->on_shed(server, fd, server->ctx);
            (void) close(fd);
            server->full_shed++;
        }
        server->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break; /* none waiting (or another error) */
    }
    if (now - server->full_warned >= MAIL_SERVER_FULL_WARN ||
        now < server->full_warned) {
        msg_warn("accept: %s: new connections paused %ds at a time, those"
                 " waiting turned away (%ld since the last warning)",
                 strerror(err), MAIL_SERVER_FULL_PAUSE, server->full_shed);
        server->full_warned = now;
        server->full_shed = 0;
    }
    if (server->full_ev == NULL &&
        (server->full_ev =
             evtimer_new(server->base, mail_server_full_event, server)) == NULL)
        return; /* no pause: better than no service */
    for (int i = 0; i < server->listen_count; i++)
        if (server->listeners[i].ev)
            (void) event_del(server->listeners[i].ev);
    if (evtimer_add(server->full_ev, &pause) < 0)
        mail_server_full_event(-1, 0, server);
}

/* mail_server_accept_event - take every pending connection on a listener */
static void mail_server_accept_event(evutil_socket_t lfd, short what, void *arg)
{
    MAIL_SERVER *server = arg;
    int fd;

    while (!server->retiring) {
#ifdef HAVE_ACCEPT4
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
        fd = accept(lfd, NULL, NULL);
        if (fd >= 0) {
            (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
            (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
#endif
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                mail_server_accept_full(server, lfd, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                msg_warn("accept: %m");
            return;
        }
        if (server->ops->on_trigger) {
            MAIL_SERVER_TRIGGER *trig = mycalloc(1, sizeof(*trig));
            struct timeval timeout = {10, 0};

            trig->server = server;
            trig->fd = fd;
            trig->next = server->triggers;
            if (trig->next)
                trig->next->prev = trig;
            server->triggers = trig;
            trig->ev = event_new(server->base, fd, EV_READ | EV_PERSIST,
                                 mail_server_trigger_event, trig);
            if (trig->ev == NULL || event_add(trig->ev, &timeout) < 0)
                msg_fatal("cannot add a trigger event");
        } else if (server->ops->on_accept) {
            server->ops->on_accept(server, fd, server->ctx);
        } else {
            (void) close(fd);
        }
        /* The program may have gone busy: leave the rest to a sibling. */
        if (server->busy)
            return;
    }
}

/* mail_server_status_event - master closed its end: it is gone */
static void mail_server_status_event(evutil_socket_t fd, short what, void *arg)
{
    MAIL_SERVER *server = arg;
    char buf[64];
    ssize_t got = read(fd, buf, sizeof(buf));

    if (got < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (got > 0)
        return; /* master sends nothing today */
    event_free(server->status_ev);
    server->status_ev = NULL;
    mail_server_retire(server, "master is gone");
}

/* mail_server_stop_signals - SIGHUP and SIGTERM blocked or let through */
static void mail_server_stop_signals(int how)
{
    sigset_t stop;

    sigemptyset(&stop);
    sigaddset(&stop, SIGHUP);
    sigaddset(&stop, SIGTERM);
    if (sigprocmask(how, &stop, NULL) < 0)
        msg_fatal("sigprocmask: %m");
}

/* mail_server_hold_stop - a stop (SIGTERM) or retire (SIGHUP) that comes
   while the daemon starts waits until its signal events exist: the daemon
   then ends cleanly, not in the middle of reading its configuration (a
   leak checker would report what it had half built). mail_server_main()
   calls this first; a daemon that reads configuration before it calls
   it first itself. */
void mail_server_hold_stop(void)
{
    mail_server_stop_signals(SIG_BLOCK);
}

/* mail_server_signal_event - SIGHUP retires, SIGTERM ends */
static void mail_server_signal_event(evutil_socket_t sig, short what, void *arg)
{
    MAIL_SERVER *server = arg;

    if (sig == SIGHUP) {
        mail_server_retire(server, "SIGHUP");
    } else {
        if (msg_verbose_get())
            msg_info("terminating on signal %d", (int) sig);
        mail_server_exit(server, 0);
    }
}

/* mail_server_tick_event - the program's periodic work */
static void mail_server_tick_event(evutil_socket_t fd, short what, void *arg)
{
    MAIL_SERVER *server = arg;

    server->ops->on_tick(server, server->ctx);
}

/* What a program that kept root as its saved uid runs as otherwise. */
typedef struct MAIL_SERVER_IDS {
    bool active; /* root was taken back */
    uid_t euid;
    gid_t egid;
} MAIL_SERVER_IDS;

/* mail_server_saved_root - a program that runs as mail_owner but kept
   root as its real and saved uid (local, which becomes each recipient)
   reads main.cf and opens the log as root, as every other daemon does
   before it drops privileges: take root back (enter) or give it up again
   (leave) */
static void mail_server_saved_root(MAIL_SERVER_IDS *ids, bool enter)
{
    if (enter) {
        ids->active = getuid() == 0 && geteuid() != 0;
        if (!ids->active)
            return;
        ids->euid = geteuid();
        ids->egid = getegid();
        if (seteuid(0) < 0)
            msg_fatal("seteuid 0: %m");
    } else if (ids->active) {
        if (setegid(ids->egid) < 0 || seteuid(ids->euid) < 0)
            msg_fatal("back to uid %ld: %m", (long) ids->euid);
        ids->active = false;
    }
}

/* mail_server_drop_privileges - a root-started daemon runs as mail_owner,
   which is never root: a daemon that would stay root does not start */
static void mail_server_drop_privileges(const MAIL_CONF *conf)
{
    const struct passwd *pw;
    VSTR *why;

    if (geteuid() != 0)
        return;
    why = vstr_alloc(100);
    if ((pw = mail_conf_owner(conf, why)) == NULL)
        msg_fatal("refusing to run as root: %s", vstr_str(why));
    vstr_free(why);
    if (setgroups(0, NULL) < 0 && errno != EPERM)
        msg_fatal("setgroups: %m");
    if (setgid(pw->pw_gid) < 0)
        msg_fatal("setgid %ld: %m", (long) pw->pw_gid);
    if (setuid(pw->pw_uid) < 0)
        msg_fatal("setuid %ld: %m", (long) pw->pw_uid);
}

#if defined(__SANITIZE_ADDRESS__)
#define MAIL_SERVER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MAIL_SERVER_ASAN 1
#endif
#endif

/* mail_server_sanitizer_leak_check - in a sanitizer build, let
   LeakSanitizer check a process that changed its uids: it stops the
   process at exit through ptrace from a thread of its own, which the
   kernel allows only to a process that is "dumpable" (lost at a uid
   change) and whose uids all match, or to root. at_exit: a program that
   kept root as its real and saved uid (local) takes it back for the check;
   else the process is made dumpable again. Other builds keep the kernel's
   protection. */
static void mail_server_sanitizer_leak_check(bool at_exit)
{
#if defined(MAIL_SERVER_ASAN) && defined(PR_SET_DUMPABLE)
    if (at_exit) {
        if (getuid() == 0 && geteuid() != 0 && seteuid(0) < 0)
            msg_warn("seteuid 0 for the leak check: %m");
    } else if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) {
        msg_warn("prctl PR_SET_DUMPABLE: %m");
    }
#else
    (void) at_exit;
#endif
}

/* mail_server_listen_count - how many listeners master passed */
static int mail_server_listen_count(void)
{
    const char *text = getenv("SLUICE_LISTEN_FDS");
    char *end;
    long count;

    if (text == NULL || *text == 0)
        return 0;
    errno = 0;
    count = strtol(text, &end, 10);
    if (errno || *end || count < 0 || count > MAIL_SERVER_MAX_LISTEN)
        msg_fatal("bad SLUICE_LISTEN_FDS \"%s\"", text);
    return (int) count;
}

/* mail_server_fd_is_socket - is fd open and a socket? */
static bool mail_server_fd_is_socket(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* mail_server_free - release everything (leak checkers watch us) */
static void mail_server_free(MAIL_SERVER *server)
{
    mail_server_close_listeners(server);
    while (server->triggers)
        mail_server_trigger_free(server->triggers);
    if (server->full_ev)
        event_free(server->full_ev);
    if (server->spare_fd >= 0)
        (void) close(server->spare_fd);
    if (server->status_ev)
        event_free(server->status_ev);
    if (server->sighup_ev)
        event_free(server->sighup_ev);
    if (server->sigterm_ev)
        event_free(server->sigterm_ev);
    if (server->tick_ev)
        event_free(server->tick_ev);
    if (server->base)
        event_base_free(server->base);
    mail_conf_free(server->conf);
    myfree(server->config_dir);
    myfree(server->service);
    myfree(server);
}

/* mail_server_conf_fatal - main.cf or a master.cf -o is bad: exit. A bad
   -o is logged where main.cf sends the log, so the operator sees it
   beside master's "process died" lines. */
static void mail_server_conf_fatal(const char *config_dir,
                                   const ARGV *overrides, const char *progname,
                                   VSTR *why)
{
    VSTR *ignored = vstr_alloc(10);
    MAIL_CONF *plain;

    if (overrides->argc > 0 &&
        (plain = mail_conf_read(config_dir, ignored)) != NULL) {
        msg_init(mail_conf_str(plain, "syslog_name"), progname);
        (void) msg_log_file(mail_conf_str(plain, "maillog_file"));
        mail_conf_free(plain);
    }
    vstr_free(ignored);
    msg_fatal("%s", vstr_str(why));
}

/* mail_server_main - run the daemon; returns the process exit status */
int mail_server_main(int argc, char **argv, const char *progname,
                     const MAIL_SERVER_OPS *ops, void *ctx)
{
    MAIL_SERVER *server;
    const char *config_dir = getenv("SLUICE_CONFIG");
    const char *service = getenv("SLUICE_SERVICE");
    VSTR *why;
    ARGV *overrides;
    MAIL_SERVER_IDS saved;
    int ch;
    int status;

    mail_server_hold_stop();
    server = mycalloc(1, sizeof(*server));
    why = vstr_alloc(100);
    msg_init("sluice", progname);
    /* Every line to stderr when asked (master -f) or on a terminal; else
       stderr is master's /dev/null, and only warnings and worse go there
       (a write and a format per log line saved). */
    msg_log_stderr_from(getenv("SLUICE_LOG_STDERR") || isatty(STDERR_FILENO)
                            ? MSG_INFO
                            : MSG_WARN);
    overrides = argv_alloc(2);
    while ((ch = getopt(argc, argv, "c:o:v")) != -1) {
        switch (ch) {
        case 'c':
            config_dir = optarg;
            break;
        case 'o': /* master.cf: -o name=value overrides main.cf */
            argv_add(overrides, optarg);
            break;
        case 'v':
            msg_verbose_set(msg_verbose_get() + 1);
            break;
        default:
            msg_fatal("usage: %s [-c config_dir] [-o name=value] [-v]",
                      progname);
        }
    }
    if (config_dir == NULL || *config_dir == 0)
        config_dir = DEF_CONFIG_DIR;
    server->ops = ops;
    server->ctx = ctx;
    server->config_dir = mystrdup(config_dir);
    server->service = mystrdup(service ? service : progname);
    mail_server_saved_root(&saved, true);
    if ((server->conf = mail_conf_read_overrides(config_dir, overrides, why)) ==
        NULL)
        mail_server_conf_fatal(config_dir, overrides, progname, why);
    overrides = argv_free(overrides);
    why = vstr_free(why);
    msg_init(mail_conf_str(server->conf, "syslog_name"), progname);
    /* A daemon run by hand by an ordinary user (smtpd -S, for sendmail
       -bs), without master, may not write the log file: syslog then. */
    if (msg_log_file(mail_conf_str(server->conf, "maillog_file")) < 0 &&
        (geteuid() == 0 || getenv("SLUICE_SERVICE") != NULL ||
         mail_server_listen_count() > 0 || msg_log_file("") < 0))
        msg_fatal("cannot open maillog_file %s: %m",
                  mail_conf_str(server->conf, "maillog_file"));
    mail_server_saved_root(&saved, false);
    mail_server_drop_privileges(server->conf);
    mail_server_sanitizer_leak_check(false);

    if ((server->base = event_base_new()) == NULL)
        msg_fatal("cannot create an event base");
    signal(SIGPIPE, SIG_IGN);
    server->sighup_ev =
        evsignal_new(server->base, SIGHUP, mail_server_signal_event, server);
    server->sigterm_ev =
        evsignal_new(server->base, SIGTERM, mail_server_signal_event, server);
    if (server->sighup_ev == NULL || server->sigterm_ev == NULL ||
        event_add(server->sighup_ev, NULL) < 0 ||
        event_add(server->sigterm_ev, NULL) < 0)
        msg_fatal("cannot set up signal events");
    mail_server_stop_signals(SIG_UNBLOCK);

    /* Master's status socket: present only when master started us (it
       names the service); a program run by hand (smtpd -S) may have
       anything on fd 3, the log file included. */
    if (getenv("SLUICE_SERVICE") != NULL &&
        mail_server_fd_is_socket(MAIL_SERVER_STATUS_FD)) {
        (void) fcntl(MAIL_SERVER_STATUS_FD, F_SETFD, FD_CLOEXEC);
        (void) fcntl(MAIL_SERVER_STATUS_FD, F_SETFL,
                     fcntl(MAIL_SERVER_STATUS_FD, F_GETFL) | O_NONBLOCK);
        server->status_ev =
            event_new(server->base, MAIL_SERVER_STATUS_FD, EV_READ | EV_PERSIST,
                      mail_server_status_event, server);
        if (server->status_ev == NULL || event_add(server->status_ev, NULL) < 0)
            msg_fatal("cannot watch the status socket");
    }
    server->listen_count = mail_server_listen_count();
    server->spare_fd =
        server->listen_count > 0 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    for (int i = 0; i < server->listen_count; i++) {
        MAIL_SERVER_LISTENER *lsn = &server->listeners[i];

        lsn->fd = MAIL_SERVER_LISTEN_FD + i;
        (void) fcntl(lsn->fd, F_SETFD, FD_CLOEXEC);
        (void) fcntl(lsn->fd, F_SETFL, fcntl(lsn->fd, F_GETFL) | O_NONBLOCK);
        lsn->ev = event_new(server->base, lsn->fd, EV_READ | EV_PERSIST,
                            mail_server_accept_event, server);
        if (lsn->ev == NULL)
            msg_fatal("cannot watch listener %d", lsn->fd);
    }
    if (ops->tick_seconds > 0 && ops->on_tick) {
        struct timeval tick = {ops->tick_seconds, 0};

        server->tick_ev = event_new(server->base, -1, EV_PERSIST,
                                    mail_server_tick_event, server);
        if (server->tick_ev == NULL || event_add(server->tick_ev, &tick) < 0)
            msg_fatal("cannot add the tick timer");
    }
    if (ops->pre_loop)
        ops->pre_loop(server, ctx);
    for (int i = 0; i < server->listen_count; i++)
        if (server->listeners[i].ev &&
            event_add(server->listeners[i].ev, NULL) < 0)
            msg_fatal("cannot add listener event");
    if (msg_verbose_get())
        msg_info("daemon started, %d listener(s)", server->listen_count);
    mail_server_status(server, 'A');

    if (event_base_dispatch(server->base) < 0)
        msg_fatal("event loop failed");
    status = server->exit_status;
    if (ops->post_loop)
        ops->post_loop(server, ctx);
    mail_server_free(server);
    mail_server_sanitizer_leak_check(true);
    return status;
}
