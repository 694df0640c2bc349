"""Replacing a file so that an interruption at any moment leaves either the old or the new file, never a torn one.

The new content goes to a temporary file in the same folder (same file system, so the final rename is atomic),
is flushed to disk with fsync, and replaces the target with `os.replace`; the folder is fsynced too, so the
rename itself survives a power cut. Used for training checkpoints (nnU-Net writes them in place, and a SIGINT
during `torch.save` would leave a truncated `checkpoint_latest.pth` that `--c` cannot resume from) and for
plans files.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Union


def _fsync(path: Union[str, Path], directory: bool = False) -> None:
    if directory and not hasattr(os, "O_DIRECTORY"):
        return  # Windows cannot open folders; its rename is already durable enough for us
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replaced_atomically(target: Union[str, Path]) -> Iterator[str]:
    """Yields a temporary path next to `target`; what the body writes there replaces `target` when it ends.

    If the body raises (KeyboardInterrupt included), the temporary file is removed and `target` is untouched. If
    the body writes nothing, nothing happens (e.g. a DDP rank that does not save). A process killed outright
    (SIGKILL) may leave the temporary `.<name>.partial` file behind; the next write to `target` reuses it.
    """
    target = Path(target)
    temporary = target.with_name(f".{target.name}.partial")
    try:
        yield str(temporary)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if temporary.exists():
        _fsync(temporary)
        os.replace(temporary, target)
        _fsync(target.parent, directory=True)
