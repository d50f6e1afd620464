/*
 * master - the supervisor of one sluice instance
 *
 * Usage: master [-c config_dir] [-f] [-v]
 *
 * Reads main.cf and master.cf, locks pid/master.pid under queue_directory
 * (a second master on the same queue is refused; a master run as root
 * keeps pid/ root's, mode 0755, so that no other user can name a process
 * there for root's `sluice stop`), binds every listener,
 * and then starts and watches the daemons (master_service.c).
 *
 * Without -f it detaches, and the command that started it returns only
 * when the listeners are open and the first processes started, with exit
 * status 0; or with status 1 and the reason as one line on stderr. With -f
 * it stays in the foreground and logs to stderr as well.
 *
 * Signals: SIGHUP re-reads main.cf and master.cf; SIGTERM (and SIGINT)
 * stops every daemon and exits once they are gone.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "argv.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "master.h"
#include "master_cf.h"
#include "master_unserved.h"
#include "msg.h"
#include "mymalloc.h"
#include "bounce_class.h"
#include "shaping.h"
#include "sign_token.h"
#include "vstr.h"

#define MASTER_VERSION "0.1"

/* master_check_shaping - smtp_shaping_maps parses (0), or -1 with why */
static int master_check_shaping(const MAIL_CONF *conf, VSTR *why)
{
    SHAPING_RULES *rules = shaping_rules_load(
        "smtp_shaping_maps", mail_conf_str(conf, "smtp_shaping_maps"), why);

    if (rules == NULL && vstr_len(why) > 0)
        return -1;
    shaping_rules_free(rules);
    return 0;
}

/* master_check_bounce_classes - bounce_classes_file parses (0), or -1
   with why ("file:line: reason") */
static int master_check_bounce_classes(const MAIL_CONF *conf, VSTR *why)
{
    BOUNCE_CLASS_RULES *rules = bounce_class_rules_load(
        mail_conf_str(conf, "bounce_classes_file"), why);

    if (rules == NULL) {
        VSTR *text = vstr_alloc(100);

        vstr_sprintf(text, "bounce_classes_file: %s", vstr_str(why));
        vstr_cpy(why, vstr_str(text));
        vstr_free(text);
        return -1;
    }
    bounce_class_rules_free(rules);
    return 0;
}

/* master_configure - read main.cf into ctx; NULL reason or -1 */
static int master_configure(MASTER_CTX *ctx, VSTR *why)
{
    MAIL_CONF *conf;

    if ((conf = mail_conf_read(ctx->config_dir, why)) == NULL)
        return -1;
    /* No daemon runs as root: as root, mail_owner must be someone else. */
    if (geteuid() == 0 && mail_conf_owner(conf, why) == NULL) {
        mail_conf_free(conf);
        return -1;
    }
    /* A malformed shaping rules file keeps the old configuration, and the
       running qmgr its rules (qmgr_shaping.c). */
    if (master_check_shaping(conf, why) < 0 ||
        master_check_bounce_classes(conf, why) < 0) {
        mail_conf_free(conf);
        return -1;
    }
    mail_conf_free(ctx->conf);
    ctx->conf = conf;
    myfree(ctx->queue_dir);
    ctx->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    myfree(ctx->daemon_dir);
    ctx->daemon_dir = mystrdup(mail_conf_str(conf, "daemon_directory"));
    ctx->backoff_initial = mail_conf_time(conf, "master_backoff_initial");
    ctx->backoff_max = mail_conf_time(conf, "master_backoff_max");
    /* Each is within its bounds (mail_params.c); together they may not be. */
    if (ctx->backoff_max < ctx->backoff_initial)
        ctx->backoff_max = ctx->backoff_initial;
    ctx->default_maxproc = (int) mail_conf_int(conf, "default_process_limit");
    return 0;
}

/* master_check_owner - root runs only an instance whose configuration
   directory is root's: whoever can change main.cf (daemon_directory, the
   programs of master.cf) decides what master runs. `sluice start` runs
   an instance of another user as that user. */
