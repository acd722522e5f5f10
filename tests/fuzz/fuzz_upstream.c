/*
 * fuzz_upstream.c - libFuzzer target for the upstream HTTP/1.1 client
 * (src/proxy/upstream.c): its response parser (status line, 1xx answers,
 * headers, Content-Length, chunked, a body up to the connection's end), the
 * pause and resume of a transfer, cancellation from inside and outside its
 * callbacks, and the keep-alive pool with its stale-connection retry,
 * against a fake vendor on loopback driven by the same event loop.
 *
 * Input: three control bytes, then exactly what the vendor answers.
 *   byte 0: bits 0-1 method (GET, HEAD, POST with a body, POST without);
 *           bits 2-4 cancel (0-3 never; 4 in the k-th on_header; 5 in
 *           on_head; 6 in the k-th on_body; 7 from outside, before loop
 *           turn k or instead of the first resume); bits 5-6 on_body
 *           refuses (never, every offer once, every (k+2)-th offer, the
 *           first one; the harness resumes a turn or two later); bit 7 the
 *           vendor keeps the connection open, sending FIN only once the
 *           client waits for more, instead of right after the answer;
 *   byte 1: bits 0-2 k; bits 3-5 the answer is written whole or, from the
 *           cut on, in up to 16 pieces of 1, 2, 7 or 64 bytes, one per loop
 *           turn; bits 6-7 the URL's target (a path; a query and a
 *           fragment; none; only a query);
 *   byte 2: bits 0-5 the cut, in units of 4 bytes; bit 6 a first request
 *           leaves a pooled connection, so the answer comes on a reused one;
 *           bit 7 the vendor drops the connection left pooled (FIN when k
 *           has bit 2, else a reset) just as the second request picks it.
 * The vendor checks the request byte for byte, then answers. Properties,
 * beyond no crash and no sanitizer report, any violation aborting:
 *  (a) the request ends: on_done exactly once (never after a cancel),
 *      within a bounded number of loop turns once the vendor sent FIN (no
 *      timer decides: both timeouts are 60 s); resumed, held-back bytes
 *      come within two turns without any new byte from the vendor;
 *  (b) the callbacks keep their contract: none from inside
 *      upstream_start/resume/cancel, none after done or a cancel, none
 *      while paused, and after a refusal the same bytes first; on_header
 *      gets exactly the final block's headers in order (none of a 1xx
 *      block), as tokens and values without CR, LF, NUL or edge blanks,
 *      never Transfer-Encoding, and Content-Length last, once, with the
 *      answer's value, whenever it frames the body; then on_head with the
 *      final block's status (200..599); on_body only after it; errors are
 *      UPSTREAM_ERROR, _UNREACHABLE or _TIMEOUT;
 *  (c) KB_OK means the whole answer, checked against the input parsed
 *      independently: no body for HEAD, 204 and 304; else the bytes the
 *      Content-Length frames, the de-chunked body, or all the rest once the
 *      vendor sent FIN; and a well-formed, whole answer (RFC 9112, framed
 *      one unambiguous way) is always taken with KB_OK;
 *  (d) nothing is left behind: the client closes every connection the
 *      vendor closed; a second request to a well-behaved answer succeeds,
 *      on the pooled connection or on one new connection (a bad answer
 *      must not poison the pool; a stale one is replaced once); no
 *      connection is opened unasked; no socket leaks.
 * A fresh request is queued before the loop polls, so a pooled connection
 * is picked before the poll's news about it is handled: the vendor's
 * writes that the client must have seen come a turn before the next
 * request starts, except for the deliberate drop of byte 2, bit 7.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "proxy/upstream.h"

#define QUIET_TURNS 4      /* loop turns without progress: the client waits */
#define MAX_REFUSED 65536  /* on_body never gets more than the read buffer */
#define MAX_BODY (1 << 20) /* body bytes kept for comparison */
#define MAX_PIECES 16      /* pieces written one per turn, then the rest */
#define MAX_VCONN 4        /* connections accepted per run */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct kb_upstream *up;
static int lfd, port;
static int fd_mark;  /* the lowest free fd between runs */
static int nsockets; /* sockets open between runs */

