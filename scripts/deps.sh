#!/usr/bin/env bash
# Installs what this machine is missing to build (`build`) or to test
# (`test`): Debian packages through apt-get, the black-box suite's npm
# packages through `npm ci`. Does nothing when all is there already.
set -euo pipefail
what=${1:-build}
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config libevent-dev libjansson-dev zlib1g-dev libbrotli-dev libzstd-dev
      libsqlite3-dev libssl-dev libinih-dev libpq-dev)
# the integration guides' checks (tests/integrations): Rails (ruby), Spring Boot (JDK, Jackson)
[ "$what" != test ] || pkgs+=(ruby openjdk-17-jdk-headless libjackson2-databind-java)
if [ "$what" = test ]; then
  # chromium: the dashboard's browser test (tests/blackbox/ui.test.js, via playwright-core);
  # postgresql: the throwaway server of the PostgreSQL tests (tests/pg/pg-test.sh);
  # openssl, ruby and a JDK (java's source launcher, keytool): the TLS suite's certificates and
  # clients; groff, systemd-analyze and dpkg-dev: the packaging suite's man page, unit and .deb
  pkgs+=(libcmocka-dev nodejs npm sqlite3 clang chromium postgresql openssl ruby openjdk-17-jdk-headless
         groff-base systemd dpkg-dev)
fi
if [ "$what" = bench ]; then
  pkgs+=(nginx-light wrk nodejs npm postgresql)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node may come from elsewhere than Debian's package; only ask for it when absent
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || tmp+=("$p"); done
  missing=("${tmp[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# the peer gateway the bench measures beside Keybrake (bench/peer), pinned
if [ "$what" = bench ] && { [ ! -d bench/peer/node_modules ] ||
   [ bench/peer/package-lock.json -nt bench/peer/node_modules ]; }; then
  (cd bench/peer && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ "$what" = test ] && [ ! -d tests/blackbox/node_modules ] ||
   [ "$what" = test ] && [ tests/blackbox/package-lock.json -nt tests/blackbox/node_modules ]; then
  (cd tests/blackbox && npm ci --no-audit --no-fund --loglevel=error)
fi
