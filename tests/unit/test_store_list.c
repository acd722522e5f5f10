/*
 * test_store_list.c - the store conformance suite (test_store.c), part
 * two: listing keys (filters, pages, the usage each row carries) and the
 * proxy's key cache over the store, which sits on store_key_by_hash and
 * forgets a key when the revocation log says so. Every case runs on
 * SQLite and on PostgreSQL (store_conf.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/keycache.h"
#include "store/revlog.h"
#include "store/store.h"
#include "store_conf.h"

/* ---- listing ---- */

#define NOW INT64_C(1000)

struct list_row {
    const char *label_prefix, *vendor;
    enum kb_key_status status;
    int before; /* index+1 of the key whose seq is the cursor; 0: none */
    int limit;
    const char *want; /* ids (numbers of the "vk_lN" keys), newest first */
};

/* k1 a/1 stripe  expires 2000          active
 * k2 a/2 openai  expires 1000 (= now)  expired
 * k3 b/1 stripe  expires 999           expired
 * k4 a/3 stripe  expires 5000 revoked  revoked
 * k5 b/2 openai  expires 500  revoked  revoked (and expired)
 * k6 a/4 stripe  expires 1001          active */
static const struct list_row list_rows[] = {
    {NULL, NULL, KB_KEY_ANY, 0, 100, "654321"},
    {NULL, NULL, KB_KEY_ACTIVE, 0, 100, "61"},
    {NULL, NULL, KB_KEY_EXPIRED, 0, 100, "32"},
    {NULL, NULL, KB_KEY_REVOKED, 0, 100, "54"},
    {NULL, "stripe", KB_KEY_ANY, 0, 100, "6431"},
    {NULL, "openai", KB_KEY_ANY, 0, 100, "52"},
    {NULL, "openai", KB_KEY_ACTIVE, 0, 100, ""},
    {NULL, "Stripe", KB_KEY_ANY, 0, 100, ""},
    {NULL, "strip", KB_KEY_ANY, 0, 100, ""},
    {"a/", NULL, KB_KEY_ANY, 0, 100, "6421"},
    {"a/", "stripe", KB_KEY_ACTIVE, 0, 100, "61"},
    {"a/", "stripe", KB_KEY_REVOKED, 0, 100, "4"},
    {"b/", NULL, KB_KEY_REVOKED, 0, 100, "5"},
    {"b/", NULL, KB_KEY_EXPIRED, 0, 100, "3"},
    {"a/3", NULL, KB_KEY_ANY, 0, 100, "4"},
    {"A/", NULL, KB_KEY_ANY, 0, 100, ""},
    {"%", NULL, KB_KEY_ANY, 0, 100, ""},
    {"a_", NULL, KB_KEY_ANY, 0, 100, ""},
    {"c/", NULL, KB_KEY_ANY, 0, 100, ""},
    /* limit */
    {NULL, NULL, KB_KEY_ANY, 0, 1, "6"},
    {NULL, NULL, KB_KEY_ANY, 0, 2, "65"},
    {NULL, NULL, KB_KEY_ANY, 0, 6, "654321"},
    {NULL, "stripe", KB_KEY_ANY, 0, 3, "643"},
    /* cursor: strictly older than key N */
    {NULL, NULL, KB_KEY_ANY, 4, 100, "321"},
    {NULL, NULL, KB_KEY_ANY, 4, 2, "32"},
    {NULL, NULL, KB_KEY_ACTIVE, 4, 100, "1"},
    {NULL, NULL, KB_KEY_ANY, 1, 100, ""},
    {"a/", NULL, KB_KEY_ANY, 6, 100, "421"},
};

static void list_fixture(struct kb_store *s, int64_t seqs[7])
{
    seqs[1] = add_key(s, "vk_l1", "a/1", "stripe", 100, 2000);
    seqs[2] = add_key(s, "vk_l2", "a/2", "openai", 100, NOW);
    seqs[3] = add_key(s, "vk_l3", "b/1", "stripe", 100, NOW - 1);
    seqs[4] = add_key(s, "vk_l4", "a/3", "stripe", 100, 5000);
    seqs[5] = add_key(s, "vk_l5", "b/2", "openai", 100, 500);
    seqs[6] = add_key(s, "vk_l6", "a/4", "stripe", 100, NOW + 1);
    assert_int_equal(store_key_revoke(s, "vk_l4", 900, NULL), KB_OK);
    assert_int_equal(store_key_revoke(s, "vk_l5", 400, NULL), KB_OK);
}

