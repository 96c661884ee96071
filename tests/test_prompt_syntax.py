"""A1111 prompt syntax. Expected values are worked out by hand from the documented rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdcloud.errors import BadRequest
from sdcloud.prompt_syntax import (
    BREAK,
    ExtraNetwork,
    PromptChunk,
    extract_extra_networks,
    get_schedules,
    parse_prompt_attention,
    prompt_chunks,
    split_chunks,
    weighted_tokens,
)

# ----------------------------------------------------------------------------- extra networks


def test_extract_lora_tags_with_weights() -> None:
    clean, nets = extract_extra_networks("a cat <lora:detail:0.8>, <lora:style_v2:0.5:0.3> in a hat")
    assert clean == "a cat ,  in a hat"  # the text around tags is left as it was
    assert nets == [
        ExtraNetwork("lora", "detail", ("0.8",)),
        ExtraNetwork("lora", "style_v2", ("0.5", "0.3")),
    ]
    assert (nets[0].te_multiplier, nets[0].unet_multiplier) == (0.8, 0.8)
    assert (nets[1].te_multiplier, nets[1].unet_multiplier) == (0.5, 0.3)


def test_extract_other_kinds_and_defaults() -> None:
    clean, nets = extract_extra_networks("<lyco:locon_x><hypernet:anime:0.6>x<lora:a.b-c d:te=0.4:unet=0.9>")
    assert clean == "x"
    assert [(n.kind, n.name) for n in nets] == [
        ("lyco", "locon_x"),
        ("hypernet", "anime"),
        ("lora", "a.b-c d"),
    ]
    assert (nets[0].te_multiplier, nets[0].unet_multiplier) == (1.0, 1.0)
    assert nets[2].named == {"te": "0.4", "unet": "0.9"}
    assert (nets[2].te_multiplier, nets[2].unet_multiplier) == (0.4, 0.9)


def test_same_lora_twice_and_no_tags() -> None:
    _, nets = extract_extra_networks("<lora:x:0.2> <lora:x:0.4>")
    assert [n.te_multiplier for n in nets] == [0.2, 0.4]
    assert extract_extra_networks("plain <not a tag> (x:1.2)") == ("plain <not a tag> (x:1.2)", [])


def test_bad_lora_weight_is_a_clear_error() -> None:
    _, [net] = extract_extra_networks("<lora:x:heavy>")
    with pytest.raises(BadRequest, match=r"'heavy' is not a number.*<lora:x:0.8>"):
        _ = net.te_multiplier


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("((word))", [("word", 1.1 * 1.1)]),
        ("(((word)))", [("word", 1.1 * 1.1 * 1.1)]),
        ("(word:1.3)", [("word", 1.3)]),
        ("(word: 0.5 )", [("word", 0.5)]),
        ("(word:-1)", [("word", -1.0)]),
        ("[word]", [("word", 1 / 1.1)]),
        ("[[word]]", [("word", (1 / 1.1) * (1 / 1.1))]),
        ("((a:1.5) b)", [("a", 1.5 * 1.1), (" b", 1.1)]),
        ("[(a)]", [("a", 1.1 * (1 / 1.1))]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("a [b", [("a ", 1.0), ("b", 1 / 1.1)]),
        ("stray) and] brackets", [("stray) and] brackets", 1.0)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        (r"\[x\] \\ y", [("[x] \\ y", 1.0)]),
        (r"(\(x\):1.2)", [("(x)", 1.2)]),
        (r"a\b", [("ab", 1.0)]),  # a lone backslash is dropped
        ("x:1.2) y", [("x:1.2) y", 1.0)]),  # weight syntax without an open bracket is text
        ("(a:b)", [("a:b", 1.1)]),
        ("(a:1.2.3)", [("a:1.2.3", 1.1)]),  # not a number: text, and ")" still closes
        ("", [("", 1.0)]),
        ("()", [("", 1.0)]),
    ],
)
def test_attention(prompt: str, expected: list[tuple[str, float]]) -> None:
    result = parse_prompt_attention(prompt)
    assert [t for t, _ in result] == [t for t, _ in expected]
    assert [w for _, w in result] == pytest.approx([w for _, w in expected])


def test_attention_mixed_sentence() -> None:
    # The first "(" never closes, so everything after it gets x1.1 at the end.
    result = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert [t for t, _ in result] == ["a ", "house", " ", "on", " a ", "hill", ", sun, ", "sky", "."]
    assert [w for _, w in result] == pytest.approx(
        [1.0, 1.3 * 1.1 * 1.1, 1.1, 1.0, 1.1, 0.55, 1.1, 1.1**4, 1.1]
    )


def test_break_is_its_own_entry() -> None:
    assert parse_prompt_attention("a cat BREAK a hat") == [("a cat", 1.0), BREAK, ("a hat", 1.0)]
    assert parse_prompt_attention("BREAK") == [BREAK]
    assert parse_prompt_attention("a BREAK BREAK b") == [("a", 1.0), BREAK, BREAK, ("b", 1.0)]
    # only the upper-case whole word
    assert parse_prompt_attention("break BREAKING xBREAK") == [("break BREAKING xBREAK", 1.0)]


def test_break_inside_brackets_still_breaks_and_keeps_weights_around_it() -> None:
    result = parse_prompt_attention("(a BREAK b:1.5)")
    assert result == [("a", 1.5), BREAK, ("b", 1.5)]


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        ("a [b:c:0.5]", 10, [(5, "a b"), (10, "a c")]),
        ("a [b:c:3]", 10, [(3, "a b"), (10, "a c")]),
        ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
        ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
        ("a [b::3]", 10, [(3, "a b"), (10, "a ")]),
        ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
        ("[b:c:0.25]", 10, [(2, "b"), (10, "c")]),  # int(2.5) = 2
        ("[b:c:20]", 10, [(10, "b")]),  # past the end: capped
        ("[b:c:0]", 10, [(10, "c")]),  # never before
        ("[b:c:1.0]", 10, [(10, "b")]),  # "1.0" has a dot: the whole run
        ("[b:c:1]", 10, [(1, "b"), (10, "c")]),  # "1" is step 1
        ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
        ("a [[[b]]: 2]", 10, [(2, "a "), (10, "a [[b]]")]),
        ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("[a:[b:c:0.8]:0.2]", 10, [(2, "a"), (8, "b"), (10, "c")]),
        ("([a:b:0.5]:1.2)", 10, [(5, "(a:1.2)"), (10, "(b:1.2)")]),
        ("[a:b:0.5], [c:d:0.3]", 10, [(3, "a, c"), (5, "a, d"), (10, "b, d")]),
        (r"\[a:b:0.5\]", 10, [(10, r"\[a:b:0.5\]")]),  # escaped: literal
        ("a [unbalanced", 10, [(10, "a [unbalanced")]),
        ("[a:b]", 10, [(10, "[a:b]")]),  # no number: plain text
        ("[a:b:c:0.5]", 10, [(10, "[a:b:c:0.5]")]),
        ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("no edits (x:1.2)", 20, [(20, "no edits (x:1.2)")]),
        ("", 5, [(5, "")]),
    ],
)
def test_prompt_editing(prompt: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert get_schedules(prompt, steps) == expected


def test_alternation_switches_every_step() -> None:
    assert get_schedules("photo of a [cat|dog]", 4) == [
        (1, "photo of a cat"),
        (2, "photo of a dog"),
        (3, "photo of a cat"),
        (4, "photo of a dog"),
    ]
    assert [t for _, t in get_schedules("[fe|||]male", 6)] == [
        "female",
        "male",
        "male",
        "male",
        "female",
        "male",
    ]
    assert [t for _, t in get_schedules("[a|(b:1.1)]", 3)] == ["a", "(b:1.1)", "a"]
    assert [t for _, t in get_schedules("[a|b|c] [x:y:2]", 3)] == ["a x", "b x", "c y"]


def test_bare_pipe_or_trailing_backslash_leaves_prompt_unscheduled() -> None:
    # Outside A1111's grammar: the whole prompt is used as written, edits included.
    assert get_schedules("a | b [c:d:0.5]", 10) == [(10, "a | b [c:d:0.5]")]
    assert get_schedules("(a|b) [c:d:0.5]", 10) == [(10, "(a|b) [c:d:0.5]")]
    assert get_schedules("[c:d:0.5] x\\", 10) == [(10, "[c:d:0.5] x\\")]


def test_hires_pass_timeline() -> None:
    # In the hires pass fractions count 1..2 and step numbers continue after the first pass.
    assert get_schedules("a [b:.5] c", 10, hires_steps=10) == [(10, "a b c")]
    assert get_schedules("a [b:1.5] c", 10, hires_steps=10) == [(5, "a  c"), (10, "a b c")]
    assert get_schedules("[x:y:14]", 10, hires_steps=8) == [(4, "x"), (8, "y")]
    assert get_schedules("[x|y]", 10, hires_steps=3) == [(1, "x"), (2, "y"), (3, "x")]


def test_old_timelines() -> None:
    # Before A1111 1.6: below 1 is a fraction, anything else a step number.
    assert get_schedules("[a:b:1.0]", 10, old_timelines=True) == [(1, "a"), (10, "b")]
    assert get_schedules("[a:b:0.5]", 10, old_timelines=True) == [(5, "a"), (10, "b")]
    assert get_schedules("[a:b:0.5]", 10, hires_steps=4, old_timelines=True) == [(2, "a"), (4, "b")]


def test_bad_steps() -> None:
    with pytest.raises(BadRequest):
        get_schedules("x", 0)


def test_deep_nesting_does_not_crash() -> None:
    prompt = "(" * 500 + "x" + ")" * 500
    assert get_schedules(prompt, 3) == [(3, prompt)]
    assert parse_prompt_attention(prompt)[0][0] == "x"


# ----------------------------------------------------------------------------- chunking

COMMA = 267


class WordTokenizer:
    """A stand-in for CLIP's: one id per word or punctuation mark (``,`` is 267)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {",": COMMA}

    def __call__(self, text: str) -> list[int]:
        return [self.ids.setdefault(w, 1000 + len(self.ids)) for w in re.findall(r"\w+|[^\w\s]", text)]


