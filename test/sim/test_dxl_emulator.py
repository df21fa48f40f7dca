"""The Protocol 2.0 servo emulator, exercised with the real dynamixel_sdk over its pty."""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dynamixel_sdk as sdk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from koch_common.dynamixel_models import MODELS, model_by_name
from koch_common.robot import load_koch
from koch_driver.bus import PatientPortHandler
from koch_sim import protocol2 as p2
from koch_sim.dxl_emulator import HW_OVERLOAD, DynamixelBusEmulator

# Packets printed in the Robotis e-Manual (Protocol 2.0 page), CRC included.
E_MANUAL_PACKETS = {
    "ping ID 1": "FF FF FD 00 01 03 00 01 19 4E",
    "ping status (model 1030, fw 38)": "FF FF FD 00 01 07 00 55 00 06 04 26 65 5D",
    "read 132/4 from ID 1": "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15",
    "read status, value 166": "FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0",
    "write 512 to 116": "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89",
    "write status": "FF FF FD 00 01 04 00 55 00 A1 0C",
    "sync read 132/4 from IDs 1,2": "FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA",
}
ADDR_TORQUE = 64
ADDR_GOAL = 116
ADDR_PRESENT_CURRENT = 126
ADDR_PRESENT_POSITION = 132


# A loaded CI host can starve the emulator's thread: wait up to 1 s more for a reply, so
# only a protocol error, never scheduling, fails these tests.
TEST_SLACK_MS = 1000.0


def follower_servos() -> list[tuple[int, int]]:
    arm = load_koch().follower
    return [(j.id, model_by_name(j.model).model_number) for j in arm.joints]


@pytest.fixture
def emulator() -> Iterator[DynamixelBusEmulator]:
    with DynamixelBusEmulator(follower_servos(), time_constant_s=0.06) as emu:
        yield emu


@pytest.fixture
def port(emulator: DynamixelBusEmulator) -> Iterator[sdk.PortHandler]:
    handler = PatientPortHandler(emulator.port, TEST_SLACK_MS)
    assert handler.setBaudRate(1_000_000), "a pty must accept 1 Mbps like a U2D2 adapter"
    yield handler
    handler.closePort()


@pytest.fixture
def packets() -> sdk.Protocol2PacketHandler:
    return sdk.PacketHandler(2.0)


# -- framing --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(E_MANUAL_PACKETS))
def test_crc_matches_e_manual_packets(name: str) -> None:
    packet = bytes.fromhex(E_MANUAL_PACKETS[name])
    assert p2.crc16(packet[:-2]) == packet[-2] | (packet[-1] << 8)


def test_built_packets_equal_e_manual_bytes() -> None:
    assert p2.build_packet(1, p2.INST_PING) == bytes.fromhex(E_MANUAL_PACKETS["ping ID 1"])
    assert p2.build_status(1, 0, bytes([0x06, 0x04, 0x26])) == bytes.fromhex(
        E_MANUAL_PACKETS["ping status (model 1030, fw 38)"]
    )
    assert p2.build_packet(1, p2.INST_WRITE, bytes([0x74, 0x00, 0x00, 0x02, 0x00, 0x00])) == bytes.fromhex(
        E_MANUAL_PACKETS["write 512 to 116"]
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_crc_equals_robotis_sdk_table(data: bytes) -> None:
    assert p2.crc16(data) == sdk.PacketHandler(2.0).updateCRC(0, list(data), len(data))


def test_stuffing_inserts_fd_after_header_pattern() -> None:
    assert p2.stuff(b"\x03\xff\xff\xfd\x01") == b"\x03\xff\xff\xfd\xfd\x01"
    assert p2.unstuff(b"\x03\xff\xff\xfd\xfd\x01") == b"\x03\xff\xff\xfd\x01"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0xFF, 0xFD, 0x00, 0x01]), max_size=40).map(bytes))
