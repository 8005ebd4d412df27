"""Indexer throughput: the real indexer against a bare Kafka drain of the same topic.

    python -m bench.indexer_throughput [--events N] [--rounds R] [--out bench/results]
                                       [--batch B] [--modes drain,sqlite,postgres]
                                       [--profile MODE]

1. captures real MinIO messages (scratch bucket wired to Kafka like minio-notify.json's);
2. fills a fresh 4-partition topic with N events cloned from them (checked by
   ``parse_message`` before sending);
3. runs each mode in its own process, interleaved over R rounds: ``drain`` (aiokafka,
   discard), ``sqlite`` and ``postgres`` (the real ``Indexer`` in burst mode on a fresh
   index), each checked against what the generator produced;
4. writes every run to indexer_throughput.json in --out; with ``--profile MODE`` one
   more run of MODE under py-spy, whose flame graph is profile-MODE.svg.

The topic, the PostgreSQL databases and the SQLite files are removed at the end, also on
Ctrl-C or SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import asyncpg

from bench import report
from bench.child import INDEX_URL_ENV, MODES, Expected, print_measurement, run_child
from bench.generate import EventFactory, Message, Tally
from bench.prefill import (
    ParseClock,
    create_topic,
    delete_topic,
    new_topic_name,
    produce,
    verified,
)
from bench.stack_env import settings_for, stack_values
from bench.templates import capture_templates
from consumer.logs import configure_logging
from consumer.settings import Settings

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUT: Final = REPO_ROOT / "bench" / "results"
# A bound on one child, so a hung run cannot hold the shared machine forever.
CHILD_TIMEOUT_S: Final = 1800
DEFAULT_MODES: Final = ("drain", "sqlite", "postgres")


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.indexer_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=200_000, help="events in the topic (200000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (3); 0: only --profile"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--batch", type=int, default=None, help="INDEXER_BATCH_MAX_RECORDS (default: the setting's)"
    )
    parser.add_argument(
        "--modes",
        type=_modes,
        default=list(DEFAULT_MODES),
        help=f"comma-separated subset of {','.join(MODES)} ({','.join(DEFAULT_MODES)})",
    )
    parser.add_argument(
        "--profile", choices=MODES, default=None, help="one more run of MODE under py-spy"
    )
    # The child side: one measured run (used by the parent, not by people).
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--live", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tombstones", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 0 or (args.rounds == 0 and not args.profile):
        parser.error("need --events >= 1 and --rounds >= 1 (or --rounds 0 with --profile)")
    return args


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return [m for m in MODES if m in modes]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        expected = Expected(args.events, args.live, args.tombstones)
        print_measurement(run_child(args.child, args.topic, expected, args.batch))
        return 0
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return Benchmark(args).run()


def _exit_on_sigterm(*_: object) -> NoReturn:
    # SystemExit unwinds through the finally blocks, so the cleanup still runs.
    print("\nSIGTERM: cleaning up", file=sys.stderr, flush=True)
    sys.exit(143)


# --- the benchmark ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    topic: str
    expected: Expected
    tally: Tally
    mean_message_bytes: float
    parse: ParseClock


class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.values = stack_values()
        self.settings: Settings = settings_for(self.values, LOG_LEVEL="warning")
        self.out: Path = args.out

    def run(self) -> int:
        configure_logging("warning")
        self.out.mkdir(parents=True, exist_ok=True)
        code = report.consumer_code(REPO_ROOT)
        print(f"consumer code: {code}", flush=True)
        with contextlib.ExitStack() as cleanup:
            workload = self._prepare(cleanup)
            rounds = self._measure(workload)
            profile = self._profile(workload)
            changed = report.consumer_code(REPO_ROOT) != code
            if changed:
                print("consumer/ changed during the run: the rounds measured different code")
            if rounds:
                self._report(workload, rounds, code, {"profile": profile, "code_changed": changed})
        return 0

    # --- preparation -------------------------------------------------------------------

    def _prepare(self, cleanup: contextlib.ExitStack) -> Workload:
        print("capturing template events from MinIO …", flush=True)
        templates = capture_templates(self.settings)
        print(f"  captured {', '.join(templates)}", flush=True)
        topic = new_topic_name()
        asyncio.run(create_topic(self.settings, topic))
        cleanup.callback(_delete_topic_quietly, self.settings, topic)
        print(
            f"filling topic {topic} (4 partitions) with {self.args.events:,} events …", flush=True
        )
        factory = EventFactory(templates, bucket=self.settings.minio_audio_bucket_name)
        sizes = _SizeMeter()
        parse = ParseClock()
        asyncio.run(
            produce(
                self.settings,
                topic,
                sizes.count(verified(factory.messages(self.args.events), parse)),
                self.args.events,
            )
        )
        tally = factory.tally
        print(
            f"  mix: {tally.by_event}; live objects {tally.live:,}, tombstones {tally.deleted:,}",
            flush=True,
        )
        expected = Expected(self.args.events, tally.live, tally.deleted)
        print(
            f"  parse_message alone: {parse.per_second:,.0f} messages/s "
            f"({1e6 / max(parse.per_second, 1e-9):.1f} µs each)",
            flush=True,
        )
        return Workload(topic, expected, tally, sizes.mean, parse)

    # --- measurement -------------------------------------------------------------------

    def _measure(self, workload: Workload) -> list[dict[str, dict[str, Any]]]:
        rounds: list[dict[str, dict[str, Any]]] = []
        for number in range(1, self.args.rounds + 1):
            this_round: dict[str, dict[str, Any]] = {}
            for mode in self.args.modes:
                result = self._run_mode(mode, workload)
                this_round[mode] = result
                _print_run(number, self.args.rounds, result)
            rounds.append(this_round)
        return rounds

    def _run_mode(
        self, mode: str, workload: Workload, wrapper: list[str] | None = None
    ) -> dict[str, Any]:
        """One child run of ``mode`` on a fresh index, the index removed afterwards."""
        with self._fresh_index(mode) as index_url:
            env = {**_environ_without_index(), **self.values}
            if index_url:
                env[INDEX_URL_ENV] = index_url
            command = [*(wrapper or []), *self._child_command(mode, workload)]
            done = subprocess.run(  # noqa: S603 - our own interpreter and module
                command,
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                check=False,
            )
        lines = [line for line in done.stdout.splitlines() if line.startswith('{"mode"')]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{mode} run failed (exit {done.returncode}); its stderr is above")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def _child_command(self, mode: str, workload: Workload) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "bench.indexer_throughput",
            "--child",
            mode,
            "--topic",
            workload.topic,
            "--events",
            str(workload.expected.events),
            "--live",
            str(workload.expected.live_objects),
            "--tombstones",
            str(workload.expected.tombstones),
        ]
        if self.args.batch is not None:
            command += ["--batch", str(self.args.batch)]
        return command

    @contextlib.contextmanager
    def _fresh_index(self, mode: str) -> Iterator[str | None]:
        if mode.startswith("sqlite"):
            directory = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
            try:
                yield f"sqlite:///{directory / 'index.sqlite3'}"
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        elif mode.startswith("postgres"):
            admin_url = self.values["POSTGRES_URL"]
            name = f"bench_{uuid.uuid4().hex}"
            asyncio.run(_pg_admin(admin_url, f'CREATE DATABASE "{name}"'))
            try:
                yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
            finally:
                asyncio.run(_pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            yield None

    # --- profile -----------------------------------------------------------------------

    def _profile(self, workload: Workload) -> dict[str, Any] | None:
        """One more run of the ``--profile`` mode under py-spy, which writes its flame
        graph (profile-MODE.svg); that run is not in the table."""
        mode = self.args.profile
        if mode is None:
            return None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        svg = self.out / f"profile-{mode}.svg"
        svg.unlink(missing_ok=True)
        # --threads keeps the event loop and the SQLite connection's thread apart; --idle
        # keeps the samples of a thread waiting (on epoll, a queue, the commit's fsync).
        wrapper = [py_spy, "record", "--format", "flamegraph", "--output", str(svg)]
        wrapper += ["--rate", "100", "--threads", "--idle", "--"]
        print(f"profiling one {mode} run under py-spy …", flush=True)
        try:
            result = self._run_mode(mode, workload, wrapper=wrapper)
        except (RuntimeError, FileNotFoundError) as exc:
            print(f"py-spy could not profile the {mode} run: {exc} ({_PTRACE_HINT})")
            return {"mode": mode, "error": str(exc)}
        print(f"  profiled run: {result['events_per_s']:,.0f} events/s; wrote {svg}", flush=True)
        return {"mode": mode, "events_per_s": result["events_per_s"], "flamegraph": svg.name}

    # --- report ------------------------------------------------------------------------

    def _report(
        self,
        workload: Workload,
        rounds: list[dict[str, dict[str, Any]]],
        code: str,
        extra: dict[str, Any],
    ) -> None:
        runs = [run for r in rounds for run in r.values()]
        summaries = {m: report.summarise_mode(m, runs) for m in self.args.modes}
        ratios = {m: report.round_ratios(rounds, m) for m in self.args.modes if m != "drain"}
        versions = {
            "consumer code": code,
            **report.library_versions(),
            **self._server_versions(),
        }
        params = {
            "N": workload.expected.events,
            "rounds": self.args.rounds,
            "batch": self.settings.indexer_batch_max_records
            if self.args.batch is None
            else self.args.batch,
            "partitions": 4,
        }
        document = {
            "params": params,
            "parse_per_s": round(workload.parse.per_second),
            "mean_message_bytes": round(workload.mean_message_bytes),
            "event_mix": workload.tally.by_event,
            "expected": asdict(workload.expected),
            "versions": versions,
            "rounds": rounds,
            "ratios": ratios,
            "summaries": {m: asdict(s) for m, s in summaries.items()},
            **extra,
        }
        path = self.out / "indexer_throughput.json"
        path.write_text(json.dumps(document, indent=1), encoding="utf-8")
        print()
        print("\n".join(report.mode_table(report.throughput_section(document)["modes"])))
        print(f"\nwrote {path}")

    def _server_versions(self) -> dict[str, str]:
        from infra.stack import MINIO_VERSION

        return {
            "PostgreSQL server": asyncio.run(_pg_server_version(self.values["POSTGRES_URL"])),
            "Kafka": _kafka_version(),
            "MinIO": MINIO_VERSION,
        }


# --- helpers ---------------------------------------------------------------------------------


class _SizeMeter:
    """Counts the bytes of messages passing by (for the report's mean message size)."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def count(self, messages: Iterable[Message]) -> Iterator[Message]:
        for message in messages:
            self.messages += 1
            self.bytes += len(message.value)
            yield message

    @property
    def mean(self) -> float:
        return self.bytes / max(self.messages, 1)


_PTRACE_HINT: Final = "py-spy needs ptrace: run as root, or with CAP_SYS_PTRACE"


def _print_run(number: int, rounds: int, result: Mapping[str, Any]) -> None:
    print(
        f"round {number}/{rounds} {result['mode']:>8}: {result['events_per_s']:>9,.0f} events/s "
        f"({result['seconds']:.1f} s active, {result['wall_seconds']:.1f} s wall), "
        f"peak RSS {result['peak_rss_mb']:.0f} MB{_cpu_text(result)}",
        flush=True,
    )


def _cpu_text(result: Mapping[str, Any]) -> str:
    cores = result.get("machine_busy_cores")
    if cores is None:
        return ""
    return f", machine {cores:.2f} cores busy, {result['machine_cpu_us_per_event']:.0f} µs/event"


def _environ_without_index() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (INDEX_URL_ENV, "INDEX_URL")}


def _delete_topic_quietly(settings: Settings, topic: str) -> None:
    try:
        asyncio.run(delete_topic(settings, topic))
        print(f"deleted topic {topic}", flush=True)
    except Exception as exc:
        print(f"could not delete topic {topic}: {exc}; delete it by hand", file=sys.stderr)


async def _pg_admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _kafka_version() -> str:
    pom = REPO_ROOT / "infra" / "kafka" / "pom.xml"
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text(encoding="utf-8"))
    return match.group(1) if match else "unknown"


if __name__ == "__main__":
    started = time.perf_counter()
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        if "--child" not in sys.argv:  # the parent reports; its cleanup has run by now
            print(f"\ninterrupted after {time.perf_counter() - started:.0f} s", file=sys.stderr)
        sys.exit(130)
