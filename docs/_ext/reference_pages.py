"""The reference pages written from the code at every build, so they cannot drift.

- ``reference/cli.md``: every verb of ``consumer.cli.build_parser()`` with its usage and
  options (the help texts of the parser), followed by the verb's notes from
  ``reference/cli/<verb>.md`` when there are any (what it prints, examples);
- ``reference/settings.md``: every field of ``consumer.settings.Settings``: its environment
  name, default, values and description;
- ``reference/metrics.md``: every instrument of the instrument tables (the ``METRICS``
  of each module that has one: ``consumer.telemetry``, ``consumer.retention.metrics``);
- ``_generated/import-layers.md``: the import contract of pyproject.toml, included by the
  architecture page.

The pages are generated into the source tree (and ignored by git) before Sphinx reads
it; a file is rewritten only when its text changed, so incremental builds stay
incremental. ``render_*`` are pure: tests call them to hold the pages to the code.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import tomllib
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

import consumer
from consumer.cli import build_parser
from consumer.cli.exit_codes import ExitCode
from consumer.settings import Settings
from consumer.telemetry import MetricSpec

GENERATED_NOTE = (
    "<!-- Generated at build time by docs/_ext/reference_pages.py from {source}; "
    "edit the code, not this file. -->\n\n"
)
USAGE_WIDTH = 88
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def escape(text: str) -> str:
    """``text`` as literal Markdown (table cells included)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def code(text: str) -> str:
    """``text`` as inline code; a backtick inside it gets a longer fence."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


# --- the CLI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verb:
    """One leaf (or group) of the command tree: ``("retention", "sweep")``."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    help: str

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def slug(self) -> str:
        return "-".join(self.path)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    # argparse has no public way to walk its tree; sphinx-argparse reads the same fields.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def walk_verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[Verb]:
    """Every verb below ``parser``, depth first, groups before their own verbs."""
    subcommands = _subcommands(parser)
    if subcommands is None:
        return
    helps = {choice.dest: choice.help or "" for choice in subcommands._choices_actions}
    for name, child in subcommands.choices.items():
        yield Verb((*prefix, name), child, helps.get(name, ""))
        yield from walk_verbs(child, (*prefix, name))


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(code(option) for option in action.option_strings)
        else:
            names = code(action.metavar if isinstance(action.metavar, str) else action.dest)
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            value = " \\| ".join(code(str(choice)) for choice in action.choices)
        elif action.nargs == 0:
            value = ""
        else:
            metavar = formatter._metavar_formatter(action, action.dest.upper())(1)[0]
            value = code(metavar)
        help_text = escape(formatter._expand_help(action)) if action.help else ""
        default = action.default
        shown = (
            code(str(default))
            if default not in (None, False, argparse.SUPPRESS, []) and action.nargs != 0
            else ""
        )
        rows.append(f"| {names} | {value} | {shown} | {help_text} |")
    return rows


def render_cli(notes_dir: Path | None = None) -> str:
    """The CLI reference: exit codes, then each verb's usage, options and notes."""
    parser = build_parser()
    notes = {path.stem for path in notes_dir.glob("*.md")} if notes_dir else set()
    verbs = list(walk_verbs(parser))
    unknown = notes - {verb.slug for verb in verbs}
    if unknown:
        raise ValueError(f"reference/cli/ has notes for verbs that do not exist: {unknown}")
    lines = [
        GENERATED_NOTE.format(source="consumer.cli.build_parser()"),
        "(cli-reference)=",
        "# Command line",
        "",
        f"{code('python -m consumer VERB')} (also installed as {code('voxpersona-consumer')}). "
        "How the verbs behave at a terminal and in scripts is in "
        "[Using the command line](../getting-started/cli.md).",
        "",
        "```text",
        usage(parser),
        "```",
        "",
        "## Exit codes",
        "",
        "| code | meaning |",
        "|---|---|",
        *(f"| {int(member)} | {escape(_exit_meaning(member))} |" for member in ExitCode),
        "",
    ]
    for verb in verbs:
        depth = "#" * min(len(verb.path) + 1, 3)
        lines += [f"({_label(verb)})=", f"{depth} `{verb.name}`", "", escape(verb.help), ""]
        lines += ["```text", usage(verb.parser), "```", ""]
        rows = _option_rows(verb.parser)
        if rows and _subcommands(verb.parser) is None:
            lines += ["| argument | value | default | meaning |", "|---|---|---|---|", *rows, ""]
        if verb.slug in notes:
            lines += [f"```{{include}} cli/{verb.slug}.md", "```", ""]
    return "\n".join(lines)


def _label(verb: Verb) -> str:
    return f"cli-{verb.slug}"


def _exit_meaning(member: ExitCode) -> str:
    return {
        ExitCode.OK: "success",
        ExitCode.FAILURE: "a failure at run time (a server refused or failed, a job failed)",
        ExitCode.USAGE: "bad usage or bad input: one line on stderr, nothing done",
        ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    }.get(member, member.name.lower())


# --- the settings -------------------------------------------------------------------------


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None or value == "" or (isinstance(value, SecretStr) and not value):
        return "—"
    if isinstance(value, Path):
        package = Path(consumer.__file__).parent
        try:
            return code(f"consumer/{value.relative_to(package)}") + " (package data)"
        except ValueError:
            return code(str(value))
    if isinstance(value, bool):
        return code(str(value).lower())
    return code(str(value))


