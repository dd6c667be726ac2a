import pytest

from lb.responses.freeform import InputDecoder, custom_arguments, custom_input

PATCH = ('*** Begin Patch\n*** Add File: a.txt\n'
         '+say "hi" \\ tab\there \u00e9 \U0001f600\n*** End Patch')

# (case, the function arguments a backend streams, the custom tool input they carry)
CASES: list[tuple[str, str, str]] = [
    ("our own encoding", custom_arguments(PATCH), PATCH),
    ("spaces around the key", '  { "input" :  "a\\nb" }', "a\nb"),
    ("ascii escapes of everything", '{"input": "\\u00e9\\ud83d\\ude00\\/\\b\\f\\r"}',
     "\u00e9\U0001f600/\b\f\r"),
    ("a lone surrogate", '{"input": "a\\ud800b"}', "a\ufffdb"),
    ("another key first: read whole", '{"x": 1, "input": "late"}', "late"),
    ("more keys after the input", '{"input": "first", "x": 1}', "first"),
    ("a bare JSON string", '"just this"', "just this"),
    ("not JSON at all: the text is the input", "echo hi", "echo hi"),
    ("an object without input", '{"cmd": "ls"}', '{"cmd": "ls"}'),
    ("empty arguments", "", ""),
    ("cut short inside the string", '{"input": "half', "half"),
    ("cut short inside an escape", '{"input": "half\\u00', "half"),
]


def splits(text: str) -> list[list[str]]:
    """The text whole, one character at a time, and cut in two at every position."""
    out = [[text], list(text)]
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    return out


@pytest.mark.parametrize(("arguments", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_the_input_is_the_same_however_the_arguments_arrive(arguments: str,
                                                            expected: str) -> None:
    assert custom_input(arguments) == expected
    for pieces in splits(arguments):
        decoder = InputDecoder()
        streamed = "".join(decoder.feed(piece) for piece in pieces)
        assert streamed + decoder.finish(arguments) == expected, pieces


def test_the_input_streams_as_it_comes() -> None:
    decoder = InputDecoder()
    assert decoder.feed('{"inp') == ""
    assert decoder.feed('ut": "ab') == "ab"
    assert decoder.feed("\\") == ""  # half an escape waits for its other half
    assert decoder.feed('nc"}') == "\nc"
    assert decoder.feed("ignored") == ""
    assert decoder.finish('{"input": "ab\\nc"}ignored') == ""


def test_arguments_round_trip() -> None:
    assert custom_input(custom_arguments(PATCH)) == PATCH
