/*
 * store_admit.c - the proxy's admissions and settlements, many at a time
 * (store_admit, store_settle in store.h).
 *
 * store__admit_each is what an admission is, written once with the
 * table's single operations; a backend that can do a run of admissions in
 * one statement (PostgreSQL, pg_admit.c) must reach the same outcome for
 * each, and hands it the elements its statement does not take.
 */
#include <stdlib.h>

#include "store/backend.h"

/* One admission (see struct kb_admit). KB_OK or KB_E_STORE. */
static enum kb_err admit_one(struct kb_store *s, struct kb_admit *a)
{
    struct kb_key_state ks;
    enum kb_err err;
    a->outcome = KB_OK;
    a->remaining = a->retry_ms = 0;
    a->holds = NULL, a->nholds = 0, a->exhausted = NULL;
    a->reserved = a->amount;
    /* revocation, cap and expiry as committed now, not as a worker's
     * cached key has them: a PATCH that lowered the cap or shortened the
     * TTL binds every admission after its commit */
    if (s->be->key_state(s, a->key_seq, &ks) != KB_OK)
        return KB_E_STORE;
    a->expires_at = ks.expires_at;
    if (ks.revoked) {
        a->outcome = KB_E_KEY_REVOKED;
        return KB_OK;
    }
    if (a->now >= ks.expires_at) {
        a->outcome = KB_E_KEY_EXPIRED;
        return KB_OK;
    }
    if (a->rate_requests) {
        err = s->be->rate_take(s, a->key_seq, a->rate_requests, a->rate_period_ms, a->ts_ms,
                               &a->retry_ms);
        if (err == KB_E_RATE_LIMITED) {
            a->outcome = err;
            return KB_OK;
        }
        if (err != KB_OK)
            return KB_E_STORE;
    }
    if (a->object) {
        /* what this key already paid for the object the request acts on
         * counts against it, read in the transaction that reserves */
        int64_t charged = -1;
        if (s->be->object_charged(s, a->key_seq, a->object, a->object_not_before, &charged) !=
            KB_OK)
            return KB_E_STORE;
        a->reserved = a->ledger(a->ledger_ctx, charged);
    }
    /* the budgets on the key's chains, then the key's own cap, all or
     * nothing: a refusal by the key gives the budgets' reservations back
     * before anything commits */
    err = s->be->budget_reserve(s, a->key_seq, a->ts_ms / 1000, a->reserved, &a->holds, &a->nholds,
                                &a->exhausted);
    if (err == KB_E_BUDGET_EXHAUSTED) {
        a->outcome = err;
        return KB_OK;
    }
    if (err != KB_OK)
        return KB_E_STORE;
    err = s->be->spend_reserve(s, a->key_seq, a->day, a->reserved, ks.daily_cap, &a->remaining);
    if (err == KB_E_CAP_EXHAUSTED) {
        a->outcome = err;
        err = s->be->budget_release(s, a->holds, a->nholds, a->reserved);
        free(a->holds);
        a->holds = NULL, a->nholds = 0;
        return err == KB_OK ? KB_OK : KB_E_STORE;
    }
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

enum kb_err store__admit_each(struct kb_store *s, struct kb_admit *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (admit_one(s, &v[i]) != KB_OK)
            return KB_E_STORE;
    return KB_OK;
}

enum kb_err store__settle_each(struct kb_store *s, const struct kb_settle *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct kb_settle *e = &v[i];
        if (s->be->spend_settle(s, e->key_seq, e->day, e->reserved, e->actual, 0, NULL) != KB_OK ||
            s->be->budget_settle(s, e->holds, e->nholds, e->reserved, e->actual) != KB_OK)
            return KB_E_STORE;
    }
    return KB_OK;
}

enum kb_err store_admit(struct kb_store *s, struct kb_admit *v, size_t n)
{
    return (s->be->admit ? s->be->admit : store__admit_each)(s, v, n);
}

enum kb_err store_settle(struct kb_store *s, const struct kb_settle *v, size_t n)
{
    return (s->be->settle ? s->be->settle : store__settle_each)(s, v, n);
}
