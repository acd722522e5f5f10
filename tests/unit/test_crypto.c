/*
 * test_crypto.c - unit tests for src/core/crypto.c: the token format and its
 * checksum, HMAC-SHA256 against RFC 4231, constant-time compare, hex and
 * base64 against RFC 4648, and public ids.
 *
 * The checksum is CRC32 written as 6 base62 digits (62^6 > 2^32, so the
 * encoding is exact): every single-byte change anywhere in a token must be
 * refused, which is checked exhaustively over all 256 byte values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crypto.h"

#define B62 "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#define VAULT "kb_"
#define ADMIN "kba_"
#define VAULT_LEN (3 + KB_TOKEN_RANDOM_LEN + KB_TOKEN_CHECK_LEN)
#define ADMIN_LEN (4 + KB_TOKEN_RANDOM_LEN + KB_TOKEN_CHECK_LEN)
#define NTOKENS 10000

static bool is_b62(char c)
{
    return c != '\0' && strchr(B62, c) != NULL;
}

static void assert_token_shape(const char *prefix, const char *tok)
{
    size_t pl = strlen(prefix);
    assert_int_equal(strlen(tok), pl + KB_TOKEN_RANDOM_LEN + KB_TOKEN_CHECK_LEN);
    assert_true(strlen(tok) < KB_TOKEN_MAX);
    assert_memory_equal(tok, prefix, pl);
    for (size_t i = pl; tok[i]; i++)
        assert_true(is_b62(tok[i]));
}

/* ---- token format ---- */

static void test_token_format(void **state)
{
    (void)state;
    static const char *const prefixes[] = {VAULT, ADMIN};
    for (size_t p = 0; p < 2; p++) {
        for (int i = 0; i < 100; i++) {
            char tok[KB_TOKEN_MAX];
            memset(tok, 'Z', sizeof tok);
            crypto_token_new(prefixes[p], tok, sizeof tok);
            assert_token_shape(prefixes[p], tok);
            assert_true(crypto_token_valid(prefixes[p], tok, strlen(tok)));
        }
    }
    assert_int_equal(VAULT_LEN, 49);
    assert_int_equal(ADMIN_LEN, 50);
}

/* The output buffer may be exactly as large as the token plus NUL. */
static void test_token_exact_buffer(void **state)
{
    (void)state;
    char buf[VAULT_LEN + 1 + 8];
    memset(buf, '#', sizeof buf);
    crypto_token_new(VAULT, buf, VAULT_LEN + 1);
    assert_int_equal(buf[VAULT_LEN], '\0');
    for (size_t i = VAULT_LEN + 1; i < sizeof buf; i++)
        assert_int_equal(buf[i], '#'); /* nothing written past size */
    assert_true(crypto_token_valid(VAULT, buf, VAULT_LEN));
}

/* Tokens issued by an earlier build stay valid: the checksum (CRC-32 of
 * prefix and random part, in base62) must not change with its code. The
 * vectors were made outside this code, with Python's zlib.crc32; the
 * "random" parts are made up. */
static void test_token_known(void **state)
{
    (void)state;
    static const char *const known[] = {
        "kb_01234567890123456789012345678901234567892waiIr",
        "kb_checksumtestvectorNOTAREALTOKEN0000000000xvNlU",
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        char t[VAULT_LEN + 1];
        memcpy(t, known[i], sizeof t);
        assert_true(crypto_token_valid(VAULT, t, VAULT_LEN));
        t[VAULT_LEN - 1] = t[VAULT_LEN - 1] == 'a' ? 'b' : 'a';
        assert_false(crypto_token_valid(VAULT, t, VAULT_LEN));
    }
}

/* Every byte value at every position other than the original is refused:
 * random part, checksum part and prefix alike. */
