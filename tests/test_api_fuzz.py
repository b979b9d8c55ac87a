"""The JSON API fuzzed from its own OpenAPI document: for every documented operation,
schemathesis generates requests that fit the document and requests that break it, sent
through the WSGI app with a real bearer token, sometimes naming real objects. Every answer
must be documented (status, content type, body), never a 5xx, and a refused request writes
nothing."""

import io
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.extensions import db
from app.flash import send_flash
from app.models import ApiToken, Assignment, Event, FlashMessage, Grade, StepRun, Submission
from tests.conftest import PASSWORD, Auth

EXAMPLES_PER_MODE = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Operations only a course's staff can carry out; everything else is fuzzed as a student.
STAFF_PATHS = {"/submissions/{submission_id}/grade", "/assignments/{assignment_id}/release"}


def written():
    db.session.expire_all()
    return {
        "rows": [db.session.query(model).count()
                 for model in (Submission, StepRun, Event, Grade, ApiToken)],
        "acked flash": db.session.query(FlashMessage).filter(
            FlashMessage.acked_at.isnot(None)).count(),
        "releases": db.session.execute(
            db.select(Assignment.id, Assignment.release_at, Assignment.released_at)
            .order_by(Assignment.id)).all(),
    }


@pytest.fixture
def real_ids(app, client, world):
    """Ids of objects the fuzzer may name, so some requests get past the 404s."""
    alice = Auth(client).token("alice@uni.test")
    response = client.post(f"/api/v1/assignments/{world.essay.id}/submissions", headers=alice,
                           data={"file": (io.BytesIO(b"A real essay.\n"), "essay.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 202
    send_flash([world.users["alice"].id], "Fuzzing in progress")
    db.session.commit()
    return {
        "assignment_id": world.essay.id,
        "submission_id": response.get_json()["id"],
        "flash_id": db.session.execute(db.select(FlashMessage.id)).scalar_one(),
    }


def with_real_values(operation, mode, real_ids):
    """Generated cases, and in positive mode as many again that name real objects."""
    generated = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE:
        return generated
    known = {}
    names = {parameter.name for parameter in operation.path_parameters}
    if names:
        known["path_parameters"] = {name: real_ids[name] for name in names if name in real_ids}
    if operation.path == "/tokens":
        known["body"] = {"email": "alice@uni.test", "password": PASSWORD}
    if not known:
        return generated
    return st.one_of(generated, operation.as_strategy(generation_mode=mode, **known))


@pytest.mark.slow
def test_every_generated_request_gets_a_documented_answer_and_never_a_5xx(app, client, real_ids):
    # Set, as in production: the student-records route then refuses whoever cannot sign (401).
    app.config["ADMIN_SYNC_SECRET"] = "fuzz-records-secret"
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    tokens = {email: Auth(app.test_client()).token(email)
              for email in ("alice@uni.test", "sam@uni.test")}
    # Uploads last: a newer upload would make the real submission no longer the one to mark.
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda operation: operation.path.endswith("/submissions"))
    assert len(operations) >= 5
    for operation in operations:
        headers = tokens["sam@uni.test" if operation.path in STAFF_PATHS else "alice@uni.test"]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(with_real_values(operation, mode, real_ids), client, headers)


def fuzz(strategy, client, headers):
    @settings(max_examples=EXAMPLES_PER_MODE, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def answers_as_documented(case):
        before = written()
        # The suite's client, which forgets the last request's user, as a fresh request would.
        response = case.call(session=client, headers=headers)
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert written() == before, f"{case.method} {case.formatted_path}: refused but wrote"

    answers_as_documented()


def test_every_api_route_is_in_the_openapi_document(app, client):
    def shape(path):
        return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)

    document = client.get("/api/v1/openapi.json").get_json()
    documented = {(method.upper(), shape(path)) for path, operations in document["paths"].items()
                  for method in operations}
    routed = {(method, shape(rule.rule.removeprefix("/api/v1")))
              for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/v1/") and rule.endpoint != "api.openapi_document"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed - documented == set(), "API routes the fuzzer cannot see"
    assert documented - routed == set(), "documented operations that do not exist"


def test_json_nested_too_deeply_to_decode_is_a_400_everywhere(app, client, real_ids):
    nested = b"[" * 100_000 + b"]" * 100_000
    staff = Auth(app.test_client()).token("sam@uni.test")
    for method, path, headers in [
        ("POST", "/api/v1/tokens", {}),
        ("PUT", f"/api/v1/submissions/{real_ids['submission_id']}/grade", staff),
        ("POST", f"/api/v1/assignments/{real_ids['assignment_id']}/release", staff),
    ]:
        before = written()
        response = client.open(path, method=method, data=nested, headers=headers,
                               content_type="application/json")
        assert response.status_code == 400, path
        assert set(response.get_json()["error"]) == {"code", "message"}
        assert written() == before, path


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_release_time_at_the_ends_of_the_calendar_is_a_400(app, client, world, at):
    headers = Auth(client).token("sam@uni.test")
    before = written()
    response = client.post(f"/api/v1/assignments/{world.essay.id}/release", json={"at": at},
                           headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_release_time"
    assert written() == before


def test_score_too_long_for_a_float_is_a_400(app, client, world, real_ids):
    headers = Auth(client).token("sam@uni.test")
    before = written()
    response = client.put(f"/api/v1/submissions/{real_ids['submission_id']}/grade",
                          data=b'{"score": 1' + b"0" * 400 + b"}",
                          content_type="application/json", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_grade"
    assert written() == before
