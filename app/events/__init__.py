from flask import Blueprint

# The stream's routes are attached in create_app (app.events.stream), so that importing the
# publisher from jobs and services does not pull in the web layer.
bp = Blueprint("events", __name__)
