/*
 * events_pos - where a reader of the event journal is, kept durably
 *
 * See events_pos.h for what a position means and its file format. The
 * parser is strict: a position file is only ever written by
 * events_pos_save, so anything it did not write (a truncated file, a
 * name that is not a segment's, offsets out of order) is an error, and
 * the exporter that owns the file stops with that error rather than
 * guess (guessing "nothing read" re-sends everything; guessing "all read"
 * loses events).
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>

#include "events.h"
#include "events_pos.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"

/* events_pos_alloc - nothing read */
EVENTS_POS *events_pos_alloc(void)
{
    return mycalloc(1, sizeof(EVENTS_POS));
}

/* events_pos_reset - back to nothing read */
void events_pos_reset(EVENTS_POS *pos)
{
    for (size_t i = 0; i < pos->count; i++)
        myfree(pos->segs[i].name);
    pos->count = 0;
    if (pos->floor) {
        myfree(pos->floor);
        pos->floor = NULL;
    }
}

/* events_pos_free - free; returns NULL */
EVENTS_POS *events_pos_free(EVENTS_POS *pos)
{
    if (pos == NULL)
        return NULL;
    events_pos_reset(pos);
    myfree(pos->segs);
    myfree(pos);
    return NULL;
}

/* events_pos_insert - add an entry at index i */
static void events_pos_insert(EVENTS_POS *pos, size_t i, const char *name,
                              long long offset)
{
    if (pos->count == pos->cap) {
        size_t cap = pos->cap ? pos->cap * 2 : 8;
        size_t bytes;

        if (__builtin_mul_overflow(cap, sizeof(*pos->segs), &bytes))
            msg_panic("%s: too many segments", __func__);
        pos->segs = myrealloc(pos->segs, bytes);
        pos->cap = cap;
    }
    memmove(pos->segs + i + 1, pos->segs + i,
            (pos->count - i) * sizeof(*pos->segs));
    pos->segs[i].name = mystrdup(name);
    pos->segs[i].offset = offset;
    pos->count++;
}

/* events_pos_remove - drop the entry at index i */
static void events_pos_remove(EVENTS_POS *pos, size_t i)
{
    myfree(pos->segs[i].name);
    memmove(pos->segs + i, pos->segs + i + 1,
            (pos->count - i - 1) * sizeof(*pos->segs));
    pos->count--;
}

/* events_pos_copy - dst becomes a copy of src */
void events_pos_copy(EVENTS_POS *dst, const EVENTS_POS *src)
{
    if (dst == src)
        return;
    events_pos_reset(dst);
    dst->floor = src->floor ? mystrdup(src->floor) : NULL;
    for (size_t i = 0; i < src->count; i++)
        events_pos_insert(dst, i, src->segs[i].name, src->segs[i].offset);
}

/* events_pos_number - a decimal offset without sign or leading zeros */
static bool events_pos_number(const char *text, long long *value)
{
    long long n = 0;

    if (*text == 0 || (text[0] == '0' && text[1] != 0))
        return false;
    for (; *text; text++) {
        if (*text < '0' || *text > '9' || __builtin_mul_overflow(n, 10, &n) ||
            __builtin_add_overflow(n, *text - '0', &n))
            return false;
    }
    *value = n;
    return true;
}

/* events_pos_parse - pos from a position file's text */
int events_pos_parse(EVENTS_POS *pos, const char *data, size_t len, VSTR *why)
{
    const char *cp = data;
    const char *end = data + len;
    VSTR *line = vstr_alloc(100);
    int lineno = 0;
    bool have_floor = false;

    events_pos_reset(pos);
    if (len == 0 || data[len - 1] != '\n') {
        vstr_cpy(why, len ? "does not end with a newline" : "is empty");
        goto bad_noline;
    }
    while (cp < end) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));
        char *text;
        char *sp;

        lineno++;
        vstr_ncpy(line, cp, (size_t) (nl - cp));
        cp = nl + 1;
        text = vstr_str(line);
        if (strlen(text) != vstr_len(line)) {
            vstr_cpy(why, "holds a NUL byte");
            goto bad;
        }
        if (lineno == 1) {
            if (strcmp(text, EVENTS_POS_MAGIC) != 0) {
                vstr_cpy(why, "is not \"" EVENTS_POS_MAGIC "\"");
                goto bad;
            }
            continue;
        }
        if (lineno == 2) {
            if (strncmp(text, "floor ", 6) != 0) {
                vstr_cpy(why, "is not \"floor NAME\"");
                goto bad;
            }
            have_floor = true;
            if (strcmp(text + 6, "-") == 0)
                continue;
            if (events_segment_pid(text + 6) <= 0 || strchr(text + 6, '/')) {
                vstr_cpy(why, "names no segment");
                goto bad;
            }
            pos->floor = mystrdup(text + 6);
            continue;
        }
        if (strncmp(text, "segment ", 8) != 0 ||
            (sp = strchr(text + 8, ' ')) == NULL) {
            vstr_cpy(why, "is not \"segment NAME OFFSET\"");
            goto bad;
        }
        *sp = 0;
        {
            long long offset;
            const char *name = text + 8;

            if (events_segment_pid(name) <= 0 || strchr(name, '/')) {
                vstr_cpy(why, "names no segment");
                goto bad;
            }
            if (!events_pos_number(sp + 1, &offset)) {
                vstr_cpy(why, "has no valid offset");
                goto bad;
            }
            if ((pos->floor && strcmp(name, pos->floor) <= 0) ||
                (pos->count > 0 &&
                 strcmp(name, pos->segs[pos->count - 1].name) <= 0)) {
                vstr_cpy(why, "is out of order");
                goto bad;
            }
            events_pos_insert(pos, pos->count, name, offset);
        }
    }
    if (!have_floor) {
        vstr_cpy(why, "has no floor line");
        goto bad_noline;
    }
    vstr_free(line);
    return 0;

