"""``athena-cdc tail`` and ``athena-cdc publish``: the client in a terminal.

``tail`` is the asyncio client with a printer: one line per event, coloured on a
terminal, JSON lines otherwise; it survives server restarts because the client does.
``publish`` posts JSON values from the command line or stdin (one per line, batched).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import queue
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO
from urllib.parse import urlsplit

from athena_cdc.client.errors import ClientError
from athena_cdc.client.items import Dropped, Event, Gap, Item, Reset, State
from athena_cdc.client.publish import PublishError, post_events

DEFAULT_URL = "ws://127.0.0.1:4053/ws"
# Exit codes shared by both commands.
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BATCH_EVENTS = 1_000  # events per POST from stdin (the server takes up to 10,000)
BATCH_BYTES = 1 << 20  # and about this many bytes (the server takes up to 10 MiB)
BATCH_WAIT_S = 0.02  # how long a batch waits for more lines before it is sent

TAIL_DESCRIPTION = """\
Follow channels and print their events, one line each: the channel, #seq, the time
the server appended the event, and the payload as compact JSON. On a terminal the
lines are coloured; piped (or with --json) each line is a JSON object:
  {"type":"event","channel":..,"seq":..,"ts_ms":..,"payload":..}
and "gap" (events dropped by retention before they could be read), "reset" (the log
started over under a new epoch) and "dropped" (the server ended a subscription) lines.

tail reconnects by itself when the server restarts or the connection drops, and goes
on from the last seq it printed: every event once, in order. Where it starts:
--since-seq, --since, --last, or else at the newest event.
"""

TAIL_EPILOG = """\
examples:
  athena-cdc tail org_42                         new events of org_42, live
  athena-cdc tail org_42 org_43 --last 20        the last 20 of each, then live
  athena-cdc tail org_42 --since 10m --json | jq .payload
  athena-cdc tail org_42 --since-seq 1200 --url wss://cdc.example.com/ws --token-file tok

