"""GB 11643 check digits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmg.protocol.identity import check_digit, is_valid_id_number


@pytest.mark.parametrize(
    "number",
    ["11010519491231002X", "620102198503124516", "620503199207081235", "62292319781105003X", "440524188001010014"],
)
def test_known_valid_numbers(number):
    assert is_valid_id_number(number)


@pytest.mark.parametrize(
    "number",
    [
        "110105194912310021",  # wrong check digit
        "11010519491231002x",  # lower-case x is not the standard form
        "11010519491231002",  # 17 characters
        "1101051949123100211",  # 19 characters
        "A1010519491231002X",
        "１１０１０５１９４９１２３１００２X",  # full-width digits
        "",
    ],
)
def test_invalid_numbers(number):
    assert not is_valid_id_number(number)


digits17 = st.text(alphabet="0123456789", min_size=17, max_size=17)


@given(digits17)
def test_exactly_one_check_character_is_valid(first17):
    valid = [c for c in "0123456789X" if is_valid_id_number(first17 + c)]
    assert valid == [check_digit(first17)]


@given(digits17, st.integers(0, 16), st.integers(1, 9))
def test_every_single_digit_error_is_caught(first17, position, delta):
    number = first17 + check_digit(first17)
    wrong = number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]
    assert not is_valid_id_number(wrong)


@given(digits17, st.integers(0, 15))
def test_adjacent_swaps_are_caught(first17, position):
    number = first17 + check_digit(first17)
    a, b = number[position], number[position + 1]
    if a == b:
        return
    swapped = number[:position] + b + a + number[position + 2 :]
    assert not is_valid_id_number(swapped)


def test_masking_keeps_the_region_and_the_last_four():
    from lmg.protocol.identity import mask_id_number

    assert mask_id_number("620102198503124516") == "620102********4516"
    assert mask_id_number("62010219850312451X") == "620102********451X"
    assert mask_id_number("1234567890") == "**********"  # too short to be an ID: nothing shown
    assert mask_id_number("") == ""


def test_posts_are_one_table_with_eight_key_posts():
    from lmg.protocol import WorkerRole
    from lmg.protocol.posts import KEY_POSTS, Post

    assert len(KEY_POSTS) == 8 and Post.WORKER not in KEY_POSTS
    assert {p.info.name_zh for p in KEY_POSTS} == {"项目经理", "技术负责人", "质量员", "安全员", "施工员",
                                                   "总监理工程师", "总监代表", "专业监理工程师"}
    assert Post.parse("项目经理") is Post.parse("project-manager") is Post.PROJECT_MANAGER
    assert Post.parse("") is Post.WORKER and Post.WORKER.info.wire_role is WorkerRole.WORKER
    assert Post.CHIEF_SUPERVISOR.info.wire_role is WorkerRole.MANAGER
    import pytest

    with pytest.raises(ValueError, match="unknown post 'boss'"):
        Post.parse("boss")
