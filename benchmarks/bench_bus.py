"""Bus read benchmark: the follower's /joint_states read over the real dynamixel_sdk.

    python benchmarks/bench_bus.py [--quick] [--baudrate 1000000] [--return-delay-time 0]

The emulated follower (6 servos) runs in its own process (`python -m koch_sim.dxl_emulator`,
as in the sim) with wire timing on: each reply leaves only after the instruction's and the
reply's bytes would have crossed the wire at the servos' baud rate, plus each servo's
Return_Delay_Time. The driver's state read (`DynamixelBus.read_state`: Present_Current,
Velocity and Position, 10 bytes per servo) is then run back to back, as Fast Sync Read and as
plain Sync Read, and compared with the wire-limited rate computed from the packet sizes:

  instruction = 14 + N bytes (header 4, ID, LEN 2, INST, address 2, length 2, N IDs, CRC 2)
  fast reply  = 8 + N * (data + 4)  (one status packet: per servo ERR, ID, data, CRC)
  sync reply  = N * (11 + data)     (one status packet per servo)
  wire time   = bytes * 10 bits / baud  + Return_Delay_Time per reply

The ratio (measured rate / wire-limited rate) is the figure of merit (target >= 0.8); the
read latency (one read_state call, p50/p99) is printed next to it. Figures are taken in the
same run, so a loaded host lowers both the rate and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import Comparison, Figure, Target, record

from koch_common.robot import load_koch
from koch_driver.bus import STATE_LENGTH, DynamixelBus

BITS_PER_BYTE = 10


def wire_time_s(servos: int, data: int, baudrate: int, return_delay_s: float, fast: bool) -> float:
    instruction = 14 + servos
    if fast:
        reply = 8 + servos * (data + 4)
        delays = return_delay_s  # the chain starts after the first servo's delay
    else:
        reply = servos * (11 + data)
        delays = servos * return_delay_s
    return (instruction + reply) * BITS_PER_BYTE / baudrate + delays


def measure(bus: DynamixelBus, reads: int) -> tuple[float, np.ndarray]:
    for _ in range(20):  # warm-up
        bus.read_state()
    latencies = np.empty(reads)
    start = time.perf_counter()
    for index in range(reads):
        t0 = time.perf_counter()
        bus.read_state()
        latencies[index] = time.perf_counter() - t0
    return reads / (time.perf_counter() - start), latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 reads per mode instead of 3000")
    parser.add_argument("--baudrate", type=int, default=1_000_000)
    parser.add_argument("--return-delay-time", type=int, default=0, help="2 us units (the driver writes 0)")
    args = parser.parse_args(argv)
    if args.baudrate != 1_000_000:
        parser.error("the emulated servos run at 1000000 baud (Baud_Rate 3); keep --baudrate 1000000")
    reads = 500 if args.quick else 3000
    arm = load_koch().follower
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "follower"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        emulator = subprocess.Popen(
            [sys.executable, "-m", "koch_sim.dxl_emulator", "--arm", "follower", "--link", str(link),
             "--wire-timing", "--return-delay-time", str(args.return_delay_time)],
            stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert emulator.stdout is not None
            print(emulator.stdout.readline().strip())
            rows = []
            for fast in (True, False):
                with DynamixelBus(str(link), args.baudrate, arm.ids, {j.id: j.model for j in arm.joints},
                                  fast_sync_read=fast) as bus:
                    bus.ping_all()
                    assert bus.uses_fast_sync_read == fast
                    rate, latencies = measure(bus, reads)
                wire = wire_time_s(len(arm.ids), STATE_LENGTH, args.baudrate, args.return_delay_time * 2e-6, fast)
                rows.append((fast, rate, latencies, wire))
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    print(f"{len(arm.ids)} servos at {args.baudrate} baud, Return_Delay_Time {args.return_delay_time} "
          f"({args.return_delay_time * 2} us), wire timing on, {reads} back-to-back reads per mode")
    for fast, rate, latencies, wire in rows:
        name = "Fast Sync Read" if fast else "Sync Read     "
        print(f"{name}: {rate:7.1f} reads/s   wire-limited {1.0 / wire:7.1f}/s ({wire * 1e3:.3f} ms)   "
              f"ratio {rate * wire:.2f}   latency p50 {np.percentile(latencies, 50) * 1e3:.3f} ms "
              f"p99 {np.percentile(latencies, 99) * 1e3:.3f} ms")
    _, fast_rate, fast_latencies, fast_wire = rows[0]
    print(f"/joint_states read rate (driver default, Fast Sync Read): {fast_rate:.1f} Hz = "
          f"{fast_rate * fast_wire:.2f} x the wire limit (target >= 0.8); at the median read latency "
          f"{fast_wire / np.percentile(fast_latencies, 50):.2f} x (the mean includes the host's scheduling stalls)")
    figures = []
    for fast, rate, latencies, wire in rows:
        mode = "Fast Sync Read" if fast else "Sync Read"
        figures += [
            Figure(f"{mode} rate", rate, "reads/s"),
            Figure(f"{mode} wire limit", 1.0 / wire, "reads/s"),
            Figure(f"{mode} rate / wire limit", rate * wire, "x", Target(Comparison.AT_LEAST, 0.8) if fast else None),
            Figure(f"{mode} wire time / median latency", wire / np.percentile(latencies, 50), "x"),
            Figure(f"{mode} latency p50", np.percentile(latencies, 50) * 1e3, "ms"),
            Figure(f"{mode} latency p99", np.percentile(latencies, 99) * 1e3, "ms"),
        ]
    record("bus", figures, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
