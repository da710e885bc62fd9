"""The sandboxed worker: `python -I -S -c <this file> [UID GID]` inside the sandbox, stdlib
only. Started as root it first drops to UID/GID, before it reads the program.

It runs the candidate's program, then answers calls to its functions one at a time with
their results as plain data (plain_data.py reads them). It decides nothing: the host
compares the results with the expected ones, so whatever the candidate does to this
process (patch it, write to its pipes, exit) can only change the results it returns.

Messages both ways are a 4-byte big-endian length and a body. Requests (from the host,
marshal): first the program's source, then (name, args, kwargs). Replies (JSON text):
["ready"], ["value", <plain data>], or ["raised", "<exception type>", "<message>"].
"""

import _json
import marshal
import os

MAX_DEPTH = 64
MAX_MESSAGE_CHARS = 200
CONTAINERS = (("list", list), ("tuple", tuple), ("set", set), ("frozenset", frozenset))


def plain(value, depth: int = 0) -> str:
    """`value` as tagged JSON text: ["int","0x1f"], ["list",[["none"],["str","a"]]], ...
    Subclasses of the plain types go as the plain type; anything else raises TypeError."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the result is nested more than {MAX_DEPTH} deep")
    inner = depth + 1
    if value is None:
        return '["none"]'
    if isinstance(value, bool):
        return '["bool",true]' if value else '["bool",false]'
    if isinstance(value, int):
        return '["int","%s"]' % hex(value)
    if isinstance(value, float):
        return '["float","%s"]' % float.hex(value)
    if isinstance(value, complex):
        return '["complex","%s","%s"]' % (float.hex(value.real), float.hex(value.imag))
    if isinstance(value, str):
        return '["str",%s]' % _json.encode_basestring_ascii(value)
    if isinstance(value, (bytes, bytearray)):
        return '["bytes","%s"]' % bytes(value).hex()
    if isinstance(value, dict):
        pairs = ",".join("[%s,%s]" % (plain(k, inner), plain(v, inner)) for k, v in value.items())
        return '["dict",[%s]]' % pairs
    for tag, kind in CONTAINERS:
        if isinstance(value, kind):
            return '["%s",[%s]]' % (tag, ",".join(plain(item, inner) for item in value))
    raise TypeError(f"returned a {type(value).__name__}, which is not plain data")


def raised(error: BaseException) -> str:
    try:
        message = str(error)[:MAX_MESSAGE_CHARS]
    except BaseException:
        message = ""
    return '["raised",%s,%s]' % (_json.encode_basestring_ascii(type(error).__name__),
                                 _json.encode_basestring_ascii(message))


def read_message(fd: int) -> bytes | None:
    header = read_exactly(fd, 4)
    return None if header is None else read_exactly(fd, int.from_bytes(header, "big"))


def read_exactly(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def send(fd: int, text: str) -> None:
    body = text.encode("ascii")
    data = memoryview(len(body).to_bytes(4, "big") + body)
    while data:
        data = data[os.write(fd, data):]


def call(namespace: dict, request: bytes) -> str:
    try:
        name, args, kwargs = marshal.loads(request)
        if name not in namespace:
            raise NameError(f"name {name!r} is not defined")
        return '["value",%s]' % plain(namespace[name](*args, **kwargs))
    except BaseException as error:      # SystemExit too: a call that exits has failed
        return raised(error)


def drop_privileges(ids: list[str]) -> None:
    """Started as root: become the sandbox's fresh uid/gid (clears every capability)."""
    if ids:
        uid, gid = int(ids[0]), int(ids[1])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)


def main(ids: list[str]) -> None:
    drop_privileges(ids)
    requests, replies = os.dup(0), os.dup(1)
    os.dup2(2, 0)                        # fd 2 is /dev/null: prints and input() go nowhere
    os.dup2(2, 1)
    program = read_message(requests)
    if program is None:
        return
    namespace = {"__name__": "__candidate__"}
    try:
        exec(compile(program.decode("utf-8", "surrogatepass"), "<candidate>", "exec"), namespace)
    except BaseException as error:
        send(replies, raised(error))
        return
    send(replies, '["ready"]')
    while (request := read_message(requests)) is not None:
        send(replies, call(namespace, request))


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
