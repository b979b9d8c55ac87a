from flask import Blueprint

bp = Blueprint("flash", __name__)
