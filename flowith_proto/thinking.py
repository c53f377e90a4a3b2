"""Separate inline ``<think>…</think>`` reasoning from visible text.

Reasoning models (DeepSeek-R1 and friends) stream their chain of thought inside
the ordinary text fragments of a generation, wrapped in ``<think>`` tags. The
fragments are cut wherever the tokenizer pleases, so a tag may arrive split
across several of them (``"a<thi"``, ``"nk>r</th"``, ``"ink>b"``); the splitter
therefore holds back a fragment's tail while it could still be the start of a
tag, and releases everything else at once.

The rules, shared by the streaming :class:`ThinkSplitter` and the one-shot
:func:`split_think_raw` / :func:`split_think`:

* Only exactly ``<think>`` and ``</think>`` are tags, matched with ASCII
  case-insensitivity (``<THINK>``, ``</Think>``); no attributes, no whitespace,
  so ``<thinking>`` or ``< think>`` are literal text.
* Reasoning comes before the answer. Until the answer begins, ``<think>`` opens
  a block, text inside a block is reasoning and ``</think>`` closes it; several
  blocks may follow one another, and whitespace between them is visible. An
  unclosed block makes the rest of the text reasoning.
* The answer begins with the first visible character that is not whitespace
  (a ``<`` that starts no tag included). From there on everything is answer
  text, tags too: an answer that explains ``<think>`` tags keeps them, where a
  split anywhere would cut out the words between two of them.
* A stray ``</think>`` is dropped before the answer begins, and once after it
  while no tag came before (not even a literal ``<think>`` in the answer):
  DeepSeek emits a lone closing tag when the opening one was part of the prompt.
  The text before it cannot be reclassified as reasoning without holding back
  the whole answer, but the tag does not leak.
* Inside a block ``<think>`` is literal reasoning text: blocks do not nest, and
  the first ``</think>`` closes the block.
"""

from __future__ import annotations

import re

__all__ = ["ThinkSplitter", "split_think", "split_think_raw"]

_OPEN = "<think>"
_CLOSE = "</think>"
# Tags to look for in each mode; outside a block the closing tag is watched
# too, so that a stray one can be dropped.
_OUTSIDE_TAGS: tuple[str, ...] = (_OPEN, _CLOSE)
_INSIDE_TAGS: tuple[str, ...] = (_CLOSE,)

_TAG_RE = re.compile(r"(</?think>)", re.IGNORECASE | re.ASCII)


def _is_tag(text: str, tag: str) -> bool:
    """Whether ``text`` equals ``tag`` under ASCII case folding.

    ``str.lower`` alone would also fold non-ASCII look-alikes (the Kelvin sign
    lowers to ``k``), which the regex with ``re.ASCII`` does not.
    """
    return text.isascii() and text.lower() == tag


def _could_become_tag(rest: str, tags: tuple[str, ...]) -> bool:
    """Whether ``rest`` (which starts with ``<``) is a proper prefix of a tag."""
    if not rest.isascii():
        return False
    folded = rest.lower()
    return any(len(folded) < len(tag) and tag.startswith(folded) for tag in tags)