def _words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def _chunks(prompt: str, **kwargs: object) -> list[list[str]]:
    tok = WordTokenizer()
    chunks = prompt_chunks(prompt, tok, COMMA, **kwargs)
    names = {v: k for k, v in tok.ids.items()}
    return [[names[t] for t in c.tokens] for c in chunks]


def test_short_prompt_is_one_chunk_with_weights() -> None:
    tok = WordTokenizer()
    [chunk] = prompt_chunks("a (red:1.5) cat", tok, COMMA)
    assert chunk.tokens == tok("a red cat")
    assert chunk.weights == [1.0, 1.5, 1.0]


def test_long_prompt_splits_at_75() -> None:
    chunks = _chunks(_words(80))
    assert [len(c) for c in chunks] == [75, 5]
    assert chunks[1][0] == "w75"


def test_comma_backtrack_moves_the_phrase_after_the_last_comma() -> None:
    # 70 words, a comma (position 70), 10 words: the chunk is full at w73; the comma is 5 back.
    chunks = _chunks(_words(70) + ", " + _words(10, 70))
    assert [len(c) for c in chunks] == [71, 10]
    assert chunks[0][-1] == "," and chunks[1][0] == "w70"


@pytest.mark.parametrize(("comma_at", "moved"), [(55, True), (54, False)])
def test_comma_backtrack_reaches_back_20_tokens(comma_at: int, moved: bool) -> None:
    chunks = _chunks(_words(comma_at) + ", " + _words(40, comma_at))
    if moved:  # 75 - 55 = 20 tokens back: allowed
        assert len(chunks[0]) == comma_at + 1 and chunks[0][-1] == ","
    else:  # 21 back: plain cut at 75
        assert len(chunks[0]) == 75
    assert sum(map(len, chunks)) == comma_at + 41


