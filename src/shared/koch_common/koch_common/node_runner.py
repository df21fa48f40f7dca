"""The `main()` of every node: init, construct, spin, and shut down cleanly.

The only module of koch_common that touches rclpy, and only when called, so the cores stay
importable without ROS. A node that cannot start (missing port, bad parameter, missing
checkpoint) prints one line saying why and exits 1 instead of dumping a traceback.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any


def run_node(factory: Callable[[], Any], args: list[str] | None = None, threads: int = 1) -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from koch_common.cpu_budget import CpuRole, place_this_process
    from koch_common.ros_executor import DrainingExecutor

    # One thread per library for every node (the policy's inference and the control path's CPUs are set
    # by those nodes from their parameters): koch_common.cpu_budget.
    place_this_process(CpuRole.SUPPORT, None, 0)
    rclpy.init(args=args)
    try:
        node = factory()
    except Exception as err:  # reported in one line, then exit
        name = getattr(factory, "__name__", "node")
        print(f"{name}: error: {type(err).__name__}: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        raise SystemExit(1) from None
    # Everything built so far (rclpy, torch, the model, LeRobot) lives as long as the process. Frozen,
    # it is skipped by the garbage collector's full passes, which otherwise walk ~400k objects and
    # stall every callback for 0.1-0.3 s (several 30 Hz periods) whenever they run.
    gc.freeze()
    # Callback threads (timers, subscriptions) are created by the executor from this thread and
    # inherit its scheduling; the node's own worker threads, started above, keep normal priority.
    # A node that declares koch_common.realtime.RealtimeSettings has the parameter; others run normally.
    from koch_common.realtime import REALTIME_PRIORITY, make_current_thread_realtime

    priority = node.get_parameter(REALTIME_PRIORITY).value if node.has_parameter(REALTIME_PRIORITY) else 0
    if priority > 0:
        problem = make_current_thread_realtime(priority)
        if problem:
            node.get_logger().warning(problem)
        else:
            node.get_logger().info(f"callbacks run under SCHED_FIFO priority {priority}")
    executor = DrainingExecutor(threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
