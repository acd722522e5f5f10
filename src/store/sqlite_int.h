/* sqlite_int.h - shared by the SQLite files of src/store/ only. */
#ifndef KB_STORE_SQLITE_INT_H
#define KB_STORE_SQLITE_INT_H
#include <sqlite3.h>

struct kb_store;

/* The connection behind a store handle (borrowed). */
sqlite3 *store__db(struct kb_store *s);

#endif
