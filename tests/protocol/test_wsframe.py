"""Our text frames decode, by wsproto's own client, to exactly the messages we framed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from protocol.wsframe import text_frame


def decode_all(data: bytes) -> list[str]:
    protocol = FrameProtocol(client=True, extensions=[])
    protocol.receive_bytes(data)
    messages = []
    for frame in protocol.received_frames():
        assert frame.opcode is Opcode.TEXT and frame.message_finished and frame.frame_finished
        messages.append(str(frame.payload))
    return messages


@given(st.lists(st.text(max_size=300), max_size=20))
def test_frames_decode_to_the_same_messages(texts: list[str]) -> None:
    assert decode_all(b"".join(text_frame(t.encode()) for t in texts)) == texts


def test_each_length_form() -> None:
    for size in (0, 125, 126, 65535, 65536, 70000):
        payload = "x" * size
        assert decode_all(text_frame(payload.encode())) == [payload]
