/*
 * test_store_objects.c - the per-key object ledger of the store, on each
 * backend (a SQLite file; a fresh PostgreSQL database: pg_fixture.h)
 * (store_object_charged / store_object_charge_set, schema 006): absent
 * entries read -1, entries are per key, never lowered, expire by
 * not_before, survive a reopen, and work inside the writer's transaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "pg_fixture.h"
#include "store/store.h"

struct fixture {
    bool pg;            /* PostgreSQL; else SQLite */
    char dir[64];       /* SQLite: mkdtemp directory */
    char path[256];     /* SQLite: dir/keybrake.db; PostgreSQL: the URL */
    struct kb_store *s; /* open on path */
    int64_t k1, k2;     /* two keys' seq */
};

static struct kb_store *open_store(const char *path)
{
    struct kb_store *s = NULL;
    char *msg = NULL;
    enum kb_err err = store_open(path, "normal", true, &s, &msg);
    if (err != KB_OK)
        print_error("store_open: %s\n", msg ? msg : "-");
    free(msg);
    assert_int_equal(err, KB_OK);
    return s;
}

static int64_t add_key(struct kb_store *s, const char *id)
{
    static const uint8_t hk[] = "test-server-key";
    struct kb_key k;
    uint8_t h[KB_HASH_LEN];
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    k.label = (char *)"ledger";
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[\"POST /v1/payment_intents\"]";
    k.metadata = (char *)"{}";
    k.daily_cap = 100000000;
    k.created_at = 100;
    k.expires_at = 4000000000;
    crypto_hmac(hk, sizeof hk - 1, id, strlen(id), h);
    assert_int_equal(store_key_insert(s, &k, h), KB_OK);
    return k.seq;
}

static int setup_on(void **state, bool on_pg)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->pg = on_pg;
    if (on_pg) {
        assert_int_equal(test_pg_fresh(f->path, sizeof f->path), 0);
    } else {
        snprintf(f->dir, sizeof f->dir, "%s", "/tmp/kb-test-objects-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/keybrake.db", f->dir);
    }
    f->s = open_store(f->path);
    f->k1 = add_key(f->s, "vk_ledger_one");
    f->k2 = add_key(f->s, "vk_ledger_two");
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_on(state, false);
}

static int setup_pg(void **state)
{
    return setup_on(state, true);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    static const char *const names[] = {"keybrake.db", "keybrake.db-wal", "keybrake.db-shm"};
    store_close(f->s);
    for (size_t i = 0; !f->pg && i < sizeof names / sizeof names[0]; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        unlink(p);
    }
    if (!f->pg)
        rmdir(f->dir);
    free(f);
    return 0;
}

static int64_t charged(struct kb_store *s, int64_t key, const char *obj, int64_t not_before)
{
    int64_t v = -7;
    assert_int_equal(store_object_charged(s, key, obj, not_before, &v), KB_OK);
    return v;
}

static void test_absent_is_minus_one(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(charged(f->s, f->k1, "pi_3MtwBwLkdIwHu7ix28a3tqPa", 0), -1);
    /* a recorded zero is an entry (an idempotent replay of a $0 request) */
    assert_int_equal(store_object_charge_set(f->s, f->k1, "idem:00", 0, 1000, 0), KB_OK);
    assert_int_equal(charged(f->s, f->k1, "idem:00", 0), 0);
}

static void test_per_key_and_never_lowered(void **state)
{
    struct fixture *f = *state;
    const char *pi = "pi_3MtwBwLkdIwHu7ix28a3tqPa";

    /* the create: $20.00 */
    assert_int_equal(store_object_charge_set(f->s, f->k1, pi, 20000000, 1000, 0), KB_OK);
    assert_int_equal(charged(f->s, f->k1, pi, 0), 20000000);
    /* the other key never paid for it */
    assert_int_equal(charged(f->s, f->k2, pi, 0), -1);
    /* an overcapture raises it to $25.00 */
    assert_int_equal(store_object_charge_set(f->s, f->k1, pi, 25000000, 1001, 0), KB_OK);
    assert_int_equal(charged(f->s, f->k1, pi, 0), 25000000);
    /* a racing request that read the old figure cannot lower it */
    assert_int_equal(store_object_charge_set(f->s, f->k1, pi, 20000000, 1002, 0), KB_OK);
    assert_int_equal(charged(f->s, f->k1, pi, 0), 25000000);
}

static void test_expiry(void **state)
{
    struct fixture *f = *state;
    const char *idem = "idem:5f0c";

    assert_int_equal(store_object_charge_set(f->s, f->k1, idem, 1500000, 1000, 0), KB_OK);
    /* counts while it is younger than the window ... */
    assert_int_equal(charged(f->s, f->k1, idem, 1000), 1500000);
    /* ... and reads as absent once older */
    assert_int_equal(charged(f->s, f->k1, idem, 1001), -1);
    /* an expired entry is replaced, not maxed with the old figure */
    assert_int_equal(store_object_charge_set(f->s, f->k1, idem, 700000, 90000, 5000), KB_OK);
    assert_int_equal(charged(f->s, f->k1, idem, 5000), 700000);
}

static void test_invalid_and_reopen(void **state)
{
    struct fixture *f = *state;
    int64_t v;
    assert_int_equal(store_object_charge_set(f->s, f->k1, "pi_x", -1, 1000, 0), KB_E_INVALID);
    assert_int_equal(store_object_charge_set(f->s, f->k1, NULL, 1, 1000, 0), KB_E_INVALID);
    assert_int_equal(store_object_charged(f->s, f->k1, NULL, 0, &v), KB_E_INVALID);
    /* unknown key: the foreign key refuses it */
    assert_int_equal(store_object_charge_set(f->s, 987654, "pi_x", 1, 1000, 0), KB_E_STORE);

    assert_int_equal(store_object_charge_set(f->s, f->k2, "in_1", 1999000, 1000, 0), KB_OK);
    store_close(f->s);
    f->s = open_store(f->path);
    assert_int_equal(charged(f->s, f->k2, "in_1", 0), 1999000);
}

struct txn_arg {
    int64_t key;
    bool fail;
};

static enum kb_err in_txn(struct kb_store *s, void *arg)
{
    struct txn_arg *a = arg;
    enum kb_err err = store_object_charge_set(s, a->key, "ch_txn", 4200, 1000, 0);
    return err != KB_OK ? err : a->fail ? KB_E_INTERNAL : KB_OK;
}

static void test_inside_transaction(void **state)
{
    struct fixture *f = *state;
    struct txn_arg a = {f->k1, true};
    /* rolled back with the rest of the writer's batch */
    assert_int_equal(store_txn_run(f->s, in_txn, &a), KB_E_INTERNAL);
    assert_int_equal(charged(f->s, f->k1, "ch_txn", 0), -1);
    a.fail = false;
    assert_int_equal(store_txn_run(f->s, in_txn, &a), KB_OK);
    assert_int_equal(charged(f->s, f->k1, "ch_txn", 0), 4200);
}

#define CASES(X)                                                                                   \
    X(test_absent_is_minus_one)                                                                    \
    X(test_per_key_and_never_lowered)                                                              \
    X(test_expiry)                                                                                 \
    X(test_invalid_and_reopen)                                                                     \
    X(test_inside_transaction)
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown),
#define TPG(f) cmocka_unit_test_setup_teardown(f, setup_pg, teardown),

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {CASES(T)};
    const struct CMUnitTest pg_tests[] = {CASES(TPG)};
    int failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("postgres", pg_tests, NULL, NULL);
    return failed;
}
