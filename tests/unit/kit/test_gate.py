"""dataops_kit.teach.gate and the leaderboard's checks, without a store: the AWS
signature as botocore makes it, who may do what, which refs a student may move,
and what a student's text may carry to the instructor's terminal."""

import hashlib
import importlib.util
import os
import time
from email.message import Message

import pytest

from dataops_kit.teach import classroom, gate
from helpers import closed_by_peer

# The signature tests sign with botocore, one of the class store's packages (make class-deps).
needs_botocore = pytest.mark.skipif(not importlib.util.find_spec("botocore") and not os.environ.get("CI"),
                                    reason="needs the class store's packages: make class-deps (.ci/run installs them)")

ADA = {"access_key_id": "DATAOPSADA", "secret_access_key": "ada-secret"}
MD5 = hashlib.md5(b"model").hexdigest()
OBJECT = f"/class/dvc/files/md5/{MD5[:2]}/{MD5[2:]}"


class FakeKeys:  # the registry's one question: whose key is this (no file needed)
    data = {"admin": {"access_key_id": "ADMIN", "secret_access_key": "admin-secret"}, "students": {"ada": ADA}}

    def owner(self, access_key_id):
        return gate.Keys.owner(self, access_key_id)


def signed(method, target, body=b"", key=ADA, **headers):
    """A request as botocore signs it for a client of the gate at 127.0.0.1:9."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=f"http://127.0.0.1:9{target}", data=body, headers=headers)
    S3SigV4Auth(Credentials(key["access_key_id"], key["secret_access_key"]), "s3", "us-east-1").add_auth(request)
    message = Message()
    message["Host"] = "127.0.0.1:9"
    for name, value in request.headers.items():
        message[name] = value
    return message


@needs_botocore
@pytest.mark.parametrize("target", [OBJECT, "/class?list-type=2&prefix=dvc%2Ffiles%2F&max-keys=1000", "/class/"])
def test_a_request_botocore_signed_is_the_signer_s(target):
    assert gate.signer("GET", target, signed("GET", target), FakeKeys()) == "ada"


@needs_botocore
def test_the_admin_key_is_the_instructor_s():
    headers = signed("DELETE", OBJECT, key=FakeKeys.data["admin"])
    assert gate.signer("DELETE", OBJECT, headers, FakeKeys()) == gate.INSTRUCTOR


@needs_botocore
@pytest.mark.parametrize("change, code", [
    (lambda h, t, b: (h, t.replace(MD5[2:], "0" * 30), b), "SignatureDoesNotMatch"),  # another object
    (lambda h, t, b: (h, t, b"evil"), "XAmzContentSHA256Mismatch"),  # another body
    (lambda h, t, b: (signed("PUT", t, b, key={**ADA, "secret_access_key": "guess"}), t, b), "SignatureDoesNotMatch"),
    (lambda h, t, b: (signed("PUT", t, b, key={"access_key_id": "NOBODY", "secret_access_key": "x"}), t, b),
     "InvalidAccessKeyId"),
    (lambda h, t, b: (Message(), t, b), "AccessDenied"),  # anonymous
    (lambda h, t, b: (h, t + "?X-Amz-Signature=00&X-Amz-Credential=DATAOPSADA", b), "AccessDenied"),  # presigned
])
def test_a_tampered_or_unsigned_request_is_refused(change, code):
    body = b"model"
    headers, target, body = change(signed("PUT", OBJECT, body), OBJECT, body)
    with pytest.raises(gate.Refused) as refused:
        gate.signer("PUT", target, headers, FakeKeys())  # who, from the line and headers alone
        gate.payload_check(headers, body)  # then the body, once read
    assert refused.value.code == code


@needs_botocore
def test_an_old_signature_is_refused():
    headers = signed("GET", OBJECT)
    with pytest.raises(gate.Refused, match="15 minutes"):
        gate.signer("GET", OBJECT, headers, FakeKeys(), now=time.time() + 3600)


@pytest.mark.parametrize("method, target, headers, allowed", [
    ("GET", OBJECT, {}, True),
    ("HEAD", OBJECT, {}, True),
    ("GET", "/class?list-type=2&prefix=dvc", {}, True),
    ("PUT", OBJECT, {}, True),
    ("PUT", OBJECT + ".dir", {}, True),
    ("DELETE", OBJECT, {}, False),
    ("POST", "/class?delete", {}, False),  # DeleteObjects
    ("DELETE", "/class", {}, False),  # DeleteBucket
    ("PUT", "/class", {}, False),  # CreateBucket
    ("PUT", "/other/x", {}, False),
    ("PUT", "/class/leaderboard.json", {}, False),
    ("PUT", "/class/dvc/files/md5/../../x", {}, False),
    ("PUT", OBJECT + "?partNumber=1&uploadId=1", {}, False),  # multipart
    ("POST", OBJECT + "?uploads", {}, False),
    ("PUT", OBJECT, {"x-amz-copy-source": "class/x"}, False),
    ("PUT", OBJECT + "?acl", {}, False),
    ("GET", "/class?acl", {}, False),
])
def test_a_student_may_read_list_and_add_named_objects_only(method, target, headers, allowed):
    if allowed:
        gate.policy("ada", method, target, headers)
    else:
        with pytest.raises(gate.Refused):
            gate.policy("ada", method, target, headers)
    gate.policy(gate.INSTRUCTOR, method, target, headers)  # the admin key may do anything


def test_an_object_s_bytes_must_have_the_md5_of_its_name():
    assert gate.content_refusal(OBJECT, b"model") is None
    assert "md5" in gate.content_refusal(OBJECT, b"another model")


EXP = "refs/exps/ab/" + "c" * 38


@pytest.mark.parametrize("user, old, new, ref, refused", [
    ("ada", gate.ZERO, "1" * 40, f"{EXP}/ada-forest", None),
    ("ada", "1" * 40, "2" * 40, f"{EXP}/ada-forest", None),  # her own, even forced
    ("bob", "1" * 40, "2" * 40, f"{EXP}/ada-forest", "not yours"),  # a force-push over hers
    ("bob", gate.ZERO, "2" * 40, f"{EXP}/ada-seed7", "not yours"),  # her name
    ("bob", gate.ZERO, "2" * 40, f"{EXP}/adam-x", "not yours"),
    ("bob", "1" * 40, gate.ZERO, f"{EXP}/ada-forest", "deletes"),  # dvc exp remove -g
    ("ada", "1" * 40, gate.ZERO, f"{EXP}/ada-forest", "deletes"),
    ("ada", "1" * 40, "2" * 40, "refs/heads/main", "instructor"),
    ("ada", gate.ZERO, "2" * 40, "refs/tags/v1", "instructor"),
    # The class's model registry (lesson 9): GTO's tags, a version and a stage.
    ("ada", gate.ZERO, "2" * 40, "refs/tags/classifier@v9.0.0", "registry"),  # register
    ("ada", gate.ZERO, "2" * 40, "refs/tags/classifier#prod#7", "registry"),  # assign (promote, roll back)
    ("ada", "1" * 40, "2" * 40, "refs/tags/classifier#prod#2", "registry"),  # move prod's tag
    ("ada", "1" * 40, gate.ZERO, "refs/tags/classifier#prod#2", "deletes"),  # unassign by deleting
    ("ada", "1" * 40, gate.ZERO, "refs/tags/classifier@v1.0.0", "deletes"),  # deregister by deleting
    (gate.INSTRUCTOR, gate.ZERO, "2" * 40, "refs/tags/classifier#prod#3", None),
    (gate.INSTRUCTOR, "1" * 40, "2" * 40, "refs/heads/main", None),
    (gate.INSTRUCTOR, "1" * 40, gate.ZERO, "refs/heads/main", "deletes"),
])
def test_a_student_moves_only_experiments_named_after_them(user, old, new, ref, refused):
    reason = gate.ref_refusal(user, old, new, ref)
    assert reason is None if refused is None else refused in reason


def test_the_hook_refuses_a_push_with_no_user_and_names_every_refusal(capsys):
    lines = [f"{gate.ZERO} {'1' * 40} {EXP}/ada-x\n", f"{'1' * 40} {gate.ZERO} refs/heads/main\n"]
    assert gate.pre_receive(lines, {"REMOTE_USER": "ada"}) == 1
    assert capsys.readouterr().err.count("✗") == 1
    assert gate.pre_receive(lines[:1], {}) == 1
    assert gate.pre_receive(lines[:1], {"REMOTE_USER": "ada"}) == 0


@pytest.mark.parametrize("name", ["Ada", "ada-x", "", "a" * 21, "instructor", "1ada", "ada\x1b", None, 3])
def test_a_student_name_is_checked(name, tmp_path):
    with pytest.raises(gate.Refused):
        gate.Keys(tmp_path).enrol(name)


def test_without_a_roster_a_name_gets_one_key_once_and_the_file_stays_private(tmp_path):
    keys = gate.Keys(tmp_path)
    key = keys.enrol("ada")
    assert keys.owner(key["access_key_id"]) == ("ada", key["secret_access_key"])
    assert keys.login("ada", key["secret_access_key"]) and not keys.login("ada", "guess")
    with pytest.raises(gate.Refused, match="already has a key"):
        gate.Keys(tmp_path).enrol("ada")
    assert oct((tmp_path / "keys.json").stat().st_mode)[-3:] == "600"


def test_with_a_roster_a_name_is_claimed_with_its_own_code_once_and_a_revoked_key_is_refused_at_once(tmp_path):
    (tmp_path / "roster.csv").write_text("name,lms_id\nbob,1002\neve,1005\n")
    instructor, door = gate.Keys(tmp_path), gate.Keys(tmp_path)  # the instructor's command, the gate
    codes = instructor.issue(["bob", "eve"])
    assert sorted(codes) == ["bob", "eve"] and instructor.issue(["bob", "eve"]) == codes  # once a name
    for name, code, status, says in (("dan", codes["bob"], 403, "not on the class roster"),
                                     ("bob", None, 401, "needs bob's join code"),
                                     ("bob", codes["eve"], 403, "not bob's join code"),  # eve's own code
                                     ("bob", "abcd-efgh-jkmn", 403, "not bob's join code")):
        with pytest.raises(gate.Refused, match=says) as refused:
            door.enrol(name, code)
        assert refused.value.status == status
    key = door.enrol("bob", codes["bob"].upper())
    assert door.owner(key["access_key_id"])[0] == "bob"
    with pytest.raises(gate.Refused, match="or it was used"):
        door.enrol("bob", codes["bob"])
    assert door.enrol("eve", codes["eve"])  # her code was never spent on his name
    again = instructor.issue(["bob"], again=True)  # a lost laptop: revoked, and a new code
    assert door.owner(key["access_key_id"]) is None and not door.login("bob", key["secret_access_key"])
    assert door.owner(door.enrol("bob", again["bob"])["access_key_id"])[0] == "bob"


def test_the_roster_is_one_csv_for_the_gate_and_the_gradebook(tmp_path):
    assert gate.roster(tmp_path) == {}
    (tmp_path / "roster.csv").write_text("name,lms_id\n ada ,1001\n,1002\nbob,\n")
    assert gate.roster(tmp_path) == {"ada": "1001", "bob": ""}


def test_a_student_s_additions_are_counted_against_a_quota(tmp_path):
    usage = gate.Usage(tmp_path / "usage.json", 100)
    usage.add("ada", 60)
    assert usage.room("ada", 40) and not usage.room("ada", 41) and usage.room("bob", 100)
    assert usage.room(gate.INSTRUCTOR, 10 ** 12)
    assert not gate.Usage(tmp_path / "usage.json", 100).room("ada", 41)  # kept across a restart


@pytest.mark.parametrize("metrics, reason", [
    ({"accuracy": 0.9, "f1_macro": 0.88}, None),
    ({"accuracy": 1, "f1_macro": 1.0}, None),
    ({"accuracy": 1e9, "f1_macro": 0.9}, "accuracy is 1000000000.0: not a number between 0 and 1"),
    ({"accuracy": "best", "f1_macro": 0.9}, "accuracy is 'best'"),
    ({"accuracy": float("nan"), "f1_macro": 0.9}, "accuracy is nan"),
    ({"accuracy": True, "f1_macro": 0.9}, "accuracy is True"),
    ({"accuracy": 0.9, "f1_macro": -0.1}, "f1_macro is -0.1"),
    pytest.param({}, "its reports/metrics.json cannot be read", id="no metrics"),
    ({"f1_macro": 0.9}, "accuracy is None"),
])
def test_a_metric_is_a_finite_number_in_range(metrics, reason):
    found = classroom.metric_refusal(metrics)
    assert found is None if reason is None else found.startswith(reason)


def test_a_lock_output_not_named_by_an_md5_is_refused():
    lock = {"stages": {"evaluate": {"outs": [{"path": "reports/metrics.json", "md5": "xx/../../secret.json"}]}}}
    assert "'xx/../../secret.json' as the md5 of reports/metrics.json: refused" in classroom.lock_refusal(lock)
    assert classroom.lock_refusal({"stages": {"e": {"outs": [{"path": "m", "md5": MD5}]}}}) is None


@pytest.mark.parametrize("text", ["\x1b]0;PWNED-TITLE\x07", "\x1b[2J", "a\u202eb", "line\nbreak", "\x9b31m"])
def test_student_text_reaches_the_terminal_without_control_characters(text):
    shown = classroom.clean(text)
    assert not any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 or c == "\u202e" for c in shown)
    assert len(classroom.clean("x" * 500, 60)) == 60


def ask(server, head: bytes):
    """Send a request's line and headers, nothing of its body: the reply's status line and headers, read
    to the end (within 10 s, or socket.timeout: the gate must close the connection, not wait for a body)."""
    import socket

    with socket.create_connection(server.server_address, timeout=10) as connection:
        connection.sendall(head + b"\r\n")
        reply = connection.makefile("rb").read()
    return reply.decode(errors="replace").partition("\r\n\r\n")[0]


@needs_botocore
@pytest.mark.parametrize("framing, keyless, keyed", [
    (f"Content-Length: {1 << 30}", "403", "413"),  # 1 GB announced, nothing sent: no wait for it
    ("Content-Length: -1", "403", "400"),  # read(-1) would read until the client hangs up
    ("Content-Length: many", "403", "400"),
    ("Transfer-Encoding: chunked\r\n\r\n-1\r\n", "403", "413"),
    (f"Transfer-Encoding: chunked\r\n\r\n{gate.MAX_OBJECT + 1:x}\r\n", "403", "413"),
])
def test_the_gate_knows_who_asks_and_how_much_before_it_reads_a_body(tmp_path, framing, keyless, keyed):
    """Nobody's body is read before their key is checked, and a key's body only within its bound: each
    request below sends its headers and none of the body it announces, and is answered at once and closed."""
    server = serving(gate.Server, tmp_path)
    gate.Gate.keys = FakeKeys()
    try:
        for key, status in ((None, keyless), (ADA, keyed)):
            headers = "".join(f"{k}: {v}\r\n" for k, v in signed("PUT", OBJECT, b"", key=key).items()) if key \
                else "Host: 127.0.0.1:9\r\n"
            head, _, rest = framing.partition("\r\n\r\n")
            line = ask(server, f"PUT {OBJECT} HTTP/1.1\r\n{headers}{head}\r\n\r\n{rest}".encode()[:-2])
            assert line.split()[1] == status and "Connection: close" in line, line
    finally:
        server.shutdown()
        server.server_close()


def test_a_key_holds_its_share_of_connections_wherever_it_comes_from(tmp_path):
    server = gate.Server(("127.0.0.1", 0), gate.Gate)
    try:
        mine = [object() for _ in range(server.per_key)]
        assert all(server.claim(connection, "ada") for connection in mine)
        assert not server.claim(object(), "ada") and server.claim(mine[0], "ada")  # her own again: still hers
        assert server.claim(object(), "bob")  # a classmate on the same address is served
    finally:
        server.server_close()


class SmallGate(gate.Server):
    per_client, header_seconds = 8, 1


def held_open(server, count, host):
    """COUNT connections from HOST (a loopback address of its own) that send half a request's headers."""
    import socket

    held = []
    for _ in range(count):
        connection = socket.create_connection(server.server_address, timeout=30, source_address=(host, 0))
        connection.sendall(b"GET /git/class.git/info/refs HTTP/1.1\r\nHost: x\r\n")
        held.append(connection)
    return held