/* The final (non-1xx) header block of the answer, found in the input
 * independently of the client. */
struct head {
    bool final;  /* its status line came */
    bool found;  /* and the block ended */
    bool strict; /* every line of the head is well-formed (RFC 9112, LF alone allowed) */
    int status;
    int64_t clen;       /* -1 when none, -2 when not one plain number */
    bool te;            /* some Transfer-Encoding */
    bool chunked;       /* the last one's last coding is chunked */
    int nte;            /* Transfer-Encoding lines */
    bool te_plain;      /* and the last one says just "chunked" */
    size_t fields, end; /* where its header lines start, where the body starts */
};

/* one transfer as its callbacks saw it */
struct xfer {
    struct kb_upstream_req *req;
    const struct head *oracle; /* NULL for the second request, checked apart */
    int cancel_mode, pause_mode, k;
    bool head_method;
    bool must_ok; /* the answer is well-formed and whole: the transfer must succeed */
    bool done, cancelled, head, paused, repeat;
    bool sent; /* on_done said a byte of the request was written */
    enum kb_err err;
    int status, nheader, nbody;
    int64_t clen;  /* the Content-Length it was told, -1 when none */
    size_t fields; /* the oracle's next header line */
    size_t body_bytes, refused_len;
};

static struct xfer x1, x2;
static struct head oracle;
static const uint8_t *answer; /* the fuzzed answer */
static size_t answer_len;
static char got_body[MAX_BODY];   /* of the current transfer */
static char want_body[MAX_BODY];  /* the answer's, de-chunked */
static char refused[MAX_REFUSED]; /* the bytes on_body refused last */
static bool in_api;               /* the harness is in upstream_start/resume/cancel */
static bool fin_sent;             /* the vendor sent FIN on the first request's connection */
static int activity;              /* progress in the current loop turn */

/* the vendor's side of one connection */
struct vconn {
    int fd;           /* -1 once closed */
    struct event *ev; /* reading it */
    const char *want; /* the request it must receive */
    size_t wlen, got;
    bool fin, answered;
};

static struct vconn vc[MAX_VCONN];
static int nvc;                 /* connections accepted in this run */
static int accept_left;         /* connections the client may still open */
static const char *accept_want; /* the request a new connection must carry */
static size_t accept_wlen;
static const char *well_behaved; /* the request answered with "ok" */

static void check_at(bool ok, int line)
{
    if (!ok) {
        fprintf(stderr, "fuzz_upstream.c:%d: check failed\n", line);
        abort();
    }
}
#define check(ok) check_at((ok), __LINE__)

/* ---- the oracle ---- */

static bool tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* HTAB, SP, VCHAR and obs-text only */
static bool text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] != '\t' && ((unsigned char)s[i] < 0x20 || s[i] == 0x7f))
            return false;
    return true;
}

/* The line at p[*at, len) without its LF and a CR before it; NULL when it
 * has no LF. */
static const char *line_at(const uint8_t *p, size_t len, size_t *at, size_t *n)
{
    const uint8_t *nl = memchr(p + *at, '\n', len - *at);
    if (!nl)
        return NULL;
    const char *l = (const char *)p + *at;
    *n = (size_t)(nl - (p + *at));
    *at += *n + 1;
    if (*n && l[*n - 1] == '\r')
        (*n)--;
    return l;
}

/* Splits a header line at its colon and trims the value's edge blanks;
 * false when it has no colon. */
