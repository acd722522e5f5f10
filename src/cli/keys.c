/*
 * keys.c - `keybrake keys create|list|show|revoke|revoke-prefix` and
 * `keybrake usage`: the vault keys resource of the admin API
 * (src/admin/keys.c) for people (tables) and scripts (--json, the API's
 * own JSON). Amounts go to the API as the text the user typed, never
 * through a double: the API reads the cap exactly.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/api.h"
#include "cli/client.h"
#include "core/alloc.h"

#define MAX_LIST 10000   /* keys list/usage: most keys fetched by one command */
#define PAGE_MAX 200     /* the API's largest page */
#define DEFAULT_TTL "1h" /* keys create without --ttl */

static const char *const keys_help =
    "usage: keybrake keys create --vendor V --label L --cap USD --endpoint PATTERN...\n"
    "                            [--ttl DUR] [--account ID]... [--metadata JSON]\n"
    "                            [--tenant ID]\n"
    "       keybrake keys list [--label-prefix P] [--vendor V] [--status S] [--limit N]\n"
    "                          [--tenant ID]\n"
    "       keybrake keys show ID\n"
    "       keybrake keys revoke ID\n"
    "       keybrake keys revoke-prefix PREFIX\n"
    "\n"
    "  create         issue a vault key; its token is printed once, never again.\n"
    "                 --cap is the daily USD cap (e.g. 25 or 0.50); --endpoint takes a\n"
    "                 pattern such as 'POST /v1/payment_intents' (repeatable, at least\n"
    "                 one); --ttl is how long the key lives (30s, 5m, 2h; default " DEFAULT_TTL
    ");\n"
    "                 --account limits the key to a vendor account (repeatable);\n"
    "                 --metadata is a JSON object kept with the key; --tenant issues\n"
    "                 it for a tenant (a root token; docs/tenants.md)\n"
    "  list           keys, newest first; --status active|revoked|expired; --limit is\n"
    "                 the most keys shown (default 50, pages followed up to it);\n"
    "                 --tenant: one tenant's keys only (a root token)\n"
    "  show           one key with today's spend and reservations against its cap\n"
    "  revoke         revoke one key (revoking a revoked key is not an error)\n"
    "  revoke-prefix  revoke every key whose label starts with PREFIX; prints how "
    "many\n" CLI_HELP_COMMON;

static const char *const usage_help =
    "usage: keybrake usage [--label-prefix P] [--vendor V] [--status S] [--limit N]\n"
    "                      [--tenant ID]\n"
    "\n"
    "Today's spend and reservations against the daily cap, one key a line, most spent\n"
    "first, with totals. --limit bounds how many keys are read (default 1000).\n"
    "--json prints {\"keys\": [<key with usage>...], \"total\": {...}}.\n" CLI_HELP_COMMON;

