/*
 * client.c - the admin API commands' shared part (see client.h): where
 * the daemon is, which token to send, one call and its exit code, tables.
 * The admin token is read, sent and wiped; it is never printed, not even
 * in an error message about the file that held it.
 */
#include "cli/client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/http_client.h"
#include "core/alloc.h"
#include "core/err.h"

#define CONNECT_MS 5000 /* a local daemon accepts at once; a wrong host should not hang */
#define IO_MS 30000     /* each wait for the daemon's answer */
#define MAX_TOKEN 512   /* bytes of an admin token, from any source */

int cli_common_opt(struct cli_ctx *c, int argc, char **argv, int *i)
{
    const char *o = argv[*i];
    if (strcmp(o, "--json") == 0) {
        c->json = true;
        return 1;
    }
    const char **dest = strcmp(o, "--addr") == 0    ? &c->addr_opt
                        : strcmp(o, "--token") == 0 ? &c->token_opt
                                                    : NULL;
    if (!dest)
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "keybrake: %s needs a value\n", o);
        return -1;
    }
    *dest = argv[++*i];
    return 1;
}

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return true;
    return false;
}

/* "http://host:port[/]", "https://host:port[/]", "host:port" (plain
 * HTTP), "[v6]:port". */
static int parse_addr(struct cli_ctx *c, const char *addr, const char *from)
{
    const char *p = addr;
    c->tls = false;
    if (strncmp(p, "https://", 8) == 0) {
        c->tls = true;
        p += 8;
    } else if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strstr(p, "://")) {
        fprintf(stderr, "keybrake: %s must be an http:// or https:// address\n", from);
        return CLI_EXIT_USAGE;
    }
    size_t n = strcspn(p, "/?#");
    if (p[n] == '/' && p[n + 1] != '\0') {
        fprintf(stderr, "keybrake: %s must have no path (http://host:port)\n", from);
        return CLI_EXIT_USAGE;
    }
    const char *host = p, *port = NULL;
    size_t hlen;
    if (*p == '[') {
        const char *rb = memchr(p, ']', n);
        if (!rb)
            goto bad;
        host = p + 1;
        hlen = (size_t)(rb - host);
        if (rb[1] == ':')
            port = rb + 2;
        else if (rb + 1 != p + n)
            goto bad;
    } else {
        const char *colon = memchr(p, ':', n);
        hlen = colon ? (size_t)(colon - p) : n;
        if (colon)
            port = colon + 1;
    }
    size_t plen = port ? (size_t)(p + n - port) : 0;
    if (hlen == 0 || hlen >= sizeof c->host || (port && (plen == 0 || plen > 5)) ||
        (port && strspn(port, "0123456789") < plen))
        goto bad;
    memcpy(c->host, host, hlen);
    c->host[hlen] = '\0';
    if (port) {
        memcpy(c->port, port, plen);
        c->port[plen] = '\0';
        long v = strtol(c->port, NULL, 10);
        if (v < 1 || v > 65535)
            goto bad;
    } else {
        snprintf(c->port, sizeof c->port, "%s", c->tls ? "443" : "80");
    }
    /* a daemon listening on every address is reached on loopback */
    if (strcmp(c->host, "0.0.0.0") == 0)
        snprintf(c->host, sizeof c->host, "127.0.0.1");
    else if (strcmp(c->host, "::") == 0)
        snprintf(c->host, sizeof c->host, "::1");
    return CLI_EXIT_OK;
bad:
    fprintf(stderr, "keybrake: %s is not an address of the form http://host:port\n", from);
    return CLI_EXIT_USAGE;
}

/* A token is printable ASCII without blanks: it goes into a header line. */
static bool token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > MAX_TOKEN)
        return false;
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

