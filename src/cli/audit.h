/*
 * audit.h - `keybrake audit verify|export`: offline checks and extraction
 * of the audit log (see docs/audit.md).
 */
#ifndef KB_CLI_AUDIT_H
#define KB_CLI_AUDIT_H

/*
 * Runs `keybrake audit ...`; argv[0] is "audit".
 *
 *   audit verify [--node ID] [--anchor FILE] [--archive DIR] [--config FILE]
 *       exit 0: "audit: N records, M checkpoints, chain intact"
 *       exit 1: the first bad seq and why (altered, inserted, removed,
 *               checkpoint, truncated); exit 2: usage, configuration or
 *               store errors, an unreadable or empty anchor.
 *       --anchor: a JSON-lines copy of the log (the sink file, a saved
 *       export); the store must still hold its last records with their
 *       hashes, else `truncated` or `altered`.
 *       --archive: the retention archive directory; its files must verify
 *       as one chain from record 1 up to at least the store's cut, with
 *       the hash the cut checkpoint seals (else the first bad record).
 *       On a shared store (one chain per node) every chain is verified,
 *       each reported under its node id ("audit: node b: ..."), with a
 *       total line; exit 1 when any fails. --node ID: that chain only;
 *       --anchor and --archive are one node's copy and need it when the
 *       store holds several chains. A SQLite store prints as it always did.
 *   audit export [--node ID] [--since TIME] [--until TIME] [--config FILE]
 *       one JSON object per line on stdout, in seq order; TIME is RFC 3339
 *       or epoch seconds, since inclusive, until exclusive. On a shared
 *       store every chain (or --node's), one after the other in node id
 *       order, each line with a "node" field.
 *
 * Safe while `keybrake serve` runs on the same store (WAL readers see one
 * committed snapshot). Main thread; returns the process exit status.
 */
int cli_audit(int argc, char **argv);

#endif
