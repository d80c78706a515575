# shellcheck shell=bash
# Debian packages the scripts need, installed when missing (sourced by hack/node-up.sh and
# hack/images.sh). A fresh machine has only the base packages: nothing here is installed by hand.
# policy-rc.d (exit 101) keeps the maintainer scripts from starting services.

# ensure_debian_packages PKG...: install the missing ones (apt-get update first); progress on stderr.
ensure_debian_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  printf '[packages] installing Debian packages: %s\n' "${missing[*]}" >&2
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created=1
  fi
  # One installer at a time (node-up and the image builds may both get here).
  local rc=0
  if ! (
    flock 8
    apt-get update -q >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  ) 8>/run/sscsi-apt.lock; then
    rc=1
  fi
  ((created)) && rm -f "$policy"
  return $rc
}
