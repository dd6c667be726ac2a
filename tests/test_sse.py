"""SSE framing: every stream, cut at every byte, decodes to the same raw events; field parsing;
our own events round-trip; the size cap holds."""

from __future__ import annotations

import random

import pytest

from lb.errors import StreamBroken
from lb.sse import (
    DONE,
    MAX_EVENT_BYTES,
    SseDecoder,
    SseEvent,
    encode_event,
    is_done,
    parse_event,
)

CR, LF = 0x0D, 0x0A

# (stream, complete events, tail left for flush). Events and tail concatenate back to the stream.
STREAMS: dict[str, tuple[bytes, list[bytes], bytes]] = {
    "empty": (b"", [], b""),
    "lf": (
        b"data: a\n\ndata: b\n\n",
        [b"data: a\n\n", b"data: b\n\n"],
        b"",
    ),
    "crlf": (
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        [b"data: a\r\n\r\n", b"data: b\r\n\r\n"],
        b"",
    ),
    # The final CR could still become CRLF: only the next byte or flush can tell.
    "cr": (b"data: a\r\rdata: b\r\r", [b"data: a\r\r"], b"data: b\r\r"),
    "mixed endings": (
        b"data: 1\n\r\ndata: 2\r\n\ndata: 3\r\r\ndata: 4\n\rdata: 5\r\n\r\n",
        [
            b"data: 1\n\r\n",
            b"data: 2\r\n\n",
            b"data: 3\r\r\n",
            b"data: 4\n\r",
            b"data: 5\r\n\r\n",
        ],
        b"",
    ),
    "crlf inside an event is no boundary": (
        b"event: e\r\ndata: x\r\n\r\n",
        [b"event: e\r\ndata: x\r\n\r\n"],
        b"",
    ),
    "comments": (
        b": keep-alive\n\n:\n\ndata: x\n: trailing\n\n",
        [b": keep-alive\n\n", b":\n\n", b"data: x\n: trailing\n\n"],
        b"",
    ),
    "multi-line data and fields": (
        b"event: delta\nid: 7\nretry: 10\ndata: a\ndata: b\n\n",
        [b"event: delta\nid: 7\nretry: 10\ndata: a\ndata: b\n\n"],
        b"",
    ),
    "leading blank line": (b"\ndata: a\n\n", [b"\n", b"data: a\n\n"], b""),
    "leading crlf blank line": (b"\r\ndata: a\r\n\r\n", [b"\r\n", b"data: a\r\n\r\n"], b""),
    "extra blank lines": (
        b"data: a\n\n\n\r\n\rdata: b\n\n",
        [b"data: a\n\n", b"\n", b"\r\n", b"\r", b"data: b\n\n"],
        b"",
    ),
    "only terminators": (b"\r\r\n\n\r", [b"\r", b"\r\n", b"\n"], b"\r"),
    "incomplete tail": (b"data: a\n\ndata: b\n", [b"data: a\n\n"], b"data: b\n"),
    "tail cut inside crlf": (b"data: a\r\n\r", [], b"data: a\r\n\r"),
    "tail without any newline": (b'data: {"par', [], b'data: {"par'),
    "not utf-8": (
        b"data: \xff\xfe\x80\n\ndata: \xc3\n\n",
        [b"data: \xff\xfe\x80\n\n", b"data: \xc3\n\n"],
        b"",
    ),
    "openai style": (
        b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"choices":[{"delta":{}}],"usage":{"total_tokens":3}}\n\n'
        b"data: [DONE]\n\n",
        [
            b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
            b'data: {"choices":[{"delta":{}}],"usage":{"total_tokens":3}}\n\n',
            b"data: [DONE]\n\n",
        ],
        b"",
    ),
}
STREAM_IDS = list(STREAMS)


def decode(
    chunks: list[bytes], max_event_bytes: int = MAX_EVENT_BYTES
) -> tuple[list[bytes], bytes]:
    decoder = SseDecoder(max_event_bytes)
    events: list[bytes] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
        assert decoder.pending <= max_event_bytes
    tail = decoder.flush()
    assert decoder.pending == 0
    assert all(type(event) is bytes for event in events)
    return events, tail


