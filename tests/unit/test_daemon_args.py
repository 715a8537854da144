"""The daemon's configuration strings (options.py): sizes, --lun, --portal, config_from.

Bad input of any kind gets a UserError whose message names the field (docs/design.md
section 6), never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from targetcli_preserve._errors import UserError
from targetcli_preserve.options import (
    DEFAULT_IQN,
    Config,
    LunSpec,
    add_serve_arguments,
    config_from,
    parse_lun,
    parse_portal,
    parse_size,
)
from targetcli_preserve.statedir import default_state_dir

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


# ---- parse_size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,size",
    [
        ("512", 512),
        ("4096", 4096),
        ("1048576", M),
        ("1K", K),
        ("4M", 4 * M),
        ("1G", G),
        ("2T", 2 * T),
        ("1k", K),
        ("4m", 4 * M),
        ("1g", G),
        ("2t", 2 * T),
        ("1KiB", K),
        ("1KB", K),
        ("4MiB", 4 * M),
        ("4MB", 4 * M),
        ("1GiB", G),
        ("1GB", G),
        ("1TiB", T),
        ("1kib", K),
        ("1kb", K),
        ("1gib", G),
        ("512B", 512),
        (" 1G ", G),
        ("1 G", G),
        ("3M", 3 * M),
    ],
)
def test_parse_size_accepts(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["8388608T", "9000000T", str(1 << 63), "99999999999999T"])
def test_parse_size_refuses_what_no_file_can_be(text: str) -> None:
    with pytest.raises(UserError, match="must be under 8 EiB"):
        parse_size(text)


@pytest.mark.parametrize("text", ["0", "0K", "0G", "1000", "513", "1", "511", "100B"])
def test_parse_size_refuses_zero_and_non_multiples_of_512(text: str) -> None:
    with pytest.raises(UserError, match="positive multiple of 512") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "-1",
        "-1G",
        "+1G",
        "abc",
        "G",
        "1X",
        "1.5G",
        "1e9",
        "0x200",
        "1GG",
        "1 G B",
        "1Gi",
        "1P",
        "one",
        "1,024",
        "1_024",
    ],
)
def test_parse_size_refuses_garbage(text: str) -> None:
    with pytest.raises(UserError, match="bad size") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


# ---- parse_lun -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,spec",
    [
        ("lun0:4M", LunSpec("lun0", 4 * M)),
        ("db.data-1:1G", LunSpec("db.data-1", G)),
        ("x:512", LunSpec("x", 512)),
    ],
)
def test_parse_lun_accepts(text: str, spec: LunSpec) -> None:
    assert parse_lun(text) == spec


def test_parse_lun_needs_a_colon() -> None:
    with pytest.raises(UserError, match=r"bad --lun 'lun0': use NAME:SIZE"):
        parse_lun("lun0")


@pytest.mark.parametrize(
    "text", [":1G", "bad/name:1G", "-lun:1G", "a:b:1G", "l\u00fcn:1G", "x" * 65 + ":1G"]
)
def test_parse_lun_refuses_a_bad_name(text: str) -> None:
    with pytest.raises(UserError, match="bad LUN name"):
        parse_lun(text)


@pytest.mark.parametrize("text", ["lun0:", "lun0:big", "lun0:1000", "lun0:0"])
def test_parse_lun_refuses_a_bad_size(text: str) -> None:
    with pytest.raises(UserError, match="bad size"):
        parse_lun(text)


# ---- parse_portal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,portal",
    [
        ("127.0.0.1:3260", ("127.0.0.1", 3260)),
        ("0.0.0.0:3261", ("0.0.0.0", 3261)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:3260", ("::1", 3260)),
        ("[fe80::1%lo]:65535", ("fe80::1%lo", 65535)),
    ],
)
def test_parse_portal_accepts(text: str, portal: tuple[str, int]) -> None:
    assert parse_portal(text) == portal


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":3260",
        "host:port",
        "host:65536",
        "host:99999",
        "host:-1",
        "host: 3260",
        "host:3260 ",
        "[::1]",
        "host:0x10",
        "host:3.5",
    ],
)
def test_parse_portal_refuses(text: str) -> None:
    with pytest.raises(UserError, match="bad --portal") as info:
        parse_portal(text)
    assert repr(text) in str(info.value)


def test_parse_portal_refuses_a_superscript_port() -> None:
    with pytest.raises(UserError, match="bad --portal"):
        parse_portal("127.0.0.1:\u00b2")


# ---- config_from -----------------------------------------------------------------------


def _serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir")
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_config_from_defaults(tmp_path: Path) -> None:
    config = config_from(_serve_args(["--state-dir", str(tmp_path)]))
    assert config == Config(
        tmp_path.resolve(), "127.0.0.1", 3260, [LunSpec("lun0", G)], DEFAULT_IQN
    )


def test_config_from_given_values(tmp_path: Path) -> None:
    config = config_from(
        _serve_args(
            [
                "--state-dir",
                str(tmp_path),
                "--portal",
                "[::1]:3270",
                "--lun",
                "a:4M",
                "--lun",
                "b:1G",
                "--iqn",
                "iqn.2026-11.test:t",
            ]
        )
    )
    assert (config.host, config.port) == ("::1", 3270)
    assert config.luns == [LunSpec("a", 4 * M), LunSpec("b", G)]  # in the order given
    assert config.iqn == "iqn.2026-11.test:t"


def test_config_from_resolves_a_relative_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_from(_serve_args(["--state-dir", "state"]))
    assert config.state_dir == (tmp_path / "state").resolve()
    assert config.state_dir.is_absolute()


def test_config_from_without_a_state_dir_uses_the_default() -> None:
    config = config_from(_serve_args([]))
    assert config.state_dir == default_state_dir().resolve()


@pytest.mark.parametrize("luns", [["a:1M", "a:1M"], ["a:1M", "b:1M", "a:2M"]])
def test_config_from_refuses_a_duplicated_lun_name(tmp_path: Path, luns: list[str]) -> None:
    argv = ["--state-dir", str(tmp_path)]
    for lun in luns:
        argv += ["--lun", lun]
    with pytest.raises(UserError, match="given twice"):
        config_from(_serve_args(argv))


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--portal", "nowhere"], "bad --portal"),
        (["--lun", "lun0"], "bad --lun"),
        (["--lun", "lun0:7"], "bad size"),
    ],
)
def test_config_from_passes_on_bad_fields(tmp_path: Path, argv: list[str], words: str) -> None:
    with pytest.raises(UserError, match=words):
        config_from(_serve_args(["--state-dir", str(tmp_path), *argv]))
