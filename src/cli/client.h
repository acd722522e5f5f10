/*
 * client.h - what the admin API commands (`keybrake keys|usage|audit
 * tail`) share: the address and token (options, environment, the token
 * file), one call to the API with its errors turned into exit codes, and
 * aligned tables for people. Main thread only.
 */
#ifndef KB_CLI_CLIENT_H
#define KB_CLI_CLIENT_H
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/buf.h"

#ifndef KB_VERSION
#define KB_VERSION "0.1.0"
#endif

/* Exit codes of every CLI command that talks to the admin API. */
enum cli_exit {
    CLI_EXIT_OK = 0,          /* done */
    CLI_EXIT_REFUSED = 1,     /* the API refused (4xx): bad token, no such key, invalid field */
    CLI_EXIT_USAGE = 2,       /* bad arguments, no admin token, an unreadable CA file */
    CLI_EXIT_UNAVAILABLE = 3, /* cannot reach the daemon (its TLS certificate not trusted
                                 included), it timed out, or answered 5xx */
};

#define CLI_DEFAULT_ADDR "http://127.0.0.1:8421" /* the daemon's default admin_listen */

/* The text every API command's --help ends with. */
#define CLI_HELP_COMMON                                                                            \
    "\ncommon options:\n"                                                                          \
    "  --addr URL     admin API address, http:// or https:// (env KEYBRAKE_ADDR; default\n"        \
    "                 " CLI_DEFAULT_ADDR "); https:// verifies the daemon's certificate\n"         \
    "                 against env KEYBRAKE_CA_FILE (PEM), else the system store\n"                 \
    "  --token TOKEN  admin token (env KEYBRAKE_ADMIN_TOKEN; default: the token file\n"            \
    "                 <KEYBRAKE_DATA_DIR or ./var>/admin-token, when readable)\n"                  \
    "  --json         print the API's JSON instead of a table\n"                                   \
    "  -h, --help     this text\n"                                                                 \
    "\nexit codes: 0 ok, 1 the API refused (4xx), 2 usage error, 3 daemon unreachable or 5xx\n"

struct cli_ctx {
    const char *addr_opt;  /* borrowed: --addr, or NULL */
    const char *token_opt; /* borrowed: --token, or NULL */
    bool json;             /* --json */
    char host[256];        /* resolved by cli_ctx_ready */
    char port[8];
    bool tls;    /* https:// */
    char *token; /* owned; wiped and freed by cli_ctx_cleanup */
};

/* Reads a common option at argv[*i] (--addr URL, --token T, --json),
 * moving *i past its value. 1: consumed; 0: not a common option; -1: its
 * value is missing (printed). */
int cli_common_opt(struct cli_ctx *c, int argc, char **argv, int *i);

/* True when argv[1..] holds -h or --help. */
bool cli_wants_help(int argc, char **argv);

/* Fills host, port and token from the options, the environment and the
 * token file. CLI_EXIT_OK, or CLI_EXIT_USAGE with the reason printed. */
int cli_ctx_ready(struct cli_ctx *c);
void cli_ctx_cleanup(struct cli_ctx *c);

/*
 * One call to the admin API. body: JSON text or NULL. On CLI_EXIT_OK,
 * *out is the answer's JSON (NULL for an empty body; caller decrefs).
 * Otherwise the error is printed as "keybrake: <message> (<code>)" and the
 * exit code returned: CLI_EXIT_REFUSED for a 4xx, CLI_EXIT_UNAVAILABLE for
 * no connection, a timeout, a 5xx or an answer that is not JSON. A signal
 * that interrupts the call returns -1 with nothing printed.
 */
int cli_api(struct cli_ctx *c, const char *method, const char *path, const char *body,
            json_t **out);

/* Appends "?name=value" or "&name=value" to b, value percent-encoded;
 * nothing when value is NULL. */
void cli_query_add(struct kb_buf *b, const char *name, const char *value);

/*
 * GET `base` (a path, with its filters as a query string or none) page
 * after page (at most page_max each, the API's cursor followed) until
 * `limit` items or the end. On CLI_EXIT_OK *out is {"data": [...],
 * "next_cursor": ...}; `what` names the list in the message when the
 * daemon's answer has no data array.
 */
int cli_fetch_list(struct cli_ctx *c, const char *base, long limit, long page_max, const char *what,
                   json_t **out);

/* "<base>/<id>" with id percent-encoded (a resource's path); caller frees. */
char *cli_path(const char *base, const char *id);

/*
 * Reads exactly one positional argument (an id or a name, what says which)
 * and the common options of `keybrake <group> <argv[0]> ...`, then readies
 * the context. CLI_EXIT_USAGE with the reason printed otherwise.
 */
int cli_one_arg(struct cli_ctx *c, int argc, char **argv, const char *group, const char *what,
                const char **arg);

/* A subcommand of a command group (keys, budgets, tenants, ...). */
struct cli_cmd {
    const char *name;
    int (*run)(struct cli_ctx *c, int argc, char **argv);
};
/* Runs `keybrake <group> <cmd> ...`: help on -h/--help, usage without a
 * subcommand, the subcommand with a fresh context. */
int cli_dispatch(const char *group, const char *help, const struct cli_cmd *cmds, size_t n,
                 int argc, char **argv);

/*
 * `keybrake <group> <verb> <id>`: reads the one argument (cli_one_arg,
 * `what` describing it), DELETEs "<base>/<id>" and reports it:
 * {"<id_field>": id, "<done>": true} with --json, else "<done> <noun> <id>".
 */
int cli_delete(struct cli_ctx *c, int argc, char **argv, const char *group, const char *what,
               const char *base, const char *id_field, const char *done, const char *noun);

/* The end of a command that answers one object: rc as cli_api returned it
 * (mapped to an exit code), else the object printed as JSON with --json or
 * by print; res is released either way. */
int cli_answer(struct cli_ctx *c, int rc, json_t *res, void (*print)(json_t *res));

/* A JSON value as display text: strings as they are, null as "-",
 * numbers and the rest as JSON. Returns a pointer into tmp or the value. */
const char *cli_text(json_t *v, char *tmp, size_t size);
/* A USD amount for people: "$12.50", "$0.000125". */
const char *cli_usd(double v, char *tmp, size_t size);

/* An aligned table: columns as wide as their widest cell (in UTF-8
 * characters), two spaces apart, the last column unpadded. */
struct cli_table {
    size_t ncols;
    size_t nrows;
    char **cells; /* owned; nrows * ncols copies */
};

void cli_table_init(struct cli_table *t, size_t ncols);
/* Adds one row of ncols strings (copied; NULL prints as "-"). */
void cli_table_row(struct cli_table *t, const char *const *cells);
void cli_table_print(const struct cli_table *t, FILE *f);
void cli_table_cleanup(struct cli_table *t);

/* "keybrake: <message> (see --help)" on stderr; returns CLI_EXIT_USAGE. */
__attribute__((format(printf, 1, 2))) int cli_usage_error(const char *fmt, ...);
/* The value of option argv[*i], moving *i to it, or NULL when it is
 * missing (printed). */
const char *cli_opt_value(int argc, char **argv, int *i);
/* A --limit value: an integer from 1 to max. */
bool cli_parse_limit(const char *v, long max, long *out);
/* A USD amount as typed: digits, optionally '.' and digits (sent to the
 * API as typed, never through a double). */
bool cli_amount_ok(const char *v);

/* Prints a JSON value compactly on one line of stdout. */
void cli_print_json(json_t *v);

#endif
