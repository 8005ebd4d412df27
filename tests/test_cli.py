"""The CLI's error contract: bad usage or input → one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "KAFKA_"))}
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (("no-such-verb",), {}, "invalid choice"),
        (("setup", "--bogus"), {}, "unrecognized arguments"),
        ((), {}, "required"),
        (("setup",), {"MINIO_MAX_RETRIES": "many"}, "MINIO_MAX_RETRIES"),
        (("setup",), {"MINIO_NOTIFY_CONFIG": "/nonexistent/notify.json"}, "not found"),
        (("ls", "--bucket", "../etc", "--json"), {}, "bucket name '../etc' is not valid"),
        (("ls", "--bucket", "Upper"), {}, "is not valid"),
        (("search", "--text", "x", "--bucket", "a..b"), {}, "no '..'"),
        (("usage", "--growth", "--bucket", "192.168.1.1"), {}, "IP address"),
        (("reconcile", "--bucket", "ab"), {}, "is not valid"),
        (("delete", "../etc/passwd"), {}, "bucket name '..' is not valid"),
        (("result", "xn--bad/k"), {}, "reserves"),
        (("search",), {}, "criteria, --text WORDS, or both"),
        (("result", "bucket-only"), {}, "BUCKET/KEY"),
        (("result", "b1b/k", "--wait", "soon"), {}, "soon"),
        # A bad option value raised from a type function, and a bad setting (issue 19).
        (
            ("presign", "upload", "--user", "5", "--name", "m.ogg", "--expires", "2hours"),
            {},
            "2hours",
        ),
        (("presign", "upload", "--user", "5", "--name", "m.ogg", "--expires", "1.5h"), {}, "1.5h"),
        (("ls",), {"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        # A mistyped verb gets a suggestion; an abbreviated option is not taken.
        (("lss",), {}, "did you mean 'ls'?"),
        (("ls", "--buck", "b"), {}, "unrecognized arguments: --buck"),
        # …and a mistyped option or choice gets one too.
        (("ls", "--buck", "b"), {}, "(did you mean '--bucket'?)"),
        (("upload", "f.ogg", "--user", "5", "--jsn"), {}, "(did you mean '--json'?)"),
        (("ls", "--status", "faild"), {}, "(did you mean 'failed'?)"),
        (("retention", "swep"), {}, "(did you mean 'sweep'?)"),
        (("--verison",), {}, "(did you mean '--version'?)"),
        (("presign", "dowload", "b1b/k"), {}, "(did you mean 'download'?)"),
        (("download", "b1b/a.ogg", "-o", "/nonexistent/dir/a.ogg"), {}, "no such directory"),
        (("download", "b1b/a.ogg", "-o", "README.md"), {}, "exists; --force replaces it"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    args: tuple[str, ...], env: dict[str, str], fragment: str
) -> None:
    result = run_cli(*args, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_bucket_names_follow_s3s_rules() -> None:
    from consumer.errors import InvalidInput
    from consumer.names import check_bucket

    for good in ("abc", "voxpersona-audio", "a.b-c.0", "x" * 63, "0ab"):
        assert check_bucket(good) == good
    for bad in ("ab", "x" * 64, "-ab", "ab-", "a_b", "A-b", "a..b", "a.-b", "10.0.0.1",
                "xn--ab", "ab-s3alias", "a/b", "", "ab "):  # fmt: skip
        with pytest.raises(InvalidInput):
            check_bucket(bad)


def test_unreachable_server_is_a_runtime_failure_exit_1() -> None:
    # Port 9 on loopback: nothing listens there, the connection is refused at once.
    result = run_cli("setup", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", MINIO_ENDPOINT="127.0.0.1:9")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "unreachable" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("verb", [("ls",), ("search", "a=b"), ("usage",), ("retention", "audit")])
def test_read_only_verbs_refuse_a_missing_index_and_create_nothing(
    tmp_path: Path, verb: tuple[str, ...]
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "index.db"
    result = run_cli(*verb, INDEX_URL=f"sqlite:///{missing}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"no index at {missing}" in lines[0]
    assert not (tmp_path / "no").exists()


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python -m consumer {version('voxpersona-consumer')}"


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _all_parsers(sub)
    return found


def test_every_verb_and_option_says_what_it_does() -> None:
    from consumer.cli import build_parser

    parsers = _all_parsers(build_parser())
    assert len(parsers) > 20
    for parser in parsers:
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{parser.prog} {action.option_strings[0]} has no help"
    helped = run_cli("ls", "--help")
    assert helped.returncode == 0
    assert "--status {pending,running,done,failed}" in helped.stdout
    assert "``" not in run_cli("--help").stdout  # no reST markup


def test_exit_codes_are_one_table() -> None:
    from consumer.cli import ExitCode

    assert [int(code) for code in ExitCode] == [0, 1, 2, 130]
    for module in ("common", "service_verbs", "index_verbs", "client_verbs", "__init__"):
        source = (REPO_ROOT / "consumer" / "cli" / f"{module}.py").read_text()
        assert "return 0" not in source, module
        assert "return 1\n" not in source, module


@pytest.mark.parametrize("flag", ["--quiet", "--no-progress"])
def test_a_failed_upload_is_said_without_a_bar(flag: str) -> None:
    result = run_cli(
        "upload", "README.md", "--user", "5", "--bucket", "b1b", flag,
        MINIO_ENDPOINT="127.0.0.1:9", MINIO_MAX_RETRIES="0",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("README.md: failed: check bucket b1b: "), line
    assert "unreachable" in line
