"""A test CA for the local stack and a server certificate it signed, made with the
``openssl`` command (infra does not depend on the test-only ``trustme``/``cryptography``
packages: ``make run`` works without them).

The server's key and certificate chain go into one PEM file, which Kafka reads as its
keystore (``ssl.keystore.type=PEM``, no keystore password); clients trust ``ca.pem``. The
files are made once per state directory and kept (a client holding the CA keeps working
across restarts); an incomplete set from a killed run is made again.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from infra.stack.install import require_tool
from infra.stack.process import run_checked

CA_DAYS = 3650
SERVER_DAYS = 825
SERVER_HOSTS = ("IP:127.0.0.1", "DNS:localhost")

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = VoxPersona local stack
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {hosts}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # the test CA's certificate (PEM): what clients trust
    keystore: Path  # the server's PKCS#8 key and certificate chain (PEM), 0600


def tls_files(directory: Path) -> TlsFiles:
    return TlsFiles(directory / "ca.pem", directory / "server.pem")


def ensure_test_ca(directory: Path) -> TlsFiles:
    """The CA and server files under ``directory``, made the first time."""
    files = tls_files(directory)
    if files.ca_file.is_file() and files.keystore.is_file():
        return files
    openssl = require_tool("openssl", "install OpenSSL (Debian: apt-get install openssl)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp makes the directory 0700: the keys are never readable by anyone else.
    work = Path(tempfile.mkdtemp(prefix=".tls-", dir=directory.parent))
    try:
        _make_certificates(openssl, work)
        shutil.rmtree(directory, ignore_errors=True)
        work.replace(directory)  # all files or none: a killed run leaves only the temp dir
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files


def _make_certificates(openssl: str, work: Path) -> None:
    config = work / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG.format(hosts=", ".join(SERVER_HOSTS)))
    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc")
    ca_key, ca_pem = str(work / "ca.key"), str(work / "ca.pem")
    csr = str(work / "server.csr")
    _openssl(
        "making the stack's test CA",
        *(openssl, "req", "-x509", "-new", *new_key, "-keyout", ca_key, "-out", ca_pem),
        *("-days", str(CA_DAYS), "-config", str(config), "-extensions", "ca_ext"),
        *("-subj", "/CN=VoxPersona local stack test CA"),
    )
    _openssl(
        "making the stack's server key",
        *(openssl, "req", "-new", *new_key, "-keyout", str(work / "server.key")),
        *("-out", csr, "-config", str(config), "-subj", "/CN=127.0.0.1"),
    )
    _openssl(
        "signing the stack's server certificate",
        *(openssl, "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key),
        *("-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(SERVER_DAYS)),
        *("-out", str(work / "server.crt"), "-extfile", str(config), "-extensions", "server_ext"),
    )
    keystore = work / "server.pem"
    keystore.write_bytes(
        b"".join((work / name).read_bytes() for name in ("server.key", "server.crt", "ca.pem"))
    )
    keystore.chmod(0o600)
    # The CA's key goes: nothing else is ever signed with it.
    for leftover in ("ca.key", "server.key", "server.crt", "server.csr", "openssl.cnf"):
        (work / leftover).unlink()


def _openssl(what: str, *cmd: str) -> None:
    run_checked(list(cmd), None, None, what)
