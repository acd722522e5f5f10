/*
 * pg_cluster.c - several nodes on one PostgreSQL store (docs/cluster.md):
 * joining (the node's lock, the cluster's key check, this start's row),
 * heartbeats, reaping dead nodes' reservations, and the key change log
 * other nodes follow (key_changes, NOTIFY keybrake_keys).
 *
 * A node is alive while its cluster connection holds its advisory lock
 * (a session lock on hashtextextended(node_id, 0)); its heartbeat says how
 * long ago it last spoke. A reaper settles a node only when both say it
 * is gone: the heartbeat is stale and the lock can be taken. The lock is
 * taken as a transaction lock then, released at the reaper's commit, so a
 * node restarting meanwhile waits at most that long.
 *
 * What a node holds is node_reservations / node_budget_reservations
 * (pg_keys.c, pg_budgets.c keep them beside spend and budget_spend):
 * settling moves each row's micros from reserved to spent (the worst
 * case) and deletes the row, in one transaction. Spend rows are locked
 * first, in key order, as reserve and settle lock them; a live writer's
 * batch may still hold several in another order, so a reaper waits for a
 * row at most SETTLE_LOCK_WAIT and then gives up (to try again at its
 * next round) rather than let the deadlock detector pick the writer.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/pg_int.h"

#define NODE_LOCK "hashtextextended($1::text, 0)"
#define SETTLE_LOCK_WAIT "SET LOCAL lock_timeout = '500ms'"

/* Which reservation rows a move takes: node $1's, of every start but $2
 * ('' : all), and with $3 only those whose start has no nodes row. */
#define MOVE_COND_OF(t)                                                                            \
    "node_id = $1::text AND boot_id <> $2::text AND (NOT $3::boolean OR NOT EXISTS "               \
    "(SELECT 1 FROM nodes n WHERE n.node_id = $1::text AND n.boot_id = " t ".boot_id))"
#define MOVE_KEYS MOVE_COND_OF("node_reservations")
#define MOVE_BUDGETS MOVE_COND_OF("node_budget_reservations")

static const char SQL_LOCK_SPEND[] =
    "SELECT 1 FROM spend WHERE (key_seq, day) IN (SELECT key_seq, day FROM node_reservations "
    "WHERE " MOVE_KEYS ") ORDER BY key_seq, day FOR UPDATE";
static const char SQL_LOCK_BUDGET[] =
    "SELECT 1 FROM budget_spend WHERE (budget_seq, period) IN (SELECT budget_seq, period "
    "FROM node_budget_reservations WHERE " MOVE_BUDGETS ") "
    "ORDER BY budget_seq, period FOR UPDATE";
/* reserved -> spent, at the worst case; the rows go */
static const char SQL_MOVE_SPEND[] =
    "WITH r AS (DELETE FROM node_reservations WHERE " MOVE_KEYS " "
    "RETURNING key_seq, day, micros), "
    "a AS (SELECT key_seq, day, sum(micros)::bigint AS m FROM r GROUP BY key_seq, day "
    "HAVING sum(micros) > 0), "
    "u AS (UPDATE spend SET reserved_micros = greatest(spend.reserved_micros - a.m, 0), "
    "spent_micros = spend.spent_micros + a.m FROM a "
    "WHERE spend.key_seq = a.key_seq AND spend.day = a.day RETURNING 1) "
    "SELECT count(*) FROM u";
static const char SQL_MOVE_BUDGET[] =
    "WITH r AS (DELETE FROM node_budget_reservations WHERE " MOVE_BUDGETS
    " RETURNING budget_seq, period, micros), "
    "a AS (SELECT budget_seq, period, sum(micros)::bigint AS m FROM r "
    "GROUP BY budget_seq, period HAVING sum(micros) > 0), "
    "u AS (UPDATE budget_spend SET "
    "reserved_micros = greatest(budget_spend.reserved_micros - a.m, 0), "
    "spent_micros = budget_spend.spent_micros + a.m FROM a "
    "WHERE budget_spend.budget_seq = a.budget_seq AND budget_spend.period = a.period "
    "RETURNING 1) SELECT count(*) FROM u";

