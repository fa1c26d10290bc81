#!/usr/bin/env bash
# Prepare this checkout to run labelflow: system prerequisites (Java 17+, Maven, optionally
# PostgreSQL) from the distribution's packages when missing, then a virtual environment in
# .venv with labelflow and its dev tools. Safe to run again: it only does what is missing.
#
#   bash scripts/setup.sh [--with-postgres]
set -euo pipefail
cd "$(dirname "$0")/.."

with_postgres=0
[ "${1:-}" = "--with-postgres" ] && with_postgres=1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [ -n "$v" ] && [ "$v" -ge 17 ]
}
postgres_ok() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
python_ok() {
  command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

packages=()
java_ok || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || packages+=(maven)
python_ok || packages+=(python3 python3-venv python3-pip)
[ "$with_postgres" = 1 ] && ! postgres_ok && packages+=(postgresql)

if [ ${#packages[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "Missing: ${packages[*]}. Install them with your package manager, then run this again."
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "Need root (or sudo) to install: ${packages[*]}"; exit 1; }
    sudo="sudo"
  fi
  say "Installing ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
java_ok || { say "Java 17 or newer is still not the default 'java'; fix PATH or JAVA_HOME."; exit 1; }

# Reinstall Python packages only when pyproject.toml changed since the last install.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || { say "Creating .venv"; python3 -m venv .venv; }
  say "Installing labelflow and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
