/*
 * test_tls.c - the listeners' TLS module (src/net/tls.c) without sockets
 * to a server: each test makes a self-signed certificate in memory, writes
 * it to a temp dir, and runs a server SSL from tls_conn_new against an
 * OpenSSL client over a socketpair, both non-blocking, stepping each in
 * turn. Covered: loading and refusing pairs (the messages name the file),
 * TLS 1.1 refused and 1.2/1.3 accepted, ALPN (http/1.1 picked, h2 alone
 * not), plain HTTP recognised, reads and writes through the helpers, and a
 * reload that fails keeping the context in force while one that succeeds
 * serves the new certificate to new connections only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/tls.h"

static char dir[] = "/tmp/kb-test-tls-XXXXXX";
static char cert1[300], key1[300], cert2[300], key2[300], junk[300];

/* A self-signed P-256 certificate with `serial`, as PEM files. */
static void make_pair(const char *cert, const char *key, long serial)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    assert_non_null(pk);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE *f = fopen(cert, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key, "w");
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    snprintf(cert1, sizeof cert1, "%s/c1.pem", dir);
    snprintf(key1, sizeof key1, "%s/k1.pem", dir);
    snprintf(cert2, sizeof cert2, "%s/c2.pem", dir);
    snprintf(key2, sizeof key2, "%s/k2.pem", dir);
    snprintf(junk, sizeof junk, "%s/junk.pem", dir);
    make_pair(cert1, key1, 101);
    make_pair(cert2, key2, 202);
    FILE *f = fopen(junk, "w");
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *files[] = {cert1, key1, cert2, key2, junk};
    for (size_t i = 0; i < 5; i++)
        unlink(files[i]);
    rmdir(dir);
    return 0;
}

/* A server SSL from t and a client SSL over a socketpair. */
struct pair {
    int fds[2];
    SSL *srv, *cli;
    SSL_CTX *cctx;
    int cli_reason; /* the client's last OpenSSL error reason after the handshake, 0: none */
};

static void pair_open(struct pair *p, struct kb_tls *t, int max_version, const char *alpn,
                      size_t alpn_len)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fds), 0);
    p->srv = tls_conn_new(t, p->fds[0]);
    assert_non_null(p->srv);
    p->cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(p->cctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(p->cctx, max_version);
    SSL_CTX_set_security_level(p->cctx, 0); /* TLS 1.1 at all, on the client side */
    SSL_CTX_set_cipher_list(p->cctx, "DEFAULT@SECLEVEL=0");
    p->cli = SSL_new(p->cctx);
    SSL_set_fd(p->cli, p->fds[1]);
    SSL_set_connect_state(p->cli);
    if (alpn)
        SSL_set_alpn_protos(p->cli, (const unsigned char *)alpn, (unsigned)alpn_len);
}

static void pair_close(struct pair *p)
{
    tls_conn_free(p->srv, 0);
    SSL_free(p->cli);
    SSL_CTX_free(p->cctx);
    close(p->fds[0]);
    close(p->fds[1]);
}

/* Steps both sides until the server's handshake ends; its last answer. */
static enum kb_tls_hs handshake(struct pair *p)
{
    enum kb_tls_hs hs = TLS_HS_WANT_READ;
    for (int i = 0; i < 100; i++) {
        (void)SSL_do_handshake(p->cli);
        hs = tls_conn_handshake(p->srv);
        if (hs == TLS_HS_DONE || hs == TLS_HS_FAILED || hs == TLS_HS_PLAIN_HTTP)
            break;
    }
    ERR_clear_error();
    (void)SSL_do_handshake(p->cli); /* the client reads the server's last flight */
    p->cli_reason = ERR_GET_REASON(ERR_peek_last_error());
    ERR_clear_error();
    return hs;
}

static long peer_serial(SSL *cli)
{
    X509 *x = SSL_get1_peer_certificate(cli);
    assert_non_null(x);
    long s = ASN1_INTEGER_get(X509_get0_serialNumber(x));
    X509_free(x);
    return s;
}

static void test_load_refusals(void **state)
{
    (void)state;
    struct kb_tls *t = NULL;
    char *em = NULL;
    char missing[320];
    snprintf(missing, sizeof missing, "%s/missing.pem", dir);
    assert_int_equal(tls_new(missing, key1, &t, &em), KB_E_CONFIG);
    assert_non_null(strstr(em, "missing.pem"));
    free(em);
    em = NULL;
    assert_int_equal(tls_new(junk, key1, &t, &em), KB_E_CONFIG);
    assert_non_null(strstr(em, "junk.pem"));
    free(em);
    em = NULL;
    assert_int_equal(tls_new(cert1, key2, &t, &em), KB_E_CONFIG);
    assert_non_null(strstr(em, "does not match"));
    free(em);
    em = NULL;
    assert_int_equal(tls_new(cert1, cert1, &t, &em), KB_E_CONFIG); /* a certificate as the key */
    assert_non_null(strstr(em, "c1.pem"));
    free(em);
    assert_null(t);
}