static double num(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static int create(struct cli_ctx *c, int argc, char **argv)
{
    const char *vendor = NULL, *label = NULL, *cap = NULL, *ttl = DEFAULT_TTL, *meta = NULL,
               *tenant = NULL;
    json_t *body = json_object(), *eps = json_array(), *accs = NULL, *res = NULL;
    char *text = NULL;
    struct kb_buf b = KB_BUF_INIT;
    int rc = CLI_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k < 0)
            goto out;
        if (k > 0)
            continue;
        const char *o = argv[i], *v;
        const char **dest = strcmp(o, "--vendor") == 0     ? &vendor
                            : strcmp(o, "--label") == 0    ? &label
                            : strcmp(o, "--cap") == 0      ? &cap
                            : strcmp(o, "--ttl") == 0      ? &ttl
                            : strcmp(o, "--metadata") == 0 ? &meta
                            : strcmp(o, "--tenant") == 0   ? &tenant
                                                           : NULL;
        bool ep = strcmp(o, "--endpoint") == 0, acc = strcmp(o, "--account") == 0;
        if (!dest && !ep && !acc) {
            rc = cli_usage_error("keys create: unknown argument %s", o);
            goto out;
        }
        if (!(v = cli_opt_value(argc, argv, &i)))
            goto out;
        if (dest)
            *dest = v;
        else if (ep)
            json_array_append_new(eps, json_string(v));
        else {
            if (!accs)
                accs = json_array();
            json_array_append_new(accs, json_string(v));
        }
    }
    if (!vendor || !label || !cap || json_array_size(eps) == 0) {
        rc = cli_usage_error("keys create needs --vendor, --label, --cap and at least one "
                             "--endpoint%s",
                             "");
        goto out;
    }
    if (!cli_amount_ok(cap)) {
        rc = cli_usage_error("--cap must be a USD amount such as 25 or 0.50, not %s", cap);
        goto out;
    }
    json_object_set_new(body, "label", json_string(label));
    json_object_set_new(body, "vendor", json_string(vendor));
    json_object_set(body, "allowed_endpoints", eps);
    json_object_set_new(body, "expires_in", json_string(ttl));
    if (accs)
        json_object_set(body, "allowed_accounts", accs);
    if (tenant)
        json_object_set_new(body, "tenant", json_string(tenant));
    if (meta) {
        json_t *m = json_loads(meta, 0, NULL);
        if (!json_is_object(m)) {
            json_decref(m);
            rc = cli_usage_error("--metadata must be a JSON object%s", "");
            goto out;
        }
        json_object_set_new(body, "metadata", m);
    }
    /* label/vendor may not be UTF-8: json_string then gave NULL and set nothing */
    if (!json_object_get(body, "label") || !json_object_get(body, "vendor")) {
        rc = cli_usage_error("--label and --vendor must be UTF-8 text%s", "");
        goto out;
    }
    text = json_dumps(body, JSON_COMPACT);
    /* the cap goes in as typed: {"daily_usd_cap":<cap>, ...} */
    buf_printf(&b, "{\"daily_usd_cap\":%s,%s", cap, text + 1);
    if ((rc = cli_ctx_ready(c)) != CLI_EXIT_OK)
        goto out;
    if ((rc = cli_api(c, "POST", "/v1/keys", b.data, &res)) != CLI_EXIT_OK)
        goto out;
    if (c->json) {
        cli_print_json(res);
        goto out;
    }
    char t1[64], t2[64];
    struct cli_table t;
    cli_table_init(&t, 2);
    const char *rows[][2] = {
        {"id", str(res, "id")},
        {"label", str(res, "label")},
        {"vendor", str(res, "vendor")},
        {"cap", cli_usd(num(res, "daily_usd_cap"), t1, sizeof t1)},
        {"expires", str(res, "expires_at")},
        {"endpoints", cli_text(json_object_get(res, "allowed_endpoints"), t2, sizeof t2)},
        {"token", str(res, "token")},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        cli_table_row(&t, rows[i]);
    cli_table_print(&t, stdout);
    cli_table_cleanup(&t);
    fprintf(stderr, "keybrake: the token is shown only now; keep it\n");
out:
    json_decref(res);
    json_decref(body);
    json_decref(eps);
    json_decref(accs);
    free(text);
    buf_cleanup(&b);
    return rc;
}

struct list_opts {
    const char *label_prefix, *vendor, *status, *tenant;
    long limit;
};

/* Reads list filters at argv[*i]: 1 consumed, 0 not one, -1 error (printed). */
static int list_opt(struct list_opts *lo, int argc, char **argv, int *i, long max)
{
    const char *o = argv[*i];
    const char **dest = strcmp(o, "--label-prefix") == 0 ? &lo->label_prefix
                        : strcmp(o, "--vendor") == 0     ? &lo->vendor
                        : strcmp(o, "--status") == 0     ? &lo->status
                        : strcmp(o, "--tenant") == 0     ? &lo->tenant
                                                         : NULL;
    bool lim = strcmp(o, "--limit") == 0;
    if (!dest && !lim)
        return 0;
    const char *v = cli_opt_value(argc, argv, i);
    if (!v)
        return -1;
    if (dest) {
        *dest = v;
    } else if (!cli_parse_limit(v, max, &lo->limit)) {
        cli_usage_error("--limit must be an integer from 1 to %ld", max);
        return -1;
    }
    return 1;
}

/* GET /v1/keys with lo's filters, pages followed up to lo->limit keys.
 * On CLI_EXIT_OK *out is {"data": [...], "next_cursor": ...}. */
