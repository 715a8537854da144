# Sourced by scripts/build-guest, scripts/run-guest and scripts/test-lio.
# Sets $root (the checkout) and $cache (.cache/guest under it, which git ignores).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=$root/.cache/guest
me=scripts/$(basename "$0")

die() { echo "$me: $*" >&2; exit 1; }
say() { echo "$me: $*" >&2; }

# ensure_packages PKG...: install the Debian packages that are missing, naming each one
# (--no-install-recommends). Waits up to 10 minutes for another apt-get or dpkg.
ensure_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" -eq 0 ] || die "must run as root to install: ${missing[*]}"
  say "installing ${missing[*]}"
  local log deadline=$((SECONDS + 600)) step
  log=$(mktemp)
  for step in update install; do
    local args=("$step"); [ "$step" = install ] && args+=(-y --no-install-recommends "${missing[@]}")
    until DEBIAN_FRONTEND=noninteractive timeout 900 \
        apt-get -o DPkg::Lock::Timeout=600 -q "${args[@]}" >"$log" 2>&1; do
      if ! grep -q "Could not get lock\|Unable to lock" "$log" || ((SECONDS > deadline)); then
        tail -n 5 "$log" >&2; rm -f "$log"
        die "apt-get $step failed while installing: ${missing[*]}"
      fi
      sleep 2
    done
  done
  rm -f "$log"
}
