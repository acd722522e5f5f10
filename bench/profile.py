#!/usr/bin/env python3
"""profile.py - where keybrake's CPU goes, from `perf script` output.

Reads the text of `perf script` on a `perf record --call-graph dwarf` of the
keybrake process (stdin or a file) and attributes every sample to one step
of the request path by its call chain: the highest-priority step found
anywhere in the chain wins, so time spent inside libc, the kernel or SQLite
is charged to the Keybrake function that asked for it (a malloc inside
json_loads inside compile_policy counts as "policy: JSON parse + compile").

  perf script -i perf.data | profile.py [--requests N --cpu-us US]

With --requests and --cpu-us (keybrake's CPU over the profiled run) it also
prints µs per request for each step. Output is Markdown.
"""
import argparse
import collections
import os
import re
import sys

# (step, symbols that identify it), in priority order: the first step with a
# symbol anywhere in the sample's call chain wins. Writer-thread steps come
# first (their jobs run under run_batch); the checkpoint inside a COMMIT
# outranks the job that happened to trigger it.
STEPS = [
    ("checkpointer thread: WAL copy back + fsync", {"ckpt_main"}),
    ("writer: WAL checkpoint inside COMMIT (fsync)",
     {"sqlite3WalDefaultHook", "sqlite3_wal_checkpoint_v2", "sqlite3WalCheckpoint"}),
    ("writer: audit record: INSERT", {"store_audit_insert", "store_audit_ckpt_insert"}),
    ("writer: audit record: read chain head (last row, last checkpoint, exists)",
     {"store_audit_last", "store_audit_last_ckpt", "store_audit_exists"}),
    ("writer: audit record: hash chain (SHA-256/HMAC)", {"rec_hash", "ckpt_mac", "h_text",
                                                         "h_int"}),
    ("writer: audit record: other", {"audit_append", "audit_complete", "append"}),
    ("writer: rate limit take", {"store_rate_take"}),
    ("SQLite: spend reserve (write txn)", {"store_spend_reserve"}),
    ("SQLite: spend settle (write txn)", {"store_spend_settle"}),
    ("writer: admit/settle/refusal job, other", {"admit_job", "settle_job", "refusal_job"}),
    ("writer: COMMIT: WAL frame writes", {"sqlite3WalFrames"}),
    ("writer: SQL parse of BEGIN/SAVEPOINT/RELEASE/COMMIT (sqlite3_exec)",
     {"sqlite3_prepare_v2", "sqlite3LockAndPrepare", "sqlite3RunParser", "sqlite3Prepare"}),
    ("writer: BEGIN/SAVEPOINT/RELEASE/COMMIT, other", {"run_batch"}),
    ("writer: queue, wakeups, completion hand-off", {"writer_main", "complete"}),
    ("SQLite: key lookup by token hash (read)", {"store_key_by_hash", "key_lookup"}),
    ("SQLite: revocation watch (read, every 250 ms)", {"store_key_revoked", "watch_revocations"}),
    ("SQLite: other", {"store_key_get", "store_ping"}),
    ("policy: JSON parse + compile of allowed_endpoints", {"compile_policy", "policy_compile"}),
    ("policy: canonical path + match", {"policy_allows", "policy_canon_check", "policy_match",
                                        "key_policy"}),
    ("token: format check + HMAC-SHA256", {"crypto_hmac", "crypto_token_valid", "find_token"}),
    ("meter: begin/settle", {"meter_begin", "meter_settle", "meter_response_status",
                             "meter_response_data", "meter_free"}),
    ("logging + metrics", {"kb_log", "access_log", "metrics_request", "metrics_observe",
                           "metrics_inflight"}),
    ("upstream client: start, request head, send",
     {"build_headers", "upstream_start", "kick_cb", "conn_send", "conn_write", "conn_arm",
      "req_free", "req_finish", "conn_release"}),
    ("reply to client: headers + body + end (evhttp)",
     {"on_head", "on_header", "on_body", "evhttp_send_reply_start", "evhttp_send_reply_end",
      "evhttp_send_reply_chunk_with_cb", "evhttp_send_reply", "http_reply_proxy_error",
      "refuse"}),
    ("upstream client: read + parse response",
     {"conn_cb", "conn_readable", "conn_read", "conn_process", "take_line", "header_line",
      "status_line", "head_end", "deliver", "idle_readable", "conn_timeout"}),
    ("worker: writer submit + completion callbacks", {"writer_submit", "admit_done", "settle_done",
                                                      "refusal_done", "preq_settle"}),
    ("request path glue (on_request, other)", {"on_request", "preq_finish", "preq_free",
                                               "on_done", "hygiene_check_headers"}),
    ("evhttp: read + parse request", {"bufferevent_run_readcb_", "evhttp_read_cb",
                                      "evbuffer_read", "evhttp_parse_firstline_",
                                      "evhttp_parse_headers_"}),
    ("evhttp: write out, connection bookkeeping", {"evbuffer_write_atmost",
                                                  "bufferevent_run_writecb_",
                                                  "evhttp_write_cb", "evhttp_request_free",
                                                  "evhttp_connection_free"}),
    ("libevent loop, epoll", {"event_base_loop", "epoll_wait", "epoll_ctl"}),
]

