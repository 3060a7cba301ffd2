"""The bid-award file (lmg.protocol.bid_file): CSV in English or Chinese, JSON with line numbers,
an award held back whole, and the header and JSON errors that stop a file."""

from __future__ import annotations

import pytest

from lmg.protocol.bid_file import parse_awards
from lmg.protocol.identity import check_digit
from lmg.protocol.roster_file import FileError


def person(n: int) -> str:
    first17 = f"6201021980010{n:04d}"
    return first17 + check_digit(first17)


PM, TL = person(1), person(2)
HEAD = "中标通知书编号,项目编码,中标企业,统一社会信用代码,中标日期,岗位,身份证号,姓名\n"
ROW = "ZB-1,P-1,甘肃某建工集团,91620100MA7XXXXX0A,2026-03-01,{post},{id},{name}\n"


def test_a_chinese_header_with_a_bom_and_posts_by_chinese_name():
    text = "\ufeff" + HEAD + ROW.format(post="项目经理", id=PM, name="张三") + ROW.format(post="技术负责人", id=TL.lower(),
                                                                                     name="李四")
    [award], errors = parse_awards(text, "a.csv")
    assert errors == [] and award.line == 2 and award.notice_no == "ZB-1"
    assert [(p.post, p.id_number) for p in award.personnel] == [("project-manager", PM), ("technical-lead", TL)]


def test_rows_of_one_award_must_agree_and_a_bad_row_holds_the_award_back():
    text = (HEAD + ROW.format(post="项目经理", id=PM, name="张三")
            + ROW.format(post="技术负责人", id=TL, name="李四").replace("2026-03-01", "2026-03-02")
            + ROW.format(post="项目经理", id=PM, name="张三").replace("ZB-1", "ZB-2"))
    awards, errors = parse_awards(text, "a.csv")
    assert [a.notice_no for a in awards] == ["ZB-2"]
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [(2, "award ZB-1 not imported"),
                                                                   (3, "award ZB-1")]


def test_the_same_person_twice_in_one_post_is_an_error_on_the_second_line():
    text = HEAD + ROW.format(post="项目经理", id=PM, name="张三") + ROW.format(post="project-manager", id=PM, name="张三")
    awards, errors = parse_awards(text, "a.csv")
    assert awards == [] and errors[-1].line == 3 and "listed in this post already on line 2" in errors[-1].reason


def test_json_awards_are_numbered_by_the_line_their_object_starts_on():
    good = ('{"notice_no": "ZB-1", "project": "P-1", "enterprise": "E", "uscc": "91620100MA7XXXXX0A", '
            f'"award_date": "2026-03-01", "personnel": [{{"post": "项目经理", "id_number": "{PM}", "name": "张三"}}]}}')
    text = "[\n  " + good + ",\n\n  " + good.replace("ZB-1", "ZB-2").replace("项目经理", "工人") + "\n]"
    awards, errors = parse_awards(text, "a.json")
    assert [a.notice_no for a in awards] == ["ZB-1"] and awards[0].line == 2
    assert [(e.line, e.reason[:11]) for e in errors] == [(4, "personnel 1")]


@pytest.mark.parametrize("text", ["", "notice_no,project\nZB-1,P-1\n", "[{", '{"a": 1'])
def test_a_file_that_cannot_be_read_as_a_whole_is_a_file_error(text):
    with pytest.raises(FileError):
        parse_awards(text, "a")
