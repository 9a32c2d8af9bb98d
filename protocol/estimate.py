"""What a cut-short stream cost: its output tokens estimated from the content relayed (pure).

The upstream reports a message's output tokens at its end (``message_delta``: cumulative,
final); ``message_start`` carries only a placeholder (1 to 5). A stream cut short before
that final count (the client's ``abort``, a disconnect, a takeover, a dropped or broken
upstream connection, an ``error`` event, the idle watchdog, the shutdown's cut-off) was
still billed for everything the model generated, so its output is estimated from what the
gateway received of it, and the usage record says so (``Usage.estimated``,
docs/protocol.md "Cost of a stream cut short").

Method (``estimate_output_tokens``), stated so that a bill can be checked against it::

    ceil(text_bytes / TEXT_BYTES_PER_TOKEN) + ceil(opaque_chars / OPAQUE_CHARS_PER_TOKEN)
        + blocks + other_deltas

- ``text_bytes``: UTF-8 bytes of every ``text_delta``, ``thinking_delta`` and
  ``input_json_delta`` piece. Bytes, not characters, so that a script of dense characters
  (CJK: about one token per character, three bytes each) is not under-counted.
- ``opaque_chars``: characters of ``signature_delta`` and of a ``redacted_thinking``
  block's ``data``. Both are base64 of the encrypted thinking (the whole thinking on
  Claude 4, whose visible thinking is a summary billed at the full thinking's count).
- ``blocks``: one token per content block started (its delimiter tokens).
- ``other_deltas``: one token per delta whose content is not measured here
  (``citations_delta``: the cited text is not billed as output; beta delta types).

The result is never below the output count the upstream last reported (``settle``).

Why these divisors (conservative: the ledger may over-estimate, it should not under-count):
measured with a public reconstruction of Claude's BPE vocabulary (65,000 tokens), English
prose runs at 3.74 UTF-8 bytes per token, Python code 3.57, a tool input of code as JSON
3.61, German 3.22, TOML 2.97, Japanese 3.00, a small JSON object 2.88, Chinese 2.85. Three
bytes per token over-estimates prose by about 25 % and code by about 19 %, and is within
5 % of the densest content (a small tool input's block token makes up the difference).
Newer vocabularies may spend more tokens on the same text; that is not measured here, and
the estimate is low by as much. Opaque base64 holds 0.75 bytes per character, of
ciphertext of a text at about 3.7 bytes per token: about 4.9 characters per token, so 4
leaves room for a denser language. (The emulator counts input at four bytes per token,
``emulator/tokens.py``.)

Error on the emulator's completed streams (``tests/protocol/test_estimate.py`` measures it
and checks these figures): over 16 streams (text answers of 1 to 2,000 words, the echo and
default replies, thinking, a tool call, thinking with a tool call) the estimate is never
below the emulator's count: mean relative error +124 %, max +212 % (thinking with a tool
call: the emulator bills its 44-character signature as one token), min +50 % (a one-word
answer). That is the emulator's token model more than the method's error: the emulator
bills one token per delta and one per block, a delta being a whole word ("word123 ", 5 to
8 bytes) that the vocabulary above counts as about two tokens; against that count, the
estimate of the same text answers is +5 % to +31 %.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol.usage import MAX_TOKEN_COUNT, Usage

# UTF-8 bytes of generated text per output token, rounded down from the densest content
# measured (see the module docstring): a lower divisor over-estimates, never under.
TEXT_BYTES_PER_TOKEN: Final = 3
# Characters of base64 (signatures, redacted thinking) per token of the thinking they
# encrypt: about 4.9 for English, 4 for a denser script (see the module docstring).
OPAQUE_CHARS_PER_TOKEN: Final = 4


class RelayedContent(msgspec.Struct, frozen=True, kw_only=True):
    """What a stream delivered of a message's output, counted as ``MessageAssembler`` fed it.

    ``text_bytes``: UTF-8 bytes of text, thinking and tool-input JSON deltas;
    ``opaque_chars``: characters of signatures and redacted thinking; ``blocks``: content
    blocks started; ``other_deltas``: deltas of any other kind (citations, beta types).
    """

    text_bytes: int = 0
    opaque_chars: int = 0
    blocks: int = 0
    other_deltas: int = 0


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def estimate_output_tokens(content: RelayedContent) -> int:
    """The output tokens that produced ``content`` (the module docstring's formula)."""
    tokens = (
        _ceil_div(max(content.text_bytes, 0), TEXT_BYTES_PER_TOKEN)
        + _ceil_div(max(content.opaque_chars, 0), OPAQUE_CHARS_PER_TOKEN)
        + max(content.blocks, 0)
        + max(content.other_deltas, 0)
    )
    # The bound of every count the ledger keeps (protocol/usage.py, "Validity").
    return min(tokens, MAX_TOKEN_COUNT)


def settle(usage: Usage, content: RelayedContent) -> Usage:
    """The usage to bill for a message whose final output count never arrived: ``usage``
    (the upstream's counts so far) with ``output_tokens`` the larger of the count it last
    reported and the estimate from ``content``, flagged ``estimated``."""
    return msgspec.structs.replace(
        usage,
        output_tokens=max(usage.output_tokens, estimate_output_tokens(content)),
        estimated=True,
    )
