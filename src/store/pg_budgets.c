/* pg_budgets.c - STUB: to be written (see pg_int.h). */
#include "store/pg_int.h"

enum kb_err pg__budget_insert(struct kb_store *s, struct kb_budget *b, char **errmsg)
{
    (void)s;
    (void)b;
    (void)errmsg;
    return KB_E_STORE;
}

enum kb_err pg__budget_get(struct kb_store *s, const char *name, int64_t now, struct kb_budget **out)
{
    (void)s;
    (void)name;
    (void)now;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__budget_list(struct kb_store *s, int64_t after_seq, int limit, int64_t now, struct kb_budget **out, size_t *n)
{
    (void)s;
    (void)after_seq;
    (void)limit;
    (void)now;
    (void)out;
    (void)n;
    return KB_E_STORE;
}

enum kb_err pg__budget_update(struct kb_store *s, const char *name, const struct kb_budget_change *c, int64_t now, char **errmsg)
{
    (void)s;
    (void)name;
    (void)c;
    (void)now;
    (void)errmsg;
    return KB_E_STORE;
}

enum kb_err pg__budget_delete(struct kb_store *s, const char *name, char **errmsg)
{
    (void)s;
    (void)name;
    (void)errmsg;
    return KB_E_STORE;
}

enum kb_err pg__key_budget_add(struct kb_store *s, int64_t key_seq, const char *name)
{
    (void)s;
    (void)key_seq;
    (void)name;
    return KB_E_STORE;
}

enum kb_err pg__key_budgets(struct kb_store *s, int64_t key_seq, char ***names, size_t *n)
{
    (void)s;
    (void)key_seq;
    (void)names;
    (void)n;
    return KB_E_STORE;
}

enum kb_err pg__budget_reserve(struct kb_store *s, int64_t key_seq, int64_t now, int64_t amount, struct kb_budget_hold **holds, size_t *n, char **exhausted)
{
    (void)s;
    (void)key_seq;
    (void)now;
    (void)amount;
    (void)holds;
    (void)n;
    (void)exhausted;
    return KB_E_STORE;
}

enum kb_err pg__budget_settle(struct kb_store *s, const struct kb_budget_hold *holds, size_t n, int64_t reserved, int64_t actual)
{
    (void)s;
    (void)holds;
    (void)n;
    (void)reserved;
    (void)actual;
    return KB_E_STORE;
}

enum kb_err pg__budget_release(struct kb_store *s, const struct kb_budget_hold *holds, size_t n, int64_t amount)
{
    (void)s;
    (void)holds;
    (void)n;
    (void)amount;
    return KB_E_STORE;
}

void pg__budget_free(struct kb_store *s)
{
    (void)s;
}
