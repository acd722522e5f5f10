/* pg_audit.c - STUB: to be written (see pg_int.h). */
#include "store/pg_int.h"

enum kb_err pg__audit_last(struct kb_store *s, int64_t *seq, uint8_t hash[KB_HASH_LEN])
{
    (void)s;
    (void)seq;
    (void)hash;
    return KB_E_STORE;
}

enum kb_err pg__audit_last_ckpt(struct kb_store *s, int64_t *seq, int64_t *every)
{
    (void)s;
    (void)seq;
    (void)every;
    return KB_E_STORE;
}

enum kb_err pg__audit_exists(struct kb_store *s, int64_t seq)
{
    (void)s;
    (void)seq;
    return KB_E_STORE;
}

enum kb_err pg__audit_insert(struct kb_store *s, int64_t seq, int64_t ref_seq, const struct kb_audit_rec *rec, const uint8_t hash[KB_HASH_LEN])
{
    (void)s;
    (void)seq;
    (void)ref_seq;
    (void)rec;
    (void)hash;
    return KB_E_STORE;
}

enum kb_err pg__audit_ckpt_insert(struct kb_store *s, const struct kb_audit_ckpt *ck)
{
    (void)s;
    (void)ck;
    return KB_E_STORE;
}

enum kb_err pg__audit_cut_find(struct kb_store *s, int64_t before_ms, int64_t max_seq, int64_t *seq)
{
    (void)s;
    (void)before_ms;
    (void)max_seq;
    (void)seq;
    return KB_E_STORE;
}

enum kb_err pg__audit_prune(struct kb_store *s, int64_t cut, int64_t *removed)
{
    (void)s;
    (void)cut;
    (void)removed;
    return KB_E_STORE;
}

void pg__audit_forget(struct kb_store *s)
{
    (void)s;
}

void pg__audit_head_sync(struct kb_store *s)
{
    (void)s;
}

void pg__audit_head_drop(struct kb_store *s)
{
    (void)s;
}

enum kb_err pg__audit_read_begin(struct kb_store *s)
{
    (void)s;
    return KB_E_STORE;
}

void pg__audit_read_end(struct kb_store *s)
{
    (void)s;
}

enum kb_err pg__audit_rows(struct kb_store *s, int64_t after_seq, int64_t since_ms, int64_t until_ms, struct kb_audit_iter **out)
{
    (void)s;
    (void)after_seq;
    (void)since_ms;
    (void)until_ms;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__audit_ckpts(struct kb_store *s, struct kb_audit_iter **out)
{
    (void)s;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__audit_row_next(struct kb_audit_iter *it, struct kb_audit_row *row)
{
    (void)it;
    (void)row;
    return KB_E_STORE;
}

enum kb_err pg__audit_ckpt_next(struct kb_audit_iter *it, struct kb_audit_ckpt *ck)
{
    (void)it;
    (void)ck;
    return KB_E_STORE;
}

void pg__audit_iter_free(struct kb_audit_iter *it)
{
    (void)it;
}

enum kb_err pg__audit_query(struct kb_store *s, const struct kb_audit_filter *f, kb_audit_entry_cb cb, void *arg)
{
    (void)s;
    (void)f;
    (void)cb;
    (void)arg;
    return KB_E_STORE;
}

enum kb_err pg__audit_chains(struct kb_store *s, char ***names, size_t *n)
{
    (void)s;
    (void)names;
    (void)n;
    return KB_E_STORE;
}

enum kb_err pg__audit_chain_use(struct kb_store *s, const char *name)
{
    (void)s;
    (void)name;
    return KB_E_STORE;
}

void pg__audit_free(struct kb_store *s)
{
    (void)s;
}