static const char SQL_LOCK_NODE[] = "SELECT pg_try_advisory_lock(" NODE_LOCK ")";
static const char SQL_UNLOCK_NODE[] = "SELECT pg_advisory_unlock(" NODE_LOCK ")";
static const char SQL_XLOCK_NODE[] = "SELECT pg_try_advisory_xact_lock(" NODE_LOCK ")";
static const char SQL_CHECK_PUT[] =
    "INSERT INTO cluster (one, key_check) VALUES (true, $1::bytea) ON CONFLICT (one) DO NOTHING";
static const char SQL_CHECK_GET[] = "SELECT key_check FROM cluster WHERE one";
static const char SQL_NODE_UPSERT[] =
    "INSERT INTO nodes (node_id, boot_id, started_at, heartbeat_at) "
    "VALUES ($1::text, $2::text, now(), now()) ON CONFLICT (node_id) DO UPDATE SET "
    "boot_id = excluded.boot_id, started_at = now(), heartbeat_at = now()";
static const char SQL_NODE_BEAT[] = "UPDATE nodes SET heartbeat_at = now() "
                                    "WHERE node_id = $1::text AND boot_id = $2::text RETURNING 1";
/* rows of this node that reached 0 (pg_keys.c keeps them) on days no
 * reservation comes to any more */
static const char SQL_ZERO_ROWS[] =
    "DELETE FROM node_reservations WHERE node_id = $1::text AND micros = 0 "
    "AND day < floor(extract(epoch FROM now()) / 86400)::bigint - 1";
static const char SQL_STALE[] =
    "SELECT node_id FROM nodes WHERE node_id <> $1::text "
    "AND heartbeat_at < now() - $2::bigint * interval '1 millisecond' ORDER BY node_id";
/* the start reaped is tombstoned in the same statement: the fence of
 * pg.c's pg_begin keeps it from writing again if it still lives */
static const char SQL_NODE_DELETE[] =
    "WITH d AS (DELETE FROM nodes WHERE node_id = $1::text "
    "AND heartbeat_at < now() - $2::bigint * interval '1 millisecond' RETURNING node_id, boot_id) "
    "INSERT INTO reaped_boots (node_id, boot_id) SELECT node_id, boot_id FROM d "
    "ON CONFLICT DO NOTHING RETURNING 1";
/* ... and so are the unregistered starts whose reservations are settled */
static const char SQL_TOMB_UNREGISTERED[] =
    "INSERT INTO reaped_boots (node_id, boot_id) "
    "SELECT node_id, boot_id FROM node_reservations r WHERE node_id = $1::text AND NOT EXISTS "
    "(SELECT 1 FROM nodes n WHERE n.node_id = r.node_id AND n.boot_id = r.boot_id) "
    "UNION SELECT node_id, boot_id FROM node_budget_reservations r WHERE node_id = $1::text "
    "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = r.node_id "
    "AND n.boot_id = r.boot_id) ON CONFLICT DO NOTHING";
/* at a join: every earlier start of this node is over (the node's lock
 * proves no process of it holds a session); fenced like a reaped one, so
 * that one which merely lost its session writes nothing more */
static const char SQL_TOMB_EARLIER[] =
    "INSERT INTO reaped_boots (node_id, boot_id) "
    "SELECT node_id, boot_id FROM nodes WHERE node_id = $1::text AND boot_id <> $2::text "
    "UNION SELECT node_id, boot_id FROM node_reservations WHERE node_id = $1::text "
    "AND boot_id <> $2::text UNION SELECT node_id, boot_id FROM node_budget_reservations "
    "WHERE node_id = $1::text AND boot_id <> $2::text ON CONFLICT DO NOTHING";