def reference_split(stream: bytes) -> tuple[list[bytes], bytes]:
    """The spec read one byte at a time, knowing the whole stream: the oracle for fuzzing."""
    events: list[bytes] = []
    start = i = 0
    at_line_start = True
    while i < len(stream):
        if stream[i] not in (CR, LF):
            at_line_start = False
            i += 1
            continue
        if stream[i] == CR and i + 1 == len(stream):
            break  # CR or the first half of CRLF: undecided at the end of the bytes
        i += 2 if stream[i : i + 2] == b"\r\n" else 1
        if at_line_start:
            events.append(stream[start:i])
            start = i
        at_line_start = True
    return events, stream[start:]


@pytest.mark.parametrize("name", STREAM_IDS)
def test_table_agrees_with_reference(name: str) -> None:
    stream, events, tail = STREAMS[name]
    assert b"".join(events) + tail == stream
    assert reference_split(stream) == (events, tail)


@pytest.mark.parametrize("name", STREAM_IDS)
def test_fed_whole(name: str) -> None:
    stream, events, tail = STREAMS[name]
    assert decode([stream]) == (events, tail)


@pytest.mark.parametrize("name", STREAM_IDS)
def test_split_at_every_offset(name: str) -> None:
    stream, events, tail = STREAMS[name]
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]]) == (events, tail), cut


@pytest.mark.parametrize("name", STREAM_IDS)
def test_split_at_every_pair_of_offsets(name: str) -> None:
    stream, events, tail = STREAMS[name]
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            chunks = [stream[:first], stream[first:second], stream[second:]]
            assert decode(chunks) == (events, tail), (first, second)


@pytest.mark.parametrize("name", STREAM_IDS)
def test_one_byte_chunks_with_empty_chunks_between(name: str) -> None:
    stream, events, tail = STREAMS[name]
    chunks = [b""]
    for i in range(len(stream)):
        chunks += [stream[i : i + 1], b""]
    assert decode(chunks) == (events, tail)


# Pieces to build random streams from: the decoder has fast paths for LF-only and CRLF-only bytes.
ALPHABETS = {
    "any": [b"a", b":", b" ", b"\r", b"\n", b"\r\n"],
    "lf": [b"a", b"b", b": ", b"\n"],
    "crlf": [b"a", b"b", b": ", b"\r\n"],
    "lf and crlf": [b"a", b": ", b"\n", b"\r\n"],
}


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("alphabet", list(ALPHABETS))
def test_random_streams_and_cuts_match_reference(alphabet: str, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        stream = b"".join(rng.choices(ALPHABETS[alphabet], k=rng.randrange(40)))
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randrange(5)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert decode(chunks) == reference_split(stream), (stream, cuts)


def test_crlf_split_at_chunk_boundary_belongs_to_its_event() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r\n\r") == []
    assert decoder.pending == len(b"data: a\r\n\r")
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [b"data: a\r\n\r\n", b"data: b\r\n\r\n"]
    assert decoder.pending == 0


def test_final_cr_is_decided_by_the_next_byte() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r\r") == []
    assert decoder.feed(b"d") == [b"data: a\r\r"]
    assert decoder.pending == 1
    assert decoder.flush() == b"d"


def test_flush_resets_for_a_new_stream() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: cut") == []
    assert decoder.flush() == b"data: cut"
    assert decoder.flush() == b""
    assert decoder.feed(b"data: new\n\n") == [b"data: new\n\n"]


def test_one_whole_event_is_handed_back_without_a_copy() -> None:
    chunk = b'data: {"x": 1}\n\n'
    assert SseDecoder().feed(chunk)[0] is chunk


CAP = 32
EXACT = b"data: " + b"x" * (CAP - 8) + b"\n\n"
EXACT_CR = b"data: " + b"x" * (CAP - 8) + b"\r\r"
OVER = b"data: " + b"x" * (CAP - 7) + b"\n\n"
OVER_CRLF = b"data: " + b"x" * (CAP - 9) + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("stream", "events"),
    [
        (EXACT, [EXACT]),
        (EXACT + EXACT, [EXACT, EXACT]),
        (EXACT_CR + b"data: y\n\n", [EXACT_CR, b"data: y\n\n"]),
    ],
    ids=["exact", "exact twice", "exact ending in cr"],
)
def test_event_of_exactly_the_cap_passes(stream: bytes, events: list[bytes]) -> None:
    assert len(events[0]) == CAP
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]], CAP) == (events, b""), cut


