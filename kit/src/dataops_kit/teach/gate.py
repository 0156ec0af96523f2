"""The class store's one door: `python -m dataops_kit.teach.gate CLASS`.

SeaweedFS cannot say "add only": its Write action also deletes and
overwrites, and nothing in S3 checks that an object's bytes are the md5 its
name claims. So SeaweedFS runs in a network namespace of its own (bwrap
--unshare-net, a /tmp of its own), where no other process of the machine can
reach its ports or sockets; its S3 answers on one Unix socket in
CLASS/secrets (0700), for the gate alone, and everyone comes through this
gate, which:

- knows who a request is from its line and headers, before it reads any of
  its body: an S3 request's AWS signature (the key of one student, or the
  instructor's, the only admin key), a git push's password, a join code;
- lets a student read and list the bucket and add new DVC objects whose
  bytes have the md5 their name says, up to a quota each (CLASS/usage.json);
  nothing else (no delete, no overwrite, no bucket operation);
- serves the class git remote (CLASS/class.git) over HTTP, with the same
  key as the password, to `git http-backend`: its pre-receive hook lets a
  student create and update only experiments named after them, and create
  submissions under their own name (never replace one), and nobody delete a
  ref or move `main` but the instructor;
- hands out keys: POST /_class/join {"student": NAME, "code": CODE}. With a
  roster (CLASS/roster.csv), NAME must be on it and CODE its join code, used
  once (make class-codes); without one, the first to ask gets the name.

It starts SeaweedFS as its child, keeps only its warnings and errors in
CLASS/store.log, and on SIGTERM gives the requests in flight a few seconds, then stops it.
One client can hold only so much of it (Server). With a certificate, it speaks HTTPS.
"""

import base64
import contextlib
import csv
import fcntl
import hashlib
import hmac
import http.client
import http.server
import io
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

BUCKET = "class"
NAME = re.compile(r"[a-z][a-z0-9_]{0,19}")  # no '-': an experiment is <student>-<idea>
OBJECT = re.compile(rf"/{BUCKET}/dvc/files/md5/([0-9a-f]{{2}})/([0-9a-f]{{30}})(\.dir)?")
MAX_OBJECT = 50 << 20  # s3fs sends anything smaller in one PUT: larger (multipart) is refused, with this figure
SKEW = 15 * 60  # seconds a signed request may be old or early, as S3 allows
ZERO = "0" * 40
INSTRUCTOR = "instructor"
SUBMISSION = re.compile(r"refs/submissions/([^/]+)/(\d{2})/(\d{8}T\d{6}Z)")  # <name>/<exercise>/<UTC time>
SUBMISSIONS_LOG = "submissions.log"  # in class.git: when each submission arrived
IDLE_SECONDS = 30  # a request's body may pause this long between two reads
CODE_LETTERS = "abcdefghjkmnpqrstuvwxyz23456789"  # a join code's: none that reads as another (0/o, 1/l/i)
MAX_JOIN = 4096  # bytes of a join request's body


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


# --- keys ------------------------------------------------------------------------------------------

def new_key() -> dict:
    return {"access_key_id": "DATAOPS" + secrets.token_hex(8).upper(), "secret_access_key": secrets.token_urlsafe(30)}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never readable on the way (created 0600, then renamed)."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(partial, path)


def roster(folder: Path) -> dict:
    """{name: LMS id} from CLASS/roster.csv (columns name, lms_id), or {} without one: the one roster
    the gate (who may claim a name) and the gradebook (the LMS's ids) both read."""
    path = folder / "roster.csv"
    try:
        with open(path, newline="") as file:
            text = file.read(1 << 20)
    except FileNotFoundError:
        return {}
    return {row["name"].strip(): (row.get("lms_id") or "").strip()[:64] for row in csv.DictReader(io.StringIO(text))
            if (row.get("name") or "").strip()}