static const char SQL_REAPED[] =
    "SELECT count(*) FROM reaped_boots WHERE node_id = $1::text AND boot_id = $2::text";
/* what nobody needs after a day: the change log (a node away longer
 * forgets its caches' doubts; admission reads the store anyway) and the
 * tombstones (a start reaped a day ago is long gone) */
static const char SQL_PRUNE_CHANGES[] =
    "DELETE FROM key_changes WHERE at < now() - interval '1 day'";
static const char SQL_PRUNE_TOMBS[] =
    "DELETE FROM reaped_boots WHERE at < now() - interval '1 day'";
/* reservations of starts with no nodes row (one that died before it
 * registered, or after it was reaped) */
static const char SQL_UNREGISTERED[] =
    "SELECT node_id FROM node_reservations r WHERE node_id <> $1::text AND NOT EXISTS "
    "(SELECT 1 FROM nodes n WHERE n.node_id = r.node_id AND n.boot_id = r.boot_id) "
    "UNION SELECT node_id FROM node_budget_reservations r WHERE node_id <> $1::text "
    "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = r.node_id "
    "AND n.boot_id = r.boot_id) ORDER BY 1";
static const char SQL_CHANGES_MAX[] = "SELECT coalesce(max(id), 0) FROM key_changes";
static const char SQL_CHANGES[] = "SELECT id, key_seq, token_hash, revoked FROM key_changes "
                                  "WHERE id > $1::bigint ORDER BY id LIMIT 1000";
static const char SQL_LISTEN[] = "LISTEN keybrake_keys";

/* Runs a statement whose one row holds a count or a boolean. */
static enum kb_err one_value(struct kb_store *s, const char *sql, const struct pg_args *a,
                             int64_t *v, bool *b)
{
    enum kb_err err;
    PGresult *r = pg__run(s, sql, a, &err);
    if (err == KB_OK && PQntuples(r) != 1)
        err = KB_E_STORE;
    if (err == KB_OK) {
        if (v)
            *v = pg__i64(r, 0, 0);
        if (b) {
            const char *t = pg__text(r, 0, 0);
            *b = t && t[0] == 't';
        }
    }
    PQclear(r);
    return err;
}

/* Settles node's reservations (see MOVE_COND) at their worst case, spend
 * rows locked first; adds the counters touched to *count. Inside the
 * caller's transaction. */
static enum kb_err move(struct kb_store *s, const char *node, const char *not_boot,
                        bool unregistered, int64_t *count)
{
    struct pg_args a = {0};
    pg_arg_text(&a, node);
    pg_arg_text(&a, not_boot);
    pg_arg_bool(&a, unregistered);
    int64_t keys = 0, budgets = 0;
    enum kb_err err;
    if ((err = pg__do(s, SQL_LOCK_SPEND, &a)) != KB_OK ||
        (err = pg__do(s, SQL_LOCK_BUDGET, &a)) != KB_OK ||
        (err = one_value(s, SQL_MOVE_SPEND, &a, &keys, NULL)) != KB_OK ||
        (err = one_value(s, SQL_MOVE_BUDGET, &a, &budgets, NULL)) != KB_OK)
        return err;
    *count += keys + budgets;
    return KB_OK;
}

enum kb_err pg__spend_settle_orphans(struct kb_store *s, int64_t *count)
{
    /* keys and budgets in one transaction: a crash between the two must
     * not settle one side twice */
    bool own;
    int64_t n = 0;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    if (own)
        err = pg__exec(s, SETTLE_LOCK_WAIT);
    if (err == KB_OK)
        err = move(s, pg(s)->node, pg(s)->boot, false, &n);
    if ((err = pg__txn_end(s, own, err)) == KB_OK)
        *count = n;
    return err;
}

/* Takes this node's session lock on s; KB_E_EXISTS when another session
 * holds it. */
