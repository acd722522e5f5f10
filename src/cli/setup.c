/* setup.c - data directory, server key and first admin token (see cli.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit/audit.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "store/store.h"

static enum kb_err mkdir_p(const char *dir, char **errmsg)
{
    char *p = kb_strdup(dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            goto fail;
        *s = '/';
    }
    if (mkdir(p, 0700) != 0 && errno != EEXIST)
        goto fail;
    free(p);
    return KB_OK;
fail:
    kb_set_errmsg(errmsg, "cannot create data directory %s: %s", p, strerror(errno));
    free(p);
    return KB_E_IO;
}

/* Writes `data` to a new file at path with mode 0600; fails if it exists. */
static enum kb_err write_new_file(const char *path, const char *data, char **errmsg)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        kb_set_errmsg(errmsg, "cannot create %s: %s", path, strerror(errno));
        return KB_E_IO;
    }
    size_t len = strlen(data);
    ssize_t w = write(fd, data, len);
    if (w != (ssize_t)len || fsync(fd) != 0) {
        kb_set_errmsg(errmsg, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return KB_E_IO;
    }
    close(fd);
    return KB_OK;
}

enum kb_err cli_prepare_data_dir(const struct kb_config *cfg, uint8_t key[KB_HASH_LEN],
                                 char **errmsg)
{
    enum kb_err err = mkdir_p(cfg->data_dir, errmsg);
    if (err != KB_OK)
        return err;
    if (cfg->server_key) {
        if (!crypto_unhex(cfg->server_key, strlen(cfg->server_key), key, KB_HASH_LEN)) {
            kb_set_errmsg(errmsg, "server_key must be 64 hex characters");
            return KB_E_CONFIG;
        }
        return KB_OK;
    }
    char *path = kb_asprintf("%s/server.key", cfg->data_dir);
    char text[2 * KB_HASH_LEN + 2];
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
            n--;
        if (!crypto_unhex(text, n, key, KB_HASH_LEN)) {
            kb_set_errmsg(errmsg,
                          "%s is not 64 hex characters; refusing to replace it (every "
                          "issued token depends on it)",
                          path);
            err = KB_E_CONFIG;
        }
    } else if (errno == ENOENT) {
        crypto_random(key, KB_HASH_LEN);
        crypto_hex(key, KB_HASH_LEN, text);
        text[2 * KB_HASH_LEN] = '\n';
        text[2 * KB_HASH_LEN + 1] = '\0';
        err = write_new_file(path, text, errmsg);
    } else {
        kb_set_errmsg(errmsg, "cannot read %s: %s", path, strerror(errno));
        err = KB_E_IO;
    }
    free(path);
    return err;
}

enum kb_err cli_node_id(const struct kb_config *cfg, char out[KB_NODE_ID_MAX + 1], char **errmsg)
{
    if (cfg->node_id) {
        if (!store_set_node(cfg->node_id, "check")) {
            kb_set_errmsg(errmsg,
                          "node_id \"%.80s\" must be 1 to %d characters of A-Z a-z 0-9 . _ : -",
                          cfg->node_id, KB_NODE_ID_MAX);
            return KB_E_CONFIG;
        }
        snprintf(out, KB_NODE_ID_MAX + 1, "%s", cfg->node_id);
        return KB_OK;
    }
    char *path = kb_asprintf("%s/node-id", cfg->data_dir);
    enum kb_err err = KB_OK;
    FILE *f = fopen(path, "r");
    if (f) {
        char text[KB_NODE_ID_MAX + 2] = "";
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
            n--;
        text[n] = '\0';
        /* a NUL inside the file would hide bytes from store_set_node's check */
        if (strlen(text) != n || !store_set_node(text, "check")) {
            kb_set_errmsg(errmsg, "%s does not hold a node id (A-Z a-z 0-9 . _ : -)", path);
            err = KB_E_CONFIG;
        } else {
            memcpy(out, text, n + 1); /* store_set_node checked n <= KB_NODE_ID_MAX */
        }
    } else if (errno == ENOENT) {
        /* the host's name, made safe, and enough randomness to tell two
         * nodes on one host apart; kept in the data dir for the restarts */
        char host[256] = "node", id[KB_NODE_ID_MAX + 2];
        (void)gethostname(host, sizeof host - 1);
        host[40] = '\0';
        for (char *p = host; *p; p++)
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-", *p))
                *p = '-';
        uint8_t r[4];
        char hex[9];
        crypto_random(r, sizeof r);
        crypto_hex(r, sizeof r, hex);
        snprintf(id, sizeof id, "%.40s-%s\n", host[0] ? host : "node", hex);
        if ((err = write_new_file(path, id, errmsg)) == KB_OK) {
            size_t n = strlen(id) - 1; /* <= 40 + 1 + 8 */
            id[n] = '\0';
            memcpy(out, id, n + 1);
        }
    } else {
        kb_set_errmsg(errmsg, "cannot read %s: %s", path, strerror(errno));
        err = KB_E_IO;
    }
    free(path);
    return err;
}

struct token_write {
    const uint8_t *hash;
    const char *label;
    struct kb_audit_rec rec;
};

static enum kb_err add_token_txn(struct kb_store *s, void *arg)
{
    struct token_write *w = arg;
    enum kb_err err = store_admin_token_add(s, w->hash, w->label, clock_now());
    return err == KB_OK ? audit_append(s, &w->rec, NULL) : err;
}

