#!/usr/bin/env python3
"""summarise.py - turns bench/run.sh's results file into Markdown tables.

The results file has one line per wrk run, `key=value` pairs: kind (warmup,
load, paced, light, issue, live, after-keys, profiled), target (nginx or
keybrake), conns, round, cpu_us (CPU of the proxy's processes over the
run), up_cpu_us (the upstream's), rss_kb (after the run), and wrk's
requests, duration_us, p50_us, p90_us, p99_us, max_us and error counts.

  summarise.py RESULTS [options]      print the summary, write it to --out
  summarise.py RESULTS --median KIND TARGET CONNS FIELD
                                      print one median (FIELD may be rps)
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def parse(path):
    rows = []
    with open(path) as f:
        for line in f:
            d = {}
            for tok in line.split():
                k, _, v = tok.partition("=")
                try:
                    d[k] = int(v)
                except ValueError:
                    try:
                        d[k] = float(v)
                    except ValueError:
                        d[k] = v
            if not d:
                continue
            d["rps"] = d["requests"] / (d["duration_us"] / 1e6) if d.get("duration_us") else 0.0
            if d.get("quota_us"):  # issuance: the quota over the time it took
                d["rps"] = d["quota"] / (d["quota_us"] / 1e6)
            d["cpu_per_req"] = d["cpu_us"] / d["requests"] if d.get("requests") else 0.0
            d["up_per_req"] = d["up_cpu_us"] / d["requests"] if d.get("requests") else 0.0
            d["errors"] = sum(d.get(k, 0) for k in
                              ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
            rows.append(d)
    return rows


def read_metrics(path):
    """Prometheus text -> {"name{labels}": value}; {} when absent."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                k, _, v = line.rstrip().rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def commit_stats(before, after):
    """Group-commit figures between two /metrics snapshots, or None."""
    a, b = read_metrics(before), read_metrics(after)

    def d(key):
        return b.get(key, 0.0) - a.get(key, 0.0)

    commits = d("keybrake_store_commit_seconds_count")
    if commits <= 0:
        return None
    reqs = sum(v - a.get(k, 0.0) for k, v in b.items() if k.startswith("keybrake_requests_total"))
    slow = {}
    for le in ("0.01", "0.1", "0.25"):
        slow[le] = commits - d('keybrake_store_commit_seconds_bucket{le="%s"}' % le)
    # the writer's pauses for a WAL restart happen between commits: counted apart
    restart = {"count": d("keybrake_store_wal_restart_wait_seconds_count"),
               "s": d("keybrake_store_wal_restart_wait_seconds_sum"),
               "over_10ms": d("keybrake_store_wal_restart_wait_seconds_count")
               - d('keybrake_store_wal_restart_wait_seconds_bucket{le="0.01"}')}
    return {"commits": commits, "requests": reqs,
            "commit_s": d("keybrake_store_commit_seconds_sum"), "slow": slow, "restart": restart}


def pick(rows, kind, target=None, conns=None):
    return [r for r in rows if r["kind"] == kind and (target is None or r["target"] == target)
            and (conns is None or r["conns"] == conns)]


def med(xs):
    xs = list(xs)
    return statistics.median(xs) if xs else 0.0


def ms(us):
    return "%.2f" % (us / 1000.0)


def mb(kb):
    return "%.1f" % (kb / 1024.0)


