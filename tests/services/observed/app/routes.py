"""Routes with a path parameter, a user log call and a user metric."""
import logging
import os
import time

from flask import Blueprint, request

import runtime

user_services_routes = Blueprint("user_services_routes", __name__)
log = logging.getLogger("observed.routes")


@user_services_routes.get("/items/<int:item_id>")
def item(item_id):
    return {"item": item_id, "pid": os.getpid()}


@user_services_routes.post("/log")
def log_route():
    log.info("user route says %s", request.get_json()["say"])
    return {"logged": True}


@user_services_routes.post("/metric")
def metric():
    body = request.get_json()
    runtime.log_metric(body["name"], body["value"], **body.get("labels", {}))
    return {"set": True, "pid": os.getpid()}


@user_services_routes.get("/slow")
def slow():
    log.info("slow request started")
    time.sleep(float(request.args.get("seconds", "30")))
    return {"slept": True}
