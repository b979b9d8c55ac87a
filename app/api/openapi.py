from flask import jsonify

from app.api import bp

ERROR = {"$ref": "#/components/schemas/Error"}


def _error_responses(*codes):
    return {
        str(code): {"description": "Error", "content": {"application/json": {"schema": ERROR}}}
        for code in codes
    }


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


RELEASE = {"type": "object", "properties": {
    "assignment_id": {"type": "integer"},
    "state": {"type": "string", "enum": ["unscheduled", "scheduled", "releasing", "released"]},
    "release_at": {"type": "string", "format": "date-time", "nullable": True},
    "released_at": {"type": "string", "format": "date-time", "nullable": True},
}}

ID_PARAM = {"in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}

_TIME = {"type": "string", "format": "date-time"}
_EMAIL = {"type": "string", "format": "email"}
INBOUND_DATA = {
    "course.created": {"required": ["code", "title"], "properties": {
        "code": {"type": "string", "maxLength": 32}, "title": {"type": "string"},
        "timezone": {"type": "string", "description": "e.g. Europe/London; UTC if left out"}}},
    "enrolment.added": {"required": ["email", "course"], "properties": {
        "email": _EMAIL, "course": {"type": "string", "description": "the course code"},
        "role": {"type": "string", "enum": ["student", "staff"], "default": "student"},
        "name": {"type": "string", "description": "for an account created by this message"}}},
    "enrolment.removed": {"required": ["email", "course"], "properties": {
        "email": _EMAIL, "course": {"type": "string"}}},
    "extension.granted": {"required": ["email", "assignment_id", "due_at"], "properties": {
        "email": _EMAIL, "assignment_id": {"type": "integer"}, "due_at": _TIME,
        "cutoff_at": {**_TIME, "nullable": True,
                      "description": "required when the assignment has a cut-off"},
        "reason": {"type": "string", "maxLength": 500}}},
    "extension.withdrawn": {"required": ["email", "assignment_id"], "properties": {
        "email": _EMAIL, "assignment_id": {"type": "integer"}}},
    "student.renamed": {"required": ["email", "name"], "properties": {
        "email": _EMAIL, "name": {"type": "string", "maxLength": 120}}},
    "student.email_changed": {"required": ["email", "new_email"], "properties": {
        "email": _EMAIL, "new_email": _EMAIL}},
}

MESSAGE_PROPERTIES = {
    "id": {"type": "integer"},
    "conversation": {"type": "string", "example": "assignment.7",
                     "description": "course.<id>, assignment.<id>, or "
                                    "course.<id>.private.<student id>"},
    "course_id": {"type": "integer"},
    "assignment_id": {"type": "integer", "nullable": True},
    "student_id": {"type": "integer", "nullable": True,
                   "description": "The student of a private thread"},
    "author": {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"},
        "staff": {"type": "boolean"}}},
    "body": {"type": "string", "description": "Plain text as typed"},
    "html": {"type": "string",
             "description": "The body escaped, with http(s) links made "
                            "clickable (rel=\"noopener nofollow ugc\")"},
    "created_at": {"type": "string", "format": "date-time"},
    "pinned": {"type": "boolean"},
    "hidden": {"type": "boolean"},
}

MESSAGE_PAGE_PARAMS = [
    {"in": "query", "name": "before", "required": False, "schema": {"type": "integer"},
     "description": "Only messages older than this message id: the next page back. Without "
                    "it, the newest page, and reading it marks the conversation read."},
    {"in": "query", "name": "limit", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 30}},
]


