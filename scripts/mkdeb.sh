#!/usr/bin/env bash
# mkdeb.sh STAGE OUT_DIR - a .deb of Keybrake from a tree installed with
# `cmake --install BUILD --prefix /usr` under DESTDIR=STAGE: control file
# (version from the binary, dependencies from dpkg-shlibdeps), conffiles,
# and a postinst that creates the "keybrake" system user the unit runs as.
# Uses only dpkg's own tools (dpkg-deb, dpkg-shlibdeps). Prints the path.
set -euo pipefail
stage=$(cd "$1" && pwd)
out=$(mkdir -p "$2" && cd "$2" && pwd)
bin="$stage/usr/bin/keybrake"
[ -x "$bin" ] || { echo "mkdeb: $bin missing (install with --prefix /usr first)" >&2; exit 1; }

version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
# dpkg-shlibdeps wants a debian/control beside it; a scratch one will do
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: keybrake\n\nPackage: keybrake\nArchitecture: any\n' > "$tmp/debian/control"
depends=$(cd "$tmp" && dpkg-shlibdeps -O "$bin" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "mkdeb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CTRL
Package: keybrake
Version: $version
Architecture: $arch
Maintainer: Keybrake developers <dev@keybrake.local>
Installed-Size: $size
Depends: $depends, adduser
Section: net
Priority: optional
Description: credential vault and enforcing proxy for AI agents
 Keybrake holds vendor API keys (Stripe, OpenAI, Anthropic, Twilio, any
 HTTP API) and hands agents short-lived vault keys with endpoint allowlists,
 daily USD caps and expiry, enforced by a metering proxy with a hash-chained
 audit log. This package installs the daemon and CLI, a hardened systemd
 unit (not enabled), a man page and a sample configuration.
CTRL
# dpkg keeps an operator's edits to these across upgrades
find "$stage/etc" -type f 2>/dev/null | sed "s|^$stage||" > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd keybrake >/dev/null; then
        adduser --system --group --home /var/lib/keybrake --no-create-home \
            --gecos "Keybrake daemon" keybrake >/dev/null
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null || true
    fi
fi
exit 0
POST
chmod 0755 "$stage/DEBIAN/postinst"
deb="$out/keybrake_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