# Which thread a sample ran on, from the bottom of its call chain.
THREADS = [("writer thread (group commit)", {"writer_main"}),
           ("checkpointer thread", {"ckpt_main"}),
           ("worker thread (event loop)", {"thread_main"}),
           ("main thread", {"main", "__libc_start_main", "__libc_start_call_main"})]

# Mechanisms inside SQLite time (first match wins, searched leaf -> root).
SQLITE_MECH = [
    ("checkpoint + fsync", ("sqlite3WalCheckpoint", "walCheckpoint", "sqlite3WalDefaultHook",
                            "fdatasync", "fsync")),
    ("POSIX file locks (fcntl)", ("fcntl",)),
    ("WAL frame writes (pwrite)", ("pwrite", "sqlite3WalFrames")),
    ("BEGIN/COMMIT bookkeeping", ("sqlite3_exec", "sqlite3VdbeHalt", "sqlite3BtreeBeginTrans",
                                  "sqlite3PagerCommitPhaseOne", "sqlite3BtreeCommitPhaseOne")),
    ("statement execution", ("",)),
]

FRAME = re.compile(r"^\s+([0-9a-f]+) (.+?) \((.+)\)$")
LIBC_INLINED = ("__GI_", "__libc_", "_int_", "unlink_chunk", "malloc", "free", "tcache",
                "arena_", "sysmalloc", "__strlen", "__mem", "__str")


def parse(lines):
    """Yields (period, [(sym, dso), ...] leaf first) per sample."""
    period, frames, addrs = None, [], []
    for line in lines:
        if not line.strip():
            if period is not None:
                yield period, fix_inlined(frames)
            period, frames, addrs = None, [], []
            continue
        if not line[0].isspace():
            parts = line.split()
            period = 1
            for i, p in enumerate(parts):
                if p.endswith(":") and i + 1 < len(parts) and parts[i + 1].isdigit():
                    period = int(parts[i + 1])
            # "comm tid time: period event:"
            m = re.search(r":\s+(\d+)\s+\S+:", line)
            if m:
                period = int(m.group(1))
            frames, addrs = [], []
            continue
        m = FRAME.match(line)
        if m:
            addr = m.group(1)
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(2))
            dso = m.group(3)
            # an inlined frame is followed by the real one at the same
            # address, when perf knows it: give it that frame's object
            if dso != "inlined":
                for i in range(len(frames) - 1, -1, -1):
                    if frames[i][1] != "inlined" or addrs[i] != addr:
                        break
                    frames[i] = (frames[i][0], dso)
            frames.append((sym, dso))
            addrs.append(addr)
    if period is not None:
        yield period, fix_inlined(frames)


def fix_inlined(frames):
    """Inlined frames perf could not pin to an object: glibc's by name."""
    out = []
    for sym, dso in frames:
        if dso == "inlined":
            dso = "libc.so.6" if sym.startswith(LIBC_INLINED) else "inlined, object unknown"
        out.append((sym, dso))
    return out


def short_dso(d):
    if d.startswith("[kernel"):
        return "kernel"
    base = d.rsplit("/", 1)[-1]
    for name in ("libc.so", "libsqlite3", "libcurl", "libevent", "libcrypto", "libssl",
                 "libjansson", "libz", "libnghttp2", "ld-linux"):
        if base.startswith(name):
            return {"libc.so": "libc (malloc, string, stdio)", "libsqlite3": "libsqlite3",
                    "libcurl": "libcurl", "libevent": "libevent", "libcrypto": "libcrypto",
                    "libssl": "libssl", "libjansson": "libjansson", "libz": "libz",
                    "libnghttp2": "libnghttp2", "ld-linux": "ld.so"}[name]
    if base == "keybrake":
        return "keybrake (ours)"
    return base