static void master_check_owner(const char *config_dir)
{
    struct stat st;

    if (geteuid() != 0)
        return;
    if (stat(config_dir, &st) < 0)
        msg_fatal("configuration directory %s: %m", config_dir);
    if (st.st_uid != 0)
        msg_fatal("configuration directory %s belongs to uid %ld, not root: "
                  "root runs no instance that another user controls (start "
                  "it as that user; sluice start does)",
                  config_dir, (long) st.st_uid);
}

/* master_read_cf - read master.cf of the instance */
static MASTER_CF *master_read_cf(MASTER_CTX *ctx, VSTR *why)
{
    VSTR *path = vstr_alloc(100);
    MASTER_CF *cf;

    vstr_sprintf(path, "%s/master.cf", ctx->config_dir);
    cf = master_cf_read(vstr_str(path), ctx->default_maxproc, why);
    vstr_free(path);
    return cf;
}

/* master_warn_unserved - a daemon main.cf asks for that master.cf does
   not run is a warning (master_unserved), at start and reload */
static void master_warn_unserved(const MASTER_CTX *ctx, const MASTER_CF *cf)
{
    ARGV *warnings = argv_alloc(2);

    master_unserved(cf, ctx->conf, warnings);
    for (size_t i = 0; i < warnings->argc; i++)
        msg_warn("%s", warnings->argv[i]);
    argv_free(warnings);
}

/* master_queue_dirs - create each queue folder that is missing, as
   `sluice check` would (mail_queue_create_at, mail_queue_dir_mode): an
   instance made before a folder existed (events/) works after an upgrade
   without `sluice check`. Made by descriptor from queue_directory down,
   no symbolic link followed; one that exists is left as it is (sluice
   check fixes modes). pid/ of a master run as root: master_pid_dir. What
   cannot be made is a warning: the daemon that needs it says why it
   fails */
