/*
 * audit_tail.c - `keybrake audit tail`: the newest audit entries from a
 * running daemon's GET /v1/audit (src/admin/audit.c), oldest first, and
 * with -f new ones as they are recorded. The API pages newest first by
 * seq; following polls it (a bounded interval) and prints what lies above
 * the last seq printed. An entry whose completion (status, settled cost)
 * is not merged yet is held back for a few polls, so that a line carries
 * its outcome; entries after it wait with it, keeping seq order.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/api.h"
#include "cli/client.h"
#include "core/alloc.h"

#define MAX_LINES 10000     /* -n */
#define PAGE_MAX 200        /* the API's largest page */
#define MAX_POLL_PAGES 50   /* pages one poll reads before it prints what it has */
#define HOLD_POLLS 30       /* polls an incomplete entry is held back */
#define MIN_INTERVAL_MS 100 /* --interval bounds */
#define MAX_INTERVAL_MS 60000

static const char *const tail_help =
    "usage: keybrake audit tail [-n N] [--key ID] [--label-prefix P] [--vendor V]\n"
    "                           [--decision allowed|refused|ok] [-f|--follow]\n"
    "                           [--interval SECONDS]\n"
    "\n"
    "The last N audit entries (default 20) from the running daemon, oldest first.\n"
    "-f keeps printing new entries, polling every --interval seconds (default 1,\n"
    "0.1-60), until Ctrl-C (exit 0). --json prints one JSON object a line.\n" CLI_HELP_COMMON;

