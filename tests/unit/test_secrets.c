/*
 * test_secrets.c - the master keys that seal tenants' vendor secrets
 * (vendor/secrets.h): seal and open round trip; the key id is SHA-256's
 * first 8 hex digits; a sealed secret opens only for its own tenant and
 * vendor and only untouched; an unknown key id is KB_E_SECRET_UNAVAILABLE;
 * after rotation a previous key opens but never seals; the settings are
 * checked (bad hex, both sources, unreadable files, unknown fallback).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "core/config.h"
#include "core/crypto.h"
#include "vendor/secrets.h"

#define KEY1 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY2 "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1eff"

static void load(const char *key, const char *file, const char *prev, const char *fallback,
                 enum kb_err want)
{
    struct kb_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.master_key = (char *)key;
    cfg.master_key_file = (char *)file;
    cfg.previous_master_key_files = (char *)prev;
    cfg.tenant_fallback = (char *)fallback;
    char *msg = NULL;
    enum kb_err err = secrets_load(&cfg, &msg);
    if (err != want)
        fail_msg("secrets_load: %d (%s), want %d", (int)err, msg ? msg : "", (int)want);
    free(msg);
}

/* The key id the docs promise: the first 8 hex digits of SHA-256(key). */
static void key_id(const char *hex, char out[KB_KEY_ID_LEN + 1])
{
    uint8_t k[32], h[32];
    unsigned int hl = 0;
    assert_true(crypto_unhex(hex, 64, k, 32));
    assert_int_equal(EVP_Digest(k, 32, h, &hl, EVP_sha256(), NULL), 1);
    char full[65];
    crypto_hex(h, 32, full);
    memcpy(out, full, KB_KEY_ID_LEN);
    out[KB_KEY_ID_LEN] = '\0';
}

static char *write_file(const char *text)
{
    char *path = strdup("/tmp/kb-test-master-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_round_trip(void **state)
{
    (void)state;
    load(KEY1, NULL, NULL, NULL, KB_OK);
    assert_true(secrets_enabled());
    assert_true(secrets_fallback_global());
    char want[KB_KEY_ID_LEN + 1];
    key_id(KEY1, want);
    assert_string_equal(secrets_key_id(), want);
    uint8_t *sealed = NULL;
    size_t len = 0;
    char kid[KB_KEY_ID_LEN + 1];
    const char *plain = "sk_test_secret_value";
    assert_int_equal(secrets_seal("tn_a", "stripe", plain, strlen(plain), &sealed, &len, kid),
                     KB_OK);
    assert_string_equal(kid, secrets_key_id());
    assert_int_equal(len, 12 + strlen(plain) + 16);
    assert_null(memmem(sealed, len, plain, strlen(plain))); /* not in clear */
    char *out = NULL;
    assert_int_equal(secrets_open("tn_a", "stripe", kid, sealed, len, &out), KB_OK);
    assert_string_equal(out, plain);
    free(out);
    /* bound to its row */
    assert_int_equal(secrets_open("tn_b", "stripe", kid, sealed, len, &out), KB_E_INTERNAL);
    assert_int_equal(secrets_open("tn_a", "openai", kid, sealed, len, &out), KB_E_INTERNAL);
    /* any byte changed */
    for (size_t i = 0; i < len; i++) {
        sealed[i] ^= 1;
        assert_int_equal(secrets_open("tn_a", "stripe", kid, sealed, len, &out), KB_E_INTERNAL);
        sealed[i] ^= 1;
    }
    assert_int_equal(secrets_open("tn_a", "stripe", kid, sealed, 27, &out), KB_E_INTERNAL);
    assert_int_equal(secrets_open("tn_a", "stripe", "00000000", sealed, len, &out),
                     KB_E_SECRET_UNAVAILABLE);
    /* two seals of one secret differ (fresh nonce) */
    uint8_t *again = NULL;
    size_t alen = 0;
    assert_int_equal(secrets_seal("tn_a", "stripe", plain, strlen(plain), &again, &alen, kid),
                     KB_OK);
    assert_true(alen == len && memcmp(again, sealed, len) != 0);
    free(again);
    free(sealed);
    secrets_unload();
    assert_false(secrets_enabled());
    assert_int_equal(secrets_seal("tn_a", "stripe", "x", 1, &sealed, &len, kid), KB_E_CONFIG);
}

static void test_rotation(void **state)
{
    (void)state;
    char *f1 = write_file(KEY1 "\n");
    char *f2 = write_file("  " KEY2 "  \n");
    load(NULL, f1, NULL, "refuse", KB_OK);
    assert_false(secrets_fallback_global());
    char old_id[KB_KEY_ID_LEN + 1];
    snprintf(old_id, sizeof old_id, "%s", secrets_key_id());
    uint8_t *sealed = NULL;
    size_t len = 0;
    char kid[KB_KEY_ID_LEN + 1];
    assert_int_equal(secrets_seal("tn_a", "openai", "sk-1", 4, &sealed, &len, kid), KB_OK);
    /* the new key current, the old one previous: it still opens */
    char *prev = NULL;
    if (asprintf(&prev, " %s , ", f1) < 0)
        fail();
    load(NULL, f2, prev, NULL, KB_OK);
    assert_string_not_equal(secrets_key_id(), old_id);
    assert_true(secrets_have_key(old_id));
    char *out = NULL;
    assert_int_equal(secrets_open("tn_a", "openai", kid, sealed, len, &out), KB_OK);
    assert_string_equal(out, "sk-1");
    free(out);
    /* new seals use the new key */
    uint8_t *s2 = NULL;
    size_t l2 = 0;
    char kid2[KB_KEY_ID_LEN + 1];
    assert_int_equal(secrets_seal("tn_a", "openai", "sk-1", 4, &s2, &l2, kid2), KB_OK);
    assert_string_equal(kid2, secrets_key_id());
    /* without the old key, the old seal is unavailable */
    load(NULL, f2, NULL, NULL, KB_OK);
    assert_false(secrets_have_key(old_id));
    assert_int_equal(secrets_open("tn_a", "openai", kid, sealed, len, &out),
                     KB_E_SECRET_UNAVAILABLE);
    assert_int_equal(secrets_open("tn_a", "openai", kid2, s2, l2, &out), KB_OK);
    free(out);
    free(s2);
    free(sealed);
    free(prev);
    unlink(f1);
    unlink(f2);
    free(f1);
    free(f2);
    secrets_unload();
}

static void test_bad_settings(void **state)
{
    (void)state;
    char *bad = write_file("not hex at all");
    load("abc", NULL, NULL, NULL, KB_E_CONFIG);
    load(KEY1 "00", NULL, NULL, NULL, KB_E_CONFIG);
    load(KEY1, bad, NULL, NULL, KB_E_CONFIG); /* both */
    load(NULL, bad, NULL, NULL, KB_E_CONFIG); /* not a key */
    load(NULL, "/nonexistent/kb-master", NULL, NULL, KB_E_CONFIG);
    load(KEY1, NULL, "/nonexistent/kb-master", NULL, KB_E_CONFIG);
    load(KEY1, NULL, NULL, "sometimes", KB_E_CONFIG);
    assert_false(secrets_enabled());     /* a failed load leaves no key */
    load(NULL, NULL, NULL, NULL, KB_OK); /* no key at all: secrets off */
    assert_false(secrets_enabled());
    unlink(bad);
    free(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_bad_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
