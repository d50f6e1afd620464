/*
 * fuzz_attr - the attribute-protocol reader (global/attr.h)
 *
 * The input is a stream of lists as a peer would send them. Each list
 * that decodes is checked against the cleanup protocol tables, and must
 * encode to bytes that decode to the same list.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "attr.h"
#include "cleanup_proto.h"
#include "fuzz_common.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_LIST_MAX 4096

/* LLVMFuzzerTestOneInput - a stream of lists */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *) data;
    VSTR *why = vstr_alloc(64);
    VSTR *wire = vstr_alloc(256);

    fuzz_init("fuzz_attr");
    while (size > 0) {
        ATTR_LIST *list = NULL;
        ATTR_LIST *again;
        size_t used = 0;
        size_t used_again = 0;
        int ret = attr_list_decode(buf, size, FUZZ_LIST_MAX, &used, &list, why);

        if (ret <= 0) {
            if (list != NULL)
                abort();
            break;
        }
        if (used == 0 || used > size)
            abort();
        (void) attr_list_check(list, cleanup_begin_spec,
                               SLUICE_ARRAY_LEN(cleanup_begin_spec), why);
        (void) attr_list_check(list, cleanup_rcpt_spec,
                               SLUICE_ARRAY_LEN(cleanup_rcpt_spec), why);
        (void) attr_list_check(list, cleanup_status_spec,
                               SLUICE_ARRAY_LEN(cleanup_status_spec), why);
        for (size_t i = 0; i < attr_list_count(list); i++) {
            size_t len;

            if (attr_name_at(list, i) == NULL ||
                attr_value_at(list, i, &len) == NULL)
                abort();
        }
        /* Encode and decode again: the same list. (Not the same bytes: the
           reader takes a LENGTH with leading zeros, "01", which the writer
           never makes.) */
        vstr_reset(wire);
        attr_list_encode(list, wire);
        if (vstr_len(wire) > used)
            abort(); /* the canonical form is never longer */
        again = NULL;
        if (attr_list_decode(vstr_str(wire), vstr_len(wire), FUZZ_LIST_MAX,
                             &used_again, &again, why) != 1 ||
            used_again != vstr_len(wire) ||
            attr_list_count(again) != attr_list_count(list))
            abort();
        for (size_t i = 0; i < attr_list_count(list); i++) {
            size_t len1, len2;
            const char *v1 = attr_value_at(list, i, &len1);
            const char *v2 = attr_value_at(again, i, &len2);

            if (strcmp(attr_name_at(list, i), attr_name_at(again, i)) != 0 ||
                len1 != len2 || memcmp(v1, v2, len1) != 0)
                abort();
        }
        attr_list_free(again);
        attr_list_free(list);
        buf += used;
        size -= used;
    }
    vstr_free(why);
    vstr_free(wire);
    return 0;
}
