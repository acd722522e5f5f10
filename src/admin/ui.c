/*
 * ui.c - the dashboard's static files on the admin listener (GET /ui/...).
 *
 * The files live in ui/ and are compiled into the binary (ui_assets.h), so
 * the dashboard needs nothing at run time: no files, no CDN. They hold no
 * data and need no token; every number the dashboard shows comes from the
 * authenticated admin API, called by the page's script with the token the
 * operator typed (kept in sessionStorage, sent as Authorization, never in a
 * URL or a cookie).
 *
 * A name is looked up byte for byte in the embedded table: nothing here
 * touches the file system, so "..", "%2e" or "/" in a name cannot reach
 * anything but a 404. Every answer under /ui/ (errors included) carries a
 * strict Content-Security-Policy: scripts, styles and fetches from this
 * origin only, no inline script or style, no framing.
 */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "admin/admin_int.h"
#include "admin/ui_assets.h"
#include "net/http.h"
#include "net/httpd.h"

#define UI_CSP                                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "                \
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
};

/* The Content-Type for a name, or NULL for an extension we do not serve. */
static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return NULL;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

static const struct kb_ui_asset *find(const char *name)
{
    for (size_t i = 0; i < kb_ui_asset_count; i++)
        if (strcmp(kb_ui_assets[i].name, name) == 0)
            return &kb_ui_assets[i];
    return NULL;
}

/* True when an If-None-Match value names etag (or is "*"). */
static bool etag_matches(const char *inm, const char *etag)
{
    size_t elen = strlen(etag);
    for (const char *p = inm; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        size_t t = n;
        while (t > 0 && (p[t - 1] == ' ' || p[t - 1] == '\t'))
            t--;
        const char *v = p;
        if (t >= 2 && strncmp(v, "W/", 2) == 0) /* weak comparison, as RFC 9110 says for GET */
            v += 2, t -= 2;
        if ((t == 1 && v[0] == '*') || (t == elen && memcmp(v, etag, elen) == 0))
            return true;
        p += n;
    }
    return false;
}

static void security_headers(struct kb_hreq *req)
{
    hreq_add_header_z(req, "Content-Security-Policy", UI_CSP);
    hreq_add_header_z(req, "X-Content-Type-Options", "nosniff");
    hreq_add_header_z(req, "Referrer-Policy", "no-referrer");
    hreq_add_header_z(req, "X-Frame-Options", "DENY");
    hreq_add_header_z(req, "Cross-Origin-Opener-Policy", "same-origin");
    hreq_add_header_z(req, "Cross-Origin-Resource-Policy", "same-origin");
}

void admin__ui(struct kb_admin *a, struct kb_hreq *req, const char *rest)
{
    (void)a;
    enum kb_method cmd = hreq_method(req);
    security_headers(req);
    if (cmd != KB_M_GET && cmd != KB_M_HEAD) {
        hreq_add_header_z(req, "Allow", "GET, HEAD");
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    if (*rest == '\0') {
        /* "/ui": the page's relative links need the trailing slash */
        hreq_add_header_z(req, "Location", "/ui/");
        hreq_reply(req, 308, NULL, 0);
        return;
    }
    const char *name = rest[1] == '\0' ? "index.html" : rest + 1;
    const struct kb_ui_asset *f = find(name);
    const char *type = f ? type_of(f->name) : NULL;
    if (!f || !type) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such dashboard file", NULL);
        return;
    }
    /* revalidated on every load: a new binary's files are seen at once,
     * and an unchanged one costs a 304 */
    hreq_add_header_z(req, "Cache-Control", "no-cache");
    hreq_add_header_z(req, "ETag", f->etag);
    const char *inm = hreq_header(req, "if-none-match");
    if (inm && etag_matches(inm, f->etag)) {
        hreq_reply(req, 304, NULL, 0);
        return;
    }
    hreq_add_header_z(req, "Content-Type", type);
    hreq_reply(req, 200, f->data, f->len);
}
