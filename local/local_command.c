/*
 * local_command - deliver to a |command
 *
 * The command runs as local_command_shell -c "command" in a process group
 * of its own, with the message on stdin (no From_ line) and only the
 * environment the caller gives. Its stdout and stderr are read while the
 * whole message is written (so a chatty command cannot block us, and one
 * that closes its output early still gets all of stdin), the first line
 * kept for the reason. A command that exits 0 without reading all of its
 * input (EPIPE) has the mail: that is its choice, as in Postfix. After
 * time_limit seconds the whole group is killed and the delivery deferred.
 * The child closes every descriptor above 2 (close_range where the kernel
 * has it).
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "local.h"
#include "mono_ms.h"
#include "mymalloc.h"
#include "vstr.h"

#define LOCAL_CMD_OUTPUT_MAX 1000 /* output kept for the reason */
#define LOCAL_CMD_REASON_MAX 200 /* of it, in the reason */

/* local_command_child - in the child: wire up fds, exec the shell */
static void local_command_child(const LOCAL_CMD *cmd, int in_fd, int out_fd)
{
    (void) setsid();
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
        _exit(71); /* EX_OSERR */
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
#endif
        for (int fd = 3; fd < 1024; fd++)
            (void) close(fd);
    signal(SIGPIPE, SIG_DFL);
    if (cmd->home == NULL || chdir(cmd->home) < 0)
        (void) chdir("/");
    execle(cmd->shell, cmd->shell, "-c", cmd->command, (char *) NULL,
           (char *const *) cmd->env);
    _exit(127);
}

/* local_command_reason - the command's first output line, cut */
static void local_command_reason(VSTR *output, VSTR *out)
{
    const char *text = vstr_str(output);
    size_t len = strcspn(text, "\n");

    vstr_reset(out);
    if (len > LOCAL_CMD_REASON_MAX)
        len = LOCAL_CMD_REASON_MAX;
    for (size_t i = 0; i < len; i++)
        vstr_addch(out, (unsigned char) text[i] < 0x20 ? ' ' : text[i]);
}

/* local_command_deliver - run the command; see local.h */
void local_command_deliver(const LOCAL_CMD *cmd, const LOCAL_MSG *msg,
                           LOCAL_RESULT *res)
{
    VSTR *text = vstr_alloc(msg->len + 256);
    VSTR *output = vstr_alloc(256);
    VSTR *first = vstr_alloc(100);
    int in_pipe[2], out_pipe[2];
    long long deadline;
    size_t written = 0;
    bool out_open = true;
    bool timed_out = false;
    int wait_status = 0;
    pid_t pid;

    local_msg_text(msg, text);
    if (pipe2(in_pipe, O_CLOEXEC) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "pipe: %s",
                         strerror(errno));
        goto out;
    }
    if (pipe2(out_pipe, O_CLOEXEC) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "pipe: %s",
                         strerror(errno));
        close(in_pipe[0]);
        close(in_pipe[1]);
        goto out;
    }
    if ((pid = fork()) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "fork: %s",
                         strerror(errno));
        close(in_pipe[0]);
        close(in_pipe[1]);
        close(out_pipe[0]);
        close(out_pipe[1]);
        goto out;
    }
    if (pid == 0)
        local_command_child(cmd, in_pipe[0], out_pipe[1]);
    close(in_pipe[0]);
    close(out_pipe[1]);
    (void) fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
    deadline = mono_ms() + (long long) cmd->time_limit * 1000;

    /* Feed stdin until all of it is written or the command stopped
       reading (EPIPE), and drain its output until it closes: a command
       that closes its output early still gets the whole message. */
    while (in_pipe[1] >= 0 || out_open) {
        struct pollfd pfd[2];
        int out_slot = -1, in_slot = -1;
        int nfds = 0;
        long long left = deadline - mono_ms();
        int n;

        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (out_open) {
            out_slot = nfds;
            pfd[nfds].fd = out_pipe[0];
            pfd[nfds++].events = POLLIN;
        }
        if (in_pipe[1] >= 0) {
            in_slot = nfds;
            pfd[nfds].fd = in_pipe[1];
            pfd[nfds++].events = POLLOUT;
        }
        n = poll(pfd, (nfds_t) nfds, left > 1000 ? 1000 : (int) left);
        if (n < 0 && errno != EINTR) {
            timed_out = true; /* cannot watch it: give up */
            break;
        }
        if (n <= 0)
            continue;
        if (out_slot >= 0 && pfd[out_slot].revents) {
            char buf[4096];
            ssize_t got = read(out_pipe[0], buf, sizeof(buf));

            if (got > 0 && vstr_len(output) < LOCAL_CMD_OUTPUT_MAX)
                vstr_ncat(output, buf, (size_t) got);
            else if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
                out_open = false;
        }
        if (in_slot >= 0 && pfd[in_slot].revents) {
            ssize_t put = write(in_pipe[1], vstr_str(text) + written,
                                vstr_len(text) - written);

            if (put > 0)
                written += (size_t) put;
            /* EPIPE: it exited or closed stdin; its exit status says
               whether that was fine (Postfix does the same). */
            if ((put < 0 && errno != EAGAIN && errno != EINTR) ||
                written == vstr_len(text)) {
                close(in_pipe[1]);
                in_pipe[1] = -1;
            }
        }
    }
    if (in_pipe[1] >= 0)
        close(in_pipe[1]);
    close(out_pipe[0]);
    if (timed_out)
        (void) kill(-pid, SIGKILL);
    /* Its input and output are closed: the shell is ending (or killed). */
    for (;;) {
        pid_t got = waitpid(pid, &wait_status, timed_out ? 0 : WNOHANG);

        if (got == pid || (got < 0 && errno != EINTR))
            break;
        if (got == 0) {
            if (mono_ms() > deadline) {
                (void) kill(-pid, SIGKILL);
                timed_out = true;
            } else {
                usleep(10000);
            }
        }
    }
    if (timed_out) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "command time limit exceeded: \"%s\"", cmd->command);
        goto out;
    }
    local_exit_result(wait_status, res);
    if (res->stat != LOCAL_STAT_SENT) {
        local_command_reason(output, first);
        if (vstr_len(first) > 0)
            vstr_sprintf_append(res->text, ". Command output: %s",
                                vstr_str(first));
    }

out:
    vstr_free(text);
    vstr_free(output);
    vstr_free(first);
}
