from schemas.migrations import load_migrations


def test_migrations_are_ordered_and_split() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    first = migrations[0]
    assert first.version == 1 and len(first.statements) == 2
    assert [m.name for m in migrations][:2] == ["results_and_costs", "routing_decisions"]
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in first.statements)