def test_stuffing_round_trip_and_parser(payload: bytes) -> None:
    stuffed = p2.stuff(payload)
    assert p2.unstuff(stuffed) == payload
    assert b"\xff\xff\xfd\x00" not in stuffed
    packet = p2.build_packet(7, p2.INST_WRITE, payload)
    parser = p2.PacketParser()
    # Delivered in two pieces, with line noise before it, as a serial read may split it.
    parsed = parser.feed(b"\x00\xff" + packet[:5]) + parser.feed(packet[5:])
    assert parsed == [p2.Packet(7, p2.INST_WRITE, payload)]


def test_parser_drops_bad_crc_then_resynchronises() -> None:
    good = p2.build_packet(1, p2.INST_PING)
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    parser = p2.PacketParser()
    assert parser.feed(bytes(corrupt) + good) == [p2.Packet(1, p2.INST_PING, b"")]
    assert parser.crc_errors == 1


# -- served over the pty to the real SDK ----------------------------------------------------------


def test_ping_returns_each_model_number(emulator, port, packets) -> None:
    for servo_id, model in follower_servos():
        model_number, result, error = packets.ping(port, servo_id)
        assert (result, error, model_number) == (sdk.COMM_SUCCESS, 0, model)
    _, result, _ = packets.ping(port, 9)
    assert result == sdk.COMM_RX_TIMEOUT  # no servo 9: silence, as on a real bus


def test_broadcast_ping_lists_every_servo_in_id_order(emulator, port, packets) -> None:
    found, result = packets.broadcastPing(port)
    assert result == sdk.COMM_SUCCESS
    assert found == {servo_id: [model, 52] for servo_id, model in follower_servos()}
    assert list(found) == sorted(found)


def test_read_and_write_fields(emulator, port, packets) -> None:
    assert packets.read2ByteTxRx(port, 3, 0) == (1200, sdk.COMM_SUCCESS, 0)  # Model_Number
    assert packets.read1ByteTxRx(port, 3, 11) == (3, sdk.COMM_SUCCESS, 0)  # Operating_Mode
    assert packets.read4ByteTxRx(port, 3, 48) == (4095, sdk.COMM_SUCCESS, 0)  # Max_Position_Limit
    assert packets.read4ByteTxRx(port, 3, ADDR_PRESENT_POSITION) == (2048, sdk.COMM_SUCCESS, 0)
    assert packets.write1ByteTxRx(port, 3, 9, 0) == (sdk.COMM_SUCCESS, 0)  # Return_Delay_Time
    assert packets.read1ByteTxRx(port, 3, 9) == (0, sdk.COMM_SUCCESS, 0)
    assert emulator.read_field(3, "Return_Delay_Time") == 0
    # Read-only field, and an address past the end of the table: Access Error.
    assert packets.write4ByteTxRx(port, 3, ADDR_PRESENT_POSITION, 5) == (sdk.COMM_SUCCESS, 7)
    _, result, error = packets.readTxRx(port, 3, 660, 5)
    assert (result, error) == (sdk.COMM_SUCCESS, 7)


def test_values_with_header_bytes_are_stuffed_both_ways(emulator, port, packets) -> None:
    # Data FF FF FD FD: an unstuffed reply would lose a byte in the SDK's removeStuffing.
    # dynamixel_sdk 4.1.0 drops the result of its own addStuffing on TX (txPacket ignores the
    # new list), so the stuffed request is written here as a real client's bytes would be.
    value = 0xFDFDFFFF
    assert packets.write1ByteTxRx(port, 2, 11, 4) == (sdk.COMM_SUCCESS, 0)  # extended position
    request = p2.build_packet(2, p2.INST_WRITE, bytes([ADDR_GOAL, 0]) + value.to_bytes(4, "little"))
    assert b"\xff\xff\xfd\xfd\xfd" in request
    port.clearPort()
    port.writePort(request)
    port.setPacketTimeout(11)
    status, result = packets.rxPacket(port, False)
    assert (result, status[8]) == (sdk.COMM_SUCCESS, 0)
    assert emulator.read_field(2, "Goal_Position") == value - (1 << 32)
    # The reply carries the same bytes: the emulator stuffs them and the SDK removes the stuffing.
    assert packets.read4ByteTxRx(port, 2, ADDR_GOAL) == (value, sdk.COMM_SUCCESS, 0)


