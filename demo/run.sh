#!/usr/bin/env bash
# demo/run.sh - `make demo`: Keybrake in front of a pretend vendor, so the
# README can be followed without a Stripe or OpenAI account.
#
# Starts demo/sandbox.js (NOT a real vendor: it answers like Stripe, OpenAI,
# Anthropic and Twilio, charges nothing and marks every answer), then
# `keybrake serve --config demo/keybrake-demo.ini` with every vendor's base
# URL pointed at the sandbox; prints the dashboard URL and the admin token;
# Ctrl-C (or SIGTERM) stops both. The demo keeps its data in ./var-demo,
# apart from `make run`'s ./var; `rm -rf var-demo` starts it afresh.
#
# Environment: KEYBRAKE_BIN (default build/keybrake), KEYBRAKE_DATA_DIR,
# KEYBRAKE_PROXY_LISTEN, KEYBRAKE_ADMIN_LISTEN (the config's defaults:
# ./var-demo, 127.0.0.1:8420, 127.0.0.1:8421), DEMO_SANDBOX_LISTEN
# (127.0.0.1:8429). Port 0 picks a free port; the banner says which.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${KEYBRAKE_BIN:-build/keybrake}
data=${KEYBRAKE_DATA_DIR:-./var-demo}
sandbox_listen=${DEMO_SANDBOX_LISTEN:-127.0.0.1:8429}

die() { echo "demo: $*" >&2; exit 1; }
[ -x "$bin" ] || die "no keybrake binary at $bin (run make, or set KEYBRAKE_BIN)"
command -v node >/dev/null || die "the sandbox needs node (apt-get install nodejs)"

# Nothing real in the demo: no vendor secret, base URL or admin token from
# the caller's environment reaches the daemon (the config's sandbox secrets
# are used, and the admin token is the one the daemon writes to its data dir).
for v in STRIPE OPENAI ANTHROPIC TWILIO; do
  unset "KEYBRAKE_${v}_BASE_URL" "KEYBRAKE_${v}_SECRET" "KEYBRAKE_${v}_ACCOUNT"
done
unset STRIPE_SECRET_KEY OPENAI_API_KEY ANTHROPIC_API_KEY TWILIO_ACCOUNT_SID TWILIO_AUTH_TOKEN
unset KEYBRAKE_ADMIN_TOKEN
export KEYBRAKE_DATA_DIR=$data
mkdir -p "$data"

sandbox_pid=""
keybrake_pid=""
keybrake_rc=0
# Stops both (by pid) and exits: with keybrake's exit code, or $1 if given.
stop() {
  trap - INT TERM
  [ -n "$keybrake_pid" ] && kill -TERM "$keybrake_pid" 2>/dev/null || true
  [ -n "$sandbox_pid" ] && kill -TERM "$sandbox_pid" 2>/dev/null || true
  if [ -n "$keybrake_pid" ]; then wait "$keybrake_pid" || keybrake_rc=$?; fi
  if [ -n "$sandbox_pid" ]; then wait "$sandbox_pid" || true; fi
  echo "demo: stopped (keybrake exit $keybrake_rc)"
  exit "${1:-$keybrake_rc}"
}
trap stop INT TERM

# Polls `file` for a line matching `re` (up to 20 s) while `pid` lives;
# prints the line.
wait_line() {
  local file=$1 re=$2 pid=$3 what=$4 line
  for _ in $(seq 400); do
    line=$(grep -E -m1 "$re" "$file" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; echo "demo: $what exited before it was ready" >&2; return 1; }
    sleep 0.05
  done
  echo "demo: $what not ready after 20 s (see $file)" >&2
  return 1
}

: > "$data/sandbox.out"
node demo/sandbox.js --listen "$sandbox_listen" > "$data/sandbox.out" 2>&1 &
sandbox_pid=$!
line=$(wait_line "$data/sandbox.out" '^sandbox: ready ' "$sandbox_pid" sandbox) || stop 1
sandbox=${line#sandbox: ready }
for v in stripe openai anthropic twilio; do
  export "KEYBRAKE_${v^^}_BASE_URL=$sandbox/$v"
done

: > "$data/keybrake.out"
"$bin" serve --config demo/keybrake-demo.ini > "$data/keybrake.out" 2> "$data/keybrake.log" &
keybrake_pid=$!
line=$(wait_line "$data/keybrake.out" '^keybrake: ready ' "$keybrake_pid" keybrake) ||
  { tail -20 "$data/keybrake.log" >&2; stop 1; }
proxy=$(sed -E 's/.* proxy=([^ ]+).*/\1/' <<<"$line")
admin=$(sed -E 's/.* admin=([^ ]+).*/\1/' <<<"$line")
token=$(cat "$data/admin-token" 2>/dev/null || true)

cat <<MSG

  Keybrake demo: every vendor is the sandbox at $sandbox
  (NOT a real vendor: nothing is charged or sent; answers carry X-Sandbox: not-a-real-vendor)

  dashboard    http://$admin/ui/
  admin token  ${token:-"(not in $data/admin-token: this data dir was made elsewhere)"}
  admin API    http://$admin
  proxy        http://$proxy
  logs         $data/keybrake.log

  Next: README.md, "Try it without vendor accounts". Ctrl-C stops the demo.

MSG

# Either one ending ends the demo. Ctrl-C reaches the whole process group:
# the trap, or the children first (they stop with 0 on SIGINT), whichever
# bash sees first; an exit with another status is a failure.
set +e
wait -n -p done_pid "$keybrake_pid" "$sandbox_pid"
st=$?
if [ "$done_pid" = "$keybrake_pid" ]; then keybrake_pid="" keybrake_rc=$st; else sandbox_pid=""; fi
if [ "$st" -ne 0 ]; then
  echo "demo: ${done_pid:-a process} exited with status $st; stopping" >&2
  tail -5 "$data/keybrake.log" >&2
  stop 1
fi
stop
