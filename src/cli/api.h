/*
 * api.h - the commands that talk to a running daemon's admin API:
 * `keybrake keys ...`, `keybrake budgets ...`, `keybrake tenants ...`,
 * `keybrake admin-tokens ...`, `keybrake usage`, `keybrake audit tail`. Each
 * takes its argv with argv[0] the command's own name ("keys", "usage",
 * "tail"), prints a table (or --json) on stdout and errors on stderr, and
 * returns the process exit status (enum cli_exit in cli/client.h). Main
 * thread only.
 */
#ifndef KB_CLI_API_H
#define KB_CLI_API_H
#include <stdio.h>

/* keys create|list|show|revoke|revoke-prefix */
int cli_keys(int argc, char **argv);

/* budgets list|show|create|delete */
int cli_budgets(int argc, char **argv);

/* tenants list|show|create|delete */
int cli_tenants(int argc, char **argv);

/* admin-tokens list|create|revoke */
int cli_admin_tokens(int argc, char **argv);

/* usage [--label-prefix P] [--vendor V] [--status S] [--limit N] */
int cli_usage(int argc, char **argv);

/* audit tail [-n N] [--key ID] [--label-prefix P] [--vendor V]
 * [--decision D] [-f|--follow] [--interval SECONDS]; argv[0] is "tail" */
int cli_audit_tail(int argc, char **argv);

/* The help text of `keybrake audit`, verify and export included. */
void cli_audit_help(FILE *f);

#endif
