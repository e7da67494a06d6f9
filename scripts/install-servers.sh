#!/usr/bin/env bash
# Install redis-server, redis-cli and memcached from Debian when they are missing.
#
# Debian starts the packaged services when it installs them. The suite does not need them
# (it starts its own servers on free loopback ports), so on CI (CI=true, as .ci/run sets)
# the services of the packages installed here are stopped and disabled. Anywhere else no
# service is touched: a contributor's own Redis or memcached keeps running.
set -euo pipefail

need=()
services=()
if ! command -v redis-server >/dev/null 2>&1; then
  need+=(redis-server)
  services+=(redis-server)
fi
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
if ! command -v memcached >/dev/null 2>&1; then
  need+=(memcached)
  services+=(memcached)
fi
[ ${#need[@]} -gt 0 ] || exit 0

echo "installing ${need[*]} (Debian packages)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

if [ ${#services[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    $SUDO systemctl disable --now "${services[@]}" >/dev/null 2>&1 || true
  else
    echo "note: Debian started ${services[*]} as a service; the test suite does not use it" \
      "(it starts its own servers). To stop it: sudo systemctl disable --now ${services[*]}"
  fi
fi
