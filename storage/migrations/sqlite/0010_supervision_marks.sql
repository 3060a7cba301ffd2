-- What the scheduled evaluation of key personnel remembers across restarts and nodes
-- (server/supervision/service.py, SupervisionSchedule): when it last looked for punches
-- received late ("backlog_checked_ms") and which months it evaluated in full
-- ("month_evaluated:YYYY-MM"). Without it a restarted gateway looked two days back and
-- missed a backlog received while the evaluation was off or failing for longer.
CREATE TABLE supervision_marks (
    name      TEXT PRIMARY KEY,
    value_ms  INTEGER NOT NULL,
    set_at_ms INTEGER NOT NULL
);
