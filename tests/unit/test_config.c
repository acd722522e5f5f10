/*
 * test_config.c - unit tests for config_load (src/core/config.c).
 *
 * Three layers: built-in defaults, the INI file, then the environment, each
 * overriding the one before. Tables cover the accepted overrides of each
 * layer and every refusal config.h promises (unknown section or key, wrong
 * type, out of range, bad auth style or vendor name, bad base_url, Basic
 * auth without an account, syntax errors, a missing file, store.synchronous
 * and the admin token length); a refusal must leave *out untouched and say
 * in *errmsg which setting (and, for the file, which line) is wrong.
 *
 * The environment is process-wide: every test starts and ends with every
 * KEYBRAKE_* variable and every vendor variable unset (clean_env).
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

#include "core/config.h"
#include "vendor/profile.h"

extern char **environ;

#define OFF(f) offsetof(struct kb_config, f)
#define SEC INT64_C(1000)
#define MIB (INT64_C(1) << 20)

/* Variables config_load reads that are not KEYBRAKE_*; those are all
 * cleared by prefix. */
static const char *const vendor_env[] = {
    "STRIPE_SECRET_KEY", "OPENAI_API_KEY",     "ANTHROPIC_API_KEY",
    "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID",
};

static char ini_path[64]; /* the current test's INI file, "" when none */

static void clean_env(void)
{
    for (size_t i = 0; i < sizeof vendor_env / sizeof vendor_env[0]; i++)
        unsetenv(vendor_env[i]);
    /* Collect first: unsetenv reshuffles environ. */
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "KEYBRAKE_", 9) == 0) {
                size_t n = strcspn(*e, "=");
                if (n < sizeof name) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                    break;
                }
            }
        }
        if (!name[0])
            break;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clean_env();
    ini_path[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clean_env();
    if (ini_path[0])
        unlink(ini_path);
    ini_path[0] = '\0';
    return 0;
}

/* Writes text to a fresh temporary file and returns its path. */
static const char *write_ini(const char *text)
{
    if (ini_path[0])
        unlink(ini_path);
    snprintf(ini_path, sizeof ini_path, "%s", "/tmp/kb-test-config-XXXXXX");
    int fd = mkstemp(ini_path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return ini_path;
}

/* config_load over `text` (NULL: no file). */
static enum kb_err load(const char *text, struct kb_config **out, char **errmsg)
{
    return config_load(text ? write_ini(text) : NULL, out, errmsg);
}

/* Loads text expecting success; fails the test with the message otherwise. */
static struct kb_config *load_ok(const char *text)
{
    struct kb_config *cfg = NULL;
    char *msg = NULL;
    enum kb_err err = load(text, &cfg, &msg);
    if (err != KB_OK)
        print_error("config_load: %s\n--- ini ---\n%s\n", msg ? msg : "(no message)",
                    text ? text : "(none)");
    assert_int_equal(err, KB_OK);
    assert_null(msg);
    assert_non_null(cfg);
    return cfg;
}

/* Loads text expecting KB_E_CONFIG whose message contains every non-NULL
 * `want` substring; `what` names the case in a failure report. */
static void load_bad(const char *what, const char *text, const char *want1, const char *want2)
{
    struct kb_config *sentinel = (struct kb_config *)(uintptr_t)0x1;
    struct kb_config *cfg = sentinel;
    char *msg = NULL;
    enum kb_err err = load(text, &cfg, &msg);
    if (err != KB_E_CONFIG || !msg || (want1 && !strstr(msg, want1)) ||
        (want2 && !strstr(msg, want2)))
        print_error("%s: want KB_E_CONFIG with \"%s\" and \"%s\"; got err %d msg \"%s\"\n"
                    "--- ini ---\n%s\n",
                    what, want1 ? want1 : "", want2 ? want2 : "", (int)err, msg ? msg : "(null)",
                    text ? text : "(none)");
    if (err == KB_OK && cfg != sentinel)
        config_free(cfg);
    assert_int_equal(err, KB_E_CONFIG);
    assert_ptr_equal(cfg, sentinel); /* *out is set only on success */
    assert_non_null(msg);
    if (want1)
        assert_non_null(strstr(msg, want1));
    if (want2)
        assert_non_null(strstr(msg, want2));
    free(msg);
}

static int64_t int_at(const struct kb_config *c, size_t off)
{
    return *(const int64_t *)(const void *)((const char *)c + off);
}

static const char *str_at(const struct kb_config *c, size_t off)
{
    return *(char *const *)(const void *)((const char *)c + off);
}

static const struct kb_vendor *vendor(const struct kb_config *c, const char *name)
{
    return config_vendor(c, name, strlen(name));
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    (void)state;
    struct kb_config *c = load_ok(NULL);
    assert_string_equal(c->data_dir, "./var");
    assert_string_equal(c->proxy_listen, "127.0.0.1:8420");
    assert_string_equal(c->admin_listen, "127.0.0.1:8421");
    assert_null(c->admin_token);
    assert_null(c->server_key);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->shutdown_timeout_ms, 10 * SEC);
    assert_int_equal(c->max_ttl_ms, 86400000);
    assert_int_equal(c->upstream_connect_timeout_ms, 10 * SEC);
    assert_int_equal(c->upstream_timeout_ms, 300 * SEC);
    assert_int_equal(c->max_body_bytes, 10 * MIB);
    assert_int_equal(c->max_header_bytes, 32 * 1024);
    assert_int_equal(c->max_headers, 100);
    assert_int_equal(c->max_path_bytes, 2048);
    assert_int_equal(c->max_connections, 4096);
    assert_int_equal(c->client_timeout_ms, 30 * SEC);
    assert_string_equal(c->log_level, "info");
    assert_string_equal(c->log_format, "logfmt");
    assert_null(c->pricing_file);
    assert_string_equal(c->store_synchronous, "normal");
    assert_null(c->ca_file);
    assert_int_equal(c->audit_retention_ms, 0); /* keep everything */
    assert_null(c->audit_archive_dir);
    char *dir = config_archive_dir(c);
    assert_string_equal(dir, "./var/audit-archive");
    free(dir);
    config_free(c);
}

