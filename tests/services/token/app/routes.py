from flask import Blueprint, request

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.get("/whoami")
def whoami():
    """Say who the runtime says called."""
    return {"user": request.headers.get("X-Forwarded-User")}