/* The first line of <data_dir>/admin-token, or NULL. */
static char *token_from_file(char *path, size_t size)
{
    const char *dir = getenv("KEYBRAKE_DATA_DIR");
    snprintf(path, size, "%s/admin-token", dir && *dir ? dir : "./var");
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char line[MAX_TOKEN + 2];
    char *t = NULL;
    if (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        t = kb_strdup(line);
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
    return t;
}

int cli_ctx_ready(struct cli_ctx *c)
{
    const char *env = getenv("KEYBRAKE_ADDR");
    int rc;
    if (c->addr_opt)
        rc = parse_addr(c, c->addr_opt, "--addr");
    else if (env && *env)
        rc = parse_addr(c, env, "KEYBRAKE_ADDR");
    else if ((env = getenv("KEYBRAKE_ADMIN_LISTEN")) && *env)
        rc = parse_addr(c, env, "KEYBRAKE_ADMIN_LISTEN"); /* the daemon's own setting */
    else
        rc = parse_addr(c, CLI_DEFAULT_ADDR, "the default address");
    if (rc != CLI_EXIT_OK)
        return rc;

    const char *from = "--token";
    const char *t = c->token_opt;
    char path[4096] = "";
    if (!t && (t = getenv("KEYBRAKE_ADMIN_TOKEN")) && *t)
        from = "KEYBRAKE_ADMIN_TOKEN";
    if (t && *t) {
        c->token = kb_strdup(t);
    } else {
        c->token = token_from_file(path, sizeof path);
        from = path;
    }
    if (!c->token) {
        fprintf(stderr,
                "keybrake: no admin token: set KEYBRAKE_ADMIN_TOKEN or --token (%s is not "
                "readable)\n",
                path);
        return CLI_EXIT_USAGE;
    }
    if (!token_ok(c->token)) {
        fprintf(stderr, "keybrake: the admin token from %s is not a token (printable, no blanks)\n",
                from);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

void cli_ctx_cleanup(struct cli_ctx *c)
{
    if (c->token) {
        explicit_bzero(c->token, strlen(c->token));
        free(c->token);
        c->token = NULL;
    }
}

int cli_api(struct cli_ctx *c, const char *method, const char *path, const char *body, json_t **out)
{
    struct cli_http_resp r = {0};
    char *em = NULL;
    int rc = CLI_EXIT_OK;
    json_t *j = NULL;
    *out = NULL;
    const char *ca = getenv("KEYBRAKE_CA_FILE");
    struct cli_http_target to = {c->host, c->port, c->tls, ca && *ca ? ca : NULL};
    enum kb_err err =
        cli_http_request(&to, c->token, method, path, body, CONNECT_MS, IO_MS, &r, &em);
    if (err == KB_E_CLIENT_CLOSED) {
        rc = -1;
        goto out;
    }
    if (err != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", em ? em : kb_errmsg(err));
        rc = err == KB_E_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_UNAVAILABLE; /* a bad CA file */
        goto out;
    }
    if (r.body.len > 0) {
        json_error_t je;
        j = json_loadb(r.body.data, r.body.len, 0, &je);
    }
    if (r.status >= 200 && r.status < 300) {
        if (r.body.len > 0 && !j) {
            fprintf(stderr, "keybrake: the daemon's answer (HTTP %d) is not JSON\n", r.status);
            rc = CLI_EXIT_UNAVAILABLE;
            goto out;
        }
        *out = j;
        j = NULL;
        goto out;
    }
    const char *msg = json_string_value(json_object_get(j, "message"));
    const char *code = json_string_value(json_object_get(j, "code"));
    if (msg && code)
        fprintf(stderr, "keybrake: %s (%s)\n", msg, code);
    else
        fprintf(stderr, "keybrake: the daemon answered HTTP %d\n", r.status);
    rc = r.status >= 400 && r.status < 500 ? CLI_EXIT_REFUSED : CLI_EXIT_UNAVAILABLE;
out:
    json_decref(j);
    buf_cleanup(&r.body);
    free(em);
    return rc;
}

void cli_query_add(struct kb_buf *b, const char *name, const char *value)
{
    if (!value)
        return;
    buf_printf(b, "%c%s=", strchr(b->data ? b->data : "", '?') ? '&' : '?', name);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p))
            buf_putc(b, (char)*p);
        else
            buf_printf(b, "%%%02X", *p);
    }
}

int cli_fetch_list(struct cli_ctx *c, const char *base, long limit, long page_max, const char *what,
                   json_t **out)
{
    json_t *all = json_array(), *next = json_null();
    int rc = CLI_EXIT_OK;
    while ((long)json_array_size(all) < limit) {
        long want = limit - (long)json_array_size(all);
        char lim[24];
        snprintf(lim, sizeof lim, "%ld", want > page_max ? page_max : want);
        struct kb_buf p = KB_BUF_INIT;
        buf_puts(&p, base);
        cli_query_add(&p, "limit", lim);
        cli_query_add(&p, "cursor", json_string_value(next));
        json_t *page = NULL;
        rc = cli_api(c, "GET", p.data, NULL, &page);
        buf_cleanup(&p);
        if (rc != CLI_EXIT_OK)
            break;
        json_t *data = json_object_get(page, "data");
        if (!json_is_array(data)) {
            fprintf(stderr, "keybrake: the daemon's %s list has no data array\n", what);
            json_decref(page);
            rc = CLI_EXIT_UNAVAILABLE;
            break;
        }
        json_array_extend(all, data);
        json_decref(next);
        next = json_incref(json_object_get(page, "next_cursor"));
        json_decref(page);
        if (!json_is_string(next) || json_array_size(data) == 0)
            break;
    }
    if (rc != CLI_EXIT_OK) {
        json_decref(all);
        json_decref(next);
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    }
    *out = json_pack("{s:o, s:o}", "data", all, "next_cursor", next ? next : json_null());
    return CLI_EXIT_OK;
}

