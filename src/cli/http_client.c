/*
 * http_client.c - the CLI's blocking HTTP/1.1 client (see http_client.h).
 * The parser starts over on each attempt from the first byte: answers are
 * small, and *need keeps a large body from being re-read on every recv.
 */
#include "cli/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "net/h1.h"

#ifndef KB_VERSION
#define KB_VERSION "0.1.0"
#endif

#define MAX_CHUNK_LINE 1024 /* a chunk-size line with its extensions, or a trailer */

/* The line at buf[off, n): its length without LF or CRLF in *len, the next
 * line's start in *next. false: no LF yet. */
static bool next_line(const char *buf, size_t n, size_t off, size_t *len, size_t *next)
{
    const char *lf = memchr(buf + off, '\n', n - off);
    if (!lf)
        return false;
    size_t e = (size_t)(lf - buf);
    *next = e + 1;
    if (e > off && buf[e - 1] == '\r')
        e--;
    *len = e - off;
    return true;
}

static enum cli_http_parse bad(const char **why, const char *w)
{
    *why = w;
    return CLI_HTTP_BAD;
}

static enum cli_http_parse more(size_t *need, size_t n, size_t at_least, bool eof, const char **why)
{
    if (eof)
        return bad(why, "the connection closed before the end of the answer");
    *need = at_least > n ? at_least : n + 1;
    return CLI_HTTP_MORE;
}

static bool name_is(const char *l, size_t nlen, const char *name)
{
    return nlen == strlen(name) && strncasecmp(l, name, nlen) == 0;
}

struct head {
    int status;
    int64_t clen; /* -1: none */
    bool chunked;
};

