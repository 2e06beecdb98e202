from flask import Blueprint, abort, request

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.post("/echo")
def echo():
    """Echo the JSON body, the query and who called."""
    return {"body": request.get_json(), "query": request.args.to_dict(flat=False),
            "user": request.headers.get("X-Forwarded-User")}


@user_services_routes.get("/items/<path:name>")
def item(name):
    """Echo a path parameter, which may hold percent-encoded characters."""
    return {"name": name}


@user_services_routes.post("/add")
def add():
    """Add two numbers; 400 when they are not numbers."""
    body = request.get_json()
    if not all(isinstance(body.get(k), (int, float)) for k in ("num1", "num2")):
        abort(400, "num1 and num2 must be numbers")
    return {"result": body["num1"] + body["num2"]}
