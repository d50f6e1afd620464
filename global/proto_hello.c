/*
 * proto_hello - the greeting that opens an inter-daemon protocol
 *
 * See proto_hello.h. The deliver, cleanup, bounce and qmgr-admin codecs greet here,
 * so a mismatch reads the same in every log.
 */
#include "sys_defs.h"

#include "attr.h"
#include "proto_hello.h"
#include "vstr.h"

/* proto_hello_take - the peer's HELLO */
int proto_hello_take(const ATTR_LIST *list, const char *protocol, int version,
                     const ATTR_SPEC *spec, size_t spec_count, VSTR *why)
{
    const char *request = attr_get_str(list, PROTO_HELLO_ATTR_REQUEST);
    const char *peer = attr_get_str(list, PROTO_HELLO_ATTR_PROTOCOL);
    const char *peer_version = attr_get_str(list, PROTO_HELLO_ATTR_VERSION);
    long long number = 0;

    if (request == NULL || strcmp(request, PROTO_HELLO_REQ) != 0) {
        vstr_sprintf(why,
                     "protocol mismatch: no greeting (first list is \"%s\"); "
                     "this side speaks %s version %d",
                     request ? request : "(none)", protocol, version);
        return -1;
    }
    if (peer == NULL || strcmp(peer, protocol) != 0 ||
        !attr_get_int(list, PROTO_HELLO_ATTR_VERSION, &number) ||
        number != version) {
        vstr_sprintf(why,
                     "protocol mismatch: peer speaks %s version %s; this side "
                     "speaks %s version %d",
                     peer ? peer : "(unnamed)",
                     peer_version ? peer_version : "(none)", protocol, version);
        return -1;
    }
    return attr_list_check(list, spec, spec_count, why);
}

/* proto_hello_list - our HELLO */
ATTR_LIST *proto_hello_list(const char *protocol, int version)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, PROTO_HELLO_ATTR_REQUEST, PROTO_HELLO_REQ);
    attr_add_str(list, PROTO_HELLO_ATTR_PROTOCOL, protocol);
    attr_add_int(list, PROTO_HELLO_ATTR_VERSION, version);
    return list;
}
