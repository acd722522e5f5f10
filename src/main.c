/*
 * main.c - argv, start-up, signals and stop. Nothing else lives here:
 * `keybrake serve` loads the configuration, prepares the data directory
 * (server key, store, admin token), starts the server and waits for
 * SIGTERM/SIGINT.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "admin/admin.h"
#include "alerts/alerts.h"
#include "audit/audit.h"
#include "cli/api.h"
#include "cli/audit.h"
#include "cli/client.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/runtime.h"
#include "meter/meter.h"
#include "net/server.h"
#include "net/tls.h"
#include "proxy/proxy.h"
#include "store/cluster.h"
#include "store/store.h"
#include "store/reader.h"
#include "store/revlog.h"
#include "store/writer.h"
#include "vendor/creds.h"
#include "vendor/secrets.h"

#ifndef KB_VERSION
#define KB_VERSION "0.1.0"
#endif

static void usage(FILE *f)
{
    fprintf(f, "usage: keybrake <command> [options]      (keybrake <command> --help)\n"
               "\n"
               "the daemon:\n"
               "  serve [--config FILE]            run the proxy and admin API\n"
               "  config                           print the settings table\n"
               "  audit verify|export              check or extract the audit log (offline)\n"
               "\n"
               "a running daemon, through its admin API (KEYBRAKE_ADDR, KEYBRAKE_ADMIN_TOKEN):\n"
               "  keys create|list|show|revoke|revoke-prefix   vault keys\n"
               "  budgets list|show|create|delete  shared USD budgets keys spend from\n"
               "  tenants list|show|create|delete  tenants: customer organisations\n"
               "  admin-tokens list|create|revoke  admin tokens, root or one tenant's\n"
               "  usage                            today's spend against the caps\n"
               "  audit tail [-f]                  the newest audit entries\n"
               "\n"
               "  version, --version               print the version\n"
               "\n"
               "exit codes: 0 ok, 1 the API refused (4xx), 2 usage error,\n"
               "            3 daemon unreachable or 5xx (audit verify: 1 chain damaged)\n");
}

/* When the file system holding dir is (nearly) full, a sentence saying so
 * for an error message ("" otherwise): SQLite says only "disk I/O error"
 * or "database or disk is full". Static storage; main thread. */
static const char *disk_note(const char *dir)
{
    static char note[160];
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0)
        return "";
    unsigned long long avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
    if (avail >= 16ull * 1024 * 1024)
        return "";
    snprintf(note, sizeof note, " (the disk holding %.80s is full: %llu bytes free)", dir, avail);
    return note;
}

/* The price tables for cfg: the embedded file, the pricing_file merged
 * over it, then each vendor's fixed costs. */
static enum kb_err pricing_build(const struct kb_config *cfg, struct kb_pricing **out,
                                 char **errmsg)
{
    struct kb_pricing *p = NULL;
    char *em = NULL;
    if (meter_pricing_load(cfg->pricing_file, &p, &em) != KB_OK) {
        kb_set_errmsg(errmsg, "pricing: %s", em);
        free(em);
        return KB_E_CONFIG;
    }
    for (size_t i = 0; i < cfg->nvendors; i++)
        for (size_t k = 0; k < cfg->vendors[i].ncosts; k++)
            if (meter_pricing_add_fixed(p, cfg->vendors[i].name, cfg->vendors[i].costs[k].pattern,
                                        cfg->vendors[i].costs[k].micros, &em) != KB_OK) {
                kb_set_errmsg(errmsg, "vendor.%s cost: %s", cfg->vendors[i].name, em);
                free(em);
                meter_pricing_free(p);
                return KB_E_CONFIG;
            }
    *out = p;
    return KB_OK;
}

/* Store reads waiting at once (key lookups of cache misses) before the
 * proxy answers 503: a bound on what strangers can queue. */
#define READER_MAX_QUEUE 4096

/* Tables replaced by reloads: kept until exit, since requests in flight
 * point into them (a few KB each). */
