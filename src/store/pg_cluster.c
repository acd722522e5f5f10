/* pg_cluster.c - STUB: to be written (see pg_int.h). */
#include "store/pg_int.h"

enum kb_err pg__spend_settle_orphans(struct kb_store *s, int64_t *count)
{
    (void)s;
    (void)count;
    return KB_E_STORE;
}

enum kb_err pg__node_join(struct kb_store *s, const uint8_t key_check[KB_HASH_LEN], char **errmsg)
{
    (void)s;
    (void)key_check;
    (void)errmsg;
    return KB_E_STORE;
}

enum kb_err pg__node_heartbeat(struct kb_store *s)
{
    (void)s;
    return KB_E_STORE;
}

enum kb_err pg__node_reap(struct kb_store *s, int64_t dead_after_ms, int64_t *nodes, int64_t *counters)
{
    (void)s;
    (void)dead_after_ms;
    (void)nodes;
    (void)counters;
    return KB_E_STORE;
}

enum kb_err pg__key_changes(struct kb_store *s, int64_t after_id, int64_t *last_id, struct kb_key_change_note **out, size_t *n)
{
    (void)s;
    (void)after_id;
    (void)last_id;
    (void)out;
    (void)n;
    return KB_E_STORE;
}

enum kb_err pg__wait_change(struct kb_store *s, int timeout_ms, bool *notified)
{
    (void)s;
    (void)timeout_ms;
    (void)notified;
    return KB_E_STORE;
}
