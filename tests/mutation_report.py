#!/usr/bin/env python3
"""Writes docs/mutation.md from the last `mutmut run`: the score per core module, and every
surviving mutant, with the reason it is left where docs/mutation-equivalent.txt gives one.

    mutmut run && python tests/mutation_report.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "mutation.md"
EQUIVALENT = ROOT / "docs" / "mutation-equivalent.txt"  # "<mutant>: why it cannot be told apart"
KILLED = {"killed", "timeout"}  # a mutant that makes a test hang is caught, not missed


def main() -> int:
    listing = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    status = dict(re.findall(r"^\s*(\S+): (.+)$", listing, re.M))
    unchecked = sum(1 for state in status.values() if state == "not checked")
    if unchecked:
        print(f"{unchecked} mutants not checked: run `mutmut run` to the end first", file=sys.stderr)
        return 1
    equivalent = dict(re.findall(r"^(\S+): (.+)$", EQUIVALENT.read_text(), re.M)) if EQUIVALENT.exists() else {}
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for mutant, state in sorted(status.items()):
        module = mutant.split(".")[1]
        if state == "survived" and mutant in equivalent:
            state = "equivalent"
        by_module[module][state] += 1
        if state in ("survived", "no tests", "equivalent"):
            survivors[module].append(mutant)
    lines = [
        "# Mutation testing of the core",
        "",
        "Written by `python tests/mutation_report.py` after `mutmut run` (configuration: `[tool.mutmut]` in",
        "pyproject.toml). Score: killed / (all - equivalent); a timeout counts as killed.",
        "",
        "| module | mutants | killed | survived | no tests | equivalent | score |",
        "|---|---|---|---|---|---|---|",
    ]
    for module, counts in sorted(by_module.items()):
        total, killed = sum(counts.values()), sum(counts[s] for s in KILLED)
        scored = total - counts["equivalent"]
        lines.append(f"| `{module}` | {total} | {killed} | {counts['survived']} | {counts['no tests']} | "
                     f"{counts['equivalent']} | {killed / scored:.0%} |" if scored else f"| `{module}` | 0 | | | | | |")
    for module, mutants in sorted(survivors.items()):
        lines += ["", f"## `{module}`: not killed", ""]
        for mutant in mutants:
            why = equivalent.get(mutant)
            lines.append(f"- `{mutant}`" + (f": equivalent, {why}" if why else f": {status[mutant]}"))
    REPORT.write_text("\n".join(lines) + "\n")
    print(REPORT.read_text().split("\n\n## ")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
