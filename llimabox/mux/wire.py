"""The mux's wire format, for the request and for the reply.

A message is a 4-byte big-endian length, then fields separated by NUL bytes. Arguments, paths and
environment entries can hold no NUL, so no field needs escaping; text goes through ``os.fsencode``
(surrogateescape), so any bytes the client was given arrive unchanged. This module, like the
client, imports only ``os`` and ``struct``: a JSON codec would cost the hot path more than the
whole rest of the client.

Request fields: llima-box version, operation, working directory, path (``+PATH``, or ``-`` for
none), the number of overrides then ``KEY=VALUE`` each, the number of environment entries then
``KEY=VALUE`` each, then the command's arguments. Reply fields: the exit status (empty when the
client should run the command itself), the fallback reason, the output, the error message.
"""

from __future__ import annotations

import os
import struct

__all__ = ["Request", "Reply", "pack", "unpack_size", "encode_request", "decode_request", "encode_reply",
           "decode_reply", "MAX_MESSAGE"]

MAX_MESSAGE = 1 << 20
_SIZE = struct.Struct("!I")


class Request:
    """What the client asks: ``op`` is ``shell``, ``create`` or ``list``."""

    __slots__ = ("cmd", "cwd", "env", "op", "overrides", "path", "version")

    def __init__(self, version: str, op: str, cwd: str, path: str | None, overrides: dict[str, str],
                 env: dict[str, str], cmd: list[str]) -> None:  # fmt: skip
        self.version, self.op, self.cwd, self.path = version, op, cwd, path
        self.overrides, self.env, self.cmd = overrides, env, cmd


class Reply:
    """The outcome: ``exit`` is ``None`` when the client should run the command itself (``fallback`` says why)."""

    __slots__ = ("error", "exit", "fallback", "out")

    def __init__(self, exit: int | None, fallback: str = "", out: str = "", error: str = "") -> None:
        self.exit, self.fallback, self.out, self.error = exit, fallback, out, error


def pack(fields: list[str]) -> bytes:
    body = b"\0".join(os.fsencode(f) for f in fields)
    return _SIZE.pack(len(body)) + body


def unpack_size(head: bytes) -> int:
    """The body size announced by the first 4 bytes of a message."""
    if len(head) < _SIZE.size:
        raise ValueError("short message")
    (size,) = _SIZE.unpack(head[: _SIZE.size])
    if size > MAX_MESSAGE:
        raise ValueError("message too large")
    return size


def _fields(body: bytes) -> list[str]:
    return [os.fsdecode(f) for f in body.split(b"\0")]


def _pairs(items: dict[str, str]) -> list[str]:
    return [str(len(items)), *(f"{k}={v}" for k, v in items.items())]


def _take_pairs(fields: list[str], i: int) -> tuple[dict[str, str], int]:
    n = int(fields[i])
    if n < 0 or i + 1 + n > len(fields):
        raise ValueError("bad request")
    pairs = {}
    for entry in fields[i + 1 : i + 1 + n]:
        key, eq, value = entry.partition("=")
        if not eq:
            raise ValueError("bad request")
        pairs[key] = value
    return pairs, i + 1 + n


def encode_request(req: Request) -> bytes:
    path = "-" if req.path is None else "+" + req.path
    return pack([req.version, req.op, req.cwd, path, *_pairs(req.overrides), *_pairs(req.env), *req.cmd])


def decode_request(body: bytes) -> Request:
    """:raises ValueError: the body is not a request."""
    fields = _fields(body)
    if len(fields) < 6 or fields[3][:1] not in ("-", "+"):
        raise ValueError("bad request")
    version, op, cwd, path = fields[:4]
    overrides, i = _take_pairs(fields, 4)
    if i >= len(fields):
        raise ValueError("bad request")
    env, i = _take_pairs(fields, i)
    return Request(version, op, cwd, None if path == "-" else path[1:], overrides, env, fields[i:])


def encode_reply(reply: Reply) -> bytes:
    code = "" if reply.exit is None else str(reply.exit)
    return pack([code, *(text.replace("\0", "") for text in (reply.fallback, reply.out, reply.error))])


def decode_reply(body: bytes) -> Reply:
    """:raises ValueError: the body is not a reply."""
    fields = _fields(body)
    if len(fields) != 4:
        raise ValueError("bad reply")
    code, fallback, out, error = fields
    return Reply(int(code) if code else None, fallback, out, error)