def thread_of(frames):
    syms = {s for s, _ in frames}
    for name, keys in THREADS:
        if syms & keys:
            return name
    return "unknown (stack unwound incompletely)"


def step_of(frames):
    syms = {s for s, _ in frames}
    writer = "writer_main" in syms
    for name, keys in STEPS:
        if name.startswith("writer") and not writer:
            continue  # e.g. sqlite3_prepare_v2 on a worker is not the writer's
        if syms & keys:
            return name
    if any(s.startswith("sqlite3") for s in syms):
        return "SQLite: other"
    return "other / unwound incompletely"


def mech_of(frames):
    for name, keys in SQLITE_MECH:
        for s, _ in frames:
            if any(k in s for k in keys):
                return name
    return "statement execution"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?")
    ap.add_argument("--requests", type=int, default=0)
    ap.add_argument("--cpu-us", type=int, default=0)
    ap.add_argument("--us-per-req", type=float, default=0,
                    help="scale shares to this CPU µs per request (the unprofiled median): "
                         "perf's own sampling inflates the profiled run's CPU")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--syscalls", action="append", default=[], metavar="NAME=CSV:REQUESTS",
                    help="`perf stat -x,` output over a run that completed REQUESTS requests")
    ap.add_argument("--fsync", help="`perf script -F tid,time,event` of the fdatasync/fsync "
                    "enter and exit tracepoints")
    ap.add_argument("--fsync-seconds", type=float, default=0)
    ap.add_argument("--metrics", nargs=2, metavar=("BEFORE", "AFTER"),
                    help="keybrake /metrics around the syscall run: group-commit figures")
    a = ap.parse_args()
    src = open(a.file) if a.file else sys.stdin

    total = 0
    by_step = collections.Counter()
    by_step_kernel = collections.Counter()
    by_dso = collections.Counter()
    by_sym = collections.Counter()
    sqlite_mech = collections.Counter()
    by_thread = collections.Counter()
    step_thread = {}
    for period, frames in parse(src):
        if not frames:
            continue
        total += period
        st = step_of(frames)
        th = thread_of(frames)
        by_thread[th] += period
        step_thread.setdefault(st, collections.Counter())[th] += period
        by_step[st] += period
        leaf_sym, leaf_dso = frames[0]
        if leaf_dso.startswith("[kernel"):
            by_step_kernel[st] += period
        by_dso[short_dso(leaf_dso)] += period
        by_sym["%s  (%s)" % (leaf_sym, short_dso(leaf_dso))] += period
        if any(f[0].startswith("sqlite3") for f in frames):
            sqlite_mech[mech_of(frames)] += period
    if not total:
        print("profile.py: no samples")
        return 1

    prof_per_req = a.cpu_us / a.requests if a.requests and a.cpu_us else 0.0
    per_req = a.us_per_req or prof_per_req

    def row(name, v, extra=""):
        pct = 100.0 * v / total
        us = " %.1f |" % (per_req * v / total) if per_req else ""
        return "| %s | %.1f%% |%s%s" % (name, pct, us, extra)

    us_h = " µs/req |" if per_req else ""
    us_s = "---:|" if per_req else ""
    note = ""
    if per_req:
        note = "; µs/req columns scale the shares to %.1f µs of CPU per request" % per_req
        if a.us_per_req and prof_per_req:
            note += (" (the median of the unprofiled 64-connection runs; %.1f under perf)"
                     % prof_per_req)
    print("Samples: %d ms of keybrake CPU%s." % (
        total // 1000000 if total > 100000 else total, note))
    print()
    print("### By thread")
    print()
    print("| thread | share |%s" % us_h)
    print("|---|---:|%s" % us_s)
    for name, v in by_thread.most_common():
        print(row(name, v))
    print()
    print("### By step of the request path (inclusive: libc, kernel, SQLite charged to the caller)")
    print()
    print("| step | share |%s of which kernel | thread |" % us_h)
    print("|---|---:|%s---:|---|" % us_s)
    short = {"writer thread (group commit)": "writer", "worker thread (event loop)": "worker",
             "main thread": "main"}
    for name, v in by_step.most_common():
        ths = step_thread.get(name, {})
        where = ", ".join(short.get(t, "?") for t, _ in ths.most_common() if _ * 10 >= v)
        print(row(name, v, " %.0f%% | %s |" % (100.0 * by_step_kernel[name] / v, where)))
    sq = sum(v for k, v in by_step.items() if k.startswith(("SQLite", "writer")))
    print(row("**all store work (SQLite steps + writer thread)**", sq, " %.0f%% | |" % (
        100.0 * sum(by_step_kernel[k] for k in by_step if k.startswith(("SQLite", "writer"))) / sq
        if sq else 0)))
    print()
    if sq:
        print("### Inside SQLite (any thread), by mechanism")
        print()
        print("| mechanism | share of all CPU |%s" % us_h)
        print("|---|---:|%s" % us_s)
        for name, v in sqlite_mech.most_common():
            print(row(name, v))
        print()
    print("### Self time by library")
    print()
    print("| library | share |%s" % us_h)
    print("|---|---:|%s" % us_s)
    for name, v in by_dso.most_common():
        print(row(name, v))
    print()
    print("### Top %d symbols (self time)" % a.top)
    print()
    print("| symbol | share |%s" % us_h)
    print("|---|---:|%s" % us_s)
    for name, v in by_sym.most_common(a.top):
        print(row(name.replace("|", "\\|"), v))
    print()
    if a.syscalls:
        syscall_table(a.syscalls)
    if a.fsync:
        fsync_table(a.fsync, a.fsync_seconds)
    if a.metrics:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        sys.dont_write_bytecode = True  # no __pycache__ in bench/
        from summarise import commit_stats
        cs = commit_stats(*a.metrics)
        if cs:
            print("### Group commit over the same run (keybrake /metrics)")
            print()
            print("%d commits for %d requests: %.1f requests (≈ %.0f jobs: admit + settle) per "
                  "commit; %.2f s inside commits over %.0f s (%.0f%% of the writer's time); "
                  "commits slower than 10 ms: %d, than 100 ms: %d, than 250 ms: %d." % (
                      cs["commits"], cs["requests"], cs["requests"] / cs["commits"],
                      2 * cs["requests"] / cs["commits"], cs["commit_s"], a.fsync_seconds,
                      100.0 * cs["commit_s"] / a.fsync_seconds if a.fsync_seconds else 0,
                      cs["slow"]["0.01"], cs["slow"]["0.1"], cs["slow"]["0.25"]))
            print()
    return 0


def syscall_table(specs):
    cols, counts = [], {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        path, _, req = rest.rpartition(":")
        req = int(req or 0)
        cols.append(name)
        try:
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) < 3 or not parts[0].strip().isdigit():
                        continue
                    ev = parts[2].replace("syscalls:sys_enter_", "")
                    ev = "all syscalls" if ev == "raw_syscalls:sys_enter" else ev
                    counts.setdefault(ev, {})[name] = int(parts[0]) / req if req else 0.0
        except OSError:
            pass
    if not counts:
        return
    print("### System calls per request (perf stat, 64 connections)")
    print()
    print("| syscall | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    order = sorted(counts, key=lambda e: (e == "all syscalls", -max(counts[e].values())))
    for ev in order:
        vals = [counts[ev].get(c, 0.0) for c in cols]
        if max(vals) < 0.005:
            continue
        label = "**%s**" % ev if ev == "all syscalls" else ev
        print("| %s | " % label + " | ".join("%.2f" % v for v in vals) + " |")
    print()


def fsync_table(path, seconds):
    """Durations of fdatasync/fsync calls made by the keybrake process, per thread."""
    open_at, durs = {}, collections.defaultdict(list)
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                tid, t, ev = parts[0], float(parts[1].rstrip(":")), parts[2]
                if "sys_enter_" in ev:
                    open_at[tid] = t
                elif "sys_exit_" in ev and tid in open_at:
                    durs[tid].append((t - open_at.pop(tid)) * 1000.0)
    except OSError:
        return
    print("### fsync (keybrake, 64 connections)")
    print()
    if not durs:
        print("No fdatasync/fsync calls were seen.")
        print()
        return
    print("SQLite's WAL auto-checkpoint runs inside the COMMIT that crosses 1000 WAL pages and "
          "fsyncs there (see the checkpoint step above for its thread); while one lasts, that "
          "thread does nothing else.")
    print()
    print("| thread id | calls | per second | median ms | p90 ms | max ms | total ms | share of "
          "wall time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for tid, d in sorted(durs.items(), key=lambda kv: -len(kv[1])):
        d.sort()

        def q(p):
            return d[min(len(d) - 1, int(p * len(d)))]

        print("| %s | %d | %.1f | %.2f | %.2f | %.2f | %.0f | %.0f%% |" % (
            tid, len(d), len(d) / seconds if seconds else 0, q(0.5), q(0.9), d[-1], sum(d),
            100.0 * sum(d) / 1000.0 / seconds if seconds else 0))
    print()


if __name__ == "__main__":
    sys.exit(main())
