/*
 * alerts.c - GET /v1/alerts: the budget threshold alerts recorded and
 * their webhook deliveries (docs/budgets.md, "Usage and alerts").
 */
#include "admin/admin_int.h"
#include "net/http.h"
#include "net/httpd.h"

void admin__alerts(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query)
{
    (void)a, (void)query;
    http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL);
}