static void test_token_single_byte_changes(void **state)
{
    (void)state;
    static const char *const prefixes[] = {VAULT, ADMIN};
    for (size_t p = 0; p < 2; p++) {
        for (int round = 0; round < 4; round++) {
            char tok[KB_TOKEN_MAX];
            crypto_token_new(prefixes[p], tok, sizeof tok);
            size_t len = strlen(tok);
            for (size_t i = 0; i < len; i++) {
                char orig = tok[i];
                for (int b = 0; b < 256; b++) {
                    if ((char)b == orig)
                        continue;
                    tok[i] = (char)b;
                    if (crypto_token_valid(prefixes[p], tok, len))
                        print_error("%s: byte %zu changed to 0x%02x still valid\n", prefixes[p], i,
                                    b);
                    assert_false(crypto_token_valid(prefixes[p], tok, len));
                }
                tok[i] = orig;
            }
            assert_true(crypto_token_valid(prefixes[p], tok, len));
        }
    }
}

/* Two adjacent characters swapped (a common typo) is refused too. */
static void test_token_transpositions(void **state)
{
    (void)state;
    char tok[KB_TOKEN_MAX];
    crypto_token_new(VAULT, tok, sizeof tok);
    size_t len = strlen(tok);
    for (size_t i = 3; i + 1 < len; i++) {
        if (tok[i] == tok[i + 1])
            continue;
        char t = tok[i];
        tok[i] = tok[i + 1];
        tok[i + 1] = t;
        assert_false(crypto_token_valid(VAULT, tok, len));
        tok[i + 1] = tok[i];
        tok[i] = t;
    }
    assert_true(crypto_token_valid(VAULT, tok, len));
}

static void test_token_wrong_prefix(void **state)
{
    (void)state;
    char vt[KB_TOKEN_MAX], at[KB_TOKEN_MAX];
    crypto_token_new(VAULT, vt, sizeof vt);
    crypto_token_new(ADMIN, at, sizeof at);
    /* a vault token is not an admin token and vice versa */
    assert_false(crypto_token_valid(ADMIN, vt, strlen(vt)));
    assert_false(crypto_token_valid(VAULT, at, strlen(at)));

    /* same length, another prefix: "kc_" / "KB_" / "kb-" with the same body */
    static const char *const others[] = {"kc_", "KB_", "kb-", "xb_", "sk_"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        char t[KB_TOKEN_MAX];
        memcpy(t, vt, sizeof t);
        memcpy(t, others[i], 3);
        assert_false(crypto_token_valid(VAULT, t, VAULT_LEN));
    }
    /* the admin body moved under the vault prefix ("kb_" + 46 of "kba_...") */
    char moved[KB_TOKEN_MAX];
    snprintf(moved, sizeof moved, "kb_%s", at + 4);
    assert_int_equal(strlen(moved), VAULT_LEN);
    assert_false(crypto_token_valid(VAULT, moved, VAULT_LEN));
}

static void test_token_length(void **state)
{
    (void)state;
    char tok[KB_TOKEN_MAX + 8];
    crypto_token_new(VAULT, tok, KB_TOKEN_MAX);
    size_t len = strlen(tok);
    /* truncated: by one, to the prefix, to nothing */
    for (size_t cut = 0; cut < len; cut++)
        assert_false(crypto_token_valid(VAULT, tok, cut));
    /* extended by base62 characters or by a newline */
    static const char tails[] = {'A', '0', 'z', '\n', '\0'};
    for (size_t i = 0; i < sizeof tails; i++) {
        char ext[KB_TOKEN_MAX + 8];
        memcpy(ext, tok, len);
        ext[len] = tails[i];
        ext[len + 1] = '\0';
        assert_false(crypto_token_valid(VAULT, ext, len + 1));
    }
    /* a valid token followed by a valid token */
    char two[2 * KB_TOKEN_MAX];
    memcpy(two, tok, len);
    memcpy(two + len, tok, len);
    assert_false(crypto_token_valid(VAULT, two, 2 * len));
    /* fixed junk of the right length */
    char junk[VAULT_LEN + 1];
    memset(junk, 'A', VAULT_LEN);
    memcpy(junk, VAULT, 3);
    junk[VAULT_LEN] = '\0';
    assert_false(crypto_token_valid(VAULT, junk, VAULT_LEN));
}

