/*
 * master_service - services, their listeners and their processes
 *
 * Each master.cf line is a service. Master binds its listeners (for an
 * inet service named host:port that address; for one named by a bare port
 * or service name each address of inet_interfaces -- all, loopback-only,
 * or a list of numeric addresses -- of a family inet_protocols allows; or
 * a UNIX socket under private/ or public/, which a root master
 * gives to mail_owner, as the daemons that connect run as it), keeps at
 * least one process running, and starts more (up to maxproc) while every
 * process says it is busy. A process that dies is reaped and logged, and
 * one that was healthy and was killed is replaced at once. A process is
 * healthy once it
 * has said anything on its status socket (mail_server sends its first
 * byte when it is set up and starts serving): a daemon killed from outside
 * after that, at whatever age, is not throttled. A process throttles the
 * service for a delay that doubles each time (master_backoff_initial ..
 * master_backoff_max) when it dies within MASTER_STABLE_SECONDS of its
 * start and either never said it was ready (it failed while starting, or
 * was killed before it could serve) or ended by itself (an exit, msg_fatal,
 * or a crash signal such as SIGSEGV or SIGABRT from msg_panic), so a daemon
 * that crashes at start, or right after it, cannot spin. On reload, removed
 * services are closed and their processes retired, new ones opened, and
 * every remaining service gets a fresh process while the old ones retire
 * (SIGHUP). Listeners stay as they are on reload: a changed inet_interfaces
 * or inet_protocols takes a restart, as in Postfix.
 *
 * Master counts, per service, the processes that died unasked (not retired,
 * not at stop) and rewrites queue_directory/pid/master.status (temporary
 * file and rename, mode 0644, no fsync: it is a gauge, not state) at start,
 * reload and each such death, for the metrics daemon.
 *
 * A daemon that speaks its own protocol on an address main.cf gives (the
 * api: api_listen) gets that listener from master too, beside its
 * master.cf ones: SLUICE_OWN_LISTEN_FD names the descriptor and
 * SLUICE_OWN_LISTEN_ADDR the address it was bound to. On reload the same
 * socket goes to the successor while the old process retires, so the
 * hand-over loses no connection and needs no SO_REUSEPORT (which would
 * let any process of the same user bind the port and take a share of the
 * requests); a changed address is bound afresh.
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <event2/event.h>

#include "mail_queue.h"
#include "master.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "sock.h"
#include "trigger.h"
#include "vstr.h"

#define MASTER_LISTEN_BACKLOG 1024
#define MASTER_FD_LISTEN 4
#define MASTER_FD_STATUS 3
#define MASTER_LISTEN_MAX 64 /* mail_server takes no more */

/* inet_protocols, as bits */
#define MASTER_PROTO_IPV4 (1 << 0)
#define MASTER_PROTO_IPV6 (1 << 1)

/* The daemons that get a listener main.cf names: program, parameter. */
static const struct {
    const char *program;
    const char *param;
} master_own_listeners[] = {
    {"api", "api_listen"},
    {"metrics", "metrics_listen"},
};

static void master_serv_check(MASTER_SERV *serv);
static void master_serv_close(MASTER_SERV *serv);

/* master_elapsed - seconds since a monotonic time stamp */
static double master_elapsed(const struct timespec *since)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double) (now.tv_sec - since->tv_sec) +
           (now.tv_nsec - since->tv_nsec) / 1e9;
}

/* master_inet_port - the port of an inet service named by a bare port
   or a service name; -1 (why) when unknown */
static int master_inet_port(const char *name, VSTR *why)
{
    struct servent *se;
    char *end;
    long port;

    if (name[strspn(name, "0123456789")] == 0) {
        errno = 0;
        port = strtol(name, &end, 10);
        if (errno == 0 && *end == 0 && port > 0 && port <= 65535)
            return (int) port;
        vstr_sprintf(why, "service %s: bad port number", name);
        return -1;
    }
    if ((se = getservbyname(name, "tcp")) != NULL)
        return ntohs((uint16_t) se->s_port);
    vstr_sprintf(why, "service %s: unknown port name", name);
    return -1;
}

/* master_inet_protocols - inet_protocols as MASTER_PROTO_ bits; -1 (why)
   for a bad value */
