/*
 * test_cli_http.c - the CLI's reading of the daemon's HTTP answers
 * (src/cli/http_client.c: cli_http_parse), as a table of byte strings and
 * verdicts, and every answer fed a byte at a time the way recv may hand
 * it over.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli/http_client.h"
#include "core/buf.h"

struct row {
    const char *in;
    bool eof;
    enum cli_http_parse want;
    int status;
    const char *body;
};

static const struct row rows[] = {
    /* Content-Length */
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", false, CLI_HTTP_DONE, 200, "{}"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", false, CLI_HTTP_MORE, 0, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", true, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false, CLI_HTTP_DONE, 200, ""},
    {"HTTP/1.1 401 Unauthorized\nContent-Length: 3\n\nabc", false, CLI_HTTP_DONE, 401, "abc"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", false, CLI_HTTP_DONE,
     200, "ab"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", false, CLI_HTTP_BAD, 0,
     NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
    /* chunked */
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", false,
     CLI_HTTP_DONE, 200, "{}"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\na\r\n2\r\nbc\r\n0\r\nT: "
     "v\r\n\r\n",
     false, CLI_HTTP_DONE, 200, "abc"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", false, CLI_HTTP_MORE, 0,
     NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx0\r\n\r\n", false, CLI_HTTP_BAD,
     0, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n", false,
     CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFF\r\n", false,
     CLI_HTTP_BAD, 0, NULL},
    /* no framing: the body ends at close */
    {"HTTP/1.0 200 OK\r\n\r\nhello", false, CLI_HTTP_MORE, 0, NULL},
    {"HTTP/1.0 200 OK\r\n\r\nhello", true, CLI_HTTP_DONE, 200, "hello"},
    /* no body whatever the fields say */
    {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false, CLI_HTTP_DONE, 204, ""},
    /* interim answers are skipped; 101 is not one */
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", false,
     CLI_HTTP_DONE, 201, "x"},
    {"HTTP/1.1 101 Switching\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
    /* the head */
    {"HTTP/1.1 200 OK\r\nContent-Len", false, CLI_HTTP_MORE, 0, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Len", true, CLI_HTTP_BAD, 0, NULL},
    {"", true, CLI_HTTP_BAD, 0, NULL},
    {"SSH-2.0-OpenSSH_9.6\r\n", false, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/2 200\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
    {"HTTP/1.1 200 OK\r\nX: a\x01z\r\n\r\n", false, CLI_HTTP_BAD, 0, NULL},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        struct kb_buf body = KB_BUF_INIT;
        int status = 0;
        size_t need = 0;
        const char *why = NULL;
        enum cli_http_parse got =
            cli_http_parse(r->in, strlen(r->in), r->eof, &status, &body, &need, &why);
        if (got != r->want)
            print_error("row %zu: %s\n", i, r->in);
        assert_int_equal(got, r->want);
        if (got == CLI_HTTP_DONE) {
            assert_int_equal(status, r->status);
            assert_non_null(body.data);
            assert_int_equal(body.len, strlen(r->body));
            assert_memory_equal(body.data, r->body, body.len);
        } else if (got == CLI_HTTP_MORE) {
            assert_true(need > strlen(r->in));
        } else {
            assert_non_null(why);
        }
        buf_cleanup(&body);
    }
}

/* Every DONE row read the way recv may deliver it: byte by byte, parsing
 * only when *need is reached, ends DONE with the same body. */
static void test_byte_by_byte(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        if (r->want != CLI_HTTP_DONE)
            continue;
        size_t n = strlen(r->in), need = 1, len = 0;
        struct kb_buf body = KB_BUF_INIT;
        int status = 0;
        const char *why = NULL;
        enum cli_http_parse got = CLI_HTTP_MORE;
        while (got == CLI_HTTP_MORE) {
            if (len < n)
                len++;
            bool eof = len == n && r->eof;
            if (len < need && !eof && len < n)
                continue;
            got = cli_http_parse(r->in, len, eof, &status, &body, &need, &why);
            if (got == CLI_HTTP_MORE && len == n && !r->eof)
                break; /* a row complete only at its end */
        }
        if (got != CLI_HTTP_DONE)
            print_error("row %zu: %s (%s)\n", i, r->in, why ? why : "more");
        assert_int_equal(got, CLI_HTTP_DONE);
        assert_int_equal(status, r->status);
        assert_memory_equal(body.data, r->body, strlen(r->body));
        buf_cleanup(&body);
    }
}

/* A large body read in one chunk and the limits around it. */
static void test_limits(void **state)
{
    (void)state;
    struct kb_buf in = KB_BUF_INIT, body = KB_BUF_INIT;
    int status;
    size_t need;
    const char *why;
    buf_printf(&in, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", CLI_HTTP_MAX_BODY);
    size_t head = in.len;
    buf_reserve(&in, CLI_HTTP_MAX_BODY);
    memset(in.data + in.len, 'a', CLI_HTTP_MAX_BODY);
    in.len += CLI_HTTP_MAX_BODY;
    assert_int_equal(cli_http_parse(in.data, head + 10, false, &status, &body, &need, &why),
                     CLI_HTTP_MORE);
    assert_int_equal(need, head + CLI_HTTP_MAX_BODY); /* no re-reading before it is all there */
    assert_int_equal(cli_http_parse(in.data, in.len, false, &status, &body, &need, &why),
                     CLI_HTTP_DONE);
    assert_int_equal(body.len, CLI_HTTP_MAX_BODY);
    buf_reset(&in);
    buf_printf(&in, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", CLI_HTTP_MAX_BODY + 1);
    assert_int_equal(cli_http_parse(in.data, in.len, false, &status, &body, &need, &why),
                     CLI_HTTP_BAD);
    /* a head that never ends */
    buf_reset(&in);
    buf_puts(&in, "HTTP/1.1 200 OK\r\n");
    while (in.len <= CLI_HTTP_MAX_HEAD)
        buf_puts(&in,
                 "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    assert_int_equal(cli_http_parse(in.data, in.len, false, &status, &body, &need, &why),
                     CLI_HTTP_BAD);
    buf_cleanup(&in);
    buf_cleanup(&body);
}

/* A chunk-size line of exactly the longest length read a byte at a time:
 * while its CR is in and its LF not yet, it is not "overlong" (it was, once,
 * where the whole answer read in one piece was fine). */
static void test_longest_chunk_line(void **state)
{
    (void)state;
    struct kb_buf in = KB_BUF_INIT, body = KB_BUF_INIT;
    buf_puts(&in, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    size_t line = in.len - 2; /* where "1;" starts */
    while (in.len - line < 1024)
        buf_putc(&in, 'x');
    size_t cr = in.len;
    buf_puts(&in, "\r\na\r\n0\r\n\r\n");
    int status;
    size_t need;
    const char *why;
    assert_int_equal(cli_http_parse(in.data, cr + 1, false, &status, &body, &need, &why),
                     CLI_HTTP_MORE);
    assert_int_equal(cli_http_parse(in.data, in.len, false, &status, &body, &need, &why),
                     CLI_HTTP_DONE);
    assert_string_equal(body.data, "a");
    buf_cleanup(&in);
    buf_cleanup(&body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_longest_chunk_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
