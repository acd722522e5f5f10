/*
 * webhook.c - the delivery thread's blocking HTTP/1.1 client: one POST per
 * connection (Connection: close), http:// or https:// (OpenSSL, the
 * system's CAs or [upstream] ca_file, the host name verified), a deadline
 * on the connect and on each read or write. Only the status line of the
 * answer is read (at most 4 KiB): the receiver's body means nothing here.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "alerts/alerts.h"
#include "core/alloc.h"

struct url {
    bool tls;
    char host[256];
    char port[8];
    char path[1024];
};

/* scheme://host[:port][/path]; [v6] hosts in brackets. */
static bool parse_url(const char *u, struct url *out)
{
    const char *p;
    if (strncmp(u, "http://", 7) == 0)
        out->tls = false, p = u + 7;
    else if (strncmp(u, "https://", 8) == 0)
        out->tls = true, p = u + 8;
    else
        return false;
    size_t hl;
    const char *after;
    if (*p == '[') {
        const char *e = strchr(p, ']');
        if (!e)
            return false;
        hl = (size_t)(e - p - 1);
        if (hl == 0 || hl >= sizeof out->host)
            return false;
        memcpy(out->host, p + 1, hl);
        after = e + 1;
    } else {
        hl = strcspn(p, ":/?#");
        if (hl == 0 || hl >= sizeof out->host)
            return false;
        memcpy(out->host, p, hl);
        after = p + hl;
    }
    out->host[hl] = '\0';
    snprintf(out->port, sizeof out->port, "%s", out->tls ? "443" : "80");
    if (*after == ':') {
        size_t pl = strspn(after + 1, "0123456789");
        if (pl == 0 || pl > 5)
            return false;
        memcpy(out->port, after + 1, pl);
        out->port[pl] = '\0';
        after += 1 + pl;
    }
    if (*after && *after != '/')
        return false;
    if (strlen(*after ? after : "/") >= sizeof out->path)
        return false;
    snprintf(out->path, sizeof out->path, "%s", *after ? after : "/");
    out->path[strcspn(out->path, "#")] = '\0';
    return true;
}

static enum kb_err dial(const struct url *u, int timeout_ms, int *fd_out, char **errmsg)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc != 0) {
        kb_set_errmsg(errmsg, "cannot resolve %s: %s", u->host, gai_strerror(rc));
        return KB_E_UPSTREAM_UNREACHABLE;
    }
    enum kb_err err = KB_E_UPSTREAM_UNREACHABLE;
    int fd = -1, last = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int n = poll(&pfd, 1, timeout_ms), soerr = 0;
            socklen_t sl = sizeof soerr;
            if (n == 0) {
                last = ETIMEDOUT;
                err = KB_E_UPSTREAM_TIMEOUT;
            } else if (n < 0) {
                last = errno;
            } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
                last = soerr ? soerr : errno;
            } else {
                r = 0;
            }
        } else if (r != 0) {
            last = errno;
        }
        if (r == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        kb_set_errmsg(errmsg, "cannot connect to %s:%s: %s", u->host, u->port,
                      last ? strerror(last) : "no address");
        return err;
    }
    /* non-blocking from here: every wait is a poll against the attempt's
     * one deadline (io), so a receiver that drips its answer a byte at a
     * time cannot stretch an attempt past its timeout */
    *fd_out = fd;
    return KB_OK;
}