static int master_inet_protocols(const MASTER_CTX *ctx, VSTR *why)
{
    ARGV *words = mail_conf_list(ctx->conf, "inet_protocols");
    int protos = 0;
    int status = 0;

    for (size_t i = 0; i < words->argc && status == 0; i++) {
        const char *word = words->argv[i];

        if (strcasecmp(word, "all") == 0) {
            protos |= MASTER_PROTO_IPV4 | MASTER_PROTO_IPV6;
        } else if (strcasecmp(word, "ipv4") == 0) {
            protos |= MASTER_PROTO_IPV4;
        } else if (strcasecmp(word, "ipv6") == 0) {
            protos |= MASTER_PROTO_IPV6;
        } else {
            vstr_sprintf(why,
                         "inet_protocols: unknown protocol \"%s\" "
                         "(all, ipv4, ipv6)",
                         word);
            status = -1;
        }
    }
    if (status == 0 && protos == 0) {
        vstr_cpy(why, "inet_protocols is empty (all, ipv4, ipv6)");
        status = -1;
    }
    argv_free(words);
    return status < 0 ? -1 : protos;
}

/* master_inet_addrs - the host:port addresses to bind for an inet
   service: its own address when master.cf names one, else inet_interfaces
   on the families of inet_protocols; -1 (why) when there is none */
static int master_inet_addrs(const MASTER_CTX *ctx, const char *name,
                             ARGV *addrs, VSTR *why)
{
    VSTR *addr = vstr_alloc(64);
    ARGV *words = NULL;
    unsigned char bin[sizeof(struct in6_addr)];
    char host[INET6_ADDRSTRLEN + 2];
    int protos;
    int port;
    int status = 0;

    if (strchr(name, ':') != NULL) {
        argv_add(addrs, name); /* explicit: inet_interfaces aside */
        goto out;
    }
    if ((port = master_inet_port(name, why)) < 0 ||
        (protos = master_inet_protocols(ctx, why)) < 0) {
        status = -1;
        goto out;
    }
    words = mail_conf_list(ctx->conf, "inet_interfaces");
    for (size_t i = 0; i < words->argc && status == 0; i++) {
        const char *word = words->argv[i];
        size_t len = strlen(word);

        if (strcasecmp(word, "all") == 0) {
            if (words->argc > 1) {
                vstr_cpy(why, "inet_interfaces: \"all\" stands alone");
                status = -1;
            } else if (protos == (MASTER_PROTO_IPV4 | MASTER_PROTO_IPV6)) {
                vstr_sprintf(addr, "*:%d", port); /* dual stack, or IPv4 */
                argv_add(addrs, vstr_str(addr));
            } else {
                vstr_sprintf(addr, "%s:%d",
                             protos & MASTER_PROTO_IPV4 ? "0.0.0.0" : "[::]",
                             port);
                argv_add(addrs, vstr_str(addr));
            }
            continue;
        }
        if (strcasecmp(word, "loopback-only") == 0 ||
            strcasecmp(word, "localhost") == 0) {
            if (protos & MASTER_PROTO_IPV4) {
                vstr_sprintf(addr, "127.0.0.1:%d", port);
                argv_add(addrs, vstr_str(addr));
            }
            if (protos & MASTER_PROTO_IPV6) {
                vstr_sprintf(addr, "[::1]:%d", port);
                argv_add(addrs, vstr_str(addr));
            }
            continue;
        }
        /* A numeric address, IPv6 with or without brackets. */
        if (len >= 2 && word[0] == '[' && word[len - 1] == ']')
            word++, len -= 2;
        if (len >= sizeof(host)) {
            vstr_sprintf(why,
                         "inet_interfaces: \"%s\" is not a numeric "
                         "IP address",
                         words->argv[i]);
            status = -1;
            continue;
        }
        memcpy(host, word, len);
        host[len] = 0;
        if (inet_pton(AF_INET, host, bin) == 1) {
            /* An address of a family inet_protocols leaves out is not
               used (the error below says so when none is left). */
            if (protos & MASTER_PROTO_IPV4) {
                vstr_sprintf(addr, "%s:%d", host, port);
                argv_add(addrs, vstr_str(addr));
            }
        } else if (inet_pton(AF_INET6, host, bin) == 1) {
            if (protos & MASTER_PROTO_IPV6) {
                vstr_sprintf(addr, "[%s]:%d", host, port);
                argv_add(addrs, vstr_str(addr));
            }
        } else {
            vstr_sprintf(why,
                         "inet_interfaces: \"%s\" is not a numeric "
                         "IP address (nor all, loopback-only)",
                         words->argv[i]);
            status = -1;
        }
    }
    if (status == 0 && addrs->argc == 0) {
        vstr_sprintf(why,
                     "service %s: inet_interfaces (%s) and "
                     "inet_protocols (%s) leave no address to listen on",
                     name, mail_conf_str(ctx->conf, "inet_interfaces"),
                     mail_conf_str(ctx->conf, "inet_protocols"));
        status = -1;
    }
out:
    argv_free(words);
    vstr_free(addr);
    return status;
}