static void master_queue_dirs(MASTER_CTX *ctx)
{
    const char *group_name = mail_conf_str(ctx->conf, "setgid_group");
    const struct group *gr = *group_name ? getgrnam(group_name) : NULL;
    gid_t group = gr ? gr->gr_gid : (gid_t) -1;
    uid_t owner = (uid_t) -1;
    gid_t owner_group = (gid_t) -1;
    const struct passwd *pw;
    VSTR *why = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    char hash_name[2] = {0, 0};
    int queue_fd;
    int fd;
    int hash_fd;

    /* As root, mail_owner exists and is not root (master_configure). */
    if (geteuid() == 0 && (pw = mail_conf_owner(ctx->conf, why)) != NULL) {
        owner = pw->pw_uid;
        owner_group = pw->pw_gid; /* as sluice init makes them */
    }
    if ((queue_fd = open(ctx->queue_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) <
        0) {
        msg_warn("open %s: %m", ctx->queue_dir);
        goto out;
    }
    for (const char *const *name = mail_queue_names; *name; name++) {
        bool grouped =
            group != (gid_t) -1 && (strcmp(*name, MAIL_QUEUE_MAILDROP) == 0 ||
                                    strcmp(*name, MAIL_QUEUE_PUBLIC) == 0);

        if (geteuid() == 0 && strcmp(*name, MAIL_QUEUE_PID) == 0)
            continue;
        vstr_sprintf(path, "%s/%s", ctx->queue_dir, *name);
        if ((fd = mail_queue_create_at(queue_fd, *name, vstr_str(path), false,
                                       mail_queue_dir_mode(*name, gr != NULL),
                                       owner, grouped ? group : owner_group,
                                       why)) < 0) {
            if (errno != EEXIST)
                msg_warn("%s", vstr_str(why));
            continue;
        }
        msg_info("created missing queue folder %s/", *name);
        if (mail_queue_hashed(*name)) {
            for (const char *hash = mail_queue_hash_chars; *hash; hash++) {
                hash_name[0] = *hash;
                vstr_sprintf(path, "%s/%s/%c", ctx->queue_dir, *name, *hash);
                if ((hash_fd = mail_queue_create_at(
                         fd, hash_name, vstr_str(path), false, 0700, owner,
                         owner_group, why)) < 0) {
                    msg_warn("%s", vstr_str(why));
                    break;
                }
                (void) close(hash_fd);
            }
        }
        (void) close(fd);
    }
    (void) close(queue_fd);
out:
    vstr_free(path);
    vstr_free(why);
}

/* master_data_dir - data_directory/NAME made when missing as sluice init
   makes it (mode 0700, the mail owner's when master runs as root). Made
   by descriptor, no symbolic link followed; one that exists is left as
   it is. A failure is a warning (the daemons say what they then lack). */
static void master_data_dir(MASTER_CTX *ctx, int dir_fd, const char *name)
{
    const char *data_dir = mail_conf_str(ctx->conf, "data_directory");
    const struct passwd *pw;
    VSTR *why;
    int fd;

    if (mkdirat(dir_fd, name, 0700) < 0) {
        if (errno != EEXIST)
            msg_warn("mkdir %s/%s: %m", data_dir, name);
        return;
    }
    why = vstr_alloc(100);
    if (geteuid() == 0 && (pw = mail_conf_owner(ctx->conf, why)) != NULL) {
        fd = openat(dir_fd, name,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchown(fd, pw->pw_uid, pw->pw_gid) < 0)
            msg_warn("chown %s/%s to %s: %m", data_dir, name,
                     mail_conf_str(ctx->conf, "mail_owner"));
        if (fd >= 0)
            (void) close(fd);
    }
    msg_info("created missing folder %s/%s/", data_dir, name);
    vstr_free(why);
}

/* master_feedback_key - feedback_key_file (global/sign_token.h), made
   when missing and given to the mail owner: the daemons that sign and
   check tokens (smtp, cleanup, api, feedback) run as the mail owner and
   cannot make it in a data_directory that root owns */
static void master_feedback_key(MASTER_CTX *ctx)
{
    const struct passwd *pw;
    VSTR *path = vstr_alloc(100);
    VSTR *key = vstr_alloc(SIGN_TOKEN_KEY_LEN);
    VSTR *why = vstr_alloc(100);
    struct stat st;
    int fd;

    sign_token_key_path(ctx->conf, path);
    if (lstat(vstr_str(path), &st) == 0 || errno != ENOENT) {
        /* there (or unreadable by stat: the daemons will say) */
    } else if (sign_token_key_load(vstr_str(path), key, why) < 0) {
        msg_warn("feedback key: %s", vstr_str(why));
    } else {
        if (geteuid() == 0 && (pw = mail_conf_owner(ctx->conf, why)) != NULL) {
            fd = open(vstr_str(path), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0 || fchown(fd, pw->pw_uid, pw->pw_gid) < 0)
                msg_warn("chown %s to %s: %m", vstr_str(path),
                         mail_conf_str(ctx->conf, "mail_owner"));
            if (fd >= 0)
                (void) close(fd);
        }
        msg_info("created missing key %s", vstr_str(path));
    }
    vstr_free(path);
    vstr_free(key);
    vstr_free(why);
}

/* master_data_dirs - what the daemons keep under data_directory, made
   when an instance made before it existed is started after an upgrade:
   sources/ (qmgr's reputation pauses and warm-up counts,
   qmgr/qmgr_source.c; without it pauses are kept in memory only),
   suppression/ (global/suppress.h) and the feedback key */
static void master_data_dirs(MASTER_CTX *ctx)
{
    const char *data_dir = mail_conf_str(ctx->conf, "data_directory");
    int dir_fd;

    if (*data_dir == 0)
        return;
    if ((dir_fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        msg_warn("open data_directory %s: %m", data_dir);
        return;
    }
    master_data_dir(ctx, dir_fd, "sources");
    master_data_dir(ctx, dir_fd, "suppression");
    (void) close(dir_fd);
    master_feedback_key(ctx);
}

/* master_pid_dir - open queue_directory/pid. A master run as root keeps
   its pid file where only root writes: pid/ is made root's, mode 0755,
   through a descriptor opened without following a symbolic link (what
   `sluice stop` reads there names a process that root signals) */
static int master_pid_dir(MASTER_CTX *ctx, const char *path)
{
    struct stat st;
    int queue_fd;
    int fd;

    if (geteuid() != 0) {
        if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            msg_fatal("open %s: %m", path);
        return fd;
    }
    if ((queue_fd = open(ctx->queue_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) <
        0)
        msg_fatal("open %s: %m", ctx->queue_dir);
    if (mkdirat(queue_fd, "pid", 0755) < 0 && errno != EEXIST)
        msg_fatal("mkdir %s: %m", path);
    fd = openat(queue_fd, "pid",
                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        msg_fatal("open %s: %m (it must be a directory, not a symbolic link)",
                  path);
    if (fstat(fd, &st) < 0)
        msg_fatal("fstat %s: %m", path);
    if ((st.st_uid != 0 || st.st_gid != 0) && fchown(fd, 0, 0) < 0)
        msg_fatal("chown %s to root: %m", path);
    if ((st.st_mode & 07777) != 0755 && fchmod(fd, 0755) < 0)
        msg_fatal("chmod %s: %m", path);
    (void) close(queue_fd);
    return fd;
}

/* master_running - fatal: another master holds the pid file fd */
static void master_running(MASTER_CTX *ctx, int fd)
{
    char buf[32];
    ssize_t got;

    got = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[got > 0 ? got : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    msg_fatal("the mail system is already running (pid %s, queue %s)",
              buf + strspn(buf, " "), ctx->queue_dir);
}

/* master_lock - lock pid/master.pid, or say who holds it. As root, a
   master.pid that is not root's own plain file (another user put it there
   while pid/ was theirs) is replaced, never written through */
static int master_lock(MASTER_CTX *ctx)
{
    VSTR *path = vstr_alloc(100);
    VSTR *dir = vstr_alloc(100);
    struct stat st;
    int dir_fd;
    int fd;

    vstr_sprintf(dir, "%s/pid", ctx->queue_dir);
    vstr_sprintf(path, "%s/master.pid", vstr_str(dir));
    dir_fd = master_pid_dir(ctx, vstr_str(dir));
    fd = openat(dir_fd, "master.pid", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                0644);
    if (geteuid() == 0 && (fd < 0 ? errno == ELOOP
                                  : fstat(fd, &st) == 0 &&
                                        (!S_ISREG(st.st_mode) ||
                                         st.st_uid != 0 || st.st_nlink != 1))) {
        if (fd >= 0) {
            /* A master of the instance's own user may hold it. */
            if (flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK)
                master_running(ctx, fd);
            (void) close(fd);
        }
        msg_warn("%s was not root's own file; replacing it", vstr_str(path));
        if (unlinkat(dir_fd, "master.pid", 0) < 0 && errno != ENOENT)
            msg_fatal("remove %s: %m", vstr_str(path));
        fd = openat(dir_fd, "master.pid",
                    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    }
    if (fd < 0)
        msg_fatal("open %s: %m", vstr_str(path));
    (void) close(dir_fd);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK)
            msg_fatal("lock %s: %m", vstr_str(path));
        master_running(ctx, fd);
    }
    if (geteuid() == 0 && fchmod(fd, 0644) < 0)
        msg_fatal("chmod %s: %m", vstr_str(path));
    vstr_free(dir);
    vstr_free(path);
    return fd;
}

/* master_write_pid - record our pid in the locked pid file */
static void master_write_pid(int fd)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%10ld\n", (long) getpid());

    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t) len, 0) != len)
        msg_fatal("write pid file: %m");
}

