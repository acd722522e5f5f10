/*
 * endpoint.c - the key's endpoint policy (allowed_endpoints), compiled once
 * per worker and kept in a direct-mapped cache by key seq: a key's patterns
 * never change after issuance, so an entry stays valid; a collision just
 * recompiles. The canonical path is what it matches.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/money.h"
#include "core/runtime.h"
#include "audit/audit.h"
#include "meter/meter.h"
#include "net/http.h"
#include "net/httpd.h"
#include <jansson.h>
#include "policy/pattern.h"
#include "proxy/proxy_int.h"
#include "store/store.h"
#include "store/writer.h"

static struct kb_policy *compile_policy(const char *json_text)
{
    json_t *arr = json_loads(json_text, 0, NULL);
    struct kb_policy *pol = NULL;
    if (arr && json_is_array(arr)) {
        size_t n = json_array_size(arr);
        const char **pats = kb_calloc(n ? n : 1, sizeof *pats);
        for (size_t i = 0; i < n; i++)
            pats[i] = json_string_value(json_array_get(arr, i));
        char *e = NULL;
        if (policy_compile(pats, n, &pol, &e) != KB_OK)
            pol = NULL;
        free(e);
        free(pats);
    }
    json_decref(arr);
    return pol;
}

const struct kb_policy *proxy__key_policy(struct kb_proxy *px, const struct kb_key *key)
{
    size_t slot = (size_t)key->seq % POLICY_CACHE_SLOTS;
    if (px->policies[slot].seq == key->seq && px->policies[slot].policy)
        return px->policies[slot].policy;
    struct kb_policy *pol = compile_policy(key->allowed_endpoints);
    if (!pol)
        return NULL;
    policy_free(px->policies[slot].policy);
    px->policies[slot].seq = key->seq;
    px->policies[slot].policy = pol;
    return pol;
}