static bool split_field(const char *l, size_t n, size_t *nlen, const char **v, size_t *vlen)
{
    const char *colon = memchr(l, ':', n);
    if (!colon)
        return false;
    *nlen = (size_t)(colon - l);
    *v = colon + 1;
    *vlen = n - *nlen - 1;
    while (*vlen && (**v == ' ' || **v == '\t'))
        (*v)++, (*vlen)--;
    while (*vlen && ((*v)[*vlen - 1] == ' ' || (*v)[*vlen - 1] == '\t'))
        (*vlen)--;
    return true;
}

static bool named(const char *l, size_t nlen, const char *name)
{
    return nlen == strlen(name) && strncasecmp(l, name, nlen) == 0;
}

/* Finds the final header block as RFC 9112 reads it (lines end at LF, a CR
 * before it dropped; 1xx blocks skipped); its fields are trusted only where
 * the client accepted the head. `strict` holds when every line of the head
 * is well-formed, by rules at least as strict as the client's. */
static struct head parse_head(const uint8_t *p, size_t len)
{
    struct head h = {.clen = -1, .strict = true};
    bool status_line = true;
    size_t at = 0, n, nlen, vlen;
    const char *l, *v;
    while ((l = line_at(p, len, &at, &n))) {
        if (status_line) {
            if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0)
                break;
            h.status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
            h.strict &= (l[7] == '0' || l[7] == '1') && l[8] == ' ' &&
                        isdigit((unsigned char)l[9]) && isdigit((unsigned char)l[10]) &&
                        isdigit((unsigned char)l[11]) && h.status >= 100 && h.status != 101 &&
                        (n == 12 || (l[12] == ' ' && text_ok(l + 13, n - 13)));
            h.clen = -1;
            h.te = h.chunked = h.te_plain = false;
            h.nte = 0;
            h.fields = at;
            h.final = h.status < 100 || h.status > 199;
            status_line = false;
        } else if (n == 0) {
            if (h.status >= 100 && h.status <= 199) {
                status_line = true;
                continue;
            }
            h.found = true;
            h.end = at;
            break;
        } else if (split_field(l, n, &nlen, &v, &vlen)) {
            for (size_t i = 0; i < nlen; i++)
                h.strict &= tchar(l[i]);
            h.strict &= nlen > 0 && text_ok(v, vlen);
            if (named(l, nlen, "transfer-encoding")) {
                const char *last = v;
                for (size_t i = 0; i < vlen; i++)
                    if (v[i] == ',')
                        last = v + i + 1;
                size_t left = vlen - (size_t)(last - v);
                while (left && (*last == ' ' || *last == '\t'))
                    last++, left--;
                h.te = true;
                h.chunked = left == 7 && strncasecmp(last, "chunked", 7) == 0;
                h.te_plain = vlen == 7 && h.chunked;
                h.nte++;
            } else if (named(l, nlen, "content-length")) {
                int64_t cl = vlen && vlen <= 18 ? 0 : -2;
                for (size_t i = 0; i < vlen && cl >= 0; i++)
                    cl = v[i] >= '0' && v[i] <= '9' ? cl * 10 + (v[i] - '0') : -2;
                h.clen = h.clen == -1 || h.clen == cl ? cl : -2;
                h.strict &= h.clen >= 0;
            }
        } else {
            h.strict = false;
        }
    }
    h.strict &= h.found && h.status <= 599 && h.end < 16384;
    return h;
}

/* The next header of the final block the client passes on as sent (not
 * Transfer-Encoding nor Content-Length) from *at; false at the block's end
 * (or the answer's, when the block is cut short: headers are told as they
 * come). */
static bool next_field(const struct head *h, size_t *at, const char **name, size_t *nlen,
                       const char **v, size_t *vlen)
{
    size_t n;
    const char *l;
    size_t end = h->found ? h->end : answer_len;
    while (*at < end && (l = line_at(answer, end, at, &n)) && n > 0) {
        if (!split_field(l, n, nlen, v, vlen))
            continue;
        if (!named(l, *nlen, "transfer-encoding") && !named(l, *nlen, "content-length")) {
            *name = l;
            return true;
        }
    }
    return false;
}