static void test_builtin_vendors(void **state)
{
    (void)state;
    static const struct {
        const char *name, *base_url;
        enum kb_auth_style auth;
        const char *header;
    } want[] = {
        {"stripe", "https://api.stripe.com", KB_AUTH_BEARER, NULL},
        {"openai", "https://api.openai.com", KB_AUTH_BEARER, NULL},
        {"anthropic", "https://api.anthropic.com", KB_AUTH_HEADER, "x-api-key"},
        {"twilio", "https://api.twilio.com", KB_AUTH_BASIC, NULL},
    };
    struct kb_config *c = load_ok(NULL);
    assert_int_equal(c->nvendors, 4);
    for (size_t i = 0; i < 4; i++) {
        const struct kb_vendor *v = vendor(c, want[i].name);
        assert_non_null(v);
        assert_string_equal(v->name, want[i].name);
        assert_string_equal(v->base_url, want[i].base_url);
        assert_int_equal(v->auth, want[i].auth);
        if (want[i].header)
            assert_string_equal(v->auth_header, want[i].header);
        assert_null(v->secret); /* no environment: not configured */
        assert_null(v->account);
        assert_non_null(v->profile);
        assert_int_equal(v->ncosts, 0);
    }
    config_free(c);
}

static void test_config_vendor_lookup(void **state)
{
    (void)state;
    struct kb_config *c = load_ok(NULL);
    /* by (pointer, length): a path segment need not be NUL-terminated */
    const struct kb_vendor *v = config_vendor(c, "stripe/v1/charges", 6);
    assert_non_null(v);
    assert_string_equal(v->name, "stripe");
    assert_null(config_vendor(c, "strip", 5));
    assert_null(config_vendor(c, "stripes", 7));
    assert_null(config_vendor(c, "Stripe", 6));
    assert_null(config_vendor(c, "", 0));
    assert_null(config_vendor(c, "acme", 4));
    config_free(c);
    config_free(NULL); /* no-op */
}

/* ---- INI overrides ---- */

struct int_row {
    const char *ini; /* file text */
    size_t off;      /* field */
    int64_t want;
};

static const struct int_row ini_int_rows[] = {
    {"[server]\nworkers = 8\n", OFF(workers), 8},
    {"[server]\nworkers = 0\n", OFF(workers), 0},
    {"[server]\nworkers = 256\n", OFF(workers), 256},
    {"[server]\nworkers=3\n", OFF(workers), 3},
    {"[server]\n  workers   =   5  \n", OFF(workers), 5},
    {"[server]\nworkers = 6 ; comment\n", OFF(workers), 6},
    {"[server]\nshutdown_timeout = 0\n", OFF(shutdown_timeout_ms), 0},
    {"[server]\nshutdown_timeout = 1h\n", OFF(shutdown_timeout_ms), 3600 * SEC},
    {"[server]\nmax_ttl = 1h\n", OFF(max_ttl_ms), 3600 * SEC},
    {"[server]\nmax_ttl = 1s\n", OFF(max_ttl_ms), SEC},
    {"[server]\nmax_ttl = 1000ms\n", OFF(max_ttl_ms), SEC},
    {"[server]\nmax_ttl = 7d\n", OFF(max_ttl_ms), 7 * 86400 * SEC},
    {"[server]\nmax_ttl = 366d\n", OFF(max_ttl_ms), 366 * 86400 * SEC},
    {"[server]\nmax_ttl = 90\n", OFF(max_ttl_ms), 90 * SEC},
    {"[upstream]\nconnect_timeout = 250ms\n", OFF(upstream_connect_timeout_ms), 250},
    {"[upstream]\nconnect_timeout = 1ms\n", OFF(upstream_connect_timeout_ms), 1},
    {"[upstream]\nconnect_timeout = 10m\n", OFF(upstream_connect_timeout_ms), 600 * SEC},
    {"[upstream]\ntimeout = 5s\n", OFF(upstream_timeout_ms), 5 * SEC},
    {"[upstream]\ntimeout = 1h\n", OFF(upstream_timeout_ms), 3600 * SEC},
    {"[limits]\nmax_body_bytes = 0\n", OFF(max_body_bytes), 0},
    {"[limits]\nmax_body_bytes = 512\n", OFF(max_body_bytes), 512},
    {"[limits]\nmax_body_bytes = 1k\n", OFF(max_body_bytes), 1024},
    {"[limits]\nmax_body_bytes = 1K\n", OFF(max_body_bytes), 1024},
    {"[limits]\nmax_body_bytes = 2m\n", OFF(max_body_bytes), 2 * MIB},
    {"[limits]\nmax_body_bytes = 2M\n", OFF(max_body_bytes), 2 * MIB},
    {"[limits]\nmax_body_bytes = 4096m\n", OFF(max_body_bytes), INT64_C(1) << 32},
    {"[limits]\nmax_body_bytes = 4294967296\n", OFF(max_body_bytes), INT64_C(1) << 32},
    {"[limits]\nmax_header_bytes = 1k\n", OFF(max_header_bytes), 1024},
    {"[limits]\nmax_header_bytes = 16m\n", OFF(max_header_bytes), 16 * MIB},
    {"[limits]\nmax_headers = 1\n", OFF(max_headers), 1},
    {"[limits]\nmax_headers = 10000\n", OFF(max_headers), 10000},
    {"[limits]\nmax_path_bytes = 16\n", OFF(max_path_bytes), 16},
    {"[limits]\nmax_path_bytes = 64k\n", OFF(max_path_bytes), 65536},
    {"[limits]\nmax_connections = 1000000\n", OFF(max_connections), 1000000},
    {"[limits]\nclient_timeout = 1s\n", OFF(client_timeout_ms), SEC},
    {"[limits]\nclient_timeout = 1h\n", OFF(client_timeout_ms), 3600 * SEC},
    {"[audit]\nretention = 30d\n", OFF(audit_retention_ms), 30 * 86400 * SEC},
    {"[audit]\nretention = 0\n", OFF(audit_retention_ms), 0},
    {"[audit]\nretention = 1s\n", OFF(audit_retention_ms), SEC},
    /* later lines win; sections may repeat */
    {"[server]\nworkers = 2\nworkers = 4\n", OFF(workers), 4},
    {"[server]\nworkers = 2\n[limits]\nmax_headers = 7\n[server]\nworkers = 9\n", OFF(workers), 9},
};

static void test_ini_numbers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ini_int_rows / sizeof ini_int_rows[0]; i++) {
        struct kb_config *c = load_ok(ini_int_rows[i].ini);
        if (int_at(c, ini_int_rows[i].off) != ini_int_rows[i].want)
            print_error("row %zu: got %lld want %lld\n", i,
                        (long long)int_at(c, ini_int_rows[i].off), (long long)ini_int_rows[i].want);
        assert_int_equal(int_at(c, ini_int_rows[i].off), ini_int_rows[i].want);
        config_free(c);
    }
}

struct str_row {
    const char *ini;  /* file text */
    size_t off;       /* field */
    const char *want; /* NULL: unset */
};

