"""Settings from the packaged defaults, a config file, the environment and flags.

Precedence, lowest first: the packaged ``poller.toml`` < ``--config FILE`` (or
``POLLER_CONFIG``) < ``POLLER_<SECTION>_<KEY>`` environment variables < flags.
Every value is checked where it comes from, so a mistake is reported with the
file (or variable, or flag) and the key that hold it, never replaced by a
silent default.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from poller.errors import InvalidRequestError

__all__ = [
    "KEYS",
    "RANGES",
    "ConfigError",
    "Kind",
    "Settings",
    "defaults_path",
    "load_settings",
    "parse_duration",
]

CONFIG_ENV: Final = "POLLER_CONFIG"
ENV_PREFIX: Final = "POLLER_"


class ConfigError(InvalidRequestError):
    """A setting that cannot be used; the message names where it came from."""


class Kind(enum.Enum):
    """What a setting holds, which decides how it is parsed and checked."""

    TIMEOUT = "duration, or none"  # a duration, or "none" for no deadline
    DURATION = "duration"  # > 0
    GRACE = "duration (>= 0)"  # >= 0
    FLOAT = "number"
    INT = "whole number"
    BOOL = "true or false"
    STR = "string"
    LOG_FORMAT = "auto, json or console"
    LOG_LEVEL = "debug, info, warning or error"


# (section, key) -> (kind, the Settings field it fills). The packaged
# poller.toml must define exactly these keys; a test keeps the two in sync.
KEYS: Final[Mapping[tuple[str, str], tuple[Kind, str]]] = {
    ("wait", "timeout"): (Kind.TIMEOUT, "timeout"),
    ("wait", "interval"): (Kind.DURATION, "interval"),
    ("wait", "max_interval"): (Kind.DURATION, "max_interval"),
    ("wait", "multiplier"): (Kind.FLOAT, "multiplier"),
    ("wait", "jitter"): (Kind.FLOAT, "jitter"),
    ("wait", "allow_partial"): (Kind.BOOL, "allow_partial"),
    ("wait", "not_found_grace"): (Kind.GRACE, "not_found_grace"),
    ("wait", "max_rps"): (Kind.FLOAT, "max_rps"),
    ("wait", "others_throttled"): (Kind.FLOAT, "others_throttled"),
    ("wait", "history"): (Kind.BOOL, "history"),
    ("retry", "initial"): (Kind.DURATION, "retry_initial"),
    ("retry", "max"): (Kind.DURATION, "retry_max"),
    ("retry", "max_errors"): (Kind.INT, "max_errors"),
    ("aws", "region"): (Kind.STR, "region"),
    ("aws", "profile"): (Kind.STR, "profile"),
    ("aws", "endpoint_url"): (Kind.STR, "endpoint_url"),
    ("aws", "connect_timeout"): (Kind.DURATION, "connect_timeout"),
    ("aws", "read_timeout"): (Kind.DURATION, "read_timeout"),
    ("log", "format"): (Kind.LOG_FORMAT, "log_format"),
    ("log", "level"): (Kind.LOG_LEVEL, "log_level"),
}
SECTIONS: Final = frozenset(section for section, _ in KEYS)
LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, resolved; durations in seconds, ``timeout=None`` for no deadline."""

    timeout: float | None
    interval: float
    max_interval: float
    multiplier: float
    jitter: float
    allow_partial: bool
    not_found_grace: float
    max_rps: float
    others_throttled: float
    history: bool
    retry_initial: float
    retry_max: float
    max_errors: int
    region: str
    profile: str
    endpoint_url: str
    connect_timeout: float
    read_timeout: float
    log_format: str
    log_level: str

    def policy(self) -> Any:
        """The PollPolicy these settings describe (InvalidRequestError if inconsistent)."""
        from poller._policy import PollPolicy  # noqa: PLC0415  # keeps `--help` light

        return PollPolicy(
            timeout=self.timeout,
            interval=self.interval,
            max_interval=self.max_interval,
            multiplier=self.multiplier,
            jitter=self.jitter,
            not_found_grace=self.not_found_grace,
            retry_initial=self.retry_initial,
            retry_max=self.retry_max,
            max_errors=self.max_errors,
            history=self.history,
        )

    def budget(self, client: object) -> Any:
        """``client``'s account budget (`budget_for`), set to these ``max_rps`` and
        ``others_throttled``."""
        from poller._limiter import budget_for  # noqa: PLC0415  # keeps `--help` light

        return budget_for(client, self.max_rps, others_throttled=self.others_throttled)


# ---------------------------------------------------------------------------
# Durations

_UNITS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# As Python's float() reads a number, exponent included (`1e3`), as --max-rps takes it.
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
_PLAIN = re.compile(_NUMBER)
_PART = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_COMPOUND = re.compile(rf"(?:{_NUMBER}(?:ms|h|m|s))+")
DURATION_HELP: Final = "seconds (90, 0.5) or a suffix: 250ms, 2s, 5m, 1h, 1h30m"


