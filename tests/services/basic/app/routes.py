from flask import Blueprint, request

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.post("/echo")
def echo():
    """Echo the JSON body.
    ---
    post:
      responses:
        200:
          description: the body
    """
    return {"echo": request.get_json()}