static const struct str_row ini_str_rows[] = {
    {"[server]\ndata_dir = /srv/keybrake\n", OFF(data_dir), "/srv/keybrake"},
    {"[server]\nproxy_listen = 0.0.0.0:9000\n", OFF(proxy_listen), "0.0.0.0:9000"},
    {"[server]\nproxy_listen = 127.0.0.1:0\n", OFF(proxy_listen), "127.0.0.1:0"},
    {"[server]\nadmin_listen = [::1]:9001\n", OFF(admin_listen), "[::1]:9001"},
    {"[server]\nadmin_token = 0123456789abcdef\n", OFF(admin_token), "0123456789abcdef"},
    {"[server]\nserver_key = 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
     OFF(server_key), "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
    {"[server]\nlog_level = debug\n", OFF(log_level), "debug"},
    {"[server]\nlog_format = json\n", OFF(log_format), "json"},
    {"[server]\npricing_file = /etc/keybrake/pricing.json\n", OFF(pricing_file),
     "/etc/keybrake/pricing.json"},
    {"[server]\npricing_file =\n", OFF(pricing_file), NULL},
    {"[store]\nsynchronous = full\n", OFF(store_synchronous), "full"},
    {"[store]\nsynchronous = normal\n", OFF(store_synchronous), "normal"},
    {"[upstream]\nca_file = /etc/ssl/ca.pem\n", OFF(ca_file), "/etc/ssl/ca.pem"},
    {"[audit]\narchive_dir = /srv/audit-archive\n", OFF(audit_archive_dir), "/srv/audit-archive"},
    /* comments and blank lines are ignored */
    {"; a comment\n# another\n\n[server]\n\ndata_dir = /d ; trailing comment\n", OFF(data_dir),
     "/d"},
    /* a UTF-8 byte order mark is skipped */
    {"\xef\xbb\xbf[server]\ndata_dir = /bom\n", OFF(data_dir), "/bom"},
    /* CRLF line ends */
    {"[server]\r\ndata_dir = /crlf\r\n", OFF(data_dir), "/crlf"},
};

static void test_ini_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ini_str_rows / sizeof ini_str_rows[0]; i++) {
        struct kb_config *c = load_ok(ini_str_rows[i].ini);
        const char *got = str_at(c, ini_str_rows[i].off);
        if (ini_str_rows[i].want)
            assert_string_equal(got, ini_str_rows[i].want);
        else
            assert_null(got);
        config_free(c);
    }
}

/* Every setting of the file at once: the rest keep their defaults. */
static void test_ini_only_named_settings_change(void **state)
{
    (void)state;
    struct kb_config *c = load_ok("[server]\nworkers = 2\n");
    assert_int_equal(c->workers, 2);
    assert_string_equal(c->data_dir, "./var");
    assert_int_equal(c->max_ttl_ms, 86400000);
    assert_int_equal(c->max_body_bytes, 10 * MIB);
    config_free(c);
    /* an empty file is fine */
    c = load_ok("");
    assert_string_equal(c->proxy_listen, "127.0.0.1:8420");
    config_free(c);
}

/* ---- INI refusals ---- */

struct bad_row {
    const char *ini;   /* file text */
    const char *want1; /* substrings the message must contain (NULL: any) */
    const char *want2;
};

static const struct bad_row ini_bad_rows[] = {
    /* unknown section or key */
    {"[server]\nbogus = 1\n", "bogus", "line 2"},
    {"[bogus]\nworkers = 1\n", "bogus", "line 2"},
    {"[limits]\nworkers = 1\n", "workers", NULL},
    {"workers = 1\n", "workers", "line 1"},
    {"[Server]\nworkers = 1\n", "Server", NULL},
    {"[server]\nWorkers = 1\n", "Workers", NULL},
    /* bad integers */
    {"[server]\nworkers = many\n", "server.workers", "line 2"},
    {"[server]\nworkers = -1\n", "server.workers", NULL},
    {"[server]\nworkers = +1\n", "server.workers", NULL},
    {"[server]\nworkers = 1.5\n", "server.workers", NULL},
    {"[server]\nworkers = 0x10\n", "server.workers", NULL},
    {"[server]\nworkers = 1e2\n", "server.workers", NULL},
    {"[server]\nworkers = 4k\n", "server.workers", NULL},
    {"[server]\nworkers = 99999999999999999999\n", "server.workers", NULL},
    {"[server]\nworkers =\n", "server.workers", NULL},
    {"[limits]\nmax_headers = ten\n", "limits.max_headers", NULL},
    /* out of range */
    {"[server]\nworkers = 257\n", "server.workers", "range"},
    {"[limits]\nmax_headers = 0\n", "limits.max_headers", "range"},
    {"[limits]\nmax_headers = 10001\n", "limits.max_headers", "range"},
    {"[limits]\nmax_connections = 0\n", "limits.max_connections", "range"},
    {"[server]\nmax_ttl = 0\n", "server.max_ttl", "range"},
    {"[server]\nmax_ttl = 999ms\n", "server.max_ttl", "range"},
    {"[server]\nmax_ttl = 367d\n", "server.max_ttl", "range"},
    {"[server]\nshutdown_timeout = 2h\n", "server.shutdown_timeout", "range"},
    {"[upstream]\ntimeout = 0\n", "upstream.timeout", "range"},
    {"[upstream]\ntimeout = 2h\n", "upstream.timeout", "range"},
    {"[upstream]\nconnect_timeout = 0ms\n", "upstream.connect_timeout", "range"},
    {"[upstream]\nconnect_timeout = 11m\n", "upstream.connect_timeout", "range"},
    {"[limits]\nclient_timeout = 999ms\n", "limits.client_timeout", "range"},
    {"[limits]\nmax_body_bytes = 4294967297\n", "limits.max_body_bytes", "range"},
    {"[limits]\nmax_body_bytes = 4097m\n", "limits.max_body_bytes", "range"},
    {"[limits]\nmax_header_bytes = 1023\n", "limits.max_header_bytes", "range"},
    {"[limits]\nmax_header_bytes = 17m\n", "limits.max_header_bytes", "range"},
    {"[limits]\nmax_path_bytes = 15\n", "limits.max_path_bytes", "range"},
    {"[limits]\nmax_path_bytes = 1m\n", "limits.max_path_bytes", "range"},
    /* bad durations */
    {"[server]\nmax_ttl = 1.5h\n", "server.max_ttl", "duration"},
    {"[server]\nmax_ttl = 1 h\n", "server.max_ttl", "duration"},
    {"[server]\nmax_ttl = 1w\n", "server.max_ttl", "duration"},
    {"[server]\nmax_ttl = -1h\n", "server.max_ttl", "duration"},
    {"[server]\nmax_ttl = h\n", "server.max_ttl", "duration"},
    {"[server]\nmax_ttl =\n", "server.max_ttl", "duration"},
    {"[upstream]\ntimeout = 30sec\n", "upstream.timeout", "duration"},
    /* bad sizes */
    {"[limits]\nmax_body_bytes = 1g\n", "limits.max_body_bytes", "size"},
    {"[limits]\nmax_body_bytes = 1kb\n", "limits.max_body_bytes", "size"},
    {"[limits]\nmax_body_bytes = k\n", "limits.max_body_bytes", "size"},
    {"[limits]\nmax_body_bytes = -1\n", "limits.max_body_bytes", "size"},
    {"[limits]\nmax_body_bytes = 1.5m\n", "limits.max_body_bytes", "size"},
    {"[limits]\nmax_body_bytes = 1 k\n", "limits.max_body_bytes", "size"},
    {"[limits]\nmax_body_bytes = 99999999999999999999k\n", "limits.max_body_bytes", "size"},
    {"[limits]\nmax_body_bytes =\n", "limits.max_body_bytes", "size"},
    {"[audit]\nretention = soon\n", "audit.retention", "duration"},
    {"[audit]\nretention = -1d\n", "audit.retention", "duration"},
    {"[audit]\nretention = 36501d\n", "audit.retention", "duration"}, /* over 100 years */
    /* store.synchronous */
    {"[store]\nsynchronous = off\n", "synchronous", NULL},
    {"[store]\nsynchronous = FULL\n", "synchronous", NULL},
    {"[store]\nsynchronous = extra\n", "synchronous", NULL},
    {"[store]\nsynchronous =\n", "synchronous", NULL},
    /* admin token length */
    {"[server]\nadmin_token = 0123456789abcde\n", "admin_token", "16"},
    {"[server]\nadmin_token = x\n", "admin_token", "16"},
    /* required strings emptied */
    {"[server]\ndata_dir =\n", "data_dir", NULL},
    {"[server]\nproxy_listen =\n", "proxy_listen", NULL},
    {"[server]\nadmin_listen =\n", "admin_listen", NULL},
    /* syntax errors, with the line */
    {"[server]\nworkers\n", "syntax error", ":2"},
    {"[server\n", "syntax error", ":1"},
    {"[server\nworkers = 1\n", "line 1", NULL}, /* and the key lands in no section */
    {"[server]\nworkers = 1\n\njunk line\n", "syntax error", ":4"},
    /* the first error is reported, with its line */
    {"[server]\nworkers = 1\nworkers = x\nbogus = 2\n", "server.workers", "line 3"},
};

