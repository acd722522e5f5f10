/*
 * crypto.h - the few cryptographic primitives Keybrake needs, over OpenSSL
 * libcrypto: CSPRNG, HMAC-SHA256, constant-time compare, and the token
 * formats.
 *
 * Tokens: "kb_" (vault) or "kba_" (admin), then 40 base62 characters from
 * the CSPRNG (~238 bits), then 6 base62 characters of CRC32 over everything
 * before them. The fixed prefix and checksum let secret scanners find leaked
 * tokens with no false positives and let the proxy refuse typos without a
 * store lookup. Tokens are stored only as HMAC-SHA256 under the server key.
 */
#ifndef KB_CORE_CRYPTO_H
#define KB_CORE_CRYPTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define KB_HASH_LEN 32
#define KB_TOKEN_RANDOM_LEN 40
#define KB_TOKEN_CHECK_LEN 6
#define KB_TOKEN_MAX 64 /* longest token, with NUL */
#define KB_ID_RANDOM_LEN 24

/* Fills buf with n bytes from the CSPRNG; aborts if it fails (fail closed). */
void crypto_random(void *buf, size_t n);

/* out = HMAC-SHA256(key, msg). Any thread. */
void crypto_hmac(const uint8_t *key, size_t key_len, const void *msg, size_t len,
                 uint8_t out[KB_HASH_LEN]);

/*
 * The same MAC with the key's two pads hashed once, for a hot path that
 * hashes many messages under one key (the proxy's token lookup: ~1 µs
 * instead of ~3 for the one-shot above, which sets up a MAC context per
 * call). A kb_hmac is used by one thread at a time.
 */
struct kb_hmac;
struct kb_hmac *crypto_hmac_new(const uint8_t *key, size_t key_len);
void crypto_hmac_run(struct kb_hmac *h, const void *msg, size_t len, uint8_t out[KB_HASH_LEN]);
void crypto_hmac_free(struct kb_hmac *h);

/* Constant-time equality of n bytes. */
bool crypto_equal(const void *a, const void *b, size_t n);

/* Writes a new token "<prefix><40 random><6 checksum>" into out (size >=
 * KB_TOKEN_MAX). prefix is "kb_" or "kba_". */
void crypto_token_new(const char *prefix, char *out, size_t size);

/* True when tok (len bytes) has the given prefix, the right length, only
 * base62 characters, and a matching checksum. Does not touch the store. */
bool crypto_token_valid(const char *prefix, const char *tok, size_t len);

/* Writes "<prefix><n random base62>" into out (size > strlen(prefix) + n). */
void crypto_id_new(const char *prefix, size_t n, char *out, size_t size);

/* The value of one hex digit (either case), or -1. Inline: the path
 * canonicaliser calls it for every escape of every request. */
static inline int crypto_hexdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Lower-case hex of n bytes into out (size >= 2n+1). */
void crypto_hex(const uint8_t *in, size_t n, char *out);
/* Parses exactly 2n hex characters; false on anything else. */
bool crypto_unhex(const char *in, size_t len, uint8_t *out, size_t n);

/* Standard base64 (with padding) of n bytes into a heap string. */
char *crypto_base64(const void *in, size_t n);

/* Overwrites n bytes at p with zeros in a way the compiler keeps. */
void crypto_wipe(void *p, size_t n);

#endif
