/*
 * test_mailbox.c - the thread-to-loop mailbox (core/mailbox.h), the store
 * reader built on it (store/reader.h) and the revocation log
 * (store/revlog.h), under concurrent threads: every message is delivered
 * or dropped exactly once, in order; a read lands on the loop that asked;
 * a log reader sees each revocation in order or is told it lost some.
 */
#include <event2/event.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/mailbox.h"
#include "store/reader.h"
#include "store/revlog.h"
#include "store/store.h"

/* ---- mailbox ---- */

#define POSTERS 4
#define PER_POSTER 5000

struct msg {
    struct kb_mail mail;
    int poster, n;
};

static _Atomic int delivered, dropped;
static int last_seen[POSTERS];
static struct event_base *loop;

static void on_deliver(struct kb_mail *m)
{
    struct msg *x = (struct msg *)m;
    /* in order per poster */
    assert_int_equal(x->n, last_seen[x->poster] + 1);
    last_seen[x->poster] = x->n;
    atomic_fetch_add(&delivered, 1);
    free(x);
    if (atomic_load(&delivered) + atomic_load(&dropped) == POSTERS * PER_POSTER)
        event_base_loopexit(loop, NULL);
}

static void on_drop(struct kb_mail *m)
{
    atomic_fetch_add(&dropped, 1);
    free(m);
}

struct poster {
    struct kb_mailbox *mb;
    int id;
};

static void *post_all(void *arg)
{
    struct poster *p = arg;
    for (int i = 1; i <= PER_POSTER; i++) {
        struct msg *x = kb_calloc(1, sizeof *x);
        x->mail.deliver = on_deliver;
        x->mail.drop = on_drop;
        x->poster = p->id;
        x->n = i;
        mailbox_hold(p->mb);
        mailbox_post(p->mb, &x->mail);
    }
    return NULL;
}

static void test_mailbox_delivers_in_order(void **state)
{
    (void)state;
    loop = event_base_new();
    struct kb_mailbox *mb = mailbox_new(loop);
    atomic_store(&delivered, 0);
    atomic_store(&dropped, 0);
    memset(last_seen, 0, sizeof last_seen);
    pthread_t t[POSTERS];
    struct poster p[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        p[i] = (struct poster){mb, i};
        assert_int_equal(pthread_create(&t[i], NULL, post_all, &p[i]), 0);
    }
    event_base_dispatch(loop);
    for (int i = 0; i < POSTERS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&delivered), POSTERS * PER_POSTER);
    assert_int_equal(atomic_load(&dropped), 0);
    mailbox_close(mb);
    event_base_free(loop);
}

/* Closed while posters still post: every message is delivered or dropped,
 * exactly once (ASan reports a double free or a leak otherwise). */
static bool closed;

static void stop_soon(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kb_mailbox *mb = arg;
    if (atomic_load(&delivered) > 100 && !closed) {
        mailbox_close(mb);
        closed = true;
        event_base_loopbreak(loop);
    }
}

static void test_mailbox_close_races_posts(void **state)
{
    (void)state;
    loop = event_base_new();
    struct kb_mailbox *mb = mailbox_new(loop);
    atomic_store(&delivered, 0);
    atomic_store(&dropped, 0);
    memset(last_seen, 0, sizeof last_seen);
    mailbox_hold(mb); /* keeps it alive for the check below */
    closed = false;
    pthread_t t[POSTERS];
    struct poster p[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        p[i] = (struct poster){mb, i};
        assert_int_equal(pthread_create(&t[i], NULL, post_all, &p[i]), 0);
    }
    struct event *tick = event_new(loop, -1, EV_PERSIST, stop_soon, mb);
    struct timeval tv = {0, 1000};
    event_add(tick, &tv);
    event_base_dispatch(loop);
    if (!closed) /* everything was delivered before the tick: close now */
        mailbox_close(mb);
    for (int i = 0; i < POSTERS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&delivered) + atomic_load(&dropped), POSTERS * PER_POSTER);
    event_free(tick);
    struct msg *last = kb_calloc(1, sizeof *last);
    last->mail.deliver = on_deliver;
    last->mail.drop = on_drop;
    mailbox_post(mb, &last->mail); /* the hold: closed, so dropped here */
    assert_int_equal(atomic_load(&delivered) + atomic_load(&dropped), POSTERS * PER_POSTER + 1);
    event_base_free(loop);
}

/* A chain arrives whole and in order; to a closed mailbox it is dropped
 * whole, each message once. */
static void test_mailbox_chain(void **state)
{
    (void)state;
    loop = event_base_new();
    struct kb_mailbox *mb = mailbox_new(loop);
    atomic_store(&delivered, 0);
    atomic_store(&dropped, 0);
    memset(last_seen, 0, sizeof last_seen);
    struct msg *m[5];
    for (int i = 0; i < 5; i++) {
        m[i] = kb_calloc(1, sizeof *m[i]);
        m[i]->mail.deliver = on_deliver;
        m[i]->mail.drop = on_drop;
        m[i]->poster = 0;
        m[i]->n = i + 1;
        m[i]->mail.next = NULL;
        if (i)
            m[i - 1]->mail.next = &m[i]->mail;
        mailbox_hold(mb);
    }
    mailbox_post_chain(mb, &m[0]->mail, &m[4]->mail, 5);
    event_base_loop(loop, EVLOOP_ONCE);
    assert_int_equal(atomic_load(&delivered), 5);
    assert_int_equal(last_seen[0], 5);

    mailbox_hold(mb);
    mailbox_hold(mb);
    mailbox_close(mb);
    struct msg *a = kb_calloc(1, sizeof *a), *b = kb_calloc(1, sizeof *b);
    a->mail.drop = b->mail.drop = on_drop;
    a->mail.next = &b->mail;
    b->mail.next = NULL;
    mailbox_post_chain(mb, &a->mail, &b->mail, 2); /* frees the mailbox: the last holds */
    assert_int_equal(atomic_load(&dropped), 2);
    event_base_free(loop);
}

