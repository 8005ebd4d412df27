"""Least-privilege MinIO identities: the consumer and the uploader, each with its own canned
policy rendered from ``infra/minio/policies/<role>.json``.

``setup --identities`` runs with the root (admin) keys of MINIO_ACCESS_KEY/SECRET_KEY and
keeps everything else it does (buckets, notifications, lifecycle rules, topics) to those
keys; the identities it creates can do only what their part of the system needs:

- the consumer reads the buckets it watches, writes processing results, and deletes only
  where a sweeper retention policy says so (bucket and prefix of each such policy);
- the uploader (the bot's presigned-URL signer) puts objects into the audio bucket, single
  or multipart, and nothing else.

Rendering is pure; the admin calls (minio-py's MinioAdmin) are at the bottom. Idempotent
like the rest of setup: a policy or user is written only when it differs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import urllib3
from minio.credentials.providers import StaticProvider
from minio.minioadmin import MinioAdmin

from consumer.errors import ConfigError, SetupFailed
from consumer.minio import MINIO_ERRORS, MinioFailure, classify_failure, minio_http_pool
from consumer.retention.policy import Enforcement, RetentionPolicy, by_enforcement
from consumer.settings import Settings
from consumer.setup.report import Action, Change, setup_error

POLICIES_DIR: Final = Path(__file__).resolve().parents[2] / "infra" / "minio" / "policies"
ROLES: Final = ("consumer", "uploader")

# Array elements that are exactly one of these become the list setup computes.
READ_BUCKETS: Final = "CONSUMER_READ_BUCKETS"
READ_OBJECTS: Final = "CONSUMER_READ_OBJECTS"
SWEEP_OBJECTS: Final = "RETENTION_SWEEP_OBJECTS"
# ${NAME} inside a string: a bucket setting by its env name (see bucket_values).
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")
# "*" and "?" are wildcards in an IAM resource and "${" starts a policy variable; none can
# be written literally, so a prefix holding one cannot be granted exactly.
_NOT_LITERAL = ("*", "?", "$")
MIN_SECRET_LENGTH: Final = 8  # MinIO refuses shorter secret keys
# 30 random bytes: 40 URL-safe characters, MinIO's longest secret key; safe in a .env file.
GENERATED_SECRET_BYTES: Final = 30
# What MinIO answers when a key pair is wrong (as opposed to a refused action).
_BAD_CREDENTIALS: Final = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId"})


@dataclass(frozen=True)
class IdentityOptions:
    """What ``setup --identities`` was asked for."""

    # Where generated secrets go (0600); without it a missing secret is a usage error.
    secrets_file: Path | None = None
    templates_dir: Path = POLICIES_DIR


@dataclass(frozen=True)
class IdentitySpec:
    """One identity as setup wants it."""

    role: str
    access_key: str
    access_setting: str  # env names, for messages and the secrets file
    secret_setting: str
    policy_name: str
    policy: dict[str, Any] = field(repr=False)
    secret_key: str = field(default="", repr=False)  # "" when not configured


# --------------------------------------------------------------------------------------
# Pure: what the policies say
# --------------------------------------------------------------------------------------


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def objects_arn(bucket: str, prefix: str = "") -> str:
    """The resource of every object of ``bucket`` under ``prefix``. Raises ConfigError when
    the prefix holds a character IAM reads as a wildcard or a variable."""
    if any(char in prefix for char in _NOT_LITERAL):
        raise ConfigError(
            f"prefix {prefix!r} of bucket {bucket}: '*', '?' and '$' cannot be granted "
            "literally in a MinIO policy; rename the prefix"
        )
    return f"arn:aws:s3:::{bucket}/{prefix}*"


def watched_buckets(settings: Settings, *more: Iterable[str]) -> tuple[str, ...]:
    """The buckets the consumer reads: the managed ones and any other it was told about
    (notification file, processing rules, sweeper policies), first mention first."""
    names = [*settings.managed_buckets]
    for group in more:
        names.extend(group)
    return tuple(dict.fromkeys(names))


def sweep_resources(policies: Sequence[RetentionPolicy]) -> tuple[str, ...]:
    """Where the consumer may delete: bucket and prefix of each sweeper policy. Lifecycle
    policies are enforced by MinIO's scanner, which needs no grant from us."""
    return tuple(
        dict.fromkeys(
            objects_arn(policy.bucket, policy.prefix)
            for policy in by_enforcement(policies, Enforcement.SWEEPER)
        )
    )


