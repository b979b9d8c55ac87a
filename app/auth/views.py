from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from app import ratelimit
from app.auth import bp
from app.extensions import commit_keeping_loaded, db, login_manager
from app.models import ApiToken, User, utcnow

login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."


@login_manager.user_loader
def load_user(user_id):
    if bearer_token(request.headers.get("Authorization", "")):
        # A request that names its caller with a token is that caller alone: the browser's
        # session cookie that came along does not count (nor spare it the token check).
        return None
    user = db.session.get(User, int(user_id))
    return user if user is not None and user.active else None


def bearer_token(header):
    """The token of an "Authorization: Bearer <token>" header, else an empty string."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@login_manager.request_loader
def load_user_from_bearer(req):
    user = user_for_bearer(req.headers.get("Authorization", ""))
    if user is not None:
        req.environ["submissions.auth"] = "bearer"
    return user


TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def user_for_bearer(header):
    token = bearer_token(header)
    if not token:
        return None
    row = db.session.execute(
        db.select(ApiToken).filter_by(token_hash=ApiToken.hash(token))
    ).scalar_one_or_none()
    if row is None or not row.user.active:
        return None
    now = utcnow()
    # Recorded to the minute: a write on every API call would cost the hot path a commit.
    if row.last_used_at is None or now - row.last_used_at > TOKEN_USE_RESOLUTION:
        row.last_used_at = now
        commit_keeping_loaded()
    return row.user


class TooManyAttempts(Exception):
    def __init__(self, wait):
        super().__init__(f"Too many login attempts; try again in {wait} s.")
        self.wait = wait


def authenticate(email, password):
    """The active user with these credentials, or None; TooManyAttempts when rate limited."""
    attempt_key = f"{(email or '').strip().lower()}|{request.remote_addr}"
    wait = ratelimit.wait_seconds("login", attempt_key, *current_app.config["LOGIN_RATE_LIMIT"])
    if wait:
        raise TooManyAttempts(wait)
    user = db.session.execute(
        db.select(User).filter_by(email=(email or "").strip().lower())
    ).scalar_one_or_none()
    if user is None or not user.active or not user.check_password(password or ""):
        return None
    return user


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


class LogoutForm(FlaskForm):
    pass


def _safe_next(target):
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/"):
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("submissions.index"))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = authenticate(form.email.data, form.password.data)
        except TooManyAttempts as exc:
            flash(str(exc), "error")
            return render_template("auth/login.html", form=form), 429, {
                "Retry-After": str(exc.wait)}
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")) or url_for("submissions.index"))
        flash("That email and password do not match an account.", "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    if LogoutForm().validate_on_submit():
        logout_user()
    return redirect(url_for("auth.login"))
