def init_app(app):
    """Flask-Admin views are registered here."""
