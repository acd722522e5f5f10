/*
 * store_nodes.c - the store's public functions for several nodes on one
 * store and their audit chains (store.h, "several nodes"), through the
 * backend's table (backend.h); the names list they hand out.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/backend.h"
#include "store/store.h"

/* ---- several nodes ---- */

#define SHARED_ONLY(op)                                                                            \
    if (!s->be->op)                                                                                \
        return KB_E_INVALID;

enum kb_err store_node_join(struct kb_store *s, const uint8_t key_check[KB_HASH_LEN],
                            int64_t *settled, char **errmsg)
{
    SHARED_ONLY(node_join);
    int64_t n = 0;
    enum kb_err err = s->be->node_join(s, key_check, &n, errmsg);
    if (settled)
        *settled = err == KB_OK ? n : 0;
    return err;
}

enum kb_err store_node_heartbeat(struct kb_store *s)
{
    SHARED_ONLY(node_heartbeat);
    return s->be->node_heartbeat(s);
}

enum kb_err store_node_reap(struct kb_store *s, int64_t dead_after_ms, int64_t *nodes,
                            int64_t *counters)
{
    SHARED_ONLY(node_reap);
    return s->be->node_reap(s, dead_after_ms, nodes, counters);
}

enum kb_err store_key_changes(struct kb_store *s, int64_t after_id, int64_t *last_id,
                              struct kb_key_change_note **out, size_t *n)
{
    SHARED_ONLY(key_changes);
    return s->be->key_changes(s, after_id, last_id, out, n);
}

enum kb_err store_wait_change(struct kb_store *s, int timeout_ms, bool *notified)
{
    SHARED_ONLY(wait_change);
    return s->be->wait_change(s, timeout_ms, notified);
}

enum kb_err store_audit_chains(struct kb_store *s, char ***names, size_t *n)
{
    if (s->be->audit_chains)
        return s->be->audit_chains(s, names, n);
    *names = kb_calloc(1, sizeof **names);
    (*names)[0] = kb_strdup("");
    *n = 1;
    return KB_OK;
}

enum kb_err store_audit_chain_use(struct kb_store *s, const char *name)
{
    if (s->be->audit_chain_use)
        return s->be->audit_chain_use(s, name);
    return name && *name ? KB_E_NOT_FOUND : KB_OK;
}

void store_names_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
