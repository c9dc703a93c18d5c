"""Settings: durations, the packaged defaults, and the file < environment < flag layers."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

from poller import PollPolicy
from poller._config import KEYS, ConfigError, defaults_path, load_settings, parse_duration

PACKAGED = ROOT / "config" / "poller.toml"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("250ms", 0.25),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        (" 2S ", 2.0),
        ("1e3", 1000.0),  # as --max-rps 1e12 reads: a number is a number
        ("2.5E-1s", 0.25),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_durations_parse(text: object, seconds: float) -> None:
    """Seconds, fractions and h/m/s/ms suffixes (alone or combined) all parse."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "-5", "-1s", "5 minutes", "1d", "abc", "inf", "nan", "1e999", "e3", "s", True, None],
)
def test_bad_durations_are_refused(text: object) -> None:
    """Negative, infinite, unitless-word and unknown-suffix durations raise a readable error."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_none_means_no_deadline_only_where_allowed() -> None:
    """'none' is a timeout without deadline, and not a duration elsewhere."""
    assert parse_duration("none", allow_none=True) is None
    assert parse_duration("NONE", allow_none=True) is None
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("none")


def test_packaged_defaults_match_the_policy_defaults() -> None:
    """The documented poller.toml and PollPolicy's field defaults say the same thing."""
    settings = load_settings(environ={})
    assert settings.policy() == PollPolicy()
    assert (settings.allow_partial, settings.log_format, settings.log_level) == (
        False,
        "auto",
        "info",
    )
    assert (settings.connect_timeout, settings.read_timeout) == (5.0, 10.0)


def test_packaged_defaults_define_exactly_the_known_keys() -> None:
    """Every key of config/poller.toml is one the loader knows, and none is missing."""
    document = tomllib.loads(PACKAGED.read_text())
    in_file = {(section, key) for section, table in document.items() for key in table}
    assert in_file == set(KEYS)


def test_an_editable_install_reads_the_repository_file() -> None:
    """From the source tree the defaults come from config/poller.toml."""
    assert Path(defaults_path()).resolve() == PACKAGED.resolve()


