"""Encryption and authentication settings without a server: MinIO's TLS pool and error
lines, Kafka's client options and their consistency checks, the CLI's exit codes for bad
files and bad combinations. (tests/integration/test_tls.py and test_kafka_sasl.py prove
them against real servers.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
import urllib3
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from pydantic import ValidationError

from consumer.errors import ConfigError
from consumer.kafka.clients import (
    describe_security_failure,
    kafka_client_options,
    security_problems,
)
from consumer.minio import (
    describe_minio_failure,
    minio_http_pool,
    minio_ssl_context,
    minio_tls_problem,
)
from consumer.settings import Settings
from tests.test_cli import run_cli


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def _not_trusted() -> ssl.SSLCertVerificationError:
    """The error OpenSSL raises for an unknown issuer, as urllib3 hands it on."""
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] verify failed")
    error.verify_message = "unable to get local issuer certificate"  # type: ignore[attr-defined]
    return error


# --- MinIO ------------------------------------------------------------------------------


def test_minio_without_ssl_has_no_tls_context() -> None:
    assert minio_ssl_context(settings(MINIO_USE_SSL=False, MINIO_CERT_PATH="/nowhere")) is None


def test_minio_ssl_pool_verifies_against_the_ca_with_the_factory_limits(ca_file: Path) -> None:
    pool = minio_http_pool(settings(MINIO_USE_SSL=True, MINIO_CERT_PATH=ca_file))
    context = pool.connection_pool_kw["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert len(context.get_ca_certs()) == 1  # the bundle's CA, not the system's
    assert pool.connection_pool_kw["retries"].total is False  # our retry loop decides
    timeout = pool.connection_pool_kw["timeout"]
    assert isinstance(timeout, urllib3.Timeout)
    assert (timeout.connect_timeout, timeout.read_timeout) == (5.0, 60.0)


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_an_unusable_minio_cert_path_is_a_config_error(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"MINIO_CERT_PATH={path} is not a readable PEM"):
        minio_ssl_context(settings(MINIO_USE_SSL=True, MINIO_CERT_PATH=path))


def test_a_ca_mismatch_deep_in_urllib3_errors_is_named_with_the_bundle(ca_file: Path) -> None:
    wrapped = urllib3.exceptions.SSLError(_not_trusted())
    retried = urllib3.exceptions.MaxRetryError(None, "/bucket", reason=wrapped)  # type: ignore[arg-type]
    current = settings(MINIO_USE_SSL=True, MINIO_CERT_PATH=ca_file)
    expected = (
        "MinIO TLS certificate not trusted: unable to get local issuer certificate "
        f"(MINIO_CERT_PATH={ca_file})"
    )
    assert minio_tls_problem(wrapped, current) == expected
    assert describe_minio_failure(retried, current) == expected
    assert minio_tls_problem(wrapped) == (
        "MinIO TLS certificate not trusted: unable to get local issuer certificate "
        "(check MINIO_CERT_PATH)"
    )


def test_other_minio_failures_keep_their_own_words() -> None:
    refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    current = settings(MINIO_ENDPOINT="127.0.0.1:9")
    assert minio_tls_problem(refused, current) is None
    assert describe_minio_failure(refused, current).startswith("MinIO at 127.0.0.1:9 unreachable: ")


# --- Kafka ------------------------------------------------------------------------------


def test_plaintext_options_carry_no_credentials() -> None:
    options = kafka_client_options(
        settings(KAFKA_BOOTSTRAP_SERVERS="k:9092", KAFKA_SASL_PASSWORD="ignored-here")
    )
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_options_name_the_mechanism_and_user(ca_file: Path) -> None:
    options = kafka_client_options(
        settings(
            KAFKA_SECURITY_PROTOCOL="sasl_ssl",
            KAFKA_SASL_MECHANISM="scram-sha-512",
            KAFKA_SASL_USERNAME="indexer",
            KAFKA_SASL_PASSWORD="s3cret-value",
            KAFKA_SSL_CAFILE=ca_file,
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "indexer",
        "s3cret-value",
    )
    context = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert len(context.get_ca_certs()) == 1


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs KAFKA_SASL_USERNAME"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
            "needs KAFKA_SASL_PASSWORD",
        ),
        (
            {"KAFKA_SSL_CAFILE": "/ca.pem"},
            "KAFKA_SSL_CAFILE set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/k.pem"},
            "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_security_settings_that_do_not_fit_together(values: dict[str, str], problem: str) -> None:
    current = settings(**values)
    assert any(problem in found for found in security_problems(current))
    with pytest.raises(ConfigError, match=problem):
        kafka_client_options(current)


def test_consistent_security_settings_have_no_problem() -> None:
    assert security_problems(settings()) == []
    assert (
        security_problems(
            settings(
                KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                KAFKA_SASL_USERNAME="u",
                KAFKA_SASL_PASSWORD="p",
            )
        )
        == []
    )


def test_a_missing_kafka_ca_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    current = settings(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=missing)
    with pytest.raises(ConfigError, match=f"KAFKA_SSL_CAFILE={missing}"):
        kafka_client_options(current)


def test_an_unknown_protocol_or_mechanism_is_refused() -> None:
    with pytest.raises(ValidationError):
        settings(KAFKA_SECURITY_PROTOCOL="TLS")
    with pytest.raises(ValidationError):
        settings(KAFKA_SASL_MECHANISM="GSSAPI")


def test_the_kafka_password_is_a_secret() -> None:
    current = settings(KAFKA_SASL_PASSWORD="hunter2-kafka")
    assert "hunter2-kafka" in current.secret_values
    assert "hunter2-kafka" not in repr(current)


def test_refused_credentials_are_named_without_the_password() -> None:
    current = settings(
        KAFKA_BOOTSTRAP_SERVERS="k:9093",
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_USERNAME="indexer",
        KAFKA_SASL_PASSWORD="hunter2-kafka",
    )
    line = describe_security_failure(
        SaslAuthenticationFailed("Authentication failed: Invalid username or password"), current
    )
    assert line is not None
    assert line.startswith(
        "Kafka at k:9093 refused the credentials of KAFKA_SASL_USERNAME=indexer "
        "(PLAIN over SASL_PLAINTEXT): "
    )
    assert "Invalid username or password" in line
    assert "hunter2-kafka" not in line


def test_an_untrusted_broker_certificate_names_the_ca_file(ca_file: Path) -> None:
    current = settings(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=ca_file)
    assert describe_security_failure(_not_trusted(), current) == (
        "Kafka TLS certificate not trusted at 127.0.0.1:9092: unable to get local issuer "
        f"certificate (KAFKA_SSL_CAFILE={ca_file})"
    )
    assert describe_security_failure(KafkaConnectionError("refused"), current) is None


# --- the CLI: bad files and combinations are exit 2, one line, before any change ---------


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MINIO_USE_SSL": "true", "MINIO_CERT_PATH": "/nonexistent/ca.pem"}, "MINIO_CERT_PATH="),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME"),
        ({"KAFKA_SECURITY_PROTOCOL": "KERBEROS"}, "invalid setting KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_bad_security_settings_stop_setup_with_exit_2(env: dict[str, str], fragment: str) -> None:
    # Nothing listens on port 9: only a check made before connecting can answer exit 2.
    result = run_cli(
        "setup", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", MINIO_ENDPOINT="127.0.0.1:9", **env
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


@pytest.mark.parametrize(
    ("error", "protocol", "fragment"),
    [
        (UnsupportedSaslMechanismError(), "SASL_SSL", "does not accept the SASL mechanism PLAIN"),
        (IllegalSaslStateError(), "SASL_PLAINTEXT", "is it a SASL listener?"),
        (ConnectionResetError(), "SSL", "did not complete the TLS handshake"),
        (TimeoutError(), "SASL_SSL", "did not complete the TLS handshake"),
    ],
)
def test_a_listener_of_another_kind_is_named(
    error: BaseException, protocol: str, fragment: str
) -> None:
    current = settings(
        KAFKA_SECURITY_PROTOCOL=protocol, KAFKA_SASL_USERNAME="u", KAFKA_SASL_PASSWORD="p"
    )
    line = describe_security_failure(error, current)
    assert line is not None
    assert fragment in line
    assert "refused the credentials" not in line


def test_a_reset_without_tls_is_not_a_security_failure() -> None:
    assert describe_security_failure(ConnectionResetError(), settings()) is None


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_a_refused_tls_connection_is_an_outage_not_a_security_failure(protocol: str) -> None:
    # Nothing listens (the broker is down): the role waits for it instead of giving up.
    current = settings(
        KAFKA_SECURITY_PROTOCOL=protocol, KAFKA_SASL_USERNAME="u", KAFKA_SASL_PASSWORD="p"
    )
    assert describe_security_failure(ConnectionRefusedError(), current) is None


# --- the local stack's Kafka listeners (no server started) -----------------------------


def test_the_stack_broker_gets_its_listeners_with_the_generated_user(tmp_path: Path) -> None:
    from infra.stack import Credentials, StackState
    from infra.stack.kafka import kafka_properties, scram_credential
    from infra.stack.tls import tls_files

    creds = Credentials.generate()
    state = StackState(
        kafka_port=9101,
        kafka_sasl_port=9102,
        kafka_ssl_port=9104,
        kafka_scram_port=9105,
        kafka_controller_port=9103,
        kafka_faults_port=9106,
        kafka_faults_proxy_port=9107,
    )
    tls = tls_files(tmp_path / "tls")
    text = kafka_properties(state, tmp_path, creds, tls)
    props = dict(line.split("=", 1) for line in text.splitlines() if line)
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9101,SASL_PLAINTEXT://127.0.0.1:9102,SSL://127.0.0.1:9104,"
        "SASL_SSL://127.0.0.1:9105,CONTROLLER://127.0.0.1:9103,FAULTS://127.0.0.1:9106"
    )
    # The fault drills' listener is advertised where their proxy listens, the rest as bound.
    assert props["advertised.listeners"] == props["listeners"].replace(
        "FAULTS://127.0.0.1:9106", "FAULTS://127.0.0.1:9107"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"].endswith(
        f'user_{creds.kafka_sasl_username}="{creds.kafka_sasl_password}";'
    )
    # SCRAM's users live in the KRaft metadata, not in the properties.
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "ScramLoginModule" in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert (props["ssl.keystore.type"], props["ssl.keystore.location"]) == (
        "PEM",
        str(tls.keystore),
    )
    assert scram_credential(creds) == (
        f"SCRAM-SHA-512=[name={creds.kafka_sasl_username},password={creds.kafka_sasl_password}]"
    )


def test_the_stack_test_ca_signs_a_certificate_for_127_0_0_1(tmp_path: Path) -> None:
    """A TLS handshake in memory: the server side with the broker's PEM keystore, the
    client side verifying as the consumer does (the stack's CA, host 127.0.0.1); another
    CA is refused. Made once: a second call keeps the files."""
    from infra.stack.tls import ensure_test_ca

    files = ensure_test_ca(tmp_path / "tls")
    assert files.keystore.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["ca.pem", "server.pem"]
    before = files.ca_file.read_bytes()
    assert ensure_test_ca(tmp_path / "tls") == files
    assert files.ca_file.read_bytes() == before

    def handshake(ca: Path) -> None:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(files.keystore)
        client = ssl.create_default_context(cafile=str(ca))
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client_side = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
        server_side = server.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            done = 0
            for side, out, peer_in in ((client_side, c_out, s_in), (server_side, s_out, c_in)):
                try:
                    side.do_handshake()
                    done += 1
                except ssl.SSLWantReadError:
                    pass
                peer_in.write(out.read())
            if done == 2:
                return
        raise AssertionError("handshake did not finish")

    handshake(files.ca_file)
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(other)


def test_the_stack_env_keeps_plaintext_settings_valid(tmp_path: Path) -> None:
    """``eval "$(python -m infra.stack env)"`` then ``consumer run`` (make run): the CA file
    of the TLS listeners is printed under a name of its own, since KAFKA_SSL_CAFILE with
    PLAINTEXT is refused as a mistake; the names of the other listeners are not settings."""
    from infra.stack import Stack, StackState
    from infra.stack.state import save_state

    save_state(tmp_path, StackState(1, 2, 3, 4, 5, 6, 7, 8))
    env = Stack(tmp_path).env()
    assert env["KAFKA_STACK_CAFILE"] == str(tmp_path.resolve() / "tls" / "ca.pem")
    assert (env["KAFKA_SSL_BOOTSTRAP_SERVERS"], env["KAFKA_SCRAM_BOOTSTRAP_SERVERS"]) == (
        "127.0.0.1:6",
        "127.0.0.1:7",
    )
    current = settings(**{k: v for k, v in env.items() if k != "POSTGRES_URL"})
    assert current.kafka_security_protocol == "PLAINTEXT"
    assert security_problems(current) == []
    assert not (tmp_path / "tls").exists()  # env reads; it never makes files


def test_a_state_of_an_older_stack_is_restarted_not_reused() -> None:
    from infra.stack import StackState
    from infra.stack.lifecycle import has_every_port

    assert not has_every_port(StackState(1, 2, 3, 4, kafka_sasl_port=5, postgres_port=8))
    # One from before the network-fault listener (Kafka's FAULTS) is restarted too.
    assert not has_every_port(StackState(1, 2, 3, 4, 5, 6, 7, 8))
    faults = {"kafka_faults_port": 9, "kafka_faults_proxy_port": 10}
    assert has_every_port(StackState(1, 2, 3, 4, 5, 6, 7, 8, **faults))


def test_credentials_of_an_older_stack_are_kept_and_completed(tmp_path: Path) -> None:
    """A state dir from before the SASL listener: its PostgreSQL was initialised with the
    stored password, so the stored values must survive; the new ones are generated."""
    import json

    from infra.stack import Stack

    old = {"minio_access_key": "voxold", "minio_secret_key": "s" * 30, "postgres_password": "pg"}
    (tmp_path / "credentials.json").write_text(json.dumps(old))
    creds = Stack(tmp_path).credentials()
    assert (creds.minio_access_key, creds.minio_secret_key, creds.postgres_password) == (
        "voxold",
        "s" * 30,
        "pg",
    )
    assert creds.kafka_sasl_username
    assert creds.kafka_sasl_password
    assert Stack(tmp_path).credentials() == creds  # written back, stable from now on
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_a_stack_tool_that_echoes_a_password_has_it_masked(tmp_path: Path) -> None:
    """The SCRAM password is on kafka-storage's command line; should a tool echo it in an
    error, neither its log nor the one-line error shows it."""
    from infra.stack import StackError
    from infra.stack.process import run_checked

    log = tmp_path / "tool.log"
    command = ["sh", "-c", "echo 'bad value SCRAM-SHA-512=[password=s3cr3t-pw]' >&2; exit 3"]
    with pytest.raises(StackError) as raised:
        run_checked(command, log, None, "formatting", secrets=("s3cr3t-pw",))
    assert str(raised.value) == "formatting failed (exit 3): bad value SCRAM-SHA-512=[password=***]"
    assert "s3cr3t-pw" not in log.read_text()
