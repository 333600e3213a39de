import io

import pytest

DOCS = "/api/kernel2/documents"
NOTE = {"title": "Garden", "content": "Tomatoes need six hours of sun.\n\nWater them at the roots.", "source": "notes"}


def upload(client, admin, name, data, **form):
    return client.post(DOCS, data={"file": (io.BytesIO(data), name), **form}, headers=admin,
                       content_type="multipart/form-data")


def test_add_json(client, admin):
    response = client.post(DOCS, json=NOTE, headers=admin)
    assert response.status_code == 201
    document = response.get_json()
    assert document["title"] == "Garden" and document["source"] == "notes"
    assert document["chunk_count"] == 1
    assert document["size_bytes"] == len(NOTE["content"].encode())
    assert len(document["sha256"]) == 64


def test_identical_content_is_not_stored_twice(client, admin):
    first = client.post(DOCS, json=NOTE, headers=admin)
    again = client.post(DOCS, json={**NOTE, "title": "Another title"}, headers=admin)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["document_id"] == first.get_json()["document_id"]
    assert client.get(DOCS, headers=admin).get_json()["total"] == 1


@pytest.mark.parametrize(
    "name, form, title",
    [("garden.txt", {}, "garden"), ("Notes.MD", {}, "Notes"), ("x.md", {"title": "Chosen"}, "Chosen")],
)
def test_upload_text_files(client, admin, name, form, title):
    response = upload(client, admin, name, "Plant garlic in autumn.".encode(), **form)
    assert response.status_code == 201
    assert response.get_json()["title"] == title
    assert response.get_json()["source"] == name


@pytest.mark.parametrize(
    "name, data, status",
    [
        ("report.pdf", b"%PDF-1.4", 415),
        ("picture.png", b"\x89PNG", 415),
        ("noextension", b"text", 415),
        ("latin1.txt", "café".encode("latin-1"), 415),
        ("empty.txt", b"   \n", 400),
    ],
)
def test_upload_rejections(client, admin, name, data, status):
    response = upload(client, admin, name, data)
    assert response.status_code == status
    assert response.get_json()["success"] is False


def test_upload_without_a_file_field(client, admin):
    response = client.post(DOCS, data={"other": "x"}, headers=admin, content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "file"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"title": "t"}, "content"),
        ({"content": "c"}, "title"),
        ({"title": "t", "content": "   "}, "content"),
        ({"title": "", "content": "c"}, "title"),
        ({"title": "t", "content": "c", "extra": 1}, None),
    ],
)
def test_json_schema_errors(client, admin, body, param):
    response = client.post(DOCS, json=body, headers=admin)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param


def test_get_and_delete(client, admin):
    document = client.post(DOCS, json=NOTE, headers=admin).get_json()
    url = f"{DOCS}/{document['document_id']}"
    fetched = client.get(url, headers=admin).get_json()
    assert fetched["content"] == NOTE["content"]
    assert client.delete(url, headers=admin).status_code == 204
    assert client.get(url, headers=admin).status_code == 404
    assert client.delete(url, headers=admin).status_code == 404


def test_pagination(client, admin):
    ids = [client.post(DOCS, json={"title": f"d{i}", "content": f"text {i}"}, headers=admin).get_json()["document_id"]
           for i in range(7)]
    page = client.get(f"{DOCS}?limit=3&offset=2", headers=admin).get_json()
    assert (page["total"], page["limit"], page["offset"]) == (7, 3, 2)
    assert [d["document_id"] for d in page["data"]] == ids[2:5]
    assert client.get(DOCS, headers=admin).get_json()["limit"] == 50


@pytest.mark.parametrize(
    "query, param",
    [("limit=0", "limit"), ("limit=201", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"), ("offset=1.5", "offset")],
)
def test_bad_paging_is_400(client, admin, query, param):
    response = client.get(f"{DOCS}?{query}", headers=admin)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_needs_the_admin_key(client, method):
    path = DOCS if method != "delete" else f"{DOCS}/x"
    assert getattr(client, method)(path, json=NOTE).status_code == 401
