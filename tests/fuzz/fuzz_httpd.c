/*
 * fuzz_httpd.c - libFuzzer target for the HTTP/1.1 server (src/net/httpd*.c):
 * its parser, chunked decoding, pipelining and reply framing, through a
 * real server on loopback.
 *
 * Each input is everything one client sends on one connection, followed
 * by FIN. Properties, beyond no crash and no sanitizer report:
 *  (a) the server always ends the connection: once the client has sent
 *      FIN, no input leaves it waiting (bounded loop turns, no timer);
 *  (b) every request the handler sees is consistent: an accepted one has a
 *      target without space or control bytes, header names that are
 *      tokens, values without CR, LF or NUL, and a body within the limit;
 *      a refused one carries a 4xx code;
 *  (c) the open-connection count returns to zero.
 * The handler answers each request, whole or streamed, so the reply paths
 * run too. Any violation aborts, which libFuzzer reports as a crash.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/httpd.h"

#define MAX_BODY 4096
#define MAX_TURNS 100000

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct kb_httpd *server;
static _Atomic int64_t conns;
static struct sockaddr_in addr;

static void check(bool ok)
{
    if (!ok)
        abort();
}

static bool token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

static void handler(struct kb_hreq *r, void *arg)
{
    (void)arg;
    const char *msg;
    enum kb_err err = hreq_error(r, &msg);
    size_t blen;
    const char *body = hreq_body(r, &blen);
    check(blen <= MAX_BODY && (blen == 0) == (body == NULL));
    if (err != KB_OK) {
        check(kb_err_status(err) >= 400 && kb_err_status(err) < 500);
        hreq_reply(r, kb_err_status(err), NULL, 0);
        return;
    }
    const char *t = hreq_target(r);
    check(t != NULL && *t != '\0');
    for (; *t; t++)
        check((unsigned char)*t > 0x20 && (unsigned char)*t != 0x7f);
    check(token(hreq_method_name(r)));
    const struct kb_hdr *h;
    size_t nh = hreq_headers(r, &h);
    for (size_t i = 0; i < nh; i++) {
        check(token(h[i].name));
        check(strpbrk(h[i].value, "\r\n") == NULL);
    }
    hreq_add_header_z(r, "X-Fuzz", "1");
    if (blen % 2) {
        hreq_reply_start(r, 200);
        hreq_reply_chunk(r, body, blen);
        hreq_reply_end(r);
    } else {
        hreq_reply(r, 200, body, blen);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    base = event_base_new();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    check(fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 64) == 0 &&
          getsockname(fd, (struct sockaddr *)&addr, &len) == 0);
    static const _Atomic int64_t header_bytes = 1024, headers = 16, body_bytes = MAX_BODY,
                                 max_conns = 16;
    struct kb_httpd_opts o = {
        .max_header_bytes = &header_bytes,
        .max_headers = &headers,
        .max_body_bytes = &body_bytes,
        .timeout_ms = 60000,
        .max_conns = &max_conns,
        .conns = &conns,
        .on_request = handler,
    };
    server = httpd_new(base, fd, &o);
    check(server != NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    check(fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    bool fin = false, done = false;
    char sink[65536];
    for (int turn = 0; turn < MAX_TURNS && !done; turn++) {
        if (sent < size) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                sent = size; /* the server closed on us: that is an ending too */
        }
        if (sent == size && !fin) {
            shutdown(fd, SHUT_WR);
            fin = true;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        for (;;) {
            ssize_t n = recv(fd, sink, sizeof sink, 0);
            if (n > 0)
                continue;
            if (n == 0 || errno != EAGAIN)
                done = fin; /* EOF or reset: the server ended it */
            break;
        }
    }
    check(done);
    close(fd);
    /* a connection that lingers sees our FIN on its next read */
    for (int turn = 0; turn < MAX_TURNS && atomic_load(&conns) != 0; turn++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    check(atomic_load(&conns) == 0);
    return 0;
}
