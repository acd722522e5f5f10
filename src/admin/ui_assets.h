/*
 * ui_assets.h - the dashboard's static files, compiled into the binary.
 * The table is generated from ui/ by scripts/embed_ui.cmake at build time;
 * admin/ui.c serves it under /ui/.
 */
#ifndef KB_ADMIN_UI_ASSETS_H
#define KB_ADMIN_UI_ASSETS_H
#include <stddef.h>

struct kb_ui_asset {
    const char *name;          /* file name under ui/ ("app.js") */
    const unsigned char *data; /* the file's bytes (NUL after them, not counted) */
    size_t len;                /* bytes in data */
    const char *etag;          /* strong ETag, quotes included */
};

/* Sorted by name; kb_ui_asset_count of them. */
extern const struct kb_ui_asset kb_ui_assets[];
extern const size_t kb_ui_asset_count;

#endif
