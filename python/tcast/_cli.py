"""The `tcast` console script: run the CLI binary this package bundles.

pip installs this as `<prefix>/bin/tcast`; it replaces itself (exec) with
the native binary in tcast/_bin/ (bundled from the build at install time),
so `tcast daemon start`, `tcast import`, ... behave exactly as the binary
does: same exit codes, same signals, no Python in between.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_PKG_DIR = Path(__file__).resolve().parent


def _is_native(path: str) -> bool:
    """An executable ELF file: never a script (this one, on $PATH)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF" and os.access(path, os.X_OK)
    except OSError:
        return False


def binary() -> str | None:
    """The native CLI: $TCAST_BIN, the bundled one, else one on $PATH."""
    env = os.environ.get("TCAST_BIN")
    if env:
        return env
    bundled = _PKG_DIR / "_bin" / "tcast"
    if _is_native(str(bundled)):
        return str(bundled)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d or ".", "tcast")
        if _is_native(cand):
            return cand
    return None


def main() -> None:
    exe = binary()
    if not exe:
        sys.stderr.write(
            "tcast: this Python package has no bundled tcast binary and none is on $PATH:\n"
            "  build it (make build) and reinstall the package, or set TCAST_BIN=/path/to/tcast\n"
        )
        sys.exit(127)
    try:
        os.execv(exe, ["tcast", *sys.argv[1:]])
    except OSError as e:
        sys.stderr.write(f"tcast: cannot run {exe}: {e.strerror}\n")
        sys.exit(126)


if __name__ == "__main__":
    main()