def test_comma_backtrack_can_be_turned_off() -> None:
    chunks = _chunks(_words(70) + ", " + _words(10, 70), comma_backtrack=0)
    assert [len(c) for c in chunks] == [75, 6]


def test_comma_as_76th_token_starts_the_next_chunk() -> None:
    chunks = _chunks(_words(75) + ", w75")
    assert chunks == [[f"w{i}" for i in range(75)], [",", "w75"]]


def test_break_pads_the_chunk() -> None:
    assert _chunks("a cat BREAK a hat") == [["a", "cat"], ["a", "hat"]]
    assert _chunks("BREAK a") == [[], ["a"]]
    assert _chunks("a BREAK") == [["a"]]
    assert _chunks("") == [[]]
    # a full chunk is closed by the next token or BREAK: no empty chunk in between
    assert _chunks(_words(75) + " BREAK x") == [[f"w{i}" for i in range(75)], ["x"]]


def test_emphasis_off_keeps_everything_literal() -> None:
    assert _chunks("(a) BREAK b", emphasis=False) == [["(", "a", ")", "BREAK", "b"]]


def test_keep_together_never_straddles_chunks() -> None:
    tok = WordTokenizer()
    ids = tok(_words(74) + " emb emb_1 emb_2 tail")
    items = [(t, 1.0) for t in ids]
    chunks = split_chunks(items, COMMA, keep_together={tok.ids["emb"]: 3})
    assert [len(c.tokens) for c in chunks] == [74, 4]
    assert chunks[1].tokens[:3] == [tok.ids["emb"], tok.ids["emb_1"], tok.ids["emb_2"]]


