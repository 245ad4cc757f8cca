"""Print the figures `make test-reliability` recorded as the Markdown table of docs/reliability.md.

    python -m tests.reliability.figures var/reliability/report.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXTRA = {"seconds_to_all_queued": "s from the last drop to all queued", "seconds_to_all_done": "s to all done",
         "daemon_peak_rss_mib": "MiB daemon peak RSS", "worker_peak_rss_mib": "MiB worker peak RSS",
         "seconds_for_all": "s for all", "reads": "status reads", "seconds": "s",
         "seconds_of_storm": "s of events", "seconds_to_settle": "s to settle", "files_checked": "files checked"}


def table(lines: list[dict]) -> str:
    rows = ["| scenario | trials | failures | data lost | figures | reproduce |", "|---|---|---|---|---|---|"]
    for line in lines:
        figures = ", ".join(f"{line[key]} {label}" for key, label in EXTRA.items() if line.get(key) is not None)
        rows.append(f"| {line['scenario']} | {line['trials']} | {line['failures']} | {line['lost']} | "
                    f"{figures or '-'} | `{line['command']}` |")
    return "\n".join(rows)


def main(path: str) -> int:
    report = Path(path)
    if not report.exists():
        print(f"no figures recorded in {report}")
        return 1
    print(table([json.loads(text) for text in report.read_text().splitlines() if text.strip()]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "var/reliability/report.jsonl"))