/* master_inet_listen_v6only - a listener on the IPv6 wildcard that does
   not take IPv4 (inet_protocols = ipv6) */
static int master_inet_listen_v6only(int port)
{
    struct sockaddr_in6 sin6;
    int on = 1;
    int fd;

    if ((fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) <
        0)
        return -1;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = in6addr_any;
    sin6.sin6_port = htons((uint16_t) port);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) < 0 ||
        bind(fd, (struct sockaddr *) &sin6, sizeof(sin6)) < 0 ||
        listen(fd, MASTER_LISTEN_BACKLOG) < 0) {
        int saved_errno = errno;

        (void) close(fd);
        errno = saved_errno;
        return -1;
    }
    return fd;
}

/* master_inet_listen - bind one inet address of a service: "[::]:port"
   is the IPv6 wildcard alone, "*:port" every address of both families */
static int master_inet_listen(const char *addr)
{
    char *end;
    long port;

    if (strncmp(addr, "[::]:", 5) == 0) {
        errno = 0;
        port = strtol(addr + 5, &end, 10);
        if (errno || *end || port <= 0 || port > 65535) {
            errno = EINVAL;
            return -1;
        }
        return master_inet_listen_v6only((int) port);
    }
    return sock_inet_listen(addr, MASTER_LISTEN_BACKLOG);
}

/* master_sock_owner - a root master gives a UNIX socket to mail_owner:
   the daemons that connect to it run as mail_owner, and connecting needs
   write permission on the socket file; -1 (why) when it cannot */
static int master_sock_owner(const MASTER_CTX *ctx, const char *path, VSTR *why)
{
    const char *owner = mail_conf_str(ctx->conf, "mail_owner");
    struct passwd *pw;

    if (geteuid() != 0)
        return 0; /* the socket is ours already */
    if ((pw = getpwnam(owner)) == NULL) {
        vstr_sprintf(why, "mail_owner %s: no such user", owner);
        return -1;
    }
    if (pw->pw_uid != 0 && chown(path, pw->pw_uid, pw->pw_gid) < 0) {
        vstr_sprintf(why, "chown %s to %s: %s", path, owner, strerror(errno));
        return -1;
    }
    return 0;
}

/* master_serv_add_listener - keep one more listening socket */
static void master_serv_add_listener(MASTER_SERV *serv, int fd)
{
    serv->listen_fds = myrealloc_array(
        serv->listen_fds, (size_t) serv->listen_count + 1, sizeof(int));
    serv->listen_fds[serv->listen_count++] = fd;
}

/* master_serv_listen - bind the service's listeners */
static int master_serv_listen(MASTER_SERV *serv, VSTR *why)
{
    MASTER_CTX *ctx = serv->ctx;
    VSTR *addr = vstr_alloc(64);
    ARGV *addrs;
    int status = 0;
    int fd;

    if (serv->type == MASTER_SERV_INET) {
        addrs = argv_alloc(2);
        if (master_inet_addrs(ctx, serv->name, addrs, why) < 0) {
            status = -1;
        } else if (addrs->argc > MASTER_LISTEN_MAX) {
            vstr_sprintf(why, "service %s: more than %d addresses to listen on",
                         serv->name, MASTER_LISTEN_MAX);
            status = -1;
        }
        for (size_t i = 0; status == 0 && i < addrs->argc; i++) {
            if ((fd = master_inet_listen(addrs->argv[i])) < 0) {
                vstr_sprintf(why, "bind %s: %s", addrs->argv[i],
                             strerror(errno));
                status = -1;
            } else {
                master_serv_add_listener(serv, fd);
            }
        }
        argv_free(addrs);
        if (status < 0)
            master_serv_close(serv);
    } else {
        mail_queue_service(addr, ctx->queue_dir,
                           serv->private_service ? MAIL_QUEUE_PRIVATE
                                                 : MAIL_QUEUE_PUBLIC,
                           serv->name);
        serv->sock_path = mystrdup(vstr_str(addr));
        if ((fd = sock_unix_listen(serv->sock_path, MASTER_LISTEN_BACKLOG,
                                   serv->private_service ? 0600 : 0666)) < 0) {
            vstr_sprintf(why, "bind %s: %s", serv->sock_path, strerror(errno));
            status = -1;
        } else if (master_sock_owner(ctx, serv->sock_path, why) < 0) {
            (void) close(fd);
            (void) unlink(serv->sock_path);
            status = -1;
        } else {
            master_serv_add_listener(serv, fd);
        }
    }
    vstr_free(addr);
    return status;
}