def policy_lists(
    watched: Sequence[str], policies: Sequence[RetentionPolicy]
) -> dict[str, tuple[str, ...]]:
    return {
        READ_BUCKETS: tuple(bucket_arn(bucket) for bucket in watched),
        READ_OBJECTS: tuple(objects_arn(bucket) for bucket in watched),
        SWEEP_OBJECTS: sweep_resources(policies),
    }


def bucket_values(settings: Settings) -> dict[str, str]:
    return {
        "MINIO_BUCKET_NAME": settings.minio_bucket_name,
        "MINIO_AUDIO_BUCKET_NAME": settings.minio_audio_bucket_name,
        "MINIO_RESULTS_BUCKET_NAME": settings.minio_results_bucket_name,
    }


def render_policy(
    template: Mapping[str, Any],
    values: Mapping[str, str],
    lists: Mapping[str, Sequence[str]],
    source: str = "policy template",
) -> dict[str, Any]:
    """The policy document of ``template``: ``${NAME}`` in strings replaced from
    ``values``, array elements that are exactly ``${LIST}`` expanded from ``lists``, keys
    starting with ``$`` (comments) dropped, and statements left without any resource
    dropped (they would grant nothing, and MinIO refuses them). Raises ConfigError."""
    document = {key: value for key, value in template.items() if not key.startswith("$")}
    rendered: dict[str, Any] = _render(document, values, lists, source)
    statements = rendered.get("Statement")
    if not isinstance(statements, list):
        raise ConfigError(f"{source}: no Statement list")
    kept = [s for s in statements if not (isinstance(s, dict) and s.get("Resource") == [])]
    if not kept:
        raise ConfigError(f"{source}: every statement was left without a resource")
    rendered["Statement"] = kept
    return rendered