def test_the_wheel_ships_the_defaults_and_reads_them(tmp_path: Path) -> None:
    """A built wheel holds poller/poller.toml, and an install of it reads that copy."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("poller-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("poller/poller.toml") == PACKAGED.read_bytes()
        assert (
            "poller = poller.cli:main"
            in archive.read(
                next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
            ).decode()
        )
        archive.extractall(tmp_path / "site")
    found = subprocess.run(
        [sys.executable, "-c", "from poller._config import defaults_path; print(defaults_path())"],
        env={"PYTHONPATH": str(tmp_path / "site")},
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(found) == tmp_path / "site" / "poller" / "poller.toml"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_file_beats_defaults_env_beats_file_flag_beats_env(tmp_path: Path) -> None:
    """Each layer overrides the one below it, key by key."""
    config = write(tmp_path / "p.toml", '[wait]\ntimeout = "5m"\ninterval = 3\nmultiplier = 2.0\n')
    from_file = load_settings(config_file=config, environ={})
    assert (from_file.timeout, from_file.interval, from_file.multiplier) == (300.0, 3.0, 2.0)
    env = {"POLLER_WAIT_TIMEOUT": "10m", "POLLER_WAIT_INTERVAL": "4s"}
    from_env = load_settings(config_file=config, environ=env)
    assert (from_env.timeout, from_env.interval, from_env.multiplier) == (600.0, 4.0, 2.0)
    flags = {("wait", "timeout"): ("--timeout", "15m"), ("wait", "interval"): ("--interval", None)}
    from_flag = load_settings(config_file=config, environ=env, flags=flags)
    assert (from_flag.timeout, from_flag.interval) == (900.0, 4.0)


def test_poller_config_names_the_file_and_the_flag_wins(tmp_path: Path) -> None:
    """POLLER_CONFIG is read when --config is absent; --config wins over it."""
    a = write(tmp_path / "a.toml", '[aws]\nregion = "eu-west-1"\n')
    b = write(tmp_path / "b.toml", '[aws]\nregion = "ap-south-1"\n')
    assert load_settings(environ={"POLLER_CONFIG": a}).region == "eu-west-1"
    assert load_settings(config_file=b, environ={"POLLER_CONFIG": a}).region == "ap-south-1"


def test_environment_values_are_parsed_by_type() -> None:
    """Environment strings become booleans, whole numbers, numbers, durations and 'none'."""
    settings = load_settings(
        environ={
            "POLLER_WAIT_ALLOW_PARTIAL": "yes",
            "POLLER_RETRY_MAX_ERRORS": "3",
            "POLLER_WAIT_JITTER": "0",
            "POLLER_WAIT_TIMEOUT": "none",
            "POLLER_LOG_LEVEL": "DEBUG",
            "POLLER_UNRELATED_THING": "ignored: not one of poller's sections",
        }
    )
    assert settings.allow_partial is True
    assert settings.max_errors == 3
    assert settings.jitter == 0.0
    assert settings.timeout is None
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[wait]\ntimout = 5\n", r"p\.toml: \[wait\] timout: unknown key"),
        ("[waits]\ntimeout = 5\n", r"p\.toml: unknown section \[waits\]"),
        ('[wait]\nmultiplier = "fast"\n', r"p\.toml: \[wait\] multiplier: expected a number"),
        ('[wait]\ntimeout = "soon"\n', r"p\.toml: \[wait\] timeout: not a duration: 'soon'"),
        ("[wait]\ninterval = -1\n", r"p\.toml: \[wait\] interval: a duration cannot be negative"),
        ("[wait]\ninterval = 0\n", r"p\.toml: \[wait\] interval: must be more than 0"),
        ('[wait]\nallow_partial = "yes"\n', r"p\.toml: \[wait\] allow_partial: expected true"),
        ("[wait]\njitter = 1.5\n", r"p\.toml: \[wait\] jitter: must be between 0 and 1"),
        ("[retry]\nmax_errors = 2.5\n", r"p\.toml: \[retry\] max_errors: expected a whole"),
        ('[log]\nformat = "xml"\n', r"p\.toml: \[log\] format: expected one of auto, json"),
        ("[aws]\nregion = 5\n", r"p\.toml: \[aws\] region: expected a string"),
        ("wait = 5\n", r"p\.toml: wait must be a \[wait\] table"),
        ("[wait\n", r"p\.toml is not valid TOML"),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Unknown keys, wrong types and bad durations are errors naming file and key."""
    config = write(tmp_path / "p.toml", text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=config, environ={})


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    """A missing config file is reported with its path, not silently skipped."""
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        load_settings(config_file=str(tmp_path / "missing.toml"), environ={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POLLER_WAIT_TIMOUT": "5m"}, "POLLER_WAIT_TIMOUT: unknown setting"),
        ({"POLLER_WAIT_TIMEOUT": "-5m"}, "POLLER_WAIT_TIMEOUT: a duration cannot be negative"),
        ({"POLLER_RETRY_MAX_ERRORS": "many"}, "POLLER_RETRY_MAX_ERRORS: expected a whole"),
        ({"POLLER_WAIT_ALLOW_PARTIAL": "perhaps"}, "POLLER_WAIT_ALLOW_PARTIAL: expected true"),
        ({"POLLER_WAIT_MULTIPLIER": "0.5"}, "POLLER_WAIT_MULTIPLIER: must be >= 1"),
    ],
)
def test_a_bad_variable_names_the_variable(env: dict[str, str], message: str) -> None:
    """A typo or bad value in a POLLER_ variable is an error that names it."""
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_a_bad_flag_names_the_flag() -> None:
    """A flag's bad duration is reported with the flag's name."""
    with pytest.raises(ConfigError, match="--timeout: not a duration: '5 min'"):
        load_settings(environ={}, flags={("wait", "timeout"): ("--timeout", "5 min")})