/* master_serv_own_close - close the daemon's own listener */
static void master_serv_own_close(MASTER_SERV *serv)
{
    if (serv->own_fd >= 0)
        (void) close(serv->own_fd);
    serv->own_fd = -1;
    serv->own_addr = myfree(serv->own_addr);
}

/* master_serv_own_listen - bind (or keep) the listener main.cf names for
   the service's program; a failure is logged, the daemon then binds it
   itself */
static void master_serv_own_listen(MASTER_SERV *serv)
{
    const char *program = strrchr(serv->argv->argv[0], '/');
    const char *want = "";
    VSTR *addr;
    int fd;

    program = program ? program + 1 : serv->argv->argv[0];
    for (size_t i = 0;
         i < sizeof(master_own_listeners) / sizeof(master_own_listeners[0]);
         i++)
        if (strcmp(program, master_own_listeners[i].program) == 0)
            want =
                mail_conf_str(serv->ctx->conf, master_own_listeners[i].param);
    if (serv->own_addr != NULL && strcmp(serv->own_addr, want) == 0)
        return; /* the same socket for the successor */
    master_serv_own_close(serv);
    if (*want == 0)
        return;
    addr = vstr_alloc(64);
    /* ":port", the wildcard as the api reads it, is "*:port" to sock.c */
    vstr_sprintf(addr, "%s%s", *want == ':' ? "*" : "", want);
    fd = sock_inet_listen(vstr_str(addr), MASTER_LISTEN_BACKLOG);
    if (fd < 0)
        msg_warn("service %s: bind %s: %m (the daemon tries itself)",
                 serv->name, vstr_str(addr));
    vstr_free(addr);
    if (fd < 0)
        return;
    serv->own_fd = fd;
    serv->own_addr = mystrdup(want);
}

/* master_serv_path - the program a service runs */
static char *master_serv_path(const MASTER_CTX *ctx, const char *command)
{
    VSTR *path;

    if (command[0] == '/')
        return mystrdup(command);
    path = vstr_alloc(100);
    vstr_sprintf(path, "%s/%s", ctx->daemon_dir, command);
    return vstr_export(path);
}

/* master_serv_same - does a master.cf entry name this service? */
static bool master_serv_same(const MASTER_SERV *serv, const MASTER_ENT *ent)
{
    return serv->type == ent->type && strcmp(serv->name, ent->name) == 0 &&
           (serv->type == MASTER_SERV_INET ||
            serv->private_service == ent->private_service);
}

/* master_serv_update - take a master.cf entry's settings */
static void master_serv_update(MASTER_SERV *serv, MASTER_ENT *ent)
{
    serv->wakeup = ent->wakeup;
    serv->maxproc = ent->maxproc;
    argv_free(serv->argv);
    serv->argv = ent->argv; /* taken over */
    ent->argv = NULL;
    myfree(serv->path);
    serv->path = master_serv_path(serv->ctx, serv->argv->argv[0]);
}

/* master_wakeup_event - send a service its periodic wake-up */
static void master_wakeup_event(evutil_socket_t fd, short what, void *arg)
{
    MASTER_SERV *serv = arg;

    if (serv->sock_path && trigger_send(serv->sock_path, TRIGGER_WAKEUP) < 0 &&
        msg_verbose_get())
        msg_info("wakeup %s: %m", serv->sock_path);
}

/* master_serv_wakeup_arm - (re)start the wake-up timer */
static void master_serv_wakeup_arm(MASTER_SERV *serv)
{
    struct timeval tv = {serv->wakeup, 0};

    if (serv->wakeup_ev) {
        event_free(serv->wakeup_ev);
        serv->wakeup_ev = NULL;
    }
    if (serv->wakeup <= 0 || serv->type != MASTER_SERV_UNIX)
        return;
    serv->wakeup_ev =
        event_new(serv->ctx->base, -1, EV_PERSIST, master_wakeup_event, serv);
    if (serv->wakeup_ev == NULL || event_add(serv->wakeup_ev, &tv) < 0)
        msg_fatal("cannot add a wakeup timer");
}

/* master_serv_create - a new service from a master.cf entry */
static MASTER_SERV *master_serv_create(MASTER_CTX *ctx, MASTER_ENT *ent)
{
    MASTER_SERV *serv = mycalloc(1, sizeof(*serv));

    serv->ctx = ctx;
    serv->name = mystrdup(ent->name);
    serv->type = ent->type;
    serv->private_service = ent->private_service;
    serv->backoff = (int) ctx->backoff_initial;
    serv->own_fd = -1;
    master_serv_update(serv, ent);
    return serv;
}

