import os
import threading

from flask import Blueprint, current_app, request

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.get("/config/<key>")
def config_value(key):
    return {"value": current_app.config.get(key)}


@user_services_routes.get("/whoami")
def whoami():
    return {"pid": os.getpid(), "thread": threading.current_thread().name}


@user_services_routes.post("/fail")
def fail():
    raise RuntimeError("user code failed on purpose")


@user_services_routes.post("/json")
def json_body():
    return {"got": request.get_json()}