@pytest.mark.parametrize(
    "stream",
    [OVER, OVER_CRLF, b"data: a\n\n" + OVER, b"x" * (CAP + 1), b"\n" + OVER + b"data: a\n\n"],
    ids=["over", "over crlf", "after a good event", "no boundary", "mid stream"],
)
def test_event_over_the_cap_raises(stream: bytes) -> None:
    assert len(stream) > CAP
    for cut in range(len(stream) + 1):
        with pytest.raises(StreamBroken, match=f"SSE event larger than {CAP} bytes"):
            decode([stream[:cut], stream[cut:]], CAP)
    with pytest.raises(StreamBroken):
        decode([stream[i : i + 1] for i in range(len(stream))], CAP)


def test_endless_event_is_cut_off_with_memory_bounded() -> None:
    decoder = SseDecoder(CAP)
    pending: list[int] = []

    def feed_forever() -> None:
        while True:
            decoder.feed(b"data: abc ")
            pending.append(decoder.pending)

    with pytest.raises(StreamBroken):
        feed_forever()
    assert pending == [10, 20, 30]  # the read that took it past 32 bytes raised
    assert decoder.pending == 0


def test_default_cap_is_one_mebibyte() -> None:
    assert MAX_EVENT_BYTES == 1 << 20
    big = b"data: " + b"x" * (MAX_EVENT_BYTES - 8) + b"\n\n"
    assert decode([big[:1000], big[1000:]]) == ([big], b"")
    with pytest.raises(StreamBroken):
        decode([b"x" + big])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"data: hello\n\n", SseEvent(None, "hello", None, None, False)),
        (b"data:hello\n\n", SseEvent(None, "hello", None, None, False)),
        (b"data:  two spaces\n\n", SseEvent(None, " two spaces", None, None, False)),
        (b"data: a\ndata: b\n\n", SseEvent(None, "a\nb", None, None, False)),
        (b"data: a\r\ndata: b\r\n\r\n", SseEvent(None, "a\nb", None, None, False)),
        (b"data: a\rdata: b\r\r", SseEvent(None, "a\nb", None, None, False)),
        (b"data\n\n", SseEvent(None, "", None, None, False)),
        (b"data:\ndata:\n\n", SseEvent(None, "\n", None, None, False)),
        (b"data: x: y\n\n", SseEvent(None, "x: y", None, None, False)),
        (b"data: no blank line", SseEvent(None, "no blank line", None, None, False)),
        (b"event: delta\ndata: x\n\n", SseEvent("delta", "x", None, None, False)),
        (b"event: a\nevent: b\ndata: x\n\n", SseEvent("b", "x", None, None, False)),
        (b"event:\ndata: x\n\n", SseEvent(None, "x", None, None, False)),
        (b"id: 42\ndata: x\n\n", SseEvent(None, "x", "42", None, False)),
        (b"id\n\n", SseEvent(None, "", "", None, False)),
        (b"id: a\x00b\n\n", SseEvent(None, "", None, None, False)),
        (b"retry: 3000\n\n", SseEvent(None, "", None, 3000, False)),
        (b"retry: 3s\n\n", SseEvent(None, "", None, None, False)),
        (b"retry: -1\n\n", SseEvent(None, "", None, None, False)),
        (b"retry:\n\n", SseEvent(None, "", None, None, False)),
        ("retry: \u0663\n\n".encode(), SseEvent(None, "", None, None, False)),
        (b"foo: bar\n\n", SseEvent(None, "", None, None, False)),
        (b"Data: x\n\n", SseEvent(None, "", None, None, False)),
        (b": keep-alive\n\n", SseEvent(None, "", None, None, True)),
        (b":\n: x\r\n\r\n", SseEvent(None, "", None, None, True)),
        (b"\n", SseEvent(None, "", None, None, True)),
        (b"", SseEvent(None, "", None, None, True)),
        (b": c\ndata: x\n\n", SseEvent(None, "x", None, None, False)),
        (b"data: \xff\xfe\n\n", SseEvent(None, "\ufffd\ufffd", None, None, False)),
        (b"event: \xc3\ndata: \xc3\xa9\n\n", SseEvent("\ufffd", "\u00e9", None, None, False)),
        (b"\xef\xbb\xbfdata: bom\n\n", SseEvent(None, "bom", None, None, False)),
        (
            b"data: a\x0bb\x0cc\xe2\x80\xa8d\n\n",
            SseEvent(None, "a\x0bb\x0cc\u2028d", None, None, False),
        ),
    ],
)
def test_parse_event(raw: bytes, expected: SseEvent) -> None:
    assert parse_event(raw) == expected


