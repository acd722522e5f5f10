/*
 * tls.c - the listeners' TLS contexts and per-connection I/O (see tls.h).
 *
 * A reload builds a whole new SSL_CTX and swaps it in under a mutex; an
 * SSL object holds its own reference to the context it was made from, so
 * the old one lives exactly as long as the last connection made under it.
 * The mutex is taken once per accepted connection (SSL_new), never per
 * request.
 *
 * OpenSSL keeps its errors in a per-thread queue; every path here that
 * may leave one clears it, so that the upstream client running on the
 * same worker thread never reads our stale error as its own.
 */
#include "net/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

struct kb_tls {
    pthread_mutex_t mu; /* guards ctx */
    SSL_CTX *ctx;       /* owned (one reference); the context in force */
    char *cert, *key;   /* owned; the files, re-read by a reload */
};

/* Sessions a context remembers for TLS 1.2 resumption by id. */
#define TLS_SESSION_CACHE 4096

/* Mozilla's "intermediate" TLS 1.2 suites without finite-field DHE:
 * forward secrecy and AEAD only. TLS 1.3 keeps OpenSSL's defaults. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* OpenSSL's first queued error as text, the queue cleared. */
static const char *ssl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, size);
    else
        snprintf(buf, size, "%s", strerror(errno ? errno : EINVAL));
    ERR_clear_error();
    return buf;
}

/* ALPN: http/1.1 when the client offers it; otherwise no protocol (the
 * client may still speak HTTP/1.1, or close). */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "\x08http/1.1";
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, h11 + 1, 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static enum kb_err ctx_build(const char *cert, const char *key, SSL_CTX **out, char **errmsg)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        kb_set_errmsg(errmsg, "cannot create a TLS context: %s", ssl_reason(why, sizeof why));
        return KB_E_CONFIG;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* the write buffer may move between retries (it is an evbuffer), a
     * write may take part of what it is given, and idle connections give
     * their record buffers back */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"keybrake", 8);
    /* TLS 1.2 resumption by session id keeps sessions in the context: a
     * cap of our own rather than OpenSSL's 20480 (TLS 1.3 and 1.2 tickets
     * keep nothing) */
    SSL_CTX_sess_set_cache_size(ctx, TLS_SESSION_CACHE);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        kb_set_errmsg(errmsg, "cannot set the TLS ciphers: %s", ssl_reason(why, sizeof why));
        goto bad;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        kb_set_errmsg(errmsg, "cannot load the TLS certificate %s: %s", cert,
                      ssl_reason(why, sizeof why));
        goto bad;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            kb_set_errmsg(errmsg, "the TLS key %s does not match the certificate %s", key, cert);
        else
            kb_set_errmsg(errmsg, "cannot load the TLS key %s: %s", key,
                          ssl_reason(why, sizeof why));
        ERR_clear_error();
        goto bad;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        kb_set_errmsg(errmsg, "the TLS key %s does not match the certificate %s: %s", key, cert,
                      ssl_reason(why, sizeof why));
        goto bad;
    }
    *out = ctx;
    return KB_OK;
bad:
    SSL_CTX_free(ctx);
    return KB_E_CONFIG;
}

enum kb_err tls_new(const char *cert, const char *key, struct kb_tls **out, char **errmsg)
{
    SSL_CTX *ctx = NULL;
    enum kb_err err = ctx_build(cert, key, &ctx, errmsg);
    if (err != KB_OK)
        return err;
    struct kb_tls *t = kb_calloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    t->ctx = ctx;
    t->cert = kb_strdup(cert);
    t->key = kb_strdup(key);
    *out = t;
    return KB_OK;
}

enum kb_err tls_reload(struct kb_tls *t, char **errmsg)
{
    SSL_CTX *ctx = NULL;
    enum kb_err err = ctx_build(t->cert, t->key, &ctx, errmsg);
    if (err != KB_OK)
        return err;
    pthread_mutex_lock(&t->mu);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->mu);
    SSL_CTX_free(old); /* connections made under it hold their own references */
    return KB_OK;
}

const char *tls_cert_path(const struct kb_tls *t)
{
    return t->cert;
}

void tls_free(struct kb_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->mu);
    free(t->cert);
    free(t->key);
    free(t);
}

SSL *tls_conn_new(struct kb_tls *t, int fd)
{
    pthread_mutex_lock(&t->mu);
    SSL *ssl = SSL_new(t->ctx);
    pthread_mutex_unlock(&t->mu);
    if (ssl && SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ssl = NULL;
    }
    if (ssl)
        SSL_set_accept_state(ssl);
    ERR_clear_error();
    return ssl;
}

void tls_conn_free(SSL *ssl, int clean)
{
    if (!ssl)
        return;
    if (clean && SSL_is_init_finished(ssl))
        (void)SSL_shutdown(ssl); /* close_notify if the socket takes it now */
    SSL_free(ssl);
    ERR_clear_error();
}

enum kb_tls_hs tls_conn_handshake(SSL *ssl)
{
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return TLS_HS_DONE;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return TLS_HS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return TLS_HS_WANT_WRITE;
    unsigned long le = ERR_peek_last_error();
    ERR_clear_error();
    if (e == SSL_ERROR_SSL && ERR_GET_LIB(le) == ERR_LIB_SSL &&
        ERR_GET_REASON(le) == SSL_R_HTTP_REQUEST)
        return TLS_HS_PLAIN_HTTP;
    return TLS_HS_FAILED;
}

ssize_t tls_conn_read(SSL *ssl, void *buf, size_t len, int *want_write)
{
    *want_write = 0;
    int n = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want_write = e == SSL_ERROR_WANT_WRITE;
        errno = EAGAIN;
        return -1;
    }
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0; /* close_notify, or a bare FIN (SSL_OP_IGNORE_UNEXPECTED_EOF) */
    errno = ECONNRESET;
    return -1;
}

ssize_t tls_conn_write(SSL *ssl, const void *buf, size_t len, int *want_read)
{
    *want_read = 0;
    int n = SSL_write(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        *want_read = e == SSL_ERROR_WANT_READ;
        errno = EAGAIN;
        return -1;
    }
    ERR_clear_error();
    errno = EPIPE;
    return -1;
}

int tls_conn_pending(const SSL *ssl)
{
    return SSL_pending(ssl);
}