static enum kb_err lock_node(struct kb_store *s)
{
    struct pg_args a = {0};
    pg_arg_text(&a, pg(s)->node);
    bool got = false;
    enum kb_err err = one_value(s, SQL_LOCK_NODE, &a, NULL, &got);
    if (err != KB_OK)
        return err;
    if (!got)
        return KB_E_EXISTS;
    pg(s)->node_locked = true;
    return KB_OK;
}

static void unlock_node(struct kb_store *s)
{
    if (!pg(s)->node_locked)
        return;
    struct pg_args a = {0};
    pg_arg_text(&a, pg(s)->node);
    (void)pg__do(s, SQL_UNLOCK_NODE, &a);
    pg(s)->node_locked = false;
}

/* The cluster's key check: recorded by the first node, compared (in
 * constant time) by every other. */
static enum kb_err check_key(struct kb_store *s, const uint8_t key_check[KB_HASH_LEN],
                             char **errmsg)
{
    struct pg_args a = {0};
    pg_arg_bytea(&a, key_check, KB_HASH_LEN);
    enum kb_err err = pg__do(s, SQL_CHECK_PUT, &a);
    if (err != KB_OK)
        return err;
    PGresult *r = pg__run(s, SQL_CHECK_GET, NULL, &err);
    uint8_t h[KB_HASH_LEN];
    if (err == KB_OK && (PQntuples(r) != 1 || pg__bytea(r, 0, 0, h, sizeof h) != KB_HASH_LEN ||
                         !crypto_equal(h, key_check, KB_HASH_LEN))) {
        kb_set_errmsg(errmsg, "this node's server key differs from the cluster's: give every "
                              "node the same server_key");
        err = KB_E_CONFIG;
    }
    PQclear(r);
    return err;
}

enum kb_err pg__node_join(struct kb_store *s, const uint8_t key_check[KB_HASH_LEN],
                          int64_t *settled_out, char **errmsg)
{
    struct pg *c = pg(s);
    enum kb_err err = KB_OK;
    if (!c->node_locked && (err = lock_node(s)) != KB_OK) {
        if (err == KB_E_EXISTS)
            kb_set_errmsg(errmsg,
                          "node id \"%s\" is in use by another running process: give each "
                          "node its own node_id",
                          c->node);
        else
            kb_set_errmsg(errmsg, "cannot take the node's lock: %s", c->err);
        return err;
    }
    bool own;
    int64_t settled = 0;
    if ((err = pg__txn_begin(s, &own)) == KB_OK) {
        struct pg_args a = {0};
        pg_arg_text(&a, c->node);
        pg_arg_text(&a, c->boot);
        if ((!own || (err = pg__exec(s, SETTLE_LOCK_WAIT)) == KB_OK) &&
            (err = check_key(s, key_check, errmsg)) == KB_OK &&
            (err = pg__do(s, SQL_TOMB_EARLIER, &a)) == KB_OK &&
            (err = pg__do(s, SQL_NODE_UPSERT, &a)) == KB_OK)
            err = move(s, c->node, c->boot, false, &settled);
        bool config = err == KB_E_CONFIG;
        err = pg__txn_end(s, own, err);
        if (err != KB_OK && !config)
            kb_set_errmsg(errmsg, "cannot join the cluster: %s", c->err);
    } else {
        kb_set_errmsg(errmsg, "cannot join the cluster: %s", c->err);
    }
    if (err != KB_OK)
        unlock_node(s); /* a node that did not join does not hold its id */
    else
        *settled_out = settled;
    return err;
}

