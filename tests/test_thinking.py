"""Tests for the ``<think>`` splitter: chunking independence, latency, the one-shot rules."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowith_proto.thinking import ThinkSplitter, split_think, split_think_raw


def stream(fragments: Iterable[str]) -> tuple[str, str]:
    """Feed every fragment then flush; return the joined visible and reasoning deltas."""
    splitter = ThinkSplitter()
    visible: list[str] = []
    reasoning: list[str] = []
    for fragment in fragments:
        v, r = splitter.feed(fragment)
        visible.append(v)
        reasoning.append(r)
    v, r = splitter.flush()
    visible.append(v)
    reasoning.append(r)
    return "".join(visible), "".join(reasoning)


def cut(text: str, positions: Iterable[int]) -> list[str]:
    """Cut ``text`` at the given sorted positions (empty fragments allowed)."""
    bounds = [0, *positions, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


# (text, expected raw visible, expected raw reasoning): pins the rules themselves,
# independently of the implementation used as the reference below.
CASES: list[tuple[str, str, str]] = [
    ("plain text", "plain text", ""),
    ("<think>r</think>b", "b", "r"),
    ("<think>one</think>\n<think>two</think>y", "\ny", "onetwo"),
    ("<THINK>R</THINK>B<Think>S</tHiNk>C", "B<Think>S</tHiNk>C", "R"),
    ("<think>never closed", "", "never closed"),
    ("1 < 2 and x<y", "1 < 2 and x<y", ""),
    ("<thinking>not a tag</thinking>", "<thinking>not a tag</thinking>", ""),
    ("< think>spaced</ think>", "< think>spaced</ think>", ""),
    ('<think a="b">attrs</think>', '<think a="b">attrs', ""),
    ("<<think>>r<</think>>", "<<think>>r<</think>>", ""),
    ("<think>a</think><think>b</think>", "", "ab"),
    ("<think></think>y", "y", ""),
    # Once the answer has begun, tags are its text (an answer may explain them)...
    ("a<think>r</think>b", "a<think>r</think>b", ""),
    # ...but DeepSeek's lone closing tag (its opening one was in the prompt) is dropped,
    # once, where no tag came before.
    ("answer</think>more", "answermore", ""),
    ("reasons\n</think>\n\nanswer</think>", "reasons\n\n\nanswer</think>", ""),
    (
        "<think>plan</think>Models wrap reasoning in <think> tags, closed by </think>. Done.",
        "Models wrap reasoning in <think> tags, closed by </think>. Done.",
        "plan",
    ),
    ("</think>", "", ""),
    (" \n</think>\n<think>a</think> b</think>", " \n\n b</think>", "a"),
    ("<think>a<think>b</think>c", "c", "a<think>b"),
    ("<think>1 < 2 </thin </think>ok", "ok", "1 < 2 </thin "),
    ("tail <", "tail <", ""),
    ("tail <thin", "tail <thin", ""),
    (" <thin", " <thin", ""),
    ("<think>tail </thin", "", "tail </thin"),
    ("\n<think>\nreason\n</think>\n\nanswer\n", "\n\n\nanswer\n", "\nreason\n"),
    ("<thin\u212a>kelvin</think>", "<thin\u212a>kelvin", ""),
    ("\u3000<think>r</think>x", "\u3000x", "r"),  # any Unicode whitespace precedes the answer
    ("", "", ""),
]

TEXTS = [text for text, _, _ in CASES]


@pytest.mark.parametrize(("text", "visible", "reasoning"), CASES)
def test_one_shot_rules(text: str, visible: str, reasoning: str) -> None:
    assert split_think_raw(text) == (visible, reasoning)
    assert split_think(text) == (visible.strip(), reasoning.strip())


def test_old_client_failing_example() -> None:
    assert stream(["<thi", "nk>r</th", "ink>b"]) == ("b", "r")


@pytest.mark.parametrize("text", TEXTS)
def test_whole_text_in_one_fragment(text: str) -> None:
    assert stream([text]) == split_think_raw(text)


@pytest.mark.parametrize("text", TEXTS)
def test_every_single_cut(text: str) -> None:
    expected = split_think_raw(text)
    for i in range(len(text) + 1):
        assert stream(cut(text, [i])) == expected, i


@pytest.mark.parametrize("text", TEXTS)
def test_every_pair_of_cuts(text: str) -> None:
    expected = split_think_raw(text)
    for i, j in itertools.combinations_with_replacement(range(len(text) + 1), 2):
        assert stream(cut(text, [i, j])) == expected, (i, j)


@pytest.mark.parametrize("text", TEXTS)
def test_char_by_char(text: str) -> None:
    assert stream(text) == split_think_raw(text)


_ALPHABET = "<>/thinkTHINKab \n\u212a\u3000"
_TOKENS = ["<think>", "</think>", "<THINK>", "</Think>", "<", "</", "<th", "</thin", "<thinking>"]
_texts = st.lists(
    st.one_of(st.sampled_from(_TOKENS), st.text(alphabet=_ALPHABET, max_size=4)),
    max_size=12,
).map("".join)


@st.composite
def _chunked(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(st.one_of(_texts, st.text(alphabet=_ALPHABET, max_size=40)))
    positions = draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 1))
    return text, cut(text, sorted(positions))


@settings(max_examples=300, deadline=None)
@given(_chunked())
def test_any_chunking_matches_one_shot(case: tuple[str, list[str]]) -> None:
    text, fragments = case
    assert "".join(fragments) == text
    visible, reasoning = split_think_raw(text)
    assert stream(fragments) == (visible, reasoning)
    assert split_think(text) == (visible.strip(), reasoning.strip())


def test_partial_tag_is_held_and_rest_released() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("\n <") == ("\n ", "")
    assert splitter.feed("th") == ("", "")
    assert splitter.feed("ink>why") == ("", "why")
    assert splitter.in_think
    assert splitter.feed("</") == ("", "")
    assert splitter.feed("think>done") == ("done", "")
    assert not splitter.in_think


def test_lone_angle_bracket_released_once_unambiguous() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed(" <") == (" ", "")
    assert splitter.feed(" b") == ("< b", "")
    assert ThinkSplitter().feed("a < b") == ("a < b", "")


def test_not_a_tag_released_as_soon_as_it_diverges() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think") == ("", "")
    assert splitter.feed("ing") == ("<thinking", "")


def test_only_closing_tag_prefixes_are_held_inside_a_block() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>a <t") == ("", "a <t")
    assert splitter.feed("x </thi") == ("", "x ")


def test_fragment_without_angle_bracket_is_released_in_full() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("\n") == ("\n", "")
    assert splitter.feed("<think>") == ("", "")
    assert splitter.feed("deep thought") == ("", "deep thought")
    assert splitter.feed("</think>just text") == ("just text", "")


def test_once_the_answer_began_after_a_tag_nothing_is_held_and_tags_are_text() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>r</think>Use <thi") == ("Use <thi", "r")
    assert splitter.feed("nk> and </think>") == ("nk> and </think>", "")
    assert not splitter.in_think


def test_a_lone_closing_tag_in_the_answer_is_held_until_it_is_sure() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("reasons</thi") == ("reasons", "")
    assert splitter.feed("nk>answer</think>") == ("answer</think>", "")


def test_flush_releases_held_text_in_current_mode() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed(" <thi") == (" ", "")
    assert splitter.flush() == ("<thi", "")
    assert splitter.flush() == ("", "")

    splitter = ThinkSplitter()
    assert splitter.feed("<think>r</th") == ("", "r")
    assert splitter.flush() == ("", "</th")
    assert splitter.in_think  # the unclosed block stays visible to the caller


def test_a_stray_closing_tag_before_the_answer_is_dropped_while_streaming() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("\n</th") == ("\n", "")
    assert splitter.feed("ink> more") == (" more", "")
    assert not splitter.in_think


def test_split_think_strips_both_parts() -> None:
    assert split_think("<think>\n  why \n</think>\n\n  because  \n") == ("because", "why")