/* ---- reader ---- */

struct lookup {
    struct kb_read rd;
    uint8_t hash[KB_HASH_LEN];
    enum kb_err err;
    struct kb_key *key;
    pthread_t ran_on;
};

static int answered;

static void lk_run(struct kb_store *s, struct kb_read *rd)
{
    struct lookup *l = (struct lookup *)rd;
    l->ran_on = pthread_self();
    l->err = store_key_by_hash(s, l->hash, 0, &l->key);
}

static void lk_done(struct kb_read *rd)
{
    struct lookup *l = (struct lookup *)rd;
    assert_false(pthread_equal(l->ran_on, pthread_self())); /* the read ran elsewhere */
    if (++answered == 2)
        event_base_loopexit(loop, NULL);
}

static void lk_drop(struct kb_read *rd)
{
    struct lookup *l = (struct lookup *)rd;
    store_key_free(l->key);
}

static void test_reader_reads_off_the_loop(void **state)
{
    (void)state;
    char dir[] = "/tmp/kb-test-reader-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/store.db", dir);
    struct kb_store *s = NULL;
    char *em = NULL;
    assert_int_equal(store_open(path, "normal", true, &s, &em), KB_OK);
    struct kb_key k = {0};
    strcpy(k.id, "vk_reader");
    k.label = "reader";
    k.vendor = "stripe";
    k.allowed_endpoints = "[\"/v1/*\"]";
    k.metadata = "{}";
    k.daily_cap = 1;
    k.created_at = 1;
    k.expires_at = INT64_C(4000000000);
    uint8_t h[KB_HASH_LEN];
    memset(h, 7, sizeof h);
    assert_int_equal(store_key_insert(s, &k, h), KB_OK);

    struct kb_reader *r = NULL;
    assert_int_equal(reader_new(path, "normal", 1, 1, &r, &em), KB_OK);
    loop = event_base_new();
    struct kb_mailbox *mb = mailbox_new(loop);
    struct lookup a = {.rd = {.run = lk_run, .done = lk_done, .drop = lk_drop}};
    struct lookup b = a;
    memcpy(a.hash, h, sizeof h);
    memset(b.hash, 9, sizeof b.hash); /* unknown */
    answered = 0;
    assert_true(reader_submit(r, mb, &a.rd));
    /* the queue holds one: a second read waits its turn or is refused */
    bool queued = reader_submit(r, mb, &b.rd);
    if (!queued)
        answered++;
    event_base_dispatch(loop);
    assert_int_equal(a.err, KB_OK);
    assert_string_equal(a.key->id, "vk_reader");
    if (queued)
        assert_int_equal(b.err, KB_E_NOT_FOUND);
    store_key_free(a.key);
    mailbox_close(mb);
    reader_free(r);
    event_base_free(loop);
    store_close(s);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- revocation log ---- */

#define PUBLISHED 200000

static _Atomic bool publishing_done;

static void *publisher(void *arg)
{
    struct kb_revlog *rl = arg;
    uint8_t h[KB_HASH_LEN] = {0};
    for (int64_t i = 1; i <= PUBLISHED; i++) {
        memcpy(h, &i, sizeof i);
        revlog_publish(rl, i, h);
    }
    atomic_store(&publishing_done, true);
    return NULL;
}

struct follow {
    int64_t next; /* the seq expected next */
    bool ok;
};

static void expect(void *arg, int64_t seq, uint64_t hint)
{
    struct follow *f = arg;
    if (seq != f->next || hint != (uint64_t)seq)
        f->ok = false;
    f->next++;
}

static void test_revlog_in_order_or_lost(void **state)
{
    (void)state;
    struct kb_revlog *rl = revlog_new();
    atomic_store(&publishing_done, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, publisher, rl), 0);
    uint64_t seen = 0;
    int losses = 0, reads = 0;
    while (!atomic_load(&publishing_done) || seen != revlog_head(rl)) {
        uint64_t head = revlog_head(rl);
        if (head == seen)
            continue;
        struct follow f = {(int64_t)seen + 1, true};
        if (revlog_read(rl, seen, head, expect, &f))
            assert_true(f.ok); /* everything it passed on was right */
        else
            losses++; /* told: nothing wrong was passed on before the loss */
        assert_true(f.ok);
        seen = head;
        reads++;
    }
    pthread_join(t, NULL);
    assert_int_equal(revlog_head(rl), PUBLISHED);
    assert_true(reads > 0);
    (void)losses;
    revlog_publish_all(rl);
    struct follow f = {0, true};
    assert_false(revlog_read(rl, PUBLISHED, PUBLISHED + 1, expect, &f));
    revlog_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailbox_delivers_in_order),
        cmocka_unit_test(test_mailbox_close_races_posts),
        cmocka_unit_test(test_mailbox_chain),
        cmocka_unit_test(test_reader_reads_off_the_loop),
        cmocka_unit_test(test_revlog_in_order_or_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
