/* metrics.c - GET /metrics on the admin listener, Prometheus text format. */
#include "admin/admin_int.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"

void admin__metrics(struct kb_admin *a, struct kb_hreq *req)
{
    int64_t active = 0;
    if (store_key_count_active(a->store, clock_now(), &active) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    struct kb_buf b = KB_BUF_INIT;
    metrics_render(&b, active);
    hreq_add_header_z(req, "Content-Type", "text/plain; version=0.0.4");
    hreq_reply(req, 200, b.data, b.len);
    buf_cleanup(&b);
}
