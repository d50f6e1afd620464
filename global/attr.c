/*
 * attr - the attribute protocol every request and reply between daemons uses
 *
 * The wire form is in attr.h. The decoder is incremental and strict: it
 * never reads past the bytes it was given, answers "need more" for a list
 * that is merely incomplete, and rejects a bad name, a bad length, a value
 * not followed by its newline, or a list larger than the reader's limit as
 * soon as the bytes it has show it, so a peer cannot make a reader buffer
 * without bound. A value is kept with a spare NUL after it, so a text value
 * is a C string; attr_get_str() refuses a value that holds a NUL of its own
 * rather than hand out a silently shortened string.
 *
 * The blocking stream keeps what it read past one list for the next call.
 * Each call has its own deadline (timeout_ms; 0 or less waits forever).
 * Writes use send(MSG_NOSIGNAL | MSG_DONTWAIT) so a peer that went away is
 * an error, not a SIGPIPE, and a peer that stops reading is a timeout; a
 * descriptor that is not a socket falls back to write(2) after poll(2).
 */
#include "sys_defs.h"

#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include "attr.h"
#include "mono_ms.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define ATTR_NAME_MAX 64
#define ATTR_LEN_DIGITS_MAX 20 /* digits of SIZE_MAX on 64 bits */
#define ATTR_STREAM_READ_CHUNK 8192

typedef struct ATTR {
    char *name;
    char *value; /* len bytes and a spare NUL */
    size_t len;
} ATTR;

struct ATTR_LIST {
    ATTR *attrs;
    size_t count;
    size_t cap;
};

struct ATTR_STREAM {
    int fd;
    size_t max_len;
    int timeout_ms;
    VSTR *inbuf; /* bytes read but not yet decoded, from in_start */
    size_t in_start;
};

/* attr_why - set the reason, when the caller wants one */
static void SLUICE_PRINTF(2, 3) attr_why(VSTR *why, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL)
        return;
    vstr_reset(why);
    va_start(ap, fmt);
    vstr_vsprintf_append(why, fmt, ap);
    va_end(ap);
}

/* attr_name_char - may ch appear in a name? */
static inline bool attr_name_char(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
}

/* attr_name_ok - is name a well-formed attribute name? */
static bool attr_name_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > ATTR_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!attr_name_char((unsigned char) name[i]))
            return false;
    return true;
}

/* attr_int_parse - a clean signed decimal of len bytes, or false */
static bool attr_int_parse(const char *value, size_t len, long long *out)
{
    const char *digits = value;
    char *end;
    long long result;

    if (len > 0 && value[0] == '-')
        digits++;
    if (digits == value + len)
        return false;
    for (const char *cp = digits; cp < value + len; cp++)
        if (*cp < '0' || *cp > '9')
            return false;
    /* The value has its spare NUL, so strtoll stops at len. */
    errno = 0;
    result = strtoll(value, &end, 10);
    if (errno == ERANGE || end != value + len)
        return false;
    *out = result;
    return true;
}

/* attr_list_alloc - a new empty list */
ATTR_LIST *attr_list_alloc(void)
{
    ATTR_LIST *list = mymalloc(sizeof(*list));

    list->attrs = NULL;
    list->count = 0;
    list->cap = 0;
    return list;
}

/* attr_list_free - release a list; returns NULL */
ATTR_LIST *attr_list_free(ATTR_LIST *list)
{
    if (list != NULL) {
        for (size_t i = 0; i < list->count; i++) {
            myfree(list->attrs[i].name);
            myfree(list->attrs[i].value);
        }
        myfree(list->attrs);
        myfree(list);
    }
    return NULL;
}

/* attr_list_count - the number of attributes */
size_t attr_list_count(const ATTR_LIST *list)
{
    return list->count;
}

/* attr_append - add one attribute, name already checked */
static void attr_append(ATTR_LIST *list, const char *name, size_t name_len,
                        const char *value, size_t len)
{
    ATTR *attr;

    if (list->count == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 8;
        list->attrs =
            myrealloc_array(list->attrs, list->cap, sizeof(*list->attrs));
    }
    attr = list->attrs + list->count++;
    attr->name = mystrndup(name, name_len);
    if (len == SIZE_MAX)
        msg_fatal("%s: value length overflow", __func__);
    attr->value = mymalloc(len + 1);
    if (len > 0)
        memcpy(attr->value, value, len);
    attr->value[len] = 0;
    attr->len = len;
}

