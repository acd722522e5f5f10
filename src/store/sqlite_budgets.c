/*
 * sqlite_budgets.c - budgets on the embedded store (store.h, "budgets";
 * docs/budgets.md).
 *
 * A reservation on a budget is one conditional upsert on its window's
 * spend row, with the cap read inside the same statement, exactly as the
 * key's daily spend is reserved (sqlite.c). A request reserves on every
 * budget of its key's chains inside the writer's transaction; when one
 * refuses, the ones already taken are given back before the transaction
 * ends, so no other transaction ever sees a partial reservation.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "store/backend.h"
#include "store/sqlite_int.h"
#include "store/store.h"

enum bstmt {
    BS_INSERT = 0,     /* a new budget */
    BS_SEQ = 1,        /* seq by name */
    BS_PARENT_OF = 2,  /* parent seq by seq */
    BS_GET = 3,        /* one budget by name */
    BS_LIST = 4,       /* budgets after a seq */
    BS_USAGE = 5,      /* a budget's spend in one period */
    BS_ROW = 6,        /* cap, window, parent by seq (update) */
    BS_UPDATE = 7,     /* write cap, window, parent */
    BS_HEIGHT = 8,     /* budgets on the longest chain below one, itself included */
    BS_KEYS_USING = 9, /* unrevoked keys naming one */
    BS_CHILDREN = 10,  /* budgets naming one as parent */
    BS_DEL_LINKS = 11, /* drop its links (revoked keys only by then) */
    BS_DEL_SPEND = 12, /* drop its spend rows */
    BS_DELETE = 13,    /* drop it */
    BS_LINK = 14,      /* key -> budget */
    BS_KEY_NAMES = 15, /* a key's budgets */
    BS_LINKS = 16,     /* a key's budgets, by seq */
    BS_RESERVE = 17,   /* reserve if it fits */
    BS_UNRESERVE = 18, /* give back a reservation just taken */
    BS_SETTLE = 19,    /* replace a reservation by the actual cost */
    BS_ORPHANS = 20,   /* settle every open reservation at its worst case */
    BS_NODE = 21,      /* window, parent and name by seq (the chain walk) */
    BS__COUNT = 22,    /* number of statements */
};
_Static_assert(BS__COUNT <= KB_SQ_BUDGET_STMTS, "budget statement cache too small");

#define BUDGET_COLS                                                                                \
    "b.seq, b.name, b.cap_micros, b.win, p.name, b.created_at, b.updated_at, "                     \
    "(SELECT count(*) FROM key_budgets kb WHERE kb.budget_seq = b.seq), b.alert_thresholds "       \
    "FROM budgets b LEFT JOIN budgets p ON p.seq = b.parent_seq "