/* De-chunks p[0, len) (extensions and trailers skipped, lines ending at
 * LF); the body's length, or -1 when it is not whole. `strict`: no blank
 * before an extension, no control byte in it, a size of 15 digits at most. */
static int64_t dechunk(const uint8_t *p, size_t len, char *out, size_t cap, bool strict)
{
    size_t at = 0, n, total = 0;
    const char *l;
    for (;;) {
        if (!(l = line_at(p, len, &at, &n)))
            return -1;
        uint64_t size = 0;
        size_t i = 0;
        for (; i < n && isxdigit((unsigned char)l[i]); i++) {
            if (size > (INT64_MAX >> 4))
                return -1;
            size = size * 16 +
                   (uint64_t)(isdigit((unsigned char)l[i]) ? l[i] - '0' : (l[i] | 0x20) - 'a' + 10);
        }
        if (strict && (i > 15 || !text_ok(l + i, n - i)))
            return -1;
        while (i < n && (l[i] == ' ' || l[i] == '\t') && !strict)
            i++;
        if (i == 0 || (i < n && l[i] != ';'))
            return -1;
        if (size == 0) {
            while ((l = line_at(p, len, &at, &n)))
                if (n == 0)
                    return (int64_t)total;
            return -1;
        }
        if (size > len - at)
            return -1;
        if (total + size <= cap)
            memcpy(out + total, p + at, size);
        at += size;
        total += size;
        if (!(l = line_at(p, len, &at, &n)) || n != 0)
            return -1;
    }
}

/* ---- the client's callbacks ---- */

static void cancel_inside(struct xfer *x)
{
    upstream_cancel(x->req);
    x->cancelled = true;
}

static void on_header(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct xfer *x = arg;
    /* none after on_head, nor after Content-Length, which comes last */
    check(!in_api && !x->done && !x->cancelled && !x->head && !x->paused && !x->repeat &&
          x->clen < 0);
    check(nlen > 0);
    for (size_t i = 0; i < nlen; i++)
        check(tchar(name[i]));
    for (size_t i = 0; i < vlen; i++)
        check(value[i] != '\r' && value[i] != '\n' && value[i] != '\0');
    check(vlen == 0 || (value[0] != ' ' && value[0] != '\t' && value[vlen - 1] != ' ' &&
                        value[vlen - 1] != '\t'));
    check(!named(name, nlen, "transfer-encoding"));
    const struct head *h = x->oracle;
    if (named(name, nlen, "content-length")) {
        check(vlen >= 1 && vlen <= 19);
        int64_t v = 0;
        for (size_t i = 0; i < vlen; i++) {
            check(value[i] >= '0' && value[i] <= '9');
            v = v * 10 + (value[i] - '0');
        }
        check(h == NULL || (h->found && v == h->clen));
        x->clen = v;
    } else if (h) {
        /* the final block's next header, as sent: none of a 1xx block */
        const char *en = NULL, *ev = NULL;
        size_t enlen = 0, evlen = 0;
        check(h->final && next_field(h, &x->fields, &en, &enlen, &ev, &evlen));
        check(nlen == enlen && memcmp(name, en, nlen) == 0 && vlen == evlen &&
              memcmp(value, ev, vlen) == 0);
    }
    x->nheader++;
    activity++;
    if (x->cancel_mode == 4 && x->nheader == x->k + 1)
        cancel_inside(x);
}

static void on_head(void *arg, int status)
{
    struct xfer *x = arg;
    check(!in_api && !x->done && !x->cancelled && !x->head && !x->paused && !x->repeat);
    check(status >= 200 && status <= 599);
    const struct head *h = x->oracle;
    if (h) {
        check(h->found && h->status == status);
        const char *en, *ev;
        size_t enlen, evlen;
        check(!next_field(h, &x->fields, &en, &enlen, &ev, &evlen)); /* none left out */
        if (h->clen >= 0 && !h->te)
            check(x->clen == h->clen); /* it frames the body: told */
    }
    x->head = true;
    x->status = status;
    activity++;
    if (x->cancel_mode == 5)
        cancel_inside(x);
}