static void test_versions_and_alpn(void **state)
{
    (void)state;
    struct kb_tls *t = NULL;
    char *em = NULL;
    assert_int_equal(tls_new(cert1, key1, &t, &em), KB_OK);
    static const struct {
        int max;          /* the client's highest version */
        const char *alpn; /* what it offers, length-prefixed */
        size_t alpn_len;
        enum kb_tls_hs want;
        const char *chosen; /* ALPN the server picked, NULL: none */
    } rows[] = {
        {TLS1_1_VERSION, NULL, 0, TLS_HS_FAILED, NULL},
        {TLS1_2_VERSION, "\x02h2\x08http/1.1", 12, TLS_HS_DONE, "http/1.1"},
        {TLS1_3_VERSION, "\x08http/1.1", 9, TLS_HS_DONE, "http/1.1"},
        {TLS1_3_VERSION, "\x02h2", 3, TLS_HS_DONE, NULL},
        {TLS1_3_VERSION, NULL, 0, TLS_HS_DONE, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct pair p;
        pair_open(&p, t, rows[i].max, rows[i].alpn, rows[i].alpn_len);
        assert_int_equal(handshake(&p), rows[i].want);
        if (rows[i].max == TLS1_1_VERSION) /* refused for its version, not its ciphers */
            assert_int_equal(p.cli_reason, SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
        if (rows[i].want == TLS_HS_DONE) {
            const unsigned char *sel = NULL;
            unsigned len = 0;
            SSL_get0_alpn_selected(p.cli, &sel, &len);
            if (rows[i].chosen) {
                assert_int_equal(len, strlen(rows[i].chosen));
                assert_memory_equal(sel, rows[i].chosen, len);
            } else {
                assert_int_equal(len, 0);
            }
            assert_true(SSL_version(p.cli) >= TLS1_2_VERSION);
        }
        pair_close(&p);
    }
    tls_free(t);
}

static void test_read_write_and_plain_http(void **state)
{
    (void)state;
    struct kb_tls *t = NULL;
    char *em = NULL;
    assert_int_equal(tls_new(cert1, key1, &t, &em), KB_OK);
    struct pair p;
    pair_open(&p, t, TLS1_3_VERSION, NULL, 0);
    assert_int_equal(handshake(&p), TLS_HS_DONE);
    char buf[64];
    int ww = 9;
    errno = 0;
    assert_int_equal(tls_conn_read(p.srv, buf, sizeof buf, &ww), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(ww, 0);
    assert_int_equal(SSL_write(p.cli, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    assert_int_equal(tls_conn_read(p.srv, buf, 4, &ww), 4); /* part of a record */
    assert_true(tls_conn_pending(p.srv) == 14);
    assert_int_equal(tls_conn_read(p.srv, buf + 4, sizeof buf - 4, &ww), 14);
    assert_memory_equal(buf, "GET / HTTP/1.1\r\n\r\n", 18);
    int wr = 9;
    assert_int_equal(tls_conn_write(p.srv, "HTTP/1.1 200 OK\r\n", 17, &wr), 17);
    assert_int_equal(SSL_read(p.cli, buf, sizeof buf), 17);
    /* the client closes: close_notify reads as the end */
    SSL_shutdown(p.cli);
    assert_int_equal(tls_conn_read(p.srv, buf, sizeof buf, &ww), 0);
    pair_close(&p);

    /* plain HTTP where a ClientHello belongs */
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    SSL *s = tls_conn_new(t, fds[0]);
    assert_int_equal(write(fds[1], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 34), 34);
    assert_int_equal(tls_conn_handshake(s), TLS_HS_PLAIN_HTTP);
    tls_conn_free(s, 0);
    /* and bytes that are neither */
    s = tls_conn_new(t, fds[0]);
    assert_int_equal(write(fds[1], "\x00\x01\x02\x03garbage-garbage", 19), 19);
    assert_int_equal(tls_conn_handshake(s), TLS_HS_FAILED);
    tls_conn_free(s, 0);
    close(fds[0]);
    close(fds[1]);
    tls_free(t);
}

/* Copies file `from` over `to`. */
static void copy(const char *from, const char *to)
{
    FILE *a = fopen(from, "r"), *b = fopen(to, "w");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        fwrite(buf, 1, n, b);
    fclose(a);
    fclose(b);
}

static void test_reload(void **state)
{
    (void)state;
    char lc[320], lk[320];
    snprintf(lc, sizeof lc, "%s/live.pem", dir);
    snprintf(lk, sizeof lk, "%s/live.key", dir);
    copy(cert1, lc);
    copy(key1, lk);
    struct kb_tls *t = NULL;
    char *em = NULL;
    assert_int_equal(tls_new(lc, lk, &t, &em), KB_OK);
    assert_string_equal(tls_cert_path(t), lc);
    struct pair old;
    pair_open(&old, t, TLS1_3_VERSION, NULL, 0);
    assert_int_equal(handshake(&old), TLS_HS_DONE);
    assert_int_equal(peer_serial(old.cli), 101);

    /* a half-replaced pair: refused, the old one serves on */
    copy(cert2, lc);
    assert_int_equal(tls_reload(t, &em), KB_E_CONFIG);
    assert_non_null(strstr(em, "does not match"));
    free(em);
    em = NULL;
    struct pair p;
    pair_open(&p, t, TLS1_3_VERSION, NULL, 0);
    assert_int_equal(handshake(&p), TLS_HS_DONE);
    assert_int_equal(peer_serial(p.cli), 101);
    pair_close(&p);

    /* the whole pair: new connections get it; the open one keeps working */
    copy(key2, lk);
    assert_int_equal(tls_reload(t, &em), KB_OK);
    pair_open(&p, t, TLS1_3_VERSION, NULL, 0);
    assert_int_equal(handshake(&p), TLS_HS_DONE);
    assert_int_equal(peer_serial(p.cli), 202);
    pair_close(&p);
    char buf[8];
    int ww;
    assert_int_equal(SSL_write(old.cli, "ping", 4), 4);
    assert_int_equal(tls_conn_read(old.srv, buf, sizeof buf, &ww), 4);
    pair_close(&old);
    tls_free(t);
    unlink(lc);
    unlink(lk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_refusals),
        cmocka_unit_test(test_versions_and_alpn),
        cmocka_unit_test(test_read_write_and_plain_http),
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
