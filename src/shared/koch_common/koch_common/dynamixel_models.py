"""Dynamixel control tables as data: one `ModelSpec` per supported model number.

Shared by the servo emulator (server side) and the driver's bus layer (client side) so
both agree on every address. Addresses follow the Robotis e-Manual for Protocol 2.0
X-series firmware; MX-64(2.0) uses the same layout for the fields listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

# X-series: addresses below 64 (Torque_Enable) are EEPROM and refuse writes while the torque is on.
EEPROM_END = 64
# Model_Number .. Indirect_Data_56 (address 661) on every model below.
CONTROL_TABLE_SIZE = 662
POSITION_TICKS_PER_TURN = 4096
VELOCITY_UNIT_RPM = 0.229
# Bit 7 of a status packet's error byte: the servo has a hardware error latched (Hardware_Error_Status).
STATUS_ALERT_BIT = 0x80

_X_SERIES_COMMON: dict[str, tuple[int, int]] = {
    "Model_Number": (0, 2),
    "Firmware_Version": (6, 1),
    "ID": (7, 1),
    "Baud_Rate": (8, 1),
    "Return_Delay_Time": (9, 1),
    "Drive_Mode": (10, 1),
    "Operating_Mode": (11, 1),
    "Homing_Offset": (20, 4),
    "Moving_Threshold": (24, 4),
    "Velocity_Limit": (44, 4),
    "Max_Position_Limit": (48, 4),
    "Min_Position_Limit": (52, 4),
    "Torque_Enable": (64, 1),
    "Hardware_Error_Status": (70, 1),
    "Position_D_Gain": (80, 2),
    "Position_I_Gain": (82, 2),
    "Position_P_Gain": (84, 2),
    "Goal_Velocity": (104, 4),
    "Profile_Acceleration": (108, 4),
    "Profile_Velocity": (112, 4),
    "Goal_Position": (116, 4),
    "Moving": (122, 1),
    # On the XL430 the 2 bytes at 126 are called Present_Load (0.1 % units); the name is kept
    # as Present_Current for every model so the driver reads one contiguous block 126..135.
    "Present_Current": (126, 2),
    "Present_Velocity": (128, 4),
    "Present_Position": (132, 4),
    "Present_Input_Voltage": (144, 2),
    "Present_Temperature": (146, 1),
}

_CURRENT_FIELDS: dict[str, tuple[int, int]] = {
    "Current_Limit": (38, 2),
    "Goal_Current": (102, 2),
}

# Two's-complement fields; everything else is unsigned.
SIGNED_FIELDS = frozenset(
    {
        "Homing_Offset",
        "Goal_Current",
        "Goal_Velocity",
        "Goal_Position",
        "Present_Current",
        "Present_Velocity",
        "Present_Position",
    }
)
# Writing these is an Access Error (0x07) on a real servo.
READ_ONLY_FIELDS = frozenset(
    {
        "Model_Number",
        "Firmware_Version",
        "Hardware_Error_Status",
        "Moving",
        "Present_Current",
        "Present_Velocity",
        "Present_Position",
        "Present_Input_Voltage",
        "Present_Temperature",
    }
)


@dataclass(frozen=True)
class ModelSpec:
    """One Dynamixel model: its control table (field name -> (address, size)) and defaults."""

    model_number: int
    name: str
    config_name: str
    fields: dict[str, tuple[int, int]]
    # Present_Current saturates here (raw units) when no Current_Limit field exists.
    current_saturation_raw: int = 1000
    default_current_limit_raw: int | None = None
    nominal_voltage_decivolt: int = 50
    # Oldest firmware that answers Fast Sync Read (0x8A); None: the driver uses plain Sync Read.
    fast_sync_read_min_firmware: int | None = 45

    def address(self, field_name: str) -> tuple[int, int]:
        """(address, size) of `field_name`; a clear error when this model lacks it."""
        try:
            return self.fields[field_name]
        except KeyError:
            raise KeyError(
                f"{self.name} (model number {self.model_number}) has no control table field "
                f"{field_name!r}; its fields are {sorted(self.fields)}"
            ) from None

    @property
    def has_current_control(self) -> bool:
        return "Goal_Current" in self.fields


def _x_series(with_current: bool) -> dict[str, tuple[int, int]]:
    fields = dict(_X_SERIES_COMMON)
    if with_current:
        fields.update(_CURRENT_FIELDS)
    return dict(sorted(fields.items(), key=lambda item: item[1][0]))


MODELS: dict[int, ModelSpec] = {
    spec.model_number: spec
    for spec in (
        ModelSpec(1190, "XL330-M077", "xl330-m077", _x_series(True), 1750, 1750, 50),
        ModelSpec(1200, "XL330-M288", "xl330-m288", _x_series(True), 1750, 1750, 50),
        ModelSpec(1060, "XL430-W250", "xl430-w250", _x_series(False), 1000, None, 115),
        ModelSpec(1020, "XM430-W350", "xm430-w350", _x_series(True), 1193, 1193, 120),
        # Fast Sync Read is documented for the X series; MX(2.0) stays on plain Sync Read.
        ModelSpec(311, "MX-64(2.0)", "mx-64", _x_series(True), 1941, 1941, 120, None),
    )
}

MODELS_BY_CONFIG_NAME: dict[str, ModelSpec] = {spec.config_name: spec for spec in MODELS.values()}


def shared_field(field_name: str) -> tuple[int, int]:
    """(address, size) of a field that every model above has at the same place: what one sync read or
    write of a whole arm (servos of several models) addresses."""
    places = {spec.address(field_name) for spec in MODELS.values()}
    if len(places) != 1:
        raise KeyError(f"{field_name!r} is not at one address on every model: {sorted(places)}")
    return places.pop()


def model_by_number(model_number: int) -> ModelSpec:
    try:
        return MODELS[model_number]
    except KeyError:
        known = ", ".join(f"{n} ({s.name})" for n, s in sorted(MODELS.items()))
        raise KeyError(f"unknown Dynamixel model number {model_number}; known: {known}") from None


def model_by_name(name: str) -> ModelSpec:
    """Look up by the lowercase names used in config/koch.yaml, e.g. "xl430-w250"."""
    try:
        return MODELS_BY_CONFIG_NAME[name.strip().lower()]
    except KeyError:
        raise KeyError(
            f"unknown Dynamixel model {name!r}; use one of {sorted(MODELS_BY_CONFIG_NAME)}"
        ) from None


def to_signed(value: int, size: int) -> int:
    """Unsigned little-endian field value -> two's-complement integer."""
    bits = 8 * size
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def to_unsigned(value: int, size: int) -> int:
    """Signed integer -> the unsigned field value a servo stores (two's complement)."""
    bits = 8 * size
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise ValueError(f"value {value} does not fit in a {size}-byte field")
    return value & ((1 << bits) - 1)


# Hardware_Error_Status (address 70) bits, as the e-Manual names them.
HARDWARE_ERROR_BITS: dict[int, str] = {
    0x01: "input voltage error",
    0x04: "overheating error",
    0x08: "motor encoder error",
    0x10: "electrical shock error",
    0x20: "overload error",
}

OPERATING_MODES: dict[str, int] = {
    "current": 0,
    "velocity": 1,
    "position": 3,
    "extended_position": 4,
    "current_position": 5,  # current-based position: grips without forcing
    "pwm": 16,
}


def decode_hardware_error(bits: int) -> list[str]:
    """Names of the Hardware_Error_Status bits set in `bits` (unknown bits by number)."""
    names = [name for bit, name in HARDWARE_ERROR_BITS.items() if bits & bit]
    unknown = bits & ~sum(HARDWARE_ERROR_BITS)
    if unknown:
        names.append(f"unknown bits 0x{unknown:02x}")
    return names
