"""/metrics is for staff and admins logged in, or a scraper with the configured bearer token;
nobody else reads how busy and how built the service is."""

from tests.helpers import logged_in


def test_metrics_refuse_anyone_not_logged_in_and_students(app, client, world):
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "submissions_" not in refused.get_data(as_text=True)
    assert logged_in(app, "alice@uni.test").get("/metrics").status_code == 403


def test_metrics_are_read_by_staff_and_admins(app, world):
    for email in ("sam@uni.test", "root@uni.test"):
        response = logged_in(app, email).get("/metrics")
        assert response.status_code == 200
        assert "submissions_" in response.get_data(as_text=True)


def test_a_scraper_reads_metrics_with_the_configured_token_only(app, client, world):
    app.config["METRICS_TOKEN"] = "s3cret-scrape-token"
    good = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
    assert good.status_code == 200 and "submissions_" in good.get_data(as_text=True)
    bad = client.get("/metrics", headers={"Authorization": "Bearer guessed"})
    assert bad.status_code == 401
