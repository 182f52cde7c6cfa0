"""What every `forgerytalker` command shares: argparse types for its flags and the way it reports a failure.

Kept free of torch and transformers, so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import sys


def whole_number(text: str) -> int:
    """argparse type: an integer (its range is checked where it is used, which names the flag)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def number(text: str) -> float:
    """argparse type: a decimal number or a ratio such as `1/9`."""
    numerator, _, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value:g}")
    return value


def fail(message: str, code: int) -> int:
    """Prints `error: message` to stderr and returns the command's exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code
