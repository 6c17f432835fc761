def test_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_create_experiment_flow(client, admin, make_experiment):
    exp = make_experiment()
    assert exp["status"] == "draft"
    assert exp["sample_size_per_variant"] in (14748, 14749, 14750)
    r = client.post("/v1/experiments/new-checkout/start", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "running"
