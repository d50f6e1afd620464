/*
 * sluice - the administrator's command
 *
 *   sluice init DIR [--smtp-port N] [--relayhost HOST:PORT]
 *   sluice [-c DIR] start [-f] | stop | reload | status
 *   sluice [-c DIR] conf [-n] [-d] [-e] [name ...] [name=value ...] | conf -X name ...
 *   sluice [-c DIR] check
 *   sluice [-c DIR] queue [--json] | cat QID | flush
 *   sluice [-c DIR] hold|release|delete|requeue QID... | ALL | -
 *   sluice [-c DIR] map [-a] [-q KEY | -d KEY] TYPE:FILE
 *
 * -c DIR may also be given as SLUICE_CONFIG=DIR; the default is
 * /etc/sluice. Whether master runs is decided by the lock on
 * queue_directory/pid/master.pid, not by the pid alone (pids are reused);
 * stop and reload signal the pid it names only when that process runs
 * daemon_directory/master and holds the pid file open.
 * Every failure exits non-zero with one line on stderr.
 *
 * This file parses the options and dispatches, and does start, stop,
 * reload and status itself; the other subcommands are listed in sluice.h.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <libgen.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "sluice.h"
#include "vstr.h"

#define SLUICE_STOP_WAIT 60 /* seconds stop waits for master */

static const char sluice_usage[] =
    "usage: sluice [-c DIR] init|start [-f]|stop|reload|status|conf|check|queue|cat|flush|hold|release|delete|requeue|map|dkim|events|stats|why|shaping|pool|suppress|api|tls ...";

/* sluice_fail - print "sluice: text" on stderr; returns 1 */
int sluice_fail(const char *fmt, ...)
{
    VSTR *line = vstr_alloc(100);
    va_list ap;

    vstr_cpy(line, "sluice: ");
    va_start(ap, fmt);
    vstr_vsprintf_append(line, fmt, ap);
    va_end(ap);
    /* One line, whatever the text held. */
    for (char *cp = vstr_str(line); *cp; cp++)
        if (*cp == '\n')
            *cp = ' ';
    (void) fprintf(stderr, "%s\n", vstr_str(line));
    vstr_free(line);
    return 1;
}

/* sluice_exe_dir - the folder of the running sluice binary */
const char *sluice_exe_dir(void)
{
    static char dir[4096];
    ssize_t len;

    if (dir[0] == 0) {
        if ((len = readlink("/proc/self/exe", dir, sizeof(dir) - 1)) < 0 ||
            (size_t) len >= sizeof(dir) - 1)
            msg_fatal("cannot find my own program: %m");
        dir[len] = 0;
        *strrchr(dir, '/') = 0;
        if (dir[0] == 0)
            dir[0] = '/', dir[1] = 0;
    }
    return dir;
}

/* sluice_read_conf - main.cf of the instance, or one line and NULL */
static MAIL_CONF *sluice_read_conf(const char *config_dir)
{
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf = mail_conf_read(config_dir, why);

    if (conf == NULL)
        sluice_fail("%s", vstr_str(why));
    vstr_free(why);
    return conf;
}

/* sluice_master_pid - pid of the running master, 0 when none, -1 error;
   pid_st (may be NULL): the pid file's status, for sluice_master_verify */
static long sluice_master_pid(const MAIL_CONF *conf, struct stat *pid_st)
{
    VSTR *path = vstr_alloc(100);
    char buf[32];
    ssize_t got;
    long pid = 0;
    int fd;

    vstr_sprintf(path, "%s/pid/master.pid",
                 mail_conf_str(conf, "queue_directory"));
    if ((fd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT) {
            sluice_fail("open %s: %s", vstr_str(path), strerror(errno));
            pid = -1;
        }
    } else if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        pid = 0; /* nobody holds it: not running */
    } else if (errno != EWOULDBLOCK) {
        sluice_fail("lock %s: %s", vstr_str(path), strerror(errno));
        pid = -1;
    } else if (pid_st != NULL && fstat(fd, pid_st) < 0) {
        sluice_fail("fstat %s: %s", vstr_str(path), strerror(errno));
        pid = -1;
    } else {
        got = pread(fd, buf, sizeof(buf) - 1, 0);
        buf[got > 0 ? got : 0] = 0;
        pid = strtol(buf, NULL, 10);
        if (pid <= 0 || pid > INT_MAX) {
            /* Locked but not yet written: master is starting. */
            pid = -1;
            sluice_fail("master is starting or stopping; try again");
        }
    }
    if (fd >= 0)
        (void) close(fd);
    vstr_free(path);
    return pid;
}

