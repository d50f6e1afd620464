/*
 * local_main - main() of the local delivery agent (local.c is the daemon)
 */
#include "sys_defs.h"

#include "local.h"

/* main - the local delivery agent */
int main(int argc, char **argv)
{
    return local_daemon(argc, argv, false);
}