_TYPE_NAMES = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "true or false",
    Path: "file path",
    SecretStr: "secret",
}


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(code(str(choice)) for choice in typing.get_args(annotation))
    arguments = typing.get_args(annotation)
    if arguments:  # X | None
        named = [_type_name(argument) for argument in arguments if argument is not type(None)]
        unset = " (or unset)" if type(None) in arguments else ""
        return " or ".join(named) + unset
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _values(field: FieldInfo) -> str:
    """The setting's type and bounds, as a person reads them: ``integer, ≥ 1, ≤ 1000``."""
    bounds = []
    for item in field.metadata:
        for kind, attribute, shape in (
            (annotated_types.Ge, "ge", "≥ {}"),
            (annotated_types.Gt, "gt", "> {}"),
            (annotated_types.Le, "le", "≤ {}"),
            (annotated_types.Lt, "lt", "< {}"),
            (annotated_types.MinLen, "min_length", "at least {} characters"),
        ):
            if isinstance(item, kind):
                bounds.append(shape.format(getattr(item, attribute)))
    return ", ".join([_type_name(field.annotation), *(escape(bound) for bound in bounds)])


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(environment name, default, values, description) of every setting."""
    rows = []
    for name, field in Settings.model_fields.items():
        if not field.alias or not field.description:
            raise ValueError(f"Settings.{name} needs an alias and a description")
        rows.append((field.alias, _default(field), _values(field), field.description))
    return rows


def render_settings() -> str:
    lines = [
        GENERATED_NOTE.format(source="consumer.settings.Settings"),
        "(settings-reference)=",
        "# Settings",
        "",
        "Read from the environment or a `.env` file in the working directory, once, when a "
        "verb starts ([Configuration](../operations/configuration.md) says how). A value "
        "outside its range is one line on stderr and exit 2. Secrets are never logged nor "
        "shown in a repr.",
        "",
        "| variable | default | values | meaning |",
        "|---|---|---|---|",
    ]
    for alias, default, values, description in settings_rows():
        lines.append(f"| {code(alias)} | {default} | {values} | {escape(description)} |")
    return "\n".join(lines) + "\n"


# --- the metrics --------------------------------------------------------------------------


def metric_tables() -> list[tuple[str, tuple[MetricSpec, ...]]]:
    """Every module of the package with a ``METRICS`` table of instruments, by name, so a
    new module's instruments join the reference without an edit here."""
    tables = []
    for module_info in pkgutil.walk_packages(consumer.__path__, "consumer."):
        if module_info.name.endswith("__main__"):
            continue  # running it is its import
        module = importlib.import_module(module_info.name)
        table = getattr(module, "METRICS", None)
        if isinstance(table, tuple) and table and isinstance(table[0], MetricSpec):
            tables.append((module_info.name, table))
    # The consumer's own first, then the roles' in name order.
    return sorted(tables, key=lambda table: (table[0] != "consumer.telemetry", table[0]))


def render_metrics(tables: Sequence[tuple[str, Sequence[MetricSpec]]] = ()) -> str:
    tables = tables or metric_tables()
    lines = [
        GENERATED_NOTE.format(source="the METRICS tables of the instruments' modules"),
        "(metrics-reference)=",
        "# Metrics",
        "",
        "OpenTelemetry instruments, served in Prometheus format on `/metrics` (plus the "
        "`process_*` and `python_*` series of the Prometheus client) and pushed over OTLP "
        "when `OTEL_METRICS_EXPORTER=otlp`. The Prometheus name is the OpenTelemetry name "
        "with `.` as `_`, the unit as a suffix and `_total` on counters. "
        "[Metrics](../operations/metrics.md) says what to watch.",
        "",
    ]
    for module, specs in tables:
        lines += [
            f"## `{module}`",
            "",
            "| Prometheus | OpenTelemetry | type | unit | labels | what |",
            "|---|---|---|---|---|---|",
        ]
        for spec in specs:
            labels = ", ".join(spec.labels) or "—"
            lines.append(
                f"| {code(spec.prometheus_name)} | {code(spec.name)} | {spec.kind} "
                f"| {code(spec.unit)} | {escape(labels)} | {escape(spec.description)} |"
            )
        lines.append("")
    return "\n".join(lines)


# --- the import layers ------------------------------------------------------------------


def render_layers(pyproject: Path) -> str:
    """The import contract of ``[tool.importlinter]`` as a table, top layer first."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"]
    lines = []
    for contract in config["contracts"]:
        lines += [f"**{escape(contract['name'])}** ({contract['type']}):", ""]
        lines += ["| layer | modules |", "|---:|---|"]
        layers = contract["layers"]
        for number, layer in enumerate(layers, start=1):
            modules = ", ".join(code(module.strip()) for module in layer.split("|"))
            lines.append(f"| {number} | {modules} |")
        lines.append("")
    return GENERATED_NOTE.format(source="pyproject.toml [tool.importlinter]") + "\n".join(lines)


# --- Sphinx -------------------------------------------------------------------------------


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(srcdir: Path) -> None:
    generated = srcdir / "_generated"
    generated.mkdir(exist_ok=True)
    layers = render_layers(srcdir.parent / "pyproject.toml")
    write_if_changed(generated / "import-layers.md", layers)
    reference = srcdir / "reference"
    write_if_changed(reference / "cli.md", render_cli(reference / "cli"))
    write_if_changed(reference / "settings.md", render_settings())
    write_if_changed(reference / "metrics.md", render_metrics())


def _on_builder_inited(app: Any) -> None:
    generate(Path(app.srcdir))


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