struct retired {
    struct kb_pricing **v;
    size_t n;
    struct kb_creds **c;
    size_t nc;
};

/* The live limits from cfg (start and each reload). */
static void limits_set(struct kb_live_limits *l, const struct kb_config *cfg)
{
    atomic_store(&l->max_ttl_ms, cfg->max_ttl_ms);
    atomic_store(&l->max_path_bytes, cfg->max_path_bytes);
    atomic_store(&l->shutdown_timeout_ms, cfg->shutdown_timeout_ms);
    atomic_store(&l->max_body_bytes, cfg->max_body_bytes);
    atomic_store(&l->max_header_bytes, cfg->max_header_bytes);
    atomic_store(&l->max_headers, cfg->max_headers);
    atomic_store(&l->max_connections, cfg->max_connections);
    atomic_store(&l->max_connections_per_source, cfg->max_connections_per_source);
    atomic_store(&l->max_buffered_body_bytes, cfg->max_buffered_body_bytes);
    atomic_store(&l->admin_max_connections, cfg->admin_max_connections);
    atomic_store(&l->admin_max_connections_per_source, cfg->admin_max_connections_per_source);
}

/* Settings a reload applies (the others need a restart). log_file and
 * audit.sink are reopened at their start paths, not moved. */
static bool applied_live(const char *name)
{
    static const char *const live[] = {"log_level",
                                       "log_format",
                                       "pricing_file",
                                       "max_ttl",
                                       "max_path_bytes",
                                       "shutdown_timeout",
                                       "max_body_bytes",
                                       "max_header_bytes",
                                       "max_headers",
                                       "max_connections",
                                       "max_connections_per_source",
                                       "max_buffered_body_bytes",
                                       "admin_max_connections",
                                       "admin_max_connections_per_source"};
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (strcmp(name, live[i]) == 0)
            return true;
    return false;
}

/* Reopens the log and sink files (logrotate renamed them). A file that
 * cannot be opened keeps the old one in use, and is logged. */
static void reopen_files(struct kb_audit_sink *sink)
{
    char *em = NULL;
    if (log_reopen(&em) != KB_OK) {
        kb_log(KB_LOG_ERROR, "cannot reopen the log file; still writing the old one", "error", em,
               NULL);
        free(em);
        em = NULL;
    }
    if (sink && audit_sink_reopen(sink, &em) != KB_OK) {
        kb_log(KB_LOG_ERROR, "cannot reopen the audit sink; still writing the old one", "error", em,
               NULL);
        free(em);
    }
}

/* The listeners' TLS contexts from cfg: the proxy's pair, the admin's own
 * pair or else the proxy's (the same object, reloaded once). Main thread,
 * before the server starts. */
static enum kb_err tls_setup(const struct kb_config *cfg, struct kb_runtime *rt, char **errmsg)
{
    if (cfg->tls_cert && tls_new(cfg->tls_cert, cfg->tls_key, &rt->tls_proxy, errmsg) != KB_OK)
        return KB_E_CONFIG;
    if (cfg->admin_tls_cert)
        return tls_new(cfg->admin_tls_cert, cfg->admin_tls_key, &rt->tls_admin, errmsg);
    rt->tls_admin = rt->tls_proxy;
    return KB_OK;
}

/* SIGHUP: each listener's certificate and key, re-read from the files
 * named at start (a renewal replaces them in place). New connections get
 * the new pair; open ones keep theirs; a pair that does not load keeps the
 * old one in force, and is logged. */
static void tls_reload_all(struct kb_runtime *rt)
{
    struct kb_tls *const all[2] = {rt->tls_proxy,
                                   rt->tls_admin != rt->tls_proxy ? rt->tls_admin : NULL};
    static const char *const names[2] = {"proxy", "admin"};
    for (int i = 0; i < 2; i++) {
        char *em = NULL;
        if (!all[i])
            continue;
        const char *which = i == 0 && rt->tls_admin == rt->tls_proxy ? "proxy admin" : names[i];
        if (tls_reload(all[i], &em) != KB_OK) {
            kb_log(KB_LOG_ERROR, "cannot reload the TLS certificate; still serving the old one",
                   "listener", which, "error", em, NULL);
            free(em);
        } else {
            kb_log(KB_LOG_INFO, "TLS certificate reloaded", "listener", which, "cert",
                   tls_cert_path(all[i]), NULL);
        }
    }
}

