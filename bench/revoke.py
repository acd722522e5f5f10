#!/usr/bin/env python3
"""revoke.py - how fast a revoked vault key stops working.

Per trial: issue a key through the admin API, start CLIENTS threads that each
loop GET /bench/v1/things with it over their own keep-alive connection, then
DELETE the key. Reports, over all trials:

  latency    time from the DELETE response reaching the caller to the first
             request answered 401 key_revoked (negative: a refusal arrived
             before the DELETE response did)
  forwarded  requests *sent after* the DELETE response arrived that were
             answered 200 by the upstream (must be 0)
  overlap    requests sent before the DELETE response arrived that were still
             forwarded (in flight at revocation time; allowed)

Prints one line `REVOKE_RESULT {json}`. Loopback only; stdlib only.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time

PATH = "/bench/v1/things"


def split(hostport):
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def admin_call(admin, token, method, path, body=None):
    c = http.client.HTTPConnection(*split(admin), timeout=10)
    hdr = {"Authorization": "Bearer " + token}
    data = None
    if body is not None:
        data = json.dumps(body)
        hdr["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=hdr)
    r = c.getresponse()
    out = r.status, r.read()
    c.close()
    return out


def client(proxy, token, stop, log):
    c = http.client.HTTPConnection(*split(proxy), timeout=10)
    hdr = {"Authorization": "Bearer " + token}
    while not stop.is_set():
        t0 = time.perf_counter()
        c.request("GET", PATH, headers=hdr)
        r = c.getresponse()
        r.read()
        t1 = time.perf_counter()
        code = r.getheader("Keybrake-Error") or ""
        log.append((t0, t1, r.status, code))
        if code == "key_revoked":
            break
        if r.status not in (200, 401):
            break
    c.close()


def trial(args):
    st, body = admin_call(args.admin, args.admin_token, "POST", "/v1/keys", {
        "label": "bench/revoke", "vendor": "bench", "allowed_endpoints": ["GET /v1/*"],
        "daily_usd_cap": 1000000, "expires_in": "1h"})
    if st != 201:
        raise SystemExit("revoke.py: issuing a key failed: %d %s" % (st, body[:200]))
    key = json.loads(body)
    stop = threading.Event()
    logs = [[] for _ in range(args.clients)]
    threads = [threading.Thread(target=client, args=(args.proxy, key["token"], stop, logs[i]))
               for i in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(args.warm)
    d0 = time.perf_counter()
    st, body = admin_call(args.admin, args.admin_token, "DELETE", "/v1/keys/" + key["id"])
    d1 = time.perf_counter()
    if st != 204:
        stop.set()
        raise SystemExit("revoke.py: DELETE answered %d %s" % (st, body[:200]))
    deadline = time.time() + 5
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    stop.set()
    for t in threads:
        t.join()
    recs = [r for log in logs for r in log]
    refused = [t1 for (t0, t1, s, c) in recs if c == "key_revoked"]
    return {
        "requests": len(recs),
        "ok_before": sum(1 for (t0, t1, s, c) in recs if s == 200 and t1 <= d0),
        "delete_ms": (d1 - d0) * 1000,
        "latency_ms": (min(refused) - d1) * 1000 if refused else None,
        "forwarded": sum(1 for (t0, t1, s, c) in recs if t0 >= d1 and s == 200),
        "overlap": sum(1 for (t0, t1, s, c) in recs if t0 < d1 and t1 > d0 and s == 200),
        "other": sorted({"%d %s" % (s, c) for (t0, t1, s, c) in recs
                         if s != 200 and c != "key_revoked"}),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--admin", required=True)
    ap.add_argument("--admin-token", required=True)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--warm", type=float, default=0.05, help="seconds of traffic before DELETE")
    args = ap.parse_args()
    res = [trial(args) for _ in range(args.trials)]
    lat = [r["latency_ms"] for r in res if r["latency_ms"] is not None]
    out = {
        "trials": len(res),
        "clients": args.clients,
        "never_refused": sum(1 for r in res if r["latency_ms"] is None),
        "latency_ms_median": statistics.median(lat) if lat else None,
        "latency_ms_max": max(lat) if lat else None,
        "latency_ms_min": min(lat) if lat else None,
        "delete_ms_median": statistics.median(r["delete_ms"] for r in res),
        "forwarded_after_delete": sum(r["forwarded"] for r in res),
        "in_flight_forwarded": sum(r["overlap"] for r in res),
        "requests_before_delete": sum(r["ok_before"] for r in res),
        "other_statuses": sorted({o for r in res for o in r["other"]}),
    }
    print("REVOKE_RESULT " + json.dumps(out))
    return 0 if out["forwarded_after_delete"] == 0 and out["never_refused"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