static void test_list_filters(void **state)
{
    struct fixture *f = *state;
    int64_t seqs[7];
    list_fixture(f->s, seqs);
    for (size_t i = 0; i < sizeof list_rows / sizeof list_rows[0]; i++) {
        const struct list_row *r = &list_rows[i];
        struct kb_key_filter flt = {
            .label_prefix = r->label_prefix,
            .vendor = r->vendor,
            .status = r->status,
            .now = NOW,
            .before_seq = r->before ? seqs[r->before] : 0,
            .limit = r->limit,
        };
        struct kb_key *keys = NULL;
        size_t n = 99;
        assert_int_equal(store_key_list(f->s, &flt, &keys, &n), KB_OK);
        char got[16] = "";
        for (size_t j = 0; j < n && j + 1 < sizeof got; j++) {
            assert_memory_equal(keys[j].id, "vk_l", 4);
            got[j] = keys[j].id[4];
            got[j + 1] = '\0';
        }
        if (strcmp(got, r->want) != 0)
            print_error("row %zu: got \"%s\" want \"%s\"\n", i, got, r->want);
        assert_string_equal(got, r->want);
        assert_int_equal(n, strlen(r->want));
        store_key_list_free(keys, n);
    }
}

/* Walking pages with the last seq as cursor visits every key once, newest
 * first, whatever the page size. */
static void test_list_pagination(void **state)
{
    struct fixture *f = *state;
    enum { NKEYS = 23 };
    int64_t seqs[NKEYS];
    for (int i = 0; i < NKEYS; i++) {
        char id[32], label[32];
        snprintf(id, sizeof id, "vk_p%02d", i);
        snprintf(label, sizeof label, "%s/%d", i % 2 ? "odd" : "even", i);
        seqs[i] = add_key(f->s, id, label, "stripe", 1, 5000);
    }
    for (int limit = 1; limit <= NKEYS + 1; limit++) {
        int64_t cursor = 0;
        int seen = 0;
        for (int page = 0; page < NKEYS + 2; page++) {
            struct kb_key_filter flt = {.now = NOW, .before_seq = cursor, .limit = limit};
            struct kb_key *keys = NULL;
            size_t n = 0;
            assert_int_equal(store_key_list(f->s, &flt, &keys, &n), KB_OK);
            assert_true(n <= (size_t)limit);
            for (size_t j = 0; j < n; j++) {
                /* strictly descending, exactly the next key */
                assert_int_equal(keys[j].seq, seqs[NKEYS - 1 - seen]);
                seen++;
            }
            if (n)
                cursor = keys[n - 1].seq;
            store_key_list_free(keys, n);
            if (n < (size_t)limit)
                break;
        }
        assert_int_equal(seen, NKEYS);
    }
    /* with a filter: only the odd labels, in pages of 4 */
    int64_t cursor = 0;
    int seen = 0;
    for (;;) {
        struct kb_key_filter flt = {
            .label_prefix = "odd/", .now = NOW, .before_seq = cursor, .limit = 4};
        struct kb_key *keys = NULL;
        size_t n = 0;
        assert_int_equal(store_key_list(f->s, &flt, &keys, &n), KB_OK);
        for (size_t j = 0; j < n; j++) {
            assert_memory_equal(keys[j].label, "odd/", 4);
            seen++;
        }
        if (n)
            cursor = keys[n - 1].seq;
        store_key_list_free(keys, n);
        if (n < 4)
            break;
    }
    assert_int_equal(seen, NKEYS / 2);
}

/* The listing carries each key's usage on the day of `now`. */
static void test_list_usage(void **state)
{
    struct fixture *f = *state;
    int64_t now = DAY0 * 86400 + 3600;
    int64_t seq = add_key(f->s, "vk_u", "u", "stripe", 1000, now + 86400);
    add_key(f->s, "vk_v", "v", "stripe", 1000, now + 86400);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 300, 1000, NULL), KB_OK);
    assert_int_equal(store_spend_settle(f->s, seq, DAY0, 300, 120, 1000, NULL), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 50, 1000, NULL), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0 - 1, 999, 1000, NULL), KB_OK);
    struct kb_key_filter flt = {.status = KB_KEY_ACTIVE, .now = now, .limit = 10};
    struct kb_key *keys = NULL;
    size_t n = 0;
    assert_int_equal(store_key_list(f->s, &flt, &keys, &n), KB_OK);
    assert_int_equal(n, 2);
    assert_string_equal(keys[0].id, "vk_v");
    assert_int_equal(keys[0].spent, 0);
    assert_int_equal(keys[0].requests, 0);
    assert_string_equal(keys[1].id, "vk_u");
    assert_int_equal(keys[1].usage_day, DAY0);
    assert_int_equal(keys[1].spent, 120);
    assert_int_equal(keys[1].reserved, 50);
    assert_int_equal(keys[1].requests, 2);
    store_key_list_free(keys, n);
}

