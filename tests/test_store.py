
import pytest

from kernel import store
from kernel.store import knowledge, roles


@pytest.fixture
def conn(tmp_path):
    connection = store.connect(str(tmp_path / store.DB_NAME))
    store.migrate(connection)
    yield connection
    connection.close()


def test_migrate_sets_the_version_and_is_idempotent(tmp_path):
    conn = store.connect(str(tmp_path / "x.db"))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert store.migrate(conn) == len(store.MIGRATIONS)
    store.migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == store.BUSY_TIMEOUT_MS


def test_write_rolls_back_on_error(conn):
    with pytest.raises(RuntimeError):
        with store.write(conn):
            conn.execute("INSERT INTO roles (role_id, name, system_prompt, created_at, updated_at) VALUES ('x', 'n', 'p', 't', 't')")
            raise RuntimeError("stop")
    assert conn.execute("SELECT count(*) FROM roles").fetchone()[0] == 0


# -- roles -------------------------------------------------------------------------------------------


def test_role_lifecycle(conn):
    role = roles.create(conn, "Alice", "You are Alice.", "friendly", True)
    assert role["enable_l0_retrieval"] is True
    assert role["created_at"] == role["updated_at"] and role["created_at"].endswith("Z")
    assert roles.get(conn, role["role_id"].upper()) == role
    changed = roles.update(conn, role["role_id"], system_prompt="You are Alice, briefly.")
    assert changed["system_prompt"] == "You are Alice, briefly." and changed["name"] == "Alice"
    assert changed["updated_at"] >= role["updated_at"]
    assert roles.list_all(conn) == [changed]
    roles.delete(conn, role["role_id"])
    assert roles.list_all(conn) == []


@pytest.mark.parametrize("name", ["Alice", "alice", "ALICE"])
def test_role_names_are_unique_ignoring_case(conn, name):
    roles.create(conn, "Alice", "p")
    with pytest.raises(store.Conflict, match="already exists"):
        roles.create(conn, name, "p")


def test_renaming_onto_another_role_conflicts(conn):
    roles.create(conn, "Alice", "p")
    bob = roles.create(conn, "Bob", "p")
    with pytest.raises(store.Conflict):
        roles.update(conn, bob["role_id"], name="alice")


@pytest.mark.parametrize("role_id", ["nope", "", "role_abc123", "00000000-0000-4000-8000-000000000000", None])
def test_unknown_role_ids(conn, role_id):
    for call in (roles.get, roles.delete):
        with pytest.raises(store.NotFound):
            call(conn, role_id)
    with pytest.raises(store.NotFound):
        roles.update(conn, role_id, name="x")


# -- chunking ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size, overlap, expected",
    [
        ("", 100, 0, []),
        ("   \n\n  ", 100, 0, []),
        ("One paragraph.", 100, 0, ["One paragraph."]),
        ("First.\n\nSecond.", 100, 0, ["First.\n\nSecond."]),
        ("First para.\n\nSecond para.", 15, 0, ["First para.", "Second para."]),
        ("Aaa aaa. Bbb bbb. Ccc ccc.", 18, 0, ["Aaa aaa. Bbb bbb.", "Ccc ccc."]),
        ("Aaa aaa. Bbb bbb. Ccc ccc.", 18, 9, ["Aaa aaa. Bbb bbb.", "Bbb bbb. Ccc ccc."]),
        ("Aa. Bb.\n\nCc. Dd.", 8, 4, ["Aa. Bb.", "Bb.\n\nCc.", "Cc. Dd."]),
        ("word " * 6, 10, 0, ["word word", "word word", "word word"]),
        ("x" * 25, 10, 0, ["x" * 10, "x" * 10, "x" * 5]),
    ],
)
def test_chunk_text(text, size, overlap, expected):
    assert knowledge.chunk_text(text, size, overlap) == expected