static const char *const bsql[BS__COUNT] = {
    [BS_INSERT] = "INSERT INTO budgets (name, cap_micros, win, parent_seq, created_at, updated_at) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    [BS_SEQ] = "SELECT seq FROM budgets WHERE name = ?1",
    [BS_PARENT_OF] = "SELECT parent_seq FROM budgets WHERE seq = ?1",
    [BS_GET] = "SELECT " BUDGET_COLS "WHERE b.name = ?1",
    [BS_LIST] = "SELECT " BUDGET_COLS "WHERE b.seq > ?1 ORDER BY b.seq LIMIT ?2",
    [BS_USAGE] = "SELECT spent_micros, reserved_micros, requests FROM budget_spend "
                 "WHERE budget_seq = ?1 AND period = ?2",
    [BS_ROW] = "SELECT cap_micros, win, parent_seq FROM budgets WHERE seq = ?1",
    [BS_UPDATE] = "UPDATE budgets SET cap_micros = ?2, win = ?3, parent_seq = ?4, "
                  "updated_at = ?5 WHERE seq = ?1",
    [BS_HEIGHT] = "WITH RECURSIVE d(seq, depth) AS (SELECT ?1, 1 UNION ALL "
                  "SELECT b.seq, d.depth + 1 FROM budgets b JOIN d ON b.parent_seq = d.seq "
                  "WHERE d.depth <= 16) SELECT max(depth) FROM d",
    [BS_KEYS_USING] = "SELECT count(*) FROM key_budgets kb JOIN keys k ON k.seq = kb.key_seq "
                      "WHERE kb.budget_seq = ?1 AND k.revoked_at IS NULL",
    [BS_CHILDREN] = "SELECT count(*) FROM budgets WHERE parent_seq = ?1",
    [BS_DEL_LINKS] = "DELETE FROM key_budgets WHERE budget_seq = ?1",
    [BS_DEL_SPEND] = "DELETE FROM budget_spend WHERE budget_seq = ?1",
    [BS_DELETE] = "DELETE FROM budgets WHERE seq = ?1",
    [BS_LINK] = "INSERT OR IGNORE INTO key_budgets (key_seq, budget_seq) VALUES (?1, ?2)",
    [BS_KEY_NAMES] = "SELECT b.name FROM key_budgets kb JOIN budgets b ON b.seq = kb.budget_seq "
                     "WHERE kb.key_seq = ?1 ORDER BY b.name",
    /* the chain is walked one primary-key lookup at a time (reserve): a
     * recursive query with its sorters cost ~50x a key's reservation */
    [BS_LINKS] = "SELECT budget_seq FROM key_budgets WHERE key_seq = ?1",
    [BS_NODE] = "SELECT win, parent_seq, name FROM budgets WHERE seq = ?1",
    /* one statement: a row only when it fits, the cap read as it is now */
    [BS_RESERVE] = "INSERT INTO budget_spend (budget_seq, period, reserved_micros, requests) "
                   "SELECT ?1, ?2, ?3, 1 FROM budgets WHERE seq = ?1 AND ?3 <= cap_micros "
                   "ON CONFLICT (budget_seq, period) DO UPDATE SET "
                   "reserved_micros = reserved_micros + ?3, requests = requests + 1 "
                   "WHERE spent_micros + reserved_micros + ?3 <= "
                   "(SELECT cap_micros FROM budgets WHERE seq = ?1)",
    [BS_UNRESERVE] = "UPDATE budget_spend SET reserved_micros = reserved_micros - ?3, "
                     "requests = requests - 1 WHERE budget_seq = ?1 AND period = ?2",
    [BS_SETTLE] = "UPDATE budget_spend SET reserved_micros = max(reserved_micros - ?3, 0), "
                  "spent_micros = spent_micros + ?4 WHERE budget_seq = ?1 AND period = ?2 "
                  /* what the alert check needs (sqlite_alerts.c), no statement of its own */
                  "RETURNING spent_micros, alert_level, "
                  "(SELECT cap_micros FROM budgets WHERE seq = ?1), "
                  "(SELECT alert_thresholds FROM budgets WHERE seq = ?1)",
    [BS_ORPHANS] = "UPDATE budget_spend SET spent_micros = spent_micros + reserved_micros, "
                   "reserved_micros = 0 WHERE reserved_micros > 0",
};

static sqlite3_stmt *bst(struct kb_store *s, enum bstmt id)
{
    sqlite3_stmt **c = store__budget_stmts(s);
    if (!c[id] && sqlite3_prepare_v3(store__db(s), bsql[id], -1, SQLITE_PREPARE_PERSISTENT, &c[id],
                                     NULL) != SQLITE_OK)
        return NULL;
    return c[id];
}

