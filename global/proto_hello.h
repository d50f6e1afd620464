/*
 * proto_hello - the greeting that opens an inter-daemon protocol
 *
 * Each side of a protocol sends one HELLO list naming the protocol and its
 * version before anything else, and checks the peer's:
 *
 *   request=hello  protocol=NAME  version=N
 *
 * A peer of another protocol or version (or one that sends no greeting)
 * is refused with a reason that names both sides' protocol and version,
 * so each end logs what it saw and gives up on the connection. The name
 * and version are read before the rest of the list is checked: a newer
 * peer may send more attributes, and the reason must still be "mismatch".
 */
#ifndef PROTO_HELLO_H
#define PROTO_HELLO_H

#include "attr.h"
#include "vstr.h"

#define PROTO_HELLO_REQ "hello" /* request= of a HELLO */
#define PROTO_HELLO_ATTR_REQUEST "request"
#define PROTO_HELLO_ATTR_PROTOCOL "protocol"
#define PROTO_HELLO_ATTR_VERSION "version"

/* proto_hello_take - the peer's HELLO, strict against spec (the
   protocol's hello table): 0, or -1 with the reason in why, beginning
   "protocol mismatch: " when the peer is not protocol version */
extern int proto_hello_take(const ATTR_LIST *list, const char *protocol,
                            int version, const ATTR_SPEC *spec,
                            size_t spec_count, VSTR *why);
/* proto_hello_list - our HELLO */
extern ATTR_LIST *proto_hello_list(const char *protocol, int version);

#endif
