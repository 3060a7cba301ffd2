"""Posts of the people on a project's roster: ordinary workers and the key posts a bid award names.

One code table, used by the roster (which post a worker holds), the roster push (the wire
`role`: key posts travel as WorkerRole.MANAGER, everyone else as WORKER) and the
supervision of key personnel (whose attendance drives the tiered warnings). The key posts
are the on-site managers (现场管理人员) of 住建部 practice: five on the builder's side
(施工单位) and three on the supervisor's side (监理单位).

A post's `code` is what files and APIs use (`project-manager`); the Chinese name is what a
person reads and what a roster file may give instead of the code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lmg.protocol.codes import WorkerRole


class Side(enum.StrEnum):
    WORKFORCE = "workforce"  # the builder's workers and teams (班组)
    BUILDER = "builder"  # 施工单位
    SUPERVISOR = "supervisor"  # 监理单位


@dataclass(frozen=True, slots=True)
class PostInfo:
    code: str
    name_zh: str
    name_en: str
    side: Side

    @property
    def key_post(self) -> bool:
        """Named in a bid award and watched by the supervision of key personnel."""
        return self.side is not Side.WORKFORCE

    @property
    def wire_role(self) -> WorkerRole:
        """The ROSTER_ADD/UPDATE `role` a terminal gets for this post."""
        return WorkerRole.MANAGER if self.key_post else WorkerRole.WORKER


class Post(enum.Enum):
    WORKER = PostInfo("worker", "工人", "worker", Side.WORKFORCE)
    PROJECT_MANAGER = PostInfo("project-manager", "项目经理", "project manager", Side.BUILDER)
    TECHNICAL_LEAD = PostInfo("technical-lead", "技术负责人", "technical lead", Side.BUILDER)
    QUALITY_OFFICER = PostInfo("quality-officer", "质量员", "quality officer", Side.BUILDER)
    SAFETY_OFFICER = PostInfo("safety-officer", "安全员", "safety officer", Side.BUILDER)
    CONSTRUCTION_OFFICER = PostInfo("construction-officer", "施工员", "construction officer", Side.BUILDER)
    CHIEF_SUPERVISOR = PostInfo("chief-supervisor", "总监理工程师", "chief supervising engineer", Side.SUPERVISOR)
    CHIEF_SUPERVISOR_DEPUTY = PostInfo("chief-supervisor-deputy", "总监代表", "chief supervisor's representative",
                                       Side.SUPERVISOR)
    SPECIALIST_SUPERVISOR = PostInfo("specialist-supervisor", "专业监理工程师", "specialist supervising engineer",
                                     Side.SUPERVISOR)

    @property
    def info(self) -> PostInfo:
        info: PostInfo = self.value
        return info

    @property
    def code(self) -> str:
        return self.info.code

    @classmethod
    def parse(cls, text: str) -> Post:
        """A post from its code or Chinese name (blank: an ordinary worker); ValueError naming
        the accepted values otherwise."""
        found = _BY_NAME.get(text.strip())
        if found is not None:
            return found
        names = ", ".join(f"{p.info.code} ({p.info.name_zh})" for p in cls)
        raise ValueError(f"unknown post {text!r}: use one of {names}")


# Codes and Chinese names to posts, and blank to the worker: an evaluation parses a post per
# commitment (120,000 a province; a scan of the members cost 100 µs each, 2026-11).
_BY_NAME: dict[str, Post] = {"": Post.WORKER, **{post.info.code: post for post in Post},
                             **{post.info.name_zh: post for post in Post}}

KEY_POSTS = tuple(post for post in Post if post.info.key_post)