def _render(
    value: Any, values: Mapping[str, str], lists: Mapping[str, Sequence[str]], source: str
) -> Any:
    if isinstance(value, dict):
        return {key: _render(item, values, lists, source) for key, item in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            whole = _PLACEHOLDER.fullmatch(item) if isinstance(item, str) else None
            if whole is not None and whole.group(1) in lists:
                out.extend(lists[whole.group(1)])
            else:
                out.append(_render(item, values, lists, source))
        return out
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ConfigError(f"{source}: unknown placeholder ${{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(substitute, value)


def canonical_policy(document: Mapping[str, Any]) -> str:
    """A form two equal policies share however MinIO reorders them (it sorts actions and
    may turn a one-element list into a string)."""

    def as_list(value: Any) -> list[Any]:
        return sorted(set(value)) if isinstance(value, list) else [value]

    statements = []
    for statement in document.get("Statement", []):
        normal = dict(statement)
        for key in ("Action", "NotAction", "Resource", "NotResource"):
            if key in normal:
                normal[key] = as_list(normal[key])
        statements.append(json.dumps(normal, sort_keys=True))
    return json.dumps({"Version": document.get("Version"), "Statement": sorted(statements)})


def merge_env_lines(existing: str, updates: Mapping[str, str]) -> str:
    """``existing`` (KEY=VALUE lines) with ``updates`` set: lines for those names replaced
    in place (a repeated one dropped), other lines kept, new names appended."""
    out: list[str] = []
    written: set[str] = set()
    for line in existing.splitlines():
        name = line.split("=", 1)[0].strip() if "=" in line else ""
        if line.lstrip().startswith("#") or name not in updates:
            out.append(line)
        elif name not in written:
            out.append(f"{name}={updates[name]}")
            written.add(name)
    out.extend(f"{name}={value}" for name, value in updates.items() if name not in written)
    return "\n".join(out) + "\n"


def load_template(templates_dir: Path, role: str) -> dict[str, Any]:
    path = templates_dir / f"{role}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read policy template {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"policy template {path}: expected a JSON object at the top")
    return raw


def identity_specs(
    settings: Settings,
    options: IdentityOptions,
    watched: Sequence[str],
    policies: Sequence[RetentionPolicy],
) -> list[IdentitySpec]:
    """The consumer and the uploader as setup wants them. Raises ConfigError."""
    values = bucket_values(settings)
    lists = policy_lists(watched, policies)
    keys = {
        "consumer": (settings.minio_consumer_access_key, settings.minio_consumer_secret_key),
        "uploader": (settings.minio_uploader_access_key, settings.minio_uploader_secret_key),
    }
    specs = []
    for role in ROLES:
        access_key, secret = keys[role]
        template = load_template(options.templates_dir, role)
        specs.append(
            IdentitySpec(
                role=role,
                access_key=access_key,
                access_setting=f"MINIO_{role.upper()}_ACCESS_KEY",
                secret_setting=f"MINIO_{role.upper()}_SECRET_KEY",
                policy_name=f"{settings.minio_identity_policy_prefix}-{role}",
                policy=render_policy(template, values, lists, f"{role}.json"),
                secret_key=secret.get_secret_value(),
            )
        )
    check_specs(specs, settings.minio_access_key)
    return specs


def check_specs(specs: Sequence[IdentitySpec], root_access_key: str) -> None:
    """Distinct access keys, none the root's, and secrets MinIO would take. Raises
    ConfigError."""
    keys = [spec.access_key for spec in specs]
    if len(set(keys)) != len(keys):
        raise ConfigError("MINIO_CONSUMER_ACCESS_KEY and MINIO_UPLOADER_ACCESS_KEY must differ")
    for spec in specs:
        if spec.access_key == root_access_key:
            raise ConfigError(
                f"{spec.access_setting} is the root access key (MINIO_ACCESS_KEY); "
                "give the identity its own"
            )
        if spec.secret_key and len(spec.secret_key) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{spec.secret_setting} must be at least {MIN_SECRET_LENGTH} characters"
            )


# --------------------------------------------------------------------------------------
# I/O: MinIO's admin API
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserState:
    """What MinIO says about one user (never its secret: the admin API does not tell)."""

    status: str
    policies: frozenset[str]
    groups: tuple[str, ...]


def minio_admin(
    settings: Settings,
    access_key: str | None = None,
    secret_key: str | None = None,
    http: urllib3.PoolManager | None = None,
) -> MinioAdmin:
    """The admin client with the root keys of the settings, or with the given pair."""
    return MinioAdmin(
        endpoint=settings.minio_endpoint,
        credentials=StaticProvider(
            access_key if access_key is not None else settings.minio_access_key,
            secret_key if secret_key is not None else settings.minio_secret_key.get_secret_value(),
        ),
        region=settings.minio_region,
        secure=settings.minio_use_ssl,
        http_client=http or minio_http_pool(settings),
    )


def admin_error_code(exc: BaseException) -> str:
    """MinIO's error code ("XMinioAdminNoSuchUser", "AccessDenied", …) of an admin call's
    failure (see ``consumer.minio.classify_failure``)."""
    return classify_failure(exc).code


def user_state(admin: MinioAdmin, access_key: str) -> UserState | None:
    """None when MinIO has no such user."""
    try:
        info = json.loads(admin.user_info(access_key))
    except MINIO_ERRORS as exc:
        if admin_error_code(exc) == "XMinioAdminNoSuchUser":
            return None
        raise
    names = str(info.get("policyName") or "")
    return UserState(
        status=str(info.get("status", "")),
        policies=frozenset(name for name in names.split(",") if name),
        groups=tuple(info.get("memberOf") or ()),
    )


def secret_works(settings: Settings, access_key: str, secret_key: str) -> bool:
    """Whether MinIO accepts this key pair. Asks for the identity's own account info, which
    needs no permission beyond valid credentials."""
    try:
        minio_admin(settings, access_key, secret_key).account_info()
    except MINIO_ERRORS as exc:
        if admin_error_code(exc) in _BAD_CREDENTIALS:
            return False
        raise
    return True


def ensure_policy(admin: MinioAdmin, name: str, document: Mapping[str, Any]) -> Change:
    """Add the canned policy, or replace it when its statements differ."""
    detail = f"{len(document['Statement'])} statement(s)"
    try:
        current: Any = json.loads(admin.policy_info(name))
    except MINIO_ERRORS as exc:
        if admin_error_code(exc) != "XMinioAdminNoSuchPolicy":
            raise
        current = None
    if isinstance(current, dict) and "Statement" not in current and "Policy" in current:
        current = current["Policy"]  # newer servers wrap the document in its metadata
    if isinstance(current, dict) and canonical_policy(current) == canonical_policy(document):
        return Change("policy", name, Action.UNCHANGED, detail)
    admin.policy_add(name, policy=dict(document))
    return Change("policy", name, Action.CREATED if current is None else Action.UPDATED, detail)


def ensure_user(
    admin: MinioAdmin,
    settings: Settings,
    spec: IdentitySpec,
    state: UserState | None,
    generated_in: Path | None = None,
    generated_secret: str = "",
) -> list[Change]:
    """Create the user with the spec's (or the generated) secret and exactly the spec's
    policy; on an existing user, set the configured secret when MinIO does not accept it
    and replace any other policy by the spec's."""
    key, policy = spec.access_key, spec.policy_name
    if state is None:
        admin.user_add(key, spec.secret_key or generated_secret)
        admin.policy_set(policy, user=key)
        origin = f"written to {generated_in}" if generated_in else f"from {spec.secret_setting}"
        return [Change("identity", key, Action.CREATED, f"policy {policy}, secret {origin}")]
    if state.status != "enabled":
        # Disabled on purpose (a leaked key?): setup never turns an identity back on.
        return [
            Change("identity", key, Action.WARNING, f"{state.status or 'not enabled'}, left so")
        ]
    done = []
    if spec.secret_key and not secret_works(settings, key, spec.secret_key):
        admin.user_add(key, spec.secret_key)  # on an existing user: a new secret
        done.append(f"secret set from {spec.secret_setting}")
    if state.policies != {policy}:
        admin.policy_set(policy, user=key)  # replaces every policy mapped to the user
        before = ", ".join(sorted(state.policies)) or "none"
        done.append(f"policies {before} -> {policy}")
    action = Action.UPDATED if done else Action.UNCHANGED
    changes = [Change("identity", key, action, "; ".join(done) or f"policy {policy}")]
    if state.groups:
        changes.append(
            Change(
                "identity",
                key,
                Action.WARNING,
                f"member of group(s) {', '.join(state.groups)}: their policies apply too",
            )
        )
    return changes


def write_secrets_file(path: Path, updates: Mapping[str, str]) -> None:
    """Set ``updates`` in the KEY=VALUE file ``path``, readable by its owner only (0600).
    Written to a new file then renamed over, so a crash never leaves half a file and a
    file that had looser permissions is replaced. Raises SetupFailed."""
    try:
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        text = merge_env_lines(existing, updates)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupFailed(f"cannot write the secrets file {path}: {exc}") from exc


def provision_for_settings(
    settings: Settings,
    options: IdentityOptions,
    notified_buckets: Sequence[str],
    policies: Sequence[RetentionPolicy],
) -> list[Change]:
    """``setup --identities``: the specs from the settings, the processing rules and the
    retention policies, applied with the root keys. Raises ConfigError, SetupFailed,
    ConnectionFailed."""
    from consumer.processing.rules import load_rules  # the processing stack, only here

    sweeper_buckets = [p.bucket for p in by_enforcement(policies, Enforcement.SWEEPER)]
    watched = watched_buckets(
        settings, notified_buckets, (rule.bucket for rule in load_rules(settings)), sweeper_buckets
    )
    specs = identity_specs(settings, options, watched, policies)
    return provision_identities(minio_admin(settings), settings, specs, options.secrets_file)


def provision_identities(
    admin: MinioAdmin,
    settings: Settings,
    specs: Sequence[IdentitySpec],
    secrets_file: Path | None = None,
) -> list[Change]:
    """Policies and users of ``specs``. A user to create without a configured secret gets a
    generated one, written to ``secrets_file`` before the user exists (so it is never
    lost) and never printed. Raises ConfigError, SetupFailed, ConnectionFailed."""
    try:
        states = {spec.access_key: user_state(admin, spec.access_key) for spec in specs}
        to_generate = [s for s in specs if states[s.access_key] is None and not s.secret_key]
        if to_generate and secrets_file is None:
            names = ", ".join(spec.secret_setting for spec in to_generate)
            raise ConfigError(
                f"{names} unset for an identity to create: set it, or give "
                "--secrets-file PATH to have one generated there"
            )
        generated = {
            spec.access_key: secrets.token_urlsafe(GENERATED_SECRET_BYTES) for spec in to_generate
        }
        if secrets_file is not None and generated:
            updates: dict[str, str] = {}
            for spec in to_generate:
                updates[spec.access_setting] = spec.access_key
                updates[spec.secret_setting] = generated[spec.access_key]
            write_secrets_file(secrets_file, updates)
        changes: list[Change] = []
        for spec in specs:
            changes.append(ensure_policy(admin, spec.policy_name, spec.policy))
            new_secret = generated.get(spec.access_key, "")
            changes += ensure_user(
                admin,
                settings,
                spec,
                states[spec.access_key],
                secrets_file if new_secret else None,
                new_secret,
            )
    except MINIO_ERRORS as exc:
        failure = classify_failure(exc, settings)
        raise setup_error(failure, _describe_admin_error(failure)) from exc
    return changes


def _describe_admin_error(failure: MinioFailure) -> str:
    if failure.code == "AccessDenied":
        return (
            "MinIO refused an admin call: setup --identities needs the root keys in "
            "MINIO_ACCESS_KEY/MINIO_SECRET_KEY (or admin:GetPolicy, admin:CreatePolicy, "
            "admin:GetUser, admin:CreateUser and admin:AttachUserOrGroupPolicy)"
        )
    return f"MinIO refused an admin call: {failure.code}: {failure.reason}"