/* One status line and its fields from *off; *off moves past the blank line. */
static enum cli_http_parse read_head(const char *buf, size_t n, bool eof, size_t *off,
                                     struct head *h, size_t *need, const char **why)
{
    size_t len, next, at = *off;
    int minor = 0, fields = 0;
    h->clen = -1;
    h->chunked = false;
    if (!next_line(buf, n, at, &len, &next))
        goto partial;
    if (!h1_status_line(buf + at, len, &minor, &h->status))
        return bad(why, "the answer does not start with an HTTP/1.x status line");
    for (at = next;; at = next) {
        if (!next_line(buf, n, at, &len, &next))
            goto partial;
        if (next > CLI_HTTP_MAX_HEAD)
            return bad(why, "the answer's header is too large");
        if (len == 0)
            break;
        if (++fields > CLI_HTTP_MAX_FIELDS)
            return bad(why, "the answer has too many header fields");
        size_t nlen, voff, vlen;
        if (h1_field_line(buf + at, len, &nlen, &voff, &vlen) != H1_FIELD_OK)
            return bad(why, "the answer has a malformed header field");
        const char *v = buf + at + voff;
        if (name_is(buf + at, nlen, "content-length")) {
            int64_t c;
            if (!h1_content_length(v, vlen, &c) || (h->clen >= 0 && c != h->clen))
                return bad(why, "the answer has an invalid Content-Length");
            h->clen = c;
        } else if (name_is(buf + at, nlen, "transfer-encoding")) {
            if (h->chunked || vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
                return bad(why, "the answer has an unsupported Transfer-Encoding");
            h->chunked = true;
        }
    }
    *off = next;
    return CLI_HTTP_DONE;
partial:
    if (n - *off > CLI_HTTP_MAX_HEAD)
        return bad(why, "the answer's header is too large");
    return more(need, n, n + 1, eof, why);
}

/* A chunked body from off. */
static enum cli_http_parse read_chunked(const char *buf, size_t n, bool eof, size_t off,
                                        struct kb_buf *body, size_t *need, const char **why)
{
    size_t len, next;
    for (;;) {
        if (!next_line(buf, n, off, &len, &next)) {
            if (n - off > MAX_CHUNK_LINE + 1) /* + its CR */
                return bad(why, "the answer has an overlong chunk-size line");
            return more(need, n, n + 1, eof, why);
        }
        int64_t size;
        if (len > MAX_CHUNK_LINE || !h1_chunk_size(buf + off, len, &size))
            return bad(why, "the answer has a malformed chunk size");
        off = next;
        if (size == 0)
            break;
        if ((uint64_t)size > CLI_HTTP_MAX_BODY - body->len)
            return bad(why, "the answer's body is too large");
        size_t end = off + (size_t)size; /* the data, then LF or CRLF */
        if (n < end + 1)
            return more(need, n, end + 2, eof, why);
        size_t after;
        if (buf[end] == '\n') {
            after = end + 1;
        } else if (buf[end] == '\r') {
            if (n < end + 2)
                return more(need, n, end + 2, eof, why);
            if (buf[end + 1] != '\n')
                return bad(why, "the answer has a chunk without its CRLF");
            after = end + 2;
        } else {
            return bad(why, "the answer has a chunk longer than its size");
        }
        buf_append(body, buf + off, (size_t)size);
        off = after;
    }
    /* trailer fields, unread, up to the blank line */
    for (int i = 0;; i++) {
        if (!next_line(buf, n, off, &len, &next)) {
            if (n - off > MAX_CHUNK_LINE + 1) /* + its CR */
                return bad(why, "the answer has an overlong trailer");
            return more(need, n, n + 1, eof, why);
        }
        if (len == 0)
            return CLI_HTTP_DONE;
        if (len > MAX_CHUNK_LINE || i >= CLI_HTTP_MAX_FIELDS)
            return bad(why, "the answer has too many or too long trailers");
        off = next;
    }
}

enum cli_http_parse cli_http_parse(const char *buf, size_t n, bool eof, int *status,
                                   struct kb_buf *body, size_t *need, const char **why)
{
    size_t off = 0;
    struct head h;
    buf_reset(body);
    *why = NULL;
    for (;;) {
        enum cli_http_parse r = read_head(buf, n, eof, &off, &h, need, why);
        if (r != CLI_HTTP_DONE)
            return r;
        if (h.status >= 200)
            break;
        if (h.status == 101)
            return bad(why, "the server switched protocols");
        /* an interim answer (100 Continue, 103 Early Hints): the real one follows */
    }
    enum cli_http_parse r = CLI_HTTP_DONE;
    if (h.chunked && h.clen >= 0)
        return bad(why, "the answer has both Content-Length and Transfer-Encoding");
    if (h.status == 204 || h.status == 304) {
        /* no body, whatever the fields say */
    } else if (h.chunked) {
        r = read_chunked(buf, n, eof, off, body, need, why);
    } else if (h.clen >= 0) {
        if (h.clen > CLI_HTTP_MAX_BODY)
            return bad(why, "the answer's body is too large");
        if (n - off < (size_t)h.clen)
            return more(need, n, off + (size_t)h.clen, eof, why);
        buf_append(body, buf + off, (size_t)h.clen);
    } else {
        /* read until the server closes */
        if (n - off > CLI_HTTP_MAX_BODY)
            return bad(why, "the answer's body is too large");
        if (!eof) {
            *need = n + 1;
            return CLI_HTTP_MORE;
        }
        buf_append(body, buf + off, n - off);
    }
    if (r == CLI_HTTP_DONE) {
        buf_reserve(body, 0); /* NUL-terminated even when empty */
        body->data[body->len] = '\0';
        *status = h.status;
    } else {
        buf_reset(body);
    }
    return r;
}

/* ---- the socket side ---- */

/* Waits for events on fd; KB_OK, KB_E_UPSTREAM_TIMEOUT or, on a signal,
 * KB_E_CLIENT_CLOSED. */
static enum kb_err wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, ms);
    if (r > 0)
        return KB_OK;
    if (r == 0)
        return KB_E_UPSTREAM_TIMEOUT;
    return errno == EINTR ? KB_E_CLIENT_CLOSED : KB_E_UPSTREAM_ERROR;
}

static enum kb_err connect_to(const char *host, const char *port, int ms, int *out, char **errmsg)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        kb_set_errmsg(errmsg, "cannot resolve %s: %s", host, gai_strerror(gai));
        return KB_E_UPSTREAM_UNREACHABLE;
    }
    enum kb_err err = KB_E_UPSTREAM_UNREACHABLE;
    int last = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            err = KB_OK;
        } else if (errno == EINPROGRESS) {
            err = wait_fd(fd, POLLOUT, ms);
            int so = 0;
            socklen_t sl = sizeof so;
            if (err == KB_OK && (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) != 0 || so)) {
                last = so ? so : errno;
                err = KB_E_UPSTREAM_UNREACHABLE;
            } else if (err == KB_E_UPSTREAM_TIMEOUT) {
                last = ETIMEDOUT;
                err = KB_E_UPSTREAM_UNREACHABLE;
            }
        } else {
            last = errno;
        }
        if (err == KB_OK) {
            *out = fd;
            break;
        }
        close(fd);
        if (err == KB_E_CLIENT_CLOSED)
            break;
    }
    freeaddrinfo(res);
    if (err == KB_E_UPSTREAM_UNREACHABLE)
        kb_set_errmsg(errmsg, "cannot connect to %s:%s: %s (is keybrake serve running?)", host,
                      port, strerror(last ? last : ECONNREFUSED));
    else if (err == KB_E_CLIENT_CLOSED)
        kb_set_errmsg(errmsg, "interrupted");
    return err;
}

