"""Locks a fork() child gets fresh: another thread of the parent may have held one at fork(), and the
child, which has only the forking thread, would then wait on it forever."""

from __future__ import annotations

import os
import threading


def renew_after_fork(namespace: dict, name: str) -> None:
    """In a fork() child, replace the lock `namespace[name]` (a module's globals()) with a new one."""
    if hasattr(os, "register_at_fork"):  # POSIX
        os.register_at_fork(after_in_child=lambda: namespace.__setitem__(name, threading.Lock()))