Connection notes (reconnecting, caught up) go to stderr when it is a terminal (or
with --verbose); errors always do. tail runs until Ctrl-C
(exit code 130); it exits with 1 when the server refuses the connection for good
(bad token, forbidden client name), 2 for a bad argument.
"""

PUBLISH_DESCRIPTION = """\
Publish JSON values to a channel (POST /events). Give one value as an argument, or
- to read stdin: one JSON value per line (empty lines skipped), sent in batches of up
to 1,000. Prints each event's seq, one per line, once the server has stored it
(with --json, the server's {"organization_id","seq","ts_ms"} per line).
"""

PUBLISH_EPILOG = """\
examples:
  athena-cdc publish org_42 '{"level":"info","msg":"hello"}'
  printf '%s\\n' 1 2 3 | athena-cdc publish org_42 -
  athena-cdc publish org_42 - --token-file tok < events.jsonl

Exit codes: 0 when everything was published; 1 when the server refused a batch
(the error says why; earlier batches, whose seqs were printed, are stored) or
could not be reached; 2 for a bad argument or a line that is not JSON (nothing
from that line on is sent).
"""


def add_commands(commands: Any) -> None:
    """Add ``tail`` and ``publish`` to the ``athena-cdc`` subcommands."""
    tail = commands.add_parser(
        "tail",
        help="follow channels live, surviving server restarts",
        description=TAIL_DESCRIPTION,
        epilog=TAIL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    tail.add_argument("channels", nargs="+", metavar="CHANNEL", help="channels to follow")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--since-seq", type=_cursor, metavar="N",
                       help="start after seq N (in every channel)")
    start.add_argument("--since", type=_since, metavar="WHEN",
                       help="start at events appended since WHEN: a duration back from now "
                            "(90s, 10m, 2h, 1d, 1h30m) or a time (2026-11-28T14:00:00Z)")
    start.add_argument("--last", type=_positive, metavar="N",
                       help="start with the newest N events of each channel")
    tail.add_argument("--json", action="store_true",
                      help="JSON lines even on a terminal (the default when piped)")
    _connection_options(tail)
    tail.add_argument("--client", metavar="NAME",
                      help="client name (X-Athena-Client); default: the first CHANNEL")
    tail.add_argument("-v", "--verbose", action="store_true",
                      help="connection notes on stderr even when it is not a terminal")
    tail.set_defaults(run=run_tail)

    publish = commands.add_parser(
        "publish",
        help="publish JSON values to a channel (an argument, or - for stdin lines)",
        description=PUBLISH_DESCRIPTION,
        epilog=PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    publish.add_argument("channel", metavar="CHANNEL")
    publish.add_argument("value", metavar="JSON|-", help="a JSON value, or - for stdin")
    publish.add_argument("--json", action="store_true",
                         help="print the server's answer for each event as a JSON line")
    _connection_options(publish)
    publish.add_argument("--key", metavar="KEY",
                         help="the server's --publish-key (header X-Athena-Key)")
    publish.set_defaults(run=run_publish)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL,
                        help=f"the server's WebSocket URL (default: {DEFAULT_URL}; "
                             "publish posts to /events on the same host)")
    parser.add_argument("--cafile", metavar="FILE", type=Path,
                        help="trust the CA (or self-signed certificate) in this PEM file "
                             "for wss:// and https://")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", metavar="JWT", help="a token, sent as Authorization: Bearer")
    token.add_argument("--token-file", metavar="FILE", type=Path,
                       help="read the token from FILE (tail reads it again when the token "
                            "is about to expire: renew the file to keep going)")


# -- argument types ------------------------------------------------------------------------

DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _cursor(text: str) -> int:
    if not text.isdigit() or int(text) > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq (an integer >= 0)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return int(text)


def _since(text: str, now: Callable[[], float] = time.time) -> int:
    """``--since``: a duration back from now or an ISO time, as ``since_ts_ms``."""
    if DURATIONS.fullmatch(text):
        seconds = sum(float(n) * UNIT_S[unit] for n, unit in DURATION.findall(text))
        return max(0, int((now() - seconds) * 1000))
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (10m, 2h, 1h30m, 90s) nor a time "
            "(2026-11-28T14:00:00Z)"
        ) from None
    return max(0, int(when.timestamp() * 1000))  # a time without zone is local time


# -- tail ----------------------------------------------------------------------------------

COLOURS = ("36", "35", "32", "33", "34", "96", "95", "92")  # per channel, picked by name
DIM, YELLOW, RED = "2", "33", "31"  # SGR codes
# C1 controls, line/paragraph separators and bidirectional-text controls:
# json.dumps(ensure_ascii=False) leaves them raw, and terminals act on them (0x9b starts
# an escape sequence; the bidi controls reorder what is shown). Printed as \u escapes.
UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class Printer:
    """Writes items as lines: readable (``pretty``, maybe in colour) or JSON."""

    def __init__(self, out: TextIO, *, pretty: bool, colour: bool) -> None:
        self.out = out
        self.pretty = pretty
        self.colour = colour and pretty
        self.today = datetime.date.today()

    def item(self, item: Item) -> None:
        self.out.write((self._pretty(item) if self.pretty else self._json(item)) + "\n")
        self.out.flush()

    def _json(self, item: Item) -> str:
        body: dict[str, Any]
        if isinstance(item, Event):
            body = {"type": "event", "channel": item.channel, "seq": item.seq,
                    "ts_ms": item.ts_ms, "payload": item.payload}
        elif isinstance(item, Gap):
            body = {"type": "gap", "channel": item.channel, "from_seq": item.from_seq,
                    "to_seq": item.to_seq}
        elif isinstance(item, Reset):
            body = {"type": "reset", "channel": item.channel, "old_epoch": item.old_epoch,
                    "new_epoch": item.new_epoch, "last_seq": item.last_seq}
        else:
            body = {"type": "dropped", "channel": item.channel, "reason": item.reason,
                    "message": item.message}
        # (_safe only rewrites characters inside JSON strings, as escapes: same JSON)
        return _safe(json.dumps(body, separators=(",", ":"), ensure_ascii=False))

    def _pretty(self, item: Item) -> str:
        channel = self._paint(_safe(item.channel), _colour_of(item.channel))
        if isinstance(item, Event):
            payload = _safe(json.dumps(item.payload, separators=(",", ":"), ensure_ascii=False))
            return (f"{channel} {self._paint(f'#{item.seq}', DIM)} "
                    f"{self._paint(self._time(item.ts_ms), DIM)} {payload}")
        if isinstance(item, Gap):
            span = (f"seq {item.from_seq}" if item.from_seq == item.to_seq
                    else f"seqs {item.from_seq}..{item.to_seq}")
            note = f"gap: {span} dropped by retention before they could be read"
            return f"{channel} {self._paint(note, YELLOW)}"
        if isinstance(item, Reset):
            note = (f"reset: the log started over (epoch {item.old_epoch} -> {item.new_epoch}, "
                    f"was at seq {item.last_seq}); replaying it from seq 1")
            return f"{channel} {self._paint(note, RED)}"
        assert isinstance(item, Dropped)
        note = f"dropped by the server: {item.reason}: {_safe(item.message)}"
        return f"{channel} {self._paint(note, RED)}"

    def _time(self, ts_ms: int) -> str:
        when = datetime.datetime.fromtimestamp(ts_ms / 1000)
        text = when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
        return text if when.date() == self.today else f"{when:%Y-%m-%d} {text}"

    def _paint(self, text: str, sgr: str) -> str:
        return f"\x1b[{sgr}m{text}\x1b[0m" if self.colour else text


def _colour_of(channel: str) -> str:
    return COLOURS[hashlib.blake2b(channel.encode(), digest_size=1).digest()[0] % len(COLOURS)]


def _safe(text: str) -> str:
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def run_tail(args: argparse.Namespace) -> int:
    try:
        import websockets  # noqa: F401  (the client extra; publish does without it)
    except ModuleNotFoundError:
        return _usage_error("tail", "needs the client extra (module 'websockets' is missing): "
                                    "pip install 'athena-cdc[client]'")
    out = sys.stdout
    pretty = out.isatty() and not args.json
    printer = Printer(out, pretty=pretty, colour=not os.environ.get("NO_COLOR"))
    try:
        token_source = _token_source(args)
        token = token_source() if token_source is not None else args.token
    except OSError as exc:
        return _usage_error("tail", f"cannot read --token-file: {exc}")
    try:
        _tls(args)  # a missing or bad --cafile: a usage error now, not later
    except OSError as exc:
        return _usage_error("tail", f"cannot use --cafile {args.cafile}: {exc}")
    try:
        return asyncio.run(_tail(args, printer, token, token_source))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (tail ... | head): stop quietly, like the coreutils.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


async def _tail(
    args: argparse.Namespace,
    printer: Printer,
    token: str | None,
    token_source: Callable[[], str] | None,
) -> int:
    notes = sys.stderr
    client_name = args.client or args.channels[0]
    verbose = args.verbose or notes.isatty()

    def note(text: str) -> None:
        if verbose:
            notes.write(f"athena-cdc tail: {text}\n")
            notes.flush()

    live_note: list[str] = []  # "live", held until the lines before it are printed

    def on_state(state: State, detail: str) -> None:
        live_note.clear()
        words = {
            State.CONNECTING: "connecting",
            State.CATCHING_UP: "connected, catching up",
            State.LIVE: "live",
            State.CLOSED: "closed",
        }[state]
        text = f"{words}{' (' + detail + ')' if detail else ''}"
        if state is State.LIVE and client.backlog:
            live_note.append(text)  # the catch-up is received, not yet printed
        else:
            note(text)

    from athena_cdc.client.connection import connect  # websockets: only when tailing

    try:
        client = connect(args.url, client=client_name, token=token,
                         refresh_token=token_source, on_state=on_state,
                         ssl=_tls(args) if urlsplit(args.url).scheme == "wss" else None)
    except (ValueError, OSError) as exc:  # a bad --url, an unreadable --cafile
        return _usage_error("tail", str(exc))
    note(f"connecting to {args.url}")
    async with client:
        for channel in dict.fromkeys(args.channels):
            await client.subscribe(channel, since_seq=args.since_seq,
                                   since_ts_ms=args.since, last=args.last)
        try:
            async for item in client:
                printer.item(item)
                if live_note and not client.backlog:
                    note(live_note.pop())
        except ClientError as exc:
            sys.stderr.write(f"athena-cdc tail: error: {exc}\n")
            return EXIT_REFUSED
    return EXIT_OK


def _token_source(args: argparse.Namespace) -> Callable[[], str] | None:
    """--token-file is read again whenever a fresh token is needed; --token is fixed."""
    if args.token_file is not None:
        path: Path = args.token_file

        def read() -> str:
            return path.read_text().strip()

        return read
    return None


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """A context trusting --cafile (besides the system's CAs), or None for the default."""
    if args.cafile is None:
        return None
    return ssl.create_default_context(cafile=str(args.cafile))


def _usage_error(command: str, message: str) -> int:
    sys.stderr.write(f"athena-cdc {command}: error: {message}\n")
    return EXIT_USAGE


# -- publish -------------------------------------------------------------------------------


class BadLine(Exception):
    pass


def _check_json(text: str) -> None:
    """Strict JSON, as the server wants it: no NaN, no Infinity, no 1e400."""

    def finite(number: str) -> float:
        value = float(number)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"{number} is too large for a double")
        return value

    def constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    json.loads(text, parse_float=finite, parse_constant=constant)


def run_publish(args: argparse.Namespace) -> int:
    try:
        token_source = _token_source(args)
        token = token_source() if token_source is not None else args.token
    except OSError as exc:
        return _usage_error("publish", f"cannot read --token-file: {exc}")
    channel_json = json.dumps(args.channel, ensure_ascii=False)
    try:
        tls = _tls(args)
    except OSError as exc:
        return _usage_error("publish", f"cannot use --cafile {args.cafile}: {exc}")

    def send(values: list[str]) -> None:
        body = "[" + ",".join(
            f'{{"organization_id":{channel_json},"payload":{value}}}' for value in values
        ) + "]"
        for published in post_events(args.url, body.encode(), token=token, key=args.key,
                                     ssl=tls):
            if args.json:
                line = json.dumps({"organization_id": published.channel, "seq": published.seq,
                                   "ts_ms": published.ts_ms}, ensure_ascii=False,
                                  separators=(",", ":"))
            else:
                line = str(published.seq)
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        if args.value == "-":
            _publish_lines(sys.stdin.buffer, send)
        else:
            try:
                _check_json(args.value)
            except ValueError as exc:
                return _usage_error("publish", f"the value is not JSON: {exc}")
            send([args.value])
    except BadLine as exc:
        return _usage_error("publish", str(exc))
    except PublishError as exc:
        sys.stderr.write(f"athena-cdc publish: error: {exc}\n{_hint(exc, args)}")
        return EXIT_REFUSED
    except ValueError as exc:  # a --url that is not a server URL
        return _usage_error("publish", str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _hint(exc: PublishError, args: argparse.Namespace) -> str:
    hints = {
        401: "give a token (--token, --token-file) or the publish key (--key)",
        403: f"the token's publish claim does not cover {args.channel!r}",
        413: "send less at once (10 MiB and 10,000 events per request at most)",
    }
    hint = hints.get(exc.status or 0)
    if exc.status is None:
        hint = f"is the server running at {args.url}?"
    return f"hint: {hint}\n" if hint else ""


def _publish_lines(stdin: IO[bytes], send: Callable[[list[str]], None]) -> None:
    """Read JSON lines and send them in batches: a batch goes when it is full, or when
    no more lines came for BATCH_WAIT_S (so that lines typed by hand go at once)."""
    lines: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=4 * BATCH_EVENTS)

    def read() -> None:
        for number, raw in enumerate(stdin, 1):
            lines.put((number, raw))
        lines.put(None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    batch: list[str] = []
    size = 0
    while True:
        try:
            entry = lines.get(timeout=BATCH_WAIT_S) if batch else lines.get()
        except queue.Empty:
            send(batch)
            batch, size = [], 0
            continue
        if entry is None:
            break
        number, raw = entry
        try:
            text = raw.decode("utf-8").strip()
            if not text:
                continue
            _check_json(text)
        except ValueError as exc:  # UnicodeDecodeError included
            if batch:
                send(batch)  # what came before the bad line goes
            raise BadLine(f"stdin line {number} is not JSON ({exc}); it and what follows "
                          "were not sent") from None
        batch.append(text)
        size += len(text)
        if len(batch) >= BATCH_EVENTS or size >= BATCH_BYTES:
            send(batch)
            batch, size = [], 0
    if batch:
        send(batch)
