/*
 * test_reload.c - unit tests for what a SIGHUP reload relies on:
 * log_open_file/log_reopen (src/core/log.c) swapping the log file while
 * threads log, with every record landing once and whole in the old or the
 * new file (logrotate: rename, then reopen), with the records written by
 * their callers and by the log writer thread; config_changed
 * (src/core/config.c) naming exactly the settings that differ.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "core/config.h"
#include "core/log.h"

#define THREADS 4
#define LINES 4000 /* per thread */
#define ROTATIONS 12

static char g_dir[64];

static void *logger(void *arg)
{
    int t = (int)(intptr_t)arg;
    char tid[8], n[16];
    snprintf(tid, sizeof tid, "%d", t);
    for (int i = 0; i < LINES; i++) {
        snprintf(n, sizeof n, "%d", i);
        /* long enough that a torn write would show */
        kb_log(KB_LOG_INFO, "rotation test line with some padding to make it longer", "t", tid,
               "n", n, "pad", "0123456789abcdef0123456789abcdef0123456789abcdef", NULL);
    }
    return NULL;
}

/* Counts the records of one file into seen[t][n]; fails on a torn line. */
static void scan(const char *path, unsigned char seen[THREADS][LINES])
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        assert_true(len > 0 && line[len - 1] == '\n'); /* whole */
        int t, n;
        const char *pt = strstr(line, " t=");
        const char *pn = strstr(line, " n=");
        assert_non_null(pt);
        assert_non_null(pn);
        assert_non_null(strstr(line, "pad=0123456789abcdef0123456789abcdef0123456789abcdef\n"));
        t = (int)strtol(pt + 3, NULL, 10);
        n = (int)strtol(pn + 3, NULL, 10);
        assert_true(t >= 0 && t < THREADS && n >= 0 && n < LINES);
        seen[t][n]++;
    }
    fclose(f);
}

static void rotation_under_load(bool writer_thread)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/kb-reload-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char path[128], rotated[160];
    snprintf(path, sizeof path, "%s/kb.log", g_dir);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(log_set_level("info"));
    assert_true(log_set_format("logfmt"));
    char *em = NULL;
    assert_int_equal(log_reopen(&em), KB_OK); /* no file yet: nothing to do */
    assert_int_equal(log_open_file(path, &em), KB_OK);
    if (writer_thread)
        log_start();

    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, logger, (void *)(intptr_t)i), 0);
    for (int r = 1; r <= ROTATIONS; r++) {
        snprintf(rotated, sizeof rotated, "%s.%d", path, r);
        assert_int_equal(rename(path, rotated), 0);
        assert_int_equal(log_reopen(&em), KB_OK);
        usleep(500); /* not synchronisation: spreads the rotations over the run */
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    log_stop(); /* writes what is queued: to the last file */
    dup2(saved, STDERR_FILENO);
    close(saved);
    log_close_file();

    static unsigned char seen[THREADS][LINES];
    memset(seen, 0, sizeof seen);
    scan(path, seen);
    for (int r = 1; r <= ROTATIONS; r++) {
        snprintf(rotated, sizeof rotated, "%s.%d", path, r);
        scan(rotated, seen);
        unlink(rotated);
    }
    unlink(path);
    rmdir(g_dir);
    for (int t = 0; t < THREADS; t++)
        for (int n = 0; n < LINES; n++)
            if (seen[t][n] != 1)
                fail_msg("record t=%d n=%d seen %d times", t, n, seen[t][n]);
}

static void test_log_rotation_under_load(void **state)
{
    (void)state;
    rotation_under_load(false);
}

/* The same with the writer thread, which switches files between batches. */
static void test_log_rotation_writer_thread(void **state)
{
    (void)state;
    rotation_under_load(true);
}

static void test_log_open_failure_keeps_stderr(void **state)
{
    (void)state;
    char *em = NULL;
    assert_int_equal(log_open_file("/nonexistent-dir/kb.log", &em), KB_E_IO);
    assert_non_null(em);
    assert_non_null(strstr(em, "/nonexistent-dir/kb.log"));
    free(em);
}

static void test_config_changed(void **state)
{
    (void)state;
    struct kb_config *a = NULL, *b = NULL;
    char *em = NULL;
    assert_int_equal(config_load(NULL, &a, &em), KB_OK);
    assert_int_equal(config_load(NULL, &b, &em), KB_OK);
    const char *sec[8], *name[8];
    assert_int_equal(config_changed(a, b, sec, name, 8), 0);
    b->max_body_bytes++;
    b->max_ttl_ms++;
    free(b->proxy_listen);
    b->proxy_listen = NULL; /* a string set on one side only */
    free(b->log_file);
    b->log_file = strdup("/var/log/keybrake.log");
    assert_int_equal(config_changed(a, b, sec, name, 8), 4);
    assert_string_equal(name[0], "proxy_listen");
    assert_string_equal(sec[0], "server");
    assert_string_equal(name[1], "max_ttl");
    assert_string_equal(name[2], "log_file");
    assert_string_equal(name[3], "max_body_bytes");
    assert_string_equal(sec[3], "limits");
    assert_int_equal(config_changed(a, b, sec, name, 2), 2); /* bounded */
    config_free(a);
    config_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_rotation_under_load),
        cmocka_unit_test(test_log_rotation_writer_thread),
        cmocka_unit_test(test_log_open_failure_keeps_stderr),
        cmocka_unit_test(test_config_changed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
