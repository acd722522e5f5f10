/*
 * canonical.c - the one reading of a proxied request (see canonical.h).
 *
 * Each step below removes one way for the vendor to read a request
 * differently from the meter: a second spelling of the path, a coded body
 * the meter would see as bytes, JSON the Stripe meter does not read, a
 * money parameter hidden in the query of a POST. Work is linear in the
 * request's size: the query-versus-body check sorts the query's keys once
 * and looks each body key up by binary search.
 */
#include "proxy/canonical.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/config.h"
#include "core/crypto.h"
#include "net/httpd.h"
#include "policy/canon.h"
#include "proxy/stripe_form.h"
#include "vendor/profile.h"

/* A coded request body may not decode to more than this many times its size. */
#define MAX_BODY_RATIO 100
/* Query parameters a form vendor's write may carry. */
#define MAX_QUERY_KEYS 1024

static const char form_type[] = "application/x-www-form-urlencoded";

static bool is_write(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* ---- Accept-Encoding: only what the meter can read ---- */

/* Appends the codings of one Accept-Encoding value that the meter decodes,
 * in the client's order, each once; q=0 means "not this one". */
static void accept_filter(const char *value, char *out, size_t size)
{
    static const char *const known[] = {"gzip", "deflate", "br"};
    const char *p = value;
    while (*p) {
        const char *item = p + strspn(p, " \t,");
        size_t n = strcspn(item, ",");
        p = item + n;
        size_t tok = strcspn(item, ";, \t");
        if (tok > n)
            tok = n;
        const char *params = item + tok;
        bool refused = false;
        /* the first q= parameter decides; scanned within this item only */
        for (const char *q = params; q + 2 < item + n; q++)
            if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=') {
                size_t rest = (size_t)(item + n - (q + 2)), k = 0;
                while (k < rest && (q[2 + k] == '0' || q[2 + k] == '.'))
                    k++;
                refused = k > 0 && q[2] == '0' && (k == rest || strchr(",; \t", q[2 + k]));
                break;
            }
        const char *name = NULL;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            if (strlen(known[k]) == tok && strncasecmp(item, known[k], tok) == 0)
                name = known[k];
        if (tok == 6 && strncasecmp(item, "x-gzip", 6) == 0)
            name = "gzip";
        if (!name || refused || strstr(out, name))
            continue;
        size_t used = strlen(out);
        int w = snprintf(out + used, size - used, "%s%s", used ? ", " : "", name);
        if (w < 0 || (size_t)w >= size - used)
            out[used] = '\0';
    }
}

/* ---- the body: decoded from its Content-Encoding ---- */

static enum kb_err body_decode(const struct kb_hreq *req, size_t max_body, struct kb_canon_req *c,
                               char **errmsg)
{
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    int count;
    const char *ce = hdr_find(h, nh, "Content-Encoding", &count);
    if (count > 1) {
        kb_set_errmsg(errmsg, "the request has %d Content-Encoding headers", count);
        return KB_E_AMBIGUOUS_REQUEST;
    }
    enum kb_coding coding = codec_parse(ce);
    if (coding == KB_CODING_IDENTITY)
        return KB_OK;
    if (coding == KB_CODING_UNKNOWN) {
        kb_set_errmsg(errmsg,
                      "Content-Encoding \"%.40s\" cannot be read; send gzip, deflate, br, zstd "
                      "or an uncoded body",
                      ce);
        return KB_E_UNSUPPORTED_ENCODING;
    }
    char *out = NULL;
    size_t out_len = 0;
    enum kb_err err = codec_decode_all(coding, c->body ? c->body : "", c->body_len, max_body,
                                       MAX_BODY_RATIO, &out, &out_len, errmsg);
    if (err != KB_OK)
        return err;
    free(c->owned);
    c->owned = out;
    c->body = out;
    c->body_len = out_len;
    c->body_rewritten = true;
    return KB_OK;
}

/* ---- query folded into a form body ---- */

/* Decodes a form key (s, n bytes: '+' is a space, %XX a byte) into out
 * (size bytes); false when it does not fit or an escape is malformed. */
static bool key_decode(const char *s, size_t n, char *out, size_t size, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + 1 >= size)
            return false;
        if (s[i] == '%') {
            int hi = i + 2 < n ? crypto_hexdigit(s[i + 1]) : -1;
            int lo = i + 2 < n ? crypto_hexdigit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    *len = o;
    return true;
}

struct qkey {
    char *k;  /* owned, decoded */
    size_t n; /* bytes of k */
};

static int qkey_cmp(const void *a, const void *b)
{
    const struct qkey *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Calls each key of a form text in order; stops at the first false. */
static bool form_each_key(const char *s, size_t len, bool (*fn)(void *, const char *, size_t),
                          void *ctx)
{
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && s[end] != '&')
            end++;
        size_t k = i;
        while (k < end && s[k] != '=')
            k++;
        if (end > i && !fn(ctx, s + i, k - i))
            return false;
        i = end + 1;
    }
    return true;
}

