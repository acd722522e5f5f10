/* secrets.c - the master keys that seal tenants' vendor secrets (see secrets.h). */
#include "vendor/secrets.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/crypto.h"
#include "store/store.h"

#define MAX_KEYS 8 /* the current key and up to 7 previous ones */
#define NONCE_LEN 12
#define TAG_LEN 16

struct master {
    uint8_t key[32];
    char id[KB_KEY_ID_LEN + 1];
};

static struct master g_keys[MAX_KEYS]; /* [0]: the current key when g_current */
static size_t g_nkeys;
static bool g_current;
static bool g_fallback = true;

static void key_id_of(const uint8_t key[32], char out[KB_KEY_ID_LEN + 1])
{
    uint8_t h[32];
    unsigned int hl = 0;
    EVP_Digest(key, 32, h, &hl, EVP_sha256(), NULL);
    char hex[65];
    crypto_hex(h, 32, hex);
    memcpy(out, hex, KB_KEY_ID_LEN);
    out[KB_KEY_ID_LEN] = '\0';
}

/* 64 hex digits, surrounding white space ignored. */
static bool parse_key(const char *text, uint8_t key[32])
{
    while (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r')
        text++;
    size_t len = strlen(text);
    while (len && strchr(" \t\r\n", text[len - 1]))
        len--;
    return crypto_unhex(text, len, key, 32);
}

static enum kb_err read_key_file(const char *path, uint8_t key[32], char **errmsg)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        kb_set_errmsg(errmsg, "secrets: cannot read the master key file %s", path);
        return KB_E_CONFIG;
    }
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    bool ok = parse_key(buf, key);
    crypto_wipe(buf, sizeof buf);
    if (!ok) {
        kb_set_errmsg(errmsg, "secrets: %s does not hold a master key of 64 hex digits", path);
        return KB_E_CONFIG;
    }
    return KB_OK;
}

static enum kb_err add_key(const uint8_t key[32], char **errmsg)
{
    if (g_nkeys == MAX_KEYS) {
        kb_set_errmsg(errmsg, "secrets: at most %d master keys", MAX_KEYS);
        return KB_E_CONFIG;
    }
    struct master *m = &g_keys[g_nkeys];
    memcpy(m->key, key, 32);
    key_id_of(key, m->id);
    for (size_t i = 0; i < g_nkeys; i++)
        if (strcmp(g_keys[i].id, m->id) == 0)
            return KB_OK; /* listed twice: once is enough */
    g_nkeys++;
    return KB_OK;
}

enum kb_err secrets_load(const struct kb_config *cfg, char **errmsg)
{
    secrets_unload();
    enum kb_err err = KB_OK;
    uint8_t key[32];
    const char *fb = cfg->tenant_fallback ? cfg->tenant_fallback : "global";
    if (strcmp(fb, "global") != 0 && strcmp(fb, "refuse") != 0) {
        kb_set_errmsg(errmsg, "secrets.tenant_fallback must be global or refuse, not \"%s\"", fb);
        return KB_E_CONFIG;
    }
    g_fallback = strcmp(fb, "global") == 0;
    if (cfg->master_key && cfg->master_key_file) {
        kb_set_errmsg(errmsg, "secrets: give master_key or master_key_file, not both");
        return KB_E_CONFIG;
    }
    if (cfg->master_key) {
        if (!parse_key(cfg->master_key, key)) {
            kb_set_errmsg(errmsg, "secrets.master_key must be 64 hex digits");
            return KB_E_CONFIG;
        }
        err = add_key(key, errmsg);
        g_current = true;
    } else if (cfg->master_key_file) {
        if ((err = read_key_file(cfg->master_key_file, key, errmsg)) == KB_OK)
            err = add_key(key, errmsg);
        g_current = err == KB_OK;
    }
    const char *list = cfg->previous_master_key_files;
    while (err == KB_OK && list && *list) {
        size_t n = strcspn(list, ",");
        char *path = kb_strndup(list, n);
        char *p = path;
        while (*p == ' ')
            p++;
        size_t pl = strlen(p);
        while (pl && p[pl - 1] == ' ')
            p[--pl] = '\0';
        if (*p && (err = read_key_file(p, key, errmsg)) == KB_OK)
            err = add_key(key, errmsg);
        free(path);
        list += n + (list[n] == ',');
    }
    crypto_wipe(key, sizeof key);
    if (err != KB_OK)
        secrets_unload();
    return err;
}

void secrets_unload(void)
{
    crypto_wipe(g_keys, sizeof g_keys);
    g_nkeys = 0;
    g_current = false;
}

