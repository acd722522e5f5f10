/*
 * llm_routes.c - the route tables of the OpenAI and Anthropic meters are
 * matched here: a method and a path pattern per row, the pattern's
 * segments compared ASCII case-insensitively (a case variant the vendor
 * serves must not escape its cost class; one it 404s costs nothing
 * anyway), "*" standing for exactly one non-empty segment (an id).
 */
#include <string.h>
#include <strings.h>

#include "meter/meter_int.h"

/* Most segments a route pattern has. */
#define ROUTE_MAX_SEGS 8

static bool seg_ieq(const char *seg, size_t len, const char *pat, size_t plen)
{
    if (plen == 1 && pat[0] == '*')
        return len > 0;
    return len == plen && strncasecmp(seg, pat, len) == 0;
}

int meter__route_find(const struct meter__route *routes, size_t n, const struct kb_meter_req *req)
{
    const char *seg[ROUTE_MAX_SEGS];
    size_t len[ROUTE_MAX_SEGS];
    size_t ns;

    if (req->path_len == 0 || req->path[0] != '/')
        return -1;
    ns = meter__path_split(req->path, req->path_len, seg, len, ROUTE_MAX_SEGS);
    if (ns > ROUTE_MAX_SEGS)
        return -1;
    /* "/v1/files/" has an empty last segment: no route has one. */
    if (req->path[req->path_len - 1] == '/')
        return -1;
    for (size_t r = 0; r < n; r++) {
        const char *p = routes[r].path + 1;
        size_t i = 0;
        bool ok = strcasecmp(req->method, routes[r].method) == 0;
        while (ok && *p) {
            const char *e = strchr(p, '/');
            size_t pl = e ? (size_t)(e - p) : strlen(p);
            ok = i < ns && seg_ieq(seg[i], len[i], p, pl);
            i++;
            p += pl + (e ? 1 : 0);
        }
        if (ok && i == ns)
            return (int)r;
    }
    return -1;
}
