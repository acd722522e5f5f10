/* pg_keys.c - STUB: to be written (see pg_int.h). */
#include "store/pg_int.h"

enum kb_err pg__key_insert(struct kb_store *s, struct kb_key *k, const uint8_t hash[KB_HASH_LEN])
{
    (void)s;
    (void)k;
    (void)hash;
    return KB_E_STORE;
}

enum kb_err pg__key_get(struct kb_store *s, const char *id, int64_t day, struct kb_key **out)
{
    (void)s;
    (void)id;
    (void)day;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day, struct kb_key **out)
{
    (void)s;
    (void)hash;
    (void)day;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__key_revoked(struct kb_store *s, int64_t seq, bool *revoked)
{
    (void)s;
    (void)seq;
    (void)revoked;
    return KB_E_STORE;
}

enum kb_err pg__key_state(struct kb_store *s, int64_t seq, struct kb_key_state *out)
{
    (void)s;
    (void)seq;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__key_update(struct kb_store *s, const char *id, const struct kb_key_change *c, int64_t now, struct kb_revoked_key *out)
{
    (void)s;
    (void)id;
    (void)c;
    (void)now;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__key_list(struct kb_store *s, const struct kb_key_filter *f, struct kb_key **out, size_t *n)
{
    (void)s;
    (void)f;
    (void)out;
    (void)n;
    return KB_E_STORE;
}

enum kb_err pg__key_count_active(struct kb_store *s, int64_t now, int64_t *count)
{
    (void)s;
    (void)now;
    (void)count;
    return KB_E_STORE;
}

enum kb_err pg__key_revoke(struct kb_store *s, const char *id, int64_t now, struct kb_revoked_key *out)
{
    (void)s;
    (void)id;
    (void)now;
    (void)out;
    return KB_E_STORE;
}

enum kb_err pg__key_revoke_prefix(struct kb_store *s, const char *prefix, int64_t now, int64_t *count, struct kb_revoked_key **keys)
{
    (void)s;
    (void)prefix;
    (void)now;
    (void)count;
    (void)keys;
    return KB_E_STORE;
}

enum kb_err pg__spend_reserve(struct kb_store *s, int64_t seq, int64_t day, int64_t amount, int64_t cap, int64_t *remaining)
{
    (void)s;
    (void)seq;
    (void)day;
    (void)amount;
    (void)cap;
    (void)remaining;
    return KB_E_STORE;
}

enum kb_err pg__spend_settle(struct kb_store *s, int64_t seq, int64_t day, int64_t reserved, int64_t actual, int64_t cap, int64_t *remaining)
{
    (void)s;
    (void)seq;
    (void)day;
    (void)reserved;
    (void)actual;
    (void)cap;
    (void)remaining;
    return KB_E_STORE;
}

enum kb_err pg__rate_take(struct kb_store *s, int64_t seq, int64_t requests, int64_t period_ms, int64_t now_ms, int64_t *retry_after_ms)
{
    (void)s;
    (void)seq;
    (void)requests;
    (void)period_ms;
    (void)now_ms;
    (void)retry_after_ms;
    return KB_E_STORE;
}

enum kb_err pg__admin_token_count(struct kb_store *s, int64_t *count)
{
    (void)s;
    (void)count;
    return KB_E_STORE;
}

enum kb_err pg__admin_token_add(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], const char *label, int64_t now)
{
    (void)s;
    (void)hash;
    (void)label;
    (void)now;
    return KB_E_STORE;
}

enum kb_err pg__admin_token_check(struct kb_store *s, const uint8_t hash[KB_HASH_LEN])
{
    (void)s;
    (void)hash;
    return KB_E_STORE;
}

enum kb_err pg__object_charged(struct kb_store *s, int64_t key_seq, const char *object_id, int64_t not_before, int64_t *micros)
{
    (void)s;
    (void)key_seq;
    (void)object_id;
    (void)not_before;
    (void)micros;
    return KB_E_STORE;
}

enum kb_err pg__object_charge_set(struct kb_store *s, int64_t key_seq, const char *object_id, int64_t micros, int64_t now, int64_t not_before)
{
    (void)s;
    (void)key_seq;
    (void)object_id;
    (void)micros;
    (void)now;
    (void)not_before;
    return KB_E_STORE;
}
