from flask import Blueprint

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.get("/hello")
def hello():
    """Say which version of this file serves.
    ---
    get:
      responses:
        200:
          description: the version
    """
    return {"version": 1}