static int cmp_tokens(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* 10k tokens: all distinct, all valid, and the random part uses the whole
 * alphabet without visible bias (each symbol within 10% of its expected
 * count; the expected spread at 400k draws is about 1%). */
static void test_token_uniqueness(void **state)
{
    (void)state;
    char(*toks)[KB_TOKEN_MAX] = calloc(NTOKENS, sizeof *toks);
    assert_non_null(toks);
    size_t counts[256] = {0};
    for (size_t i = 0; i < NTOKENS; i++) {
        crypto_token_new(VAULT, toks[i], KB_TOKEN_MAX);
        assert_true(crypto_token_valid(VAULT, toks[i], strlen(toks[i])));
        for (size_t k = 3; k < 3 + KB_TOKEN_RANDOM_LEN; k++)
            counts[(unsigned char)toks[i][k]]++;
    }
    qsort(toks, NTOKENS, sizeof *toks, cmp_tokens);
    for (size_t i = 1; i < NTOKENS; i++)
        assert_string_not_equal(toks[i - 1], toks[i]);
    free(toks);

    double expected = (double)NTOKENS * KB_TOKEN_RANDOM_LEN / 62.0;
    for (int c = 0; c < 256; c++) {
        if (is_b62((char)c)) {
            if ((double)counts[c] < expected * 0.9 || (double)counts[c] > expected * 1.1)
                print_error("symbol '%c' drawn %zu times, expected ~%.0f\n", c, counts[c],
                            expected);
            assert_true((double)counts[c] >= expected * 0.9);
            assert_true((double)counts[c] <= expected * 1.1);
        } else {
            assert_int_equal(counts[c], 0);
        }
    }
}

/* ---- HMAC-SHA256, RFC 4231 ---- */

struct hmac_vec {
    const uint8_t *key;
    size_t key_len;
    const char *data;
    size_t data_len;
    const char *hex; /* expected MAC */
};

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t k1[20], k6[131];
    memset(k1, 0x0b, sizeof k1);
    memset(k6, 0xaa, sizeof k6);
    static const char d6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    static const char d7[] = "This is a test using a larger than block-size key and a larger "
                             "than block-size data. The key needs to be hashed before being "
                             "used by the HMAC algorithm.";
    const struct hmac_vec vecs[] = {
        /* test case 1 */
        {k1, sizeof k1, "Hi There", 8,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        /* test case 2 */
        {(const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        /* test case 6: key longer than the block */
        {k6, sizeof k6, d6, sizeof d6 - 1,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        /* test case 7 */
        {k6, sizeof k6, d7, sizeof d7 - 1,
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
        uint8_t mac[KB_HASH_LEN];
        char hex[2 * KB_HASH_LEN + 1];
        crypto_hmac(vecs[i].key, vecs[i].key_len, vecs[i].data, vecs[i].data_len, mac);
        crypto_hex(mac, sizeof mac, hex);
        assert_string_equal(hex, vecs[i].hex);
        /* the precomputed-pad form, twice: its work context is reused */
        struct kb_hmac *h = crypto_hmac_new(vecs[i].key, vecs[i].key_len);
        for (int round = 0; round < 2; round++) {
            memset(mac, 0, sizeof mac);
            crypto_hmac_run(h, vecs[i].data, vecs[i].data_len, mac);
            crypto_hex(mac, sizeof mac, hex);
            assert_string_equal(hex, vecs[i].hex);
        }
        crypto_hmac_free(h);
    }
}

/* The precomputed form agrees with the one-shot MAC for any key and
 * message length, across block boundaries. */
static void test_hmac_precomputed(void **state)
{
    (void)state;
    uint8_t key[100], msg[200], a[KB_HASH_LEN], b[KB_HASH_LEN];
    crypto_random(key, sizeof key);
    crypto_random(msg, sizeof msg);
    for (size_t klen = 0; klen <= sizeof key; klen += 7) {
        struct kb_hmac *h = crypto_hmac_new(key, klen);
        for (size_t mlen = 0; mlen <= sizeof msg; mlen += 13) {
            crypto_hmac(key, klen, msg, mlen, a);
            crypto_hmac_run(h, msg, mlen, b);
            assert_memory_equal(a, b, KB_HASH_LEN);
        }
        crypto_hmac_free(h);
    }
    crypto_hmac_free(NULL);
}

/* The MAC depends on every key and message byte: the store's lookups rely
 * on distinct tokens hashing apart under one key. */
static void test_hmac_sensitivity(void **state)
{
    (void)state;
    uint8_t key[32], mac0[KB_HASH_LEN], mac1[KB_HASH_LEN];
    char msg[] = "kb_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN012345";
    crypto_random(key, sizeof key);
    crypto_hmac(key, sizeof key, msg, strlen(msg), mac0);
    crypto_hmac(key, sizeof key, msg, strlen(msg), mac1);
    assert_memory_equal(mac0, mac1, KB_HASH_LEN); /* deterministic */
    for (size_t i = 0; i < strlen(msg); i++) {
        msg[i] ^= 1;
        crypto_hmac(key, sizeof key, msg, strlen(msg), mac1);
        assert_memory_not_equal(mac0, mac1, KB_HASH_LEN);
        msg[i] ^= 1;
    }
    key[31] ^= 0x80;
    crypto_hmac(key, sizeof key, msg, strlen(msg), mac1);
    assert_memory_not_equal(mac0, mac1, KB_HASH_LEN);
    /* empty message is fine */
    crypto_hmac(key, sizeof key, "", 0, mac1);
    assert_memory_not_equal(mac0, mac1, KB_HASH_LEN);
}

/* ---- constant-time compare ---- */

static void test_equal(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    crypto_random(a, sizeof a);
    memcpy(b, a, sizeof b);
    assert_true(crypto_equal(a, b, sizeof a));
    assert_true(crypto_equal(a, b, 0));
    for (size_t i = 0; i < sizeof a; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (uint8_t)(1u << bit);
            assert_false(crypto_equal(a, b, sizeof a));
            /* a prefix that excludes the difference is equal */
            assert_true(crypto_equal(a, b, i));
            b[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_true(crypto_equal(a, b, sizeof a));
}

/* ---- hex ---- */

static void test_hex_vectors(void **state)
{
    (void)state;
    static const uint8_t bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff};
    char out[2 * sizeof bytes + 1];
    memset(out, 'X', sizeof out);
    crypto_hex(bytes, sizeof bytes, out);
    assert_string_equal(out, "00017f80abcdefff");

    crypto_hex(bytes, 0, out);
    assert_string_equal(out, "");

    uint8_t back[sizeof bytes];
    assert_true(crypto_unhex("00017f80abcdefff", 16, back, sizeof back));
    assert_memory_equal(back, bytes, sizeof bytes);
    assert_true(crypto_unhex("00017F80ABCDEFFF", 16, back, sizeof back)); /* upper case too */
    assert_memory_equal(back, bytes, sizeof bytes);
    assert_true(crypto_unhex("00017f80AbCdEfFf", 16, back, sizeof back));
    assert_memory_equal(back, bytes, sizeof bytes);
    assert_true(crypto_unhex("", 0, back, 0));
}

static void test_hex_round_trip(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 64; n++) {
        uint8_t in[64], back[64];
        char hex[129];
        crypto_random(in, n);
        crypto_hex(in, n, hex);
        assert_int_equal(strlen(hex), 2 * n);
        for (size_t i = 0; i < 2 * n; i++)
            assert_non_null(strchr("0123456789abcdef", hex[i]));
        assert_true(crypto_unhex(hex, 2 * n, back, n));
        assert_memory_equal(in, back, n);
    }
}

struct unhex_bad {
    const char *text;
    size_t len;
    size_t n; /* bytes asked for */
};

static void test_unhex_refusals(void **state)
{
    (void)state;
    static const struct unhex_bad rows[] = {
        {"abc", 3, 1},    /* odd length */
        {"abc", 3, 2},    /* odd length, too short */
        {"ab", 2, 2},     /* too short */
        {"abcdef", 6, 2}, /* too long */
        {"", 0, 1},       /* empty for one byte */
        {"0g", 2, 1},     /* not hex */
        {"g0", 2, 1},       {"0x", 2, 1},
        {"zz", 2, 1},       {" 0", 2, 1}, /* whitespace */
        {"0 ", 2, 1},       {"0\n", 2, 1},
        {"-1", 2, 1},                      /* sign */
        {"+f", 2, 1},       {"0\0", 2, 1}, /* embedded NUL */
        {"\xc3\xa9", 2, 1},                /* non-ASCII */
        {"abcd:f", 6, 3},   {"00112233445566778899aabbccddeeffG0", 34, 17},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t out[32];
        if (crypto_unhex(rows[i].text, rows[i].len, out, rows[i].n))
            print_error("row %zu accepted\n", i);
        assert_false(crypto_unhex(rows[i].text, rows[i].len, out, rows[i].n));
    }
}

/* ---- base64 (RFC 4648 section 10, and the two non-alphanumeric symbols) ---- */

static void test_base64(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } rows[] = {
        {"", 0, ""},
        {"f", 1, "Zg=="},
        {"fo", 2, "Zm8="},
        {"foo", 3, "Zm9v"},
        {"foob", 4, "Zm9vYg=="},
        {"fooba", 5, "Zm9vYmE="},
        {"foobar", 6, "Zm9vYmFy"},
        {"\xfb\xff", 2, "+/8="},
        {"\xff\xfe\xfd", 3, "//79"},
        {"\0\0\0", 3, "AAAA"},
        {"\0", 1, "AA=="},
        /* Twilio's Basic credentials: account SID ':' auth token */
        {"AC123:tok", 9, "QUMxMjM6dG9r"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *b = crypto_base64(rows[i].in, rows[i].len);
        assert_non_null(b);
        assert_string_equal(b, rows[i].out);
        free(b);
    }
    /* long input: no line breaks, length 4 * ceil(n / 3) */
    uint8_t big[1000];
    crypto_random(big, sizeof big);
    char *b = crypto_base64(big, sizeof big);
    assert_int_equal(strlen(b), 4 * ((sizeof big + 2) / 3));
    assert_null(strchr(b, '\n'));
    free(b);
}

/* ---- ids ---- */

static void test_id_format(void **state)
{
    (void)state;
    char a[64], b[64];
    crypto_id_new("vk_", KB_ID_RANDOM_LEN, a, sizeof a);
    crypto_id_new("vk_", KB_ID_RANDOM_LEN, b, sizeof b);
    assert_int_equal(strlen(a), 3 + KB_ID_RANDOM_LEN);
    assert_memory_equal(a, "vk_", 3);
    for (size_t i = 3; a[i]; i++)
        assert_true(is_b62(a[i]));
    assert_string_not_equal(a, b);
    /* fits struct kb_key's id[32] */
    assert_true(strlen(a) < 32);

    /* exact buffer, and no prefix or no random part */
    char exact[3 + KB_ID_RANDOM_LEN + 1 + 4];
    memset(exact, '#', sizeof exact);
    crypto_id_new("vk_", KB_ID_RANDOM_LEN, exact, 3 + KB_ID_RANDOM_LEN + 1);
    assert_int_equal(exact[3 + KB_ID_RANDOM_LEN], '\0');
    assert_int_equal(exact[3 + KB_ID_RANDOM_LEN + 1], '#');
    crypto_id_new("", 8, a, sizeof a);
    assert_int_equal(strlen(a), 8);
    crypto_id_new("req_", 0, a, sizeof a);
    assert_string_equal(a, "req_");
}

static void test_random(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    crypto_random(a, sizeof a);
    crypto_random(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
    assert_memory_not_equal(a, zero, sizeof a);
    crypto_random(a, 0); /* no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_format),
        cmocka_unit_test(test_token_exact_buffer),
        cmocka_unit_test(test_token_known),
        cmocka_unit_test(test_token_single_byte_changes),
        cmocka_unit_test(test_token_transpositions),
        cmocka_unit_test(test_token_wrong_prefix),
        cmocka_unit_test(test_token_length),
        cmocka_unit_test(test_token_uniqueness),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_precomputed),
        cmocka_unit_test(test_hmac_sensitivity),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_hex_vectors),
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_unhex_refusals),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_id_format),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
