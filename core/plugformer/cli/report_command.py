"""``plugformer report DIR [out=DIR]``: the table of a sweep (Markdown, CSV, printed) and a PNG of its loss
curves. Reads only files; imports matplotlib only to draw (the ``report`` extra). ``--out DIR`` is accepted
for ``out=DIR``."""
from __future__ import annotations

from pathlib import Path

from plugformer.commands import parse_keyvalues

KEYS = ("dir", "out")

USAGE = """\
usage: plugformer report DIR [out=DIR]

Summarises a sweep directory (plugformer train -m ... hydra.sweep.dir=DIR, one directory per job):
report.md, report.csv and report.png (validation-loss curves per combination), written to out
(default: DIR). --out DIR means out=DIR.
"""


def run(args: list[str]) -> int:
    """Parse, write the report files, print the table and what was written."""
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    values = parse_keyvalues("report", args, KEYS, required=("dir",), positional="dir")
    from plugformer.report import plain_table, write_report

    out = Path(values["out"]).expanduser() if "out" in values else None
    jobs, files, no_plot = write_report(Path(values["dir"]).expanduser(), out)
    print(plain_table(jobs))
    print()
    for kind, path in files.items():
        print(f"wrote {kind}: {path}")
    if no_plot:
        print(f"report.png not written: {no_plot}")
    return 0
