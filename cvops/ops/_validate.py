"""Argument checks shared by the functional API; each error names the op and the argument."""
import math


def check_choice(op, name, value, choices):
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"cvops.{op}: {name} must be one of {options}, got {value!r}")
    return value


def check_int(op, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"cvops.{op}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def check_positive_number(op, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"cvops.{op}: {name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"cvops.{op}: {name} must be a positive finite number, got {value!r}")
    return float(value)