static void test_ini_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ini_bad_rows / sizeof ini_bad_rows[0]; i++) {
        char what[32];
        snprintf(what, sizeof what, "ini_bad_rows[%zu]", i);
        load_bad(what, ini_bad_rows[i].ini, ini_bad_rows[i].want1, ini_bad_rows[i].want2);
    }
}

static void test_missing_file(void **state)
{
    (void)state;
    struct kb_config *cfg = NULL;
    char *msg = NULL;
    assert_int_equal(config_load("/nonexistent/dir/keybrake.ini", &cfg, &msg), KB_E_CONFIG);
    assert_null(cfg);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "/nonexistent/dir/keybrake.ini"));
    free(msg);
    /* errmsg may be NULL: the caller does not want the detail */
    assert_int_equal(config_load("/nonexistent/dir/keybrake.ini", &cfg, NULL), KB_E_CONFIG);
    assert_null(cfg);
}

/* A path that opens but cannot be read (a directory: fopen succeeds, the
 * first read fails with EISDIR) is not an empty config file: `--config
 * /etc/keybrake/` must not start the daemon on defaults. */
static void test_unreadable_path_refused(void **state)
{
    (void)state;
    struct kb_config *cfg = NULL;
    char *msg = NULL;
    enum kb_err err = config_load("/tmp", &cfg, &msg);
    if (err == KB_OK) {
        print_error("config_load(\"/tmp\") succeeded: a directory was read as an empty file\n");
        config_free(cfg);
    }
    free(msg);
    assert_int_equal(err, KB_E_CONFIG);
}

/* A value too long for the parser's line buffer must be refused or kept
 * whole, never silently cut (a truncated secret or URL would send traffic
 * with the wrong credential or to the wrong place). */
static void test_long_line_not_truncated(void **state)
{
    (void)state;
    char secret[401];
    for (size_t i = 0; i < 400; i++)
        secret[i] = (char)('a' + i % 26);
    secret[400] = '\0';
    char ini[600];
    snprintf(ini, sizeof ini, "[vendor.stripe]\nsecret = %s\n", secret);
    struct kb_config *c = NULL;
    char *msg = NULL;
    enum kb_err err = load(ini, &c, &msg);
    if (err == KB_OK) {
        assert_string_equal(vendor(c, "stripe")->secret, secret);
        config_free(c);
    } else {
        assert_int_equal(err, KB_E_CONFIG);
        assert_non_null(msg);
    }
    free(msg);
}

/* ---- vendors in the file ---- */

/* forward_headers: names lower-cased, split on commas and blanks, added
 * to what the profile lists; anything that is not a header name refused. */
static void test_forward_headers(void **state)
{
    (void)state;
    struct kb_config *c = load_ok("[vendor.stripe]\n"
                                  "forward_headers = X-Team-Id, x-run-*\n"
                                  "forward_headers = x-third\n");
    const struct kb_vendor *v = vendor(c, "stripe");
    assert_non_null(v->forward);
    assert_string_equal(v->forward[0], "x-team-id");
    assert_string_equal(v->forward[1], "x-run-*");
    assert_string_equal(v->forward[2], "x-third");
    assert_null(v->forward[3]);
    assert_true(vendor_forwards_header(v, "X-TEAM-ID", 9));
    assert_true(vendor_forwards_header(v, "x-run-42", 8));
    assert_true(vendor_forwards_header(v, "Stripe-Version", 14)); /* the profile's */
    assert_true(vendor_forwards_header(v, "user-agent", 10));     /* the common list */
    assert_false(vendor_forwards_header(v, "x_team_id", 9));      /* '_' is not '-' */
    assert_false(vendor_forwards_header(v, "x-team-idx", 10));
    assert_false(vendor_forwards_header(v, "x-run", 5));
    assert_false(vendor_forwards_header(vendor(c, "openai"), "x-team-id", 9));
    assert_true(vendor_forwards_header(vendor(c, "openai"), "X-Stainless-Lang", 16));
    config_free(c);

    load_bad("colon", "[vendor.stripe]\nforward_headers = x-ok, x:bad\n", "forward_headers",
             "x:bad");
    load_bad("inner star", "[vendor.stripe]\nforward_headers = x-*-y\n", "forward_headers",
             "x-*-y");
    load_bad("lone star", "[vendor.acme]\nbase_url = https://a.test\nforward_headers = *\n",
             "forward_headers", NULL);
}