/* sluice_proc_holds - does process pid have the file st open? */
static bool sluice_proc_holds(long pid, const struct stat *st)
{
    VSTR *path = vstr_alloc(100);
    struct dirent *de;
    struct stat fd_st;
    bool found = false;
    DIR *dp;

    vstr_sprintf(path, "/proc/%ld/fd", pid);
    if ((dp = opendir(vstr_str(path))) != NULL) {
        while (!found && (de = readdir(dp)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            vstr_sprintf(path, "/proc/%ld/fd/%s", pid, de->d_name);
            found = stat(vstr_str(path), &fd_st) == 0 &&
                    fd_st.st_dev == st->st_dev && fd_st.st_ino == st->st_ino;
        }
        closedir(dp);
    }
    vstr_free(path);
    return found;
}

/* sluice_master_verify - is pid the master of this instance: does it run
   daemon_directory/master and hold the pid file open (master keeps it
   open, locked, as long as it runs)? A pid file names a process, and
   whoever can write it could name any process: stop and reload signal
   only after this says yes. 0, or 1 after one line */
static int sluice_master_verify(const MAIL_CONF *conf, const char *cmd,
                                long pid, const struct stat *pid_st)
{
    VSTR *master = vstr_alloc(100);
    VSTR *link = vstr_alloc(100);
    char exe[PATH_MAX];
    char real[PATH_MAX];
    struct stat exe_st;
    struct stat master_st;
    ssize_t len;
    bool same = false;
    int status = 0;

    vstr_sprintf(master, "%s/master", mail_conf_str(conf, "daemon_directory"));
    vstr_sprintf(link, "/proc/%ld/exe", pid);
    if (stat(vstr_str(master), &master_st) == 0 &&
        stat(vstr_str(link), &exe_st) == 0)
        same = exe_st.st_dev == master_st.st_dev &&
               exe_st.st_ino == master_st.st_ino;
    /* A master whose program was rebuilt or reinstalled since it started
       runs a deleted file of the same name. */
    if (!same && (len = readlink(vstr_str(link), exe, sizeof(exe) - 1)) > 0 &&
        realpath(vstr_str(master), real) != NULL) {
        static const char deleted[] = " (deleted)";
        size_t real_len = strlen(real);

        exe[len] = 0;
        same = strncmp(exe, real, real_len) == 0 &&
               (exe[real_len] == 0 || strcmp(exe + real_len, deleted) == 0);
    }
    if (!same)
        status = sluice_fail("%s: the pid file names pid %ld, which does not "
                             "run %s; not signalling it",
                             cmd, pid, vstr_str(master));
    else if (!sluice_proc_holds(pid, pid_st))
        status = sluice_fail("%s: the pid file names pid %ld, which does not "
                             "hold the pid file open: not the master of this "
                             "instance; not signalling it",
                             cmd, pid);
    vstr_free(link);
    vstr_free(master);
    return status;
}

/* sluice_start_as_owner - root starting an instance whose configuration
   directory another user owns runs it as that user: that user decides
   what master runs (main.cf, master.cf), so root must not run it (master
   refuses). 0, or 1 after one line */
static int sluice_start_as_owner(const char *config_dir)
{
    struct stat st;
    struct passwd *pw;
    gid_t gid;

    if (geteuid() != 0)
        return 0;
    if (stat(config_dir, &st) < 0)
        return sluice_fail("start: %s: %s", config_dir, strerror(errno));
    if (st.st_uid == 0)
        return 0;
    pw = getpwuid(st.st_uid);
    gid = pw ? pw->pw_gid : st.st_gid;
    if ((pw ? initgroups(pw->pw_name, gid) : setgroups(0, NULL)) < 0 ||
        setgid(gid) < 0 || setuid(st.st_uid) < 0)
        return sluice_fail("start: cannot become uid %ld, the owner of %s: %s",
                           (long) st.st_uid, config_dir, strerror(errno));
    return 0;
}

/* sluice_start - run master (it detaches unless -f) */
static int sluice_start(const char *config_dir, int argc, char **argv)
{
    MAIL_CONF *conf;
    VSTR *master;
    bool foreground = false;
    char *master_argv[5];
    int n = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0)
            foreground = true;
        else
            return sluice_fail("start: unknown argument \"%s\"", argv[i]);
    }
    if ((conf = sluice_read_conf(config_dir)) == NULL)
        return 1;
    master = vstr_alloc(100);
    vstr_sprintf(master, "%s/master", mail_conf_str(conf, "daemon_directory"));
    mail_conf_free(conf);
    if (sluice_start_as_owner(config_dir) != 0)
        return 1;
    if (access(vstr_str(master), X_OK) < 0)
        return sluice_fail("start: %s: %s", vstr_str(master), strerror(errno));
    master_argv[n++] = "master";
    master_argv[n++] = "-c";
    master_argv[n++] = (char *) config_dir;
    if (foreground)
        master_argv[n++] = "-f";
    master_argv[n] = NULL;
    (void) unsetenv("SLUICE_LOG_STDERR");
    execv(vstr_str(master), master_argv);
    return sluice_fail("start: exec %s: %s", vstr_str(master), strerror(errno));
}

