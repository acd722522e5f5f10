/*
 * tls.h - TLS for the server's listeners: one certificate and key per
 * listener, loaded into an OpenSSL 3 context that a SIGHUP reload can
 * replace while connections made under the old one are served on.
 *
 * The context: TLS 1.2 at least, ECDHE with AES-GCM or ChaCha20-Poly1305
 * under TLS 1.2 (OpenSSL's defaults under TLS 1.3), no renegotiation, no
 * compression, ALPN "http/1.1" (a client offering other protocols only
 * gets none and speaks HTTP/1.1 or leaves). The server does its own socket
 * I/O (net/httpd.c): each connection gets one SSL object over its raw,
 * non-blocking fd, and the helpers below turn OpenSSL's answers into the
 * read(2)/write(2) conventions the connection code already follows.
 */
#ifndef KB_NET_TLS_H
#define KB_NET_TLS_H
#include <stddef.h>
#include <sys/types.h>

#include "core/err.h"

struct kb_tls;
typedef struct ssl_st SSL;

/*
 * Loads the PEM certificate chain `cert` (the leaf first) and the PEM
 * private key `key` into a new server context. KB_E_CONFIG, with *errmsg
 * naming the file and OpenSSL's reason, when either cannot be read or the
 * key does not match the certificate. *out is the caller's (tls_free).
 * Main thread.
 */
KB_MUSTCHECK enum kb_err tls_new(const char *cert, const char *key, struct kb_tls **out,
                                 char **errmsg);

/*
 * Reads the files named at tls_new again into a new context; connections
 * accepted from then on use it, those open keep theirs. On any error the
 * old context stays in force (KB_E_CONFIG, *errmsg). Any thread; in
 * practice the main thread on SIGHUP.
 */
KB_MUSTCHECK enum kb_err tls_reload(struct kb_tls *t, char **errmsg);

/* The certificate file in force (for log lines). */
const char *tls_cert_path(const struct kb_tls *t);

void tls_free(struct kb_tls *t);

/* A server-side SSL over `fd` from the context in force, or NULL (out of
 * memory). The caller frees it with tls_conn_free. Any thread. */
SSL *tls_conn_new(struct kb_tls *t, int fd);

/* Sends close_notify when the handshake completed (best effort, never
 * blocks) and frees. NULL is a no-op. */
void tls_conn_free(SSL *ssl, int clean);

enum kb_tls_hs {
    TLS_HS_DONE = 0,       /* the handshake completed */
    TLS_HS_WANT_READ = 1,  /* wait until the socket is readable */
    TLS_HS_WANT_WRITE = 2, /* wait until the socket is writable */
    TLS_HS_PLAIN_HTTP = 3, /* the client spoke plain HTTP to the TLS port */
    TLS_HS_FAILED = 4,     /* anything else: the connection is dead */
};

/* One step of the server handshake. */
enum kb_tls_hs tls_conn_handshake(SSL *ssl);

/*
 * As read(2) on a non-blocking socket: > 0 bytes, 0 at the end (a
 * close_notify, or a TCP FIN without one), -1 with errno EAGAIN (nothing
 * yet; *want_write set when OpenSSL needs the socket writable first) or
 * ECONNRESET (a TLS error: the connection is dead).
 */
ssize_t tls_conn_read(SSL *ssl, void *buf, size_t len, int *want_write);

/* As write(2): > 0 bytes taken, or -1 with errno EAGAIN (*want_read set
 * when OpenSSL needs the socket readable first) or EPIPE. After EAGAIN the
 * next call must pass the same bytes again, at least as many. */
ssize_t tls_conn_write(SSL *ssl, const void *buf, size_t len, int *want_read);

/* Decrypted bytes OpenSSL holds that no read has taken yet. */
int tls_conn_pending(const SSL *ssl);

#endif