static void test_generic_vendor(void **state)
{
    (void)state;
    struct kb_config *c = load_ok("[vendor.acme]\n"
                                  "base_url = https://api.acme.test/\n"
                                  "auth = header:X-Acme-Key\n"
                                  "secret = sk_acme_from_ini\n"
                                  "cost = POST /v1/things 0.05\n"
                                  "cost = GET /v1/things/* 0.000001\n"
                                  "cost = DELETE /v1/things/* 0\n");
    assert_int_equal(c->nvendors, 5);
    const struct kb_vendor *v = vendor(c, "acme");
    assert_non_null(v);
    assert_null(v->profile);
    assert_string_equal(v->base_url, "https://api.acme.test"); /* trailing slash trimmed */
    assert_int_equal(v->auth, KB_AUTH_HEADER);
    assert_string_equal(v->auth_header, "X-Acme-Key");
    assert_string_equal(v->secret, "sk_acme_from_ini");
    assert_null(v->account);
    assert_int_equal(v->ncosts, 3);
    assert_string_equal(v->costs[0].pattern, "POST /v1/things");
    assert_int_equal(v->costs[0].micros, 50000);
    assert_string_equal(v->costs[1].pattern, "GET /v1/things/*");
    assert_int_equal(v->costs[1].micros, 1);
    assert_string_equal(v->costs[2].pattern, "DELETE /v1/things/*");
    assert_int_equal(v->costs[2].micros, 0);
    /* the built-ins are still there */
    assert_non_null(vendor(c, "stripe"));
    config_free(c);
}

struct vendor_row {
    const char *ini;
    const char *name;
    const char *base_url;
    enum kb_auth_style auth;
    const char *auth_header; /* NULL: not checked */
};

static const struct vendor_row vendor_rows[] = {
    /* default auth is bearer */
    {"[vendor.a]\nbase_url = http://127.0.0.1:9\n", "a", "http://127.0.0.1:9", KB_AUTH_BEARER,
     NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = bearer\n", "acme", "https://x.test",
     KB_AUTH_BEARER, NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = basic\naccount = AC1\nsecret = s\n", "acme",
     "https://x.test", KB_AUTH_BASIC, NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = basic\n", "acme", "https://x.test",
     KB_AUTH_BASIC, NULL}, /* no secret: no account needed yet */
    {"[vendor.acme]\nbase_url = https://x.test/v2///\nauth = header:api-key\n", "acme",
     "https://x.test/v2", KB_AUTH_HEADER, "api-key"},
    {"[vendor.my-vendor_2]\nbase_url = https://x.test\n", "my-vendor_2", "https://x.test",
     KB_AUTH_BEARER, NULL},
    {"[vendor.0123456789abcdefghijklmnopqrstuv]\nbase_url = https://x.test\n",
     "0123456789abcdefghijklmnopqrstuv", "https://x.test", KB_AUTH_BEARER, NULL},
    /* a built-in profile can be pointed elsewhere (a mock, a regional host) */
    {"[vendor.stripe]\nbase_url = http://127.0.0.1:12111/\n", "stripe", "http://127.0.0.1:12111",
     KB_AUTH_BEARER, NULL},
    {"[vendor.anthropic]\nbase_url = http://127.0.0.1:1\n", "anthropic", "http://127.0.0.1:1",
     KB_AUTH_HEADER, "x-api-key"},
};

static void test_vendor_rows(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vendor_rows / sizeof vendor_rows[0]; i++) {
        const struct vendor_row *r = &vendor_rows[i];
        struct kb_config *c = load_ok(r->ini);
        const struct kb_vendor *v = vendor(c, r->name);
        assert_non_null(v);
        assert_string_equal(v->base_url, r->base_url);
        assert_int_equal(v->auth, r->auth);
        if (r->auth_header)
            assert_string_equal(v->auth_header, r->auth_header);
        config_free(c);
    }
    /* the built-in keeps its flag when the file overrides it */
    struct kb_config *c = load_ok("[vendor.stripe]\nsecret = sk_test_ini\n");
    assert_non_null(vendor(c, "stripe")->profile);
    assert_string_equal(vendor(c, "stripe")->secret, "sk_test_ini");
    assert_int_equal(c->nvendors, 4);
    config_free(c);
}

static const struct bad_row vendor_bad_rows[] = {
    /* bad names */
    {"[vendor.Acme]\nbase_url = https://x.test\n", "Acme", NULL},
    {"[vendor.ac.me]\nbase_url = https://x.test\n", "ac.me", NULL},
    {"[vendor.ac me]\nbase_url = https://x.test\n", "vendor name", NULL},
    {"[vendor.ac/me]\nbase_url = https://x.test\n", "ac/me", NULL},
    {"[vendor.]\nbase_url = https://x.test\n", "vendor name", NULL},
    {"[vendor.0123456789abcdefghijklmnopqrstuvw]\nbase_url = https://x.test\n", "vendor name",
     NULL}, /* 33 characters */
    {"[vendor.caf\xc3\xa9]\nbase_url = https://x.test\n", "vendor name", NULL},
    /* base_url */
    {"[vendor.acme]\nbase_url = ftp://x.test\n", "base_url", "line 2"},
    {"[vendor.acme]\nbase_url = x.test\n", "base_url", NULL},
    {"[vendor.acme]\nbase_url = //x.test\n", "base_url", NULL},
    {"[vendor.acme]\nbase_url = HTTPS://x.test\n", "base_url", NULL},
    {"[vendor.acme]\nbase_url =\n", "base_url", NULL},
    {"[vendor.stripe]\nbase_url = api.stripe.com\n", "base_url", NULL},
    {"[vendor.acme]\nauth = bearer\n", "vendor.acme", "base_url"}, /* base_url missing */
    /* auth styles */
    {"[vendor.acme]\nbase_url = https://x.test\nauth = digest\n", "auth", "line 3"},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = Bearer\n", "auth", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = header:\n", "auth", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = header\n", "auth", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth =\n", "auth", NULL},
    /* the header the secret goes in: a token that neither frames nor routes */
    {"[vendor.acme]\nbase_url = https://x.test\nauth = header:X Y\n", "auth", "line 3"},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = header:Content-Length\n", "auth", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = header:transfer-encoding\n", "auth", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = header:Host\n", "auth", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\nauth = header:Keybrake-Cost-USD\n", "auth", NULL},
    /* Basic auth with a secret needs the account */
    {"[vendor.acme]\nbase_url = https://x.test\nauth = basic\nsecret = s\n", "vendor.acme",
     "account"},
    {"[vendor.twilio]\nsecret = tok\n", "twilio", "TWILIO_ACCOUNT_SID"},
    /* unknown vendor key */
    {"[vendor.acme]\nbase_url = https://x.test\ntoken = s\n", "token", "line 3"},
    {"[vendor.stripe]\napi_key = s\n", "api_key", NULL},
    /* cost lines */
    {"[vendor.acme]\nbase_url = https://x.test\ncost = 0.05\n", "cost", "line 3"},
    {"[vendor.acme]\nbase_url = https://x.test\ncost = POST /v1/x\n", "cost", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\ncost = POST /v1/x -1\n", "cost", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\ncost = POST /v1/x 0.0000001\n", "cost", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\ncost = POST /v1/x $1\n", "cost", NULL},
    {"[vendor.acme]\nbase_url = https://x.test\ncost = POST /v1/x 1e13\n", "cost", NULL},
};

