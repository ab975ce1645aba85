#!/usr/bin/env python3
"""Write the x0tta6bl4 rules with another base for their `runbook_url` annotations.

Usage: python3 runbook_base.py BASE_URL < x0tta6bl4-rules.yml > rules-for-you.yml

Every alert links its section of the runbook as `BASE#anchor`; the rules in this
repository use the base `docs/runbook-mttr.md` (the runbook's path here). BASE_URL is
where your Alertmanager's readers open the runbook, e.g.
https://git.example.org/x0tta6bl4/blob/main/docs/runbook-mttr.md. Only the base of each
`runbook_url` line changes; anything else is copied byte for byte.
"""

from __future__ import annotations

import re
import sys

DEFAULT_BASE = "docs/runbook-mttr.md"
LINE = re.compile(r'^(\s+runbook_url: ")([^"#]*)(#[a-z0-9-]+")\s*$')


def rebase(rules: str, base: str) -> str:
    """`rules` with every runbook_url's base replaced by `base`."""
    if not base or any(c in base for c in '"#\n'):
        raise ValueError(f"bad base URL {base!r}: give a URL without quotes or '#'")
    lines = rules.split("\n")
    found = 0
    for i, line in enumerate(lines):
        match = LINE.match(line)
        if match:
            lines[i] = f"{match.group(1)}{base.rstrip('/')}{match.group(3)}"
            found += 1
    if not found:
        raise ValueError("no runbook_url annotation in the input: is it x0tta6bl4-rules.yml?")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        sys.stdout.write(rebase(sys.stdin.read(), sys.argv[1]))
    except ValueError as error:
        print(f"runbook_base.py: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