/* attr_add_checked - add an attribute after checking the caller's name */
static void attr_add_checked(ATTR_LIST *list, const char *name,
                             const void *value, size_t len)
{
    if (name == NULL || !attr_name_ok(name))
        msg_panic("attr_add: bad attribute name \"%s\"",
                  name ? name : "(null)");
    if (value == NULL && len > 0)
        msg_panic("attr_add: null value for \"%s\"", name);
    attr_append(list, name, strlen(name), value, len);
}

/* attr_add_str - add a text attribute */
void attr_add_str(ATTR_LIST *list, const char *name, const char *value)
{
    if (value == NULL)
        msg_panic("%s: null value for \"%s\"", __func__, name);
    attr_add_checked(list, name, value, strlen(value));
}

/* attr_add_int - add an integer attribute, as decimal text */
void attr_add_int(ATTR_LIST *list, const char *name, long long value)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%lld", value);

    if (len < 0 || (size_t) len >= sizeof(buf))
        msg_panic("%s: integer does not fit", __func__);
    attr_add_checked(list, name, buf, (size_t) len);
}

/* attr_add_data - add an attribute of any bytes */
void attr_add_data(ATTR_LIST *list, const char *name, const void *value,
                   size_t len)
{
    attr_add_checked(list, name, value, len);
}

/* attr_find - the first attribute called name, or NULL */
static const ATTR *attr_find(const ATTR_LIST *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->attrs[i].name, name) == 0)
            return list->attrs + i;
    return NULL;
}

/* attr_get_str - the first value called name as text; NULL when absent or
   when the value holds a NUL */
const char *attr_get_str(const ATTR_LIST *list, const char *name)
{
    const ATTR *attr = attr_find(list, name);

    if (attr == NULL || memchr(attr->value, 0, attr->len) != NULL)
        return NULL;
    return attr->value;
}

/* attr_get_int - the first value called name as an integer; false when
   absent or not a clean decimal */
bool attr_get_int(const ATTR_LIST *list, const char *name, long long *value)
{
    const ATTR *attr = attr_find(list, name);

    if (attr == NULL)
        return false;
    return attr_int_parse(attr->value, attr->len, value);
}