@pytest.mark.parametrize(
    ("data", "event", "raw"),
    [
        ("x", None, b"data: x\n\n"),
        ("x", "e", b"event: e\ndata: x\n\n"),
        ("a\nb", None, b"data: a\ndata: b\n\n"),
        ("a\r\nb\rc", None, b"data: a\ndata: b\ndata: c\n\n"),
        ("", None, b"data: \n\n"),
        ("x", "", b"data: x\n\n"),
        (b'{"error": {}}', None, b'data: {"error": {}}\n\n'),
        ("[DONE]", None, DONE),
    ],
)
def test_encode_event_bytes(data: str | bytes, event: str | None, raw: bytes) -> None:
    assert encode_event(data, event) == raw


@pytest.mark.parametrize(
    ("data", "event", "expected_data"),
    [
        ("hello", None, "hello"),
        ("", None, ""),
        ("a\nb", "response.output_text.delta", "a\nb"),
        ("a\r\nb\rc", None, "a\nb\nc"),
        (" leading space", None, " leading space"),
        ("trailing newline\n", None, "trailing newline\n"),
        ("\n\n", None, "\n\n"),
        (": not a comment", None, ": not a comment"),
        ("\u00fc\u2211 \U0001f600", "m\u00fc", "\u00fc\u2211 \U0001f600"),
        (b'{"sequence_number": 1}', "response.created", '{"sequence_number": 1}'),
    ],
)
def test_encode_event_round_trips(data: str | bytes, event: str | None, expected_data: str) -> None:
    raw = encode_event(data, event)
    assert decode([raw]) == ([raw], b"")
    assert parse_event(raw) == SseEvent(event, expected_data, None, None, False)


@pytest.mark.parametrize("event", ["a\nb", "a\rb", "a\r\n"])
def test_encode_event_refuses_a_line_break_in_the_event_name(event: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_event("x", event)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (DONE, True),
        (b"data: [DONE]\r\n\r\n", True),
        (b"data: [DONE]\r\r", True),
        (b"data: [DONE]\n\r\n", True),
        (b"data:[DONE]\n\n", True),
        (b": done soon\ndata: [DONE]\n\n", True),
        (b"data: [DONE]x\n\n", False),
        (b"data: [done]\n\n", False),
        (b'data: "[DONE]"\n\n', False),
        (b'data: {"text": "[DONE]"}\n\n', False),
        (b": [DONE]\n\n", False),
        (b"data: [DONE]\ndata: more\n\n", False),
        (b"data: x\n\n", False),
        (b"\n", False),
        (b"", False),
    ],
)
def test_is_done(raw: bytes, expected: bool) -> None:
    assert is_done(raw) is expected
