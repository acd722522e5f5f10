/*
 * budgets.c - `keybrake budgets list|show|create|delete`: the budgets
 * resource of the admin API (src/admin/budgets.c, docs/budgets.md) for
 * people (tables) and scripts (--json, the API's own JSON). The cap goes
 * to the API as the text the user typed, never through a double.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/api.h"
#include "cli/client.h"
#include "core/alloc.h"

#define MAX_LIST 10000 /* budgets list: most budgets fetched by one command */
#define PAGE_MAX 200   /* the API's largest page */

static const char *const budgets_help =
    "usage: keybrake budgets list [--limit N]\n"
    "       keybrake budgets show NAME\n"
    "       keybrake budgets create NAME --cap USD --window day|month|total [--parent NAME]\n"
    "       keybrake budgets delete NAME\n"
    "\n"
    "  list    budgets in creation order with their spend in the current window;\n"
    "          --limit is the most shown (default 50, pages followed up to it)\n"
    "  show    one budget: cap, window, parent, keys naming it, and its usage\n"
    "  create  a USD cap shared by every key that names the budget, per UTC day,\n"
    "          UTC month or in total (--cap 100 or 0.50); --parent chains it under\n"
    "          another budget (docs/budgets.md)\n"
    "  delete  delete a budget no unrevoked key and no budget names (else exit 1,\n"
    "          budget_in_use)\n" CLI_HELP_COMMON;

static double num(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

/* "$12.50 + $1.00 of $100.00 (13%)" for a budget's usage. */
static const char *usage_text(json_t *b, char *out, size_t size)
{
    json_t *u = json_object_get(b, "usage");
    if (!json_is_object(u))
        return "-";
    double cap = num(b, "usd_cap"), spent = num(u, "spent_usd"), res = num(u, "reserved_usd");
    char a[64], r[64], c[64];
    snprintf(out, size, "%s spent + %s reserved of %s (%.0f%%)", cli_usd(spent, a, sizeof a),
             cli_usd(res, r, sizeof r), cli_usd(cap, c, sizeof c),
             cap > 0 ? 100.0 * (spent + res) / cap : 0.0);
    return out;
}

static int list(struct cli_ctx *c, int argc, char **argv)
{
    long limit = 50;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k > 0)
            continue;
        if (strcmp(argv[i], "--limit") != 0)
            return cli_usage_error("budgets list: unknown argument %s", argv[i]);
        const char *v = cli_opt_value(argc, argv, &i);
        if (!v)
            return CLI_EXIT_USAGE;
        if (!cli_parse_limit(v, MAX_LIST, &limit))
            return cli_usage_error("--limit must be an integer from 1 to %d", MAX_LIST);
    }
    int rc = cli_ctx_ready(c);
    if (rc != CLI_EXIT_OK)
        return rc;
    json_t *res = NULL;
    if ((rc = cli_fetch_list(c, "/v1/budgets", limit, PAGE_MAX, "budget", &res)) != CLI_EXIT_OK)
        return rc;
    if (c->json) {
        cli_print_json(res);
        json_decref(res);
        return CLI_EXIT_OK;
    }
    json_t *all = json_object_get(res, "data"), *next = json_object_get(res, "next_cursor");
    struct cli_table t;
    cli_table_init(&t, 6);
    const char *head[] = {"NAME", "WINDOW", "CAP", "PARENT", "KEYS", "USAGE"};
    cli_table_row(&t, head);
    size_t i;
    json_t *b;
    json_array_foreach(all, i, b)
    {
        char cap[64], keys[32], use[256];
        const char *row[] = {str(b, "name"),
                             str(b, "window"),
                             cli_usd(num(b, "usd_cap"), cap, sizeof cap),
                             str(b, "parent"),
                             cli_text(json_object_get(b, "keys"), keys, sizeof keys),
                             usage_text(b, use, sizeof use)};
        cli_table_row(&t, row);
    }
    cli_table_print(&t, stdout);
    if (json_is_string(next))
        fprintf(stderr, "keybrake: more budgets than --limit %ld\n", limit);
    cli_table_cleanup(&t);
    json_decref(res);
    return CLI_EXIT_OK;
}