class ThinkSplitter:
    """Streaming splitter: feed fragments, get ``(visible_delta, reasoning_delta)``.

    Each call returns only text whose classification is certain; a tail that
    could still grow into a tag (at most 7 characters, always starting with
    ``<``) is held until the next fragment or :meth:`flush`. Once the answer has
    begun and a tag came, nothing is held. The work per call is linear in the
    fragment: accumulated history is never rescanned.
    """

    __slots__ = ("_answering", "_held", "_in_think", "_tag_seen")

    def __init__(self) -> None:
        self._held = ""
        self._in_think = False
        self._answering = False  # visible text other than whitespace came
        self._tag_seen = False  # a block opened, or a stray closing tag was dropped

    @property
    def in_think(self) -> bool:
        """Whether the stream is currently inside a ``<think>`` block."""
        return self._in_think

    def feed(self, fragment: str) -> tuple[str, str]:
        """Take the next fragment; return the visible and reasoning text it made certain."""
        if self._answering and self._tag_seen:
            return fragment, ""  # the rest is answer, tags and all
        if not self._held and "<" not in fragment:
            # Fast path: the usual token-sized fragment with no tag in sight.
            if self._in_think:
                return "", fragment
            self._answering = self._answering or not _blank(fragment)
            return fragment, ""
        buf = self._held + fragment
        self._held = ""
        visible: list[str] = []
        reasoning: list[str] = []
        pos = 0
        while True:
            if self._answering and self._tag_seen:
                visible.append(buf[pos:])
                break
            lt = buf.find("<", pos)
            if self._in_think:
                if lt < 0:
                    reasoning.append(buf[pos:])
                    break
                reasoning.append(buf[pos:lt])
                if _is_tag(buf[lt : lt + len(_CLOSE)], _CLOSE):
                    self._in_think = False
                    pos = lt + len(_CLOSE)
                    continue
                tags = _INSIDE_TAGS
            else:
                text = buf[pos:] if lt < 0 else buf[pos:lt]
                visible.append(text)
                self._answering = self._answering or not _blank(text)
                if lt < 0:
                    break
                if self._answering and self._tag_seen:
                    pos = lt
                    continue  # the rest is answer text
                if _is_tag(buf[lt : lt + len(_OPEN)], _OPEN):
                    # Before the answer it opens a block; in it, it is text, and a
                    # closing tag after it is no lone DeepSeek one: text too.
                    self._in_think = not self._answering
                    self._tag_seen = True
                    pos = lt + len(_OPEN) if self._in_think else lt
                    continue
                if _is_tag(buf[lt : lt + len(_CLOSE)], _CLOSE):  # stray: dropped
                    self._tag_seen = True
                    pos = lt + len(_CLOSE)
                    continue
                tags = _OUTSIDE_TAGS  # in the answer too: a literal <think> tells
            rest = buf[lt:]
            if _could_become_tag(rest, tags):
                self._held = rest
                break
            (reasoning if self._in_think else visible).append("<")
            if not self._in_think:
                self._answering = True  # a "<" that starts no tag is answer text
            pos = lt + 1
        return "".join(visible), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        """End of stream: release any held partial tag as literal text of the current mode.

        The mode itself is kept, so :attr:`in_think` still tells whether the
        last block was left unclosed.
        """
        held, self._held = self._held, ""
        if self._in_think:
            return "", held
        self._answering = self._answering or not _blank(held)
        return held, ""


def _blank(text: str) -> bool:
    """Whether ``text`` holds nothing but whitespace (or nothing)."""
    return not text or text.isspace()


def split_think_raw(text: str) -> tuple[str, str]:
    """One-shot ``(visible, reasoning)`` of a complete text, not stripped.

    Concatenating a :class:`ThinkSplitter`'s deltas over any fragmentation of
    ``text`` gives exactly this; it is written independently (with a regex) so
    the tests can use it as the reference.
    """
    visible: list[str] = []
    reasoning: list[str] = []
    in_think = answering = tag_seen = False
    # With a capturing group, odd indices are tags and even ones the text between.
    for index, part in enumerate(_TAG_RE.split(text)):
        is_close = index % 2 == 1 and part.lower() == _CLOSE
        if index % 2 == 0:
            if in_think:
                reasoning.append(part)
            else:
                visible.append(part)
                answering = answering or bool(part.strip())
        elif in_think:
            if is_close:
                in_think = False
            else:
                reasoning.append(part)  # no nesting: an inner <think> is literal
        elif not answering and not is_close:  # an opening tag before the answer
            in_think = tag_seen = True
        elif is_close and not (answering and tag_seen):  # a stray closing tag: dropped
            tag_seen = True
        else:
            visible.append(part)  # a tag inside the answer is its text
            tag_seen = True
    return "".join(visible), "".join(reasoning)


def split_think(text: str) -> tuple[str, str]:
    """One-shot ``(visible, reasoning)`` of a complete text, both ``.strip()``-ped.

    The old client stripped both parts, and callers rely on that: the model
    usually puts newlines around its ``<think>`` block.
    """
    visible, reasoning = split_think_raw(text)
    return visible.strip(), reasoning.strip()
