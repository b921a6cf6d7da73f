"""plan_windows: fitting inputs, chunk windows with overlap, truncate right/left, error."""

from __future__ import annotations

import pytest

from qembed.encode.windows import Window, plan_windows
from qembed.errors import InputError, InputTooLong
from qembed.model.tokenization import SpecialTokens

QWEN = SpecialTokens(head=(), tail=(99,))
BERT = SpecialTokens(head=(101,), tail=(102,))


def test_input_that_fits_is_one_window_with_specials() -> None:
    content = [7, 8, 1, 2, 3]  # prompt 7 8, text 1 2 3
    [window] = plan_windows(content, 2, owner=4, special=BERT, limit=10, policy="error")
    assert window == Window([101, 7, 8, 1, 2, 3, 102], owner=4, weight=3, skip=0)


def test_exactly_at_the_limit_fits() -> None:
    content = list(range(9))
    [window] = plan_windows(content, 0, owner=0, special=QWEN, limit=10, policy="error")
    assert len(window.ids) == 10


def test_chunk_windows_cover_everything_with_overlap_and_repeat_the_prompt() -> None:
    prompt = [500, 501]
    body = list(range(1, 41))
    windows = plan_windows(prompt + body, 2, owner=0, special=QWEN, limit=12, policy="chunk", overlap=3)
    room = 12 - 1 - 2  # limit - specials - prompt
    assert len(windows) > 1
    seen: list[int] = []
    for i, w in enumerate(windows):
        assert len(w.ids) <= 12
        assert w.ids[:2] == prompt and w.ids[-1] == 99
        piece = w.ids[2:-1]
        assert w.weight == len(piece) and 0 < len(piece) <= room
        if i:
            assert piece[:3] == windows[i - 1].ids[2:-1][-3:]  # 3 tokens of overlap
        seen.extend(piece)
    assert sorted(set(seen)) == body
    assert windows[0].ids[2:-1] == body[:room] and windows[-1].ids[2:-1][-1] == body[-1]


def test_chunk_count_for_a_three_window_text() -> None:
    body = list(range(70))
    windows = plan_windows(body, 0, owner=0, special=QWEN, limit=32, policy="chunk", overlap=4)
    assert [w.weight for w in windows] == [31, 31, 16]


def test_overlap_is_capped_below_the_room() -> None:
    windows = plan_windows(list(range(30)), 0, owner=0, special=QWEN, limit=6, policy="chunk", overlap=50)
    assert windows[-1].ids[-2] == 29  # terminates and covers the end
    assert len(windows) < 30


def test_truncate_right_and_left_keep_the_prompt() -> None:
    prompt = [500, 501]
    body = list(range(1, 21))
    [right] = plan_windows(prompt + body, 2, owner=0, special=BERT, limit=10, policy="truncate", side="right")
    [left] = plan_windows(prompt + body, 2, owner=0, special=BERT, limit=10, policy="truncate", side="left")
    assert right.ids == [101, 500, 501, 1, 2, 3, 4, 5, 6, 102]
    assert left.ids == [101, 500, 501, 15, 16, 17, 18, 19, 20, 102]
    assert right.weight == left.weight == 6


def test_error_policy_names_the_token_count_and_the_limit() -> None:
    with pytest.raises(InputTooLong) as info:
        plan_windows(list(range(40)), 0, owner=3, special=QWEN, limit=16, policy="error")
    message = info.value.message
    assert "input[3]" in message and "41 tokens" in message and "16" in message
    assert info.value.param == "input" and info.value.code == "context_length_exceeded"


@pytest.mark.parametrize("policy", ["chunk", "truncate"])
def test_prompt_longer_than_the_window_is_a_clear_error(policy: str) -> None:
    prompt = list(range(500, 520))
    with pytest.raises(InputError, match="prompt alone takes 21 of the 16-token window"):
        plan_windows(prompt + [1, 2], 20, owner=0, special=QWEN, limit=16, policy=policy)


def test_exclude_prompt_sets_the_pooling_skip() -> None:
    [w] = plan_windows(
        [500, 501, 1, 2], 2, owner=0, special=BERT, limit=10, policy="chunk", exclude_prompt=True
    )
    assert w.skip == 3  # [CLS] + 2 prompt tokens
    windows = plan_windows(
        [500, 501, *range(20)], 2, owner=0, special=BERT, limit=8, policy="chunk", exclude_prompt=True
    )
    assert {w.skip for w in windows} == {3}
