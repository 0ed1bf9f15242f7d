"""Reading Python regexes: the relaxed patterns the scan looks for, and what they keep.

The native form is written for Hyperscan in byte mode, but it is also a valid Python
pattern: on ASCII text without a newline, Python must find exactly the same in it as in the
Python form, which in turn must be found wherever the original regex matches.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatchd.rules.syntax import literal_score, native_class, nests_quantifiers, relaxed

PATTERNS = [
    r"^Failed (?!publickey )\S+ for (?:invalid user )?(?P<user>\S+) from (?P<ip>[\d.:]+)$",
    r"(?i)invalid USER \w+",
    r"(?i:k)s[^a-c\d]x{2,5}",
    r"(?a)\w+\s\d",
    r"(?s)a.b",
    r"(a)\1(?(1)y|z)",
    r"(?>ab|a)c",
    r"a*+b",
    r"\bword\B",
    r"(?<=x)y(?=z)",
    r"[\]\\^-]+",
    r"\Aab\Z",
    r"x{300}",
    r"(?P<q>['\"]).*?(?P=q)",
    r"[^\s]+ : \S+",
    "\u212a",  # Kelvin sign: matches "k" and "K" only with IGNORECASE
    "(?i)\u212a",
    "(?i)\u017f",  # long s
    r"(?i)[i-k]",
]
ASCII = st.text(alphabet=st.characters(max_codepoint=127, exclude_characters="\n"), max_size=16)
WORDS = ["Failed ", "for ", "invalid user ", "from ", "1.2.3.4", "x", "y", "z", "k", "K",
         "s", "S", "ab", "c", "word", "'", '"', " : ", "\t", "_", "]", "\\", "^", "-", "1",
         "INVALID user bob"]  # fmt: skip
PIECES = st.lists(st.sampled_from(WORDS), max_size=8).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATTERNS), ASCII | PIECES)
def test_on_ascii_text_the_native_form_finds_what_the_python_form_finds(
    source: str, text: str
) -> None:
    pattern = re.compile(source)
    native = re.compile(relaxed(pattern, native=True))
    python = re.compile(relaxed(pattern, native=False))
    assert (native.search(text) is None) == (python.search(text) is None), text


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATTERNS), st.text(max_size=16) | PIECES, PIECES, PIECES)
def test_the_relaxed_form_is_found_around_any_match(
    source: str, value: str, before: str, after: str
) -> None:
    pattern = re.compile(source)
    if pattern.search(value):
        assert re.search(relaxed(pattern, native=False), before + value + after)


@pytest.mark.parametrize(
    ("source", "python"),
    [
        (r"^ab$", "ab"),
        (r"(?<=x)y(?!z)\b", "y"),
        (r"(?P<n>a)(?P=n)", r"(?:a)(?s:.*)"),
        (r"(a)(?(1)b|c)", "(?:a)(?:b|c)"),
        (r"xa*+", "x"),  # optional items at either end rule out no line
        (r"^(?:error: )?Failed (?P<user>\S+)(?: port \d+)?\s*$", r"Failed\x20(?:(?:[\S]){1,})"),
        (r"(?i:k)", r"(?:(?i:k))"),
    ],
)
def test_relaxed_python_forms(source: str, python: str) -> None:
    assert relaxed(re.compile(source), native=False) == python


def test_native_classes_say_exactly_what_python_matches() -> None:
    assert native_class("k", re.IGNORECASE) == r"[\x4b\x6b]"
    assert native_class("\u212a", re.IGNORECASE) == r"[\x4b\x6b]"  # Kelvin sign
    assert native_class("\u212a", 0) == r"\xff"  # no ASCII character: never on an ASCII line
    assert native_class(r"\s", 0) == r"[\x09\x0b-\x0d\x1c-\x20]"  # no newline: lines have none
    assert native_class(r"\d", re.ASCII) == r"[\x30-\x39]"


def test_native_repeats_too_wide_for_hyperscan_become_unbounded() -> None:
    assert relaxed(re.compile("x{300}"), native=True) == r"(?:\x78){255,}"
    assert relaxed(re.compile("x{2,300}"), native=True) == r"(?:\x78){2,}"


def test_literal_score_is_the_longest_text_every_match_holds() -> None:
    assert literal_score(re.compile(r"^(?:error: )?Failed (\S+) for")) == 7
    assert literal_score(re.compile(r"(?:Accepted|Failed) x")) == 6  # "Failed" or "Accepted"
    assert literal_score(re.compile(r"^(?P<ip>[0-9a-f:.]+)$")) == 0


def test_nested_quantifiers_are_told_from_plain_ones() -> None:
    assert nests_quantifiers(re.compile(r"(a+)+$"))
    assert not nests_quantifiers(re.compile(r"(?: (?:port \d+|on \S+)){0,3}"))