/*
 * SIGHUP: reopens the log and audit sink files, re-reads the listeners'
 * TLS certificates and keys (whatever the configuration does next), then
 * re-reads the configuration and applies what can change live: log level and format,
 * the pricing file and the vendors' fixed costs, the vendors' secrets and
 * accounts (requests admitted from then on use the new ones, those in
 * flight finish with the old), and the limits read where they are used
 * (max_ttl, max_path_bytes, shutdown_timeout). The daemon keeps serving
 * throughout; a configuration that does not load changes nothing. The log
 * line names each changed setting that only a restart applies (listen
 * addresses, the store, the other limits: they are copied into listeners
 * and upstream clients at start; vendors added or removed, base URLs).
 */
static void reload(const char *config_path, struct kb_runtime *rt, struct retired *old,
                   struct kb_audit_sink *sink)
{
    struct kb_config *ncfg = NULL;
    struct kb_pricing *np = NULL;
    struct kb_creds *nc = NULL;
    char *em = NULL;
    reopen_files(sink); /* first: the lines below go to the new file */
    tls_reload_all(rt); /* the files, not the settings: whatever the config says */
    if (config_load(config_path, &ncfg, &em) != KB_OK || pricing_build(ncfg, &np, &em) != KB_OK ||
        creds_build(rt->cfg, ncfg, atomic_load(&rt->creds), &nc, &em) != KB_OK ||
        (strcmp(ncfg->log_format, "logfmt") != 0 && strcmp(ncfg->log_format, "json") != 0) ||
        !log_set_level(ncfg->log_level)) {
        kb_log(KB_LOG_ERROR, "reload failed; nothing changed", "error",
               em ? em : "log_level must be debug|info|warn|error and log_format logfmt|json",
               NULL);
        free(em);
        meter_pricing_free(np);
        creds_free(nc);
        config_free(ncfg);
        return;
    }
    log_set_format(ncfg->log_format);
    limits_set(&rt->limits, ncfg);
    const struct kb_pricing *prev = atomic_exchange(&rt->pricing, np);
    old->v = kb_realloc(old->v, (old->n + 1) * sizeof *old->v);
    old->v[old->n++] = (struct kb_pricing *)prev;
    const struct kb_creds *prevc = atomic_exchange(&rt->creds, nc);
    old->c = kb_realloc(old->c, (old->nc + 1) * sizeof *old->c);
    old->c[old->nc++] = (struct kb_creds *)prevc;
    /* what changed since the start and only a restart applies */
    const char *sections[64], *changed[64];
    size_t n = config_changed(rt->cfg, ncfg, sections, changed, 64);
    struct kb_buf later = KB_BUF_INIT;
    for (size_t i = 0; i < n; i++)
        if (!applied_live(changed[i]))
            buf_printf(&later, "%s%s.%s", later.len ? " " : "", sections[i], changed[i]);
    if (later.len)
        kb_log(KB_LOG_WARN, "reloaded; restart needed for some changes", "applied",
               "log_level log_format pricing_file vendor_costs vendor_secrets limits",
               "restart_needed", later.data, "reopened", "log_file audit_sink", NULL);
    else
        kb_log(KB_LOG_INFO, "reloaded", "applied",
               "log_level log_format pricing_file vendor_costs vendor_secrets limits", "reopened",
               "log_file audit_sink", NULL);
    buf_cleanup(&later);
    config_free(ncfg);
}

/* ---- the services the listeners run (see net/server.h) ---- */

static enum kb_err proxy_create(struct event_base *base, const struct kb_runtime *rt, int index,
                                void **state, char **errmsg)
{
    struct kb_proxy *px = NULL;
    enum kb_err err = proxy_new(base, rt, index, &px, errmsg);
    *state = px;
    return err;
}

