"""The ``checkpoints/step-N`` + ``last`` protocol of training runs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from plugformer.checkpoint.durable import fsync_dir, fsync_tree
from plugformer.checkpoint.layout import LAST, STEP_PREFIX


class CheckpointDir:
    """Writes ``step-N`` directories atomically under ``root`` and keeps ``last`` pointing at the newest.

    Protocol (every rank may write into the temporary directory between the two calls):
    ``tmp = begin(step)`` on the main rank → files written into ``tmp_dir(step)`` → ``commit(step)`` on the
    main rank fsyncs, renames the directory to ``step-N``, swaps ``last`` and prunes old checkpoints.
    A crash before ``commit`` leaves only a ``.tmp-step-N`` directory, which is never read.
    """

    def __init__(self, root: Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last

    def step_dir(self, step: int) -> Path:
        """Where step ``step``'s checkpoint lives once committed."""
        return self.root / f"{STEP_PREFIX}{step}"

    def tmp_dir(self, step: int) -> Path:
        """Where step ``step``'s checkpoint is written before :meth:`commit`."""
        return self.root / f".tmp-{STEP_PREFIX}{step}"

    @property
    def last(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        link = self.root / LAST
        return link.resolve() if link.exists() else None

    def begin(self, step: int) -> Path:
        """A fresh, empty temporary directory for step ``step`` (leftovers of a crashed save removed)."""
        tmp = self.tmp_dir(step)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int) -> Path:
        """fsync the temporary directory, rename it to ``step-N``, re-point ``last``, prune old ones."""
        tmp, final = self.tmp_dir(step), self.step_dir(step)
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        link_tmp = self.root / f".{LAST}.tmp"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        os.symlink(final.name, link_tmp)
        os.replace(link_tmp, self.root / LAST)
        fsync_dir(self.root)
        self._prune(keep=final)
        return final

    def _prune(self, keep: Path) -> None:
        for stale in self.root.glob(f".tmp-{STEP_PREFIX}*"):  # leftovers of saves that crashed before commit
            shutil.rmtree(stale, ignore_errors=True)
        steps = sorted((p for p in self.root.glob(f"{STEP_PREFIX}*") if p.is_dir()),
                       key=lambda p: int(p.name[len(STEP_PREFIX):]))
        for old in steps[:-self.keep_last] if self.keep_last > 0 else []:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)


__all__ = ["CheckpointDir"]