void cli_audit_help(FILE *f)
{
    fputs("usage: keybrake audit verify [--anchor FILE] [--config FILE]\n"
          "       keybrake audit export [--since TIME] [--until TIME] [--config FILE]\n"
          "       keybrake audit tail [-n N] [--key ID] [--label-prefix P] [--decision D] [-f]\n"
          "\n"
          "  verify  check the hash chain of the store's audit log (offline: reads the\n"
          "          store file; exit 0 intact, 1 damaged, 2 could not check)\n"
          "  export  the log as JSON lines (offline); TIME: RFC 3339 or epoch seconds\n"
          "  tail    the newest entries from the running daemon's admin API\n"
          "          (`keybrake audit tail --help` for its options)\n",
          f);
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

struct tail {
    struct cli_ctx c;
    const char *key, *label_prefix, *vendor, *decision;
    long n;
    bool follow;
    long interval_ms;
    int64_t last;     /* highest seq printed (or skipped by -n) */
    int64_t held_seq; /* the incomplete entry being held back */
    int held_polls;
};

/* One page of GET /v1/audit, newest first. -1: interrupted. */
static int fetch_page(struct tail *t, long limit, const char *cursor, json_t **out)
{
    char lim[24];
    snprintf(lim, sizeof lim, "%ld", limit);
    struct kb_buf p = KB_BUF_INIT;
    buf_puts(&p, "/v1/audit");
    cli_query_add(&p, "key_id", t->key);
    cli_query_add(&p, "label_prefix", t->label_prefix);
    cli_query_add(&p, "vendor", t->vendor);
    cli_query_add(&p, "decision", t->decision);
    cli_query_add(&p, "limit", lim);
    cli_query_add(&p, "cursor", cursor);
    int rc = cli_api(&t->c, "GET", p.data, NULL, out);
    buf_cleanup(&p);
    if (rc == CLI_EXIT_OK && !json_is_array(json_object_get(*out, "data"))) {
        fprintf(stderr, "keybrake: the daemon's audit page has no data array\n");
        json_decref(*out);
        *out = NULL;
        rc = CLI_EXIT_UNAVAILABLE;
    }
    return rc;
}

/* Entries newer than t->last, newest first, at most max of them. */
static int fetch_new(struct tail *t, long max, json_t **out)
{
    json_t *all = json_array();
    char cursor[32] = "";
    int rc = CLI_EXIT_OK;
    for (int pages = 0; pages < MAX_POLL_PAGES && (long)json_array_size(all) < max; pages++) {
        long want = max - (long)json_array_size(all);
        json_t *page = NULL;
        rc = fetch_page(t, want > PAGE_MAX ? PAGE_MAX : want, *cursor ? cursor : NULL, &page);
        if (rc != CLI_EXIT_OK)
            break;
        size_t i;
        json_t *e;
        bool older = false;
        json_array_foreach(json_object_get(page, "data"), i, e)
        {
            if (json_integer_value(json_object_get(e, "seq")) <= t->last) {
                older = true;
                break;
            }
            json_array_append(all, e);
        }
        const char *next = json_string_value(json_object_get(page, "next_cursor"));
        snprintf(cursor, sizeof cursor, "%s", next ? next : "");
        json_decref(page);
        if (older || !*cursor)
            break;
    }
    if (rc != CLI_EXIT_OK) {
        json_decref(all);
        return rc;
    }
    *out = all;
    return CLI_EXIT_OK;
}

static const char *field(json_t *e, const char *k)
{
    const char *s = json_string_value(json_object_get(e, k));
    return s ? s : "-";
}

static void print_header(void)
{
    printf("%-24s  %-8s  %-6s  %-22s  %-28s  %-10s  %s\n", "TIME", "DECISION", "STATUS", "CODE",
           "KEY", "COST", "REQUEST");
}

static void print_entry(const struct tail *t, json_t *e)
{
    if (t->c.json) {
        cli_print_json(e);
        return;
    }
    char st[16] = "-", cost[64] = "-", what[512];
    json_t *s = json_object_get(e, "status");
    if (json_is_integer(s))
        snprintf(st, sizeof st, "%lld", (long long)json_integer_value(s));
    json_t *settled = json_object_get(e, "settled_usd");
    json_t *reserved = json_object_get(e, "reserved_usd");
    bool admin = strcmp(field(e, "kind"), "admin") == 0; /* admin actions cost nothing */
    if (!admin && json_is_number(settled))
        cli_usd(json_number_value(settled), cost, sizeof cost);
    else if (!admin && json_is_number(reserved) && json_number_value(reserved) > 0)
        cli_usd(json_number_value(reserved), cost, sizeof cost); /* not settled yet */
    if (json_is_string(json_object_get(e, "method")))
        snprintf(what, sizeof what, "%s %s", field(e, "method"), field(e, "path"));
    else
        snprintf(what, sizeof what, "%s%s%s", field(e, "action"),
                 json_is_string(json_object_get(e, "label")) ? " " : "",
                 json_is_string(json_object_get(e, "label")) ? field(e, "label") : "");
    printf("%-24s  %-8s  %-6s  %-22s  %-28s  %-10s  %s\n", field(e, "ts"), field(e, "decision"), st,
           field(e, "code"), field(e, "key_id"), cost, what);
}

/* Prints newest-first entries oldest first, holding back an incomplete one
 * when following. */
static void print_new(struct tail *t, json_t *entries, bool hold)
{
    for (size_t i = json_array_size(entries); i-- > 0;) {
        json_t *e = json_array_get(entries, i);
        int64_t seq = json_integer_value(json_object_get(e, "seq"));
        if (hold && json_is_false(json_object_get(e, "completed"))) {
            if (t->held_seq != seq) {
                t->held_seq = seq;
                t->held_polls = 0;
            }
            if (++t->held_polls <= HOLD_POLLS)
                break;
        }
        print_entry(t, e);
        t->last = seq;
    }
    fflush(stdout);
}

/* Sleeps ms unless interrupted. */
static void nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    if (!interrupted)
        nanosleep(&ts, NULL); /* EINTR on Ctrl-C: the caller checks `interrupted` */
}