/* A budget as a two-column table. */
static void print_budget(json_t *b)
{
    json_t *u = json_object_get(b, "usage");
    char cap[64], rem[64], keys[32], reqs[32], use[256];
    struct cli_table t;
    cli_table_init(&t, 2);
    const char *rows[][2] = {
        {"name", str(b, "name")},
        {"cap", cli_usd(num(b, "usd_cap"), cap, sizeof cap)},
        {"window", str(b, "window")},
        {"parent", str(b, "parent")},
        {"keys", cli_text(json_object_get(b, "keys"), keys, sizeof keys)},
        {"created", str(b, "created_at")},
        {"updated", str(b, "updated_at")},
        {"period", str(u, "period")},
        {"usage", usage_text(b, use, sizeof use)},
        {"remaining", json_is_object(u) ? cli_usd(num(u, "remaining_usd"), rem, sizeof rem) : "-"},
        {"requests", cli_text(json_object_get(u, "requests"), reqs, sizeof reqs)},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        cli_table_row(&t, rows[i]);
    cli_table_print(&t, stdout);
    cli_table_cleanup(&t);
}

static int show(struct cli_ctx *c, int argc, char **argv)
{
    const char *name;
    int rc = cli_one_arg(c, argc, argv, "budgets", "a budget name", &name);
    if (rc != CLI_EXIT_OK)
        return rc;
    char *path = cli_path("/v1/budgets", name);
    json_t *b = NULL;
    rc = cli_api(c, "GET", path, NULL, &b);
    free(path);
    return cli_answer(c, rc, b, print_budget);
}

static int create(struct cli_ctx *c, int argc, char **argv)
{
    const char *name = NULL, *cap = NULL, *window = NULL, *parent = NULL;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k > 0)
            continue;
        const char *o = argv[i];
        const char **dest = strcmp(o, "--cap") == 0      ? &cap
                            : strcmp(o, "--window") == 0 ? &window
                            : strcmp(o, "--parent") == 0 ? &parent
                                                         : NULL;
        if (dest) {
            if (!(*dest = cli_opt_value(argc, argv, &i)))
                return CLI_EXIT_USAGE;
        } else if (o[0] != '-' && !name) {
            name = o;
        } else {
            return cli_usage_error("budgets create: unexpected argument %s", o);
        }
    }
    if (!name || !*name || !cap || !window)
        return cli_usage_error("budgets create needs NAME, --cap and --window%s", "");
    if (!cli_amount_ok(cap))
        return cli_usage_error("--cap must be a USD amount such as 100 or 0.50, not %s", cap);
    json_t *body = json_pack("{s:s, s:s}", "name", name, "window", window);
    if (body && parent && json_object_set_new(body, "parent", json_string(parent)) != 0) {
        json_decref(body);
        body = NULL;
    }
    if (!body)
        return cli_usage_error("the name, window and parent must be UTF-8 text%s", "");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct kb_buf b = KB_BUF_INIT;
    buf_printf(&b, "{\"usd_cap\":%s,%s", cap, text + 1); /* the cap as typed */
    free(text);
    json_t *res = NULL;
    int rc = cli_ctx_ready(c);
    if (rc == CLI_EXIT_OK)
        rc = cli_api(c, "POST", "/v1/budgets", b.data, &res);
    buf_cleanup(&b);
    return cli_answer(c, rc, res, print_budget);
}

static int delete (struct cli_ctx *c, int argc, char **argv)
{
    return cli_delete(c, argc, argv, "budgets", "a budget name", "/v1/budgets", "name", "deleted",
                      "budget");
}

int cli_budgets(int argc, char **argv)
{
    static const struct cli_cmd cmds[] = {
        {"list", list}, {"show", show}, {"create", create}, {"delete", delete}};
    return cli_dispatch("budgets", budgets_help, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
}
