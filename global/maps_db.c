/*
 * maps_db - hash: and btree: tables in Berkeley DB 5.3 files
 *
 * The table hash:/path lives in /path.db, built from the text /path. Keys
 * and values are stored with their trailing NUL, as Postfix does, so a
 * lookup returns exactly what the text file said. Readers open the file
 * read-only without a DB environment and without locks: writers never
 * change a published file, they build a new one under a temporary name,
 * fsync it and rename it over the old (map_build and map_delete alike), so
 * a reader sees the old table or the new one, never a half-written one.
 */
#include "sys_defs.h"

#include <db.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "maps.h"
#include "maps_priv.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define MAP_DB_CACHE_SIZE (32 * 1024 * 1024) /* build buffer, bytes */

typedef struct MAP_DB {
    DB *db;
    const char *type; /* "hash" or "btree" */
    char *path; /* name.db */
} MAP_DB;

/* map_db_errcall - Berkeley DB's own messages: we report return codes */
static void map_db_errcall(const DB_ENV *env, const char *prefix,
                           const char *text)
{
    if (msg_verbose_get() > 0)
        msg_info("berkeley db: %s", text);
}

/* map_db_handle - a new DB handle; NULL with why */
static DB *map_db_handle(const char *type, const char *name, VSTR *why)
{
    DB *db;
    int ret;

    if ((ret = db_create(&db, NULL, 0)) != 0) {
        vstr_sprintf(why, "%s:%s: db_create: %s", type, name, db_strerror(ret));
        return NULL;
    }
    db->set_errcall(db, map_db_errcall);
    return db;
}

/* map_db_open - open name.db read-only */
static void *map_db_open_type(const char *type, DBTYPE db_type,
                              const char *name, VSTR *why, char **watch,
                              struct stat *st)
{
    MAP_DB *map_db;
    DB *db;
    VSTR *path = vstr_alloc(100);
    int ret;
    int fd;

    vstr_sprintf(path, "%s.db", name);
    if ((db = map_db_handle(type, name, why)) == NULL) {
        vstr_free(path);
        return NULL;
    }
    if ((ret = db->open(db, NULL, vstr_str(path), NULL, db_type, DB_RDONLY,
                        0)) != 0) {
        vstr_sprintf(why, "%s:%s: open %s: %s", type, name, vstr_str(path),
                     db_strerror(ret));
        (void) db->close(db, 0);
        vstr_free(path);
        return NULL;
    }
    if ((ret = db->fd(db, &fd)) != 0 || fstat(fd, st) < 0) {
        vstr_sprintf(why, "%s:%s: stat %s: %s", type, name, vstr_str(path),
                     ret ? db_strerror(ret) : strerror(errno));
        (void) db->close(db, 0);
        vstr_free(path);
        return NULL;
    }
    map_db = mymalloc(sizeof(*map_db));
    map_db->db = db;
    map_db->type = type;
    map_db->path = vstr_export(path);
    *watch = mystrdup(map_db->path);
    return map_db;
}

/* map_db_get - one key; a read error is MAP_FAIL */
static const char *map_db_get(void *context, const char *key, VSTR *result,
                              int *error)
{
    MAP_DB *map_db = context;
    DBT db_key;
    DBT db_value;
    int ret;

    memset(&db_key, 0, sizeof(db_key));
    memset(&db_value, 0, sizeof(db_value));
    db_key.data = (void *) key;
    db_key.size = (u_int32_t) strlen(key) + 1;
    ret = map_db->db->get(map_db->db, NULL, &db_key, &db_value, 0);
    if (ret == DB_NOTFOUND) {
        *error = MAP_NOTFOUND;
        return NULL;
    }
    if (ret != 0) {
        msg_warn("%s:%s: read: %s", map_db->type, map_db->path,
                 db_strerror(ret));
        *error = MAP_FAIL;
        return NULL;
    }
    vstr_ncpy(result, db_value.data, db_value.size);
    if (vstr_len(result) > 0 && vstr_str(result)[vstr_len(result) - 1] == 0)
        vstr_truncate(result, vstr_len(result) - 1);
    *error = MAP_OK;
    return vstr_str(result);
}

/* map_db_close - close the file */
static void map_db_close(void *context)
{
    MAP_DB *map_db = context;

    (void) map_db->db->close(map_db->db, 0);
    myfree(map_db->path);
    myfree(map_db);
}

