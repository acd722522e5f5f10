/* alloc.c - abort-on-OOM allocation helpers. */
#include "core/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "keybrake: out of memory allocating %zu bytes\n", n);
    abort();
}

void *kb_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *kb_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        oom(nmemb * size);
    return p;
}

void *kb_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *kb_strndup(const char *s, size_t n)
{
    char *d = kb_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *kb_strdup(const char *s)
{
    return kb_strndup(s, strlen(s));
}

__attribute__((format(printf, 1, 0))) static char *vasprintf_checked(const char *fmt,
                                                                     va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return kb_strdup("(format error)");
    char *s = kb_malloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *kb_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vasprintf_checked(fmt, ap);
    va_end(ap);
    return s;
}

void kb_set_errmsg(char **errmsg, const char *fmt, ...)
{
    if (!errmsg || *errmsg)
        return;
    va_list ap;
    va_start(ap, fmt);
    *errmsg = vasprintf_checked(fmt, ap);
    va_end(ap);
}