def serving(server_class, folder):
    import threading

    gate.Gate.folder, gate.Gate.keys, gate.Gate.log = folder, gate.Keys(folder), None
    gate.Gate.usage = gate.Usage(folder / "usage.json", 1 << 20)
    server = server_class(("127.0.0.1", 0), gate.Gate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_one_client_holding_connections_neither_locks_out_the_class_nor_stays(tmp_path):
    """Bounds that hold before a client says who it is: its connections beyond its share are closed at
    once, those it holds without finishing their headers end at the header deadline, and a classmate
    on another address is answered meanwhile."""
    import http.client

    server = serving(SmallGate, tmp_path)
    try:
        held = held_open(server, 20, "127.0.0.66")
        assert all(closed_by_peer(connection) for connection in held[SmallGate.per_client:])
        classmate = http.client.HTTPConnection(*server.server_address, timeout=30)
        classmate.request("GET", "/git/class.git/info/refs?service=git-upload-pack")
        assert classmate.getresponse().status == 401  # answered: git asks for the key
        assert all(closed_by_peer(connection) for connection in held[:SmallGate.per_client])
    finally:
        server.shutdown()
        server.server_close()


def test_with_a_certificate_the_gate_speaks_https_and_a_silent_handshake_holds_up_no_one(tmp_path):
    import datetime
    import http.client
    import socket
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = gate.Server(("127.0.0.1", 0), gate.Gate)
    gate.https(server, str(pem), str(pem))
    __import__("threading").Thread(target=server.serve_forever, daemon=True).start()
    try:
        silent = socket.create_connection(server.server_address, timeout=30)  # connects, never says hello
        answer = http.client.HTTPSConnection(*server.server_address, timeout=10,
                                             context=ssl.create_default_context(cafile=str(pem)))
        answer.request("GET", "/_class/health")
        assert answer.getresponse().read() == b"ok\n"
        plain = http.client.HTTPConnection(*server.server_address, timeout=10)
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):  # no key in clear text
            plain.request("GET", "/_class/health")
            plain.getresponse()
        silent.close()
    finally:
        server.shutdown()
        server.server_close()


class PatientGate(gate.Server):
    header_seconds = 600


def test_a_stop_ends_the_connections_that_never_finish_their_headers(tmp_path):
    server = serving(PatientGate, tmp_path)
    held = held_open(server, 5, "127.0.0.66")
    while len(server.clients) < len(held):  # each accepted (the accept loop runs in its own thread)
        time.sleep(0.05)
    server.shutdown()
    server.drain()
    server.server_close()
    assert all(closed_by_peer(connection) for connection in held) and not server.clients


def test_a_private_file_is_written_anew_never_through_a_link_the_folder_holds(tmp_path):
    """A submission's committed .dvc/config.local (and its .partial) as links to a tracked file: the
    instructor's key replaces the links, and the tracked file keeps its text."""
    tracked = tmp_path / "params.yaml"
    tracked.write_text("mine\n")
    for name in ("config.local", "config.local.partial"):
        (tmp_path / name).symlink_to(tracked)
    gate.write_private(tmp_path / "config.local", "the admin key\n")
    assert tracked.read_text() == "mine\n" and not (tmp_path / "config.local").is_symlink()
    assert (tmp_path / "config.local").read_text() == "the admin key\n"