enum kb_err pg__node_heartbeat(struct kb_store *s)
{
    struct pg *c = pg(s);
    struct pg_args a = {0};
    pg_arg_text(&a, c->node);
    pg_arg_text(&a, c->boot);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_NODE_BEAT, &a, &err);
    bool found = err == KB_OK && PQntuples(r) == 1;
    PQclear(r);
    if (err != KB_OK)
        return err;
    /* after a reconnect the session lock went with the old session: take
     * it again; held elsewhere, another process runs with our node id */
    if (!c->node_locked && (err = lock_node(s)) != KB_OK)
        return err;
    if (!found) {
        /* reaped meanwhile: its reservations were settled, and this start
         * may not write again (the fence); the node must restart */
        int64_t reaped = 0;
        if ((err = one_value(s, SQL_REAPED, &a, &reaped, NULL)) != KB_OK)
            return err;
        if (reaped)
            return KB_E_NOT_FOUND;
        if ((err = pg__do(s, SQL_NODE_UPSERT, &a)) != KB_OK)
            return err; /* its row was removed by hand: registered again */
    }
    struct pg_args z = {0};
    pg_arg_text(&z, c->node);
    (void)pg__do(s, SQL_ZERO_ROWS, &z); /* housekeeping only */
    (void)pg__do(s, SQL_PRUNE_CHANGES, NULL);
    (void)pg__do(s, SQL_PRUNE_TOMBS, NULL);
    return KB_OK;
}

/* Reaps node `node` in one transaction if its lock is free and (stale)
 * its nodes row is still stale, or (!stale) its unregistered starts'
 * reservations; *reaped says whether it did. */
static enum kb_err reap_one(struct kb_store *s, const char *node, bool stale, int64_t dead_after_ms,
                            bool *reaped, int64_t *counters)
{
    *reaped = false;
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    struct pg_args a = {0};
    pg_arg_text(&a, node);
    bool free_lock = false;
    int64_t n = 0;
    if (own)
        err = pg__exec(s, SETTLE_LOCK_WAIT);
    if (err == KB_OK && (err = one_value(s, SQL_XLOCK_NODE, &a, NULL, &free_lock)) == KB_OK &&
        free_lock) {
        if (stale) {
            /* the same stale condition: of two reapers, one deletes it */
            pg_arg_i64(&a, dead_after_ms);
            PGresult *r = pg__run(s, SQL_NODE_DELETE, &a, &err);
            *reaped = err == KB_OK && PQntuples(r) == 1;
            PQclear(r);
        } else {
            struct pg_args t = {0};
            pg_arg_text(&t, node);
            *reaped = (err = pg__do(s, SQL_TOMB_UNREGISTERED, &t)) == KB_OK;
        }
        if (err == KB_OK && *reaped)
            err = move(s, node, "", !stale, &n);
    }
    if ((err = pg__txn_end(s, own, err)) != KB_OK) {
        *reaped = false;
        return err;
    }
    if (*reaped)
        *counters += n;
    return KB_OK;
}

/* The node ids a query (with $1 = this node, $2 optional) lists. */
static enum kb_err node_list(struct kb_store *s, const char *sql, const struct pg_args *a,
                             char ***ids, int *n)
{
    enum kb_err err;
    PGresult *r = pg__run(s, sql, a, &err);
    *ids = NULL;
    *n = 0;
    if (err == KB_OK && PQntuples(r) > 0) {
        *n = PQntuples(r);
        *ids = kb_calloc((size_t)*n, sizeof **ids);
        for (int i = 0; i < *n; i++)
            (*ids)[i] = pg__strdup(r, i, 0);
    }
    PQclear(r);
    return err;
}

