/*
 * tenants.c - `keybrake tenants list|show|create|delete`: the tenants
 * resource of the admin API (src/admin/tenants.c, docs/tenants.md) for
 * people (tables) and scripts (--json, the API's own JSON). Creating and
 * deleting are root's; a tenant's own token lists and shows its tenant
 * alone, and every other tenant answers 404 (exit 1) as an unknown id.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/api.h"
#include "cli/client.h"
#include "core/alloc.h"

static const char *const tenants_help =
    "usage: keybrake tenants list\n"
    "       keybrake tenants show ID\n"
    "       keybrake tenants create NAME\n"
    "       keybrake tenants delete ID\n"
    "\n"
    "  list    live tenants in creation order (a tenant's own token: that tenant)\n"
    "  show    one tenant (tn_...)\n"
    "  create  a tenant named NAME, unique among live tenants (root token only);\n"
    "          prints its id: give it to `keybrake admin-tokens create --tenant`\n"
    "  delete  delete a tenant that owns no active key (else exit 1, tenant_in_use:\n"
    "          revoke its keys first); its admin tokens are revoked and its vendor\n"
    "          secrets erased with it (root token only; docs/tenants.md)\n" CLI_HELP_COMMON;

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

/* Only the common options. */
static int no_args(struct cli_ctx *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k == 0)
            return cli_usage_error("tenants %s: unexpected argument %s", argv[0], argv[i]);
    }
    return cli_ctx_ready(c);
}

static void print_tenant(json_t *t)
{
    struct cli_table tab;
    cli_table_init(&tab, 2);
    const char *rows[][2] = {
        {"id", str(t, "id")},
        {"name", str(t, "name")},
        {"created", str(t, "created_at")},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        cli_table_row(&tab, rows[i]);
    cli_table_print(&tab, stdout);
    cli_table_cleanup(&tab);
}

static int list(struct cli_ctx *c, int argc, char **argv)
{
    int rc = no_args(c, argc, argv);
    if (rc != CLI_EXIT_OK)
        return rc;
    json_t *res = NULL;
    rc = cli_api(c, "GET", "/v1/tenants", NULL, &res); /* one page: every live tenant */
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    json_t *data = json_object_get(res, "data");
    if (!json_is_array(data)) {
        fprintf(stderr, "keybrake: the daemon's tenant list has no data array\n");
        json_decref(res);
        return CLI_EXIT_UNAVAILABLE;
    }
    if (c->json) {
        cli_print_json(res);
        json_decref(res);
        return CLI_EXIT_OK;
    }
    struct cli_table t;
    cli_table_init(&t, 3);
    const char *head[] = {"ID", "NAME", "CREATED"};
    cli_table_row(&t, head);
    size_t i;
    json_t *v;
    json_array_foreach(data, i, v)
    {
        const char *row[] = {str(v, "id"), str(v, "name"), str(v, "created_at")};
        cli_table_row(&t, row);
    }
    cli_table_print(&t, stdout);
    cli_table_cleanup(&t);
    json_decref(res);
    return CLI_EXIT_OK;
}

static int show(struct cli_ctx *c, int argc, char **argv)
{
    const char *id;
    int rc = cli_one_arg(c, argc, argv, "tenants", "a tenant id (tn_...)", &id);
    if (rc != CLI_EXIT_OK)
        return rc;
    char *path = cli_path("/v1/tenants", id);
    json_t *t = NULL;
    rc = cli_api(c, "GET", path, NULL, &t);
    free(path);
    return cli_answer(c, rc, t, print_tenant);
}

static int create(struct cli_ctx *c, int argc, char **argv)
{
    const char *name;
    int rc = cli_one_arg(c, argc, argv, "tenants", "a name", &name);
    if (rc != CLI_EXIT_OK)
        return rc;
    json_t *body = json_pack("{s:s}", "name", name), *res = NULL;
    if (!body)
        return cli_usage_error("the name must be UTF-8 text%s", "");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    rc = cli_api(c, "POST", "/v1/tenants", text, &res);
    free(text);
    return cli_answer(c, rc, res, print_tenant);
}

static int delete (struct cli_ctx *c, int argc, char **argv)
{
    return cli_delete(c, argc, argv, "tenants", "a tenant id (tn_...)", "/v1/tenants", "id",
                      "deleted", "tenant");
}

int cli_tenants(int argc, char **argv)
{
    static const struct cli_cmd cmds[] = {
        {"list", list}, {"show", show}, {"create", create}, {"delete", delete}};
    return cli_dispatch("tenants", tenants_help, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
}