/* The connection: a socket, and TLS over it for an https:// address. */
struct conn {
    int fd;
    SSL_CTX *ctx; /* owned; NULL: plain */
    SSL *ssl;     /* owned */
};

/* OpenSSL's last error as text, the queue cleared. */
static const char *ssl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, size);
    else
        snprintf(buf, size, "the connection closed during the TLS handshake");
    ERR_clear_error();
    return buf;
}

/*
 * TLS over c->fd to `host`: TLS 1.2 or later, the daemon's certificate
 * verified against ca_file (PEM; NULL: the system store) and matched to
 * host (a name, or an IP address literal). There is no way to skip the
 * verification.
 */
static enum kb_err tls_start(struct conn *c, const char *host, const char *port,
                             const char *ca_file, int ms, char **errmsg)
{
    char why[256];
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx) {
        kb_set_errmsg(errmsg, "cannot set up TLS: %s", ssl_reason(why, sizeof why));
        return KB_E_UPSTREAM_ERROR;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF); /* an answer may end at close */
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file ? SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL) != 1
                : SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
        kb_set_errmsg(errmsg, "cannot load the CA file %s (KEYBRAKE_CA_FILE): %s",
                      ca_file ? ca_file : "(system store)", ssl_reason(why, sizeof why));
        return KB_E_CONFIG;
    }
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        kb_set_errmsg(errmsg, "cannot set up TLS: %s", ssl_reason(why, sizeof why));
        return KB_E_UPSTREAM_ERROR;
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_set_alpn_protos(c->ssl, alpn, sizeof alpn - 1);
    unsigned char ip[16];
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, host);
        SSL_set1_host(c->ssl, host);
    }
    for (;;) {
        int rc = SSL_connect(c->ssl);
        if (rc == 1)
            return KB_OK;
        int e = SSL_get_error(c->ssl, rc);
        enum kb_err err = KB_OK;
        if (e == SSL_ERROR_WANT_READ)
            err = wait_fd(c->fd, POLLIN, ms);
        else if (e == SSL_ERROR_WANT_WRITE)
            err = wait_fd(c->fd, POLLOUT, ms);
        else
            break;
        if (err != KB_OK) {
            kb_set_errmsg(errmsg, "%s",
                          err == KB_E_CLIENT_CLOSED
                              ? "interrupted"
                              : "the daemon did not finish the TLS handshake in time");
            return err;
        }
    }
    long v = SSL_get_verify_result(c->ssl);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        ERR_clear_error();
        kb_set_errmsg(errmsg,
                      "the certificate of %s:%s does not name %s (connect by a name or address "
                      "it lists)",
                      host, port, host);
    } else if (v != X509_V_OK) {
        ERR_clear_error();
        kb_set_errmsg(errmsg,
                      "the certificate of %s:%s is not trusted: %s (KEYBRAKE_CA_FILE names the CA "
                      "file that signed it%s)",
                      host, port, X509_verify_cert_error_string(v),
                      ca_file ? "" : "; unset, the system store is used");
    } else {
        kb_set_errmsg(errmsg, "TLS handshake with %s:%s failed: %s", host, port,
                      ssl_reason(why, sizeof why));
    }
    return KB_E_UPSTREAM_ERROR;
}

static void conn_close(struct conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
}

/* As send(2) and recv(2) on the non-blocking socket, through TLS when the
 * connection has it; *events says what to wait for after EAGAIN. */
static ssize_t conn_io(struct conn *c, bool out, void *p, size_t n, short *events)
{
    *events = out ? POLLOUT : POLLIN;
    if (!c->ssl)
        return out ? send(c->fd, p, n, MSG_NOSIGNAL) : recv(c->fd, p, n, 0);
    int len = n > INT32_MAX ? INT32_MAX : (int)n;
    int r = out ? SSL_write(c->ssl, p, len) : SSL_read(c->ssl, p, len);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = ECONNRESET;
    return -1;
}

