/*
 * fuzz_cleanup_proto - the cleanup protocol codec (global/cleanup_proto.h)
 *
 * The input is a stream of lists as a client (or something pretending to
 * be one) would send cleanup, or cleanup a client: HELLO, BEGIN, RCPT,
 * DATA, END, STATUS. Each list goes through every reader; what a reader
 * accepts must make sense (our protocol and version, a chunk within
 * CLEANUP_CHUNK_MAX, a status of 0 or 400..599 with a valid queue ID or
 * none) and must come back unchanged through the matching *_list builder.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "attr.h"
#include "cleanup_proto.h"
#include "fuzz_common.h"
#include "qid.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_LIST_MAX 4096

/* fuzz_same_str - two optional strings alike ("" and NULL alike: the
   builders leave an empty optional string out) */
static bool fuzz_same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* fuzz_begin - an accepted BEGIN reads the same once rebuilt */
static void fuzz_begin(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_BEGIN begin, again;
    ATTR_LIST *rebuilt;

    if (cleanup_begin_take(list, &begin, why) < 0)
        return;
    rebuilt = cleanup_begin_list(&begin);
    if (cleanup_begin_take(rebuilt, &again, why) < 0 ||
        again.flags != begin.flags || strcmp(again.sender, begin.sender) != 0 ||
        strcmp(again.origin, begin.origin) != 0 ||
        !fuzz_same_str(again.client_name, begin.client_name) ||
        !fuzz_same_str(again.client_addr, begin.client_addr) ||
        !fuzz_same_str(again.helo_name, begin.helo_name) ||
        !fuzz_same_str(again.protocol, begin.protocol) ||
        again.size != (begin.size < 0 ? -1 : begin.size) ||
        !fuzz_same_str(again.ret, begin.ret) ||
        !fuzz_same_str(again.envid, begin.envid) ||
        !fuzz_same_str(again.sasl_username, begin.sasl_username) ||
        !fuzz_same_str(again.full_name, begin.full_name))
        abort();
    attr_list_free(rebuilt);
}

/* fuzz_rcpt - an accepted RCPT reads the same once rebuilt */
static void fuzz_rcpt(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_RCPT rcpt, again;
    ATTR_LIST *rebuilt;

    if (cleanup_rcpt_take(list, &rcpt, why) < 0)
        return;
    rebuilt = cleanup_rcpt_list(&rcpt);
    if (cleanup_rcpt_take(rebuilt, &again, why) < 0 ||
        strcmp(again.address, rcpt.address) != 0 ||
        !fuzz_same_str(again.orcpt, rcpt.orcpt) ||
        !fuzz_same_str(again.notify, rcpt.notify))
        abort();
    attr_list_free(rebuilt);
}

/* fuzz_data - an accepted chunk fits and reads the same once rebuilt */
static void fuzz_data(const ATTR_LIST *list, VSTR *why)
{
    const char *chunk, *again;
    size_t len, again_len;
    ATTR_LIST *rebuilt;

    if (cleanup_data_take(list, &chunk, &len, why) < 0)
        return;
    if (len > CLEANUP_CHUNK_MAX)
        abort();
    rebuilt = cleanup_data_list(chunk, len);
    if (cleanup_data_take(rebuilt, &again, &again_len, why) < 0 ||
        again_len != len || memcmp(again, chunk, len) != 0)
        abort();
    attr_list_free(rebuilt);
}

/* fuzz_end - END, taken and rebuilt */
static void fuzz_end(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_END end, again;
    ATTR_LIST *rebuilt;

    if (cleanup_end_take(list, &end, why) < 0)
        return;
    rebuilt = cleanup_end_list(&end);
    if (cleanup_end_take(rebuilt, &again, why) < 0 || again.abort != end.abort)
        abort();
    attr_list_free(rebuilt);
}

/* fuzz_status - an accepted STATUS is sane and reads the same rebuilt */
static void fuzz_status(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_STATUS status, again;
    ATTR_LIST *rebuilt;

    if (cleanup_status_take(list, &status, why) < 0)
        return;
    if ((status.status != 0 && (status.status < 400 || status.status > 599)) ||
        (status.queue_id != NULL && !qid_valid(status.queue_id)))
        abort();
    rebuilt = cleanup_status_list(&status);
    if (cleanup_status_take(rebuilt, &again, why) < 0 ||
        again.status != status.status ||
        !fuzz_same_str(again.queue_id, status.queue_id) ||
        (status.status != 0 && !fuzz_same_str(again.reason, status.reason)))
        abort();
    attr_list_free(rebuilt);
}

/* LLVMFuzzerTestOneInput - a stream of lists */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *) data;
    VSTR *why = vstr_alloc(64);

    fuzz_init("fuzz_cleanup_proto");
    while (size > 0) {
        ATTR_LIST *list = NULL;
        size_t used = 0;

        if (attr_list_decode(buf, size, FUZZ_LIST_MAX, &used, &list, why) <= 0)
            break;
        buf += used;
        size -= used;
        if (cleanup_hello_take(list, why) == 0) {
            long long version = 0;

            if (!attr_get_int(list, CLEANUP_ATTR_VERSION, &version) ||
                version != CLEANUP_PROTO_VERSION ||
                strcmp(attr_get_str(list, CLEANUP_ATTR_PROTOCOL),
                       CLEANUP_PROTO_NAME) != 0)
                abort();
        }
        fuzz_begin(list, why);
        fuzz_rcpt(list, why);
        fuzz_data(list, why);
        fuzz_end(list, why);
        fuzz_status(list, why);
        attr_list_free(list);
    }
    vstr_free(why);
    return 0;
}
