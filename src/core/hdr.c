/* hdr.c - header look-up (see hdr.h). */
#include "core/hdr.h"

#include <strings.h>

const char *hdr_find(const struct kb_hdr *h, size_t n, const char *name, int *count)
{
    const char *v = NULL;
    int c = 0;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, name) == 0) {
            if (!v)
                v = h[i].value;
            c++;
        }
    if (count)
        *count = c;
    return v;
}