/* attr_get_data - the first value called name as bytes (NUL after them) */
const char *attr_get_data(const ATTR_LIST *list, const char *name, size_t *len)
{
    const ATTR *attr = attr_find(list, name);

    if (attr == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = attr->len;
    return attr->value;
}

/* attr_name_at - the name of the i-th attribute */
const char *attr_name_at(const ATTR_LIST *list, size_t i)
{
    if (i >= list->count)
        msg_panic("%s: index %zu of %zu", __func__, i, list->count);
    return list->attrs[i].name;
}

/* attr_value_at - the value of the i-th attribute */
const char *attr_value_at(const ATTR_LIST *list, size_t i, size_t *len)
{
    if (i >= list->count)
        msg_panic("%s: index %zu of %zu", __func__, i, list->count);
    if (len != NULL)
        *len = list->attrs[i].len;
    return list->attrs[i].value;
}

/* attr_list_encode - append the wire form of list to out */
void attr_list_encode(const ATTR_LIST *list, VSTR *out)
{
    for (size_t i = 0; i < list->count; i++) {
        const ATTR *attr = list->attrs + i;

        vstr_sprintf_append(out, "%s=%zu:", attr->name, attr->len);
        vstr_ncat(out, attr->value, attr->len);
        vstr_addch(out, '\n');
    }
    vstr_addch(out, '\n');
}

/* attr_too_large - the reason for a list over the limit */
static int attr_too_large(VSTR *why, size_t max_len)
{
    attr_why(why, "attribute list larger than %zu bytes", max_len);
    return -1;
}

/* attr_decode_into - parse one list from buf[0..len) into list; the result
   as attr_list_decode() has it */
static int attr_decode_into(const char *buf, size_t len, size_t max_len,
                            size_t *used, ATTR_LIST *list, VSTR *why)
{
    size_t pos = 0;

    for (;;) {
        size_t name_start = pos;
        size_t name_len;
        size_t value_len = 0;
        size_t digits = 0;
        size_t value_end;

        /* The end of the list, or a name. */
        if (pos >= len)
            return 0;
        if (buf[pos] == '\n') {
            if (pos + 1 > max_len)
                return attr_too_large(why, max_len);
            *used = pos + 1;
            return 1;
        }
        while (pos < len && attr_name_char((unsigned char) buf[pos])) {
            if (pos - name_start >= ATTR_NAME_MAX) {
                attr_why(why, "attribute name longer than %d bytes",
                         ATTR_NAME_MAX);
                return -1;
            }
            pos++;
        }
        if (pos > max_len)
            return attr_too_large(why, max_len);
        if (pos >= len)
            return 0;
        name_len = pos - name_start;
        if (buf[pos] != '=') {
            attr_why(why, "bad character 0x%02x in attribute name",
                     (unsigned char) buf[pos]);
            return -1;
        }
        if (name_len == 0) {
            attr_why(why, "empty attribute name");
            return -1;
        }
        pos++;

        /* The length: decimal digits, then ':'. */
        while (pos < len && buf[pos] >= '0' && buf[pos] <= '9') {
            if (++digits > ATTR_LEN_DIGITS_MAX ||
                __builtin_mul_overflow(value_len, 10, &value_len) ||
                __builtin_add_overflow(value_len, (size_t) (buf[pos] - '0'),
                                       &value_len)) {
                attr_why(why, "length overflow in attribute \"%.*s\"",
                         (int) name_len, buf + name_start);
                return -1;
            }
            pos++;
        }
        if (pos > max_len)
            return attr_too_large(why, max_len);
        if (pos >= len)
            return 0;
        /* One spelling per length: no leading zeros ("0" itself is fine). */
        if (buf[pos] != ':' || digits == 0 ||
            (digits > 1 && buf[pos - digits] == '0')) {
            attr_why(why, "bad length in attribute \"%.*s\"", (int) name_len,
                     buf + name_start);
            return -1;
        }
        pos++;

        /* The value and its newline: the size is known, so fail early. */
        if (__builtin_add_overflow(pos, value_len, &value_end) ||
            value_end >= max_len)
            return attr_too_large(why, max_len);
        if (value_end >= len)
            return 0;
        if (buf[value_end] != '\n') {
            attr_why(why, "no newline after the value of attribute \"%.*s\"",
                     (int) name_len, buf + name_start);
            return -1;
        }
        attr_append(list, buf + name_start, name_len, buf + pos, value_len);
        pos = value_end + 1;
    }
}

/* attr_list_decode - parse one list from buf[0..len) */
int attr_list_decode(const char *buf, size_t len, size_t max_len, size_t *used,
                     ATTR_LIST **out, VSTR *why)
{
    ATTR_LIST *list = attr_list_alloc();
    int ret = attr_decode_into(buf, len, max_len, used, list, why);

    if (ret == 1)
        *out = list;
    else
        attr_list_free(list);
    return ret;
}

/* attr_type_ok - does the value fit its declared type? */
static bool attr_type_ok(const ATTR *attr, ATTR_TYPE type)
{
    long long ignored;

    switch (type) {
    case ATTR_TYPE_STR:
        return memchr(attr->value, 0, attr->len) == NULL;
    case ATTR_TYPE_INT:
        return attr_int_parse(attr->value, attr->len, &ignored);
    case ATTR_TYPE_DATA:
        return true;
    }
    msg_panic("attr_type_ok: unknown type %d", (int) type);
}

/* attr_list_check - strict validation against a protocol table */
int attr_list_check(const ATTR_LIST *list, const ATTR_SPEC *spec,
                    size_t spec_count, VSTR *why)
{
    bool *seen = mycalloc(spec_count ? spec_count : 1, sizeof(*seen));
    int ret = -1;

    for (size_t i = 0; i < list->count; i++) {
        const ATTR *attr = list->attrs + i;
        size_t s;

        for (s = 0; s < spec_count; s++)
            if (strcmp(spec[s].name, attr->name) == 0)
                break;
        if (s == spec_count) {
            attr_why(why, "unknown attribute \"%s\"", attr->name);
            goto done;
        }
        if (seen[s] && !spec[s].repeat) {
            attr_why(why, "repeated attribute \"%s\"", attr->name);
            goto done;
        }
        seen[s] = true;
        if (!attr_type_ok(attr, spec[s].type)) {
            attr_why(why,
                     spec[s].type == ATTR_TYPE_INT
                         ? "attribute \"%s\" is not an integer"
                         : "attribute \"%s\" contains a NUL byte",
                     attr->name);
            goto done;
        }
    }
    for (size_t s = 0; s < spec_count; s++) {
        if (spec[s].required && !seen[s]) {
            attr_why(why, "missing attribute \"%s\"", spec[s].name);
            goto done;
        }
    }
    ret = 0;

done:
    myfree(seen);
    return ret;
}

/* attr_stream_open - a buffered stream on fd; max_len bounds each list */
ATTR_STREAM *attr_stream_open(int fd, size_t max_len, int timeout_ms)
{
    ATTR_STREAM *stream = mymalloc(sizeof(*stream));

    stream->fd = fd;
    stream->max_len = max_len;
    stream->timeout_ms = timeout_ms;
    stream->inbuf = vstr_alloc(ATTR_STREAM_READ_CHUNK);
    stream->in_start = 0;
    return stream;
}

/* attr_stream_close - release the stream and close its descriptor */
ATTR_STREAM *attr_stream_close(ATTR_STREAM *stream)
{
    if (stream != NULL) {
        if (stream->fd >= 0)
            (void) close(stream->fd);
        vstr_free(stream->inbuf);
        myfree(stream);
    }
    return NULL;
}

/* attr_stream_fd - the descriptor under the stream */
int attr_stream_fd(const ATTR_STREAM *stream)
{
    return stream->fd;
}

/* attr_stream_wait - poll for events until the deadline; 0, or -1 with why */
static int attr_stream_wait(ATTR_STREAM *stream, short events,
                            long long deadline, VSTR *why)
{
    struct pollfd pfd;
    int wait_ms;
    int n;

    for (;;) {
        if (stream->timeout_ms <= 0) {
            wait_ms = -1;
        } else {
            long long left = deadline - mono_ms();

            if (left <= 0) {
                attr_why(why, "timeout");
                return -1;
            }
            wait_ms = left > INT_MAX ? INT_MAX : (int) left;
        }
        pfd.fd = stream->fd;
        pfd.events = events;
        pfd.revents = 0;
        n = poll(&pfd, 1, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            attr_why(why, "poll: %m");
            return -1;
        }
        if (n == 0) {
            attr_why(why, "timeout");
            return -1;
        }
        if (pfd.revents & POLLNVAL) {
            attr_why(why, "poll: descriptor %d is not open", stream->fd);
            return -1;
        }
        /* POLLHUP / POLLERR: let read or write report what happened. */
        return 0;
    }
}

/* attr_stream_write - send one list completely, within the timeout */
int attr_stream_write(ATTR_STREAM *stream, const ATTR_LIST *list, VSTR *why)
{
    VSTR *wire = vstr_alloc(256);
    long long deadline = mono_ms() + stream->timeout_ms;
    const char *data;
    size_t left;
    bool is_socket = true;
    int ret = -1;

    attr_list_encode(list, wire);
    data = vstr_str(wire);
    left = vstr_len(wire);
    while (left > 0) {
        ssize_t n;

        if (attr_stream_wait(stream, POLLOUT, deadline, why) < 0)
            goto done;
        if (is_socket) {
            n = send(stream->fd, data, left, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && errno == ENOTSOCK) {
                is_socket = false;
                continue;
            }
        } else {
            n = write(stream->fd, data, left);
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            attr_why(why, "write: %m");
            goto done;
        }
        if (n == 0) {
            attr_why(why, "write: no progress");
            goto done;
        }
        data += n;
        left -= (size_t) n;
    }
    ret = 0;

done:
    vstr_free(wire);
    return ret;
}

/* attr_stream_read - read one list, within the timeout */
int attr_stream_read(ATTR_STREAM *stream, ATTR_LIST **out, VSTR *why)
{
    long long deadline = mono_ms() + stream->timeout_ms;
    VSTR *in = stream->inbuf;

    *out = NULL;
    for (;;) {
        size_t used = 0;
        ssize_t n;
        int ret;

        /* Whatever a previous read left over may already hold a list. */
        if (stream->in_start < vstr_len(in)) {
            ret = attr_list_decode(vstr_str(in) + stream->in_start,
                                   vstr_len(in) - stream->in_start,
                                   stream->max_len, &used, out, why);
            if (ret < 0)
                return -1;
            if (ret > 0) {
                stream->in_start += used;
                if (stream->in_start == vstr_len(in)) {
                    vstr_reset(in);
                    stream->in_start = 0;
                }
                return 0;
            }
        }
        /* Keep the buffer from creeping: move the partial list to the front. */
        if (stream->in_start > 0) {
            size_t keep = vstr_len(in) - stream->in_start;

            memmove(vstr_str(in), vstr_str(in) + stream->in_start, keep);
            vstr_truncate(in, keep);
            stream->in_start = 0;
        }
        if (attr_stream_wait(stream, POLLIN, deadline, why) < 0)
            return -1;
        vstr_reserve(in, ATTR_STREAM_READ_CHUNK);
        n = read(stream->fd, vstr_str(in) + vstr_len(in),
                 ATTR_STREAM_READ_CHUNK);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            attr_why(why, "read: %m");
            return -1;
        }
        if (n == 0) {
            attr_why(why, "unexpected EOF");
            return -1;
        }
        in->len += (size_t) n;
        in->data[in->len] = 0;
    }
}
