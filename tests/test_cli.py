from kernel.store import knowledge


def test_roles_create_list_delete(app, runner):
    created = runner.invoke(args=["roles", "create", "--name", "Alice", "--system-prompt", "You are Alice.", "--l0"])
    assert created.exit_code == 0, created.output
    role_id = created.output.strip()
    listed = runner.invoke(args=["roles", "list"])
    assert f"{role_id}   l0  Alice" in listed.output
    duplicate = runner.invoke(args=["roles", "create", "--name", "alice", "--system-prompt", "x"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    assert runner.invoke(args=["roles", "delete", role_id]).exit_code == 0
    missing = runner.invoke(args=["roles", "delete", role_id])
    assert missing.exit_code != 0 and "no role" in missing.output


def test_roles_default_marks_and_clears(app, runner):
    first = runner.invoke(args=["roles", "create", "--name", "A", "--system-prompt", "a", "--default"]).output.strip()
    second = runner.invoke(args=["roles", "create", "--name", "B", "--system-prompt", "b"]).output.strip()
    assert f"{first} * --  A" in runner.invoke(args=["roles", "list"]).output
    assert "default role: B" in runner.invoke(args=["roles", "default", second]).output
    listed = runner.invoke(args=["roles", "list"]).output
    assert f"{second} * --  B" in listed and f"{first}   --  A" in listed
    assert runner.invoke(args=["roles", "default", "--clear"]).exit_code == 0
    assert "*" not in runner.invoke(args=["roles", "list"]).output
    assert runner.invoke(args=["roles", "default"]).exit_code != 0


def test_roles_create_checks_the_schema(runner):
    result = runner.invoke(args=["roles", "create", "--name", "n" * 101, "--system-prompt", "x"])
    assert result.exit_code != 0
    assert "is too long" in result.output


def test_ingest_a_folder(app, runner, tmp_path):
    folder = tmp_path / "notes"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.txt").write_text("Apples grow on trees.")
    (folder / "deep" / "b.md").write_text("# Bees\n\nBees make honey.")
    (folder / "c.pdf").write_bytes(b"%PDF")
    (folder / "d.txt").write_bytes("caf\xe9".encode("latin-1"))
    result = runner.invoke(args=["documents", "ingest", str(folder)])
    assert "2 added (2 chunks), 0 already known, 1 skipped" in result.output
    assert "skipped" in result.output and "d.txt" in result.output
    assert result.exit_code == 1
    again = runner.invoke(args=["documents", "ingest", str(folder / "a.txt")])
    assert "0 added (0 chunks), 1 already known, 0 skipped" in again.output
    assert again.exit_code == 0
    with app.app_context():
        from kernel.db import get_db

        assert [p.title for p in knowledge.search(get_db(), "honey")] == ["b"]
    listed = runner.invoke(args=["documents", "list"])
    assert "2 of 2" in listed.output


def test_admin_key_location(app, runner):
    result = runner.invoke(args=["admin-key"])
    assert result.output.strip().endswith("admin.key")
