"""Token counts picked out of bodies and stream tails without a full JSON parse."""

from __future__ import annotations

import pytest

from lb.usage import Usage, find_usage

CHAT_TAIL = (b'data: {"id":"c","choices":[{"delta":{},"finish_reason":"length"}],"usage":null}\n\n'
             b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,'
             b'"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4}}}\n\n'
             b"data: [DONE]\n\n")


@pytest.mark.parametrize(("data", "expected"), [
    (CHAT_TAIL, Usage(12, 7)),
    (b'{"object":"chat.completion","usage": {"prompt_tokens": 3, "completion_tokens": 5}}',
     Usage(3, 5)),
    # Responses: the details object of the input closes before the output count
    (b'{"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},'
     b'"output_tokens":9,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":14}}',
     Usage(5, 9)),
    (b'{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":8,"total_tokens":8}}', Usage(8, 0)),
    (b'data: {"usage":null}\n\n', None),
    (b'{"usage":{}}', None),
    (b'{"usage":{"prompt_tokens":', None),  # cut short
    (b"", None),
    (b"\xff\xfe not json at all", None),
    (b'{"content":"the word \\"usage\\" in text"}', None),
    # Ollama: the last line of /api/chat, a non-stream /api/embed body
    (b'{"model":"m","done":true,"total_duration":5,"prompt_eval_count":26,"eval_count":290}\n',
     Usage(26, 290)),
    (b'{"model":"m","embeddings":[[0.1]],"prompt_eval_count": 8}', Usage(8, 0)),
    (b'{"content":"\\"eval_count\\": 3"}', None),
])
def test_find_usage(data: bytes, expected: Usage | None) -> None:
    assert find_usage(data) == expected