static int fetch_keys(struct cli_ctx *c, const struct list_opts *lo, json_t **out)
{
    struct kb_buf p = KB_BUF_INIT;
    buf_puts(&p, "/v1/keys");
    cli_query_add(&p, "label_prefix", lo->label_prefix);
    cli_query_add(&p, "vendor", lo->vendor);
    cli_query_add(&p, "status", lo->status);
    cli_query_add(&p, "tenant", lo->tenant);
    int rc = cli_fetch_list(c, p.data, lo->limit, PAGE_MAX, "key", out);
    buf_cleanup(&p);
    return rc;
}

static int list(struct cli_ctx *c, int argc, char **argv)
{
    struct list_opts lo = {.limit = 50};
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k == 0)
            k = list_opt(&lo, argc, argv, &i, MAX_LIST);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k == 0)
            return cli_usage_error("keys list: unknown argument %s", argv[i]);
    }
    int rc = cli_ctx_ready(c);
    json_t *res = NULL;
    if (rc != CLI_EXIT_OK || (rc = fetch_keys(c, &lo, &res)) != CLI_EXIT_OK)
        return rc;
    if (c->json) {
        cli_print_json(res);
        json_decref(res);
        return CLI_EXIT_OK;
    }
    struct cli_table t;
    cli_table_init(&t, 6);
    const char *head[] = {"ID", "LABEL", "VENDOR", "STATUS", "CAP", "EXPIRES"};
    cli_table_row(&t, head);
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(res, "data"), i, k)
    {
        char cap[64];
        const char *row[] = {str(k, "id"),
                             str(k, "label"),
                             str(k, "vendor"),
                             str(k, "status"),
                             cli_usd(num(k, "daily_usd_cap"), cap, sizeof cap),
                             str(k, "expires_at")};
        cli_table_row(&t, row);
    }
    cli_table_print(&t, stdout);
    if (json_is_string(json_object_get(res, "next_cursor")))
        fprintf(stderr, "keybrake: more keys than --limit %ld\n", lo.limit);
    cli_table_cleanup(&t);
    json_decref(res);
    return CLI_EXIT_OK;
}