/* master_serv_close - stop listening (and remove the socket file) */
static void master_serv_close(MASTER_SERV *serv)
{
    master_serv_own_close(serv);
    for (int i = 0; i < serv->listen_count; i++)
        (void) close(serv->listen_fds[i]);
    serv->listen_count = 0;
    serv->listen_fds = myfree(serv->listen_fds);
    if (serv->sock_path) {
        if (unlink(serv->sock_path) < 0 && errno != ENOENT)
            msg_warn("remove %s: %m", serv->sock_path);
        serv->sock_path = myfree(serv->sock_path);
    }
    if (serv->wakeup_ev) {
        event_free(serv->wakeup_ev);
        serv->wakeup_ev = NULL;
    }
    if (serv->restart_ev) {
        event_free(serv->restart_ev);
        serv->restart_ev = NULL;
    }
}

/* master_serv_free - release a service that has no processes left */
static void master_serv_free(MASTER_SERV *serv)
{
    master_serv_close(serv);
    myfree(serv->name);
    argv_free(serv->argv);
    myfree(serv->path);
    myfree(serv);
}

/* master_proc_status_read - read what a child said; its busy state after
   that (false at EOF); *eof true when the child closed its end */
static bool master_proc_status_read(MASTER_PROC *proc, bool *eof)
{
    char buf[64];
    ssize_t got;
    bool busy = proc->busy;

    *eof = false;
    for (;;) {
        got = read(proc->status_fd, buf, sizeof(buf));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN)
            return busy;
        if (got <= 0) {
            *eof = true;
            return false;
        }
        /* Any byte at all: the process got through its start. */
        proc->ready = true;
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] == 'B')
                busy = true;
            else if (buf[i] == 'A')
                busy = false;
        }
    }
}

/* master_proc_status_event - a child says available or busy (or dies) */
static void master_proc_status_event(evutil_socket_t fd, short what, void *arg)
{
    MASTER_PROC *proc = arg;
    MASTER_SERV *serv = proc->serv;
    bool eof;
    bool busy = master_proc_status_read(proc, &eof);

    /* Dying: SIGCHLD does the rest. */
    if (eof)
        event_del(proc->status_ev);
    if (busy != proc->busy) {
        proc->busy = busy;
        if (!proc->retired)
            serv->busy += busy ? 1 : -1;
        master_serv_check(serv);
    }
}

/* master_child_setup - in the child: descriptors, environment, then exec */
static void master_child_exec(MASTER_SERV *serv, int status_fd)
{
    MASTER_CTX *ctx = serv->ctx;
    sigset_t none;
    int fds[2 + MASTER_LISTEN_MAX] = {status_fd};
    int count = 1 + serv->listen_count;
    char listen_count[8];
    char own_fd[16];

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);

    for (int i = 0; i < serv->listen_count; i++)
        fds[1 + i] = serv->listen_fds[i];
    if (serv->own_fd >= 0)
        fds[count] = serv->own_fd; /* after the listeners, not counted */
    /* Move the descriptors out of the way, then into place (dup2 leaves the
       copies without close-on-exec; everything else of ours has it). */
    for (int i = 0; i < count + (serv->own_fd >= 0); i++)
        if ((fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC,
                            MASTER_FD_LISTEN + MASTER_LISTEN_MAX + 1)) < 0)
            msg_fatal("dup: %m");
    for (int i = 0; i < count + (serv->own_fd >= 0); i++)
        if (dup2(fds[i], MASTER_FD_STATUS + i) < 0)
            msg_fatal("dup2: %m");
    snprintf(listen_count, sizeof(listen_count), "%d", count - 1);
    if (serv->own_fd >= 0) {
        snprintf(own_fd, sizeof(own_fd), "%d", MASTER_FD_STATUS + count);
        if (setenv("SLUICE_OWN_LISTEN_FD", own_fd, 1) < 0 ||
            setenv("SLUICE_OWN_LISTEN_ADDR", serv->own_addr, 1) < 0)
            msg_fatal("setenv: %m");
    } else {
        (void) unsetenv("SLUICE_OWN_LISTEN_FD");
        (void) unsetenv("SLUICE_OWN_LISTEN_ADDR");
    }
    if (setenv("SLUICE_CONFIG", ctx->config_dir, 1) < 0 ||
        setenv("SLUICE_SERVICE", serv->name, 1) < 0 ||
        setenv("SLUICE_SERVICE_TYPE", master_serv_type_name(serv->type), 1) <
            0 ||
        setenv("SLUICE_LISTEN_FDS", listen_count, 1) < 0)
        msg_fatal("setenv: %m");
    if (ctx->foreground)
        (void) setenv("SLUICE_LOG_STDERR", "1", 1);
    else
        (void) unsetenv("SLUICE_LOG_STDERR");
    execv(serv->path, serv->argv->argv);
    msg_fatal("exec %s: %m", serv->path);
}

