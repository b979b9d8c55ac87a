from tests.conftest import PASSWORD, csrf_from
from tests.helpers import upload_api


def test_login_with_right_password_lands_on_my_assignments(client, auth, world):
    response = auth.login("alice@uni.test")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "My assignments" in page and "Essay" in page and "Sketch" not in page


def test_wrong_password_is_refused_with_a_clear_message(client, auth, world):
    response = auth.login("alice@uni.test", "not it")
    assert response.status_code == 401
    assert "do not match" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_form_without_csrf_token_is_refused(client, world):
    response = client.post("/login", data={"email": "alice@uni.test", "password": PASSWORD})
    assert response.status_code in (200, 400)
    assert client.get("/").status_code == 302


def test_pages_need_login_and_send_back_after(client, world):
    response = client.get(f"/assignments/{world.essay.id}")
    assert response.status_code == 302
    assert "/login?next=" in response.headers["Location"]


def test_login_does_not_redirect_to_another_site(client, world):
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login?next=https://evil.example/", data={
        "email": "alice@uni.test", "password": PASSWORD, "csrf_token": csrf_from(page)})
    assert response.headers["Location"] == "/"


def test_logout_needs_a_post_with_csrf(client, auth, world):
    auth.login("alice@uni.test")
    assert client.get("/logout").status_code == 405
    client.post("/logout", data={})
    assert client.get("/").status_code == 200
    page = client.get("/").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_from(page)})
    assert client.get("/").status_code == 302


def test_deactivated_user_cannot_log_in(client, auth, world):
    from app.extensions import db

    world.users["bob"].active = False
    db.session.commit()
    assert auth.login("bob@uni.test").status_code == 401


def test_a_bearer_token_names_the_caller_even_beside_a_session_cookie(client, auth, world):
    alice, bob = auth.token("alice@uni.test"), auth.token("bob@uni.test")
    alices = upload_api(client, alice, world.essay.id, b"Alice's essay.\n", "a.txt").get_json()
    bobs = upload_api(client, bob, world.essay.id, b"Bob's essay.\n", "b.txt").get_json()
    auth.login("alice@uni.test")  # the browser now carries Alice's session cookie

    assert client.get(f"/api/v1/submissions/{alices['id']}").status_code == 200
    # Bob's token makes the request Bob's, whatever cookie came with it.
    assert client.get(f"/api/v1/submissions/{bobs['id']}", headers=bob).status_code == 200
    assert client.get(f"/api/v1/submissions/{alices['id']}", headers=bob).status_code == 404
    # A token that is not valid is refused, not quietly replaced by the session.
    wrong = client.get(f"/api/v1/submissions/{alices['id']}",
                       headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    posted = upload_api(client, {"Authorization": "Bearer not-a-token"}, world.essay.id,
                        b"Sent without the CSRF token.\n", "c.txt")
    assert posted.status_code == 401
