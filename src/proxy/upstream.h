/*
 * upstream.h - the HTTP/1.1 client the proxy forwards with: one kb_upstream
 * per worker and event loop, so its connection pools are per thread and
 * nothing here takes a lock.
 *
 * It speaks only what the proxy needs: one request per connection at a
 * time (no pipelining), keep-alive pools per origin, TLS through OpenSSL
 * with the peer verified against the system store (or `ca_file`), SNI, and
 * the host name checked; names resolved by libevent's evdns off the loop's
 * critical path (from /etc/hosts and /etc/resolv.conf as they were at
 * start; a new connection more than 60 s after the last lookup looks the
 * name up again, and keeps the old addresses when a lookup fails). It
 * never follows redirects and sends the URL's path bytes as they are.
 *
 * A transfer reports, in order: each header of the final (non-1xx) header
 * block, the status once that block ends, body chunks as they arrive
 * (de-chunked), and done exactly once. The vendor's framing headers are
 * not passed on as sent: Transfer-Encoding never, Content-Length once, as
 * the block's last header, and only when it frames the body (or would
 * have, for HEAD, 204 and 304); differing values fail the transfer.
 * Callbacks run on the worker thread, never from inside upstream_start()
 * or upstream_send().
 */
#ifndef KB_PROXY_UPSTREAM_H
#define KB_PROXY_UPSTREAM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct event_base;
struct kb_buf;
struct kb_upstream;
struct kb_upstream_base;
struct kb_upstream_req;

struct kb_upstream_opts {
    int64_t connect_timeout_ms; /* name lookup excluded: TCP + TLS handshake */
    int64_t idle_timeout_ms;    /* no byte from the vendor for this long: fail */
    const char *ca_file;        /* NULL: system store */
    long max_connections;       /* idle connections kept per worker */
};

struct kb_upstream_ops {
    /* One response header of the final block (not NUL-terminated). */
    void (*on_header)(void *arg, const char *name, size_t nlen, const char *value, size_t vlen);
    /* The final status; the header block is complete. */
    void (*on_head)(void *arg, int status);
    /* Body bytes. Return false to refuse them for now: the transfer pauses
     * and the same bytes come again after upstream_resume(). */
    bool (*on_body)(void *arg, const char *data, size_t len);
    /* The transfer ended: KB_OK, KB_E_UPSTREAM_UNREACHABLE, KB_E_UPSTREAM_TIMEOUT
     * or KB_E_UPSTREAM_ERROR. `sent` is true when any byte of the request
     * was written to the vendor (so a failed transfer may still have been
     * acted on). The request is already freed when this runs: neither
     * cancel nor resume it from here. */
    void (*on_done)(void *arg, enum kb_err err, bool sent);
};

/* Fails (with a message) when the TLS context cannot be set up, e.g. an
 * unreadable ca_file. */
KB_MUSTCHECK enum kb_err upstream_new(struct event_base *base, const struct kb_upstream_opts *o,
                                      struct kb_upstream **out, char **errmsg);
/* Cancels every transfer still running (no callbacks) and frees. */
void upstream_free(struct kb_upstream *u);

/*
 * Starts a transfer. `headers` holds the request's header lines, each
 * "Name: value\r\n"; its bytes are taken (it is left empty). Host and
 * Content-Length are added here. `body` (borrowed, must live until done) is
 * sent when body_len > 0 or the method is POST. A pooled connection that
 * fails before any byte of the request was written to it (the vendor
 * closed it while idle) is replaced once by a new connection; a request
 * with bytes written is never sent again.
 */
struct kb_upstream_req *upstream_start(struct kb_upstream *u, const char *method, const char *url,
                                       struct kb_buf *headers, const char *body, size_t body_len,
                                       const struct kb_upstream_ops *ops, void *arg);

/*
 * A base URL ("http(s)://host[:port][/prefix]", no user info) parsed once,
 * for upstream_send(); owned by `u`. NULL when the URL is unusable.
 */
const struct kb_upstream_base *upstream_base(struct kb_upstream *u, const char *base_url);

/* upstream_start() to the base URL followed by `path` (path_len bytes) and
 * `query` (NULL or from its '?'), without building or parsing a URL: the
 * proxy's per-request form. */
struct kb_upstream_req *upstream_send(struct kb_upstream *u, const struct kb_upstream_base *b,
                                      const char *method, const char *path, size_t path_len,
                                      const char *query, struct kb_buf *headers, const char *body,
                                      size_t body_len, const struct kb_upstream_ops *ops,
                                      void *arg);

/* Resumes a transfer paused by on_body returning false. */
void upstream_resume(struct kb_upstream_req *r);

/* Stops a transfer: no callback fires after this returns; frees it. */
void upstream_cancel(struct kb_upstream_req *r);

/* True once any byte of the request was written to the vendor's connection
 * (the vendor may have read it and acted on it): the `sent` of on_done, for
 * a caller about to cancel. */
bool upstream_wrote(const struct kb_upstream_req *r);

#endif