/* master_spawn - start one process of a service */
static void master_spawn(MASTER_SERV *serv)
{
    MASTER_PROC *proc;
    int pair[2];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        msg_warn("socketpair: %m");
        return;
    }
    switch (pid = fork()) {
    case -1:
        msg_warn("fork: %m");
        (void) close(pair[0]);
        (void) close(pair[1]);
        return;
    case 0:
        (void) close(pair[0]);
        master_child_exec(serv, pair[1]);
        _exit(1);
    default:
        break;
    }
    (void) close(pair[1]);
    proc = mycalloc(1, sizeof(*proc));
    proc->pid = pid;
    proc->serv = serv;
    proc->status_fd = pair[0];
    clock_gettime(CLOCK_MONOTONIC, &proc->started);
    (void) fcntl(pair[0], F_SETFL, fcntl(pair[0], F_GETFL) | O_NONBLOCK);
    proc->status_ev = event_new(serv->ctx->base, pair[0], EV_READ | EV_PERSIST,
                                master_proc_status_event, proc);
    if (proc->status_ev == NULL || event_add(proc->status_ev, NULL) < 0)
        msg_fatal("cannot watch a child's status");
    proc->next = serv->procs;
    serv->procs = proc;
    serv->live++;
    if (msg_verbose_get())
        msg_info("started %s pid %ld for service %s", serv->path, (long) pid,
                 serv->name);
}

/* master_restart_event - a service's back-off is over */
static void master_restart_event(evutil_socket_t fd, short what, void *arg)
{
    MASTER_SERV *serv = arg;

    serv->throttled = false;
    master_serv_check(serv);
}

/* master_serv_throttle - wait before starting the service again */
static void master_serv_throttle(MASTER_SERV *serv)
{
    MASTER_CTX *ctx = serv->ctx;
    struct timeval tv = {serv->backoff, 0};

    msg_warn("service %s: process died too quickly, restarting in %d second%s",
             serv->name, serv->backoff, serv->backoff == 1 ? "" : "s");
    serv->throttled = true;
    if (serv->restart_ev == NULL)
        serv->restart_ev = evtimer_new(ctx->base, master_restart_event, serv);
    if (serv->restart_ev == NULL || evtimer_add(serv->restart_ev, &tv) < 0)
        msg_fatal("cannot add a restart timer");
    if (serv->backoff < ctx->backoff_max)
        serv->backoff = serv->backoff * 2 > ctx->backoff_max
                            ? (int) ctx->backoff_max
                            : serv->backoff * 2;
}

/* master_serv_check - start processes the service needs */
static void master_serv_check(MASTER_SERV *serv)
{
    MASTER_CTX *ctx = serv->ctx;

    if (ctx->stopping || serv->throttled || !serv->seen)
        return;
    if (serv->live == 0 || (serv->busy >= serv->live &&
                            (serv->maxproc == 0 || serv->live < serv->maxproc)))
        master_spawn(serv);
}

/* master_services_open - bind every service of master.cf (at start) */
int master_services_open(MASTER_CTX *ctx, const MASTER_CF *cf, VSTR *why)
{
    MASTER_SERV **tail = &ctx->servs;

    for (size_t i = 0; i < cf->count; i++) {
        MASTER_SERV *serv = master_serv_create(ctx, &cf->ents[i]);

        serv->seen = true;
        *tail = serv;
        tail = &serv->next;
        if (master_serv_listen(serv, why) < 0)
            return -1;
        master_serv_own_listen(serv);
    }
    return 0;
}

static void master_status_write(MASTER_CTX *ctx);

/* master_services_start - start the first process of every service */
void master_services_start(MASTER_CTX *ctx)
{
    for (MASTER_SERV *serv = ctx->servs; serv; serv = serv->next) {
        master_serv_wakeup_arm(serv);
        master_serv_check(serv);
    }
    master_status_write(ctx);
}

