"""Key rotation: SIGHUP makes a running server re-read its JWKS; a broken file keeps the keys."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.servers import ServerProcess

OLD = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    entries = []
    for kid, key in keys.items():
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entry.update(kid=kid, alg="RS256")
        entries.append(entry)
    path.write_text(json.dumps({"keys": entries}))


def metrics_status(server: ServerProcess, key: rsa.RSAPrivateKey, kid: str) -> int:
    token = jwt.encode(
        {"exp": int(time.time()) + 600, "admin": True}, key, algorithm="RS256", headers={"kid": kid}
    )
    request = urllib.request.Request(
        server.base + "/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def until(predicate: object, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighup_rereads_the_jwks_and_a_broken_file_keeps_the_keys_in_force(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "jwks.json"
    write_jwks(keys, {"old": OLD})
    args = ["--store", "memory", "--jwks", str(keys), "--protect-ops", "true"]
    with ServerProcess(args, log_path=tmp_path / "server.log") as server:
        assert metrics_status(server, OLD, "old") == 200
        assert metrics_status(server, NEW, "new") == 401
        write_jwks(keys, {"old": OLD, "new": NEW})
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        assert until(lambda: metrics_status(server, NEW, "new") == 200)
        keys.write_text("{not json")
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert server.proc.poll() is None  # still running
        assert metrics_status(server, NEW, "new") == 200  # the keys in force are kept
    assert "keeping the keys in force" in (tmp_path / "server.log").read_text()
