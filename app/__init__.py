import logging

from flask import Flask
from werkzeug.routing import IntegerConverter

from app.config import config_for_environment, database_url, engine_options


class RowId(IntegerConverter):
    """`<int:...>` in our URLs, at most 18 digits as in event topics: a longer number is no
    database id and would overflow the query, so its URL matches no route (404)."""

    regex = r"\d{1,18}"


def create_app(config=None):
    app = Flask(__name__, template_folder="../templates", instance_relative_config=False)
    app.config.from_object(config_for_environment())
    if config:
        app.config.from_mapping(config)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    app.config.setdefault("MAX_CONTENT_LENGTH", (app.config["MAX_UPLOAD_MB"] + 1) * 1024 * 1024)
    app.url_map.converters["int"] = RowId

    from app.extensions import csrf, db, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=app.config["MIGRATIONS_DIR"])
    csrf.init_app(app)
    login_manager.init_app(app)

    from app import auth, cli, errors, templating
    from app.admin import init_app as init_admin
    from app.api import JSONProvider
    from app.api import bp as api_bp
    from app.events import bp as events_bp
    from app.events import stream  # noqa: F401  (attaches the /events routes)
    from app.flash import bp as flash_bp
    from app.grades import bp as grades_bp
    from app.messages import bp as messages_bp
    from app.ops import bp as ops_bp
    from app.submissions import bp as submissions_bp

    app.register_blueprint(auth.bp)
    app.register_blueprint(submissions_bp)
    app.register_blueprint(grades_bp, url_prefix="/staff")
    app.register_blueprint(events_bp)
    app.register_blueprint(flash_bp)
    app.register_blueprint(messages_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    app.json = JSONProvider(app)
    csrf.exempt(api_bp)
    init_admin(app)
    errors.init_app(app)
    templating.init_app(app)
    cli.init_app(app)
    _configure_logging(app)
    return app


def _configure_logging(app):
    if not app.debug and not app.testing and not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        )
