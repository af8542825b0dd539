"""Benchmarks and studies whose tables the README, docs/ and the model card quote (results in ``bench/results/``)."""

import json
import os


def write_results(out: str, report: dict, lines: list) -> None:
    """``out.json`` (the full report) and ``out.md`` (the table ``lines``), then print the table."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
