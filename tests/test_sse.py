import pytest

from kernel import sse


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"a": 1, "b": "x"}, b'data: {"a":1,"b":"x"}\n\n'),
        ({"text": "héllo ✓"}, 'data: {"text":"héllo ✓"}\n\n'.encode()),
        ({"text": "two\nlines"}, b'data: {"text":"two\\nlines"}\n\n'),
        ("[DONE]", b"data: [DONE]\n\n"),
        ("first\nsecond", b"data: first\ndata: second\n\n"),
        ("crlf\r\nline", b"data: crlf\ndata: line\n\n"),
        ("", b"data: \n\n"),
    ],
)
def test_encode(data, expected):
    assert sse.encode(data) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ping", b": ping\n\n"),
        ("a\nb", b": a\n: b\n\n"),
        ("", b": \n\n"),
    ],
)
def test_comment(text, expected):
    assert sse.comment(text) == expected


def test_constants_are_the_encoded_forms():
    assert sse.DONE == sse.encode("[DONE]")
    assert sse.PING == sse.comment("ping")


@pytest.mark.parametrize(
    "before, value, after, expected",
    [
        (b'{"delta":', b'"hi"', b"}", b'data: {"delta":"hi"}\n\n'),
        (b"[", b"1", b"]", b"data: [1]\n\n"),
    ],
)
def test_around_wraps_a_value_into_one_event(before, value, after, expected):
    head, tail = sse.around(before, after)
    assert head + value + tail == expected