/* master_serv_retire - ask every process of a service to finish and go */
static void master_serv_retire(MASTER_SERV *serv)
{
    for (MASTER_PROC *proc = serv->procs; proc; proc = proc->next) {
        if (proc->retired)
            continue;
        proc->retired = true;
        serv->live--;
        if (proc->busy)
            serv->busy--;
        if (kill(proc->pid, SIGHUP) < 0 && errno != ESRCH)
            msg_warn("kill %ld: %m", (long) proc->pid);
    }
}

/* master_services_reload - apply a new master.cf */
void master_services_reload(MASTER_CTX *ctx, const MASTER_CF *cf)
{
    MASTER_SERV **tail;
    VSTR *why = vstr_alloc(100);

    for (MASTER_SERV *serv = ctx->servs; serv; serv = serv->next)
        serv->seen = false;
    for (size_t i = 0; i < cf->count; i++) {
        MASTER_ENT *ent = &cf->ents[i];
        MASTER_SERV *serv;

        for (serv = ctx->servs; serv; serv = serv->next)
            if (serv->listen_count > 0 && master_serv_same(serv, ent))
                break;
        if (serv != NULL) {
            master_serv_update(serv, ent);
            master_serv_own_listen(serv); /* before the successor starts */
            serv->seen = true;
            serv->backoff = (int) ctx->backoff_initial;
            master_serv_retire(serv);
            continue;
        }
        serv = master_serv_create(ctx, ent);
        if (master_serv_listen(serv, why) < 0) {
            msg_warn("%s", vstr_str(why));
            master_serv_free(serv);
            continue;
        }
        master_serv_own_listen(serv);
        serv->seen = true;
        for (tail = &ctx->servs; *tail; tail = &(*tail)->next)
            /* void */;
        *tail = serv;
    }
    /* Services no longer in master.cf: close, retire, free when empty. */
    for (tail = &ctx->servs; *tail;) {
        MASTER_SERV *serv = *tail;

        if (serv->seen) {
            master_serv_wakeup_arm(serv);
            serv->throttled = false;
            if (serv->restart_ev)
                evtimer_del(serv->restart_ev);
            master_serv_check(serv);
            tail = &serv->next;
            continue;
        }
        master_serv_close(serv);
        master_serv_retire(serv);
        if (serv->procs == NULL) {
            *tail = serv->next;
            master_serv_free(serv);
        } else {
            tail = &serv->next;
        }
    }
    master_status_write(ctx);
    vstr_free(why);
}

/* master_proc_find - the process record of pid, and its service */
static MASTER_PROC *master_proc_unlink(MASTER_CTX *ctx, pid_t pid)
{
    for (MASTER_SERV *serv = ctx->servs; serv; serv = serv->next) {
        for (MASTER_PROC **pp = &serv->procs; *pp; pp = &(*pp)->next) {
            MASTER_PROC *proc = *pp;

            if (proc->pid == pid) {
                *pp = proc->next;
                return proc;
            }
        }
    }
    return NULL;
}

/* master_killed_from_outside - a signal that someone sent the process
   (an administrator, a script, stop), as opposed to one that says the
   process itself went wrong (SIGSEGV, SIGABRT from msg_panic, ...) */
static bool master_killed_from_outside(int status)
{
    if (!WIFSIGNALED(status))
        return false;
    switch (WTERMSIG(status)) {
    case SIGKILL:
    case SIGTERM:
    case SIGINT:
    case SIGHUP:
    case SIGQUIT:
        return true;
    default:
        return false;
    }
}

/* master_status_write - rewrite pid/master.status with every service's
   count of processes that died unasked (a warning when it cannot be) */
static void master_status_write(MASTER_CTX *ctx)
{
    VSTR *path = vstr_alloc(100);
    VSTR *tmp = vstr_alloc(100);
    VSTR *text = vstr_alloc(256);
    int fd;

    vstr_sprintf(path, "%s/%s/%s", ctx->queue_dir, MAIL_QUEUE_PID,
                 MASTER_STATUS_FILE);
    vstr_sprintf(tmp, "%s.tmp", vstr_str(path));
    vstr_sprintf(text, "%s\n", MASTER_STATUS_MAGIC);
    for (const MASTER_SERV *serv = ctx->servs; serv; serv = serv->next)
        if (serv->seen)
            vstr_sprintf_append(text, "service %s %s %lld\n", serv->name,
                                master_serv_type_name(serv->type),
                                serv->deaths);
    /* pid/ may be someone else's (an old layout): never follow a link;
       0644 whatever the umask, as the metrics daemon is not root. */
    if ((unlink(vstr_str(tmp)) < 0 && errno != ENOENT) ||
        (fd = open(vstr_str(tmp),
                   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   0644)) < 0) {
        msg_warn("write %s: %m", vstr_str(tmp));
    } else {
        bool ok = fchmod(fd, 0644) == 0 &&
                  safe_file_write_all(fd, vstr_str(text), vstr_len(text)) == 0;

        if (close(fd) < 0 || !ok || rename(vstr_str(tmp), vstr_str(path)) < 0) {
            msg_warn("write %s: %m", vstr_str(path));
            (void) unlink(vstr_str(tmp));
        }
    }
    vstr_free(path);
    vstr_free(tmp);
    vstr_free(text);
}

