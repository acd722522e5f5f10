/*
 * http_client.h - the command line's small blocking HTTP/1.1 client for
 * the admin API: one request per connection (Connection: close), a
 * connect and a read timeout, and answers parsed with the grammar the
 * server and the upstream client share (net/h1.h). The answer's framing
 * (Content-Length, chunked, or until close) is read by cli_http_parse, a
 * pure function over the bytes received so far, fuzzed on its own
 * (tests/fuzz/fuzz_cli_http.c). Sizes are bounded: a daemon (or whatever
 * listens at the address) cannot make the CLI hold more than
 * CLI_HTTP_MAX_HEAD + CLI_HTTP_MAX_BODY bytes. Main thread only.
 */
#ifndef KB_CLI_HTTP_CLIENT_H
#define KB_CLI_HTTP_CLIENT_H
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"

#define CLI_HTTP_MAX_HEAD (64 * 1024)       /* status line and header fields */
#define CLI_HTTP_MAX_BODY (8 * 1024 * 1024) /* the body, once de-chunked */
#define CLI_HTTP_MAX_FIELDS 100             /* header field lines */

enum cli_http_parse {
    CLI_HTTP_DONE = 0, /* a whole answer: *status and body are set */
    CLI_HTTP_MORE = 1, /* needs at least *need bytes in all before trying again */
    CLI_HTTP_BAD = 2,  /* not an HTTP/1.x answer, or over a size limit: *why */
};

/*
 * Reads one answer from buf[0, n). eof: the peer closed after these bytes
 * (an answer without Content-Length or chunking ends there; any other
 * incomplete answer is then BAD). Interim 1xx answers are skipped. On
 * DONE, *status is 200..599 and body holds the de-chunked body (reset
 * first; NUL-terminated). On MORE, *need (> n) is how many bytes the next
 * attempt needs. *why is a static string. Pure; any thread.
 */
enum cli_http_parse cli_http_parse(const char *buf, size_t n, bool eof, int *status,
                                   struct kb_buf *body, size_t *need, const char **why);

struct cli_http_resp {
    int status;         /* 200..599 */
    struct kb_buf body; /* owned; the de-chunked body */
};

/* Where the admin API is. */
struct cli_http_target {
    const char *host, *port; /* borrowed */
    bool tls;                /* https:// */
    const char *ca_file;     /* borrowed; PEM CAs to trust for TLS, NULL: the system store */
};

/*
 * Sends METHOD path to host:port (over TLS when to->tls, the daemon's
 * certificate verified against to->ca_file or the system store and its
 * name or IP address matched to host; a certificate that fails is
 * KB_E_UPSTREAM_ERROR with *errmsg saying why; a CA file that cannot be
 * read, KB_E_CONFIG) with Authorization: Bearer token (when
 * token is not NULL) and body (JSON; NULL: none), and reads the answer into
 * *out (caller's; release with buf_cleanup(&out->body)). connect_ms bounds
 * the connect, io_ms each wait for the socket. Errors: KB_E_UPSTREAM_UNREACHABLE
 * (cannot resolve or connect), KB_E_UPSTREAM_TIMEOUT, KB_E_UPSTREAM_ERROR
 * (reset, or not an HTTP answer), KB_E_CLIENT_CLOSED (a signal interrupted
 * a wait: the caller decides whether to stop). *errmsg says what and where.
 */
KB_MUSTCHECK enum kb_err cli_http_request(const struct cli_http_target *to, const char *token,
                                          const char *method, const char *path, const char *body,
                                          int connect_ms, int io_ms, struct cli_http_resp *out,
                                          char **errmsg);

#endif
