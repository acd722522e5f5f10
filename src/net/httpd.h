/*
 * httpd.h - Keybrake's HTTP/1.1 server: accept, parse, frame, reply.
 *
 * It replaces libevent 2.1's evhttp, which left three things out of reach:
 * a cap on open connections (no per-connection hook), an over-size body
 * answered in the one error shape (evhttp sends its own HTML 413), and the
 * per-request event toggling the profile blamed. The parser is strict on
 * purpose: anything whose framing could be read two ways (two
 * Content-Lengths, Content-Length with Transfer-Encoding, a header name
 * with a space, obs-fold, a bare CR, ...) is handed to the handler as a
 * request carrying an error, and the connection closes after the answer,
 * so nothing buffered behind an ambiguous request is ever read as a
 * request of its own.
 *
 * One struct kb_httpd per thread and event loop; everything here runs on
 * that loop's thread. A request's bytes (target, headers, body) stay valid
 * until its final reply; the handler must not touch the request after it.
 */
#ifndef KB_NET_HTTPD_H
#define KB_NET_HTTPD_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/hdr.h"

struct event_base;
struct kb_httpd;
struct kb_hreq;

enum kb_method {
    KB_M_GET = 0,     /* GET */
    KB_M_POST = 1,    /* POST */
    KB_M_HEAD = 2,    /* HEAD */
    KB_M_PUT = 3,     /* PUT */
    KB_M_DELETE = 4,  /* DELETE */
    KB_M_OPTIONS = 5, /* OPTIONS */
    KB_M_PATCH = 6,   /* PATCH */
    KB_M_OTHER = 7,   /* anything else, or no method could be read */
};

/* Counters of open connections per client address: an address is hashed
 * into one of these, so two addresses may share a count (never more
 * lenient than the limit). */
#define HTTPD_SOURCE_SLOTS 4096

typedef void (*kb_hreq_cb)(struct kb_hreq *req, void *arg);

/* A request head waiting for its gate's verdict (see kb_hreq_head_cb). */
struct kb_hgate;

/* Called when the head of a request that carries a body has been parsed,
 * before any of the body is read: KB_OK reads it; anything else answers
 * the request with that error (through on_request, as a refused request)
 * without reading or buffering the body, and closes the connection after.
 * A gate that cannot decide at once (it reads a key off the loop) calls
 * httpd_gate_hold(g, ...) and returns anything: nothing more is read on
 * the connection until it calls httpd_gate_done(g, verdict). `target` and
 * `hdrs` are valid only during the call. */
typedef enum kb_err (*kb_hreq_head_cb)(struct kb_hgate *g, const char *target,
                                       const struct kb_hdr *hdrs, size_t nh, void *arg);

/* The connection of a held head closed first: `g` is gone (the gate owner
 * must not call httpd_gate_done). */
typedef void (*kb_hgate_cancel_cb)(void *arg);

/* From inside on_head: the verdict comes later. cancel(arg) runs instead
 * if the connection closes first (a timeout, the server stopping); called
 * again later with cancel NULL it forgets the callback. Loop thread. */
void httpd_gate_hold(struct kb_hgate *g, kb_hgate_cancel_cb cancel, void *arg);

/* The verdict on a held head, as on_head's return value would have been.
 * Loop thread, outside on_head. */
void httpd_gate_done(struct kb_hgate *g, enum kb_err verdict);

/* The limits are borrowed atomics, read where they are used: a reload
 * that changes them holds from the next request or connection on. A NULL
 * limit is no limit. */
struct kb_httpd_opts {
    const _Atomic int64_t *max_header_bytes; /* request line + headers (431 headers_too_large) */
    const _Atomic int64_t *max_headers;      /* header lines (431 headers_too_large) */
    const _Atomic int64_t *max_body_bytes;   /* decoded body, chunked included (413) */
    int64_t timeout_ms;                      /* whole-request read deadline; write progress */
    const _Atomic int64_t *max_conns;        /* open connections over all servers sharing `conns` */
    _Atomic int64_t *conns;                  /* borrowed; the shared count of open connections */
    const _Atomic int64_t *max_per_source;   /* open connections from one address; 0: no limit */
    _Atomic int32_t *per_source;             /* borrowed; HTTPD_SOURCE_SLOTS counters shared by the
                                                servers of one listener (addresses hashed in) */
    _Atomic int64_t *buffered;           /* borrowed; request body bytes held in memory by all the
                                            servers sharing it (NULL: not counted) */
    const _Atomic int64_t *max_buffered; /* budget for *buffered: a body that would pass it is
                                            refused 503 overloaded before it is read */
    bool evict_untrusted;                /* when a limit is reached, a new connection closes the
                                            oldest one that never carried a trusted request
                                            (hreq_trust, or a head on_head let through) and takes
                                            its place; only for a listener served by this one
                                            server, whose on_head passes only valid credentials */
    int listener;                        /* enum kb_listener, for the connection metrics */
    struct kb_tls *tls;                  /* borrowed; NULL: plain HTTP (net/tls.h) */
    int64_t handshake_timeout_ms;        /* TLS: deadline for the handshake (0: timeout_ms) */
    kb_hreq_cb on_request;               /* every request, refused ones included */
    kb_hreq_head_cb on_head;             /* may be NULL; a body's gate (see kb_hreq_head_cb) */
    void *arg;                           /* passed to on_request and on_head */
};