struct fold {
    struct qkey *keys; /* owned */
    size_t n, cap;
    const char *dup; /* the first body key also in the query, when found */
    size_t dup_len;
    bool bad; /* a key could not be decoded or there are too many */
};

static bool collect_key(void *ctx, const char *k, size_t n)
{
    struct fold *f = ctx;
    char tmp[512];
    size_t len;
    if (f->n == MAX_QUERY_KEYS || !key_decode(k, n, tmp, sizeof tmp, &len)) {
        f->bad = true;
        return false;
    }
    f->keys[f->n].k = kb_strndup(tmp, len);
    f->keys[f->n].n = len;
    f->n++;
    return true;
}

static bool probe_key(void *ctx, const char *k, size_t n)
{
    struct fold *f = ctx;
    char tmp[512];
    struct qkey q = {tmp, 0};
    if (!key_decode(k, n, tmp, sizeof tmp, &q.n))
        return true; /* the meter refuses a malformed body on its own */
    if (bsearch(&q, f->keys, f->n, sizeof *f->keys, qkey_cmp)) {
        f->dup = k;
        f->dup_len = n;
        return false;
    }
    return true;
}

/* Moves the query of a form vendor's write into its body, refusing any
 * parameter given in both. */
static enum kb_err query_fold(struct kb_canon_req *c, char **errmsg)
{
    enum kb_err err = KB_OK;
    struct fold f = {0};
    if (c->body_len &&
        (!c->content_type || strncasecmp(c->content_type, form_type, sizeof form_type - 1) != 0)) {
        kb_set_errmsg(errmsg, "parameters in the query of a request whose body is not a form "
                              "cannot be read one way; send them in the body");
        return KB_E_AMBIGUOUS_REQUEST;
    }
    f.keys = kb_calloc(MAX_QUERY_KEYS, sizeof *f.keys);
    form_each_key(c->query, c->query_len, collect_key, &f);
    if (f.bad) {
        kb_set_errmsg(errmsg, "the query has a malformed or over-long key, or more than %d",
                      MAX_QUERY_KEYS);
        err = KB_E_AMBIGUOUS_REQUEST;
        goto out;
    }
    qsort(f.keys, f.n, sizeof *f.keys, qkey_cmp);
    form_each_key(c->body, c->body_len, probe_key, &f);
    if (f.dup) {
        kb_set_errmsg(errmsg, "parameter \"%.*s\" is given both in the query and in the body",
                      (int)(f.dup_len > 100 ? 100 : f.dup_len), f.dup);
        err = KB_E_AMBIGUOUS_REQUEST;
        goto out;
    }
    struct kb_buf b = KB_BUF_INIT;
    buf_reserve(&b, c->body_len + c->query_len + 2);
    buf_append(&b, c->body ? c->body : "", c->body_len);
    if (c->body_len)
        buf_putc(&b, '&');
    buf_append(&b, c->query, c->query_len);
    free(c->owned);
    c->owned = buf_take(&b, &c->body_len);
    c->body = c->owned;
    c->content_type = form_type;
    c->body_rewritten = true;
    c->query = NULL;
    c->query_len = 0;
out:
    for (size_t i = 0; i < f.n; i++)
        free(f.keys[i].k);
    free(f.keys);
    return err;
}

/* ---- headers that change who pays or what runs ---- */

/* A header-name byte as a server that maps '_' to '-' and ignores case
 * reads it (CGI, nginx with underscores_in_headers). */