class Keys:
    """CLASS/keys.json (0600): the admin key, one key per student, and the join codes not yet used.
    The gate (a join) and the instructor's commands (codes, revocations) both write it, each under
    CLASS/keys.lock; readers load it again whenever it changed, so a revoked key is refused at once."""

    def __init__(self, folder: Path):
        self.folder, self.path, self.lock, self._seen = folder, folder / "keys.json", threading.Lock(), None
        if not self.path.exists():
            with self.writing():
                pass

    @contextlib.contextmanager
    def writing(self):
        """The keys, to change: written back when the block ends without an exception."""
        with self.lock, open(self.folder / "keys.lock", "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            data = json.loads(self.path.read_text()) if self.path.exists() else {"admin": new_key(), "students": {}}
            data.setdefault("codes", {})
            yield data
            write_private(self.path, json.dumps(data, indent=1) + "\n")

    @property
    def data(self) -> dict:
        status = self.path.stat()
        seen = (status.st_ino, status.st_mtime_ns, status.st_size)
        if seen != self._seen:  # every write is a new file (write_private renames): a new inode
            self._data, self._seen = json.loads(self.path.read_text()), seen
        return self._data

    def owner(self, access_key_id: str):
        """(name, secret) of an access key id, or None."""
        data = self.data
        if hmac.compare_digest(access_key_id, data["admin"]["access_key_id"]):
            return INSTRUCTOR, data["admin"]["secret_access_key"]
        for name, key in data["students"].items():
            if hmac.compare_digest(access_key_id, key["access_key_id"]):
                return name, key["secret_access_key"]
        return None

    def login(self, name: str, secret: str) -> bool:
        data = self.data
        key = data["admin"] if name == INSTRUCTOR else data["students"].get(name)
        return bool(key) and hmac.compare_digest(secret.encode(), key["secret_access_key"].encode())

    def enrol(self, name, code=None) -> dict:
        """NAME's new key. With a roster, NAME must be on it and CODE must be the join code the instructor
        gave NAME (used once; it replaces any key NAME had); without one, the first to ask gets the name."""
        if not isinstance(name, str) or not NAME.fullmatch(name) or name == INSTRUCTOR:
            raise Refused(400, "InvalidName", f"{name!r} is not a student name: lower-case letters, digits and _, "
                                              "starting with a letter, at most 20 (no '-': experiments are <name>-<idea>)")
        listed = roster(self.folder)
        if listed and name not in listed:
            raise Refused(403, "NotOnRoster", f"{name} is not on the class roster: ask the instructor")
        with self.writing() as data:
            if listed:
                expected = data["codes"].get(name)
                if not isinstance(code, str) or not code:
                    raise Refused(401, "CodeRequired", f"joining as {name} needs {name}'s join code, from the instructor")
                if not expected or not hmac.compare_digest(code.strip().lower().encode(), expected.encode()):
                    raise Refused(403, "WrongCode", f"that is not {name}'s join code, or it was used: "
                                                    f"ask the instructor for a new one (make class-codes STUDENT={name})")
                del data["codes"][name]
            elif name in data["students"]:
                raise Refused(409, "NameTaken", f"the name {name} already has a key: if it is yours, join from the "
                                                f"account that joined first (it keeps the key); if not, pick another")
            data["students"][name] = key = new_key()
        return key

    def issue(self, names, again=False) -> dict:
        """A join code for each of NAMES that has neither a key nor a code (with AGAIN: for each, its key
        revoked at once); returns every code not yet used, {name: code}."""
        with self.writing() as data:
            for name in names:
                if again or (name not in data["students"] and name not in data["codes"]):
                    data["students"].pop(name, None)
                    data["codes"][name] = "-".join("".join(secrets.choice(CODE_LETTERS) for _ in range(4))
                                                    for _ in range(3))
            return dict(data["codes"])


class Usage:
    """Bytes each student added to the store (CLASS/usage.json), against QUOTA bytes each."""

    def __init__(self, path: Path, quota: int):
        self.path, self.quota, self.lock = path, quota, threading.Lock()
        self.used = json.loads(path.read_text()) if path.exists() else {}

    def room(self, name: str, size: int) -> bool:
        return name == INSTRUCTOR or self.used.get(name, 0) + size <= self.quota

    def add(self, name: str, size: int) -> None:
        with self.lock:
            self.used[name] = self.used.get(name, 0) + size
            write_private(self.path, json.dumps(self.used, indent=1) + "\n")


# --- AWS signature version 4, as S3 checks it --------------------------------------------------------

def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_query(query: str) -> str:
    pairs = []
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        pairs.append((urllib.parse.quote(urllib.parse.unquote(key), safe="-_.~"),
                      urllib.parse.quote(urllib.parse.unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def signer(method: str, target: str, headers, keys: Keys, now: float = None) -> str:
    """The name whose key signed this request's line and headers, or Refused: known before any byte of
    its body is read (``payload_check`` checks the body against its signed hash). TARGET is the
    request line's path and query."""
    auth = headers.get_all("Authorization") or []
    path, _, query = target.partition("?")
    if "X-Amz-Signature" in query or "X-Amz-Credential" in query:
        raise Refused(403, "AccessDenied", "presigned URLs are not accepted here: sign the request")
    match = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([^/,]+)/s3/aws4_request,\s*"
                         r"SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})", auth[0].strip()) \
        if len(auth) == 1 else None
    if not match:
        raise Refused(403, "AccessDenied", "no key: every request needs one (make class-join gives you yours)")
    access_key, day, region, signed, signature = match.groups()
    found = keys.owner(access_key)
    if not found:
        raise Refused(403, "InvalidAccessKeyId", "this key is not one of the class's")
    name, secret = found
    names = signed.split(";")
    stamp, payload = headers.get("x-amz-date", ""), headers.get("x-amz-content-sha256", "")
    if not {"host", "x-amz-date", "x-amz-content-sha256"} <= set(names) or not stamp.startswith(day):
        raise Refused(403, "AccessDenied", "the signature must cover host, x-amz-date and x-amz-content-sha256")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise Refused(403, "AccessDenied", f"bad x-amz-date {stamp!r}") from None
    if abs((now or time.time()) - when) > SKEW:
        raise Refused(403, "RequestTimeTooSkewed", "the request's time is more than 15 minutes off: check the clock")
    lines = []
    for header in names:
        values = headers.get_all(header) or []
        lines.append(f"{header}:{','.join(' '.join(v.split()) for v in values)}\n")
    request = "\n".join([method, path, canonical_query(query), "".join(lines), signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), day), region), "s3"), "aws4_request")
    if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
        raise Refused(403, "SignatureDoesNotMatch", "the signature does not match the key")
    return name


