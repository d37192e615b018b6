# Sourced by ops/charter and ops/test: makes sure ./.venv exists and holds this checkout's package.
# Reinstalls only when pyproject.toml changed since the last install.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
pick_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "Charter needs Python 3.11 or newer on PATH" >&2; return 1
}
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv ..." >&2
  "$(pick_python)" -m venv "$venv"
fi
stamp="$venv/.charter-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$venv/bin/charter" ]; then
  echo "installing Charter and its dependencies into $venv ..." >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
  echo "$want" > "$stamp"
fi