/* master_detach - fork; the parent waits for the child's word and exits */
static int master_detach(void)
{
    int pipefd[2];
    char buf[1024];
    VSTR *said;
    ssize_t got;
    int null_fd;

    if (pipe2(pipefd, O_CLOEXEC) < 0)
        msg_fatal("pipe: %m");
    switch (fork()) {
    case -1:
        msg_fatal("fork: %m");
    case 0:
        (void) close(pipefd[0]);
        if (setsid() < 0)
            msg_warn("setsid: %m");
        if ((null_fd = open("/dev/null", O_RDWR)) >= 0) {
            (void) dup2(null_fd, 0);
            (void) dup2(null_fd, 1);
            (void) dup2(null_fd, 2);
            if (null_fd > 2)
                (void) close(null_fd);
        }
        msg_log_stderr(false);
        msg_copy_fd(pipefd[1]);
        return pipefd[1];
    default:
        break;
    }
    /* The parent: exit 0 on "ready", else repeat what went wrong. */
    (void) close(pipefd[1]);
    said = vstr_alloc(100);
    while ((got = read(pipefd[0], buf, sizeof(buf))) > 0 ||
           (got < 0 && errno == EINTR))
        if (got > 0)
            vstr_ncat(said, buf, (size_t) got);
    if (strstr(vstr_str(said), "ready\n") != NULL)
        _exit(0);
    if (vstr_len(said) == 0)
        vstr_cpy(said, "fatal: master exited without saying why\n");
    (void) fprintf(stderr, "sluice/master: %s", vstr_str(said));
    _exit(1);
}