static bool on_body(void *arg, const char *data, size_t len)
{
    struct xfer *x = arg;
    check(!in_api && !x->done && !x->cancelled && x->head && !x->paused);
    check(len > 0 && len <= MAX_REFUSED);
    bool again = x->repeat;
    if (again) /* refused before: the same bytes come again first */
        check(len == x->refused_len && memcmp(data, refused, len) == 0);
    x->repeat = false;
    x->nbody++;
    activity++;
    if (x->cancel_mode == 6 && x->nbody == x->k + 1) {
        cancel_inside(x);
        return x->k % 2 == 0; /* ignored after a cancel */
    }
    bool refuse = (x->pause_mode == 1 && !again) ||
                  (x->pause_mode == 2 && x->nbody % (x->k + 2) == 0) ||
                  (x->pause_mode == 3 && x->nbody == 1);
    if (refuse) {
        x->paused = true;
        x->refused_len = len;
        memcpy(refused, data, len);
        return false;
    }
    if (x->body_bytes + len <= MAX_BODY)
        memcpy(got_body + x->body_bytes, data, len);
    x->body_bytes += len;
    return true;
}

static void on_done(void *arg, enum kb_err err, bool sent)
{
    struct xfer *x = arg;
    check(!in_api && !x->done && !x->cancelled && !x->paused && !x->repeat);
    check(err == KB_OK || err == KB_E_UPSTREAM_ERROR || err == KB_E_UPSTREAM_UNREACHABLE ||
          err == KB_E_UPSTREAM_TIMEOUT);
    check(err != KB_OK || sent); /* an answer needs a request */
    x->sent = sent;
    x->done = true;
    x->err = err;
    activity++;
    check(!x->must_ok || err == KB_OK);
    if (err != KB_OK)
        return;
    check(x->head);
    const struct head *h = x->oracle;
    if (!h)
        return;
    bool kept = x->body_bytes <= MAX_BODY;
    if (x->head_method || x->status == 204 || x->status == 304) {
        check(x->body_bytes == 0);
    } else if (!h->te && h->clen >= 0) {
        check(x->body_bytes == (size_t)h->clen && h->end + x->body_bytes <= answer_len);
        check(!kept || memcmp(got_body, answer + h->end, x->body_bytes) == 0);
    } else if (h->chunked) {
        int64_t n = dechunk(answer + h->end, answer_len - h->end, want_body, MAX_BODY, false);
        check(n >= 0 && x->body_bytes == (size_t)n);
        check(!kept || memcmp(got_body, want_body, x->body_bytes) == 0);
    } else if (!h->te) {
        /* framed by the connection's end: all the rest, and only after FIN */
        check(fin_sent && x->body_bytes == answer_len - h->end);
        check(!kept || memcmp(got_body, answer + h->end, x->body_bytes) == 0);
    }
}

static const struct kb_upstream_ops ops = {on_header, on_head, on_body, on_done};

/* ---- the vendor ---- */

static const char ok_answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/* Closes with a reset: after the client closed its end this leaves no
 * TIME_WAIT behind (which at this rate would exhaust the ephemeral ports);
 * before, the client sees ECONNRESET. */