/* master_proc_gone - account for a reaped child */
static void master_proc_gone(MASTER_CTX *ctx, MASTER_PROC *proc, int status)
{
    MASTER_SERV *serv = proc->serv;
    double lived = master_elapsed(&proc->started);
    bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    bool killed = master_killed_from_outside(status);
    bool eof;

    /* What it said before it died counts: a ready byte may still wait. */
    (void) master_proc_status_read(proc, &eof);
    if (!proc->retired) {
        serv->live--;
        if (proc->busy)
            serv->busy--;
    }
    if (!proc->retired && !ctx->stopping) {
        if (WIFSIGNALED(status))
            msg_warn("process %s pid %ld killed by signal %d", serv->path,
                     (long) proc->pid, WTERMSIG(status));
        else if (failed)
            msg_warn("process %s pid %ld exit status %d", serv->path,
                     (long) proc->pid, WEXITSTATUS(status));
        serv->deaths++;
        master_status_write(ctx);
        if (lived < MASTER_STABLE_SECONDS && (!proc->ready || !killed)) {
            if (serv->seen && !serv->throttled)
                master_serv_throttle(serv);
        } else {
            /* It started well (or lived long): the next failure starts
               the back-off over. */
            serv->backoff = (int) ctx->backoff_initial;
        }
    }
    event_free(proc->status_ev);
    (void) close(proc->status_fd);
    myfree(proc);
    master_serv_check(serv);
}

/* master_services_reap - collect every child that has exited */
void master_services_reap(MASTER_CTX *ctx)
{
    MASTER_SERV **tail;
    pid_t pid;
    int status;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        MASTER_PROC *proc = master_proc_unlink(ctx, pid);

        if (proc == NULL) {
            if (msg_verbose_get())
                msg_info("reaped unknown pid %ld", (long) pid);
            continue;
        }
        master_proc_gone(ctx, proc, status);
    }
    /* Free removed services whose last process has gone. */
    for (tail = &ctx->servs; *tail;) {
        MASTER_SERV *serv = *tail;

        if (!serv->seen && serv->procs == NULL) {
            *tail = serv->next;
            master_serv_free(serv);
        } else {
            tail = &serv->next;
        }
    }
}

/* master_services_stop - close every listener and SIGTERM every child */
void master_services_stop(MASTER_CTX *ctx)
{
    for (MASTER_SERV *serv = ctx->servs; serv; serv = serv->next) {
        master_serv_close(serv);
        for (MASTER_PROC *proc = serv->procs; proc; proc = proc->next)
            if (kill(proc->pid, SIGTERM) < 0 && errno != ESRCH)
                msg_warn("kill %ld: %m", (long) proc->pid);
    }
}

/* master_services_kill - SIGKILL whatever still runs (stop took too long) */
void master_services_kill(MASTER_CTX *ctx)
{
    for (MASTER_SERV *serv = ctx->servs; serv; serv = serv->next)
        for (MASTER_PROC *proc = serv->procs; proc; proc = proc->next) {
            msg_warn("process %s pid %ld did not stop: killing it", serv->path,
                     (long) proc->pid);
            (void) kill(proc->pid, SIGKILL);
        }
}

/* master_services_idle - no child left */
bool master_services_idle(const MASTER_CTX *ctx)
{
    for (const MASTER_SERV *serv = ctx->servs; serv; serv = serv->next)
        if (serv->procs)
            return false;
    return true;
}

/* master_services_free - release every service (at exit) */
void master_services_free(MASTER_CTX *ctx)
{
    while (ctx->servs) {
        MASTER_SERV *serv = ctx->servs;

        ctx->servs = serv->next;
        while (serv->procs) {
            MASTER_PROC *proc = serv->procs;

            serv->procs = proc->next;
            event_free(proc->status_ev);
            (void) close(proc->status_fd);
            myfree(proc);
        }
        master_serv_free(serv);
    }
}