char *cli_path(const char *base, const char *id)
{
    struct kb_buf p = KB_BUF_INIT;
    cli_query_add(&p, "x", id); /* "?x=<encoded>" */
    char *path = kb_asprintf("%s/%s", base, p.data + 3);
    buf_cleanup(&p);
    return path;
}

int cli_one_arg(struct cli_ctx *c, int argc, char **argv, const char *group, const char *what,
                const char **arg)
{
    *arg = NULL;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(c, argc, argv, &i);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k > 0)
            continue;
        if (argv[i][0] == '-' || *arg)
            return cli_usage_error("%s %s: unexpected argument %s", group, argv[0], argv[i]);
        *arg = argv[i];
    }
    if (!*arg || !**arg)
        return cli_usage_error("%s %s needs %s", group, argv[0], what);
    return cli_ctx_ready(c);
}

int cli_dispatch(const char *group, const char *help, const struct cli_cmd *cmds, size_t n,
                 int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(help, stdout);
        return CLI_EXIT_OK;
    }
    if (argc < 2) {
        fputs(help, stderr);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) {
            struct cli_ctx c = {0};
            int rc = cmds[i].run(&c, argc - 1, argv + 1);
            cli_ctx_cleanup(&c);
            return rc;
        }
    return cli_usage_error("%s: unknown command %s", group, argv[1]);
}

int cli_answer(struct cli_ctx *c, int rc, json_t *res, void (*print)(json_t *res))
{
    if (rc == CLI_EXIT_OK) {
        if (c->json)
            cli_print_json(res);
        else
            print(res);
    }
    json_decref(res);
    return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
}

int cli_delete(struct cli_ctx *c, int argc, char **argv, const char *group, const char *what,
               const char *base, const char *id_field, const char *done, const char *noun)
{
    const char *id;
    int rc = cli_one_arg(c, argc, argv, group, what, &id);
    if (rc != CLI_EXIT_OK)
        return rc;
    char *path = cli_path(base, id);
    json_t *res = NULL;
    rc = cli_api(c, "DELETE", path, NULL, &res);
    free(path);
    json_decref(res); /* 204: nothing */
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_UNAVAILABLE : rc;
    if (c->json) {
        json_t *o = json_pack("{s:s, s:b}", id_field, id, done, 1);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("%s %s %s\n", done, noun, id);
    }
    return CLI_EXIT_OK;
}

const char *cli_text(json_t *v, char *tmp, size_t size)
{
    if (!v || json_is_null(v))
        return "-";
    if (json_is_string(v))
        return json_string_value(v);
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(tmp, size, "%s", s ? s : "?");
    free(s);
    return tmp;
}

const char *cli_usd(double v, char *tmp, size_t size)
{
    /* six decimals (the store's micro-dollars), trailing zeros dropped down to cents */
    int n = snprintf(tmp, size, "$%.6f", v);
    if (n <= 0 || (size_t)n >= size)
        return "$?";
    char *dot = strchr(tmp, '.');
    char *end = tmp + n - 1;
    while (dot && end > dot + 2 && *end == '0')
        *end-- = '\0';
    return tmp;
}

void cli_table_init(struct cli_table *t, size_t ncols)
{
    t->ncols = ncols;
    t->nrows = 0;
    t->cells = NULL;
}

void cli_table_row(struct cli_table *t, const char *const *cells)
{
    t->cells = kb_realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof *t->cells);
    for (size_t i = 0; i < t->ncols; i++)
        t->cells[t->nrows * t->ncols + i] = kb_strdup(cells[i] ? cells[i] : "-");
    t->nrows++;
}

/* Display width: UTF-8 characters (continuation bytes do not count). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

void cli_table_print(const struct cli_table *t, FILE *f)
{
    size_t *w = kb_calloc(t->ncols ? t->ncols : 1, sizeof *w);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++) {
            size_t x = width(t->cells[r * t->ncols + i]);
            if (x > w[i])
                w[i] = x;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            fputs(s, f);
            if (i + 1 < t->ncols)
                fprintf(f, "%*s", (int)(w[i] - width(s) + 2), "");
        }
        fputc('\n', f);
    }
    free(w);
}

void cli_table_cleanup(struct cli_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = 0;
}

void cli_print_json(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s)
        puts(s);
    free(s);
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("keybrake: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

/* The value of option argv[*i], or NULL when missing (printed). */
const char *cli_opt_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "keybrake: %s needs a value (see --help)\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

bool cli_parse_limit(const char *v, long max, long *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 1 || n > max || strspn(v, "0123456789") != strlen(v))
        return false;
    *out = n;
    return true;
}

bool cli_amount_ok(const char *v)
{
    size_t n = strlen(v), d = strspn(v, "0123456789");
    if (d == 0 || n > 24)
        return false;
    if (v[d] == '\0')
        return true;
    return v[d] == '.' && v[d + 1] && strspn(v + d + 1, "0123456789") == n - d - 1;
}
