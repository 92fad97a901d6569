"""Which rows of a sink batch the results table and the ledger take: one ledger row per real provider call, one
result per attempt, one final result per job (workers/sink/call_rows.py)."""

from __future__ import annotations

from workers.sink.call_rows import StoredCalls, plan_rows


def test_a_batch_of_new_attempts_goes_whole_into_both_tables() -> None:
    keys = [("j1", 1, "c1"), ("j1", 2, "c2"), ("j2", 1, "c3")]
    plan = plan_rows(keys, [False, True, True], StoredCalls())
    assert (plan.results, plan.costs, plan.repeat) == (None, None, [0, 0, 0])


def test_a_replayed_result_message_adds_no_row() -> None:
    stored = StoredCalls(results={("j1", 1): "c1"}, final_jobs={"j1"}, calls={("j1", 1, "c1")})
    plan = plan_rows([("j1", 1, "c1"), ("j2", 1, "c2")], [True, True], stored)
    assert (plan.results, plan.costs, plan.repeats()) == ([1], [1], [])


def test_a_second_real_call_for_an_answered_attempt_is_billed_and_flagged_not_a_second_result() -> None:
    """A pool killed after producing its result and before committing answers the job again on restart."""
    stored = StoredCalls(results={("j1", 1): "c1"}, final_jobs={"j1"}, calls={("j1", 1, "c1")})
    plan = plan_rows([("j1", 1, "c9")], [True], stored)
    assert (plan.results, plan.costs, plan.repeat) == ([], None, [1])


def test_a_redelivered_chain_on_another_path_never_gives_the_job_a_second_final_result() -> None:
    """First run: attempt 1 answered (final). Replay: attempt 1 failed over, attempt 2 answered."""
    stored = StoredCalls(results={("j1", 1): "c1"}, final_jobs={"j1"}, calls={("j1", 1, "c1")})
    plan = plan_rows([("j1", 1, "c2"), ("j1", 2, "c3")], [False, True], stored)
    assert (plan.results, plan.costs, plan.repeat) == ([], None, [1, 1])


def test_an_escalated_attempt_does_not_end_the_job() -> None:
    stored = StoredCalls(results={("j1", 1): "c1"}, calls={("j1", 1, "c1")})  # attempt 1 escalated
    plan = plan_rows([("j1", 2, "c2")], [True], stored)
    assert (plan.results, plan.costs, plan.repeat) == (None, None, [0])


def test_a_result_stored_without_its_cost_row_gets_it_unflagged() -> None:
    """A write that stopped between the results insert and the ledger insert, retried."""
    stored = StoredCalls(results={("j1", 1): "c1"}, final_jobs={"j1"})
    plan = plan_rows([("j1", 1, "c1")], [True], stored)
    assert (plan.results, plan.costs, plan.repeat) == ([], None, [0])


def test_within_one_batch_the_first_call_is_the_result_and_copies_are_billed_once() -> None:
    keys = [("j1", 1, "c1"), ("j1", 1, "c1"), ("j1", 1, "c2"), ("j2", 1, "")]
    plan = plan_rows(keys, [True, True, True, True], StoredCalls())
    assert (plan.results, plan.costs, plan.repeat) == ([0, 3], [0, 2, 3], [0, 0, 1, 0])
    assert plan.repeats() == [2]


def test_results_without_a_call_id_dedup_as_before() -> None:
    """Records written before call ids (or with no call: every circuit open) key on (job_id, attempt, '')."""
    stored = StoredCalls(results={("j1", 1): ""}, final_jobs={"j1"}, calls={("j1", 1, "")})
    assert plan_rows([("j1", 1, "")], [True], stored).costs == []


def test_both_arrow_tables_carry_the_call_id_and_the_ledger_its_repeat_flag() -> None:
    from tests.unit.test_ledger_tables import costs, result
    from workers.sink.ledger_tables import LedgerTables

    tables = LedgerTables([result("a", call_id="c1"), result("a", call_id="c2")], costs(1, 2))
    assert tables.results.column("call_id").to_pylist() == ["c1", "c2"]
    assert tables.cost_ledger.column("repeat_call").to_pylist() == [0, 0]
    flagged = tables.flag_repeats([0, 1])
    assert flagged.column("repeat_call").to_pylist() == [0, 1]
    assert flagged.column_names == tables.cost_ledger.column_names