def payload_check(headers, body: bytes) -> None:
    """Refused unless BODY is the one whose hash the request's signature covers."""
    payload = headers.get("x-amz-content-sha256", "")
    if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
        raise Refused(400, "XAmzContentSHA256Mismatch", "the body is not the one that was signed")


def policy(name: str, method: str, target: str, headers) -> None:
    """Refused unless NAME may do this. The instructor may do anything; a student may only read and add."""
    if name == INSTRUCTOR:
        return
    path, _, query = target.partition("?")
    if method in ("GET", "HEAD") and (path.rstrip("/") == f"/{BUCKET}" or path.startswith(f"/{BUCKET}/")):
        if re.search(r"(^|&)(acl|policy|tagging|uploads|versions|lifecycle)(=|&|$)", query):
            raise Refused(403, "AccessDenied", "students read objects and list the bucket, nothing else")
        return
    if method == "PUT" and OBJECT.fullmatch(path):
        if query or headers.get("x-amz-copy-source"):
            raise Refused(403, "AccessDenied", "students add whole objects only (no multipart, copy, ACL or tags): "
                                               f"files up to {MAX_OBJECT >> 20} MB")
        return
    if method == "PUT" and path.startswith(f"/{BUCKET}/"):
        raise Refused(403, "AccessDenied", f"students add DVC objects only, named by their md5 "
                                           f"(/{BUCKET}/dvc/files/md5/xx/...), not {path}")
    if method == "DELETE":
        raise Refused(403, "AccessDenied", "students cannot delete: the store keeps every version anyone pushed")
    raise Refused(403, "AccessDenied", f"students cannot {method} {path}: only the instructor changes the bucket")


