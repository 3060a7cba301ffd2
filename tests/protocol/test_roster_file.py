"""Roster and project files: every bad row named by line with its reason, the good rows kept."""

from __future__ import annotations

from datetime import date

import pytest

from lmg.protocol.posts import Post
from lmg.protocol.roster_file import FileError, parse_projects, parse_workers
from lmg.simulators.terminal import worker_id_for

A, B, C = worker_id_for(1), worker_id_for(2), worker_id_for(3)


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_good_rows_are_kept_and_bad_ones_named_by_line():
    text = ("id_number,name,team,post,entry_date,exit_date\n"
            f"{A},张三,钢筋班,,2026-11-01,\n"
            f"{A[:-1]}0,李四,,,2026-11-01,\n"          # wrong check digit
            f"{B},王五,,项目经理,2026-11-02,2026-12-31\n"
            f"{C},赵六,,boss,2026-11-01,\n"              # unknown post
            f"{A},张三,,,2026-11-01,\n"                  # listed twice
            "\n"
            f"{C},,,,2026-11-01,\n"                      # no name
            f"{C},钱七,,,2026/11/01,\n"                  # not ISO
            f"{C},孙八,,,2026-11-05,2026-11-01\n")       # exit before entry
    good, errors = parse_workers(lines(text), "w.csv")
    assert [(r.line, r.id_number, r.post) for r in good] == [(2, A, Post.WORKER), (4, B, Post.PROJECT_MANAGER)]
    assert good[1].exit_date == date(2026, 12, 31) and good[0].team == "钢筋班"
    assert [(e.line, e.reason.split(" ")[0]) for e in errors] == [
        (3, "id_number"), (5, "unknown"), (6, "this"), (8, "name"), (9, "entry_date"), (10, "exit_date")]
    assert "line 3: id_number" in str(errors[0])


def test_chinese_headers_any_order_and_a_byte_order_mark():
    text = f"\ufeff进场日期,姓名,身份证号,岗位\n2026-11-01,张三,{A.lower()},总监理工程师\n"
    good, errors = parse_workers(lines(text), "w.csv")
    assert errors == [] and good[0].id_number == A and good[0].post is Post.CHIEF_SUPERVISOR


@pytest.mark.parametrize("header, message", [
    ("id_number,name\n", "lacks entry_date"),
    ("id_number,name,entry_date,colour\n", "unknown column 'colour'"),
    ("", "is empty"),
])
def test_a_bad_header_is_an_error_of_the_file(header, message):
    with pytest.raises(FileError, match=message):
        parse_workers(lines(header), "w.csv")


def test_projects():
    text = ("code,name,region,uscc,start_date,end_date\n"
            "620102-2026-001,兰州某住宅楼,620102,91620100MA71ABCD1X,2026-03-01,2027-06-30\n"
            "620102-2026-002,某桥,62010,,,\n"
            "620102-2026-003,某路,620103,IOSVZ,,\n")
    good, errors = parse_projects(lines(text), "p.csv")
    assert [(p.code, p.region, p.start_date) for p in good] == [("620102-2026-001", "620102", date(2026, 3, 1))]
    assert [(e.line, e.reason.split(" ")[0]) for e in errors] == [(3, "region"), (4, "uscc")]


def test_the_rosters_today_is_the_date_in_china():
    from lmg.protocol.roster_file import china_date

    assert china_date(1764518399000) == date(2025, 11, 30)  # 2025-11-30T15:59:59Z: 23:59:59 in Beijing
    assert china_date(1764518400000) == date(2025, 12, 1)  # 16:00Z: midnight in Beijing
