/*
 * upstream.h - the HTTP client the proxy forwards with: libcurl's multi
 * interface driven by the worker's event loop (one kb_upstream per worker,
 * so connection pools are per thread and nothing here takes a lock).
 *
 * A transfer reports, in order: each header of the final (non-1xx) header
 * block, the status once that block ends, body chunks as they arrive, and
 * done exactly once. Callbacks run on the worker thread.
 */
#ifndef KB_PROXY_UPSTREAM_H
#define KB_PROXY_UPSTREAM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct event_base;
struct curl_slist;
struct kb_upstream;
struct kb_upstream_req;

struct kb_upstream_opts {
    int64_t connect_timeout_ms; /* TCP + TLS handshake */
    int64_t idle_timeout_ms;    /* no byte from the vendor for this long: fail */
    const char *ca_file;        /* NULL: system store */
    long max_connections;       /* pooled connections kept per worker */
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
     * or KB_E_UPSTREAM_ERROR. The request is freed after this returns. */
    void (*on_done)(void *arg, enum kb_err err);
};

KB_MUSTCHECK enum kb_err upstream_new(struct event_base *base, const struct kb_upstream_opts *o,
                                      struct kb_upstream **out, char **errmsg);
/* Cancels every transfer still running (no callbacks) and frees. */
void upstream_free(struct kb_upstream *u);

/*
 * Starts a transfer. `headers` (owned by the request from now on) are sent
 * as given; `body` (borrowed, must live until done) is sent when body_len >
 * 0 or the method is POST. HEAD reads no body. Never follows redirects,
 * verifies TLS, forwards the URL's path bytes as they are.
 */
struct kb_upstream_req *upstream_start(struct kb_upstream *u, const char *method, const char *url,
                                       struct curl_slist *headers, const char *body,
                                       size_t body_len, const struct kb_upstream_ops *ops,
                                       void *arg);

/* Resumes a transfer paused by on_body returning false. */
void upstream_resume(struct kb_upstream_req *r);

/* Stops a transfer: no callback fires after this returns; frees it. */
void upstream_cancel(struct kb_upstream_req *r);

#endif