/* master_reload - SIGHUP: re-read main.cf and master.cf */
static void master_reload(MASTER_CTX *ctx)
{
    VSTR *why = vstr_alloc(100);
    MASTER_CF *cf;

    if (master_configure(ctx, why) < 0) {
        msg_warn("reload: %s; keeping the old configuration", vstr_str(why));
    } else if ((cf = master_read_cf(ctx, why)) == NULL) {
        msg_warn("reload: %s; keeping the old services", vstr_str(why));
    } else {
        /* After a log rotation the file is new: write to it from now on
           (the daemons started by this reload open it themselves). */
        if (msg_log_file(mail_conf_str(ctx->conf, "maillog_file")) < 0)
            msg_warn("reload: open maillog_file %s: %m; logging on to the "
                     "old one",
                     mail_conf_str(ctx->conf, "maillog_file"));
        msg_info("reload -- version %s, configuration %s", MASTER_VERSION,
                 ctx->config_dir);
        master_warn_unserved(ctx, cf);
        master_services_reload(ctx, cf);
        master_cf_free(cf);
    }
    vstr_free(why);
}

/* master_kill_event - stop took too long: SIGKILL the rest */
static void master_kill_event(evutil_socket_t fd, short what, void *arg)
{
    master_services_kill(arg);
}

/* master_signal_event - HUP reloads, TERM/INT stop, CHLD reaps */
static void master_signal_event(evutil_socket_t sig, short what, void *arg)
{
    MASTER_CTX *ctx = arg;
    struct timeval grace = {MASTER_STOP_GRACE, 0};

    switch (sig) {
    case SIGHUP:
        if (!ctx->stopping)
            master_reload(ctx);
        break;
    case SIGTERM:
    case SIGINT:
        if (ctx->stopping)
            break;
        msg_info("terminating on signal %d", (int) sig);
        ctx->stopping = true;
        master_services_stop(ctx);
        ctx->kill_ev = evtimer_new(ctx->base, master_kill_event, ctx);
        if (ctx->kill_ev == NULL || evtimer_add(ctx->kill_ev, &grace) < 0)
            msg_fatal("cannot add the stop timer");
        break;
    case SIGCHLD:
        master_services_reap(ctx);
        break;
    }
    if (ctx->stopping && master_services_idle(ctx))
        event_base_loopbreak(ctx->base);
}

