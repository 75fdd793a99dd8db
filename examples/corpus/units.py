"""Temperature and pressure conversions used in the kitchen science notes."""

SEA_LEVEL_KPA = 101.325


def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert degrees Celsius to degrees Fahrenheit."""
    return celsius * 9 / 5 + 32


def boiling_point_at_altitude(metres: float) -> float:
    """Approximate boiling point of water in Celsius at a given altitude.

    Water boils about one degree lower for every 300 metres of elevation.
    """
    return 100.0 - metres / 300.0


class Kettle:
    """A kettle that heats water until it reaches the local boiling point."""

    def __init__(self, altitude_m: float = 0.0) -> None:
        self.altitude_m = altitude_m

    def target_temperature(self) -> float:
        return boiling_point_at_altitude(self.altitude_m)