/* The proxy's key cache (src/proxy/keycache.h) over this store, read the
 * way the worker reads it (find; on a miss, mark, read, add). */
static enum kb_err cache_get(struct kb_keycache *c, struct kb_store *s,
                             const uint8_t h[KB_HASH_LEN], const struct kb_key **out)
{
    if (keycache_find(c, h, out) == KB_OK)
        return KB_OK;
    uint64_t mark = keycache_mark(c);
    struct kb_key *k = NULL;
    enum kb_err err = store_key_by_hash(s, h, DAY0, &k);
    if (err == KB_OK)
        *out = keycache_add(c, h, k, mark);
    return err;
}

/* A key is served from the cache until its revocation is published; only
 * the revoked key is forgotten; unknown tokens are not cached; two keys in
 * one slot both stay right. */
static void test_keycache(void **state)
{
    struct fixture *f = *state;
    struct kb_revlog *log = revlog_new();
    struct kb_keycache *c = keycache_new(1, log); /* one slot: every key collides */
    add_key(f->s, "vk_cacheA", "agent-a", "stripe", 5000000, INT64_C(4000000000));
    uint8_t ha[KB_HASH_LEN], hb[KB_HASH_LEN];
    hash_of("vk_cacheA", ha);
    hash_of("vk_cacheB", hb);

    const struct kb_key *k = NULL;
    assert_int_equal(keycache_find(c, ha, &k), KB_E_NOT_FOUND);
    assert_int_equal(cache_get(c, f->s, ha, &k), KB_OK);
    assert_string_equal(k->id, "vk_cacheA");
    assert_string_equal(k->label, "agent-a");
    assert_string_equal(k->allowed_endpoints, "[\"POST /v1/charges\"]");
    assert_string_equal(k->metadata, "{\"team\":\"a\"}");
    assert_int_equal(k->daily_cap, 5000000);
    assert_int_equal(k->revoked_at, 0);
    keycache_put(k);
    assert_int_equal(keycache_find(c, ha, &k), KB_OK); /* cached */
    keycache_put(k);

    /* revoked behind the cache's back: still served from the cache ... */
    struct kb_revoked_key rk;
    assert_int_equal(store_key_revoke(f->s, "vk_cacheA", 777, &rk), KB_OK);
    assert_memory_equal(rk.hash, ha, KB_HASH_LEN);
    assert_int_equal(keycache_find(c, ha, &k), KB_OK);
    assert_int_equal(k->revoked_at, 0);
    keycache_put(k);
    /* ... another key's revocation changes nothing ... */
    revlog_publish(log, rk.seq + 1000, ha);
    assert_int_equal(keycache_find(c, ha, &k), KB_OK);
    keycache_put(k);
    /* ... until its own is published, as the admin API does before answering */
    revlog_publish(log, rk.seq, rk.hash);
    assert_int_equal(keycache_find(c, ha, &k), KB_E_NOT_FOUND);
    assert_int_equal(cache_get(c, f->s, ha, &k), KB_OK);
    assert_int_equal(k->revoked_at, 777);
    keycache_put(k);

    /* an unknown token is not remembered: the key issued next is found */
    const struct kb_key *held = NULL;
    assert_int_equal(cache_get(c, f->s, ha, &held), KB_OK);
    assert_int_equal(cache_get(c, f->s, hb, &k), KB_E_NOT_FOUND);
    add_key(f->s, "vk_cacheB", "agent-b", "openai", 1, INT64_C(4000000000));
    assert_int_equal(cache_get(c, f->s, hb, &k), KB_OK);
    assert_string_equal(k->id, "vk_cacheB");
    keycache_put(k);
    /* a key still held by a request outlives its slot (and the cache) */
    assert_string_equal(held->label, "agent-a");
    /* B took A's slot; A is read again, still revoked */
    assert_int_equal(cache_get(c, f->s, ha, &k), KB_OK);
    assert_string_equal(k->id, "vk_cacheA");
    assert_int_equal(k->revoked_at, 777);
    keycache_put(k);

    /* a key read before its revocation was published is used once, not
     * kept: the revocation landed between the mark and the add */
    add_key(f->s, "vk_cacheC", "agent-c", "stripe", 1, INT64_C(4000000000));
    uint8_t hc[KB_HASH_LEN];
    hash_of("vk_cacheC", hc);
    uint64_t mark = keycache_mark(c);
    struct kb_key *raw = NULL;
    assert_int_equal(store_key_by_hash(f->s, hc, DAY0, &raw), KB_OK);
    assert_int_equal(store_key_revoke(f->s, "vk_cacheC", 888, &rk), KB_OK);
    revlog_publish(log, rk.seq, rk.hash);
    k = keycache_add(c, hc, raw, mark);
    assert_int_equal(k->revoked_at, 0); /* as read */
    keycache_put(k);
    assert_int_equal(keycache_find(c, hc, &k), KB_E_NOT_FOUND); /* not kept */

    /* a log that ran past the ring: everything is forgotten */
    assert_int_equal(cache_get(c, f->s, hc, &k), KB_OK);
    keycache_put(k);
    for (int i = 0; i < REVLOG_RING + 1; i++)
        revlog_publish(log, 1000000 + i, hb);
    assert_int_equal(keycache_find(c, hc, &k), KB_E_NOT_FOUND);
    /* and so does an "every key" entry */
    assert_int_equal(cache_get(c, f->s, hc, &k), KB_OK);
    keycache_put(k);
    revlog_publish_all(log);
    assert_int_equal(keycache_find(c, hc, &k), KB_E_NOT_FOUND);

    keycache_free(c);
    assert_string_equal(held->vendor, "stripe");
    keycache_put(held);
    revlog_free(log);
}