def content_refusal(path: str, body: bytes):
    """Why BODY may not be stored under PATH (an object named by its md5), or None."""
    match = OBJECT.fullmatch(path)
    named, actual = match.group(1) + match.group(2), hashlib.md5(body).hexdigest()
    if actual != named:
        return f"the bytes have md5 {actual}, not the {named} of their name: DVC objects are named by their md5"
    return None


# --- refs in class.git --------------------------------------------------------------------------------

def ref_refusal(user: str, old: str, new: str, ref: str):
    """Why USER may not move REF from OLD to NEW (the pre-receive hook's rule), or None."""
    if new == ZERO:
        return f"{ref}: nobody deletes a ref of the class (it is someone's work)"
    if user == INSTRUCTOR:
        return None
    submission = SUBMISSION.fullmatch(ref)
    if submission and submission.group(1) != user:
        return f"{ref}: not your name: your submissions go under refs/submissions/{user}/ (make submit N)"
    if submission:
        return None if old == ZERO else f"{ref}: a submission is never replaced: make submit N adds a new version"
    if ref.startswith("refs/tags/"):
        return (f"{ref}: tags are the instructor's, the class's model registry among them: read them "
                f"(git fetch class --tags; gto show); practise gto register and assign in your own clone")
    match = re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/([^/]+)", ref)
    if not match:
        return f"{ref}: students push experiments only (dvc exp push); main and other branches are the instructor's"
    if not match.group(1).startswith(user + "-"):
        return (f"{ref}: experiment {match.group(1)!r} is not yours: name yours {user}-<idea> "
                f"(dvc exp run -n {user}-<idea>)")
    return None


def pre_receive(stdin=sys.stdin, env=os.environ, log=Path(SUBMISSIONS_LOG)) -> int:
    """Refuse the push if any ref is refused; otherwise record when each submission arrived (the class's
    clock, in the git folder: a deadline never reads the date a student writes into a commit)."""
    user, refused, arrived = env.get("REMOTE_USER", ""), 0, []
    for line in stdin:
        old, new, ref = line.split()
        reason = ref_refusal(user, old, new, ref) if user else "pushes need a key: make class-join"
        if reason:
            print(f"✗ {reason}", file=sys.stderr)
            refused += 1
        elif SUBMISSION.fullmatch(ref):
            arrived.append(f"{time.time():.3f} {ref} {new}\n")
    if arrived and not refused:
        with open(log, "a") as file:
            file.writelines(arrived)
    return 1 if refused else 0


HOOK = """#!/bin/sh
# Written by the class store (dataops_kit.teach.gate): who may move which ref.
exec {python} -I -m dataops_kit.teach.gate pre-receive
"""


# --- the HTTP door --------------------------------------------------------------------------------------

UPSTREAM_SOCKET = "s3.sock"  # in CLASS/secrets
UPSTREAM_HOST = "127.0.0.1:8333"  # the Host SeaweedFS's S3 sees (and the gate signs for), over its Unix socket


