"""An rclpy context with nodes spun on a background thread, shut down cleanly.

Used by the demo's orchestrator and by the tests: `close()` stops the spinning thread, lets the
callbacks already started finish, then shuts the executor down, destroys the nodes and shuts
the context down, in that order, so no thread is left spinning and no callback outlives its
executor at exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ExternalShutdownException,
    ShutdownException,
    TimeoutException,
)
from rclpy.node import Node
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

    def __init__(self, num_threads: int, *, context: Context) -> None:
        super().__init__(context=context)
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="ros-session")
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
                _log.error("a callback failed while the ROS session closed", exc_info=error)
        self._handlers.clear()
        return super().shutdown(timeout_sec)


class RosSession:
    def __init__(self, threads: int = 4) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = DrainingExecutor(threads, context=self.context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str) -> Node:
        return self.add(rclpy.create_node(name, context=self.context))

    def call(self, node: Node, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        """Call a service and wait for the response (the executor thread delivers it)."""
        client: Any = node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} is not available after {timeout} s")
            future = client.call_async(request)
            wait_for(future.done, timeout, f"response from {name}")
            return future.result()
        finally:
            node.destroy_client(client)

    def close(self) -> None:
        self.executor.stop_spinning()
        self._thread.join(timeout=5.0)
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        self.nodes.clear()
        rclpy.try_shutdown(context=self.context)


@contextmanager
def ros_session(threads: int = 4) -> Iterator[RosSession]:
    session = RosSession(threads)
    try:
        yield session
    finally:
        session.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
