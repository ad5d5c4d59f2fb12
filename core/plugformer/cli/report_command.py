"""``plugformer report <sweep dir> [--out DIR]``: the table of a sweep (Markdown, CSV, printed) and a PNG of
its loss curves. Reads only files; imports matplotlib only to draw (the ``report`` extra)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plugformer report",
        description="Summarise a sweep directory (plugformer train -m ... hydra.sweep.dir=DIR): report.md, "
                    "report.csv and report.png (validation-loss curves per combination).")
    p.add_argument("sweep_dir", type=Path, help="the sweep directory (holds one directory per job)")
    p.add_argument("--out", type=Path, default=None, help="where to write the report files (default: SWEEP_DIR)")
    return p


def run(args: list[str]) -> int:
    opts = _parser().parse_args(args)
    from plugformer.report import plain_table, write_report

    jobs, files, no_plot = write_report(opts.sweep_dir, opts.out)
    print(plain_table(jobs))
    print()
    for kind, path in files.items():
        print(f"wrote {kind}: {path}")
    if no_plot:
        print(f"report.png not written: {no_plot}")
    return 0
