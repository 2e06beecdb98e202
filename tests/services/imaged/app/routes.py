"""A user route that shows what the image gives the service: packages, user, Flask config."""
import os

import six
from flask import Blueprint, current_app

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.get("/inside")
def inside():
    """What the service sees inside its container.
    ---
    get:
      responses:
        200:
          description: package version, user ids and one Flask setting
    """
    return {"six": six.__version__, "uid": os.getuid(), "gid": os.getgid(),
            "flask_greeting": current_app.config.get("GREETING"), "cwd": os.getcwd()}