bad : {
    VSTR *what = vstr_alloc(100);

    vstr_sprintf(what, "line %d %s", lineno, vstr_str(why));
    vstr_cpy(why, vstr_str(what));
    vstr_free(what);
}
bad_noline:
    events_pos_reset(pos);
    vstr_free(line);
    return -1;
}

/* events_pos_format - the position file's text of pos */
void events_pos_format(const EVENTS_POS *pos, VSTR *out)
{
    vstr_sprintf(out, "%s\nfloor %s\n", EVENTS_POS_MAGIC,
                 pos->floor ? pos->floor : "-");
    for (size_t i = 0; i < pos->count; i++)
        vstr_sprintf_append(out, "segment %s %lld\n", pos->segs[i].name,
                            pos->segs[i].offset);
}

/* events_pos_load - read path into pos (missing: nothing read) */
int events_pos_load(EVENTS_POS *pos, const char *path, VSTR *why)
{
    size_t len;
    char *data = safe_file_read(path, EVENTS_POS_MAX, &len);
    int ret;

    events_pos_reset(pos);
    if (data == NULL) {
        if (errno == ENOENT)
            return 0;
        vstr_sprintf(why, "read %s: %s", path, strerror(errno));
        return -1;
    }
    if ((ret = events_pos_parse(pos, data, len, why)) < 0) {
        VSTR *what = vstr_alloc(100);

        vstr_sprintf(what, "%s: %s", path, vstr_str(why));
        vstr_cpy(why, vstr_str(what));
        vstr_free(what);
    }
    myfree(data);
    return ret;
}

/* events_pos_save - replace path with pos durably */
int events_pos_save(const EVENTS_POS *pos, const char *path, VSTR *why)
{
    VSTR *text = vstr_alloc(200);
    int ret = 0;

    events_pos_format(pos, text);
    if (safe_file_write(path, vstr_str(text), vstr_len(text), 0600) < 0) {
        vstr_sprintf(why, "write %s: %s", path, strerror(errno));
        ret = -1;
    }
    vstr_free(text);
    return ret;
}

/* events_pos_find - index of name in pos, or where it would go */
static size_t events_pos_find(const EVENTS_POS *pos, const char *name,
                              bool *found)
{
    size_t i;
    int cmp = 1;

    for (i = 0; i < pos->count; i++)
        if ((cmp = strcmp(pos->segs[i].name, name)) >= 0)
            break;
    *found = i < pos->count && cmp == 0;
    return i;
}

/* events_pos_offset - -1 at or before the floor, else the offset */
long long events_pos_offset(const EVENTS_POS *pos, const char *name)
{
    bool found;
    size_t i;

    if (pos->floor && strcmp(name, pos->floor) <= 0)
        return -1;
    i = events_pos_find(pos, name, &found);
    return found ? pos->segs[i].offset : 0;
}

/* events_pos_set - record segment name read to offset */
void events_pos_set(EVENTS_POS *pos, const char *name, long long offset)
{
    bool found;
    size_t i;

    if (pos->floor && strcmp(name, pos->floor) <= 0)
        msg_panic("%s: %s is at or before the floor %s", __func__, name,
                  pos->floor);
    i = events_pos_find(pos, name, &found);
    if (found)
        pos->segs[i].offset = offset;
    else
        events_pos_insert(pos, i, name, offset);
}

