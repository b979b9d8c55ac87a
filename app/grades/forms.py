from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, StringField, TextAreaField
from wtforms.validators import InputRequired


class GradeForm(FlaskForm):
    # Range-checked against the assignment's maximum by release.parse_score, as the API is.
    score = StringField("Score", render_kw={"type": "number", "min": 0, "step": "any"})
    feedback = TextAreaField("Feedback", render_kw={"rows": 3})


class ReleaseNowForm(FlaskForm):
    pass


class ScheduleReleaseForm(FlaskForm):
    release_at = DateTimeLocalField(
        "Release at", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
        validators=[InputRequired(message="Choose a date and time.")],
    )


class CancelReleaseForm(FlaskForm):
    pass
