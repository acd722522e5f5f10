/* metrics.c - GET /metrics on the admin listener, Prometheus text format. */
#include <event2/buffer.h>
#include <event2/http.h>

#include "admin/admin_int.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "net/http.h"
#include "store/store.h"

void admin__metrics(struct kb_admin *a, struct evhttp_request *req)
{
    int64_t active = 0;
    if (store_key_count_active(a->store, clock_now(), &active) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    struct kb_buf b = KB_BUF_INIT;
    metrics_render(&b, active);
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, b.data, b.len);
    buf_cleanup(&b);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, NULL, out);
    evbuffer_free(out);
}