struct conn {
    int fd;
    SSL_CTX *ctx;        /* owned; NULL for http */
    SSL *ssl;            /* owned */
    int64_t deadline_ms; /* monotonic: the whole attempt ends by then */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for `events`, or the deadline: false (errno
 * EAGAIN) when the deadline passed. */
static bool wait_ready(struct conn *c, short events)
{
    for (;;) {
        int64_t left = c->deadline_ms - mono_ms();
        if (left <= 0) {
            errno = EAGAIN;
            return false;
        }
        struct pollfd p = {.fd = c->fd, .events = events};
        int r = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

/* One read or write (some bytes), waiting at most until the deadline: the
 * bytes moved, or -1 (errno EAGAIN when the deadline passed). */
static long io(struct conn *c, bool wr, void *buf, size_t n)
{
    for (;;) {
        short want;
        if (c->ssl) {
            size_t done = 0;
            int ok = wr ? SSL_write_ex(c->ssl, buf, n, &done) : SSL_read_ex(c->ssl, buf, n, &done);
            if (ok)
                return (long)done;
            int e = SSL_get_error(c->ssl, ok);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                return -1;
            want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        } else {
            long got = wr ? (long)send(c->fd, buf, n, MSG_NOSIGNAL) : (long)recv(c->fd, buf, n, 0);
            if (got >= 0)
                return got;
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return -1;
            want = wr ? POLLOUT : POLLIN;
        }
        if (!wait_ready(c, want))
            return -1;
    }
}

static enum kb_err tls_start(struct conn *c, const struct url *u, const char *ca_file,
                             char **errmsg)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    if ((ca_file ? SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(c->ctx)) != 1)
        goto fail;
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 ||
        SSL_set_tlsext_host_name(c->ssl, u->host) != 1 || SSL_set1_host(c->ssl, u->host) != 1)
        goto fail;
    for (;;) { /* the handshake, within the attempt's deadline too */
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return KB_OK;
        int e = SSL_get_error(c->ssl, r);
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
            !wait_ready(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
            break;
    }
fail:;
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    kb_set_errmsg(errmsg, "TLS with %s failed: %s", u->host, e ? buf : "handshake failed");
    return KB_E_UPSTREAM_ERROR;
}

enum kb_err alerts_http_post(const char *url, const char *ca_file, const char *hdrs,
                             const char *body, int timeout_ms, struct alerts_cancel *cancel,
                             int *status, char **errmsg)
{
    struct url u;
    memset(&u, 0, sizeof u);
    if (!parse_url(url, &u)) {
        kb_set_errmsg(errmsg, "not an http:// or https:// URL");
        return KB_E_CONFIG;
    }
    struct conn c = {.fd = -1, .deadline_ms = mono_ms() + timeout_ms};
    enum kb_err err = dial(&u, timeout_ms, &c.fd, errmsg);
    if (err != KB_OK)
        return err;
    if (cancel) {
        pthread_mutex_lock(&cancel->mu);
        bool stop = cancel->stop;
        if (!stop)
            cancel->fd = c.fd;
        pthread_mutex_unlock(&cancel->mu);
        if (stop) {
            close(c.fd);
            kb_set_errmsg(errmsg, "stopped");
            return KB_E_SHUTTING_DOWN;
        }
    }
    if (u.tls && (err = tls_start(&c, &u, ca_file, errmsg)) != KB_OK)
        goto out;
    size_t blen = strlen(body);
    bool v6 = strchr(u.host, ':') != NULL;
    bool dflt = strcmp(u.port, u.tls ? "443" : "80") == 0;
    char *req = kb_asprintf("POST %s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n"
                            "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                            "Connection: close\r\nUser-Agent: keybrake-alerts\r\n%s\r\n%s",
                            u.path, v6 ? "[" : "", u.host, v6 ? "]" : "", dflt ? "" : ":",
                            dflt ? "" : u.port, blen, hdrs ? hdrs : "", body);
    size_t len = strlen(req), off = 0;
    while (off < len) {
        long n = io(&c, true, req + off, len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    free(req);
    if (off < len) {
        kb_set_errmsg(errmsg, "sending to %s:%s failed: %s", u.host, u.port,
                      errno == EAGAIN ? "timed out" : strerror(errno));
        err = errno == EAGAIN ? KB_E_UPSTREAM_TIMEOUT : KB_E_UPSTREAM_ERROR;
        goto out;
    }
    /* the status line: "HTTP/1.x NNN" */
    char head[4096];
    size_t got = 0;
    while (got < sizeof head - 1 && !memchr(head, '\n', got)) {
        long n = io(&c, false, head + got, sizeof head - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    head[got] = '\0';
    int code = 0;
    if (got >= 12 && strncmp(head, "HTTP/1.", 7) == 0 && head[8] == ' ' &&
        sscanf(head + 9, "%3d", &code) == 1 && code >= 100 && code <= 599) {
        *status = code;
        err = KB_OK;
    } else if (got == 0 && errno == EAGAIN) {
        kb_set_errmsg(errmsg, "no answer from %s:%s within %d ms", u.host, u.port, timeout_ms);
        err = KB_E_UPSTREAM_TIMEOUT;
    } else {
        kb_set_errmsg(errmsg, "%s:%s did not answer with HTTP", u.host, u.port);
        err = KB_E_UPSTREAM_ERROR;
    }
out:
    if (c.ssl) {
        if (err == KB_OK)
            SSL_shutdown(c.ssl);
        SSL_free(c.ssl);
    }
    SSL_CTX_free(c.ctx);
    if (cancel)
        pthread_mutex_lock(&cancel->mu);
    close(c.fd);
    if (cancel) {
        cancel->fd = -1;
        if (cancel->stop && err != KB_OK) { /* cut by alerts_stop, not the receiver's fault */
            free(errmsg ? *errmsg : NULL);
            if (errmsg)
                *errmsg = NULL;
            kb_set_errmsg(errmsg, "cut by a shutdown");
            err = KB_E_SHUTTING_DOWN;
        }
        pthread_mutex_unlock(&cancel->mu);
    }
    return err;
}