def parse_duration(value: object, *, allow_none: bool = False) -> float | None:
    """Seconds from ``90``, ``0.5``, ``"250ms"``, ``"2s"``, ``"5m"``, ``"1h30m"`` (or ``"none"``).

    Raises ValueError with a message fit for a person; negative, infinite and
    unparseable values are refused.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if allow_none and text == "none":
            return None
        if text.startswith("-"):
            raise ValueError(f"a duration cannot be negative: {value!r}")
        if _PLAIN.fullmatch(text):
            seconds = float(text)
        elif _COMPOUND.fullmatch(text):
            seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
        else:
            also = ", or none" if allow_none else ""
            raise ValueError(f"not a duration: {value!r} (use {DURATION_HELP}{also})")
    else:
        raise ValueError(f"expected a duration, got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite: {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


# ---------------------------------------------------------------------------
# Values


def _convert(kind: Kind, value: object, *, from_text: bool) -> Any:
    """The typed value of a setting; ``from_text`` for environment strings (TOML is typed)."""
    if kind is Kind.TIMEOUT:
        return parse_duration(value, allow_none=True)
    if kind in (Kind.DURATION, Kind.GRACE):
        seconds = parse_duration(value)
        assert seconds is not None
        if kind is Kind.DURATION and seconds <= 0:
            raise ValueError(f"must be more than 0 seconds, got {value!r}")
        return seconds
    if kind is Kind.BOOL:
        if from_text and isinstance(value, str):
            word = value.strip().lower()
            if word in ("true", "1", "yes", "on"):
                return True
            if word in ("false", "0", "no", "off", ""):
                return False
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {value!r}")
    if kind is Kind.INT:
        if from_text and isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"expected a whole number, got {value!r}")
    if kind is Kind.FLOAT:
        if from_text and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value!r}")
            return float(value)
        raise ValueError(f"expected a number, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    if kind is Kind.LOG_FORMAT and value.lower() not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    if kind is Kind.LOG_LEVEL and value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower() if kind in (Kind.LOG_FORMAT, Kind.LOG_LEVEL) else value


#: (section, key) -> the lowest and highest value allowed, and the rule said when outside.
RANGES: Final[Mapping[tuple[str, str], tuple[float, float, str]]] = {
    ("wait", "multiplier"): (1.0, math.inf, "must be >= 1"),
    ("wait", "jitter"): (0.0, 1.0, "must be between 0 and 1"),
    # A budget of 0 calls a second would never poll; the smallest useful one is tiny.
    ("wait", "max_rps"): (0.01, math.inf, "must be at least 0.01 calls a second"),
    ("wait", "others_throttled"): (0.0, 0.5, "must be a share between 0 and 0.5"),
    ("retry", "max_errors"): (1, math.inf, "must be >= 1"),
}


def _checked(section: str, key: str, value: object, *, where: str, from_text: bool) -> Any:
    kind, _ = KEYS[section, key]
    try:
        typed = _convert(kind, value, from_text=from_text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    low, high, rule = RANGES.get((section, key), (-math.inf, math.inf, ""))
    if rule and not (low <= typed <= high):
        raise ConfigError(f"{where}: {rule}, got {value!r}")
    return typed


# ---------------------------------------------------------------------------
# Sources


def defaults_path() -> str:
    """Where the packaged defaults are: in the package when installed, else the repository's.

    A wheel carries ``poller/poller.toml``; an editable install runs from the
    source tree, where the file lives in ``config/``.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(here, "poller.toml"),
        os.path.join(os.path.dirname(here), "config", "poller.toml"),
    ):
        if os.path.isfile(candidate):
            return candidate
    # A zipped or otherwise unusual install: ask the import system.
    from importlib.resources import as_file, files  # noqa: PLC0415

    with as_file(files("poller").joinpath("poller.toml")) as path:
        return str(path)


def _read_toml(path: str, what: str) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415  # not for `--help`: ~4 ms of its ~100

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {exc.reason}") from None


def _from_file(path: str, what: str) -> dict[tuple[str, str], Any]:
    document = _read_toml(path, what)
    values: dict[tuple[str, str], Any] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in sorted(SECTIONS))
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a [{section}] table")
        for key, value in table.items():
            if (section, key) not in KEYS:
                known = ", ".join(k for s, k in KEYS if s == section)
                raise ConfigError(f"{path}: [{section}] {key}: unknown key (known: {known})")
            values[section, key] = _checked(
                section, key, value, where=f"{path}: [{section}] {key}", from_text=False
            )
    return values


def _from_environ(environ: Mapping[str, str]) -> dict[tuple[str, str], Any]:
    values: dict[tuple[str, str], Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        # Variables outside poller's sections may belong to something else;
        # a typo inside one of them must not pass for a default.
        if section not in SECTIONS:
            continue
        if (section, key) not in KEYS:
            known = ", ".join(
                f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, k in KEYS if s == section
            )
            raise ConfigError(f"environment variable {name}: unknown setting (known: {known})")
        values[section, key] = _checked(
            section, key, raw, where=f"environment variable {name}", from_text=True
        )
    return values


def load_settings(
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[tuple[str, str], tuple[str, object]] | None = None,
) -> Settings:
    """Merge the four layers; raise ConfigError naming the source and key of a bad value.

    ``config_file`` (the ``--config`` flag) wins over ``POLLER_CONFIG``;
    ``flags`` maps a setting (keyed like ``KEYS``) to the flag that set it and
    its raw value, e.g. ``{("wait", "timeout"): ("--timeout", "5m")}``.
    """
    environ = os.environ if environ is None else environ
    path = defaults_path()
    merged = _from_file(path, "packaged defaults")
    missing = sorted(f"[{s}] {k}" for s, k in KEYS if (s, k) not in merged)
    if missing:
        raise ConfigError(f"{path}: packaged defaults lack {', '.join(missing)}")
    user_file = config_file or environ.get(CONFIG_ENV) or None
    if user_file:
        merged.update(_from_file(user_file, "config file"))
    merged.update(_from_environ(environ))
    for (section, key), (flag, raw) in (flags or {}).items():
        if raw is not None:
            merged[section, key] = _checked(section, key, raw, where=flag, from_text=True)
    fields = {field: merged[section, key] for (section, key), (_, field) in KEYS.items()}
    return Settings(**fields)
