from kernel import create_app


def test_healthz(client):
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_with_a_ready_backend(client):
    assert client.get("/readyz").get_json() == {"status": "ready", "backend": "echo"}


def test_readyz_with_an_unreachable_upstream(tmp_path):
    app = create_app({"KERNEL_BACKEND": "openai", "KERNEL_UPSTREAM_URL": "http://127.0.0.1:9/v1"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "backend_unavailable"
    assert app.test_client().get("/healthz").status_code == 200
