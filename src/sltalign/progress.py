"""Progress that suits where it goes: a tqdm bar on a terminal, a few plain lines in a log file, nothing when asked.

A tqdm bar redraws itself with carriage returns; written to a file (a CI log, ``cmd 2> log``) every redraw
stays, and one "line" of a long run grew to 145,880 characters. So:

- ``TQDM_DISABLE`` set (to anything but 0/false/empty) or ``set_mode("off")`` (``sltalign -q``): no progress;
- ``set_mode("bar")`` (``sltalign --progress``) or stderr a terminal: a tqdm bar;
- otherwise: a plain line on stderr at most every ``LINE_SECONDS``, and one at the end.

``progress_bar(iterable, desc=..., total=..., unit=...)`` returns an object with tqdm's everyday interface
(iterate, ``update``, ``set_postfix``, ``close``, a context manager) whichever of the three it is.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

#: seconds between plain progress lines when stderr is not a terminal
LINE_SECONDS = 30.0
_MODES = ("auto", "bar", "lines", "off")
_mode = "auto"


def set_mode(mode: str) -> None:
    """ "auto" (bar on a terminal, lines otherwise), "bar", "lines" or "off", for this process."""
    global _mode
    if mode not in _MODES:
        raise ValueError(f"progress mode must be one of {_MODES}, got {mode!r}")
    _mode = mode


def _env_disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def resolve_mode() -> str:
    """What ``progress_bar`` will do now: "bar", "lines" or "off"."""
    if _mode == "off" or _env_disabled():
        return "off"
    if _mode in ("bar", "lines"):
        return _mode
    return "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "lines"


class LineProgress:
    """tqdm's everyday interface, written as rare plain lines: ``desc: n/total (p%) in Ts [postfix]``."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        desc: str = "",
        total: float | None = None,
        unit: str = "it",
        initial: float = 0,
        every: float = LINE_SECONDS,
        **_: Any,
    ) -> None:
        self.iterable = iterable
        self.desc, self.unit, self.n, self.every = desc, unit, initial, every
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.postfix = ""
        self.t0 = self.last = time.monotonic()
        self.closed = False

    def _emit(self) -> None:
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total:g}" if self.total else ""
        post = f" [{self.postfix}]" if self.postfix else ""
        # straight to stderr, not through logging: progress should show at the default level, and -q turns it off
        print(
            f"{self.desc or 'progress'}: {self.n:g}{of} {self.unit}{pct} in {time.monotonic() - self.t0:.0f} s{post}",
            file=sys.stderr,
            flush=True,
        )
        self.last = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self._emit()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n:
                self._emit()

    def __iter__(self) -> Iterator:
        try:
            for x in self.iterable or ():
                yield x
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar, a ``LineProgress`` or a silent pass-through, as ``resolve_mode`` decides.

    ``enabled=False`` (a caller that wants no progress, e.g. a library call with ``progress=False``) is always
    silent. Keyword arguments are tqdm's (desc, total, unit, initial, ...)."""
    mode = resolve_mode() if enabled else "off"
    if mode == "bar":
        from tqdm.auto import tqdm

        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, disable=False, **kwargs)
    if mode == "lines":
        return LineProgress(iterable, **kwargs)
    return _Silent(iterable, **kwargs)


class _Silent(LineProgress):
    """Counts like a bar and prints nothing."""

    def _emit(self) -> None:
        pass
