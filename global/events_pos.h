/*
 * events_pos - where a reader of the event journal is, kept durably
 *
 * The journal (events.h) has several writers at once, each appending to
 * its own segment, so one (segment, offset) pair cannot say what a reader
 * has read: qmgr's segment may stay open for an hour while cleanup opens
 * later-named ones. A position is therefore a floor and a list:
 *
 *   floor     every segment whose name sorts at or before it is read to
 *             its end and finished (none: "-")
 *   segments  for each later segment read in part, the offset up to which
 *             it is read (the end of its last whole event); a later
 *             segment not listed is unread (offset 0)
 *
 * The floor moves past a segment once it is finished (its writer opened
 * a later one or is gone) and read to its end; its entry is then dropped,
 * so the list stays as short as the number of live writers. Segments at
 * or before the floor of every configured exporter may be removed.
 *
 * The file (events_directory/exporters/NAME.pos) is text, replaced with
 * safe_file_write (temporary file, fsync, rename, directory fsync):
 *
 *   sluice-events-position 1
 *   floor NAME|-
 *   segment NAME OFFSET        (zero or more, names ascending, > floor)
 *
 * and read strictly: anything else is an error that names the line.
 */
#ifndef EVENTS_POS_H
#define EVENTS_POS_H

#include "sys_defs.h"

#include "vstr.h"

#define EVENTS_POS_MAGIC "sluice-events-position 1"
#define EVENTS_POS_MAX (1024 * 1024) /* a larger file is not ours */
#define EVENTS_POS_DIR "exporters" /* under events_directory */

typedef struct EVENTS_POS_SEG {
    char *name;
    long long offset;
} EVENTS_POS_SEG;

typedef struct EVENTS_POS {
    char *floor; /* NULL: none */
    EVENTS_POS_SEG *segs; /* ascending by name, each after floor */
    size_t count;
    size_t cap;
} EVENTS_POS;

/* One segment of the journal as a listing found it. */
typedef struct EVENTS_SEG_INFO {
    char *name;
    long long size;
    bool finished; /* its writer opened a later one or is gone */
} EVENTS_SEG_INFO;

typedef struct EVENTS_LIST {
    EVENTS_SEG_INFO *segs; /* ascending by name */
    size_t count;
} EVENTS_LIST;

extern EVENTS_POS *events_pos_alloc(void);
extern EVENTS_POS *events_pos_free(EVENTS_POS *pos);
/* events_pos_reset - back to nothing read */
extern void events_pos_reset(EVENTS_POS *pos);
/* events_pos_copy - dst becomes a copy of src */
extern void events_pos_copy(EVENTS_POS *dst, const EVENTS_POS *src);

/* events_pos_parse - pos from a position file's text; -1 (why says which
   line is wrong, pos left empty) for anything but a well-formed one */
extern int events_pos_parse(EVENTS_POS *pos, const char *data, size_t len,
                            VSTR *why);
/* events_pos_format - the position file's text of pos into out */
extern void events_pos_format(const EVENTS_POS *pos, VSTR *out);
/* events_pos_load - read path into pos: 0 (a missing file: nothing read
   yet), -1 with why for one that cannot be read or parsed */
extern int events_pos_load(EVENTS_POS *pos, const char *path, VSTR *why);
/* events_pos_save - replace path with pos durably; -1 with why */
extern int events_pos_save(const EVENTS_POS *pos, const char *path, VSTR *why);

/* events_pos_offset - how far segment name is read: -1 when it is at or
   before the floor (done), else its offset (0: not read) */
extern long long events_pos_offset(const EVENTS_POS *pos, const char *name);
/* events_pos_set - record segment name (after the floor) read to offset */
extern void events_pos_set(EVENTS_POS *pos, const char *name, long long offset);
/* events_pos_advance - move the floor past the leading segments of list
   that are finished and read to their end; forget entries of segments
   list no longer has. Returns whether pos changed. */
extern bool events_pos_advance(EVENTS_POS *pos, const EVENTS_LIST *list);

/* events_list - the segments in dir, ascending, with size and whether
   each is finished; a missing dir is empty. NULL with why on error. */
extern EVENTS_LIST *events_list(const char *dir, VSTR *why);
/* events_list_mark_finished - set finished for each segment: a later
   segment of the same writer (PID-PROGRAM) exists, or alive(pid) is
   false (split out of events_list for the unit tests) */
extern void events_list_mark_finished(EVENTS_LIST *list,
                                      bool (*alive)(long pid));
extern EVENTS_LIST *events_list_free(EVENTS_LIST *list);

#endif
