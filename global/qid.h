/*
 * qid - queue IDs: unique on the machine, sortable by arrival time, safe as
 * file names
 *
 * A queue ID is 16 characters from a 32-character alphabet whose ASCII order
 * is its numeric order ("0-9" then "ABCDEFGHJKLMNPQRSTVWXY"):
 *   7 chars  seconds since the epoch
 *   4 chars  microseconds
 *   5 chars  process ID
 * so string order is arrival order. One process never hands out two IDs in
 * the same microsecond (it waits for the clock to move), and two processes
 * differ by pid, so an ID is unique on the machine.
 */
#ifndef QID_H
#define QID_H

#include "sys_defs.h"

#define QID_LEN 16
#define QID_SIZE (QID_LEN + 1)

/* qid_new - a fresh queue ID into buf */
extern void qid_new(char buf[QID_SIZE]);
/* qid_valid - is name a well-formed queue ID (and nothing else)? */
extern bool qid_valid(const char *name);
/* qid_mine - was the valid ID qid made by this process (its pid part)? */
extern bool qid_mine(const char *qid);
/* qid_time - arrival time encoded in a valid ID (seconds, microseconds) */
extern void qid_time(const char *qid, time_t *sec, long *usec);
/* qid_hash_char - the character that names its hash subdirectory: the
   fast-moving first microsecond digit, so files spread over 32 folders */
extern char qid_hash_char(const char *qid);

#endif