static char fold(char ch)
{
    ch = ch == '_' ? '-' : ch;
    return (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
}

bool canonical_name_is(const char *name, const char *other, bool whole)
{
    for (; *other; name++, other++)
        if (!*name || fold(*name) != fold(*other))
            return false;
    return !whole || !*name;
}

/* Whether `id` is one of the JSON array `allowed` (NULL: none). */
static bool account_allowed(const char *allowed, const char *id)
{
    json_t *arr = allowed ? json_loads(allowed, 0, NULL) : NULL;
    bool ok = false;
    for (size_t i = 0; !ok && i < json_array_size(arr); i++) {
        const char *a = json_string_value(json_array_get(arr, i));
        ok = a && strcmp(a, id) == 0;
    }
    json_decref(arr);
    return ok;
}

/* The account selector `name` is (folded), or NULL. */
static const char *account_header(const char *name)
{
    size_t n;
    const struct kb_vendor_profile *p = vendor_profiles(&n);
    for (size_t i = 0; i < n; i++)
        for (const char *const *a = p[i].accounts; a && *a; a++)
            if (canonical_name_is(name, *a, true))
                return *a;
    return NULL;
}

static enum kb_err headers_check(const struct kb_hreq *req, const struct kb_vendor *v,
                                 const char *account, const char *allowed, const char *path,
                                 size_t path_len, char **errmsg)
{
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    static const char *const body_headers[] = {"content-type", "content-encoding",
                                               "accept-encoding", NULL};
    for (size_t i = 0; i < nh; i++) {
        /* a body header spelled with '_' is the body's meaning to a server
         * that maps underscores, and invisible to the meter */
        if (strchr(h[i].name, '_') && canonical_folded_in(h[i].name, body_headers)) {
            kb_set_errmsg(errmsg, "header \"%.64s\" is refused: spell it with '-'", h[i].name);
            return KB_E_AMBIGUOUS_REQUEST;
        }
        /* Headers that make a vendor act for another account, organisation
         * or project than the one whose secret is injected: every profile's,
         * whatever the key's vendor (a generic vendor may front one) */
        const char *a = account_header(h[i].name);
        if (a) {
            /* forwarded only when spelled as the vendor reads it, given
             * once, and naming an account the key was issued for */
            if (strchr(h[i].name, '_') || hdr_find(h, nh, h[i].name, NULL) != h[i].value ||
                !account_allowed(allowed, h[i].value)) {
                kb_set_errmsg(errmsg, "%s \"%.64s\" is not among this vault key's allowed_accounts",
                              a, h[i].value);
                return KB_E_ACCOUNT_NOT_ALLOWED;
            }
        }
    }
    /* Twilio names the account in the path: the configured one only (a
     * parent account's secret also reaches its subaccounts) */
    const char *prefix = v->profile ? v->profile->account_path : NULL;
    size_t pl = prefix ? strlen(prefix) : 0;
    if (prefix && account && path_len > pl && strncasecmp(path, prefix, pl) == 0) {
        const char *sid = path + pl;
        size_t n = strcspn(sid, "/."); /* "{sid}/Messages.json" or "{sid}.json" */
        size_t al = strlen(account);
        if (n != al || strncmp(sid, account, al) != 0) {
            kb_set_errmsg(errmsg, "this vault key acts only for the configured Twilio account");
            return KB_E_ACCOUNT_NOT_ALLOWED;
        }
    }
    return KB_OK;
}

bool canonical_folded_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (canonical_name_is(name, *list, true))
            return true;
    return false;
}

/* ---- the whole request ---- */

enum kb_err canonical_build(const struct kb_hreq *req, const struct kb_vendor *v,
                            const char *account, const char *allowed_accounts, const char *method,
                            const char *path,
                            size_t path_len, const char *query, size_t max_body,
                            struct kb_canon_req *c, char **errmsg)
{
    enum kb_err err;
    memset(c, 0, sizeof *c);
    c->path = policy_canon_path(path, path_len, &c->path_len);
    if ((err = headers_check(req, v, account, allowed_accounts, c->path, c->path_len, errmsg)) !=
        KB_OK)
        return err;
    if (query && *query) {
        c->query = query;
        c->query_len = strlen(query);
    }
    c->body = hreq_body(req, &c->body_len);

    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    int nct;
    c->content_type = hdr_find(h, nh, "Content-Type", &nct);
    if (nct > 1) {
        kb_set_errmsg(errmsg, "the request has %d Content-Type headers", nct);
        return KB_E_AMBIGUOUS_REQUEST;
    }
    /* a body on a read is one the meter does not price and a vendor
     * might still act on */
    if (c->body_len && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
        kb_set_errmsg(errmsg, "a %s request may not carry a body", method);
        return KB_E_AMBIGUOUS_REQUEST;
    }
    for (size_t i = 0; i < nh; i++)
        if (strcasecmp(h[i].name, "Accept-Encoding") == 0)
            accept_filter(h[i].value, c->accept, sizeof c->accept);

    if ((err = body_decode(req, max_body, c, errmsg)) != KB_OK)
        return err;
    /* Stripe takes forms; JSON from agents is transcoded */
    /* Stripe's v2 API takes JSON as sent; its v1 API takes forms */
    bool v2 = v->body == KB_BODY_FORM_FROM_JSON && strncmp(c->path, "/v2/", 4) == 0;
    if (v->body == KB_BODY_FORM_FROM_JSON && !v2 && c->body_len && c->content_type &&
        strncasecmp(c->content_type, "application/json", 16) == 0) {
        char *form;
        size_t flen;
        if ((err = stripe_form_from_json(c->body, c->body_len, &form, &flen, errmsg)) != KB_OK)
            return err;
        free(c->owned);
        c->owned = form;
        c->body = form;
        c->body_len = flen;
        c->content_type = form_type;
        c->body_rewritten = true;
    }
    /* form vendors read a write's parameters from its query as well */
    if (c->query && v2 && is_write(method)) {
        kb_set_errmsg(errmsg, "a Stripe v2 write takes its parameters in the JSON body only");
        return KB_E_AMBIGUOUS_REQUEST;
    }
    if (c->query && v->body != KB_BODY_AS_IS && is_write(method))
        return query_fold(c, errmsg);
    return KB_OK;
}

void canonical_cleanup(struct kb_canon_req *c)
{
    free(c->path);
    free(c->owned);
    memset(c, 0, sizeof *c);
}

bool canonical_replaces_header(const struct kb_canon_req *c, const char *name, size_t nlen)
{
    if (nlen == 15 && strncasecmp(name, "accept-encoding", 15) == 0)
        return true;
    return c->body_rewritten && ((nlen == 12 && strncasecmp(name, "content-type", 12) == 0) ||
                                 (nlen == 16 && strncasecmp(name, "content-encoding", 16) == 0));
}
