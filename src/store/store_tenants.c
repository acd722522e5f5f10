/*
 * store_tenants.c - the store's public functions for tenants, scoped admin
 * tokens and tenant secrets (store.h, "tenants"), through the backend's
 * table (backend.h), and the structs they hand out.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/backend.h"
#include "store/store.h"

/* ---- tenants ---- */

enum kb_err store_tenant_insert(struct kb_store *s, struct kb_tenant *t)
{
    return s->be->tenant_insert(s, t);
}

enum kb_err store_tenant_get(struct kb_store *s, const char *id, struct kb_tenant **out)
{
    return s->be->tenant_get(s, id, out);
}

enum kb_err store_tenant_list(struct kb_store *s, int64_t after_seq, int limit,
                              struct kb_tenant **out, size_t *n)
{
    if (limit < 1 || limit > 1000)
        return KB_E_INVALID;
    return s->be->tenant_list(s, after_seq, limit, out, n);
}

enum kb_err store_tenant_delete(struct kb_store *s, const char *id, int64_t now)
{
    return s->be->tenant_delete(s, id, now);
}

void store_tenant_free(struct kb_tenant *t)
{
    if (!t)
        return;
    free(t->name);
    free(t);
}

void store_tenant_list_free(struct kb_tenant *t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

enum kb_err store_admin_token_insert(struct kb_store *s, const struct kb_admin_token *tok,
                                     const uint8_t hash[KB_HASH_LEN])
{
    return s->be->admin_token_insert(s, tok, hash);
}

enum kb_err store_admin_token_lookup(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                     struct kb_admin_token **out)
{
    return s->be->admin_token_lookup(s, hash, out);
}

enum kb_err store_admin_token_list(struct kb_store *s, bool all, const char *tenant,
                                   struct kb_admin_token **out, size_t *n)
{
    return s->be->admin_token_list(s, all, tenant, out, n);
}

enum kb_err store_admin_token_revoke(struct kb_store *s, const char *id, bool all,
                                     const char *tenant, int64_t now)
{
    return s->be->admin_token_revoke(s, id, all, tenant, now);
}

void store_admin_token_free(struct kb_admin_token *t)
{
    if (!t)
        return;
    free(t->label);
    free(t->tenant);
    free(t);
}

void store_admin_token_list_free(struct kb_admin_token *t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++) {
        free(t[i].label);
        free(t[i].tenant);
    }
    free(t);
}

enum kb_err store_tenant_secret_put(struct kb_store *s, const struct kb_tenant_secret *sec)
{
    if (!sec->tenant || !sec->vendor || !sec->key_id || !sec->sealed || sec->sealed_len == 0 ||
        sec->sealed_len > KB_SEALED_MAX)
        return KB_E_INVALID;
    return s->be->secret_put(s, sec);
}

enum kb_err store_tenant_secret_get(struct kb_store *s, const char *tenant, const char *vendor,
                                    struct kb_tenant_secret **out)
{
    return s->be->secret_get(s, tenant, vendor, out);
}

enum kb_err store_tenant_secret_delete(struct kb_store *s, const char *tenant, const char *vendor)
{
    return s->be->secret_delete(s, tenant, vendor);
}

enum kb_err store_tenant_secret_list(struct kb_store *s, const char *tenant,
                                     struct kb_tenant_secret **out, size_t *n)
{
    return s->be->secret_list(s, tenant, out, n);
}

static void secret_clear(struct kb_tenant_secret *sec)
{
    free(sec->tenant);
    free(sec->vendor);
    free(sec->key_id);
    if (sec->sealed)
        crypto_wipe(sec->sealed, sec->sealed_len);
    free(sec->sealed);
    free(sec->account);
}

void store_tenant_secret_free(struct kb_tenant_secret *sec)
{
    if (!sec)
        return;
    secret_clear(sec);
    free(sec);
}

void store_tenant_secret_list_free(struct kb_tenant_secret *sec, size_t n)
{
    if (!sec)
        return;
    for (size_t i = 0; i < n; i++)
        secret_clear(&sec[i]);
    free(sec);
}