static void done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement of integer arguments that returns nothing. */
static enum kb_err run(struct kb_store *s, enum bstmt id, int nargs, const int64_t *args)
{
    sqlite3_stmt *st = bst(s, id);
    if (!st)
        return KB_E_STORE;
    for (int i = 0; i < nargs; i++)
        sqlite3_bind_int64(st, i + 1, args[i]);
    int rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

/* The first column of the first row of a statement of integer arguments;
 * KB_E_NOT_FOUND without a row (*out untouched), *out 0 for NULL. */
static enum kb_err one(struct kb_store *s, enum bstmt id, int nargs, const int64_t *args,
                       int64_t *out)
{
    sqlite3_stmt *st = bst(s, id);
    if (!st)
        return KB_E_STORE;
    for (int i = 0; i < nargs; i++)
        sqlite3_bind_int64(st, i + 1, args[i]);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

static enum kb_err seq_of(struct kb_store *s, const char *name, int64_t *seq)
{
    sqlite3_stmt *st = bst(s, BS_SEQ);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *seq = sqlite3_column_int64(st, 0);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

/* Opens a write transaction unless one is open (the writer's); see sqlite.c. */
static enum kb_err txn_begin(struct kb_store *s, bool *own)
{
    *own = sqlite3_get_autocommit(store__db(s)) != 0;
    return *own && sqlite3_exec(store__db(s), "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK
               ? KB_E_STORE
               : KB_OK;
}

static enum kb_err txn_end(struct kb_store *s, bool own, enum kb_err err)
{
    if (!own)
        return err;
    if (err == KB_OK && sqlite3_exec(store__db(s), "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return KB_OK;
    sqlite3_exec(store__db(s), "ROLLBACK", NULL, NULL, NULL);
    return err == KB_OK ? KB_E_STORE : err;
}

int64_t store_budget_period(enum kb_budget_window w, int64_t now)
{
    if (w == KB_WIN_DAY)
        return now >= 0 ? now / 86400 : (now - 86399) / 86400;
    if (w == KB_WIN_MONTH) {
        time_t t = (time_t)now;
        struct tm tm;
        if (!gmtime_r(&t, &tm))
            return 0;
        return ((int64_t)tm.tm_year - 70) * 12 + tm.tm_mon;
    }
    return 0;
}

/* Budgets on the chain from seq up to its root, seq included: *len, or
 * *len > KB_BUDGET_DEPTH_MAX when longer (or a cycle); *hit when `find`
 * is on it. */
static enum kb_err chain_len(struct kb_store *s, int64_t seq, int64_t find, int *len, bool *hit)
{
    *len = 0;
    *hit = false;
    while (seq && *len <= KB_BUDGET_DEPTH_MAX) {
        (*len)++;
        if (seq == find)
            *hit = true;
        int64_t parent = 0;
        enum kb_err err = one(s, BS_PARENT_OF, 1, &seq, &parent);
        if (err == KB_E_NOT_FOUND)
            break;
        if (err != KB_OK)
            return err;
        seq = parent;
    }
    return KB_OK;
}

enum kb_err sqlite__budget_insert(struct kb_store *s, struct kb_budget *b, char **errmsg)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    int64_t parent = 0, seq = 0;
    int len = 0;
    bool hit;
    if (seq_of(s, b->name, &seq) == KB_OK) {
        kb_set_errmsg(errmsg, "a budget named \"%s\" exists already", b->name);
        err = KB_E_EXISTS;
        goto out;
    }
    if (b->parent) {
        if ((err = seq_of(s, b->parent, &parent)) != KB_OK) {
            if (err == KB_E_NOT_FOUND)
                kb_set_errmsg(errmsg, "no budget named \"%s\" (parent)", b->parent);
            goto out;
        }
        if ((err = chain_len(s, parent, 0, &len, &hit)) != KB_OK)
            goto out;
        if (len + 1 > KB_BUDGET_DEPTH_MAX) {
            kb_set_errmsg(errmsg, "a budget chain may hold at most %d budgets",
                          KB_BUDGET_DEPTH_MAX);
            err = KB_E_INVALID;
            goto out;
        }
    }
    sqlite3_stmt *st = bst(s, BS_INSERT);
    if (!st) {
        err = KB_E_STORE;
        goto out;
    }
    sqlite3_bind_text(st, 1, b->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, b->cap);
    sqlite3_bind_int64(st, 3, (int64_t)b->window);
    if (parent)
        sqlite3_bind_int64(st, 4, parent);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_int64(st, 5, b->created_at);
    int rc = sqlite3_step(st);
    done(st);
    if (rc == SQLITE_CONSTRAINT)
        err = KB_E_INVALID;
    else if (rc != SQLITE_DONE)
        err = KB_E_STORE;
    else
        b->seq = sqlite3_last_insert_rowid(store__db(s));
out:
    return txn_end(s, own, err);
}

/* Reads the current row of st (BUDGET_COLS) and its usage in `now`'s period. */
static enum kb_err fill(struct kb_store *s, sqlite3_stmt *st, int64_t now, struct kb_budget *b)
{
    const char *parent = (const char *)sqlite3_column_text(st, 4);
    b->seq = sqlite3_column_int64(st, 0);
    b->name = kb_strdup((const char *)sqlite3_column_text(st, 1));
    b->cap = sqlite3_column_int64(st, 2);
    b->window = (enum kb_budget_window)sqlite3_column_int(st, 3);
    b->parent = parent ? kb_strdup(parent) : NULL;
    b->created_at = sqlite3_column_int64(st, 5);
    b->updated_at = sqlite3_column_int64(st, 6);
    b->keys = sqlite3_column_int64(st, 7);
    b->nthresholds =
        store__thresholds_parse((const char *)sqlite3_column_text(st, 8), b->thresholds);
    b->period = store_budget_period(b->window, now);
    sqlite3_stmt *u = bst(s, BS_USAGE);
    if (!u)
        return KB_E_STORE;
    sqlite3_bind_int64(u, 1, b->seq);
    sqlite3_bind_int64(u, 2, b->period);
    int rc = sqlite3_step(u);
    if (rc == SQLITE_ROW) {
        b->spent = sqlite3_column_int64(u, 0);
        b->reserved = sqlite3_column_int64(u, 1);
        b->requests = sqlite3_column_int64(u, 2);
    }
    done(u);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

enum kb_err sqlite__budget_get(struct kb_store *s, const char *name, int64_t now,
                               struct kb_budget **out)
{
    sqlite3_stmt *st = bst(s, BS_GET);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    enum kb_err err = rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
    struct kb_budget *b = NULL;
    if (err == KB_OK) {
        b = kb_calloc(1, sizeof *b);
        err = fill(s, st, now, b);
    }
    done(st);
    if (err != KB_OK) {
        store_budget_free(b);
        return err;
    }
    *out = b;
    return KB_OK;
}

enum kb_err sqlite__budget_list(struct kb_store *s, int64_t after_seq, int limit, int64_t now,
                                struct kb_budget **out, size_t *n)
{
    if (limit < 1 || limit > 1000)
        return KB_E_INVALID;
    sqlite3_stmt *st = bst(s, BS_LIST);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, after_seq);
    sqlite3_bind_int64(st, 2, limit);
    struct kb_budget *v = kb_calloc((size_t)limit, sizeof *v);
    size_t cnt = 0;
    enum kb_err err = KB_OK;
    int rc;
    while (err == KB_OK && (rc = sqlite3_step(st)) == SQLITE_ROW && cnt < (size_t)limit)
        err = fill(s, st, now, &v[cnt++]);
    if (err == KB_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        err = KB_E_STORE;
    done(st);
    if (err != KB_OK) {
        store_budget_list_free(v, cnt);
        return err;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}

/* Whether budget seq may take `parent` (0: none) as its parent. */
static enum kb_err parent_ok(struct kb_store *s, int64_t seq, int64_t parent, char **errmsg)
{
    if (!parent)
        return KB_OK;
    int above = 0;
    int64_t below = 0;
    bool cycle;
    enum kb_err err = chain_len(s, parent, seq, &above, &cycle);
    if (err == KB_OK && !cycle)
        err = one(s, BS_HEIGHT, 1, &seq, &below);
    if (err != KB_OK)
        return err;
    if (cycle) {
        kb_set_errmsg(errmsg, "that parent would make a cycle of budgets");
        return KB_E_INVALID;
    }
    if (above + below > KB_BUDGET_DEPTH_MAX) {
        kb_set_errmsg(errmsg, "a budget chain may hold at most %d budgets", KB_BUDGET_DEPTH_MAX);
        return KB_E_INVALID;
    }
    return KB_OK;
}

enum kb_err sqlite__budget_update(struct kb_store *s, const char *name,
                                  const struct kb_budget_change *c, int64_t now, char **errmsg)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    int64_t seq = 0, parent = 0;
    sqlite3_stmt *st;
    if ((err = seq_of(s, name, &seq)) != KB_OK) {
        if (err == KB_E_NOT_FOUND)
            kb_set_errmsg(errmsg, "no budget named \"%s\"", name);
        goto out;
    }
    if (!(st = bst(s, BS_ROW))) {
        err = KB_E_STORE;
        goto out;
    }
    sqlite3_bind_int64(st, 1, seq);
    if (sqlite3_step(st) != SQLITE_ROW) {
        done(st);
        err = KB_E_STORE;
        goto out;
    }
    int64_t args[5] = {seq, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                       sqlite3_column_int64(st, 2), now};
    done(st);
    if (c->has_cap)
        args[1] = c->cap;
    if (c->has_window)
        args[2] = (int64_t)c->window;
    if (c->has_parent) {
        if (c->parent && (err = seq_of(s, c->parent, &parent)) != KB_OK) {
            if (err == KB_E_NOT_FOUND) {
                kb_set_errmsg(errmsg, "no budget named \"%s\" (parent)", c->parent);
                err = KB_E_INVALID;
            }
            goto out;
        }
        if ((err = parent_ok(s, seq, parent, errmsg)) != KB_OK)
            goto out;
        args[3] = parent;
    }
    if (!(st = bst(s, BS_UPDATE))) {
        err = KB_E_STORE;
        goto out;
    }
    for (int i = 0; i < 5; i++)
        sqlite3_bind_int64(st, i + 1, args[i]);
    if (!args[3])
        sqlite3_bind_null(st, 4);
    int rc = sqlite3_step(st);
    done(st);
    err = rc == SQLITE_DONE ? KB_OK : rc == SQLITE_CONSTRAINT ? KB_E_INVALID : KB_E_STORE;
out:
    return txn_end(s, own, err);
}

enum kb_err sqlite__budget_delete(struct kb_store *s, const char *name, char **errmsg)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    int64_t seq = 0, keys = 0, children = 0;
    if ((err = seq_of(s, name, &seq)) != KB_OK ||
        (err = one(s, BS_KEYS_USING, 1, &seq, &keys)) != KB_OK ||
        (err = one(s, BS_CHILDREN, 1, &seq, &children)) != KB_OK)
        goto out;
    if (keys || children) {
        kb_set_errmsg(errmsg,
                      "budget \"%s\" is still named by %lld unrevoked key(s) and is the parent "
                      "of %lld budget(s)",
                      name, (long long)keys, (long long)children);
        err = KB_E_BUDGET_IN_USE;
        goto out;
    }
    if ((err = run(s, BS_DEL_LINKS, 1, &seq)) == KB_OK &&
        (err = run(s, BS_DEL_SPEND, 1, &seq)) == KB_OK)
        err = run(s, BS_DELETE, 1, &seq);
out:
    return txn_end(s, own, err);
}

enum kb_err sqlite__key_budget_add(struct kb_store *s, int64_t key_seq, const char *name)
{
    int64_t seq = 0;
    enum kb_err err = seq_of(s, name, &seq);
    if (err != KB_OK)
        return err;
    const int64_t args[2] = {key_seq, seq};
    return run(s, BS_LINK, 2, args);
}

enum kb_err sqlite__key_budgets(struct kb_store *s, int64_t key_seq, char ***names, size_t *n)
{
    sqlite3_stmt *st = bst(s, BS_KEY_NAMES);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, key_seq);
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 4;
            v = kb_realloc(v, cap * sizeof *v);
        }
        v[cnt++] = kb_strdup((const char *)sqlite3_column_text(st, 0));
    }
    done(st);
    if (rc != SQLITE_DONE) {
        store_names_free(v, cnt);
        return KB_E_STORE;
    }
    *names = v;
    *n = cnt;
    return KB_OK;
}

/* Appends seq to v (growing it) unless it is there: a budget reached by two
 * paths is reserved on once, and a cycle cannot loop. */
static void add_once(int64_t **v, size_t *n, size_t *cap, int64_t seq)
{
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i] == seq)
            return;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        *v = kb_realloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = seq;
}

