/*
 * fuzz_common - quiet logging, a fatal error as a crash, a scratch folder
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <ftw.h>

#include "fuzz_common.h"
#include "msg.h"
#include "vstr.h"

static char fuzz_scratch[64];

/* fuzz_exit_hook - msg_fatal() on fuzzed input is a bug: crash */
static void fuzz_exit_hook(int status)
{
    abort();
}

/* fuzz_rm_entry - nftw callback for fuzz_cleanup */
static int fuzz_rm_entry(const char *path, const struct stat *st, int flag,
                         struct FTW *ftw)
{
    return remove(path);
}

/* fuzz_cleanup - remove the scratch folder at exit */
static void fuzz_cleanup(void)
{
    if (fuzz_scratch[0])
        (void) nftw(fuzz_scratch, fuzz_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* fuzz_init - quiet logging, fatal = crash; once per process */
void fuzz_init(const char *progname)
{
    static bool done;

    if (done)
        return;
    done = true;
    msg_init("sluice", progname);
    if (msg_log_file("/dev/null") < 0)
        abort();
    msg_log_stderr(false);
    msg_exit_hook(fuzz_exit_hook);
    if (snprintf(fuzz_scratch, sizeof(fuzz_scratch),
                 "/tmp/sluice_fuzz.XXXXXX") >= (int) sizeof(fuzz_scratch) ||
        mkdtemp(fuzz_scratch) == NULL)
        abort();
    atexit(fuzz_cleanup);
}

/* fuzz_dir - this process's scratch folder */
const char *fuzz_dir(void)
{
    return fuzz_scratch;
}

/* fuzz_write_file - dir/name holds exactly data[0..len) */
void fuzz_write_file(const char *name, const uint8_t *data, size_t len)
{
    VSTR *path = vstr_alloc(100);
    int fd;

    vstr_sprintf(path, "%s/%s", fuzz_scratch, name);
    if ((fd = open(vstr_str(path), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                   0600)) < 0)
        abort();
    while (len > 0) {
        ssize_t put = write(fd, data, len);

        if (put <= 0)
            abort();
        data += put;
        len -= (size_t) put;
    }
    close(fd);
    vstr_free(path);
}