bool secrets_enabled(void)
{
    return g_current;
}

const char *secrets_key_id(void)
{
    return g_current ? g_keys[0].id : "";
}

static const struct master *find(const char *key_id)
{
    for (size_t i = 0; key_id && i < g_nkeys; i++)
        if (strcmp(g_keys[i].id, key_id) == 0)
            return &g_keys[i];
    return NULL;
}

bool secrets_have_key(const char *key_id)
{
    return find(key_id) != NULL;
}

bool secrets_fallback_global(void)
{
    return g_fallback;
}

/* The associated data: which row the secret belongs to. */
static char *aad_of(const char *tenant, const char *vendor, int *len)
{
    char *aad = kb_asprintf("%s\n%s", tenant, vendor);
    *len = (int)strlen(aad);
    return aad;
}

enum kb_err secrets_seal(const char *tenant, const char *vendor, const char *plain, size_t len,
                         uint8_t **out, size_t *outlen, char key_id[KB_KEY_ID_LEN + 1])
{
    if (!g_current)
        return KB_E_CONFIG;
    if (len > 1 << 20)
        return KB_E_INVALID;
    uint8_t *buf = kb_malloc(NONCE_LEN + len + TAG_LEN);
    crypto_random(buf, NONCE_LEN);
    int alen = 0, n = 0, fin = 0;
    char *aad = aad_of(tenant, vendor, &alen);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok =
        ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
        EVP_EncryptInit_ex(ctx, NULL, NULL, g_keys[0].key, buf) == 1 &&
        EVP_EncryptUpdate(ctx, NULL, &n, (const uint8_t *)aad, alen) == 1 &&
        EVP_EncryptUpdate(ctx, buf + NONCE_LEN, &n, (const uint8_t *)plain, (int)len) == 1 &&
        EVP_EncryptFinal_ex(ctx, buf + NONCE_LEN + n, &fin) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, buf + NONCE_LEN + n + fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    free(aad);
    if (!ok) {
        free(buf);
        return KB_E_INTERNAL;
    }
    *out = buf;
    *outlen = NONCE_LEN + (size_t)n + (size_t)fin + TAG_LEN;
    memcpy(key_id, g_keys[0].id, KB_KEY_ID_LEN + 1);
    return KB_OK;
}

enum kb_err secrets_open(const char *tenant, const char *vendor, const char *key_id,
                         const uint8_t *sealed, size_t len, char **plain)
{
    const struct master *m = find(key_id);
    if (!m)
        return KB_E_SECRET_UNAVAILABLE;
    if (len < NONCE_LEN + TAG_LEN)
        return KB_E_INTERNAL;
    size_t clen = len - NONCE_LEN - TAG_LEN;
    char *out = kb_malloc(clen + 1);
    int alen = 0, n = 0, fin = 0;
    char *aad = aad_of(tenant, vendor, &alen);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
              EVP_DecryptInit_ex(ctx, NULL, NULL, m->key, sealed) == 1 &&
              EVP_DecryptUpdate(ctx, NULL, &n, (const uint8_t *)aad, alen) == 1 &&
              EVP_DecryptUpdate(ctx, (uint8_t *)out, &n, sealed + NONCE_LEN, (int)clen) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                                  (void *)(sealed + NONCE_LEN + clen)) == 1 &&
              EVP_DecryptFinal_ex(ctx, (uint8_t *)out + n, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    free(aad);
    if (!ok) {
        crypto_wipe(out, clen + 1);
        free(out);
        return KB_E_INTERNAL;
    }
    out[n + fin] = '\0';
    *plain = out;
    return KB_OK;
}

enum kb_err secrets_check_store(struct kb_store *s, char **errmsg)
{
    struct kb_tenant_secret *v = NULL;
    size_t n = 0;
    if (store_tenant_secret_list(s, NULL, &v, &n) != KB_OK) {
        kb_set_errmsg(errmsg, "secrets: cannot read the tenants' secrets from the store");
        return KB_E_STORE;
    }
    enum kb_err err = KB_OK;
    for (size_t i = 0; i < n && err == KB_OK; i++) {
        if (secrets_have_key(v[i].key_id))
            continue;
        kb_set_errmsg(errmsg,
                      "secrets: tenant %s's %s secret is sealed under master key %s, which is not "
                      "configured (add its file to [secrets] previous_master_key_files, or set "
                      "master_key_file)",
                      v[i].tenant, v[i].vendor, v[i].key_id);
        err = KB_E_CONFIG;
    }
    store_tenant_secret_list_free(v, n);
    return err;
}