enum kb_err sqlite__budget_reserve(struct kb_store *s, int64_t key_seq, int64_t now, int64_t amount,
                                   struct kb_budget_hold **holds, size_t *n, char **exhausted)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    int64_t *seqs = NULL; /* the key's budgets, then parents as they are met */
    size_t nseq = 0, seqcap = 0, done_n = 0;
    struct kb_budget_hold *v = NULL;
    char *refused = NULL;
    sqlite3_stmt *links = bst(s, BS_LINKS), *node = bst(s, BS_NODE), *res = bst(s, BS_RESERVE);
    if (!links || !node || !res) {
        err = KB_E_STORE;
        goto out;
    }
    sqlite3_bind_int64(links, 1, key_seq);
    int rc;
    while ((rc = sqlite3_step(links)) == SQLITE_ROW)
        add_once(&seqs, &nseq, &seqcap, sqlite3_column_int64(links, 0));
    done(links);
    if (rc != SQLITE_DONE) {
        err = KB_E_STORE;
        goto out;
    }
    if (nseq)
        v = kb_calloc(seqcap, sizeof *v); /* grown with seqs: one hold per budget at most */
    /* breadth first: the key's own budgets, then each level of parents */
    for (size_t i = 0; i < nseq && err == KB_OK && !refused; i++) {
        sqlite3_bind_int64(node, 1, seqs[i]);
        rc = sqlite3_step(node);
        if (rc == SQLITE_DONE) { /* deleted: nothing to hold */
            done(node);
            continue;
        }
        if (rc != SQLITE_ROW) {
            done(node);
            err = KB_E_STORE;
            break;
        }
        int64_t period =
            store_budget_period((enum kb_budget_window)sqlite3_column_int(node, 0), now);
        if (sqlite3_column_type(node, 1) != SQLITE_NULL) {
            size_t before = seqcap;
            add_once(&seqs, &nseq, &seqcap, sqlite3_column_int64(node, 1));
            if (seqcap != before)
                v = kb_realloc(v, seqcap * sizeof *v); /* v held `before` */
        }
        sqlite3_bind_int64(res, 1, seqs[i]);
        sqlite3_bind_int64(res, 2, period);
        sqlite3_bind_int64(res, 3, amount);
        int r = sqlite3_step(res);
        done(res);
        if (r != SQLITE_DONE)
            err = KB_E_STORE;
        else if (sqlite3_changes(store__db(s)) == 0)
            refused = kb_strdup((const char *)sqlite3_column_text(node, 2));
        else
            v[done_n++] = (struct kb_budget_hold){.seq = seqs[i], .period = period};
        done(node);
    }
    /* all or nothing: give back what this call took before the refusal,
     * in the same transaction, so no reader ever saw it */
    for (size_t i = 0; err == KB_OK && refused && i < done_n; i++) {
        const int64_t args[3] = {v[i].seq, v[i].period, amount};
        err = run(s, BS_UNRESERVE, 3, args);
    }