static void vconn_close(struct vconn *v)
{
    struct linger lg = {1, 0};
    setsockopt(v->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    event_free(v->ev);
    close(v->fd);
    v->fd = -1;
    activity++;
}

/* Sends up to `len` bytes; false when the client is gone. */
static bool vconn_send(struct vconn *v, const void *p, size_t len, size_t *sent)
{
    ssize_t n = send(v->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
        *sent += (size_t)n;
        activity++;
        return true;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

static void vconn_fin(struct vconn *v)
{
    if (v->fin)
        return;
    shutdown(v->fd, SHUT_WR);
    v->fin = true;
    activity++;
}

/* Reads what the client sent: the expected request, byte for byte, and
 * nothing more; answers the well-behaved one. Closes on the client's FIN
 * or a reset. */
static void vconn_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct vconn *v = arg;
    char scratch[4096];
    for (;;) {
        ssize_t n = recv(v->fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (n > 0) {
            check(v->got + (size_t)n <= v->wlen &&
                  memcmp(v->want + v->got, scratch, (size_t)n) == 0);
            v->got += (size_t)n;
            activity++;
            if ((size_t)n < sizeof scratch)
                break;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            vconn_close(v);
            return;
        } else {
            break;
        }
    }
    if (v->want == well_behaved && v->got == v->wlen && !v->answered && !v->fin) {
        size_t sent = 0;
        check(vconn_send(v, ok_answer, sizeof ok_answer - 1, &sent) &&
              sent == sizeof ok_answer - 1);
        v->answered = true;
    }
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    int c;
    while ((c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        /* the client connects only for a request that needs it */
        check(accept_left-- > 0 && nvc < MAX_VCONN);
        struct vconn *v = &vc[nvc++];
        *v = (struct vconn){.fd = c, .want = accept_want, .wlen = accept_wlen};
        v->ev = event_new(base, c, EV_READ | EV_PERSIST, vconn_cb, v);
        check(v->ev != NULL && event_add(v->ev, NULL) == 0);
        activity++;
    }
    check(errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED);
}

/* ---- the harness ---- */

static void start(struct xfer *x, const char *method, const char *target, const char *body,
                  size_t blen)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, target);
    struct kb_buf h = KB_BUF_INIT;
    buf_puts(&h, "X-A: b\r\n");
    in_api = true;
    x->req = upstream_start(up, method, url, &h, body, blen, &ops, x);
    in_api = false;
    check(x->req != NULL && h.len == 0);
}

static void cancel_outside(struct xfer *x)
{
    in_api = true;
    upstream_cancel(x->req);
    in_api = false;
    x->cancelled = true;
    activity++;
}

static void resume_outside(struct xfer *x)
{
    x->paused = false;
    x->repeat = true;
    in_api = true;
    upstream_resume(x->req);
    in_api = false;
    activity++;
}

static int sockets(void)
{
    int n = 0;
    struct stat st;
    for (int fd = 0; fd < 1024; fd++)
        n += fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    return n;
}

/* One poll and the callbacks it makes ready: EVLOOP_NONBLOCK alone would
 * go on while any fd stays ready, so a client spinning on one would hang
 * here rather than run out of turns. */
static void turn(void)
{
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    base = event_base_new();
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    check(base != NULL && lfd >= 0 && bind(lfd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
          listen(lfd, 64) == 0 && getsockname(lfd, (struct sockaddr *)&addr, &len) == 0);
    port = ntohs(addr.sin_port);
    struct event *lev = event_new(base, lfd, EV_READ | EV_PERSIST, accept_cb, NULL);
    check(lev != NULL && event_add(lev, NULL) == 0);
    struct kb_upstream_opts o = {
        .connect_timeout_ms = 60000,
        .idle_timeout_ms = 60000,
        .max_connections = 2,
    };
    char *msg = NULL;
    check(upstream_new(base, &o, &up, &msg) == KB_OK);
    fd_mark = dup(2);
    close(fd_mark);
    nsockets = sockets();
    return 0;
}

/* Whether a client must take the answer: its head well-formed and its
 * body whole, framed one unambiguous way. */
static bool must_accept(const struct head *h, bool head_method)
{
    if (!h->strict)
        return false;
    if (head_method || h->status == 204 || h->status == 304)
        return true;
    if (h->te)
        return h->nte == 1 && h->te_plain && h->clen == -1 &&
               dechunk(answer + h->end, answer_len - h->end, want_body, MAX_BODY, true) >= 0;
    return h->clen < 0 || answer_len - h->end >= (size_t)h->clen;
}

/* Runs a request to the well-behaved answer; it must succeed. */
static void run_ok(struct xfer *x, long bound)
{
    *x = (struct xfer){.clen = -1};
    start(x, "GET", "/ok", NULL, 0);
    for (long n = 0; !x->done; n++) {
        check(n < bound);
        turn();
    }
    check(x->err == KB_OK && x->status == 200 && x->nheader == 1 && x->clen == 2 &&
          x->body_bytes == 2 && memcmp(got_body, "ok", 2) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "POST"};
    static const char *const targets[] = {"/v1/x", "/v1/x?q=1#frag", "", "?q=a%20b"};
    static const char *const sent_targets[] = {"/v1/x", "/v1/x?q=1", "/", "/?q=a%20b"};
    static const size_t pieces[] = {0, 0, 0, 0, 1, 2, 7, 64};
    static const char post_body[] = "{\"a\":1}";
    if (size < 3)
        return 0;
    int m = data[0] & 3, t = data[1] >> 6;
    bool keep = data[0] & 0x80;
    size_t piece = pieces[(data[1] >> 3) & 7];
    size_t cut = 4 * (size_t)(data[2] & 0x3f);
    bool warm = data[2] & 0x40, drop = data[2] & 0x80;
    const uint8_t *resp = data + 3;
    size_t rlen = size - 3;
    long bound = 10000 + 8 * (long)size;

    answer = resp;
    answer_len = rlen;
    oracle = parse_head(resp, rlen);
    nvc = 0;

    const char *body = m == 2 ? post_body : NULL;
    size_t blen = body ? sizeof post_body - 1 : 0;
    char want1[512], want2[512];
    int w1 = snprintf(want1, sizeof want1, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-A: b\r\n",
                      methods[m], sent_targets[t], port);
    if (m >= 2)
        w1 += snprintf(want1 + w1, sizeof want1 - (size_t)w1, "Content-Length: %zu\r\n", blen);
    w1 += snprintf(want1 + w1, sizeof want1 - (size_t)w1, "\r\n%s", body ? body : "");
    int w2 = snprintf(want2, sizeof want2,
                      "GET /ok HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-A: b\r\n\r\n", port);
    well_behaved = want2;
    accept_want = want2;
    accept_wlen = (size_t)w2;

    /* 0. with `warm`, a first request leaves a pooled connection, so the
     * fuzzed answer comes on a reused one (where a failure before any byte
     * of it makes the request go again, on a new connection, once) */
    int cur = -1; /* the connection the fuzzed answer goes on */
    if (warm) {
        accept_left = 1;
        run_ok(&x2, bound);
        cur = 0;
        vc[0].want = want1;
        vc[0].wlen = (size_t)w1;
        vc[0].got = 0;
    }

    /* 1. the fuzzed answer, to every connection that carries the request */
    x1 = (struct xfer){.oracle = &oracle,
                       .cancel_mode = (data[0] >> 2) & 7,
                       .pause_mode = (data[0] >> 5) & 3,
                       .k = data[1] & 7,
                       .head_method = m == 1,
                       .must_ok = must_accept(&oracle, m == 1),
                       .clen = -1,
                       .fields = oracle.fields};
    accept_left = 1;
    accept_want = want1;
    accept_wlen = (size_t)w1;
    size_t wpos = 0;
    int quiet = 0, paused_turns = 0, repeat_turns = 0;
    fin_sent = false;
    start(&x1, methods[m], targets[t], body, blen);
    for (long n = 0;; n++) {
        check(n < bound);
        activity = 0;
        if (x1.cancel_mode == 7 && n == x1.k && !x1.done && !x1.cancelled)
            cancel_outside(&x1);
        turn();
        /* resumed, the held-back bytes come by themselves, promptly */
        repeat_turns = x1.repeat && !x1.cancelled ? repeat_turns + 1 : 0;
        check(repeat_turns <= 2);
        if (nvc - 1 > cur) { /* a new connection: the answer starts over */
            cur = nvc - 1;
            wpos = 0;
            fin_sent = false;
        }
        struct vconn *c = cur >= 0 ? &vc[cur] : NULL;
        bool ended = x1.done || x1.cancelled;
        if (x1.paused && !ended && paused_turns++ >= x1.k % 2) {
            paused_turns = 0;
            if (x1.cancel_mode == 7)
                cancel_outside(&x1);
            else
                resume_outside(&x1);
            ended = x1.cancelled;
        }
        if (c && c->fd >= 0 && c->got == c->wlen) {
            if (wpos < rlen) {
                /* whole up to `cut`, then MAX_PIECES pieces, then the rest */
                size_t len = rlen - wpos;
                if (piece && wpos < cut)
                    len = cut - wpos < len ? cut - wpos : len;
                else if (piece && wpos < cut + MAX_PIECES * piece && piece < len)
                    len = piece;
                if (!vconn_send(c, resp + wpos, len, &wpos))
                    wpos = rlen; /* the client closed: it reads no more */
            }
            if (wpos == rlen && !c->fin && (!keep || (!ended && quiet >= QUIET_TURNS))) {
                vconn_fin(c);
                fin_sent = true;
            }
        }
        quiet = activity ? 0 : quiet + 1;
        /* ended, and the vendor's side settled: closed by the client or,
         * kept open (or never asked: cancelled first), left long enough
         * for the client to drop it */
        if (ended && (c == NULL ? quiet >= 1
                                : c->fd < 0 || (quiet >= QUIET_TURNS &&
                                                (c->got < c->wlen || (!c->fin && wpos == rlen)))))
            break;
    }

    /* 2. a well-behaved answer, on the pooled connection or (one) new one */
    accept_left = 1;
    accept_want = want2;
    accept_wlen = (size_t)w2;
    if (cur >= 0 && vc[cur].fd >= 0) {
        struct vconn *c = &vc[cur];
        c->want = want2;
        c->wlen = (size_t)w2;
        c->got = 0;
        c->answered = false;
        /* the vendor drops it (its idle timeout) as the request picks it,
         * before the client could notice: a request none of whose bytes
         * were written goes again, once, on a new connection; one that was
         * written fails and is never sent again (issue 13) */
        if (drop && (x1.k & 4))
            vconn_fin(c);
        else if (drop)
            vconn_close(c);
    }
    if (drop) {
        x2 = (struct xfer){.clen = -1};
        start(&x2, "GET", "/ok", NULL, 0);
        for (long n = 0; !x2.done; n++) {
            check(n < bound);
            turn();
        }
        check(x2.err == KB_OK || x2.err == KB_E_UPSTREAM_ERROR);
        if (x2.err != KB_OK) {
            check(x2.sent); /* failed only because it had been written */
            accept_left = 1;
            run_ok(&x2, bound); /* the pool is not poisoned */
        }
    } else {
        run_ok(&x2, bound);
    }

    /* 3. the vendor closes what is left; the client must drop it too */
    accept_left = 0;
    for (long n = 0;; n++) {
        check(n < bound);
        bool open = false;
        for (int i = 0; i < nvc; i++) {
            if (vc[i].fd >= 0)
                vconn_fin(&vc[i]);
            open |= vc[i].fd >= 0;
        }
        if (!open)
            break;
        turn();
    }
    /* nothing opened unasked, nothing leaked */
    check(accept4(lfd, NULL, NULL, SOCK_CLOEXEC) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    int fd = dup(2);
    close(fd);
    if (fd != fd_mark) { /* libFuzzer's symbolizer pipes come and go */
        check(sockets() == nsockets);
        fd_mark = fd;
    }
    return 0;
}