static void ids_free(char **ids, int n)
{
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

enum kb_err pg__node_reap(struct kb_store *s, int64_t dead_after_ms, int64_t *nodes,
                          int64_t *counters)
{
    int64_t reaped_nodes = 0, touched = 0;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: nodes with a stale heartbeat; pass 1: reservations of
         * starts without a nodes row (never registered, or registered
         * again under a new start after a reap) whose node is gone */
        struct pg_args a = {0};
        pg_arg_text(&a, pg(s)->node);
        if (pass == 0)
            pg_arg_i64(&a, dead_after_ms);
        char **ids = NULL;
        int n = 0;
        enum kb_err err = node_list(s, pass == 0 ? SQL_STALE : SQL_UNREGISTERED, &a, &ids, &n);
        for (int i = 0; err == KB_OK && i < n; i++) {
            bool reaped = false;
            err = reap_one(s, ids[i], pass == 0, dead_after_ms, &reaped, &touched);
            if (reaped && pass == 0)
                reaped_nodes++;
        }
        ids_free(ids, n);
        if (err != KB_OK)
            return err;
    }
    *nodes = reaped_nodes;
    *counters = touched;
    return KB_OK;
}

enum kb_err pg__key_changes(struct kb_store *s, int64_t after_id, int64_t *last_id,
                            struct kb_key_change_note **out, size_t *n)
{
    enum kb_err err;
    if (after_id < 0) {
        int64_t max = 0;
        if ((err = one_value(s, SQL_CHANGES_MAX, NULL, &max, NULL)) != KB_OK)
            return err;
        *last_id = max;
        *out = NULL;
        *n = 0;
        return KB_OK;
    }
    struct pg_args a = {0};
    pg_arg_i64(&a, after_id);
    PGresult *r = pg__run(s, SQL_CHANGES, &a, &err);
    if (err != KB_OK) {
        PQclear(r);
        return err;
    }
    int rows = PQntuples(r);
    struct kb_key_change_note *list = NULL;
    int64_t last = after_id;
    if (rows > 0) {
        list = kb_calloc((size_t)rows, sizeof *list);
        for (int i = 0; i < rows; i++) {
            list[i].id = pg__i64(r, i, 0);
            list[i].seq = pg__i64(r, i, 1);
            if (pg__bytea(r, i, 2, list[i].hash, KB_HASH_LEN) != KB_HASH_LEN)
                memset(list[i].hash, 0, KB_HASH_LEN);
            const char *t = pg__text(r, i, 3);
            list[i].revoked = t && t[0] == 't';
            last = list[i].id;
        }
    }
    PQclear(r);
    *out = list;
    *n = (size_t)rows;
    *last_id = last;
    return KB_OK;
}

/* Takes the notifications libpq has read; true when there was one. */
static bool drain(PGconn *conn)
{
    bool any = false;
    PGnotify *nf;
    while ((nf = PQnotifies(conn)) != NULL) {
        any = true;
        PQfreemem(nf);
    }
    return any;
}

enum kb_err pg__wait_change(struct kb_store *s, int timeout_ms, bool *notified)
{
    struct pg *c = pg(s);
    *notified = false;
    if (!c->listening) {
        /* after a reconnect too (pg.c clears the flag): a new session
         * listens to nothing */
        enum kb_err err = pg__do(s, SQL_LISTEN, NULL);
        if (err != KB_OK)
            return err;
        c->listening = true;
    }
    if (PQconsumeInput(c->conn) == 0)
        goto broken;
    if (drain(c->conn)) {
        *notified = true;
        return KB_OK;
    }
    int64_t deadline = pg__mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int64_t left = deadline - pg__mono_ms();
        struct pollfd p = {.fd = PQsocket(c->conn), .events = POLLIN};
        if (p.fd < 0)
            goto broken;
        int rc = poll(&p, 1, left > 0 ? (int)left : 0);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            goto broken;
        if (rc > 0) {
            if (PQconsumeInput(c->conn) == 0)
                goto broken;
            if (drain(c->conn)) {
                *notified = true;
                return KB_OK;
            }
            if (PQstatus(c->conn) != CONNECTION_OK)
                goto broken;
        }
        if (left <= 0)
            return KB_OK;
    }
broken:
    snprintf(c->err, sizeof c->err, "PostgreSQL connection lost while waiting: %s",
             PQerrorMessage(c->conn));
    c->listening = false;
    return KB_E_STORE;
}
