/*
 * proto_test - what the protocol codecs' unit tests share (header only;
 * no program includes it)
 */
#ifndef PROTO_TEST_H
#define PROTO_TEST_H

#include "attr.h"
#include "vstr.h"

/* proto_test_wire - list through the wire form and back, as the peer sees
   it (a reader whose limit is max_len); frees list */
static inline ATTR_LIST *proto_test_wire(ATTR_LIST *list, size_t max_len)
{
    VSTR *buf = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *out = NULL;
    size_t used = 0;

    attr_list_encode(list, buf);
    assert_int_equal(attr_list_decode(vstr_str(buf), vstr_len(buf), max_len,
                                      &used, &out, why),
                     1);
    assert_int_equal(used, vstr_len(buf));
    attr_list_free(list);
    vstr_free(buf);
    vstr_free(why);
    return out;
}

#endif
