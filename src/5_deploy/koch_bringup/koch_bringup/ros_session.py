"""An rclpy context with nodes spun on a background thread, shut down cleanly.

Used by the demo's orchestrator and by the tests: `close()` stops the spinning thread, lets the
callbacks already started finish, then shuts the executor down, destroys the nodes and shuts
the context down, in that order, so no thread is left spinning and no callback outlives its
executor at exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.publisher import Publisher

from koch_common.ros_executor import DrainingExecutor


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


def publish_until(publisher: Publisher, message: object, condition: Callable[[], bool], timeout: float = 10.0,
                  what: str = "condition", every: float = 1.0) -> None:
    """Publish `message` every `every` s until `condition` holds.

    A writer that sees a reader (`get_subscription_count() > 0`) does not mean the reader has matched the
    writer yet: a volatile sample sent in that window is dropped. Sending again is what a real client does.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(message)
        resend = min(deadline, time.monotonic() + every)
        while time.monotonic() < resend:
            if condition():
                return
            time.sleep(0.005)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
