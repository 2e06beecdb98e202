from flask import Blueprint, request

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.get("/whoami")
def whoami():
    """Say who the runtime says called; any valid token will do.
    ---
    get:
      responses:
        200:
          description: The caller.
    """
    return {"user": request.headers.get("X-Forwarded-User")}


@user_services_routes.post("/reports")
def reports():
    """Needs the reports:write scope.
    ---
    post:
      security:
        - jwt: [reports:write]
      responses:
        200:
          description: Written.
    """
    return {"written": True, "user": request.headers.get("X-Forwarded-User")}