/* events_pos_advance - move the floor past finished, read segments */
bool events_pos_advance(EVENTS_POS *pos, const EVENTS_LIST *list)
{
    bool changed = false;
    bool blocked = false;

    for (size_t i = 0; i < list->count; i++) {
        const EVENTS_SEG_INFO *seg = &list->segs[i];
        long long offset = events_pos_offset(pos, seg->name);

        if (offset < 0)
            continue;
        if (blocked || !seg->finished || offset < seg->size) {
            blocked = true;
            continue;
        }
        if (pos->floor)
            myfree(pos->floor);
        pos->floor = mystrdup(seg->name);
        changed = true;
    }
    /* Entries at or before the new floor, or of segments gone. */
    for (size_t i = 0; i < pos->count;) {
        bool listed = false;

        for (size_t j = 0; j < list->count && !listed; j++)
            listed = strcmp(list->segs[j].name, pos->segs[i].name) == 0;
        if (!listed ||
            (pos->floor && strcmp(pos->segs[i].name, pos->floor) <= 0)) {
            events_pos_remove(pos, i);
            changed = true;
        } else {
            i++;
        }
    }
    return changed;
}

/* events_list_cmp - segments by name: by start time */
static int events_list_cmp(const void *a, const void *b)
{
    return strcmp(((const EVENTS_SEG_INFO *) a)->name,
                  ((const EVENTS_SEG_INFO *) b)->name);
}

/* events_list_alive - does process pid exist? (EPERM: it does) */
static bool events_list_alive(long pid)
{
    return !(kill((pid_t) pid, 0) < 0 && errno == ESRCH);
}

/* events_list_mark_finished - set finished for each segment */
void events_list_mark_finished(EVENTS_LIST *list, bool (*alive)(long pid))
{
    for (size_t i = 0; i < list->count; i++) {
        EVENTS_SEG_INFO *seg = &list->segs[i];
        const char *writer = seg->name + 24; /* PID-PROGRAM.jsonl */

        seg->finished = false;
        for (size_t j = i + 1; j < list->count && !seg->finished; j++)
            seg->finished = strcmp(list->segs[j].name + 24, writer) == 0;
        if (!seg->finished)
            seg->finished = !alive(events_segment_pid(seg->name));
    }
}

/* events_list - the segments in dir, ascending */
EVENTS_LIST *events_list(const char *dir, VSTR *why)
{
    EVENTS_LIST *list = mycalloc(1, sizeof(*list));
    size_t cap = 0;
    size_t kept = 0;
    DIR *dp;
    struct dirent *de;
    struct stat st;
    int dfd;

    if ((dp = opendir(dir)) == NULL) {
        if (errno == ENOENT)
            return list;
        vstr_sprintf(why, "open %s: %s", dir, strerror(errno));
        return events_list_free(list);
    }
    while ((de = readdir(dp)) != NULL) {
        if (events_segment_pid(de->d_name) <= 0)
            continue;
        if (list->count == cap) {
            cap = cap ? cap * 2 : 16;
            list->segs = myrealloc(list->segs, cap * sizeof(*list->segs));
        }
        list->segs[list->count].name = mystrdup(de->d_name);
        list->segs[list->count].size = 0;
        list->segs[list->count].finished = false;
        list->count++;
    }
    if (list->count > 1)
        qsort(list->segs, list->count, sizeof(*list->segs), events_list_cmp);
    /* Finished first, sizes after: a writer appends nothing once its
       segment is finished, so the size of a finished one is final. The
       other order could see a size, then the writer's last batch and its
       exit, and call the segment read to its end too early. */
    events_list_mark_finished(list, events_list_alive);
    dfd = dirfd(dp);
    for (size_t i = 0; i < list->count; i++) {
        EVENTS_SEG_INFO *seg = &list->segs[i];

        int got = fstatat(dfd, seg->name, &st, AT_SYMLINK_NOFOLLOW);

        if (got < 0 && errno != ENOENT) {
            vstr_sprintf(why, "stat %s/%s: %s", dir, seg->name,
                         strerror(errno));
            for (size_t j = i; j < list->count; j++)
                myfree(list->segs[j].name);
            list->count = kept;
            (void) closedir(dp);
            return events_list_free(list);
        }
        if (got < 0 || !S_ISREG(st.st_mode)) {
            myfree(seg->name); /* removed while we looked, or not a file */
            continue;
        }
        seg->size = (long long) st.st_size;
        list->segs[kept++] = *seg;
    }
    list->count = kept;
    (void) closedir(dp);
    return list;
}

/* events_list_free - free; returns NULL */
EVENTS_LIST *events_list_free(EVENTS_LIST *list)
{
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < list->count; i++)
        myfree(list->segs[i].name);
    myfree(list->segs);
    myfree(list);
    return NULL;
}