class UnixConnection(http.client.HTTPConnection):
    """HTTP to a Unix socket: SeaweedFS runs in a network namespace of its own, and its S3 socket, in
    CLASS/secrets (0700), is the one way in, for the instructor's account alone."""

    def __init__(self, path: str, timeout: float):
        super().__init__(UPSTREAM_HOST, timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def _too_large(limit: int) -> Refused:
    return Refused(413, "EntityTooLarge", f"at most {f'{limit >> 20} MB' if limit >> 20 else f'{limit} bytes'} a request")


def _error_xml(code: str, message: str) -> bytes:
    from xml.sax.saxutils import escape

    return (f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code>"
            f"<Message>{escape(message)}</Message></Error>\n").encode()


class Server(http.server.ThreadingHTTPServer):
    """One thread a connection, within bounds that hold before anyone says who they are: connections
    in all, and from one address those not yet tied to a key (more are closed at once); the seconds
    to send each request's line and headers, however slowly they come (a reaper ends late ones).
    Once a request shows a key, its connection counts against that key's share instead (``claim``):
    on a class server every student comes from 127.0.0.1. A stop (drain) ends the connections
    waiting for headers at once and gives the requests in flight a few seconds."""
    daemon_threads, block_on_close = True, False
    max_connections, per_client, per_key, header_seconds, drain_seconds = 512, 64, 16, 10, 5

    def __init__(self, *args):
        self.lock, self.clients, self.waiting, self.owners = threading.Lock(), {}, {}, {}
        super().__init__(*args)
        threading.Thread(target=self._reap, daemon=True).start()

    def verify_request(self, request, client_address):
        with self.lock:
            theirs = sum(host == client_address[0] and c not in self.owners for c, host in self.clients.items())
            if len(self.clients) >= self.max_connections or theirs >= self.per_client:
                return False
            self.clients[request] = client_address[0]
            return True

    def claim(self, connection, name: str) -> bool:
        """Tie CONNECTION to NAME's key; False if NAME holds its share of connections already."""
        with self.lock:
            if self.owners.get(connection) == name:
                return True
            if sum(owner == name for owner in self.owners.values()) >= self.per_key:
                return False
            self.owners[connection] = name
            return True

    def shutdown_request(self, request):
        with self.lock:
            self.clients.pop(request, None)
            self.waiting.pop(request, None)
            self.owners.pop(request, None)
        super().shutdown_request(request)

    def expect_headers(self, connection, within=None) -> None:
        """CONNECTION must send a request's headers within WITHIN seconds; None: they came."""
        with self.lock:
            if within is None:
                self.waiting.pop(connection, None)
            else:
                self.waiting[connection] = time.monotonic() + within

    def cut(self, now=float("inf")) -> None:
        """End the connections whose headers are late by NOW (all that wait for headers, by default)."""
        with self.lock:
            late = [connection for connection, deadline in self.waiting.items() if deadline <= now]
        for connection in late:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _reap(self) -> None:
        while True:
            time.sleep(0.5)
            self.cut(time.monotonic())

    def drain(self) -> None:
        deadline = time.monotonic() + self.drain_seconds
        while self.clients and time.monotonic() < deadline:
            self.cut()
            time.sleep(0.05)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up: nothing to log
            super().handle_error(request, client_address)


class Gate(http.server.BaseHTTPRequestHandler):
    """Every request: who it is (a signature, a password or a join code) from its line and headers,
    then its share of connections, then its body, read only up to its bound."""
    protocol_version = "HTTP/1.1"
    server_version = "dataops-class"
    sys_version = ""
    folder: Path
    keys: Keys
    usage: Usage
    upstream: str  # the Unix socket of SeaweedFS's S3 (relative to the gate's folder, CLASS/secrets)
    log = None
    timeout = IDLE_SECONDS  # each read of the connection (StreamRequestHandler's)

    def handle_one_request(self):
        self.server.expect_headers(self.connection, self.server.header_seconds)
        super().handle_one_request()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # refusals are logged where they happen; requests are not (the log stays still while idle)

    def _say(self, text: str) -> None:
        if self.log:
            self.log(f"gate: {self.address_string()} {self.command} {self.path.split('?')[0]}: {text}")

    def _length(self, limit: int = MAX_OBJECT):
        """The body's declared length (None if chunked), refused before any of it is read."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise Refused(400, "InvalidRequest", "Content-Length is not a number") from None
        if length < 0:
            raise Refused(400, "InvalidRequest", "Content-Length is negative")
        if length > limit:
            raise _too_large(limit)
        return length

    def _body(self, limit: int = MAX_OBJECT) -> bytes:
        length = self._length(limit)
        if length is not None:
            body = self.rfile.read(length) if length else b""
        else:
            chunks, total = [], 0
            while True:
                try:
                    size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise Refused(400, "InvalidRequest", "a chunk's size is not a number") from None
                if size < 0 or total + size > limit:
                    raise _too_large(limit)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                total += size
                self.rfile.readline(64)
            body = b"".join(chunks)
        self.unread = False
        return body

    def _reply(self, status: int, body: bytes = b"", headers=(), head=False):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if not any(key.lower() == "content-length" for key, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _claim(self, name: str) -> None:
        if not self.server.claim(self.connection, name):
            raise Refused(503, "SlowDown", f"{name} holds {self.server.per_key} connections already: "
                                           "one of them must end first")

    def _handle(self):
        self.server.expect_headers(self.connection)
        self.unread = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower() \
            or self.headers.get("Content-Length", "0").strip() not in ("", "0")
        try:
            if self.path.startswith("/_class/"):
                return self._enrol()
            if self.path.startswith("/git/"):
                return self._git()
            return self._s3()
        except TimeoutError:  # a body that stopped coming for IDLE_SECONDS: the connection ends
            self.close_connection = True
        except Refused as refused:
            self._refuse(refused)
        except (ConnectionError, OSError) as error:
            self._say(f"store unreachable: {error}")
            try:
                self._reply(503, _error_xml("ServiceUnavailable", "the class store is not running: tell the instructor"),
                            [("Content-Type", "application/xml")], head=self.command == "HEAD")
            except OSError:
                pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def _refuse(self, refused: Refused) -> None:
        if self.unread or refused.status == 400:  # a body unread or half read: this connection ends
            self.close_connection = True
        if refused.status != 401:  # a 401 is git asking for the password: part of every push
            self._say(f"refused {refused.status} {refused.code}: {refused}")
        if self.path.startswith(("/_class/", "/git/")):
            extra = [("WWW-Authenticate", 'Basic realm="class"')] if self.path.startswith("/git/") \
                and refused.status == 401 else []
            return self._reply(refused.status, f"{refused}\n".encode(), [("Content-Type", "text/plain")] + extra)
        extra = [("Retry-After", "1")] if refused.status == 503 else []
        self._reply(refused.status, _error_xml(refused.code, str(refused)),
                    [("Content-Type", "application/xml")] + extra, head=self.command == "HEAD")

    def _enrol(self):
        if self.command == "GET" and self.path == "/_class/health":
            return self._reply(200, b"ok\n", [("Content-Type", "text/plain")])
        if self.command != "POST" or self.path != "/_class/join":
            raise Refused(404, "NotFound", "no such page")
        try:
            asked = json.loads(self._body(MAX_JOIN) or b"{}")
        except ValueError:
            asked = None
        if not isinstance(asked, dict):
            raise Refused(400, "InvalidRequest", 'a join is {"student": NAME, "code": CODE}')
        key = self.keys.enrol(asked.get("student"), asked.get("code"))
        self._say(f"gave {asked['student']} a key")
        self._reply(200, json.dumps(key).encode(), [("Content-Type", "application/json")])

    def _s3(self):
        name = signer(self.command, self.path, self.headers, self.keys)
        self._claim(name)
        policy(name, self.command, self.path, self.headers)
        body = self._body()
        payload_check(self.headers, body)
        path = self.path.partition("?")[0]
        if self.command == "PUT" and name != INSTRUCTOR:
            reason = content_refusal(path, body)
            if reason:
                raise Refused(400, "BadDigest", reason)
            status, headers, _ = self._forward("HEAD", path, b"")
            if status == 200:  # already stored, with these very bytes (every write was checked): nothing to do
                return self._reply(200, b"", [(k, v) for k, v in headers if k.lower() == "etag"])
            if not self.usage.room(name, len(body)):
                raise Refused(403, "QuotaExceeded", f"{name} has added {self.usage.used[name] >> 20} MB to the store, "
                                                    f"its quota ({self.usage.quota >> 20} MB): ask the instructor")
        status, headers, payload = self._forward(self.command, self.path, body)
        if self.command == "PUT" and name != INSTRUCTOR and status == 200:
            self.usage.add(name, len(body))
        self._reply(status, payload, headers, head=self.command == "HEAD")

    def _forward(self, method: str, target: str, body: bytes):
        """The request, signed with the gate's own key, to SeaweedFS: (status, headers, body)."""
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        keep = {k: v for k, v in self.headers.items() if k.lower() in (
            "content-type", "content-md5", "range", "if-match", "if-none-match", "if-modified-since",
            "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm", "x-amz-copy-source")}
        request = AWSRequest(method=method, url=f"http://{UPSTREAM_HOST}{target}", data=body, headers=keep)
        admin = self.keys.data["admin"]
        S3SigV4Auth(Credentials(admin["access_key_id"], admin["secret_access_key"]), "s3", "us-east-1").add_auth(request)
        connection = UnixConnection(self.upstream, timeout=120)
        try:
            connection.request(method, target, body=body or None, headers=dict(request.headers.items()))
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        headers = [(k, v) for k, v in response.getheaders()
                   if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "server")]
        if method != "HEAD":
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return response.status, headers, payload

    def _git(self):
        """git's smart HTTP, to `git http-backend`, for a user with a key."""
        path, _, query = self.path.partition("?")
        if not path.startswith("/git/class.git/") or ".." in path:
            raise Refused(404, "NotFound", "the class git remote is /git/class.git")
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                name, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, secret = "", ""
            if self.keys.login(name, secret):
                user = name
        if user is None:
            raise Refused(401, "Unauthorized", "the class git remote needs your key: make class-join STUDENT=<name>")
        self._claim(user)
        body = self._body()
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.folder), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path[len("/git"):], "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "REMOTE_USER": user, "REMOTE_ADDR": self.client_address[0],
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(self.folder)}
        for header, variable in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "GIT_PROTOCOL")):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=300)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key.strip(), value.strip()))
        if result.returncode and not result.stdout:
            raise Refused(500, "GitFailed", result.stderr.decode(errors="replace")[-500:])
        self._reply(status, payload, headers)