static int parse_args(struct tail *t, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        int k = cli_common_opt(&t->c, argc, argv, &i);
        if (k < 0)
            return CLI_EXIT_USAGE;
        if (k > 0)
            continue;
        const char *o = argv[i];
        if (strcmp(o, "-f") == 0 || strcmp(o, "--follow") == 0) {
            t->follow = true;
            continue;
        }
        const char **dest = strcmp(o, "--key") == 0            ? &t->key
                            : strcmp(o, "--label-prefix") == 0 ? &t->label_prefix
                            : strcmp(o, "--vendor") == 0       ? &t->vendor
                            : strcmp(o, "--decision") == 0     ? &t->decision
                                                               : NULL;
        bool is_n = strcmp(o, "-n") == 0 || strcmp(o, "--lines") == 0;
        bool is_iv = strcmp(o, "--interval") == 0;
        if (!dest && !is_n && !is_iv) {
            fprintf(stderr, "keybrake: audit tail: unknown argument %s (see --help)\n", o);
            return CLI_EXIT_USAGE;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "keybrake: %s needs a value (see --help)\n", o);
            return CLI_EXIT_USAGE;
        }
        const char *v = argv[++i];
        char *end;
        if (dest) {
            *dest = v;
        } else if (is_n) {
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0 || n > MAX_LINES || strspn(v, "0123456789") != strlen(v)) {
                fprintf(stderr, "keybrake: -n must be an integer from 0 to %d\n", MAX_LINES);
                return CLI_EXIT_USAGE;
            }
            t->n = n;
        } else {
            double s = strtod(v, &end);
            if (!*v || *end || !(s * 1000 >= MIN_INTERVAL_MS && s * 1000 <= MAX_INTERVAL_MS)) {
                fprintf(stderr, "keybrake: --interval must be 0.1 to 60 seconds\n");
                return CLI_EXIT_USAGE;
            }
            t->interval_ms = (long)(s * 1000);
        }
    }
    if (t->decision && strcmp(t->decision, "allowed") != 0 && strcmp(t->decision, "refused") != 0 &&
        strcmp(t->decision, "ok") != 0) {
        fprintf(stderr, "keybrake: --decision must be allowed, refused or ok\n");
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

int cli_audit_tail(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(tail_help, stdout);
        return CLI_EXIT_OK;
    }
    struct tail t = {.n = 20, .interval_ms = 1000};
    json_t *entries = NULL;
    int rc = parse_args(&t, argc, argv);
    if (rc != CLI_EXIT_OK || (rc = cli_ctx_ready(&t.c)) != CLI_EXIT_OK)
        goto out;
    if (t.follow) {
        /* Ctrl-C ends the wait it interrupts (no SA_RESTART), and the command, with 0 */
        struct sigaction sa = {0};
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
    }
    /* the first page: the newest n (one, to learn where to follow from, for -n 0) */
    if ((rc = fetch_new(&t, t.n > 0 ? t.n : 1, &entries)) != CLI_EXIT_OK)
        goto out;
    if (!t.c.json)
        print_header();
    if (t.n == 0) {
        if (json_array_size(entries))
            t.last = json_integer_value(json_object_get(json_array_get(entries, 0), "seq"));
    } else {
        print_new(&t, entries, false);
    }
    while (t.follow && !interrupted) {
        json_decref(entries);
        entries = NULL;
        nap(t.interval_ms);
        if (interrupted)
            break;
        if ((rc = fetch_new(&t, MAX_POLL_PAGES * PAGE_MAX, &entries)) != CLI_EXIT_OK)
            break;
        print_new(&t, entries, true);
    }
out:
    if (interrupted && (rc == -1 || rc == CLI_EXIT_OK))
        rc = CLI_EXIT_OK; /* Ctrl-C is how -f ends */
    else if (rc < 0)
        rc = CLI_EXIT_UNAVAILABLE;
    json_decref(entries);
    cli_ctx_cleanup(&t.c);
    return rc;
}
