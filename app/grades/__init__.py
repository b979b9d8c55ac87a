from flask import Blueprint

bp = Blueprint("grades", __name__)