/* main - start the supervisor */
int main(int argc, char **argv)
{
    static const int signals[] = {SIGHUP, SIGTERM, SIGINT, SIGCHLD};
    struct event *sig_evs[SLUICE_ARRAY_LEN(signals)];
    MASTER_CTX ctx;
    MASTER_CF *cf;
    VSTR *why = vstr_alloc(100);
    VSTR *pid_path = vstr_alloc(100);
    int ready_fd = -1;
    int pid_fd;
    int ch;

    memset(&ctx, 0, sizeof(ctx));
    msg_init("sluice", "master");
    msg_log_stderr(true);
    ctx.config_dir = getenv("SLUICE_CONFIG");
    while ((ch = getopt(argc, argv, "c:fv")) != -1) {
        switch (ch) {
        case 'c':
            ctx.config_dir = optarg;
            break;
        case 'f':
            ctx.foreground = true;
            break;
        case 'v':
            msg_verbose_set(msg_verbose_get() + 1);
            break;
        default:
            msg_fatal("usage: master [-c config_dir] [-f] [-v]");
        }
    }
    if (optind != argc)
        msg_fatal("usage: master [-c config_dir] [-f] [-v]");
    if (ctx.config_dir == NULL || *ctx.config_dir == 0)
        ctx.config_dir = DEF_CONFIG_DIR;
    ctx.config_dir = mystrdup(ctx.config_dir);
    master_check_owner(ctx.config_dir);
    if (master_configure(&ctx, why) < 0)
        msg_fatal("%s", vstr_str(why));
    msg_init(mail_conf_str(ctx.conf, "syslog_name"), "master");
    if (msg_log_file(mail_conf_str(ctx.conf, "maillog_file")) < 0)
        msg_fatal("open maillog_file %s: %m",
                  mail_conf_str(ctx.conf, "maillog_file"));
    /* Unknown parameters are said once per start, by master alone. */
    const ARGV *unknown = mail_conf_warnings(ctx.conf);
    for (size_t i = 0; i < unknown->argc; i++)
        msg_warn("%s", unknown->argv[i]);
    if ((cf = master_read_cf(&ctx, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    master_warn_unserved(&ctx, cf);
    umask(022);
    master_queue_dirs(&ctx);
    master_data_dirs(&ctx);
    pid_fd = master_lock(&ctx);
    vstr_sprintf(pid_path, "%s/pid/master.pid", ctx.queue_dir);
    if (master_services_open(&ctx, cf, why) < 0)
        msg_fatal("%s", vstr_str(why));
    master_cf_free(cf);

    if (!ctx.foreground)
        ready_fd = master_detach();
    master_write_pid(pid_fd);
    signal(SIGPIPE, SIG_IGN);
    if ((ctx.base = event_base_new()) == NULL)
        msg_fatal("cannot create an event base");
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(signals); i++) {
        sig_evs[i] =
            evsignal_new(ctx.base, signals[i], master_signal_event, &ctx);
        if (sig_evs[i] == NULL || event_add(sig_evs[i], NULL) < 0)
            msg_fatal("cannot watch signal %d", signals[i]);
    }
    master_services_start(&ctx);
    msg_info("daemon started -- version %s, configuration %s", MASTER_VERSION,
             ctx.config_dir);
    if (ready_fd >= 0) {
        if (write(ready_fd, "ready\n", 6) != 6)
            msg_warn("cannot tell the starting command: %m");
        msg_copy_fd(-1);
        (void) close(ready_fd);
    }

    if (event_base_dispatch(ctx.base) < 0)
        msg_fatal("event loop failed");

    /* Every child has gone: the instance is down. */
    if (unlink(vstr_str(pid_path)) < 0)
        msg_warn("remove %s: %m", vstr_str(pid_path));
    (void) close(pid_fd);
    msg_info("stopped");
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(signals); i++)
        event_free(sig_evs[i]);
    if (ctx.kill_ev)
        event_free(ctx.kill_ev);
    master_services_free(&ctx);
    event_base_free(ctx.base);
    mail_conf_free(ctx.conf);
    myfree(ctx.queue_dir);
    myfree(ctx.daemon_dir);
    myfree(ctx.config_dir);
    vstr_free(why);
    vstr_free(pid_path);
    return 0;
}
