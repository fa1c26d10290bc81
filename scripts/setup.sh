#!/usr/bin/env bash
# Prepare this checkout to run labelflow: system prerequisites (Java 17+, Maven, optionally
# PostgreSQL) from the distribution's packages when missing, then a virtual environment in
# .venv with labelflow and its dev tools. Safe to run again: it only does what is missing.
#
# With --with-labelstudio it also installs Label Studio (for the integration tests against a
# real server) into its own virtual environment, cached per user so later runs reuse it:
# its pinned dependencies conflict with labelflow's, so it never shares .venv.
#
#   bash scripts/setup.sh [--with-postgres] [--with-labelstudio]
set -euo pipefail
cd "$(dirname "$0")/.."

with_postgres=0
with_labelstudio=0
for arg in "$@"; do
  case "$arg" in
    --with-postgres) with_postgres=1 ;;
    --with-labelstudio) with_labelstudio=1 ;;
    *) printf 'unknown option: %s\n' "$arg" >&2; exit 2 ;;
  esac
done

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

# Label Studio in ~/.cache/labelflow/label-studio-<version>/venv (the path the tests look in;
# LABELFLOW_LABELSTUDIO_VERSION picks another release). The stamp file is written last, so an
# install cut short is redone rather than half-used.
if [ "$with_labelstudio" = 1 ]; then
  ls_version="${LABELFLOW_LABELSTUDIO_VERSION:-1.23.2}"
  ls_home="${XDG_CACHE_HOME:-$HOME/.cache}/labelflow/label-studio-$ls_version"
  if [ -f "$ls_home/venv/.installed" ]; then
    say "Label Studio $ls_version already installed in $ls_home/venv"
  else
    say "Installing Label Studio $ls_version into $ls_home/venv (a few minutes, once)"
    rm -rf "$ls_home/venv"
    mkdir -p "$ls_home"
    python3 -m venv "$ls_home/venv"
    "$ls_home/venv/bin/python" -m pip install -q --upgrade pip
    "$ls_home/venv/bin/python" -m pip install -q "label-studio==$ls_version"
    # Import it rather than run `label-studio --version`, which migrates a database in ~.
    "$ls_home/venv/bin/python" -c 'import label_studio' >/dev/null
    touch "$ls_home/venv/.installed"
  fi
fi