static void proxy_drain_cb(void *state, kb_drained_cb cb, void *arg)
{
    proxy_drain(state, cb, arg);
}

static bool proxy_busy(void *state)
{
    return !proxy_idle(state);
}

static void proxy_free_cb(void *state)
{
    proxy_free(state);
}

static const struct kb_service proxy_service = {
    .create = proxy_create,
    .on_request = proxy_handle,
    .on_head = proxy_head_gate,
    .drain = proxy_drain_cb,
    .busy = proxy_busy,
    .free = proxy_free_cb,
};

static enum kb_err admin_create(struct event_base *base, const struct kb_runtime *rt, int index,
                                void **state, char **errmsg)
{
    (void)index;
    struct kb_admin *a = NULL;
    enum kb_err err = admin_new(base, rt, &a, errmsg);
    *state = a;
    return err;
}

static void admin_drain_cb(void *state, kb_drained_cb cb, void *arg)
{
    admin_drain(state, cb, arg); /* answers the writes in flight */
}

static void admin_free_cb(void *state)
{
    admin_free(state);
}

static const struct kb_service admin_service = {
    .create = admin_create,
    .on_request = admin_handle,
    .on_head = admin_head_gate,
    .drain = admin_drain_cb,
    .busy = NULL, /* a drained admin loop takes no new work */
    .free = admin_free_cb,
};

