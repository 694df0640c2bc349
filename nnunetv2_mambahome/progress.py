"""Progress reporting for long dataset-building steps: tqdm when installed, plain prints otherwise."""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: Optional[int] = None) -> Iterator[T]:
    """Yield `items` while showing progress; tqdm is optional (part of the `data` extra)."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(f"{desc} ...", flush=True)
        for i, item in enumerate(items, 1):
            yield item
            print(f"{desc}: {i}" + (f"/{total}" if total is not None else ""), flush=True)
        return
    yield from tqdm(items, desc=desc, total=total, unit="item")
