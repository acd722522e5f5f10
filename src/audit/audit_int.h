/* audit_int.h - shared by the files of src/audit/ only. */
#ifndef KB_AUDIT_AUDIT_INT_H
#define KB_AUDIT_AUDIT_INT_H
#include <stdint.h>

#include "audit/audit.h"

/* out = SHA-256(prev || canonical bytes of record seq) (audit.c). Pure. */
void audit__rec_hash(const uint8_t prev[KB_HASH_LEN], int64_t seq, int64_t ref_seq,
                     const struct kb_audit_rec *r, uint8_t out[KB_HASH_LEN]);
/* The checkpoint MAC under key (audit.c). Pure. */
void audit__ckpt_mac(const uint8_t key[KB_HASH_LEN], int64_t seq, int64_t prev_seq, int64_t every,
                     int64_t ts_ms, const uint8_t hash[KB_HASH_LEN], uint8_t out[KB_HASH_LEN]);

/* The checkpoint key set by audit_set_key (audit.c). */
const uint8_t *audit__key(void);

/* The action of the record a prune appends in the transaction that deletes
 * (retention.c); its detail names the cut, signed:
 * {"first":F,"cut":C,"records":N,"archive":"...","mac":"..."}. */
#define KB_AUDIT_PRUNED_ACTION "audit.pruned"

/* The cut a record of action KB_AUDIT_PRUNED_ACTION names in its detail
 * when its mac checks under key, else 0 (retention.c). Pure. */
int64_t audit__pruned_cut(const struct kb_audit_rec *r, const uint8_t key[KB_HASH_LEN]);

#endif