/* sluice_signal - send master a signal; 0, or 1 after one line */
static int sluice_signal(const char *config_dir, const char *cmd, int sig,
                         long *pid_out)
{
    MAIL_CONF *conf;
    struct stat pid_st;
    long pid;

    if ((conf = sluice_read_conf(config_dir)) == NULL)
        return 1;
    pid = sluice_master_pid(conf, &pid_st);
    if (pid > 0 && sluice_master_verify(conf, cmd, pid, &pid_st) != 0)
        pid = -1;
    mail_conf_free(conf);
    if (pid < 0)
        return 1;
    if (pid == 0)
        return sluice_fail("%s: the mail system is not running", cmd);
    if (kill((pid_t) pid, sig) < 0)
        return sluice_fail("%s: kill %ld: %s", cmd, pid, strerror(errno));
    *pid_out = pid;
    return 0;
}

/* sluice_stop - SIGTERM to master, then wait until it (and so every
   daemon: master exits only after its children) has gone */
static int sluice_stop(const char *config_dir)
{
    struct timespec pause = {0, 20 * 1000 * 1000};
    long pid;
    int status;

    if ((status = sluice_signal(config_dir, "stop", SIGTERM, &pid)) != 0)
        return status;
    for (int i = 0; i < SLUICE_STOP_WAIT * 50; i++) {
        if (kill((pid_t) pid, 0) < 0 && errno == ESRCH) {
            printf("sluice: the mail system has stopped\n");
            return 0;
        }
        nanosleep(&pause, NULL);
    }
    return sluice_fail("stop: master pid %ld is still running after %d seconds",
                       pid, SLUICE_STOP_WAIT);
}

/* sluice_reload - SIGHUP to master (sluice_signal reads main.cf first, so
   a main.cf that master would refuse is refused here) */
static int sluice_reload(const char *config_dir)
{
    long pid;
    int status;

    if ((status = sluice_signal(config_dir, "reload", SIGHUP, &pid)) != 0)
        return status;
    printf("sluice: reloading the mail system (master pid %ld)\n", pid);
    return 0;
}

