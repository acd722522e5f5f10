/*
 * fixed.c - the meter for generic vendors: a fixed price per matching
 * request.
 *
 * The operator lists, per vendor, endpoint patterns (policy/pattern.h) with
 * a cost each; the first entry whose pattern matches the request's method
 * and path gives its cost, which is reserved before forwarding and charged
 * when the vendor answers 2xx (zero otherwise, like every meter). For a
 * generic vendor a request no entry matches costs zero. The built-in vendors
 * fall back to these entries for endpoints their own meter has no rule for,
 * so an operator can price, say, a new OpenAI endpoint without a code
 * change; a built-in vendor's write that neither its meter nor an entry
 * prices is refused (meter.c).
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/meter.h"
#include "meter/meter_int.h"
#include "policy/pattern.h"

enum kb_err meter_pricing_add_fixed(struct kb_pricing *p, const char *vendor, const char *pattern,
                                    int64_t micros, char **errmsg)
{
    enum kb_err err = KB_E_CONFIG;
    struct kb_policy *pol = NULL;
    char *em = NULL;

    if (!p || !vendor || !vendor[0] || !pattern) {
        kb_set_errmsg(errmsg, "fixed cost: vendor and pattern are required");
        goto out;
    }
    if (micros < 0 || micros > KB_MONEY_MAX_MICROS) {
        kb_set_errmsg(errmsg, "fixed cost for %s \"%s\": amount out of range", vendor, pattern);
        goto out;
    }
    /* A deny pattern alone matches nothing; accepting it would hide a
     * configuration mistake behind a silent zero. */
    if (strncmp(pattern, "deny:", 5) == 0) {
        kb_set_errmsg(errmsg, "fixed cost for %s \"%s\": deny: patterns cannot carry a cost",
                      vendor, pattern);
        goto out;
    }
    if (policy_compile(&pattern, 1, &pol, &em) != KB_OK) {
        kb_set_errmsg(errmsg, "fixed cost for %s: %s", vendor, em ? em : "invalid pattern");
        goto out;
    }
    p->fixed = kb_realloc(p->fixed, (p->nfixed + 1) * sizeof *p->fixed);
    p->fixed[p->nfixed].vendor = kb_strdup(vendor);
    p->fixed[p->nfixed].policy = pol;
    p->fixed[p->nfixed].micros = micros;
    p->nfixed++;
    pol = NULL;
    err = KB_OK;
out:
    policy_free(pol);
    free(em);
    return err;
}

bool meter__fixed_begin(struct kb_meter *m, const struct kb_meter_req *req)
{
    const struct kb_pricing *p = m->p;

    m->reserve = m->on_success = 0;
    for (size_t i = 0; i < p->nfixed; i++) {
        if (strcmp(p->fixed[i].vendor, req->vendor) == 0 &&
            policy_allows(p->fixed[i].policy, req->method, req->path, req->path_len)) {
            m->reserve = m->on_success = p->fixed[i].micros;
            return true;
        }
    }
    return false;
}

void meter__fixed_cleanup(struct kb_pricing *p)
{
    for (size_t i = 0; i < p->nfixed; i++) {
        free(p->fixed[i].vendor);
        policy_free(p->fixed[i].policy);
    }
    free(p->fixed);
    p->fixed = NULL;
    p->nfixed = 0;
}