static void test_vendor_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vendor_bad_rows / sizeof vendor_bad_rows[0]; i++) {
        char what[32];
        snprintf(what, sizeof what, "vendor_bad_rows[%zu]", i);
        load_bad(what, vendor_bad_rows[i].ini, vendor_bad_rows[i].want1, vendor_bad_rows[i].want2);
    }
}

/* ---- environment over the file ---- */

struct env_int_row {
    const char *env, *value; /* environment variable set */
    const char *ini;         /* file that says otherwise */
    size_t off;
    int64_t want;
};

static const struct env_int_row env_int_rows[] = {
    {"KEYBRAKE_WORKERS", "3", "[server]\nworkers = 8\n", OFF(workers), 3},
    {"KEYBRAKE_WORKERS", "0", "[server]\nworkers = 8\n", OFF(workers), 0},
    {"KEYBRAKE_MAX_TTL", "2h", "[server]\nmax_ttl = 1h\n", OFF(max_ttl_ms), 7200 * SEC},
    {"KEYBRAKE_UPSTREAM_TIMEOUT", "5s", "[upstream]\ntimeout = 60s\n", OFF(upstream_timeout_ms),
     5 * SEC},
    {"KEYBRAKE_UPSTREAM_CONNECT_TIMEOUT", "100ms", "[upstream]\nconnect_timeout = 5s\n",
     OFF(upstream_connect_timeout_ms), 100},
    {"KEYBRAKE_SHUTDOWN_TIMEOUT", "1s", "[server]\nshutdown_timeout = 30s\n",
     OFF(shutdown_timeout_ms), SEC},
    {"KEYBRAKE_MAX_BODY_BYTES", "1m", "[limits]\nmax_body_bytes = 2m\n", OFF(max_body_bytes), MIB},
    {"KEYBRAKE_MAX_HEADER_BYTES", "8k", "[limits]\nmax_header_bytes = 64k\n", OFF(max_header_bytes),
     8192},
    {"KEYBRAKE_MAX_HEADERS", "50", "[limits]\nmax_headers = 20\n", OFF(max_headers), 50},
    {"KEYBRAKE_MAX_PATH_BYTES", "512", "[limits]\nmax_path_bytes = 1k\n", OFF(max_path_bytes), 512},
    {"KEYBRAKE_MAX_CONNECTIONS", "10", "[limits]\nmax_connections = 20\n", OFF(max_connections),
     10},
    {"KEYBRAKE_CLIENT_TIMEOUT", "2s", "[limits]\nclient_timeout = 5s\n", OFF(client_timeout_ms),
     2 * SEC},
    {"KEYBRAKE_AUDIT_RETENTION", "2s", "[audit]\nretention = 30d\n", OFF(audit_retention_ms),
     2 * SEC},
    /* without a file too */
    {"KEYBRAKE_WORKERS", "16", NULL, OFF(workers), 16},
};

static void test_env_numbers_win(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_int_rows / sizeof env_int_rows[0]; i++) {
        const struct env_int_row *r = &env_int_rows[i];
        clean_env();
        assert_int_equal(setenv(r->env, r->value, 1), 0);
        struct kb_config *c = load_ok(r->ini);
        if (int_at(c, r->off) != r->want)
            print_error("row %zu %s=%s: got %lld want %lld\n", i, r->env, r->value,
                        (long long)int_at(c, r->off), (long long)r->want);
        assert_int_equal(int_at(c, r->off), r->want);
        config_free(c);
    }
}

struct env_str_row {
    const char *env, *value;
    const char *ini;
    size_t off;
    const char *want; /* NULL: unset */
};

static const struct env_str_row env_str_rows[] = {
    {"KEYBRAKE_DATA_DIR", "/tmp/kbdata", "[server]\ndata_dir = /ini\n", OFF(data_dir),
     "/tmp/kbdata"},
    {"KEYBRAKE_PROXY_LISTEN", "0.0.0.0:9000", "[server]\nproxy_listen = 127.0.0.1:1\n",
     OFF(proxy_listen), "0.0.0.0:9000"},
    {"KEYBRAKE_ADMIN_LISTEN", "127.0.0.1:0", "[server]\nadmin_listen = 127.0.0.1:1\n",
     OFF(admin_listen), "127.0.0.1:0"},
    {"KEYBRAKE_ADMIN_TOKEN", "env-admin-token-0123",
     "[server]\nadmin_token = ini-token-0123456789\n", OFF(admin_token), "env-admin-token-0123"},
    {"KEYBRAKE_SERVER_KEY", "ab", NULL, OFF(server_key), "ab"},
    {"KEYBRAKE_LOG_LEVEL", "debug", "[server]\nlog_level = warn\n", OFF(log_level), "debug"},
    {"KEYBRAKE_LOG_FORMAT", "json", NULL, OFF(log_format), "json"},
    {"KEYBRAKE_PRICING_FILE", "/p.json", "[server]\npricing_file = /q.json\n", OFF(pricing_file),
     "/p.json"},
    /* an empty variable unsets a nullable string, even one the file set */
    {"KEYBRAKE_PRICING_FILE", "", "[server]\npricing_file = /q.json\n", OFF(pricing_file), NULL},
    {"KEYBRAKE_CA_FILE", "/ca.pem", "[upstream]\nca_file = /other.pem\n", OFF(ca_file), "/ca.pem"},
    {"KEYBRAKE_STORE_SYNCHRONOUS", "full", "[store]\nsynchronous = normal\n",
     OFF(store_synchronous), "full"},
    {"KEYBRAKE_AUDIT_ARCHIVE_DIR", "/env/arch", "[audit]\narchive_dir = /ini/arch\n",
     OFF(audit_archive_dir), "/env/arch"},
};

