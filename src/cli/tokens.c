/*
 * tokens.c - `keybrake admin-tokens list|create|revoke`: the admin tokens
 * resource of the admin API (src/admin/tokens.c, docs/tenants.md). A new
 * token is printed once, in the answer that made it, and never again: the
 * daemon keeps only its HMAC. Root makes root tokens and any tenant's;
 * a tenant's token makes, lists and revokes its own tenant's only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/api.h"
#include "cli/client.h"
#include "core/alloc.h"

static const char *const tokens_help =
    "usage: keybrake admin-tokens list [--tenant ID]\n"
    "       keybrake admin-tokens create --label L [--tenant ID]\n"
    "       keybrake admin-tokens revoke ID\n"
    "\n"
    "  list    admin tokens (at_...), revoked ones included; --tenant shows one\n"
    "          tenant's (a tenant's own token: always its tenant's)\n"
    "  create  a new admin token, printed once, never again; --tenant scopes it to\n"
    "          one tenant (tn_...), which then sees only that tenant's keys, budgets,\n"
    "          tokens and audit; without --tenant a root token (root token only)\n"
    "  revoke  revoke a token by its id: refused from its next request on (revoking\n"
    "          the token you use works, and is its last request)\n" CLI_HELP_COMMON;

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

/* "root" for a token without a tenant. */
static const char *tenant_text(json_t *o)
{
    const char *s = json_string_value(json_object_get(o, "tenant"));
    return s ? s : "root";
}

static int list(struct cli_ctx *c, int argc, char **argv)
{
    const char *tenant = NULL;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k > 0)
            continue;
        if (strcmp(argv[i], "--tenant") != 0)
            return cli_usage_error("admin-tokens list: unknown argument %s", argv[i]);
        if (!(tenant = cli_opt_value(argc, argv, &i)))
            return CLI_EXIT_USAGE;
    }
    int rc = cli_ctx_ready(c);
    if (rc != CLI_EXIT_OK)
        return rc;
    struct kb_buf p = KB_BUF_INIT;
    buf_puts(&p, "/v1/admin-tokens");
    cli_query_add(&p, "tenant", tenant);
    json_t *res = NULL;
    rc = cli_api(c, "GET", p.data, NULL, &res); /* one page: every token */
    buf_cleanup(&p);
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    json_t *data = json_object_get(res, "data");
    if (!json_is_array(data)) {
        fprintf(stderr, "keybrake: the daemon's admin token list has no data array\n");
        json_decref(res);
        return CLI_EXIT_UNAVAILABLE;
    }
    if (c->json) {
        cli_print_json(res);
        json_decref(res);
        return CLI_EXIT_OK;
    }
    struct cli_table t;
    cli_table_init(&t, 5);
    const char *head[] = {"ID", "LABEL", "TENANT", "CREATED", "REVOKED"};
    cli_table_row(&t, head);
    size_t i;
    json_t *v;
    json_array_foreach(data, i, v)
    {
        const char *row[] = {str(v, "id"), str(v, "label"), tenant_text(v), str(v, "created_at"),
                             str(v, "revoked_at")};
        cli_table_row(&t, row);
    }
    cli_table_print(&t, stdout);
    cli_table_cleanup(&t);
    json_decref(res);
    return CLI_EXIT_OK;
}

static int create(struct cli_ctx *c, int argc, char **argv)
{
    const char *label = NULL, *tenant = NULL;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k > 0)
            continue;
        const char *o = argv[i];
        const char **dest = strcmp(o, "--label") == 0    ? &label
                            : strcmp(o, "--tenant") == 0 ? &tenant
                                                         : NULL;
        if (!dest)
            return cli_usage_error("admin-tokens create: unexpected argument %s", o);
        if (!(*dest = cli_opt_value(argc, argv, &i)))
            return CLI_EXIT_USAGE;
    }
    if (!label || !*label)
        return cli_usage_error("admin-tokens create needs --label%s", "");
    if (tenant && !*tenant)
        return cli_usage_error("--tenant needs a tenant id (tn_...)%s", "");
    json_t *body = json_pack("{s:s}", "label", label), *res = NULL;
    if (body && tenant && json_object_set_new(body, "tenant", json_string(tenant)) != 0) {
        json_decref(body);
        body = NULL;
    }
    if (!body)
        return cli_usage_error("the label and tenant must be UTF-8 text%s", "");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    int rc = cli_ctx_ready(c);
    if (rc == CLI_EXIT_OK)
        rc = cli_api(c, "POST", "/v1/admin-tokens", text, &res);
    free(text);
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    if (c->json) {
        cli_print_json(res);
    } else {
        struct cli_table t;
        cli_table_init(&t, 2);
        /* one field a line, as the table prints them */
        /* clang-format off */
        const char *rows[][2] = {
            {"id", str(res, "id")},
            {"label", str(res, "label")},
            {"tenant", tenant_text(res)},
            {"created", str(res, "created_at")},
            {"token", str(res, "token")},
        };
        /* clang-format on */
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
            cli_table_row(&t, rows[i]);
        cli_table_print(&t, stdout);
        cli_table_cleanup(&t);
        fprintf(stderr, "keybrake: the token is shown only now; keep it\n");
    }
    json_decref(res);
    return CLI_EXIT_OK;
}

static int revoke(struct cli_ctx *c, int argc, char **argv)
{
    return cli_delete(c, argc, argv, "admin-tokens", "a token id (at_...)", "/v1/admin-tokens",
                      "id", "revoked", "admin token");
}

int cli_admin_tokens(int argc, char **argv)
{
    static const struct cli_cmd cmds[] = {{"list", list}, {"create", create}, {"revoke", revoke}};
    return cli_dispatch("admin-tokens", tokens_help, cmds, sizeof cmds / sizeof cmds[0], argc,
                        argv);
}
