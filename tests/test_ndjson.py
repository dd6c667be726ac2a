"""NdjsonDecoder: whole lines, unchanged, whatever the reads look like; bounded line size."""

from __future__ import annotations

import pytest

from lb.errors import StreamBroken
from lb.ndjson import MAX_LINE_BYTES, NdjsonDecoder

STREAM = (b'{"model":"m","message":{"role":"assistant","content":"h\\u00e9"},"done":false}\n'
          b'{"model":"m","response":"a\\nb","done":false}\r\n'
          b"\n"
          b'{"model":"m","done":true,"done_reason":"stop"}\n')
LINES = [b'{"model":"m","message":{"role":"assistant","content":"h\\u00e9"},"done":false}\n',
         b'{"model":"m","response":"a\\nb","done":false}\r\n',
         b"\n",
         b'{"model":"m","done":true,"done_reason":"stop"}\n']


def feed_all(decoder: NdjsonDecoder, reads: list[bytes]) -> list[bytes]:
    return [line for read in reads for line in decoder.feed(read)]


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_split_at_every_offset(cut: int) -> None:
    decoder = NdjsonDecoder()
    lines = feed_all(decoder, [STREAM[:cut], STREAM[cut:]])
    assert lines == LINES
    assert decoder.flush() == b"" and decoder.pending == 0


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_three_reads_around_every_offset(cut: int) -> None:
    decoder = NdjsonDecoder()
    lines = feed_all(decoder, [STREAM[: cut - 1], STREAM[cut - 1 : cut + 1], STREAM[cut + 1 :]])
    assert lines == LINES


def test_byte_by_byte_gives_each_line_when_its_newline_arrives() -> None:
    decoder = NdjsonDecoder()
    out: list[list[bytes]] = [decoder.feed(STREAM[i : i + 1]) for i in range(len(STREAM))]
    ends = [i for i, byte in enumerate(STREAM) if byte == 0x0A]
    assert [i for i, lines in enumerate(out) if lines] == ends
    assert [line for lines in out for line in lines] == LINES


def test_one_whole_line_per_read_is_passed_without_copy() -> None:
    decoder = NdjsonDecoder()
    read = LINES[0]
    assert decoder.feed(read)[0] is read


@pytest.mark.parametrize(("reads", "lines", "tail"), [
    ([b""], [], b""),
    ([b'{"a":1}'], [], b'{"a":1}'),  # no newline yet: held, and given back at the end
    ([b'{"a":1}\n{"b"'], [b'{"a":1}\n'], b'{"b"'),
    ([b"\xff\xfe not utf-8\n"], [b"\xff\xfe not utf-8\n"], b""),  # bytes pass unchanged
    ([b"\n\n"], [b"\n", b"\n"], b""),
])
def test_edges(reads: list[bytes], lines: list[bytes], tail: bytes) -> None:
    decoder = NdjsonDecoder()
    assert feed_all(decoder, reads) == lines
    assert decoder.flush() == tail
    assert decoder.flush() == b""  # flush starts afresh


@pytest.mark.parametrize("reads", [
    [b"x" * 11],  # one read, no newline
    [b"x" * 6, b"x" * 6],  # grows over the cap across reads
    [b"x" * 6, b"x" * 6 + b"\n"],  # completed over the cap
    [b"x" * 11 + b"\n"],  # a whole line over the cap in one read
    [b"ok\n" + b"x" * 11 + b"\nok\n"],  # a long line between short ones
    [b"ok\n" + b"x" * 11],  # a long unterminated tail
])
def test_oversize_line_breaks_the_stream(reads: list[bytes]) -> None:
    decoder = NdjsonDecoder(max_line_bytes=10)
    with pytest.raises(StreamBroken, match="larger than 10 bytes"):
        feed_all(decoder, reads)
    assert decoder.pending == 0  # the memory is let go at once


def test_line_at_the_cap_passes() -> None:
    decoder = NdjsonDecoder(max_line_bytes=10)
    line = b"x" * 9 + b"\n"
    assert decoder.feed(line) == [line]
    assert feed_all(decoder, [line[:4], line[4:]]) == [line]


def test_default_cap_holds_a_long_context_line() -> None:
    decoder = NdjsonDecoder()
    context = b'{"done":true,"context":[' + b"123456," * 200_000 + b"1]}\n"
    assert len(context) < MAX_LINE_BYTES
    reads = [context[i : i + 65536] for i in range(0, len(context), 65536)]
    assert feed_all(decoder, reads) == [context]