/*
 * Serves connections accepted on `listen_fd` (bound and listening; taken:
 * closed by httpd_free or httpd_stop_accepting). A connection over
 * opts->max_conns or opts->max_per_source is answered 503
 * too_many_connections and closed at once (unless it may evict one).
 * A request body is charged to opts->buffered from the moment it is
 * admitted (its Content-Length at once; a chunked body as its buffer
 * grows) until the request is freed, whichever way it ends.
 * Returns NULL when the loop cannot watch the socket (the fd is closed).
 */
struct kb_httpd *httpd_new(struct event_base *base, int listen_fd,
                           const struct kb_httpd_opts *opts);

/* Closes the listening socket; open connections are served on. */
void httpd_stop_accepting(struct kb_httpd *h);

/* Closes every connection and frees it with its request, calling no
 * callback: the handlers must have let go of their requests first. NULL is
 * a no-op. */
void httpd_free(struct kb_httpd *h);

/* ---- the request, for its handler ---- */

enum kb_method hreq_method(const struct kb_hreq *r);
/* The method as received ("GET"), or "" when none could be read. */
const char *hreq_method_name(const struct kb_hreq *r);
/* The request target as received (origin-form "/p?q" normally), or NULL
 * when the request line could not be read. */
const char *hreq_target(const struct kb_hreq *r);
/* The client's address as text ("127.0.0.1", "::1"), "" when unknown. */
const char *hreq_peer(const struct kb_hreq *r);
/* KB_OK, or why the request was refused by the parser (bad_request,
 * headers_too_large, body_too_large); *msg (static) says which rule. The
 * handler answers such a request with an error; the connection closes. */
enum kb_err hreq_error(const struct kb_hreq *r, const char **msg);
/* The header lines in order, duplicates kept; *out borrowed. */
size_t hreq_headers(const struct kb_hreq *r, const struct kb_hdr **out);
/* The first header named `name` (case-insensitive), or NULL. */
const char *hreq_header(const struct kb_hreq *r, const char *name);
/* The decoded body (chunked framing removed); NULL with len 0 if none. */
const char *hreq_body(const struct kb_hreq *r, size_t *len);

/* The request carried valid credentials: its connection is never evicted
 * to make room (see evict_untrusted). */
void hreq_trust(struct kb_hreq *r);

/* ---- replying ---- */

/* Adds a response header (before the reply starts). A name or value with
 * CR, LF or NUL is dropped (no response splitting). */
void hreq_add_header(struct kb_hreq *r, const char *name, size_t nlen, const char *value,
                     size_t vlen);
/* The same, for C strings. */
void hreq_add_header_z(struct kb_hreq *r, const char *name, const char *value);
/* Drops every header added so far (before the reply starts). */
void hreq_reset_headers(struct kb_hreq *r);
/* The connection closes once this request's answer is written. */
void hreq_close_after(struct kb_hreq *r);

/* Called once after the handler's final reply: when it is written out, or
 * when it cannot be because the client has left. */
void hreq_set_complete_cb(struct kb_hreq *r, kb_hreq_cb cb, void *arg);
/* Called if the client leaves before the handler's final reply; the
 * request is freed when cb returns (cb NULL: it stays, detached, until the
 * handler replies, and the reply just frees it). */
void hreq_set_close_cb(struct kb_hreq *r, kb_hreq_cb cb, void *arg);

/* A whole answer: status, the added headers, Content-Length, the body. */
void hreq_reply(struct kb_hreq *r, int status, const void *body, size_t len);

/* A streamed answer: the head now (chunked on HTTP/1.1 unless a
 * Content-Length header was added), then chunks, then the end. */
void hreq_reply_start(struct kb_hreq *r, int status);
void hreq_reply_chunk(struct kb_hreq *r, const void *data, size_t len);
void hreq_reply_end(struct kb_hreq *r);
/* Bytes of the answer not yet taken by the kernel. */
size_t hreq_pending(const struct kb_hreq *r);
/* Called each time the pending bytes drain to zero (backpressure). */
void hreq_set_drain_cb(struct kb_hreq *r, kb_hreq_cb cb, void *arg);

/* Ends the answer where it stands: what is queued goes to the kernel
 * (best effort), the connection closes, the request is freed; no callback
 * runs. For an answer that cannot be completed (upstream cut, revoked). */
void hreq_abort(struct kb_hreq *r);

/* True when `tok` is one of the comma-separated tokens of a header value
 * such as Connection's (case-insensitive, blanks ignored). */
bool http_token_in_list(const char *value, const char *tok);

/* The method as text for a known method, or NULL for KB_M_OTHER. */
const char *http_method_text(enum kb_method m);

#endif
