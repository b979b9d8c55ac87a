from flask_wtf import FlaskForm
from wtforms import BooleanField, DateTimeLocalField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired


class GradeForm(FlaskForm):
    # Range-checked against the assignment's maximum by release.parse_score, as the API is.
    score = StringField("Score", render_kw={"type": "number", "min": 0, "step": "any"})
    feedback = TextAreaField("Feedback", render_kw={"rows": 3})


class ReleaseNowForm(FlaskForm):
    # Students are told and emailed at once; a mis-click must not do that.
    confirm = BooleanField(
        "Yes, show every student their mark now and email it to them",
        validators=[DataRequired(message="Tick the box to confirm the release.")],
    )


class WithdrawReleaseForm(FlaskForm):
    pass


class ScheduleReleaseForm(FlaskForm):
    release_at = DateTimeLocalField(
        "Release at", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
        validators=[InputRequired(message="Choose a date and time.")],
    )


class CancelReleaseForm(FlaskForm):
    pass
