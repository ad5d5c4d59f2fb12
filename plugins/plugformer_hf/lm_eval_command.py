"""``plugformer lm-eval checkpoint=DIR tasks=NAME[,NAME...] [tasks_dir=DIR] [limit=N] [out=FILE.json]``
(also ``plugformer eval ... tasks=...``): lm-evaluation-harness on a checkpoint through the ``plugformer``
model adapter (:mod:`plugformer_hf.lm_eval_adapter`)."""
from __future__ import annotations

import sys
from pathlib import Path

from plugformer import ConfigError, UnavailableError
from plugformer.checkpoint import resolve_checkpoint
from plugformer.commands import parse_keyvalues, positive_int

KEYS = ("checkpoint", "tasks", "tasks_dir", "limit", "device", "adapter", "out")

USAGE = """\
usage: plugformer lm-eval checkpoint=DIR tasks=NAME[,NAME...] [tasks_dir=DIR] [limit=N] [device=auto]
                          [adapter=DIR] [out=FILE.json]
       plugformer eval checkpoint=DIR tasks=NAME[,NAME...] ...   (the same)

Runs lm-evaluation-harness (pip install 'plugformer[lm_eval]') tasks on the checkpoint: tasks from its
catalogue or YAML tasks in tasks_dir (e.g. over a local JSONL file; set HF_DATASETS_OFFLINE=1 to be sure
nothing is downloaded), at most limit documents each.

example:
  plugformer lm-eval checkpoint=ckpt/gpt2 tasks=my_task tasks_dir=my_tasks/ limit=100
"""


def run(args: list[str]) -> int:
    """Parse, run the tasks, print lm_eval's table (and write the results as JSON with ``out=``)."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse_keyvalues("lm-eval", args, KEYS, required=("checkpoint", "tasks"))
    try:
        from lm_eval.utils import make_table

        from plugformer_hf.lm_eval_adapter import run_tasks
    except ImportError as exc:
        raise UnavailableError(f"plugformer eval tasks=... needs lm-evaluation-harness ({exc}); "
                               "pip install 'plugformer[lm_eval]'") from None
    from plugformer.checkpoint import check_new_file, write_json

    if "out" in values:
        check_new_file(values["out"])  # before any work
    tasks_dir = values.get("tasks_dir")
    if tasks_dir is not None and not Path(tasks_dir).expanduser().is_dir():
        raise ConfigError(f"plugformer lm-eval: tasks_dir={tasks_dir!r} is not a directory")
    ckpt = resolve_checkpoint(values["checkpoint"])
    tasks = [t for t in values["tasks"].split(",") if t]
    limit = positive_int("lm-eval", values, "limit")
    try:
        results = run_tasks(ckpt, tasks, Path(tasks_dir).expanduser() if tasks_dir else None, limit,
                            values.get("adapter"), values.get("device", "auto"))
    except KeyError as exc:  # lm_eval's way of saying a task name is unknown
        raise ConfigError(f"plugformer eval tasks={values['tasks']}: lm_eval says: {exc.args[0]} (searched its "
                          f"catalogue{' and ' + tasks_dir if tasks_dir else ''})") from None
    print(make_table(results))
    if "out" in values:
        write_json(Path(values["out"]).expanduser(), {"checkpoint": str(ckpt), "results": results["results"]})
    return 0
