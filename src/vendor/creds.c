/* creds.c - the vendor credentials in force (see creds.h). */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/crypto.h"
#include "vendor/creds.h"

static bool one_line(const char *s)
{
    return !s || !s[strcspn(s, "\r\n")];
}

/* Fills k for vendor v from secret and account (both one line). */
static enum kb_err fill(const struct kb_vendor *v, const char *secret, const char *account,
                        struct kb_cred *k, char **errmsg)
{
    k->secret = kb_strdup(secret);
    k->account = account ? kb_strdup(account) : NULL;
    if (v->auth == KB_AUTH_BEARER) {
        k->inject = kb_asprintf("Authorization: Bearer %s\r\n", k->secret);
    } else if (v->auth == KB_AUTH_HEADER) {
        k->inject = kb_asprintf("%s: %s\r\n", v->auth_header, k->secret);
    } else {
        if (!k->account) {
            kb_set_errmsg(errmsg, "vendor.%s: basic auth needs an account", v->name);
            return KB_E_CONFIG;
        }
        char *pair = kb_asprintf("%s:%s", k->account, k->secret);
        k->basic = crypto_base64(pair, strlen(pair));
        k->inject = kb_asprintf("Authorization: Basic %s\r\n", k->basic);
        crypto_wipe(pair, strlen(pair));
        free(pair);
    }
    scrub_add(&k->scrub, k->secret);
    scrub_add(&k->scrub, k->basic);
    return KB_OK;
}

static void clear(struct kb_cred *k)
{
    /* the secret, and both forms that carry it */
    if (k->secret)
        crypto_wipe(k->secret, strlen(k->secret));
    if (k->inject)
        crypto_wipe(k->inject, strlen(k->inject));
    if (k->basic)
        crypto_wipe(k->basic, strlen(k->basic));
    free(k->inject);
    free(k->basic);
    free(k->secret);
    free(k->account);
}

enum kb_err creds_one(const struct kb_vendor *v, const char *secret, const char *account,
                      struct kb_cred **out, char **errmsg)
{
    if (!one_line(secret) || !one_line(account)) {
        kb_set_errmsg(errmsg, "the secret or account contains a line break");
        return KB_E_INVALID;
    }
    struct kb_cred *k = kb_calloc(1, sizeof *k);
    enum kb_err err = fill(v, secret, account, k, errmsg);
    if (err != KB_OK) {
        creds_one_free(k);
        return err;
    }
    *out = k;
    return KB_OK;
}

void creds_one_free(struct kb_cred *k)
{
    if (!k)
        return;
    clear(k);
    free(k);
}

enum kb_err creds_build(const struct kb_config *running, const struct kb_config *from,
                        const struct kb_creds *prev, struct kb_creds **out, char **errmsg)
{
    struct kb_creds *c = kb_calloc(1, sizeof *c + running->nvendors * sizeof c->v[0]);
    c->n = running->nvendors;
    for (size_t i = 0; i < c->n; i++) {
        const struct kb_vendor *v = &running->vendors[i];
        const struct kb_vendor *f = config_vendor(from, v->name, strlen(v->name));
        if (!f || !f->secret)
            continue;
        /* the secret goes into a header line as it is */
        if (!one_line(f->secret) || !one_line(f->account)) {
            kb_set_errmsg(errmsg, "vendor.%s: the secret or account contains a line break",
                          v->name);
            creds_free(c);
            return KB_E_CONFIG;
        }
        if (fill(v, f->secret, f->account, &c->v[i], errmsg) != KB_OK) {
            creds_free(c);
            return KB_E_CONFIG;
        }
        /* a vendor (or a cache in front of it) may still quote the secret
         * of before: answers are scrubbed of it too. The replaced set
         * lives until exit, so its strings may be borrowed. */
        const struct kb_scrub *ps = prev && i < prev->n ? &prev->v[i].scrub : NULL;
        for (size_t k = 0; ps && k < ps->n; k++)
            if (strcmp(ps->needle[k], c->v[i].secret) != 0 &&
                (!c->v[i].basic || strcmp(ps->needle[k], c->v[i].basic) != 0))
                scrub_add(&c->v[i].scrub, ps->needle[k]);
    }
    *out = c;
    return KB_OK;
}

void creds_free(struct kb_creds *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        clear(&c->v[i]);
    free(c);
}