/*
 * Writing: a new file beside the old one, then rename.
 */
typedef struct MAP_DB_NEW {
    DB *db;
    const char *type;
    const char *name;
    VSTR *path; /* name.db */
    VSTR *tmp; /* name.db.tmp.pid */
} MAP_DB_NEW;

/* map_db_new - create the temporary file; -1 with why */
static int map_db_new(MAP_DB_NEW *out, const char *type, DBTYPE db_type,
                      const char *name, mode_t mode, VSTR *why)
{
    int ret;

    out->type = type;
    out->name = name;
    out->path = vstr_alloc(100);
    out->tmp = vstr_alloc(100);
    vstr_sprintf(out->path, "%s.db", name);
    vstr_sprintf(out->tmp, "%s.db.tmp.%ld", name, (long) getpid());
    (void) unlink(vstr_str(out->tmp));
    if ((out->db = map_db_handle(type, name, why)) == NULL)
        goto fail;
    (void) out->db->set_cachesize(out->db, 0, MAP_DB_CACHE_SIZE, 1);
    if ((ret = out->db->open(out->db, NULL, vstr_str(out->tmp), NULL, db_type,
                             DB_CREATE | DB_EXCL, (int) mode)) != 0) {
        vstr_sprintf(why, "%s:%s: create %s: %s", type, name,
                     vstr_str(out->tmp), db_strerror(ret));
        (void) out->db->close(out->db, 0);
        out->db = NULL;
        goto fail;
    }
    return 0;

fail:
    out->path = vstr_free(out->path);
    out->tmp = vstr_free(out->tmp);
    return -1;
}

/* map_db_abandon - close and remove the temporary file */
static void map_db_abandon(MAP_DB_NEW *out)
{
    if (out->db)
        (void) out->db->close(out->db, 0);
    (void) unlink(vstr_str(out->tmp));
    vstr_free(out->path);
    vstr_free(out->tmp);
}

/* map_db_publish - close, fsync, rename over name.db, fsync the folder */
static int map_db_publish(MAP_DB_NEW *out, VSTR *why)
{
    int ret;
    int fd;
    int status = -1;

    ret = out->db->close(out->db, 0);
    out->db = NULL;
    if (ret != 0) {
        vstr_sprintf(why, "%s:%s: write %s: %s", out->type, out->name,
                     vstr_str(out->tmp), db_strerror(ret));
    } else if ((fd = open(vstr_str(out->tmp), O_RDONLY | O_CLOEXEC)) < 0 ||
               safe_file_fsync(fd) < 0) {
        vstr_sprintf(why, "%s:%s: fsync %s: %s", out->type, out->name,
                     vstr_str(out->tmp), strerror(errno));
        if (fd >= 0)
            (void) close(fd);
    } else if (close(fd) < 0 ||
               safe_file_rename(vstr_str(out->tmp), vstr_str(out->path)) < 0) {
        vstr_sprintf(why, "%s:%s: rename %s to %s: %s", out->type, out->name,
                     vstr_str(out->tmp), vstr_str(out->path), strerror(errno));
    } else {
        status = 0;
    }
    if (status < 0)
        (void) unlink(vstr_str(out->tmp));
    vstr_free(out->path);
    vstr_free(out->tmp);
    return status;
}

/* map_db_put - one pair of the text file; the first of a key wins */
static int map_db_put(void *context, const char *path, const char *key,
                      const char *value, int lineno, VSTR *why)
{
    MAP_DB_NEW *out = context;
    DBT db_key;
    DBT db_value;
    int ret;

    memset(&db_key, 0, sizeof(db_key));
    memset(&db_value, 0, sizeof(db_value));
    db_key.data = (void *) key;
    db_key.size = (u_int32_t) strlen(key) + 1;
    db_value.data = (void *) value;
    db_value.size = (u_int32_t) strlen(value) + 1;
    ret = out->db->put(out->db, NULL, &db_key, &db_value, DB_NOOVERWRITE);
    if (ret == DB_KEYEXIST) {
        msg_warn("%s line %d: duplicate key %s: ignored", path, lineno, key);
        return 0;
    }
    if (ret != 0) {
        vstr_sprintf(why, "%s:%s: write %s: %s", out->type, out->name,
                     vstr_str(out->tmp), db_strerror(ret));
        return -1;
    }
    return 0;
}