def cmd_out(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        return ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_table(rows, kind, conns):
    """One table of alternating nginx/Keybrake rounds at one connection level."""
    nx, kb = pick(rows, kind, "nginx", conns), pick(rows, kind, "keybrake", conns)
    out = []
    out.append("| round | nginx req/s | Keybrake req/s | **KB/nginx** | nginx p50 ms | KB p50 ms "
               "| nginx p99 ms | KB p99 ms | nginx CPU µs/req | KB CPU µs/req | nginx RSS MB "
               "| KB RSS MB |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for a, b in zip(nx, kb):
        ratio = b["rps"] / a["rps"] if a["rps"] else 0.0
        ratios.append(ratio)
        out.append("| %d | %.0f | %.0f | %.2f× | %s | %s | %s | %s | %.1f | %.1f | %s | %s |" % (
            a["round"], a["rps"], b["rps"], ratio, ms(a["p50_us"]), ms(b["p50_us"]),
            ms(a["p99_us"]), ms(b["p99_us"]), a["cpu_per_req"], b["cpu_per_req"],
            mb(a["rss_kb"]), mb(b["rss_kb"])))
    out.append("| **median** | **%.0f** | **%.0f** | **%.2f×** | %s | %s | %s | %s | %.1f | %.1f "
               "| %s | %s |" % (
                   med(r["rps"] for r in nx), med(r["rps"] for r in kb), med(ratios),
                   ms(med(r["p50_us"] for r in nx)), ms(med(r["p50_us"] for r in kb)),
                   ms(med(r["p99_us"] for r in nx)), ms(med(r["p99_us"] for r in kb)),
                   med(r["cpu_per_req"] for r in nx), med(r["cpu_per_req"] for r in kb),
                   mb(med(r["rss_kb"] for r in nx)), mb(med(r["rss_kb"] for r in kb))))
    up = "upstream nginx CPU per request: %.1f µs behind the baseline, %.1f µs behind Keybrake" % (
        med(r["up_per_req"] for r in nx), med(r["up_per_req"] for r in kb))
    return out, med(ratios), up


def latency_table(rows, kind):
    nx, kb = pick(rows, kind, "nginx"), pick(rows, kind, "keybrake")
    out = ["| round | nginx req/s | KB req/s | nginx p50 ms | KB p50 ms | nginx p99 ms | KB p99 ms "
           "| **added p50 ms** | **added p99 ms** |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    add50, add99 = [], []
    for a, b in zip(nx, kb):
        add50.append(b["p50_us"] - a["p50_us"])
        add99.append(b["p99_us"] - a["p99_us"])
        out.append("| %d | %.0f | %.0f | %s | %s | %s | %s | %s | %s |" % (
            a["round"], a["rps"], b["rps"], ms(a["p50_us"]), ms(b["p50_us"]), ms(a["p99_us"]),
            ms(b["p99_us"]), ms(add50[-1]), ms(add99[-1])))
    out.append("| **median** | %.0f | %.0f | %s | %s | %s | %s | **%s** | **%s** |" % (
        med(r["rps"] for r in nx), med(r["rps"] for r in kb), ms(med(r["p50_us"] for r in nx)),
        ms(med(r["p50_us"] for r in kb)), ms(med(r["p99_us"] for r in nx)),
        ms(med(r["p99_us"] for r in kb)), ms(med(add50)), ms(med(add99))))
    return out, (nx[0]["conns"] if nx else 0), (nx[0].get("delay_ms", 0) if nx else 0)


def cluster_section(rows, a):
    """Section 8 (bench/cluster.sh): nodes on PostgreSQL beside the SQLite node."""
    sq, p1, p12 = (pick(rows, "cluster", t) for t in ("keybrake", "pg1", "pg12"))
    out = ["## Nodes on PostgreSQL (docs/cluster.md)", "",
           "A throwaway PostgreSQL from Debian's packages (fsync on, synchronous_commit on) on the "
           "same machine, two Keybrake nodes on it with the SQLite node's settings; the SQLite "
           "node, one node on PostgreSQL, and both nodes at once (half the connections each) "
           "alternate, %d rounds of %d s. Target: a node on PostgreSQL >= 0.5x the SQLite "
           "node's requests/s; added p99 <= 5 ms at half load." % (a.rounds, a.lat_duration), "",
           "| round | SQLite node req/s | PG node req/s | **PG/SQLite** | 2 PG nodes req/s "
           "| SQLite p99 ms | PG p99 ms | 2 nodes p99 ms | PG node CPU µs/req |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = []
    for x, y, z in zip(sq, p1, p12):
        ratios.append(y["rps"] / x["rps"] if x["rps"] else 0.0)
        out.append("| %d | %.0f | %.0f | %.2f× | %.0f | %s | %s | %s | %.1f |" % (
            x["round"], x["rps"], y["rps"], ratios[-1], z["rps"], ms(x["p99_us"]),
            ms(y["p99_us"]), ms(z["p99_us"]), y["cpu_per_req"]))
    out.append("| **median** | %.0f | %.0f | **%.2f×** | %.0f | %s | %s | %s | %.1f |" % (
        med(r["rps"] for r in sq), med(r["rps"] for r in p1), med(ratios),
        med(r["rps"] for r in p12), ms(med(r["p99_us"] for r in sq)),
        ms(med(r["p99_us"] for r in p1)), ms(med(r["p99_us"] for r in p12)),
        med(r["cpu_per_req"] for r in p1)))
    out.append("")
    nx, pg = pick(rows, "cluster-paced", "nginx"), pick(rows, "cluster-paced", "pg1")
    if nx and pg:
        add99 = [b["p99_us"] - x["p99_us"] for x, b in zip(nx, pg)]
        add50 = [b["p50_us"] - x["p50_us"] for x, b in zip(nx, pg)]
        out.append("At about half of the PostgreSQL node's throughput (paced as above, nginx "
                   "alternating): added p50 **%s ms**, added p99 **%s ms** (median of %d rounds; "
                   "PG node %.0f req/s achieved)." % (
                       ms(med(add50)), ms(med(add99)), len(add99), med(r["rps"] for r in pg)))
        out.append("")
    return out


def runs_table(path):
    """The key-per-run workload (bench/runs.js): medians over rounds, nginx
    and keybrake side by side, and the peer gateway (routing only) when it
    ran."""
    if not path or not os.path.exists(path):
        return []
    by = {"nginx": [], "keybrake": [], "portkey": []}
    with open(path) as f:
        for line in f:
            head, _, js = line.partition(" {")
            if not js:
                continue
            d = json.loads("{" + js)
            d["cpu_us"] = int(head.split("cpu_us=")[1].split()[0])
            by.setdefault(d["target"], []).append(d)
    nx, kb, pk = by["nginx"], by["keybrake"], by["portkey"]
    if not kb:
        return []
    out = ["## Key per run (the seeds' workload)", "",
           "%d runs at once; each issues a key (`POST /v1/keys`), makes 1–5 calls with it (3 runs "
           "in 4: `GET` on the generic vendor; 1 in 4: an OpenAI chat completion, half of them "
           "streamed), then revokes it (`DELETE`); nginx serves the same calls without keys. "
           "Medians over %d rounds; latencies as seen by the client (bench/runs.js)." % (
               kb[0]["concurrent_runs"], len(kb)), ""]
    if pk:
        out += ["The peer is Portkey's open-source gateway (`@portkey-ai/gateway`, bench/peer), "
                "the same upstream as its custom host: it routes only (no keys, caps, metering or "
                "audit), and only JSON chat completions (every run there is a chat run; its stream parser answered our minimal SSE upstream with 500s).", ""]
    out += ["| measure | nginx | keybrake | keybrake added | peer | peer added |",
            "|---|---|---|---|---|---|"]

    def m(rows, f):
        return med(f(r) for r in rows) if rows else 0

    def cell(rows, f, fmt):
        return fmt % m(rows, f) if rows else "–"
    out.append("| runs/s | %s | %s | | %s | |" % (cell(nx, lambda r: r["runs_per_s"], "%.0f"),
                                                    cell(kb, lambda r: r["runs_per_s"], "%.0f"),
                                                    cell(pk, lambda r: r["runs_per_s"], "%.0f")))
    out.append("| calls/s | %s | %s | | %s | |" % (cell(nx, lambda r: r["calls_per_s"], "%.0f"),
                                                     cell(kb, lambda r: r["calls_per_s"], "%.0f"),
                                                     cell(pk, lambda r: r["calls_per_s"], "%.0f")))
    cpu = lambda r: r["cpu_us"] / max(r["calls"], 1)
    out.append("| proxy CPU per call (keybrake's includes issuance and revocation) | %s µs | %s µs "
               "| | %s µs | |" % (cell(nx, cpu, "%.1f"), cell(kb, cpu, "%.1f"), cell(pk, cpu, "%.1f")))
    for kind, what in (("stripe", "GET call"), ("chat", "chat completion"),
                       ("stream", "streamed chat completion")):
        for p in ("p50", "p99"):
            f = lambda r: r[kind][p + "_us"]
            a_, b_, c_ = m(nx, f), m(kb, f), m(pk, f)
            peer = pk and any(r[kind]["n"] for r in pk)
            out.append("| %s %s | %s ms | %s ms | %+.2f ms | %s | %s |" % (
                what, p, ms(a_), ms(b_), (b_ - a_) / 1000.0,
                ms(c_) + " ms" if peer else "–", "%+.2f ms" % ((c_ - a_) / 1000.0) if peer else "–"))
    for kind, what in (("issue", "issuance (`POST /v1/keys`)"), ("revoke", "revocation (`DELETE`)")):
        out.append("| %s p50 / p99 | | %s / %s ms | | | |" % (
            what, ms(m(kb, lambda r: r[kind]["p50_us"])), ms(m(kb, lambda r: r[kind]["p99_us"]))))
    errs = [(r["target"], r["errors"]) for r in nx + kb + pk if r["errors"]]
    out.append("| errors | %s | | | | |" % (", ".join("%s %s" % e for e in errs) if errs else "none"))
    out.append("")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--median", nargs=4, metavar=("KIND", "TARGET", "CONNS", "FIELD"))
    ap.add_argument("--revoke")
    ap.add_argument("--runs")
    ap.add_argument("--out")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ncpu", type=int, default=os.cpu_count() or 0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--lat-duration", type=int, default=5)
    ap.add_argument("--pace-delay", type=int, default=10)
    ap.add_argument("--kb-warnings", type=int, default=0)
    ap.add_argument("--kb-warn-sample")
    ap.add_argument("--nginx-errors", type=int, default=0)
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--binary", default="")
    ap.add_argument("--profile", default="")
    ap.add_argument("--cmd", default="make bench")
    ap.add_argument("--metrics", nargs=2, metavar=("BEFORE", "AFTER"))
    a = ap.parse_args()
    rows = parse(a.results)

    if a.median:
        kind, target, conns, field = a.median
        print("%.3f" % med(r[field] for r in pick(rows, kind, target, int(conns))))
        return 0

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rev = cmd_out(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    dirty = cmd_out(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "src"])
    nginx_v = cmd_out(["sh", "-c", "nginx -v 2>&1"]).replace("nginx version: ", "")
    wrk_v = cmd_out(["sh", "-c", "wrk -v 2>&1 | head -1"]).split(" [")[0]

    md = []
    md.append("# Keybrake benchmark — %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    md.append("")
    md.append("`%s` on %s (%d cores), %s%s; %s; %s." % (
        a.cmd, cpu_model(), a.ncpu, "commit " + rev if rev else "no git metadata (an export?)",
        " with uncommitted changes in src/" if dirty else "", nginx_v, wrk_v))
    md.append("")
    md.append("**The %d cores are shared by wrk (%d threads), the proxy under test and the upstream "
              "nginx**: the figures compare Keybrake with nginx on the same box; they are not the "
              "capacity of either. Keybrake and the baseline nginx each run %d worker(s); the "
              "upstream nginx runs 1. Loopback only, HTTP/1.1 keep-alive everywhere, GET "
              "/bench/v1/things → ~300-byte JSON. CPU µs/req is utime+stime of the proxy's "
              "processes over the run (all nginx processes; the whole keybrake process) divided by "
              "the requests wrk completed. Runs alternate nginx, Keybrake, nginx, Keybrake… ; "
              "%d rounds of %d s per level; ratios are per round." % (
                  a.ncpu, a.threads, a.workers, a.rounds, a.duration))
    md.append("")

    headline = []
    conns_levels = sorted({r["conns"] for r in pick(rows, "load")})
    for c in conns_levels:
        t, ratio, up = load_table(rows, "load", c)
        headline.append((c, ratio))
        md.append("## Throughput, %d connections (closed loop)" % c)
        md.append("")
        md.extend(t)
        md.append("")
        md.append(up + ".")
        md.append("")

    if pick(rows, "paced"):
        t, conns, delay = latency_table(rows, "paced")
        md.append("## Latency at about half load")
        md.append("")
        md.append("wrk2's fixed rate is not available: %d connections each pause a random 1–%d ms "
                  "(mean %d ms) after every response, which offers about half of Keybrake's "
                  "median %d-connection throughput to both proxies; the achieved rate is lower "
                  "where the proxy's latency is higher. Approximate, and not free of coordinated "
                  "omission. %d rounds of %d s." % (
                      conns, 2 * delay - 1, delay, conns_levels[0] if conns_levels else 64,
                      a.rounds, a.lat_duration))
        md.append("")
        md.extend(t)
        md.append("")
    if pick(rows, "light"):
        t, conns, _ = latency_table(rows, "light")
        md.append("## Latency at low concurrency (%d connections, closed loop)" % conns)
        md.append("")
        md.append("Still as fast as each proxy can go, but with little queueing: the added latency "
                  "here is close to Keybrake's own service time.")
        md.append("")
        md.extend(t)
        md.append("")

    if pick(rows, "cluster"):
        md.extend(cluster_section(rows, a))

    md.append("## Admin API and store")
    md.append("")
    md.append("| measure | result |")
    md.append("|---|---|")
    for r in pick(rows, "issue"):
        md.append("| key issuance, %d × POST /v1/keys, %d connections | **%.0f keys/s**; p50 %s ms, "
                  "p99 %s ms; %d answers other than 201; %.1f µs CPU per key |" % (
                      r["requests"], r["conns"], r["rps"], ms(r["p50_us"]), ms(r["p99_us"]),
                      r.get("non201", 0) + r["err_status"], r["cpu_per_req"]))
    rv = None
    if a.revoke and os.path.exists(a.revoke):
        with open(a.revoke) as f:
            for line in f:
                if line.startswith("REVOKE_RESULT "):
                    rv = json.loads(line.split(" ", 1)[1])
    if rv:
        md.append("| revocation: DELETE response → first `401 key_revoked` (%d trials, %d clients "
                  "looping) | median %.2f ms, max %.2f ms (DELETE itself: median %.2f ms) |" % (
                      rv["trials"], rv["clients"], rv["latency_ms_median"] or 0,
                      rv["latency_ms_max"] or 0, rv["delete_ms_median"]))
        md.append("| requests sent after the DELETE response that were forwarded | **%d** "
                  "(must be 0); in flight during the DELETE and forwarded: %d%s |" % (
                      rv["forwarded_after_delete"], rv["in_flight_forwarded"],
                      "; never refused: %d trials" % rv["never_refused"] if rv["never_refused"]
                      else ""))
    for r in pick(rows, "live"):
        n = r["requests"] - r.get("non201", 0) - r["err_status"]
        d_rss = (r["rss_kb"] - r["rss_before_kb"]) * 1024
        d_db = r["db_bytes"] - r.get("db_before", 0)
        md.append("| %d more live keys (%d connections) | %.0f keys/s; keybrake RSS %s → %s MB "
                  "(**%.0f bytes/key** of RSS); store files %.1f → %.1f MB (**%.0f bytes/key** "
                  "on disk) |" % (
                      n, r["conns"], r["rps"], mb(r["rss_before_kb"]), mb(r["rss_kb"]),
                      d_rss / n if n else 0, r.get("db_before", 0) / 1048576.0,
                      r["db_bytes"] / 1048576.0, d_db / n if n else 0))
    for r in pick(rows, "after-keys"):
        base = med(x["rps"] for x in pick(rows, "load", "keybrake", 64))
        md.append("| proxy throughput afterwards (64 connections, %d s) | %.0f req/s (%.2f× the "
                  "64-connection median above); p99 %s ms |" % (
                      round(r["duration_us"] / 1e6), r["rps"], r["rps"] / base if base else 0,
                      ms(r["p99_us"])))
    md.append("")

    md.extend(runs_table(a.runs))

    md.append("## Health under load")
    md.append("")
    bad = [r for r in rows if r["errors"]]
    if bad:
        for r in bad:
            md.append("- %s %s c=%d round %d: %d errors (connect %d, read %d, write %d, status>399 "
                      "%d, timeout %d)" % (r["kind"], r["target"], r["conns"], r["round"],
                                           r["errors"], r["err_connect"], r["err_read"],
                                           r["err_write"], r["err_status"], r["err_timeout"]))
    else:
        md.append("- every wrk run: 0 socket errors, 0 timeouts, 0 answers with status > 399.")
    md.append("- keybrake stayed up through every run; warn/error log lines: %d." % a.kb_warnings)
    if a.kb_warn_sample and os.path.exists(a.kb_warn_sample):
        with open(a.kb_warn_sample) as f:
            sample = [line.rstrip() for line in f if line.strip()]
        for line in sample[:3]:
            md.append("  - `%s`" % line[:200])
    for c in conns_levels:
        kb = pick(rows, "load", "keybrake", c)
        if len(kb) >= 2:
            md.append("- keybrake RSS at %d connections, round 1 → %d: %s → %s MB." % (
                c, kb[-1]["round"], mb(kb[0]["rss_kb"]), mb(kb[-1]["rss_kb"])))
    md.append("- nginx error-log lines at error level or worse: %d." % a.nginx_errors)
    cs = commit_stats(*a.metrics) if a.metrics else None
    if cs:
        md.append("- keybrake store writer over the whole bench (from /metrics): %d group commits "
                  "for %d requests answered (%.1f requests per commit), %.1f s inside commits; "
                  "commits slower than 10 ms: %d, than 100 ms: %d, than 250 ms: %d." % (
                      cs["commits"], cs["requests"], cs["requests"] / cs["commits"],
                      cs["commit_s"], cs["slow"]["0.01"], cs["slow"]["0.1"], cs["slow"]["0.25"]))
        r = cs["restart"]
        md.append("- the writer's pauses between commits for a WAL restart: %d, %.2f s in all, "
                  "over 10 ms: %d." % (r["count"], r["s"], r["over_10ms"]))
    md.append("")
    if a.profile and os.path.exists(a.profile):
        md.append("## Profile (`BENCH_PROFILE=1`)")
        md.append("")
        with open(a.profile) as f:
            md.append(f.read().rstrip())
        md.append("")
    md.append("Reproduce: `%s` (%d s end to end, binary %s). `BENCH_QUICK=1 make bench` is a "
              "~1-minute smoke run." % (a.cmd, a.elapsed, os.path.relpath(a.binary, root)
                                       if a.binary.startswith(root) else a.binary))
    text = "\n".join(md) + "\n"
    sys.stdout.write("\n" + text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        print("bench: summary written to %s" % os.path.relpath(a.out, os.getcwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