def test_unknown_instruction_gets_instruction_error(emulator, port, packets) -> None:
    txpacket = [0] * 10
    txpacket[4], txpacket[5], txpacket[7] = 1, 3, 0x20  # ID 1, LEN 3, undefined instruction
    rxpacket, result, error = packets.txRxPacket(port, txpacket)
    assert (result, error) == (sdk.COMM_SUCCESS, 0x02)


def test_eeprom_write_refused_while_torque_on(emulator, port, packets) -> None:
    assert packets.write1ByteTxRx(port, 4, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
    assert packets.write1ByteTxRx(port, 4, 11, 4) == (sdk.COMM_SUCCESS, 7)  # Operating_Mode
    assert emulator.read_field(4, "Operating_Mode") == 3
    assert packets.write1ByteTxRx(port, 4, ADDR_TORQUE, 0) == (sdk.COMM_SUCCESS, 0)
    assert packets.write1ByteTxRx(port, 4, 11, 4) == (sdk.COMM_SUCCESS, 0)
    assert emulator.read_field(4, "Operating_Mode") == 4


def test_goal_outside_position_limits_is_a_data_limit_error(emulator, port, packets) -> None:
    assert packets.write4ByteTxRx(port, 5, ADDR_GOAL, 5000) == (sdk.COMM_SUCCESS, 6)
    assert emulator.read_field(5, "Goal_Position") == 2048


def test_reboot_turns_torque_off(emulator, port, packets) -> None:
    assert packets.write1ByteTxRx(port, 6, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
    assert packets.reboot(port, 6) == (sdk.COMM_SUCCESS, 0)
    assert emulator.read_field(6, "Torque_Enable") == 0


def test_sync_write_and_sync_read_six_servos(emulator, port, packets) -> None:
    ids = [servo_id for servo_id, _ in follower_servos()]
    goals = {servo_id: 1500 + 100 * servo_id for servo_id in ids}
    torque = sdk.GroupSyncWrite(port, packets, ADDR_TORQUE, 1)
    writer = sdk.GroupSyncWrite(port, packets, ADDR_GOAL, 4)
    for servo_id in ids:
        torque.addParam(servo_id, [1])
        writer.addParam(servo_id, list(goals[servo_id].to_bytes(4, "little")))
    assert torque.txPacket() == sdk.COMM_SUCCESS
    assert writer.txPacket() == sdk.COMM_SUCCESS
    time.sleep(0.6)  # 10 time constants
    reader = sdk.GroupSyncRead(port, packets, ADDR_PRESENT_POSITION, 4)
    for servo_id in ids:
        reader.addParam(servo_id)
    assert reader.txRxPacket() == sdk.COMM_SUCCESS
    read = {servo_id: reader.getData(servo_id, ADDR_PRESENT_POSITION, 4) for servo_id in ids}
    assert read == goals
    assert emulator.present_positions() == goals


def test_torque_on_position_follows_first_order_response(packets) -> None:
    tau = 0.2
    step = 1000
    with DynamixelBusEmulator([(1, 1200)], time_constant_s=tau) as emu:
        handler = PatientPortHandler(emu.port, TEST_SLACK_MS)
        assert handler.setBaudRate(1_000_000)
        try:
            assert packets.write1ByteTxRx(handler, 1, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
            before_write = time.monotonic()
            assert packets.write4ByteTxRx(handler, 1, ADDR_GOAL, 2048 + step) == (sdk.COMM_SUCCESS, 0)
            after_write = time.monotonic()
            samples = []
            for _ in range(4):
                time.sleep(0.08)
                before_read = time.monotonic()
                data, result, error = packets.readTxRx(handler, 1, ADDR_PRESENT_CURRENT, 10)
                after_read = time.monotonic()
                assert (result, error) == (sdk.COMM_SUCCESS, 0)
                samples.append((before_read - after_write, after_read - before_write, bytes(data)))
        finally:
            handler.closePort()
    for earliest, latest, data in samples:
        current = int.from_bytes(data[0:2], "little", signed=True)
        velocity = int.from_bytes(data[2:6], "little", signed=True)
        position = int.from_bytes(data[6:10], "little", signed=True)
        low = 2048 + step * (1 - math.exp(-earliest / tau)) - 1
        high = 2048 + step * (1 + 1e-9 - math.exp(-latest / tau)) + 1
        assert low <= position <= high
        # Velocity is the derivative of the same response: (goal - x) / tau, in 0.229 rpm units.
        expected_velocity = (2048 + step - position) / tau * 60 / 4096 / 0.229
        assert velocity == pytest.approx(expected_velocity, rel=0.02, abs=2)
        assert velocity > 0
        assert 0 < current <= 1750  # pushes toward the goal, clipped at Current_Limit


def test_torque_off_holds_position_and_can_be_moved_by_hand(emulator, port, packets) -> None:
    assert packets.write4ByteTxRx(port, 1, ADDR_GOAL, 3000) == (sdk.COMM_SUCCESS, 0)
    time.sleep(0.2)
    assert packets.read4ByteTxRx(port, 1, ADDR_PRESENT_POSITION)[0] == 2048  # no torque, no motion
    emulator.set_present_position(1, 2500)
    assert packets.read4ByteTxRx(port, 1, ADDR_PRESENT_POSITION) == (2500, sdk.COMM_SUCCESS, 0)
    # Torque on re-syncs the goal to where the hand left the joint: no jump to the stale 3000.
    assert packets.write1ByteTxRx(port, 1, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
    time.sleep(0.2)
    assert packets.read4ByteTxRx(port, 1, ADDR_PRESENT_POSITION)[0] == 2500
    with pytest.raises(RuntimeError, match="torque on"):
        emulator.set_present_position(1, 2000)


def test_bad_crc_gets_no_reply(emulator, port, packets) -> None:
    corrupt = bytearray(bytes.fromhex(E_MANUAL_PACKETS["ping ID 1"]))
    corrupt[-2] ^= 0x01
    port.clearPort()
    port.writePort(bytes(corrupt))
    readable, _, _ = select.select([port.ser.fileno()], [], [], 0.2)
    assert readable == []
    model_number, result, _ = packets.ping(port, 1)  # the bus is still in sync afterwards
    assert (model_number, result) == (1060, sdk.COMM_SUCCESS)


def test_link_is_created_replaced_and_removed(tmp_path: Path) -> None:
    link = tmp_path / "nested" / "follower"
    link.parent.mkdir()
    link.symlink_to("/dev/does-not-exist")  # stale, from a crashed run
    with DynamixelBusEmulator([(1, 1190)], link_path=str(link)) as emu:
        assert os.readlink(link) == emu.port
        handler = PatientPortHandler(str(link), TEST_SLACK_MS)
        assert handler.setBaudRate(1_000_000)
        assert sdk.PacketHandler(2.0).ping(handler, 1)[:2] == (1190, sdk.COMM_SUCCESS)
        handler.closePort()
    assert not link.exists() and not link.is_symlink()


def test_every_model_starts_with_its_model_number() -> None:
    servos = [(index + 1, model) for index, model in enumerate(sorted(MODELS))]
    with DynamixelBusEmulator(servos) as emu:
        for servo_id, model in servos:
            assert emu.read_field(servo_id, "Model_Number") == model
            assert emu.read_field(servo_id, "Present_Position") == 2048


def test_cli_serves_the_leader_arm_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "leader"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "koch_sim.dxl_emulator", "--arm", "leader", "--link", str(link)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "leader servos [1, 2, 3, 4, 5, 6]" in line, line + (proc.stderr.read() if proc.stderr else "")
        handler = PatientPortHandler(str(link), TEST_SLACK_MS)
        assert handler.setBaudRate(1_000_000)
        for servo_id in range(1, 7):
            assert sdk.PacketHandler(2.0).ping(handler, servo_id)[:2] == (1190, sdk.COMM_SUCCESS)
        handler.closePort()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not link.is_symlink()


# -- fidelity: alert bit, Fast Sync Read, wire timing, baud, faults ----------------------------


def test_hardware_error_sets_the_alert_bit_until_reboot(emulator, port, packets) -> None:
    assert packets.write1ByteTxRx(port, 2, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
    emulator.set_hardware_error(2, HW_OVERLOAD)
    model, result, error = packets.ping(port, 2)
    assert (model, result, error) == (1060, sdk.COMM_SUCCESS, 0x80)
    assert packets.read1ByteTxRx(port, 2, 70) == (HW_OVERLOAD, sdk.COMM_SUCCESS, 0x80)
    assert packets.read1ByteTxRx(port, 2, ADDR_TORQUE)[0] == 0, "overload is a shutdown error: torque off"
    assert packets.ping(port, 1)[2] == 0, "other servos are unaffected"
    assert packets.reboot(port, 2)[:2] == (sdk.COMM_SUCCESS, 0)
    assert packets.read1ByteTxRx(port, 2, 70) == (0, sdk.COMM_SUCCESS, 0)


def test_fast_sync_read_reply_layout_and_sdk_decoding(emulator, port, packets) -> None:
    emulator.set_present_position(3, 1234)
    # Raw packet: one status from the broadcast ID; per servo ERR, ID, 4 data bytes, CRC.
    instruction = p2.build_packet(p2.BROADCAST_ID, p2.INST_FAST_SYNC_READ, bytes([132, 0, 4, 0, 1, 3]))
    port.clearPort()
    port.writePort(instruction)
    reply = _read_exactly(port, 8 + 2 * 8)
    assert reply[:8] == bytes([0xFF, 0xFF, 0xFD, 0x00, 0xFE, 17, 0, 0x55])
    first, second = reply[8:16], reply[16:24]
    assert first[:6] == bytes([0, 1]) + (2048).to_bytes(4, "little")
    assert first[6] | (first[7] << 8) == p2.crc16(reply[:14]), "a servo's CRC covers the packet so far"
    assert second[:6] == bytes([0, 3]) + (1234).to_bytes(4, "little")
    assert second[6] | (second[7] << 8) == p2.crc16(reply[:22])
    reader = sdk.GroupSyncRead(port, packets, ADDR_PRESENT_POSITION, 4)
    for servo_id in range(1, 7):
        reader.addParam(servo_id)
    assert reader.fastSyncRead() == sdk.COMM_SUCCESS
    assert [reader.getData(i, ADDR_PRESENT_POSITION, 4) for i in range(1, 7)] == [2048, 2048, 1234, 2048, 2048, 2048]


def _read_exactly(port: sdk.PortHandler, count: int, timeout_s: float = 1.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout_s
    while len(data) < count and time.monotonic() < deadline:
        data += bytes(port.readPort(count - len(data)))
    return data


def test_wire_timing_delays_replies_by_bytes_and_return_delay() -> None:
    rdt = 250  # 500 us, the factory default
    with DynamixelBusEmulator([(1, 1200)], wire_timing=True, return_delay_time=rdt) as emu:
        handler = PatientPortHandler(emu.port, TEST_SLACK_MS)
        assert handler.setBaudRate(1_000_000)
        packets = sdk.PacketHandler(2.0)
        elapsed = []
        for _ in range(5):
            start = time.perf_counter()
            assert packets.ping(handler, 1)[1] == sdk.COMM_SUCCESS
            elapsed.append(time.perf_counter() - start)
        # ping 10 bytes + status 14 bytes at 10 bits each, plus 500 us: never sooner than the wire allows.
        assert min(elapsed) >= (10 + 14) * 10 / 1_000_000 + rdt * 2e-6
        handler.closePort()


def test_servos_at_another_baud_rate_stay_silent(emulator, port, packets) -> None:
    assert port.setBaudRate(57600)
    assert packets.ping(port, 1)[1] == sdk.COMM_RX_TIMEOUT
    assert emulator.baud_mismatches >= 1
    assert port.setBaudRate(1_000_000)
    assert packets.ping(port, 1)[:2] == (1060, sdk.COMM_SUCCESS)


def test_dropped_and_corrupted_replies(emulator, port, packets) -> None:
    emulator.drop_replies(1, servo_id=1)
    assert packets.ping(port, 1)[1] == sdk.COMM_RX_TIMEOUT
    emulator.corrupt_replies(1)
    assert packets.ping(port, 4)[1] == sdk.COMM_RX_CORRUPT
    assert packets.ping(port, 1)[:2] == (1060, sdk.COMM_SUCCESS)
    assert emulator.faults.applied == {"dropped": 1, "corrupted": 1}


def test_unplug_and_replug_keep_servo_state(tmp_path: Path) -> None:
    link = tmp_path / "follower"
    with DynamixelBusEmulator([(1, 1200)], link_path=str(link)) as emu:
        handler = PatientPortHandler(str(link), TEST_SLACK_MS)
        assert handler.setBaudRate(1_000_000)
        packets = sdk.PacketHandler(2.0)
        assert packets.write4ByteTxRx(handler, 1, ADDR_GOAL, 3000) == (sdk.COMM_SUCCESS, 0)
        emu.unplug()
        assert not link.is_symlink()
        with pytest.raises(Exception):  # noqa: B017 - pyserial/termios/OSError, whichever the SDK hits first
            packets.ping(handler, 1)
        handler.closePort()
        emu.replug()
        handler = PatientPortHandler(str(link), TEST_SLACK_MS)
        assert handler.setBaudRate(1_000_000)
        assert packets.read4ByteTxRx(handler, 1, ADDR_GOAL) == (3000, sdk.COMM_SUCCESS, 0)
        handler.closePort()


def test_current_based_position_servo_yields_to_a_hand_and_springs_back(emulator, port, packets) -> None:
    assert packets.write1ByteTxRx(port, 6, 11, 5) == (sdk.COMM_SUCCESS, 0)  # current-based position
    assert packets.write1ByteTxRx(port, 6, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
    emulator.set_present_position(6, 2448)
    position, _, _ = packets.read4ByteTxRx(port, 6, ADDR_PRESENT_POSITION)
    assert position == 2448
    assert sdk_signed16(packets.read2ByteTxRx(port, 6, ADDR_PRESENT_CURRENT)[0]) < 0  # pushing back
    time.sleep(0.5)
    assert abs(packets.read4ByteTxRx(port, 6, ADDR_PRESENT_POSITION)[0] - 2048) <= 1
    assert packets.write1ByteTxRx(port, 3, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
    with pytest.raises(RuntimeError, match="current-based position"):
        emulator.set_present_position(3, 2448)  # plain position mode holds against the hand


def sdk_signed16(value: int) -> int:
    return value - 0x10000 if value >= 0x8000 else value


def test_recorded_goals_are_every_goal_received_applied_or_refused(emulator, port, packets) -> None:
    assert emulator.take_goals() == []  # not recording yet
    packets.write4ByteTxRx(port, 1, ADDR_GOAL, 2100)
    emulator.record_goals()
    writer = sdk.GroupSyncWrite(port, packets, ADDR_GOAL, 4)
    for servo_id in (1, 2):
        writer.addParam(servo_id, list((2000 + servo_id).to_bytes(4, "little")))
    assert writer.txPacket() == sdk.COMM_SUCCESS
    assert packets.write4ByteTxRx(port, 5, ADDR_GOAL, 5000) == (sdk.COMM_SUCCESS, 6)  # refused: a limit
    assert packets.write1ByteTxRx(port, 3, ADDR_TORQUE, 1) == (sdk.COMM_SUCCESS, 0)  # not a goal
    time.sleep(0.05)
    goals = emulator.take_goals()
    assert [(servo_id, raw) for _, servo_id, raw in goals] == [(1, 2001), (2, 2002), (5, 5000)]
    assert [t for t, _, _ in goals] == sorted(t for t, _, _ in goals)
    assert emulator.take_goals() == []