/* A change in the log makes the caches forget the key (it is read again)
 * but is not a revocation to the watch (revlog_read_revoked skips it). */
static void count_entry(void *arg, int64_t seq, uint64_t hint)
{
    (void)seq;
    (void)hint;
    (*(int *)arg)++;
}

static void test_revlog_change(void **state)
{
    struct fixture *f = *state;
    struct kb_revlog *log = revlog_new();
    struct kb_keycache *c = keycache_new(16, log);
    add_key(f->s, "vk_chg", "chg", "stripe", 5000000, INT64_C(4000000000));
    uint8_t h[KB_HASH_LEN];
    hash_of("vk_chg", h);
    const struct kb_key *k = NULL;
    assert_int_equal(cache_get(c, f->s, h, &k), KB_OK);
    assert_int_equal(k->daily_cap, 5000000);
    keycache_put(k);

    struct kb_key_change ch = {.has_cap = true, .cap = 1000000};
    struct kb_revoked_key rk = {0};
    assert_int_equal(store_key_update(f->s, "vk_chg", &ch, 100, &rk), KB_OK);
    assert_int_equal(keycache_find(c, h, &k), KB_OK); /* stale until published */
    assert_int_equal(k->daily_cap, 5000000);
    keycache_put(k);
    uint64_t before = revlog_head(log);
    revlog_publish_change(log, rk.seq, rk.hash);
    assert_int_equal(keycache_find(c, h, &k), KB_E_NOT_FOUND);
    assert_int_equal(cache_get(c, f->s, h, &k), KB_OK);
    assert_int_equal(k->daily_cap, 1000000);
    keycache_put(k);

    int all = 0, revoked = 0;
    revlog_publish(log, rk.seq, rk.hash);
    assert_true(revlog_read(log, before, revlog_head(log), count_entry, &all));
    assert_true(revlog_read_revoked(log, before, revlog_head(log), count_entry, &revoked));
    assert_int_equal(all, 2);
    assert_int_equal(revoked, 1);
    keycache_free(c);
    revlog_free(log);
}

/* The cases every backend passes. */
#define NEUTRAL(X)                                                                                 \
    X(test_list_filters)                                                                           \
    X(test_list_pagination)                                                                        \
    X(test_list_usage)                                                                             \
    X(test_keycache)                                                                               \
    X(test_revlog_change)

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown),
#define TPG(f) cmocka_unit_test_setup_teardown(f, setup_pg, teardown),

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {NEUTRAL(T)};
    const struct CMUnitTest pg_tests[] = {NEUTRAL(TPG)};
    int failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("postgres", pg_tests, NULL, NULL);
    return failed;
}
