"""Progress bars for long loops (dataset building, accuracy evaluation): tqdm, which nnU-Net depends on."""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "item") -> Iterator[T]:
    """Yield `items` while tqdm draws a progress bar on stderr (stdout stays for results)."""
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit)
