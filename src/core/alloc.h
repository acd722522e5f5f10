/*
 * alloc.h - allocation wrappers that abort on out-of-memory (redis, tmux).
 * In exchange, everything a peer can make grow has an explicit cap elsewhere.
 */
#ifndef KB_CORE_ALLOC_H
#define KB_CORE_ALLOC_H
#include <stddef.h>

void *kb_malloc(size_t n);
void *kb_calloc(size_t nmemb, size_t size);
void *kb_realloc(void *p, size_t n);
char *kb_strdup(const char *s);
char *kb_strndup(const char *s, size_t n);
/* printf into a fresh heap string (never NULL). */
char *kb_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Sets *errmsg (if errmsg is non-NULL and *errmsg is NULL) to a formatted string. */
void kb_set_errmsg(char **errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
