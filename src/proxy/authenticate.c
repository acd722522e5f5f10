/*
 * authenticate.c - the vault token, where each vendor's SDK sends its key:
 * Authorization: Bearer (Stripe, OpenAI), Basic (Twilio's SID:token and
 * Stripe's token:), or the vendor's own header (x-api-key). Two credentials
 * are ambiguous and refused rather than guessed between.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/money.h"
#include "core/runtime.h"
#include "audit/audit.h"
#include "meter/meter.h"
#include "net/http.h"
#include "net/httpd.h"
#include <openssl/evp.h>
#include "core/crypto.h"
#include "proxy/keycache.h"
#include "proxy/proxy_int.h"
#include "store/store.h"
#include "store/writer.h"

/* Finds the vault token where the SDK of vendor v (NULL: not known yet)
 * sends it; false when absent, ambiguous (two credentials) or too long. */
static bool find_token(const struct kb_hdr *h, size_t nh, const struct kb_vendor *v, char *out,
                       size_t size)
{
    const char *auth = NULL, *xkey = NULL;
    int nauth = 0, nkey = 0;
    const char *key_header = v && v->auth == KB_AUTH_HEADER ? v->auth_header : "x-api-key";
    for (size_t i = 0; i < nh; i++) {
        if (strcasecmp(h[i].name, "authorization") == 0)
            auth = h[i].value, nauth++;
        else if (strcasecmp(h[i].name, key_header) == 0)
            xkey = h[i].value, nkey++;
    }
    if (nauth > 1 || nkey > 1)
        return false; /* ambiguous: refuse rather than guess */
    const char *tok = NULL;
    size_t len = 0;
    char decoded[256];
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        tok = auth + 7;
        while (*tok == ' ')
            tok++;
        len = strlen(tok);
    } else if (auth && strncasecmp(auth, "Basic ", 6) == 0) {
        const char *b64 = auth + 6;
        size_t blen = strlen(b64);
        if (blen == 0 || blen % 4 || blen / 4 * 3 >= sizeof decoded)
            return false;
        int n = EVP_DecodeBlock((unsigned char *)decoded, (const unsigned char *)b64, (int)blen);
        if (n < 0)
            return false;
        if (blen >= 1 && b64[blen - 1] == '=')
            n--;
        if (blen >= 2 && b64[blen - 2] == '=')
            n--;
        decoded[n] = '\0';
        char *colon = memchr(decoded, ':', (size_t)n);
        if (!colon)
            return false;
        /* Twilio sends SID:token; Stripe's curl style sends token: */
        if (colon[1]) {
            tok = colon + 1;
            len = strlen(tok);
        } else {
            tok = decoded;
            len = (size_t)(colon - decoded);
        }
    } else if (xkey) {
        tok = xkey;
        len = strlen(tok);
    }
    if (!tok || len == 0 || len >= size)
        return false;
    /* the vendor's own key header beside an Authorization credential:
     * one token said twice is one credential; two different ones are
     * ambiguous (which key pays?) */
    if (xkey && tok != xkey && (strlen(xkey) != len || memcmp(xkey, tok, len) != 0))
        return false;
    memcpy(out, tok, len);
    out[len] = '\0';
    return true;
}

/* The vendor whose SDK sent the request, by the target's first segment
 * (NULL when it names none: the key says, later). */
static const struct kb_vendor *prefix_vendor(const struct kb_proxy *px, const char *target)
{
    size_t seg = target && target[0] == '/' ? 1 + strcspn(target + 1, "/?") : 0;
    return seg > 1 ? config_vendor(px->rt->cfg, target + 1, seg - 1) : NULL;
}

enum kb_err proxy__key_find(struct kb_proxy *px, const char *target, const struct kb_hdr *h,
                            size_t nh, uint8_t hash[KB_HASH_LEN], const struct kb_key **out)
{
    char token[KB_TOKEN_MAX + 8];
    if (!find_token(h, nh, prefix_vendor(px, target), token, sizeof token) ||
        !crypto_token_valid("kb_", token, strlen(token)))
        return KB_E_INVALID_TOKEN;
    crypto_hmac_run(px->token_mac, token, strlen(token), hash);
    return keycache_find(px->keys, hash, out);
}

enum kb_err proxy__key_verdict(const struct kb_key *key, int64_t now)
{
    /* revoked or expired: still the key's, so its refusal is audited under it */
    return !key                     ? KB_E_INVALID_TOKEN
           : key->revoked_at        ? KB_E_KEY_REVOKED
           : now >= key->expires_at ? KB_E_KEY_EXPIRED
                                    : KB_OK;
}

/* ---- the head gate ---- */

/* A held head's key was read: the verdict the gate would have given. */
static void gate_read(struct kb_proxy *px, void *waiter, const struct kb_key *key, enum kb_err err)
{
    (void)px;
    if (err == KB_OK)
        err = proxy__key_verdict(key, clock_now());
    keycache_put(key);            /* cached for the handler */
    httpd_gate_done(waiter, err); /* a store error is answered without reading the body */
}

/* The held head's connection closed first. */
static void gate_closed(void *arg)
{
    proxy__key_read_forget(arg);
}

static void gate_detach(void *waiter)
{
    httpd_gate_hold(waiter, NULL, NULL);
}

enum kb_err proxy_head_gate(struct kb_hgate *g, const char *target, const struct kb_hdr *h,
                            size_t nh, void *arg)
{
    struct kb_proxy *px = arg;
    uint8_t hash[KB_HASH_LEN];
    const struct kb_key *key = NULL;
    enum kb_err err = proxy__key_find(px, target, h, nh, hash, &key);
    if (err == KB_E_NOT_FOUND) {
        /* not a byte of the body is read until the key is known */
        struct proxy__key_read *l = proxy__key_read(px, hash, gate_read, g, gate_detach);
        if (!l)
            return KB_E_STORE; /* the reader's queue is full */
        httpd_gate_hold(g, gate_closed, l);
        return KB_OK;
    }
    if (err == KB_OK)
        err = proxy__key_verdict(key, clock_now());
    keycache_put(key); /* warm for the handler */
    return err;
}
