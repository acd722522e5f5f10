/*
 * meter_test.h - helpers shared by the meter unit tests (test_meter_*.c):
 * a temporary pricing override file and loading the pricing with it.
 * Include after <cmocka.h> and the meter headers.
 */
#ifndef KB_TESTS_METER_TEST_H
#define KB_TESTS_METER_TEST_H
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "meter/meter.h"

/* Writes text to a new temporary file; returns its path (caller frees). */
static char *write_tmp(const char *text)
{
    char *path = kb_strdup("/tmp/kb_test_meter_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

/* The embedded pricing, with `override` (JSON text, may be NULL) applied. */
static inline struct kb_pricing *load_pricing(const char *override)
{
    struct kb_pricing *p = NULL;
    char *em = NULL, *path = override ? write_tmp(override) : NULL;
    enum kb_err err = meter_pricing_load(path, &p, &em);
    if (err != KB_OK)
        print_message("pricing: %s\n", em ? em : "?");
    assert_int_equal(err, KB_OK);
    if (path)
        unlink(path);
    free(path);
    free(em);
    return p;
}

#endif