static int serve(const char *config_path)
{
    int rc = 1;
    char *errmsg = NULL;
    struct kb_config *cfg = NULL;
    struct kb_pricing *pricing = NULL;
    struct kb_creds *creds = NULL;
    struct kb_store *store = NULL;
    struct kb_server *srv = NULL;
    struct kb_writer *writer = NULL;
    struct kb_reader *reader = NULL;
    struct kb_alerts *alerts = NULL; /* NULL without [alerts] webhook_url */
    struct kb_revlog *revlog = NULL;
    struct kb_cluster *cluster = NULL;
    struct kb_audit_sink *sink = NULL;
    struct kb_runtime rt = {0};
    char *store_path = NULL;
    int lock_fd = -1;         /* the data dir lock: held until exit */
    int store_lock_fd = -1;   /* and the store's, when it lives elsewhere */
    struct retired old = {0}; /* price tables replaced by reloads */

    /* Signals go to this thread only, through sigwait. Blocked before any
     * thread exists (the store writer starts early): a thread created with
     * them unblocked could take a SIGTERM and die of it. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (config_load(config_path, &cfg, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    if (!log_set_level(cfg->log_level) || !log_set_format(cfg->log_format)) {
        fprintf(stderr, "keybrake: log_level must be debug|info|warn|error and log_format "
                        "logfmt|json\n");
        goto out;
    }
    if (cfg->log_file && log_open_file(cfg->log_file, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    /* the store, key and token files are for this user alone */
    umask(077);
    if (cli_prepare_data_dir(cfg, rt.server_key, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    if (cli_lock_data_dir(cfg, &lock_fd, &store_lock_fd, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    char node[KB_NODE_ID_MAX + 1], boot[33];
    uint8_t boot_bytes[16];
    crypto_random(boot_bytes, sizeof boot_bytes);
    crypto_hex(boot_bytes, sizeof boot_bytes, boot);
    if (cli_node_id(cfg, node, &errmsg) != KB_OK || !store_set_node(node, boot)) {
        fprintf(stderr, "keybrake: %s\n", errmsg ? errmsg : "bad node id");
        goto out;
    }
    store_path = config_store_url(cfg);
    if (store_open(store_path, cfg->store_synchronous, true, &store, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: store: %s%s\n", errmsg, disk_note(cfg->data_dir));
        goto out;
    }
    if (secrets_load(cfg, &errmsg) != KB_OK || secrets_check_store(store, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    revlog = revlog_new();
    int64_t orphans = 0;
    if (store_caps(store) & KB_STORE_SHARED) {
        /* joining settles this node's earlier starts' reservations: its
         * lock proves they are gone; other nodes' are live */
        uint8_t check[KB_HASH_LEN];
        cluster_key_check(rt.server_key, check);
        if (cluster_start(store_path, check, revlog, cfg->cluster_heartbeat_ms,
                          cfg->cluster_dead_after_ms, &orphans, &cluster, &errmsg) != KB_OK) {
            fprintf(stderr, "keybrake: cluster: %s\n", errmsg);
            goto out;
        }
        kb_log(KB_LOG_INFO, "joined the cluster", "node", node, "backend", store_backend(store),
               NULL);
    }
    int64_t more = 0;
    if (store_spend_settle_orphans(store, &more) != KB_OK) {
        fprintf(stderr, "keybrake: store: cannot settle reservations left by a crash%s\n",
                disk_note(cfg->data_dir));
        goto out;
    }
    orphans += more;
    if (orphans > 0) {
        char n[24];
        snprintf(n, sizeof n, "%lld", (long long)orphans);
        kb_log(KB_LOG_WARN, "reservations left by an unclean stop settled at their worst case",
               "counters", n, NULL);
    }
    audit_set_key(rt.server_key);
    audit_set_checkpoint_every(cfg->audit_checkpoint_every);
    /* the sink opens before anything is recorded at start, so that a new
     * sink file holds the log from its first record (the admin token) */
    if (cfg->audit_sink && audit_sink_open(cfg->audit_sink, store, &sink, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: audit sink: %s\n", errmsg);
        goto out;
    }
    if (cli_bootstrap_admin_token(cfg, store, rt.server_key, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    if (pricing_build(cfg, &pricing, &errmsg) != KB_OK ||
        creds_build(cfg, cfg, NULL, &creds, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
#ifdef KB_TEST_HOOKS
    const char *off = getenv("KEYBRAKE_TEST_CLOCK_OFFSET");
    if (off)
        clock_set_offset(strtoll(off, NULL, 10));
#endif
    log_start(); /* with the first thread: from here on nothing waits for a log write */
    if (writer_new(store_path, cfg->store_synchronous, (int)cfg->writer_max_batch, &writer,
                   &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: store writer: %s%s\n", errmsg, disk_note(cfg->data_dir));
        goto out;
    }
    if (sink) {
        writer_set_commit_hook(writer, audit_sink_commit, sink);
        if (audit_sink_start(sink, store_path, cfg->store_synchronous, &errmsg) != KB_OK) {
            fprintf(stderr, "keybrake: audit sink: %s\n", errmsg);
            goto out;
        }
    }
    /* one reader: a key lookup is one indexed read, and misses are rare */
    if (reader_new(store_path, cfg->store_synchronous, 1, READER_MAX_QUEUE, &reader, &errmsg) !=
        KB_OK) {
        fprintf(stderr, "keybrake: store reader: %s\n", errmsg);
        goto out;
    }
    /* budget threshold alerts: a thread of its own, never the writer's */
    if (alerts_start(store_path, cfg->store_synchronous, cfg, &alerts, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: alerts: %s\n", errmsg);
        goto out;
    }
    const char *names[KB_METRICS_MAX_VENDORS];
    size_t nnames = 0;
    for (; nnames < cfg->nvendors && nnames < KB_METRICS_MAX_VENDORS; nnames++)
        names[nnames] = cfg->vendors[nnames].name;
    metrics_init(names, nnames);
    rt.cfg = cfg;
    rt.pricing = pricing;
    rt.creds = creds;
    rt.store_path = store_path;
    rt.writer = writer;
    rt.revlog = revlog;
    rt.reader = reader;
    limits_set(&rt.limits, cfg);

    if (tls_setup(cfg, &rt, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    if (server_start(&rt, &proxy_service, &admin_service, &srv, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    kb_log(KB_LOG_INFO, "keybrake started", "proxy", server_proxy_addr(srv), "admin",
           server_admin_addr(srv), "proxy_tls", rt.tls_proxy ? "on" : "off", "admin_tls",
           rt.tls_admin ? "on" : "off", "version", KB_VERSION, NULL);
    printf("keybrake: ready proxy=%s admin=%s\n", server_proxy_addr(srv), server_admin_addr(srv));
    fflush(stdout);

    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGHUP)
            reload(config_path, &rt, &old, sink); /* the daemon serves on throughout */
    }
    kb_log(KB_LOG_INFO, "stopping", "signal", sig == SIGTERM ? "TERM" : "INT", NULL);
    server_stop(srv);
    srv = NULL;
    kb_log(KB_LOG_INFO, "stopped", NULL);
    rc = 0;
out:
    server_stop(srv);    /* NULL after a clean stop; frees the threads' ports */
    alerts_stop(alerts); /* an attempt in progress is cut, retried at the next start */
    reader_free(reader); /* the workers are gone: nothing submits */
    writer_free(writer); /* runs every job still queued */
    audit_sink_free(sink);
    cluster_stop(cluster); /* after the writer: heartbeats go on while it drains */
    store_close(store);
    secrets_unload();
    /* the tables in force (the start's, or the last reload's) and every
     * one a reload replaced, the start's among them */
    meter_pricing_free(old.n ? (struct kb_pricing *)rt.pricing : pricing);
    for (size_t i = 0; i < old.n; i++)
        meter_pricing_free(old.v[i]);
    free(old.v);
    creds_free(old.nc ? (struct kb_creds *)rt.creds : creds);
    for (size_t i = 0; i < old.nc; i++)
        creds_free(old.c[i]);
    free(old.c);
    revlog_free(revlog);
    if (rt.tls_admin != rt.tls_proxy)
        tls_free(rt.tls_admin);
    tls_free(rt.tls_proxy);
    config_free(cfg);
    free(store_path);
    free(errmsg);
    if (store_lock_fd >= 0)
        close(store_lock_fd);
    if (lock_fd >= 0)
        close(lock_fd); /* last: everything of ours in the data dir is closed */
    log_stop();         /* every queued line is written before the exit */
    log_close_file();
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    bool help = cli_wants_help(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0) {
        const char *config = NULL;
        if (help) {
            printf("usage: keybrake serve [--config FILE]\n"
                   "Runs the proxy and the admin API until SIGTERM or SIGINT; SIGHUP reloads.\n"
                   "Settings: `keybrake config`.\n");
            return 0;
        }
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
                config = argv[++i];
            else {
                usage(stderr);
                return 2;
            }
        }
        return serve(config);
    }
    if (strcmp(cmd, "keys") == 0)
        return cli_keys(argc - 1, argv + 1);
    if (strcmp(cmd, "budgets") == 0)
        return cli_budgets(argc - 1, argv + 1);
    if (strcmp(cmd, "tenants") == 0)
        return cli_tenants(argc - 1, argv + 1);
    if (strcmp(cmd, "admin-tokens") == 0)
        return cli_admin_tokens(argc - 1, argv + 1);
    if (strcmp(cmd, "usage") == 0)
        return cli_usage(argc - 1, argv + 1);
    if (strcmp(cmd, "audit") == 0) {
        if (argc > 2 && strcmp(argv[2], "tail") == 0)
            return cli_audit_tail(argc - 2, argv + 2);
        if (help) {
            cli_audit_help(stdout);
            return 0;
        }
        return cli_audit(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "config") == 0) {
        if (help)
            printf("usage: keybrake config\nPrints every setting: section, name, environment "
                   "variable, default, meaning.\n");
        else
            config_print_table();
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        if (help)
            printf("usage: keybrake version | keybrake --version\n");
        else
            printf("keybrake %s\n", KB_VERSION);
        return 0;
    }
    bool asked = strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0;
    if (!asked)
        fprintf(stderr, "keybrake: unknown command %s\n", cmd);
    usage(asked ? stdout : stderr);
    return asked ? 0 : 2;
}