static enum kb_err send_all(struct conn *c, const char *p, size_t n, int ms)
{
    while (n > 0) {
        short ev;
        ssize_t w = conn_io(c, true, (void *)p, n, &ev);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            enum kb_err err = wait_fd(c->fd, ev, ms);
            if (err != KB_OK)
                return err;
        } else if (w < 0 && errno == EINTR) {
            return KB_E_CLIENT_CLOSED;
        } else {
            return KB_E_UPSTREAM_ERROR;
        }
    }
    return KB_OK;
}

/* Reads until the parser has a whole answer. */
static enum kb_err read_answer(struct conn *c, int ms, struct cli_http_resp *out, char **errmsg)
{
    struct kb_buf in = KB_BUF_INIT;
    enum kb_err err = KB_OK;
    size_t need = 1;
    const char *why = NULL;
    bool eof = false;
    for (;;) {
        if (in.len >= need || eof) {
            enum cli_http_parse r = cli_http_parse(in.data ? in.data : "", in.len, eof,
                                                   &out->status, &out->body, &need, &why);
            if (r == CLI_HTTP_DONE)
                break;
            if (r == CLI_HTTP_BAD) {
                kb_set_errmsg(errmsg, "%s", why);
                err = KB_E_UPSTREAM_ERROR;
                break;
            }
        }
        if (in.len > CLI_HTTP_MAX_HEAD + 2 * (size_t)CLI_HTTP_MAX_BODY) {
            kb_set_errmsg(errmsg, "the answer is too large");
            err = KB_E_UPSTREAM_ERROR;
            break;
        }
        buf_reserve(&in, 16384);
        short ev;
        ssize_t r = conn_io(c, false, in.data + in.len, in.cap - in.len - 1, &ev);
        if (r > 0) {
            in.len += (size_t)r;
            in.data[in.len] = '\0';
        } else if (r == 0) {
            eof = true;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if ((err = wait_fd(c->fd, ev, ms)) != KB_OK) {
                kb_set_errmsg(errmsg, err == KB_E_CLIENT_CLOSED
                                          ? "interrupted"
                                          : "the daemon did not answer in time");
                break;
            }
        } else {
            err = errno == EINTR ? KB_E_CLIENT_CLOSED : KB_E_UPSTREAM_ERROR;
            kb_set_errmsg(errmsg, "%s",
                          err == KB_E_CLIENT_CLOSED ? "interrupted" : "the connection was reset");
            break;
        }
    }
    buf_cleanup(&in);
    if (err != KB_OK)
        buf_cleanup(&out->body);
    return err;
}

enum kb_err cli_http_request(const struct cli_http_target *to, const char *token,
                             const char *method, const char *path, const char *body, int connect_ms,
                             int io_ms, struct cli_http_resp *out, char **errmsg)
{
    const char *host = to->host, *port = to->port;
    struct conn c = {.fd = -1};
    struct kb_buf req = KB_BUF_INIT;
    enum kb_err err = connect_to(host, port, connect_ms, &c.fd, errmsg);
    if (err != KB_OK)
        goto out;
    if (to->tls && (err = tls_start(&c, host, port, to->ca_file, io_ms, errmsg)) != KB_OK)
        goto out;
    /* an IPv6 literal goes in brackets in Host */
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s%s%s:%s\r\n", method, path,
               strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    if (token)
        buf_printf(&req, "Authorization: Bearer %s\r\n", token);
    buf_printf(&req,
               "User-Agent: keybrake-cli/%s\r\nAccept: application/json\r\n"
               "Connection: close\r\n",
               KB_VERSION);
    if (body)
        buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                   strlen(body), body);
    else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
        buf_puts(&req, "Content-Length: 0\r\n\r\n");
    else
        buf_puts(&req, "\r\n");
    err = send_all(&c, req.data, req.len, io_ms);
    if (err != KB_OK) {
        kb_set_errmsg(errmsg, "%s",
                      err == KB_E_CLIENT_CLOSED      ? "interrupted"
                      : err == KB_E_UPSTREAM_TIMEOUT ? "the daemon did not read the request in time"
                                                     : "the connection was reset while sending");
        goto out;
    }
    out->body = (struct kb_buf)KB_BUF_INIT;
    err = read_answer(&c, io_ms, out, errmsg);
out:
    /* the request held the admin token: wipe it before it goes back to malloc */
    if (req.data)
        explicit_bzero(req.data, req.cap);
    buf_cleanup(&req);
    conn_close(&c);
    return err;
}