static void test_env_strings_win(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_str_rows / sizeof env_str_rows[0]; i++) {
        const struct env_str_row *r = &env_str_rows[i];
        clean_env();
        assert_int_equal(setenv(r->env, r->value, 1), 0);
        struct kb_config *c = load_ok(r->ini);
        const char *got = str_at(c, r->off);
        if (r->want)
            assert_string_equal(got, r->want);
        else
            assert_null(got);
        config_free(c);
    }
}

/* Several layers at once: each setting comes from the highest layer that
 * names it. */
static void test_layers_together(void **state)
{
    (void)state;
    assert_int_equal(setenv("KEYBRAKE_WORKERS", "3", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_DATA_DIR", "/env/data", 1), 0);
    struct kb_config *c = load_ok("[server]\nworkers = 8\nmax_ttl = 1h\n"
                                  "[upstream]\ntimeout = 60s\n");
    assert_int_equal(c->workers, 3);                        /* env */
    assert_string_equal(c->data_dir, "/env/data");          /* env */
    assert_int_equal(c->max_ttl_ms, 3600 * SEC);            /* file */
    assert_int_equal(c->upstream_timeout_ms, 60 * SEC);     /* file */
    assert_string_equal(c->proxy_listen, "127.0.0.1:8420"); /* default */
    config_free(c);
}

struct env_bad_row {
    const char *env, *value;
    const char *want1, *want2;
};

static const struct env_bad_row env_bad_rows[] = {
    {"KEYBRAKE_WORKERS", "many", "KEYBRAKE_WORKERS", "integer"},
    {"KEYBRAKE_WORKERS", "", "KEYBRAKE_WORKERS", NULL},
    {"KEYBRAKE_WORKERS", "-2", "KEYBRAKE_WORKERS", NULL},
    {"KEYBRAKE_WORKERS", "1000", "KEYBRAKE_WORKERS", "range"},
    {"KEYBRAKE_MAX_TTL", "0", "KEYBRAKE_MAX_TTL", "range"},
    {"KEYBRAKE_MAX_TTL", "1y", "KEYBRAKE_MAX_TTL", "duration"},
    {"KEYBRAKE_MAX_TTL", "400d", "KEYBRAKE_MAX_TTL", "range"},
    {"KEYBRAKE_UPSTREAM_TIMEOUT", "0", "KEYBRAKE_UPSTREAM_TIMEOUT", "range"},
    {"KEYBRAKE_UPSTREAM_TIMEOUT", "5 s", "KEYBRAKE_UPSTREAM_TIMEOUT", "duration"},
    {"KEYBRAKE_UPSTREAM_TIMEOUT", "2h", "KEYBRAKE_UPSTREAM_TIMEOUT", "range"},
    {"KEYBRAKE_MAX_BODY_BYTES", "10g", "KEYBRAKE_MAX_BODY_BYTES", "size"},
    {"KEYBRAKE_MAX_HEADERS", "0", "KEYBRAKE_MAX_HEADERS", "range"},
    {"KEYBRAKE_STORE_SYNCHRONOUS", "off", "synchronous", NULL},
    {"KEYBRAKE_ADMIN_TOKEN", "short", "admin_token", "16"},
    {"KEYBRAKE_DATA_DIR", "", "data_dir", NULL},
    {"KEYBRAKE_PROXY_LISTEN", "", "proxy_listen", NULL},
    {"KEYBRAKE_STRIPE_BASE_URL", "localhost:12111", "KEYBRAKE_STRIPE_BASE_URL", "base_url"},
    {"KEYBRAKE_OPENAI_BASE_URL", "ftp://x", "KEYBRAKE_OPENAI_BASE_URL", "base_url"},
    /* Twilio's token without its account SID */
    {"TWILIO_AUTH_TOKEN", "tok", "twilio", "TWILIO_ACCOUNT_SID"},
    {"KEYBRAKE_TWILIO_SECRET", "tok", "twilio", "account"},
};

static void test_env_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_bad_rows / sizeof env_bad_rows[0]; i++) {
        const struct env_bad_row *r = &env_bad_rows[i];
        char what[128];
        snprintf(what, sizeof what, "env_bad_rows[%zu] %s=\"%s\"", i, r->env, r->value);
        clean_env();
        assert_int_equal(setenv(r->env, r->value, 1), 0);
        load_bad(what, NULL, r->want1, r->want2);
    }
}

/* An environment error is reported even when the file is fine, and a file
 * error is reported even when the environment would have fixed the value. */
static void test_env_and_file_errors(void **state)
{
    (void)state;
    assert_int_equal(setenv("KEYBRAKE_WORKERS", "x", 1), 0);
    load_bad("bad env, good file", "[server]\nworkers = 2\n", "KEYBRAKE_WORKERS", NULL);
    assert_int_equal(setenv("KEYBRAKE_WORKERS", "2", 1), 0);
    load_bad("bad file, good env", "[server]\nworkers = x\n", "server.workers", "line 2");
}

/* ---- vendor secrets from the environment ---- */

static void test_vendor_secrets_from_env(void **state)
{
    (void)state;
    assert_int_equal(setenv("STRIPE_SECRET_KEY", "sk_test_env", 1), 0);
    assert_int_equal(setenv("OPENAI_API_KEY", "sk-openai-env", 1), 0);
    assert_int_equal(setenv("ANTHROPIC_API_KEY", "sk-ant-env", 1), 0);
    assert_int_equal(setenv("TWILIO_ACCOUNT_SID", "AC0123", 1), 0);
    assert_int_equal(setenv("TWILIO_AUTH_TOKEN", "twtok", 1), 0);
    struct kb_config *c = load_ok(NULL);
    assert_string_equal(vendor(c, "stripe")->secret, "sk_test_env");
    assert_string_equal(vendor(c, "openai")->secret, "sk-openai-env");
    assert_string_equal(vendor(c, "anthropic")->secret, "sk-ant-env");
    assert_string_equal(vendor(c, "twilio")->secret, "twtok");
    assert_string_equal(vendor(c, "twilio")->account, "AC0123");
    assert_null(vendor(c, "stripe")->account);
    config_free(c);
}

