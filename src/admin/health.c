/* health.c - /healthz (the process answers) and /readyz (the store answers). */
#include <jansson.h>

#include "admin/admin_int.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"

void admin__healthz(struct kb_admin *a, struct kb_hreq *req)
{
    (void)a;
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

void admin__readyz(struct kb_admin *a, struct kb_hreq *req)
{
    if (store_ping(a->store) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
}