/* sluice_status - exit 0 only when master runs */
static int sluice_status(const char *config_dir)
{
    MAIL_CONF *conf;
    long pid;

    if ((conf = sluice_read_conf(config_dir)) == NULL)
        return 1;
    pid = sluice_master_pid(conf, NULL);
    mail_conf_free(conf);
    if (pid < 0)
        return 1;
    if (pid == 0)
        return sluice_fail("the mail system is not running");
    printf("sluice: the mail system is running: master pid %ld\n", pid);
    return 0;
}

/* main - parse the global options and run a subcommand */
int main(int argc, char **argv)
{
    const char *config_dir = getenv("SLUICE_CONFIG");
    const char *cmd;
    int ch;

    msg_init("sluice", "sluice");
    msg_log_stderr(true);
    while ((ch = getopt(argc, argv, "+c:h")) != -1) {
        switch (ch) {
        case 'c':
            config_dir = optarg;
            break;
        default:
            return sluice_fail("%s", sluice_usage);
        }
    }
    if (optind >= argc)
        return sluice_fail("%s", sluice_usage);
    if (config_dir == NULL || *config_dir == 0)
        config_dir = DEF_CONFIG_DIR;
    cmd = argv[optind];
    argc -= optind;
    argv += optind;
    if (strcmp(cmd, "init") == 0)
        return sluice_init(argc, argv);
    if (strcmp(cmd, "start") == 0)
        return sluice_start(config_dir, argc, argv);
    if (strcmp(cmd, "stop") == 0 || strcmp(cmd, "reload") == 0 ||
        strcmp(cmd, "status") == 0) {
        if (argc > 1)
            return sluice_fail("%s: unexpected argument \"%s\"", cmd, argv[1]);
        if (strcmp(cmd, "stop") == 0)
            return sluice_stop(config_dir);
        if (strcmp(cmd, "reload") == 0)
            return sluice_reload(config_dir);
        return sluice_status(config_dir);
    }
    if (strcmp(cmd, "conf") == 0)
        return sluice_conf(config_dir, argc, argv);
    if (strcmp(cmd, "check") == 0)
        return sluice_check(config_dir, argc, argv);
    if (strcmp(cmd, "queue") == 0)
        return sluice_queue(config_dir, argc, argv);
    if (strcmp(cmd, "events") == 0)
        return sluice_events(config_dir, argc, argv);
    if (strcmp(cmd, "stats") == 0)
        return sluice_stats(config_dir, argc, argv);
    if (strcmp(cmd, "shaping") == 0)
        return sluice_shaping(config_dir, argc, argv);
    if (strcmp(cmd, "pool") == 0)
        return sluice_pool(config_dir, argc, argv);
    if (strcmp(cmd, "suppress") == 0)
        return sluice_suppress(config_dir, argc, argv);
    if (strcmp(cmd, "why") == 0)
        return sluice_why(config_dir, argc, argv);
    if (strcmp(cmd, "api") == 0)
        return sluice_api(config_dir, argc, argv);
    if (strcmp(cmd, "cat") == 0)
        return sluice_cat(config_dir, argc, argv);
    if (strcmp(cmd, "flush") == 0)
        return sluice_flush(config_dir, argc, argv);
    if (strcmp(cmd, "map") == 0)
        return sluice_map(config_dir, argc, argv);
    if (strcmp(cmd, "dkim") == 0)
        return sluice_dkim(config_dir, argc, argv);
    if (strcmp(cmd, "tls") == 0)
        return sluice_tls(config_dir, argc, argv);
    if (strcmp(cmd, "hold") == 0 || strcmp(cmd, "release") == 0 ||
        strcmp(cmd, "delete") == 0 || strcmp(cmd, "requeue") == 0)
        return sluice_admin(config_dir, argc, argv);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("sluice %s\n", SLUICE_VERSION);
        return 0;
    }
    return sluice_fail("unknown command \"%s\" (%s)", cmd, sluice_usage);
}