/* Adds an admin token by hash with its audit record, in one transaction. */
static enum kb_err add_token(struct kb_store *store, const uint8_t *hash, const char *label)
{
    struct token_write w = {.hash = hash, .label = label};
    w.rec.kind = KB_AUDIT_ADMIN;
    w.rec.ts_ms = clock_now_ms();
    crypto_id_new("adm_", 24, w.rec.request_id, sizeof w.rec.request_id);
    w.rec.action = "admin_token.created";
    w.rec.label = label;
    w.rec.decision = "ok";
    return store_txn_run(store, add_token_txn, &w);
}

enum kb_err cli_bootstrap_admin_token(const struct kb_config *cfg, struct kb_store *store,
                                      const uint8_t key[KB_HASH_LEN], char **errmsg)
{
    uint8_t hash[KB_HASH_LEN];
    if (cfg->admin_token) {
        crypto_hmac(key, KB_HASH_LEN, cfg->admin_token, strlen(cfg->admin_token), hash);
        /* recorded once: a restart with the same token finds it there */
        if (store_admin_token_check(store, hash) == KB_OK)
            return KB_OK;
        if (add_token(store, hash, "configured") != KB_OK) {
            kb_set_errmsg(errmsg, "cannot store the admin token");
            return KB_E_STORE;
        }
        return KB_OK;
    }
    int64_t count = 0;
    if (store_admin_token_count(store, &count) != KB_OK) {
        kb_set_errmsg(errmsg, "cannot read admin tokens");
        return KB_E_STORE;
    }
    char *path = kb_asprintf("%s/admin-token", cfg->data_dir);
    enum kb_err err = KB_OK;
    if (count == 0) {
        char token[KB_TOKEN_MAX + 1];
        crypto_token_new("kba_", token, sizeof token);
        crypto_hmac(key, KB_HASH_LEN, token, strlen(token), hash);
        size_t n = strlen(token);
        token[n] = '\n';
        token[n + 1] = '\0';
        unlink(path); /* a stale file from a wiped store must not survive */
        if ((err = write_new_file(path, token, errmsg)) != KB_OK)
            goto out;
        token[n] = '\0';
        if (add_token(store, hash, "root") != KB_OK) {
            unlink(path);
            kb_set_errmsg(errmsg, "cannot store the admin token");
            err = KB_E_STORE;
            goto out;
        }
        printf("keybrake: admin token written to %s\n", path);
    } else if (access(path, F_OK) == 0) {
        printf("keybrake: admin token is in %s\n", path);
    }
    fflush(stdout);
out:
    free(path);
    return err;
}

/* Takes the exclusive lock of `path`, writing our pid in it; `what` names
 * what it guards in the refusal. */
static enum kb_err lock_file(char *path, const char *what, int *fd_out, char **errmsg)
{
    enum kb_err err = KB_OK;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        kb_set_errmsg(errmsg, "cannot open %s: %s", path, strerror(errno));
        err = KB_E_IO;
        goto out;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[24] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\r\n")] = '\0';
        if (e != EWOULDBLOCK && e != EAGAIN)
            kb_set_errmsg(errmsg, "cannot lock %s: %s", path, strerror(e));
        else
            kb_set_errmsg(errmsg,
                          "another keybrake (pid %s) is serving %s; one daemon per %s (its "
                          "reservations, caches and audit chain are its own)",
                          pid[0] ? pid : "unknown", what, what);
        close(fd);
        err = KB_E_CONFIG;
        goto out;
    }
    char pid[24];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        kb_set_errmsg(errmsg, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        err = KB_E_IO;
        goto out;
    }
    *fd_out = fd; /* held open: the lock lasts as long as the process */
out:
    free(path);
    return err;
}

enum kb_err cli_lock_data_dir(const struct kb_config *cfg, int *fd_out, int *store_fd_out,
                              char **errmsg)
{
    char *what = kb_asprintf("data dir %s", cfg->data_dir);
    enum kb_err err =
        lock_file(kb_asprintf("%s/keybrake.pid", cfg->data_dir), what, fd_out, errmsg);
    free(what);
    /* an embedded store is one process's too, wherever it lives and however
     * its path is spelled: its own lock beside the file, by the directory's
     * real path (SQLite's locks on the file itself must not be disturbed) */
    char *url = config_store_url(cfg);
    const char *file = store_url_file(url);
    /* (":memory:" is refused by store_open, right after: no lock file for it) */
    if (err == KB_OK && file && *file && strcmp(file, ":memory:") != 0) {
        const char *slash = strrchr(file, '/');
        char *dir =
            slash ? kb_strndup(file, (size_t)(slash - file) + (slash == file)) : kb_strdup(".");
        char *real = realpath(dir, NULL);
        if (!real) {
            kb_set_errmsg(errmsg, "store %s: its directory: %s", file, strerror(errno));
            err = KB_E_CONFIG;
        } else {
            what = kb_asprintf("store %s", file);
            err = lock_file(kb_asprintf("%s/%s.lock", real, slash ? slash + 1 : file), what,
                            store_fd_out, errmsg);
            free(what);
        }
        free(real);
        free(dir);
        if (err != KB_OK) {
            close(*fd_out);
            *fd_out = -1;
        }
    }
    free(url);
    return err;
}
