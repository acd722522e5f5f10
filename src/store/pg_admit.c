/*
 * pg_admit.c - the writer's runs of admissions and settlements on
 * PostgreSQL (store_admit, store_settle): one statement for the run, not a
 * round trip per request per step.
 *
 * kb_admit and kb_settle (schema_pg/004_batch.sql) decide, in PostgreSQL
 * and under the rows' locks, exactly what spend_reserve and spend_settle
 * decide one at a time, in the order given. They take the requests whose
 * admission is the key's state and its cap alone: no rate limit, no ledger
 * object, and a key known to name no budget (pg_budgets.c's cache; a key
 * gains no budget after its issue). Every other request of the batch goes
 * through store__admit_each, and with it every request of the same key, so
 * that one key's requests are still decided in the order they came.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "store/pg_int.h"

static const char SQL_ADMIT[] = "SELECT r_outcome, r_remaining, r_expires FROM kb_admit("
                                "$1::bigint[], $2::bigint[], $3::bigint[], $4::bigint, "
                                "$5::text, $6::text)";
static const char SQL_SETTLE[] = "SELECT kb_settle($1::bigint[], $2::bigint[], $3::bigint[], "
                                 "$4::bigint[], $5::text, $6::text)";

/* Appends x to the array literal being built in b ("{1,2" + ",3"). */
static void array_add(struct kb_buf *b, int64_t x)
{
    buf_printf(b, "%c%lld", b->len ? ',' : '{', (long long)x);
}

static const char *array_end(struct kb_buf *b)
{
    buf_putc(b, '}');
    return b->data;
}

/* Whether admission a can be decided by kb_admit, which reads the clock
 * of the run's first admission (`now`) for all. */
static bool admit_simple(struct kb_store *s, const struct kb_admit *a, int64_t now)
{
    return a->rate_requests == 0 && !a->object && a->amount >= 0 && a->now == now &&
           pg__nobudget_has(s, a->key_seq);
}

enum kb_err pg__admit(struct kb_store *s, struct kb_admit *v, size_t n)
{
    /* simple[i]: decided by the statement; a key with one request that is
     * not has all its requests of the run decided one at a time */
    bool stack[64];
    bool *simple = n <= 64 ? stack : kb_calloc(n, sizeof *simple);
    size_t nsimple = 0, nslow = 0;
    for (size_t i = 0; i < n; i++)
        if (!(simple[i] = admit_simple(s, &v[i], v[0].now)))
            nslow++;
    if (nslow > 0 && nslow < n) {
        int64_t *slow = kb_calloc(nslow, sizeof *slow);
        for (size_t i = 0, k = 0; i < n; i++)
            if (!simple[i])
                slow[k++] = v[i].key_seq;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; simple[i] && k < nslow; k++)
                if (slow[k] == v[i].key_seq)
                    simple[i] = false;
        free(slow);
    }
    for (size_t i = 0; i < n; i++)
        nsimple += simple[i];

    enum kb_err err = KB_OK;
    if (nsimple > 0) {
        struct kb_buf seq = KB_BUF_INIT, day = KB_BUF_INIT, amount = KB_BUF_INIT;
        for (size_t i = 0; i < n; i++)
            if (simple[i]) {
                array_add(&seq, v[i].key_seq);
                array_add(&day, v[i].day);
                array_add(&amount, v[i].amount);
            }
        struct pg_args a = {0};
        pg_arg_text(&a, array_end(&seq));
        pg_arg_text(&a, array_end(&day));
        pg_arg_text(&a, array_end(&amount));
        pg_arg_i64(&a, v[0].now); /* every simple one's (admit_simple) */
        pg_arg_text(&a, pg(s)->node);
        pg_arg_text(&a, pg(s)->boot);
        PGresult *r = pg__run(s, SQL_ADMIT, &a, &err);
        if (err == KB_OK && PQntuples(r) != (int)nsimple) {
            pg__set_err(s, "kb_admit answered another number of rows than it was asked");
            err = KB_E_STORE;
        }
        for (size_t i = 0, row = 0; err == KB_OK && i < n; i++) {
            if (!simple[i])
                continue;
            struct kb_admit *e = &v[i];
            static const enum kb_err outcome[] = {KB_OK, KB_E_KEY_REVOKED, KB_E_KEY_EXPIRED,
                                                  KB_E_CAP_EXHAUSTED};
            int64_t o = pg__i64(r, (int)row, 0);
            if (o < 0 || o > 3) {
                pg__set_err(s, "kb_admit answered an unknown outcome");
                err = KB_E_STORE;
                break;
            }
            e->outcome = outcome[o];
            e->reserved = e->amount;
            e->remaining = pg__i64(r, (int)row, 1);
            e->expires_at = pg__i64(r, (int)row, 2);
            e->retry_ms = 0;
            e->holds = NULL, e->nholds = 0, e->exhausted = NULL;
            row++;
        }
        PQclear(r);
        buf_cleanup(&seq);
        buf_cleanup(&day);
        buf_cleanup(&amount);
    }
    for (size_t i = 0; err == KB_OK && i < n; i++)
        if (!simple[i])
            err = store__admit_each(s, &v[i], 1);
    if (simple != stack)
        free(simple);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

enum kb_err pg__settle(struct kb_store *s, const struct kb_settle *v, size_t n)
{
    struct kb_buf seq = KB_BUF_INIT, day = KB_BUF_INIT, reserved = KB_BUF_INIT,
                  actual = KB_BUF_INIT;
    enum kb_err err = KB_OK;
    for (size_t i = 0; i < n; i++)
        if (v[i].nholds == 0 && v[i].reserved >= 0 && v[i].actual >= 0) {
            array_add(&seq, v[i].key_seq);
            array_add(&day, v[i].day);
            array_add(&reserved, v[i].reserved);
            array_add(&actual, v[i].actual);
        }
    if (seq.len) {
        struct pg_args a = {0};
        pg_arg_text(&a, array_end(&seq));
        pg_arg_text(&a, array_end(&day));
        pg_arg_text(&a, array_end(&reserved));
        pg_arg_text(&a, array_end(&actual));
        pg_arg_text(&a, pg(s)->node);
        pg_arg_text(&a, pg(s)->boot);
        err = pg__queue(s, SQL_SETTLE, &a); /* nothing reads its result */
    }
    buf_cleanup(&seq);
    buf_cleanup(&day);
    buf_cleanup(&reserved);
    buf_cleanup(&actual);
    /* the rest, with budget holds, one at a time (their budgets' rows) */
    for (size_t i = 0; err == KB_OK && i < n; i++)
        if (!(v[i].nholds == 0 && v[i].reserved >= 0 && v[i].actual >= 0))
            err = store__settle_each(s, &v[i], 1);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}
