/*
 * fuzz_cli_http.c - libFuzzer target for the CLI's reading of HTTP
 * answers (src/cli/http_client.c: cli_http_parse). Whatever listens at
 * KEYBRAKE_ADDR chooses these bytes.
 *
 * Byte 0's low bit says whether the peer closed after the rest. Checked:
 * the body never exceeds its cap or the input; a MORE asks for more bytes
 * than there are; a verdict on a prefix cut at *need is never DONE with a
 * different body than the whole input gives (what recv hands over in
 * pieces reads as it would in one).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/http_client.h"
#include "core/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool eof = data[0] & 1;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    struct kb_buf body = KB_BUF_INIT, part = KB_BUF_INIT;
    int status = 0, st2 = 0;
    size_t need = 0, need2 = 0;
    const char *why = NULL;
    enum cli_http_parse r = cli_http_parse(in, n, eof, &status, &body, &need, &why);
    if (r == CLI_HTTP_DONE) {
        if (status < 200 || status > 599 || body.len > CLI_HTTP_MAX_BODY || body.len > n ||
            !body.data || body.data[body.len] != '\0')
            abort();
        /* every prefix short of the whole answer is MORE or gives the same answer */
        for (size_t cut = 0; cut < n; cut += 1 + cut / 4) {
            enum cli_http_parse p = cli_http_parse(in, cut, false, &st2, &part, &need2, &why);
            if (p == CLI_HTTP_BAD)
                abort(); /* a prefix of a good answer is never bad */
            if (p == CLI_HTTP_MORE && need2 <= cut)
                abort();
            if (p == CLI_HTTP_DONE &&
                (st2 != status || part.len != body.len || memcmp(part.data, body.data, body.len)))
                abort();
        }
    } else if (r == CLI_HTTP_MORE) {
        if (eof || need <= n)
            abort();
    } else if (r != CLI_HTTP_BAD || !why) {
        abort();
    }
    buf_cleanup(&body);
    buf_cleanup(&part);
    return 0;
}
