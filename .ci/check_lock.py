"""Fail unless the running environment holds exactly the versions the lock files pin.

Usage: python .ci/check_lock.py requirements/lock.txt [requirements/models.txt ...]
Every ``name==version`` line must be installed at that version; prints one line per mismatch.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def pins(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = _PIN.match(line.strip())
            if m:
                out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def main(paths: list[str]) -> int:
    wanted: dict[str, str] = {}
    for path in paths:
        wanted.update(pins(path))
    if not wanted:
        print(f"check_lock: no name==version lines in {', '.join(paths)}", file=sys.stderr)
        return 2
    bad = []
    for name, version in sorted(wanted.items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            bad.append(f"{name}: locked {version}, not installed")
            continue
        if have != version:
            bad.append(f"{name}: locked {version}, installed {have}")
    for line in bad:
        print(f"check_lock: {line}", file=sys.stderr)
    if bad:
        print("check_lock: the environment differs from the lock; run `make clean test`", file=sys.stderr)
        return 1
    print(f"check_lock: {len(wanted)} pinned packages installed at their locked versions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
