/* sqlite_int.h - shared by the SQLite files of src/store/ only. */
#ifndef KB_STORE_SQLITE_INT_H
#define KB_STORE_SQLITE_INT_H
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/crypto.h"

struct kb_store;

/* The connection behind a store handle (borrowed). */
sqlite3 *store__db(struct kb_store *s);

/* The audit append path's per-connection state (sqlite_audit.c). */
enum {
    AS_LAST = 0,
    AS_LAST_CKPT,
    AS_EXISTS,
    AS_INSERT,
    AS_CKPT_INSERT,
    AS_DATA_VERSION,
    AS__COUNT
};
struct store_audit_state {
    sqlite3_stmt *st[AS__COUNT]; /* prepared on first use; store_close finalises them */
    bool cache;                  /* keep the chain head (store_audit_head_sync was called) */
    bool known;                  /* last_seq/last_hash are the chain head */
    bool ck_known;               /* ck_seq/ck_every are the last checkpoint */
    int64_t last_seq;
    uint8_t last_hash[KB_HASH_LEN];
    int64_t ck_seq, ck_every;
    int64_t data_version; /* PRAGMA data_version when the head was confirmed */
};
struct store_audit_state *store__audit(struct kb_store *s);

#endif
