"""Threads whose names the operating system sees too.

Python 3.11 names a thread for Python only: ``top -H``, ``ps -L`` and
``/proc/<pid>/task/<tid>/comm`` show every thread of a worker as ``python``, so which of them
burns a core (the feeding loop, an inference thread, the delivery reports) cannot be told from
outside. librdkafka names its own threads (``rdk:main``, ``rdk:broker<id>``); ours get their
Python names the same way.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from typing import Any

_PR_SET_NAME = 15
OS_NAME_BYTES = 15
"""Linux keeps the first 15 bytes of a thread's name."""


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def name_os_thread(name: str) -> None:
    """Give the calling thread this name in the OS (its first 15 bytes); a no-op where the OS
    has no such call. Names the thread, not the process: call it from the thread itself."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:OS_NAME_BYTES]), 0, 0, 0)


def named_thread(
    target: Callable[..., Any], name: str, args: tuple[Any, ...] = (), daemon: bool = True
) -> threading.Thread:
    """A ``threading.Thread`` (not started) that names itself in the OS before it runs
    ``target``; once its ``start`` returns, the OS shows the name (not only soon after)."""
    return _NamedThread(target, name, args, daemon)


class _NamedThread(threading.Thread):
    def __init__(
        self, target: Callable[..., Any], name: str, args: tuple[Any, ...], daemon: bool
    ) -> None:
        super().__init__(name=name, daemon=daemon)
        self._run_target = target
        self._run_args = args
        self._named = threading.Event()

    def start(self) -> None:
        super().start()
        self._named.wait()

    def run(self) -> None:
        try:
            name_os_thread(self.name)
        finally:
            self._named.set()
        self._run_target(*self._run_args)