def _conversation(summary, *params):
    """GET a page of a conversation's history, POST a message to it."""
    return {
        "get": {
            "summary": f"A page of {summary}, oldest first",
            "parameters": [*params, *MESSAGE_PAGE_PARAMS],
            "responses": {"200": _json(_ref("MessagePage")), **_error_responses(400, 401, 404)},
        },
        "post": {
            "summary": f"Post to {summary}; live for everyone following it",
            "parameters": list(params),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["body"],
                "properties": {
                    "body": {"type": "string", "maxLength": 2000,
                             "description": "Plain text; http(s) links are made clickable"},
                    "pin": {"type": "boolean", "default": False,
                            "description": "Staff: pin it as the announcement, and send it to "
                                           "every student of the course as a flash message"},
                }}}}},
            "responses": {"201": _json(_ref("Message"), "Posted"),
                          **_error_responses(400, 401, 403, 404, 429)},
        },
    }

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "Submissions API", "version": "1"},
    "servers": [{"url": "/api/v1"}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "Assignment": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "course": {"type": "string"},
                    "title": {"type": "string"},
                    "due_at": {"type": "string", "format": "date-time",
                               "description": "The caller's own: an extension, if granted"},
                    "cutoff_at": {"type": "string", "format": "date-time", "nullable": True,
                                  "description": "The caller's own: an extension, if granted"},
                    "extended": {"type": "boolean",
                                 "description": "Whether the caller has an extension"},
                    "allowed_types": {"type": "array", "items": {"type": "string"}},
                    "max_size_mb": {"type": "integer"},
                    "max_score": {"type": "integer"},
                    "open": {"type": "boolean"},
                    "grades_released": {"type": "boolean"},
                },
            },
            "Message": {
                "type": "object",
                "required": ["id", "conversation", "author", "body", "html", "created_at",
                             "pinned", "hidden"],
                "properties": MESSAGE_PROPERTIES,
            },
            "PinnedMessage": {"type": "object", "nullable": True,
                              "description": "The conversation's announcement, if one is pinned",
                              "properties": MESSAGE_PROPERTIES},
            "MessagePage": {
                "type": "object",
                "required": ["conversation", "messages", "has_older", "pinned"],
                "properties": {
                    "conversation": {"type": "string"},
                    "messages": {"type": "array", "items": _ref("Message")},
                    "has_older": {"type": "boolean",
                                  "description": "Ask again with before=<first message id>"},
                    "pinned": _ref("PinnedMessage"),
                },
            },
            "Step": {
                "type": "object",
                "required": ["name", "status", "attempts", "detail"],
                "properties": {
                    "name": {"type": "string"},
                    "status": {"type": "string", "enum": [
                        "pending", "queued", "running", "retrying", "succeeded", "failed",
                        "skipped"]},
                    "attempts": {"type": "integer"},
                    "detail": {"type": "string"},
                    "error": {"type": "string", "nullable": True},
                },
            },
            "Grade": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "score": {"type": "number"},
                    "feedback": {"type": "string"},
                    "updated_at": {"type": "string", "format": "date-time"},
                },
            },
            "InboundMessage": {
                "type": "object",
                "required": ["message_id", "kind", "sent_at", "occurred_at", "sequence", "data"],
                "description": "Signed with HMAC-SHA256 of the raw body and ADMIN_SYNC_SECRET "
                               "(X-Signature: sha256=<hex>), as our records to that system "
                               "are. Changes to one thing (an enrolment, a student's extension "
                               "on an assignment, a student's name or email, a course) are "
                               "applied in the order of occurred_at, then sequence: an older "
                               "one arriving after a newer one changes nothing.",
                "properties": {
                    "message_id": {"type": "string", "maxLength": 100,
                                   "description": "Unique: sent again, it changes nothing"},
                    "kind": {"type": "string", "enum": list(INBOUND_DATA)},
                    "sent_at": {**_TIME, "description": "When this copy was sent: more than "
                                                        "5 minutes from our clock is refused"},
                    "occurred_at": {**_TIME,
                                    "description": "When the change was made in the records "
                                                   "system"},
                    "sequence": {"type": "integer", "minimum": 0,
                                 "description": "Orders changes made at the same instant"},
                    "data": {"oneOf": [
                        {"type": "object", "title": kind, **schema}
                        for kind, schema in INBOUND_DATA.items()]},
                },
            },
            "InboundReceipt": {
                "type": "object",
                "required": ["message_id", "state", "received_at"],
                "properties": {
                    "message_id": {"type": "string"},
                    "state": {"type": "string",
                              "enum": ["received", "applied", "superseded", "rejected"]},
                    "received_at": _TIME,
                },
            },
            "Submission": {
                "type": "object",
                "required": ["id", "assignment_id", "status", "filename", "size", "sha256",
                             "received_at", "late", "steps", "similarity", "thumbnail_url",
                             "grade"],
                "properties": {
                    "id": {"type": "integer"},
                    "assignment_id": {"type": "integer"},
                    "student_id": {"type": "integer"},
                    "status": {"type": "string", "enum": [
                        "received", "processing", "completed", "rejected", "needs_attention"]},
                    "status_detail": {"type": "string"},
                    "filename": {"type": "string"},
                    "size": {"type": "integer"},
                    "sha256": {"type": "string"},
                    "received_at": {"type": "string", "format": "date-time"},
                    "late": {"type": "boolean"},
                    "steps": {"type": "array", "items": _ref("Step")},
                    "similarity": {"type": "integer", "nullable": True},
                    "thumbnail_url": {"type": "string", "nullable": True},
                    "grade": _ref("Grade"),
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/tokens": {
            "post": {
                "summary": "Exchange email and password for a bearer token",
                "security": [],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["email", "password"],
                    "properties": {"email": {"type": "string"}, "password": {"type": "string"}},
                }}}},
                "responses": {
                    "201": _json({"type": "object", "required": ["token"],
                                  "properties": {"token": {"type": "string"}}}, "Created"),
                    **_error_responses(400, 401, 429),
                },
            }
        },
        "/assignments": {
            "get": {
                "summary": "The caller's assignments",
                "responses": {
                    "200": _json({"type": "object", "properties": {
                        "assignments": {"type": "array", "items": _ref("Assignment")}}}),
                    **_error_responses(401),
                },
            }
        },
        "/assignments/{assignment_id}/submissions": {
            "post": {
                "summary": "Submit a file",
                "parameters": [
                    {**ID_PARAM, "name": "assignment_id"},
                    {"in": "header", "name": "Idempotency-Key", "required": False,
                     "description": "Names this upload to this assignment: resending it here "
                                    "returns the first submission, with Idempotent-Replayed: "
                                    "true. The same key sent to another assignment is a new "
                                    "upload there.",
                     "schema": {"type": "string", "maxLength": 100}},
                ],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }}}},
                "responses": {
                    "202": {**_json(_ref("Submission"), "Accepted; processing continues"),
                            "headers": {"Idempotent-Replayed": {
                                "description": "true when an earlier upload with this "
                                               "Idempotency-Key is returned",
                                "schema": {"type": "string", "enum": ["true"]}}}},
                    **_error_responses(400, 401, 403, 404, 413, 415, 429, 503),
                },
            }
        },
        "/courses/{course_id}/messages": _conversation(
            "the course's conversation (its students and staff)",
            {**ID_PARAM, "name": "course_id"}),
        "/assignments/{assignment_id}/messages": _conversation(
            "the assignment's conversation (the course's students and staff)",
            {**ID_PARAM, "name": "assignment_id"}),
        "/courses/{course_id}/private/{student_id}/messages": _conversation(
            "a student's private thread with the course's staff",
            {**ID_PARAM, "name": "course_id"}, {**ID_PARAM, "name": "student_id"}),
        "/messages/{message_id}": {
            "patch": {
                "summary": "Hide or show again, pin or unpin a message (the course's staff)",
                "parameters": [{**ID_PARAM, "name": "message_id"}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"hidden": {"type": "boolean"}, "pinned": {"type": "boolean"}},
                }}}},
                "responses": {"200": _json(_ref("Message")),
                              **_error_responses(400, 401, 404, 409)},
            }
        },
        "/messages/{message_id}/read": {
            "post": {
                "summary": "Mark the message's conversation read up to this message",
                "parameters": [{**ID_PARAM, "name": "message_id"}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "conversation": {"type": "string"},
                    "last_read_id": {"type": "integer"}}}),
                    **_error_responses(401, 404)},
            }
        },
        "/flash/{flash_id}/ack": {
            "post": {
                "summary": "Acknowledge that a flash message has been shown (idempotent)",
                "parameters": [{**ID_PARAM, "name": "flash_id"}],
                "responses": {
                    "200": _json({"type": "object", "required": ["id", "acked_at"],
                                  "properties": {
                                      "id": {"type": "integer"},
                                      "acked_at": {"type": "string", "format": "date-time"}}}),
                    **_error_responses(400, 401, 404),
                },
            }
        },
        "/submissions/{submission_id}": {
            "get": {
                "summary": "A submission with its processing steps",
                "parameters": [{**ID_PARAM, "name": "submission_id"}],
                "responses": {"200": _json(_ref("Submission")), **_error_responses(401, 404)},
            }
        },
        "/submissions/{submission_id}/grade": {
            "put": {
                "summary": "Save a mark (staff of the course); students see it once released",
                "parameters": [{**ID_PARAM, "name": "submission_id"}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["score"],
                    "properties": {"score": {"type": "number", "minimum": 0},
                                   "feedback": {"type": "string", "maxLength": 10000}},
                }}}},
                "responses": {
                    "200": _json({"type": "object", "properties": {
                        "submission_id": {"type": "integer"}, "score": {"type": "number"},
                        "max_score": {"type": "integer"}, "feedback": {"type": "string"},
                        "marker": {"type": "string", "nullable": True},
                        "updated_at": {"type": "string", "format": "date-time"},
                        "released": {"type": "boolean"}}}),
                    **_error_responses(400, 401, 404, 409),
                },
            }
        },
        "/inbound/records": {
            "post": {
                "summary": "A message from the student-records system (machine to machine); "
                           "recorded at once and applied by a worker",
                "security": [],
                "parameters": [{"in": "header", "name": "X-Signature", "required": True,
                                "description": "sha256=<hex HMAC-SHA256 of the raw body with "
                                               "ADMIN_SYNC_SECRET>",
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("InboundMessage")}}},
                "responses": {
                    "202": _json(_ref("InboundReceipt"), "Recorded; a worker applies it"),
                    "200": {**_json(_ref("InboundReceipt"),
                                    "This message id was recorded before; nothing new"),
                            "headers": {"Idempotent-Replayed": {
                                "schema": {"type": "string", "enum": ["true"]}}}},
                    **_error_responses(400, 401, 413, 503),
                },
            }
        },
        "/assignments/{assignment_id}/release": {
            "post": {
                "summary": "Release grades now, or schedule the release for `at` (staff)",
                "parameters": [{**ID_PARAM, "name": "assignment_id"}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"at": {"type": "string", "format": "date-time",
                                          "description": "With a UTC offset; omit for now"}},
                }}}},
                "responses": {
                    "200": _json(RELEASE, "Already released; nobody is told twice"),
                    "202": _json(RELEASE, "Release queued or scheduled"),
                    **_error_responses(400, 401, 404, 409),
                },
            },
            "delete": {
                "summary": "Cancel a scheduled release (staff)",
                "parameters": [{**ID_PARAM, "name": "assignment_id"}],
                "responses": {"200": _json(RELEASE), **_error_responses(401, 404, 409)},
            },
        },
    },
}


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(DOCUMENT)