def test_chunks_respect_the_size_and_cover_the_text():
    sentences = [f"Sentence number {i} says something about topic {i % 7}." for i in range(300)]
    text = "\n\n".join(" ".join(sentences[i : i + 9]) for i in range(0, 300, 9))
    chunks = knowledge.chunk_text(text, 500)
    assert all(len(chunk) <= 500 for chunk in chunks)
    for sentence in sentences:
        assert any(sentence in chunk for chunk in chunks)
    overlapping = sum(chunks[i].split(". ")[0] in chunks[i - 1] for i in range(1, len(chunks)))
    assert overlapping >= len(chunks) // 2


# -- documents and retrieval -------------------------------------------------------------------------


def test_identical_content_is_stored_once(conn):
    first, created = knowledge.add(conn, "A", "Same words here.")
    again, created_again = knowledge.add(conn, "B", "Same words here.")
    assert (created, created_again) == (True, False)
    assert again["document_id"] == first["document_id"]
    assert knowledge.page(conn, 10, 0)[1] == 1


def test_document_without_text_is_invalid(conn):
    with pytest.raises(store.Invalid):
        knowledge.add(conn, "Empty", " \n\n ")


def test_delete_removes_chunks_from_the_index(conn):
    document, _ = knowledge.add(conn, "Cats", "Cats sleep sixteen hours a day.")
    knowledge.add(conn, "Dogs", "Dogs sleep twelve hours a day.")
    assert len(knowledge.search(conn, "sleep")) == 2
    knowledge.delete(conn, document["document_id"])
    assert [p.title for p in knowledge.search(conn, "sleep")] == ["Dogs"]
    assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 1
    conn.execute("INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)")
    with pytest.raises(store.NotFound):
        knowledge.delete(conn, document["document_id"])


def test_paging(conn):
    ids = [knowledge.add(conn, f"Doc {i}", f"text number {i}")[0]["document_id"] for i in range(5)]
    page, total = knowledge.page(conn, 2, 1)
    assert total == 5
    assert [d["document_id"] for d in page] == ids[1:3]
    assert "content" not in page[0]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("How long do cats sleep?", '"long" OR "cats" OR "sleep"'),
        ('cats" OR "dogs', '"cats" OR "dogs"'),
        ("cats* -dogs NEAR(a b)", '"cats" OR "dogs" OR "near"'),
        ("AND OR NOT", ""),
        ("cats OR dogs NOT birds", '"cats" OR "dogs" OR "birds"'),
        ("🙂🙂", ""),
        ("the of and", ""),
        ("Crème brûlée", '"crème" OR "brûlée"'),
    ],
)
def test_match_expression(text, expected):
    assert knowledge.match_expression(text) == expected


HOSTILE = [
    '"',
    '""',
    "'",
    "*",
    "cats*",
    "-",
    "-cats",
    "NEAR",
    "NEAR(cats dogs, 2)",
    "OR",
    "cats OR",
    "AND NOT",
    "(((",
    ")))",
    "(cats",
    "^cats",
    "cats:dogs",
    "content:cats",
    "{cats dogs}",
    "🙂 cats 🐈",
    "\x00cats",
    "cats\u200bdogs",
    "x" * 5000,
    " ".join(f"word{i}" for i in range(500)),
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_queries_never_raise(conn, text):
    knowledge.add(conn, "Cats", "Cats and dogs sleep a lot.")
    assert isinstance(knowledge.search(conn, text), list)


def test_retrieval_finds_the_passage_that_answers(conn):
    topics = ["gardening", "astronomy", "cooking", "cycling", "chess", "pottery", "sailing", "jazz", "hiking", "baking"]
    for i in range(50):
        topic = topics[i % len(topics)]
        body = "\n\n".join(
            f"Notes on {topic}, part {i}. Paragraph {j} covers ordinary {topic} practice and routine."
            for j in range(8)
        )
        if i == 37:
            body += "\n\nMy grandmother's secret sourdough starter is named Bubbles and lives in the blue jar."
        knowledge.add(conn, f"{topic.title()} notes {i}", body, chunk_chars=300)
    passages = knowledge.search(conn, "What is the name of my grandmother's sourdough starter?", top_k=3)
    assert passages[0].title == "Jazz notes 37"  # topic 37 % 10
    assert "Bubbles" in passages[0].content
    assert knowledge.search(conn, "quantum chromodynamics") == []
