/*
 * fuzz_common - what every libFuzzer target in fuzz/ shares
 *
 * Logging goes to /dev/null (a fuzzer must not fill a disk or syslog), and
 * a msg_fatal() on fuzzed input is a finding: it aborts, so libFuzzer
 * reports it like a crash. Files the targets need live under one mkdtemp()
 * folder per process, removed at exit.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "sys_defs.h"

#include <stdint.h>

/* fuzz_init - quiet logging, fatal = crash; once per process */
extern void fuzz_init(const char *progname);
/* fuzz_dir - this process's scratch folder */
extern const char *fuzz_dir(void);
/* fuzz_write_file - dir/name holds exactly data[0..len) */
extern void fuzz_write_file(const char *name, const uint8_t *data, size_t len);

#endif