def test_weighted_tokens_tokenizes_each_piece_and_passes_break() -> None:
    tok = WordTokenizer()
    items = weighted_tokens([("a b", 1.0), BREAK, ("c", 1.2)], tok)
    assert items == [(tok.ids["a"], 1.0), (tok.ids["b"], 1.0), BREAK, (tok.ids["c"], 1.2)]


def test_padded_chunk_is_77_with_bos_eos() -> None:
    ids, weights = PromptChunk([5, 6], [1.2, 0.9]).padded(bos=49406, eos=49407)
    assert len(ids) == len(weights) == 77
    assert ids[:4] == [49406, 5, 6, 49407] and set(ids[3:]) == {49407}
    assert weights[:4] == [1.0, 1.2, 0.9, 1.0] and set(weights[3:]) == {1.0}
    ids, _ = PromptChunk([5], [1.0]).padded(bos=49406, eos=49407, pad=0)
    assert ids[:3] == [49406, 5, 49407] and set(ids[3:]) == {0}


# ----------------------------------------------------------------------------- properties

_any_prompt = st.lists(st.sampled_from([*"ab ,:|.5()[]\\\n", " BREAK ", "0.3", "é"]), max_size=40).map(
    "".join
)


def _escape(text: str) -> str:
    return re.sub(r"([\\()\[\]])", r"\\\1", text)


@settings(max_examples=300, deadline=None)
@given(prompt=_any_prompt, steps=st.integers(1, 30))
def test_any_prompt_schedules_without_error(prompt: str, steps: int) -> None:
    schedule = get_schedules(prompt, steps)
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends)) and ends[-1] == steps and ends[0] >= 1
    for _, text in schedule:
        assert parse_prompt_attention(text)  # every scheduled text is valid attention input


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60).filter(lambda t: "BREAK" not in t))
def test_escaped_text_is_read_back_literally(text: str) -> None:
    escaped = _escape(text)
    assert "".join(t for t, _ in parse_prompt_attention(escaped)) == text
    assert {w for _, w in parse_prompt_attention(escaped)} == {1.0}
    if "|" not in text and not escaped.endswith("\\"):
        assert get_schedules(escaped, 7) == [(7, escaped)]
