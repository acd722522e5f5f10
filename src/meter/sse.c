/*
 * sse.c - the meter's text/event-stream splitter: response bytes in, whole
 * events out (meter_int.h, struct meter__sse).
 *
 * Lines may end in CRLF, LF or CR, split anywhere across chunks. An event's
 * data: lines are kept as sent up to METER__SSE_RAW_MAX (64 KiB: every
 * ordinary event), and the vendor meter gets them whole; an event that
 * outgrows that streams into a JSON skeleton scanner (jscan.c) instead, and
 * the vendor meter gets the skeleton, so a 2 MiB event needs no more memory
 * than a 64 KiB one. Only the field name of a line (up to 8 bytes), the
 * event name (63) and that bounded data are kept.
 */
#include <string.h>

#include "meter/meter_int.h"

/* Where the splitter is in the current line. */
enum sse_line {
    L_FIELD = 0,       /* reading the field name, up to ':' */
    L_DATA_START = 1,  /* after "data:": one space may follow */
    L_DATA = 2,        /* the value of a data: line */
    L_EVENT_START = 3, /* after "event:": one space may follow */
    L_EVENT = 4,       /* the value of an event: line */
    L_IGNORE = 5,      /* a comment or a field we do not read */
};

void meter__sse_init(struct meter__sse *s)
{
    memset(s, 0, sizeof *s);
    meter__jscan_init(&s->scan);
}

void meter__sse_cleanup(struct meter__sse *s)
{
    meter__jscan_cleanup(&s->scan);
    buf_cleanup(&s->raw);
}

/* Bytes of the current event's data: kept as sent while the event is
 * short (the common case: the meter parses it whole, no scanner work), and
 * handed to the skeleton scanner from the moment it outgrows that. */
static void sse_data_add(struct meter__sse *s, const char *d, size_t n)
{
    if (!s->scanning) {
        if (n <= METER__SSE_RAW_MAX - s->raw.len) {
            buf_append(&s->raw, d, n);
            return;
        }
        s->scanning = true;
        meter__jscan_feed(&s->scan, s->raw.data ? s->raw.data : "", s->raw.len);
        buf_reset(&s->raw);
    }
    meter__jscan_feed(&s->scan, d, n);
}

/* A data: line starts: lines of one event are joined by '\n'. */
static void sse_data_begin(struct meter__sse *s)
{
    if (s->has_data)
        sse_data_add(s, "\n", 1);
    s->has_data = true;
}

static bool sse_field_is(const struct meter__sse *s, const char *name)
{
    size_t n = strlen(name);
    return s->field_len == n && memcmp(s->field, name, n) == 0;
}

/* The field name ended at ':' (colon) or at the end of the line. */
static void sse_field_end(struct meter__sse *s, bool colon)
{
    if (sse_field_is(s, "data")) {
        sse_data_begin(s);
        s->lstate = L_DATA_START;
    } else if (sse_field_is(s, "event")) {
        s->event_len = 0; /* the last event: line of an event wins */
        s->event[0] = '\0';
        s->lstate = L_EVENT_START;
    } else {
        /* comments (""), id:, retry: and unknown fields carry nothing we meter */
        s->lstate = L_IGNORE;
    }
    if (!colon)
        s->lstate = L_IGNORE;
}

/* Bytes of the current line (no CR or LF among them). */
static void sse_line_bytes(struct meter__sse *s, const char *d, size_t n)
{
    while (n > 0) {
        switch (s->lstate) {
        case L_FIELD: {
            const char *colon = memchr(d, ':', n);
            size_t k = colon ? (size_t)(colon - d) : n;
            if (s->field_len <= sizeof s->field) {
                if (k > sizeof s->field - s->field_len) {
                    s->field_len = sizeof s->field + 1; /* no field we read is that long */
                } else {
                    memcpy(s->field + s->field_len, d, k);
                    s->field_len += k;
                }
            }
            if (!colon)
                return;
            sse_field_end(s, true);
            d += k + 1;
            n -= k + 1;
            break;
        }
        case L_DATA_START:
        case L_EVENT_START:
            if (d[0] == ' ')
                d++, n--;
            s->lstate = s->lstate == L_DATA_START ? L_DATA : L_EVENT;
            break;
        case L_DATA:
            sse_data_add(s, d, n);
            return;
        case L_EVENT: {
            /* A name longer than the field cannot be one we look for. */
            size_t room = sizeof s->event - 1 - s->event_len;
            size_t k = n < room ? n : room;
            memcpy(s->event + s->event_len, d, k);
            s->event_len += k;
            s->event[s->event_len] = '\0';
            return;
        }
        default:
            return;
        }
    }
}

/* A blank line: the event is complete. */
static void sse_dispatch_event(struct meter__sse *s, meter__sse_cb *cb, void *ctx)
{
    const char *skel;
    size_t len;

    if (s->has_data) {
        if (!s->scanning)
            cb(ctx, s->event, s->raw.data ? s->raw.data : "", s->raw.len); /* as sent */
        else if (meter__jscan_finish(&s->scan, &skel, &len))
            cb(ctx, s->event, skel, len);
        /* Long and not JSON: nothing a meter could read; dropped. */
    }
    if (s->scanning)
        meter__jscan_reset(&s->scan);
    s->scanning = false;
    if (s->raw.cap > 2 * 1024)
        buf_cleanup(&s->raw); /* a long event gives its memory back */
    buf_reset(&s->raw);
    s->event_len = 0;
    s->event[0] = '\0';
    s->has_data = false;
}

static void sse_line_end(struct meter__sse *s, meter__sse_cb *cb, void *ctx)
{
    bool blank = !s->line_seen;

    s->line_seen = false;
    if (blank) {
        sse_dispatch_event(s, cb, ctx);
    } else if (s->lstate == L_FIELD) {
        sse_field_end(s, false); /* "data" alone: a field with an empty value */
    }
    s->lstate = L_FIELD;
    s->field_len = 0;
}

/* The bytes of s[0, n) before the first CR or LF. */
static size_t line_span(const char *d, size_t n)
{
    const char *lf = memchr(d, '\n', n);
    size_t lim = lf ? (size_t)(lf - d) : n;
    const char *cr = memchr(d, '\r', lim);
    return cr ? (size_t)(cr - d) : lim;
}

void meter__sse_feed(struct meter__sse *s, const char *d, size_t n, meter__sse_cb *cb, void *ctx)
{
    size_t i = 0;

    while (i < n) {
        if (s->cr) {
            /* CRLF split across chunks, or right here: one line end. */
            s->cr = false;
            if (d[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t k = line_span(d + i, n - i);
        if (k > 0) {
            s->line_seen = true;
            sse_line_bytes(s, d + i, k);
        }
        i += k;
        if (i == n)
            break;
        if (d[i] == '\r')
            s->cr = true;
        i++;
        sse_line_end(s, cb, ctx);
    }
}
