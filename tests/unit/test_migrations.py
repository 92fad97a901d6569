from schemas.migrations import load_migrations


def test_migrations_are_ordered_and_split() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    first = migrations[0]
    assert first.version == 1 and len(first.statements) == 2
    assert [m.name for m in migrations][:2] == ["results_and_costs", "routing_decisions"]
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in first.statements)


def test_migration_versions_are_unique() -> None:
    """Two files with one version (branches merged) would leave the second unapplied on databases that had the first."""
    versions = [m.version for m in load_migrations()]
    assert len(versions) == len(set(versions)), versions