static void test_vendor_secret_edge_cases(void **state)
{
    (void)state;
    /* an empty variable is no secret */
    assert_int_equal(setenv("STRIPE_SECRET_KEY", "", 1), 0);
    struct kb_config *c = load_ok(NULL);
    assert_null(vendor(c, "stripe")->secret);
    config_free(c);

    /* the account alone is fine: Twilio is just not configured */
    clean_env();
    assert_int_equal(setenv("TWILIO_ACCOUNT_SID", "AC0123", 1), 0);
    c = load_ok(NULL);
    assert_null(vendor(c, "twilio")->secret);
    assert_string_equal(vendor(c, "twilio")->account, "AC0123");
    config_free(c);

    /* the account may come from KEYBRAKE_TWILIO_ACCOUNT */
    clean_env();
    assert_int_equal(setenv("TWILIO_AUTH_TOKEN", "twtok", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_TWILIO_ACCOUNT", "AC9", 1), 0);
    c = load_ok(NULL);
    assert_string_equal(vendor(c, "twilio")->account, "AC9");
    assert_string_equal(vendor(c, "twilio")->secret, "twtok");
    config_free(c);

    /* ... or from the file */
    clean_env();
    assert_int_equal(setenv("TWILIO_AUTH_TOKEN", "twtok", 1), 0);
    c = load_ok("[vendor.twilio]\naccount = AC7\n");
    assert_string_equal(vendor(c, "twilio")->account, "AC7");
    config_free(c);
}

/* KEYBRAKE_<VENDOR>_SECRET / _BASE_URL override both the file and the
 * vendor's own variable. */
static void test_keybrake_vendor_env_wins(void **state)
{
    (void)state;
    assert_int_equal(setenv("STRIPE_SECRET_KEY", "sk_test_vendor_var", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_STRIPE_SECRET", "sk_test_keybrake_var", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_STRIPE_BASE_URL", "http://127.0.0.1:12111///", 1), 0);
    struct kb_config *c = load_ok("[vendor.stripe]\n"
                                  "secret = sk_test_ini\n"
                                  "base_url = https://ini.example\n");
    const struct kb_vendor *v = vendor(c, "stripe");
    assert_string_equal(v->secret, "sk_test_keybrake_var");
    assert_string_equal(v->base_url, "http://127.0.0.1:12111"); /* slashes trimmed */
    assert_non_null(v->profile);
    /* the other vendors are untouched */
    assert_string_equal(vendor(c, "openai")->base_url, "https://api.openai.com");
    config_free(c);

    clean_env();
    assert_int_equal(setenv("KEYBRAKE_STRIPE_BASE_URL", "https://stripe.internal/", 1), 0);
    c = load_ok(NULL);
    assert_string_equal(vendor(c, "stripe")->base_url, "https://stripe.internal");
    config_free(c);

    /* an empty override is no override */
    clean_env();
    assert_int_equal(setenv("KEYBRAKE_STRIPE_BASE_URL", "", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_STRIPE_SECRET", "", 1), 0);
    assert_int_equal(setenv("STRIPE_SECRET_KEY", "sk_test_vendor_var", 1), 0);
    c = load_ok(NULL);
    assert_string_equal(vendor(c, "stripe")->base_url, "https://api.stripe.com");
    assert_string_equal(vendor(c, "stripe")->secret, "sk_test_vendor_var");
    config_free(c);
}

static void test_generic_vendor_env(void **state)
{
    (void)state;
    static const char ini[] = "[vendor.acme]\n"
                              "base_url = https://api.acme.test\n"
                              "secret = from_ini\n"
                              "[vendor.my-vendor]\n"
                              "base_url = https://my.test\n";
    assert_int_equal(setenv("KEYBRAKE_ACME_SECRET", "from_env", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_ACME_BASE_URL", "http://127.0.0.1:7/", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_MY_VENDOR_SECRET", "dash_to_underscore", 1), 0);
    struct kb_config *c = load_ok(ini);
    assert_string_equal(vendor(c, "acme")->secret, "from_env");
    assert_string_equal(vendor(c, "acme")->base_url, "http://127.0.0.1:7");
    assert_string_equal(vendor(c, "my-vendor")->secret, "dash_to_underscore");
    config_free(c);

    /* a variable for a vendor the file does not declare creates nothing */
    clean_env();
    assert_int_equal(setenv("KEYBRAKE_GHOST_SECRET", "x", 1), 0);
    assert_int_equal(setenv("KEYBRAKE_GHOST_BASE_URL", "https://ghost.test", 1), 0);
    c = load_ok(NULL);
    assert_null(vendor(c, "ghost"));
    assert_int_equal(c->nvendors, 4);
    config_free(c);

    /* the secret for a declared vendor may come from the environment alone */
    clean_env();
    assert_int_equal(setenv("KEYBRAKE_ACME_SECRET", "only_env", 1), 0);
    c = load_ok("[vendor.acme]\nbase_url = https://api.acme.test\n");
    assert_string_equal(vendor(c, "acme")->secret, "only_env");
    config_free(c);

    /* and an env base_url can supply a generic vendor's missing one */
    clean_env();
    assert_int_equal(setenv("KEYBRAKE_ACME_BASE_URL", "https://env.acme.test", 1), 0);
    c = load_ok("[vendor.acme]\nsecret = s\n");
    assert_string_equal(vendor(c, "acme")->base_url, "https://env.acme.test");
    config_free(c);
}

/* The same setting loaded twice in a row gives the same answer: nothing
 * leaks from one load into the next. */
static void test_reload_independent(void **state)
{
    (void)state;
    struct kb_config *a = load_ok("[vendor.acme]\nbase_url = https://a.test\n");
    struct kb_config *b = load_ok(NULL);
    assert_non_null(vendor(a, "acme"));
    assert_null(vendor(b, "acme"));
    config_free(a);
    config_free(b);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_builtin_vendors),
        T(test_forward_headers),
        T(test_config_vendor_lookup),
        T(test_ini_numbers),
        T(test_ini_strings),
        T(test_ini_only_named_settings_change),
        T(test_ini_refusals),
        T(test_missing_file),
        T(test_unreadable_path_refused),
        T(test_long_line_not_truncated),
        T(test_generic_vendor),
        T(test_vendor_rows),
        T(test_vendor_refusals),
        T(test_env_numbers_win),
        T(test_env_strings_win),
        T(test_layers_together),
        T(test_env_refusals),
        T(test_env_and_file_errors),
        T(test_vendor_secrets_from_env),
        T(test_vendor_secret_edge_cases),
        T(test_keybrake_vendor_env_wins),
        T(test_generic_vendor_env),
        T(test_reload_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