out:
    free(seqs);
    err = txn_end(s, own, err);
    if (err == KB_OK && refused) {
        free(v);
        if (exhausted)
            *exhausted = refused;
        else
            free(refused);
        return KB_E_BUDGET_EXHAUSTED;
    }
    free(refused);
    if (err != KB_OK) {
        free(v);
        return err;
    }
    *holds = v;
    *n = done_n;
    return KB_OK;
}

enum kb_err sqlite__budget_settle(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                  int64_t reserved, int64_t actual)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    sqlite3_stmt *st = bst(s, BS_SETTLE);
    if (!st)
        err = KB_E_STORE;
    for (size_t i = 0; err == KB_OK && i < n; i++) {
        const int64_t args[4] = {holds[i].seq, holds[i].period, reserved, actual};
        for (int j = 0; j < 4; j++)
            sqlite3_bind_int64(st, j + 1, args[j]);
        int rc = sqlite3_step(st), crossed[KB_ALERT_THRESHOLDS_MAX], nc = 0;
        int64_t spent = 0, cap = 0;
        if (rc == SQLITE_ROW) { /* no row: a budget deleted since */
            spent = sqlite3_column_int64(st, 0);
            cap = sqlite3_column_int64(st, 2);
            nc = store__alerts_crossed(spent, cap, (const char *)sqlite3_column_text(st, 3),
                                       sqlite3_column_int(st, 1), crossed);
            rc = sqlite3_step(st);
        }
        done(st);
        if (rc != SQLITE_DONE)
            err = KB_E_STORE;
        else if (nc > 0)
            err = sqlite__alerts_record_crossed(s, holds[i].seq, holds[i].period, spent, cap,
                                                crossed, nc);
    }
    return txn_end(s, own, err);
}

enum kb_err sqlite__budget_release(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                   int64_t amount)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    for (size_t i = 0; err == KB_OK && i < n; i++) {
        const int64_t args[3] = {holds[i].seq, holds[i].period, amount};
        err = run(s, BS_UNRESERVE, 3, args);
    }
    return txn_end(s, own, err);
}

enum kb_err sqlite__budget_settle_orphans(struct kb_store *s, int64_t *count)
{
    enum kb_err err = run(s, BS_ORPHANS, 0, NULL);
    if (err == KB_OK)
        *count += sqlite3_changes64(store__db(s));
    return err;
}