# --- the process: SeaweedFS as a child, the gate in front ----------------------------------------------

def quiet(stream, log_path: Path) -> None:
    """Copy SeaweedFS's output to the log, without its info lines (a running store logs
    a ring update every minute): warnings, errors and anything not glog-shaped."""
    with open(log_path, "ab", buffering=0) as log:
        for line in stream:
            if not re.match(rb"I\d{4} ", line):
                log.write(line)


def https(server: Server, cert: str, key: str) -> None:
    """SERVER speaks TLS with CERT: each handshake happens on its connection's first read, in that
    connection's thread, within the header deadline (never in the accept loop, where one slow client
    would hold up everyone's)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)


def run(folder: Path) -> int:
    folder = folder.resolve()
    config = json.loads((folder / "gate.json").read_text())
    log_path = folder / "store.log"

    def log(text):
        with open(log_path, "a") as file:
            file.write(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} {text}\n")
    Gate.folder, Gate.keys, Gate.log = folder, Keys(folder), staticmethod(log)
    Gate.usage = Usage(folder / "usage.json", config["quota_bytes"])
    # The socket's path is relative to CLASS/secrets, where the gate runs: an absolute one may be
    # longer than a Unix socket's 107 bytes.
    os.chdir(folder / "secrets")
    Gate.upstream = UPSTREAM_SOCKET
    Path(UPSTREAM_SOCKET).unlink(missing_ok=True)
    server = Server((config["host"], config["port"]), Gate)  # first: a taken port ends here
    if config.get("cert"):
        https(server, config["cert"], config["cert_key"])
    weed = subprocess.Popen(config["weed"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    threading.Thread(target=quiet, args=(weed.stdout, log_path), daemon=True).start()

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"gate: listening on {config['host']}:{config['port']}, SeaweedFS (pid {weed.pid}) behind it")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.drain()  # the requests in flight, for a few seconds at most
        server.server_close()
        # Every write came through the gate and has ended, so SeaweedFS holds no request.
        # Its SIGTERM waits 15 s on its own filer's metadata stream: one second, then SIGKILL
        # (what it has written is in the page cache, which a process's end does not lose).
        weed.terminate()
        try:
            weed.wait(1)
        except subprocess.TimeoutExpired:
            weed.kill()
            weed.wait()
        os.sync()
        log("gate: stopped")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pre-receive"]:
        return pre_receive()
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
