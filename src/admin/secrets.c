/*
 * secrets.c - a tenant's own vendor secrets (docs/tenants.md).
 */
#include "admin/admin_int.h"
#include "net/http.h"
#include "net/httpd.h"

void admin__tenant_secrets(struct kb_admin *a, struct kb_hreq *req, const char *id,
                           const char *rest)
{
    (void)a, (void)id, (void)rest;
    http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL);
}
