"""The multi-threaded executor every node process and the demo's ROS session spin: rclpy's
MultiThreadedExecutor with a shutdown that lets the callbacks already started finish first.

Imported only by code that runs rclpy (nodes, `koch_common.node_runner`, the demo's session): like
`node_params`, it is not part of the ROS-free core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rclpy.context import Context
from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ExternalShutdownException,
    ShutdownException,
    TimeoutException,
)
from rclpy.task import Task

_log = logging.getLogger(__name__)


class DrainingExecutor(Executor):
    """Callbacks on a pool of threads, as rclpy's MultiThreadedExecutor runs them, with a shutdown that
    first lets the callbacks already handed to the pool finish.

    rclpy's MultiThreadedExecutor.shutdown destroys the executor's guard condition before it waits for
    its pool: a callback still queued there (a message that arrived during the last wait) triggers
    that destroyed guard condition as it starts, and its Task keeps the InvalidHandle ("cannot use
    Destroyable because destruction was requested") where nothing retrieves it, so rclpy prints "The
    following exception was never retrieved" when the Task is collected, at the end of the program.
    Here `stop_spinning` ends `spin` without touching the guard condition, and `shutdown` destroys it
    only once the pool has run every callback it was given.
    """

    def __init__(self, num_threads: int, *, context: Context | None = None) -> None:
        super().__init__(context=context)
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="ros-callbacks")
        self._handlers: list[Task[None]] = []  # handed to the pool, not yet seen done (spinning thread only)
        self._stopping = threading.Event()

    def spin(self) -> None:
        while self._context.ok() and not self._is_shutdown and not self._stopping.is_set():
            self._spin_once(None, self._stopping.is_set)

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._spin_once(timeout_sec, self._stopping.is_set)

    def _spin_once_until_future_complete(self, future: Any, timeout_sec: Any = None) -> None:
        self._spin_once(timeout_sec, lambda: future.done() or self._stopping.is_set())

    def _spin_once(self, timeout_sec: Any, condition: Callable[[], bool]) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, condition)
        except (ShutdownException, ExternalShutdownException, TimeoutException, ConditionReachedException):
            return
        self._pool.submit(handler)
        self._handlers.append(handler)
        finished = [h for h in self._handlers if h.done()]
        self._handlers = [h for h in self._handlers if not h.done()]
        for done in finished:
            done.result()  # a callback's exception surfaces in `spin`, as with rclpy's executors

    def stop_spinning(self) -> None:
        """Make `spin` return (from any thread); the executor stays usable until `shutdown`."""
        self._stopping.set()
        self.wake()

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Call after `spin` returned: run the callbacks already handed out, then shut the executor down."""
        self._pool.shutdown(wait=True)
        for handler in self._handlers:
            if handler.done() and (error := handler.exception()) is not None:
                _log.error("a callback failed while the executor shut down", exc_info=error)
        self._handlers.clear()
        return super().shutdown(timeout_sec)
