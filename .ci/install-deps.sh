#!/usr/bin/env bash
# Install the Debian and PyPI packages attnscope needs, only those that are missing.
# usage: .ci/install-deps.sh "deb1 deb2 ..." "pip1 pip2 ..."
set -euo pipefail
debs=($1)
pips=($2)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi
py=$(command -v python3)
need=()
for m in "${pips[@]}"; do
  mod=${m%%[=<>]*}  # torch==2.15.0 -> torch
  mod=${mod//-/_}
  "$py" -c "import $mod" 2>/dev/null || need+=("$m")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing PyPI packages: ${need[*]}"
  # pip may be missing (Debian's system python3 without python3-pip) or refuse a system-wide
  # install (PEP 668, Debian 12's EXTERNALLY-MANAGED): bring pip, then allow the install.
  "$py" -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  if ! "$py" -m pip install -q --disable-pip-version-check "${need[@]}"; then
    echo "install-deps: retrying with --break-system-packages (PEP 668)"
    "$py" -m pip install -q --disable-pip-version-check --break-system-packages "${need[@]}"
  fi
fi
