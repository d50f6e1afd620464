/*
 * virtual - the virtual mailbox delivery agent
 *
 * qmgr connects to private/virtual (virtual_transport) for recipients of
 * virtual_mailbox_domains. This is the local delivery agent's program run
 * in another role: the same request handling, Delivered-To loop check,
 * log lines and mbox and Maildir writers (local.c, local_request.c,
 * local_mbox.c), but no aliases, .forward or commands: each recipient is
 * a mailbox named by virtual_mailbox_maps under virtual_mailbox_base,
 * written as the uid and gid that virtual_uid_maps and virtual_gid_maps
 * give it (local_virtual.c). Like Postfix's virtual(8), it needs root
 * (master.cf: unpriv n) to take those ids.
 */
#include "sys_defs.h"

#include "local.h"

/* main - the virtual delivery agent */
int main(int argc, char **argv)
{
    return local_daemon(argc, argv, true);
}