/* map_db_build - name.db from the text name */
static int map_db_build_type(const char *type, DBTYPE db_type, const char *name,
                             int flags, VSTR *why)
{
    MAP_DB_NEW out;
    struct stat st;

    if (stat(name, &st) < 0) {
        vstr_sprintf(why, "%s:%s: open %s: %s", type, name, name,
                     strerror(errno));
        return -1;
    }
    if (map_db_new(&out, type, db_type, name, st.st_mode & 0777, why) < 0)
        return -1;
    if (map_text_read(name, flags, map_db_put, &out, NULL, why) < 0) {
        map_db_abandon(&out);
        return -1;
    }
    return map_db_publish(&out, why);
}

/* map_db_delete - copy name.db without key, then rename */
int map_db_delete(const char *name, bool btree, const char *key, int flags,
                  VSTR *why)
{
    const char *type = btree ? "btree" : "hash";
    DBTYPE db_type = btree ? DB_BTREE : DB_HASH;
    MAP_DB *old;
    MAP_DB_NEW out;
    DBC *cursor;
    DBT db_key;
    DBT db_value;
    VSTR *folded = vstr_alloc(100);
    VSTR *value = vstr_alloc(100);
    char *watch = NULL;
    struct stat st;
    int error;
    int ret;
    int status = -1;

    vstr_cpy(folded, key);
    if ((flags & MAP_FLAG_NOFOLD) == 0)
        vstr_lower(folded);
    if ((old = map_db_open_type(type, db_type, name, why, &watch, &st)) == NULL)
        goto done;
    if (map_db_get(old, vstr_str(folded), value, &error) == NULL) {
        if (error == MAP_NOTFOUND)
            status = 1;
        else
            vstr_sprintf(why, "%s:%s: read %s failed", type, name, old->path);
        goto done;
    }
    if (map_db_new(&out, type, db_type, name, st.st_mode & 0777, why) < 0)
        goto done;
    if ((ret = old->db->cursor(old->db, NULL, &cursor, 0)) != 0) {
        vstr_sprintf(why, "%s:%s: read %s: %s", type, name, old->path,
                     db_strerror(ret));
        map_db_abandon(&out);
        goto done;
    }
    for (;;) {
        memset(&db_key, 0, sizeof(db_key));
        memset(&db_value, 0, sizeof(db_value));
        if ((ret = cursor->get(cursor, &db_key, &db_value, DB_NEXT)) != 0)
            break;
        if (db_key.size == vstr_len(folded) + 1 &&
            memcmp(db_key.data, vstr_str(folded), db_key.size) == 0)
            continue;
        if ((ret = out.db->put(out.db, NULL, &db_key, &db_value, 0)) != 0)
            break;
    }
    (void) cursor->close(cursor);
    if (ret != DB_NOTFOUND) {
        vstr_sprintf(why, "%s:%s: copy %s: %s", type, name, old->path,
                     db_strerror(ret));
        map_db_abandon(&out);
        goto done;
    }
    status = map_db_publish(&out, why);

done:
    if (old)
        map_db_close(old);
    myfree(watch);
    vstr_free(folded);
    vstr_free(value);
    return status;
}

/* map_hash_open - hash:name */
static void *map_hash_open(const char *name, int flags, VSTR *why, char **watch,
                           struct stat *st)
{
    return map_db_open_type("hash", DB_HASH, name, why, watch, st);
}

/* map_btree_open - btree:name */
static void *map_btree_open(const char *name, int flags, VSTR *why,
                            char **watch, struct stat *st)
{
    return map_db_open_type("btree", DB_BTREE, name, why, watch, st);
}

/* map_hash_build - hash:name */
static int map_hash_build(const char *name, int flags, VSTR *why)
{
    return map_db_build_type("hash", DB_HASH, name, flags, why);
}

/* map_btree_build - btree:name */
static int map_btree_build(const char *name, int flags, VSTR *why)
{
    return map_db_build_type("btree", DB_BTREE, name, flags, why);
}

const MAP_TYPE map_type_hash = {
    "hash", 0, map_hash_open, map_db_get, map_db_close, map_hash_build,
};

const MAP_TYPE map_type_btree = {
    "btree", 0, map_btree_open, map_db_get, map_db_close, map_btree_build,
};
