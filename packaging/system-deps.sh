#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, and makes sure the local
# PostgreSQL server is up. Only acts when run as root; otherwise it reports what
# is missing so a developer can install it.
set -euo pipefail

PKGS=(chromium xmlsec1 libxmlsec1-openssl postgresql cryptsetup-bin lvm2 wixl msitools graphviz
      openssh-client libglib2.0-bin gsettings-desktop-schemas nftables
      # promtool checks packaging/monitoring/alerts.yml (tests/platform/test_monitoring_assets.py)
      prometheus
      # packaging (make package, tests/packaging/test_packaging_linux.py): PyInstaller needs
      # binutils (objdump, strip); systemd-analyze verifies the units;
      # deb-systemd-helper runs in the maintainer scripts; rpm inspects the .rpm.
      binutils systemd init-system-helpers rpm util-linux
      # scale-out (tests/e2e/test_replicas.py, bench/replicas.py): the load balancer in
      # front of the replicas
      haproxy)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "system-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "system-deps: missing Debian packages: ${missing[*]}" >&2
    echo "system-deps: install them with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

# The tests use the PostgreSQL server on 127.0.0.1:5432 (trust auth).
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then
    ver=$(ls /etc/postgresql | sort -V | tail -n1)
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
exit 0