static int show(struct cli_ctx *c, int argc, char **argv)
{
    const char *id;
    int rc = cli_one_arg(c, argc, argv, "keys", "one argument", &id);
    if (rc != CLI_EXIT_OK)
        return rc;
    char *path = cli_path("/v1/keys", id);
    json_t *k = NULL;
    rc = cli_api(c, "GET", path, NULL, &k);
    free(path);
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    if (c->json) {
        cli_print_json(k);
        json_decref(k);
        return CLI_EXIT_OK;
    }
    json_t *u = json_object_get(k, "usage");
    double cap = num(k, "daily_usd_cap"), spent = num(u, "spent_usd"),
           reserved = num(u, "reserved_usd");
    char a[64], b[64], d[64], e[64], f[256], g[64], h[64], today[320];
    snprintf(today, sizeof today, "%s spent + %s reserved of %s (%.0f%%)",
             cli_usd(spent, a, sizeof a), cli_usd(reserved, b, sizeof b), cli_usd(cap, d, sizeof d),
             cap > 0 ? 100.0 * (spent + reserved) / cap : 0.0);
    struct cli_table t;
    cli_table_init(&t, 2);
    const char *rows[][2] = {
        {"id", str(k, "id")},
        {"label", str(k, "label")},
        {"vendor", str(k, "vendor")},
        {"status", str(k, "status")},
        {"endpoints", cli_text(json_object_get(k, "allowed_endpoints"), f, sizeof f)},
        {"accounts", cli_text(json_object_get(k, "allowed_accounts"), g, sizeof g)},
        {"rate limit", cli_text(json_object_get(k, "rate_limit"), h, sizeof h)},
        {"created", str(k, "created_at")},
        {"expires", str(k, "expires_at")},
        {"revoked", str(k, "revoked_at")},
        {"day", str(u, "day")},
        {"today", today},
        {"remaining", cli_usd(num(u, "remaining_usd"), e, sizeof e)},
        {"requests", cli_text(json_object_get(u, "requests"), a, sizeof a)},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        cli_table_row(&t, rows[i]);
    cli_table_print(&t, stdout);
    cli_table_cleanup(&t);
    json_decref(k);
    return CLI_EXIT_OK;
}

static int revoke(struct cli_ctx *c, int argc, char **argv)
{
    const char *id;
    int rc = cli_one_arg(c, argc, argv, "keys", "one argument", &id);
    if (rc != CLI_EXIT_OK)
        return rc;
    char *path = cli_path("/v1/keys", id);
    json_t *res = NULL;
    rc = cli_api(c, "DELETE", path, NULL, &res);
    free(path);
    json_decref(res); /* 204: nothing */
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    if (c->json) {
        json_t *o = json_pack("{s:s, s:s}", "id", id, "status", "revoked");
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("revoked %s\n", id);
    }
    return CLI_EXIT_OK;
}

static int revoke_prefix(struct cli_ctx *c, int argc, char **argv)
{
    const char *prefix;
    int rc = cli_one_arg(c, argc, argv, "keys", "one argument", &prefix);
    if (rc != CLI_EXIT_OK)
        return rc;
    json_t *body = json_pack("{s:s}", "label_prefix", prefix), *res = NULL;
    if (!body)
        return cli_usage_error("the prefix must be UTF-8 text%s", "");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    rc = cli_api(c, "POST", "/v1/keys/revoke", text, &res);
    free(text);
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    if (c->json) {
        cli_print_json(res);
    } else {
        json_int_t n = json_integer_value(json_object_get(res, "revoked"));
        printf("revoked %lld key%s\n", (long long)n, n == 1 ? "" : "s");
    }
    json_decref(res);
    return CLI_EXIT_OK;
}

int cli_keys(int argc, char **argv)
{
    static const struct cli_cmd cmds[] = {{"create", create},
                                          {"list", list},
                                          {"show", show},
                                          {"revoke", revoke},
                                          {"revoke-prefix", revoke_prefix}};
    return cli_dispatch("keys", keys_help, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
}

/* Descending by today's spend, then reservations, then id. */
static int by_spend(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_t *ux = json_object_get(x, "usage"), *uy = json_object_get(y, "usage");
    double d = num(uy, "spent_usd") - num(ux, "spent_usd");
    if (d == 0)
        d = num(uy, "reserved_usd") - num(ux, "reserved_usd");
    if (d != 0)
        return d > 0 ? 1 : -1;
    return strcmp(str(x, "id"), str(y, "id"));
}

/* Today's usage rows by key (GET /v1/usage, pages followed): *rows maps
 * key id -> row, *day (caller frees) is the server's day. */
static int fetch_today(struct cli_ctx *c, const char *label_prefix, json_t **rows, char **day)
{
    json_t *map = json_object(), *next = json_null();
    char *d = NULL;
    int rc = CLI_EXIT_OK;
    for (int pages = 0; pages < 1000; pages++) {
        struct kb_buf p = KB_BUF_INIT;
        buf_puts(&p, "/v1/usage?group_by=key");
        cli_query_add(&p, "label_prefix", label_prefix);
        cli_query_add(&p, "limit", "1000");
        cli_query_add(&p, "cursor", json_string_value(next));
        json_t *page = NULL;
        rc = cli_api(c, "GET", p.data, NULL, &page);
        buf_cleanup(&p);
        if (rc != CLI_EXIT_OK)
            break;
        json_t *data = json_object_get(page, "data");
        const char *to = json_string_value(json_object_get(page, "to"));
        if (!json_is_array(data) || !to) {
            fprintf(stderr, "keybrake: the daemon's usage answer has no data array\n");
            json_decref(page);
            rc = CLI_EXIT_UNAVAILABLE;
            break;
        }
        if (!d)
            d = kb_strdup(to);
        size_t i;
        json_t *row;
        json_array_foreach(data, i, row)
        {
            const char *g = json_string_value(json_object_get(row, "group"));
            if (g)
                json_object_set(map, g, row);
        }
        json_decref(next);
        next = json_incref(json_object_get(page, "next_cursor"));
        json_decref(page);
        if (!json_is_string(next))
            break;
    }
    json_decref(next);
    if (rc != CLI_EXIT_OK) {
        json_decref(map);
        free(d);
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    }
    *rows = map;
    *day = d ? d : kb_strdup("");
    return CLI_EXIT_OK;
}

int cli_usage(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(usage_help, stdout);
        return CLI_EXIT_OK;
    }
    struct cli_ctx c = {0};
    struct list_opts lo = {.limit = 1000};
    json_t *res = NULL, **keys = NULL;
    size_t n = 0;
    int rc = CLI_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(&c, argc, argv, &i);
        if (k == 0)
            k = list_opt(&lo, argc, argv, &i, MAX_LIST);
        if (k < 0)
            goto out;
        if (k == 0) {
            rc = cli_usage_error("usage: unknown argument %s", argv[i]);
            goto out;
        }
    }
    if ((rc = cli_ctx_ready(&c)) != CLI_EXIT_OK || (rc = fetch_keys(&c, &lo, &res)) != CLI_EXIT_OK)
        goto out;
    /* the list has no usage: today's rows of GET /v1/usage (the server's
     * day), joined to the keys by id; a key without a row spent nothing */
    json_t *rows = NULL;
    char *day = NULL;
    if ((rc = fetch_today(&c, lo.label_prefix, &rows, &day)) != CLI_EXIT_OK)
        goto out;
    json_t *data = json_object_get(res, "data");
    keys = kb_calloc(json_array_size(data) + 1, sizeof *keys);
    size_t i;
    json_t *k;
    json_array_foreach(data, i, k)
    {
        json_t *row = json_object_get(rows, str(k, "id"));
        double sp = num(row, "spent_usd"), rs = num(row, "reserved_usd"),
               left = num(k, "daily_usd_cap") - sp - rs;
        json_t *full = json_deep_copy(k);
        json_object_set_new(full, "usage",
                            json_pack("{s:s, s:f, s:f, s:f, s:I}", "day", day, "spent_usd", sp,
                                      "reserved_usd", rs, "remaining_usd", left > 0 ? left : 0.0,
                                      "requests",
                                      json_integer_value(json_object_get(row, "requests"))));
        keys[n++] = full;
    }
    json_decref(rows);
    free(day);
    qsort(keys, n, sizeof *keys, by_spend);
    double spent = 0, reserved = 0, cap = 0;
    for (i = 0; i < n; i++) {
        json_t *u = json_object_get(keys[i], "usage");
        spent += num(u, "spent_usd");
        reserved += num(u, "reserved_usd");
        cap += num(keys[i], "daily_usd_cap");
    }
    if (c.json) {
        json_t *arr = json_array();
        for (i = 0; i < n; i++)
            json_array_append(arr, keys[i]);
        json_t *o =
            json_pack("{s:o, s:{s:I, s:f, s:f, s:f}}", "keys", arr, "total", "keys", (json_int_t)n,
                      "spent_usd", spent, "reserved_usd", reserved, "daily_usd_cap", cap);
        cli_print_json(o);
        json_decref(o);
        goto out;
    }
    struct cli_table t;
    cli_table_init(&t, 8);
    const char *head[] = {"ID", "LABEL", "VENDOR", "STATUS", "SPENT", "RESERVED", "CAP", "USED"};
    cli_table_row(&t, head);
    for (i = 0; i <= n; i++) {
        bool total = i == n;
        json_t *u = total ? NULL : json_object_get(keys[i], "usage");
        double s = total ? spent : num(u, "spent_usd"),
               r = total ? reserved : num(u, "reserved_usd"),
               kc = total ? cap : num(keys[i], "daily_usd_cap");
        char a[64], b[64], d[64], pct[32], nk[32];
        snprintf(pct, sizeof pct, "%.0f%%", kc > 0 ? 100.0 * (s + r) / kc : 0.0);
        snprintf(nk, sizeof nk, "%zu key%s", n, n == 1 ? "" : "s");
        const char *row[] = {total ? "TOTAL" : str(keys[i], "id"),
                             total ? nk : str(keys[i], "label"),
                             total ? "" : str(keys[i], "vendor"),
                             total ? "" : str(keys[i], "status"),
                             cli_usd(s, a, sizeof a),
                             cli_usd(r, b, sizeof b),
                             cli_usd(kc, d, sizeof d),
                             pct};
        cli_table_row(&t, row);
    }
    cli_table_print(&t, stdout);
    cli_table_cleanup(&t);
out:
    for (i = 0; i < n; i++)
        json_decref(keys[i]);
    free(keys);
    json_decref(res);
    cli_ctx_cleanup(&c);
    return rc;
}
