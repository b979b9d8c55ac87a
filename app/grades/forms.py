from flask_wtf import FlaskForm
from wtforms import BooleanField, DateTimeLocalField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional


class GradeForm(FlaskForm):
    # Range-checked against the assignment's maximum by marks.parse_score, as the API is.
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


class CourseTimeInput(DateTimeLocalField):
    """A wall-clock time in the course's time zone, from the browser's date-and-time input."""

    FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]

    def __init__(self, label=None, validators=None, **kwargs):
        super().__init__(label, validators, format=self.FORMATS, **kwargs)

    def process_formdata(self, valuelist):
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError("Enter a date and time, such as 2030-07-01 17:00.") from None


class ExtensionForm(FlaskForm):
    # Choices are the course's students, set by the view; app.deadlines checks the enrolment.
    student_id = SelectField("Student", coerce=int, validate_choice=False,
                             validators=[InputRequired(message="Choose a student.")])
    due_at = CourseTimeInput("New due time",
                             validators=[InputRequired(message="Choose the new due time.")])
    cutoff_at = CourseTimeInput("New cut-off", validators=[Optional()])
    reason = StringField("Reason (seen by staff only)", validators=[Length(max=500)])


class WithdrawExtensionForm(FlaskForm):
    pass
