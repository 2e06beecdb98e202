"""One well documented route, and one route per broken docstring; all of them are served."""
from flask import Blueprint
from flask.views import MethodView

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.post("/good")
def good():
    """A route documented right.
    ---
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: ThingSchema
      responses:
        200: {description: ok}
    """
    return {"ok": True}


@user_services_routes.get("/invalid-yaml")
def invalid_yaml():
    """Invalid YAML.
    ---
    get:
      responses: [200: {description: ok}
    """
    return {"ok": True}


@user_services_routes.get("/scalar")
def scalar():
    """A scalar after the marker.
    ---
    just some words
    """
    return {"ok": True}


@user_services_routes.get("/two-documents")
def two_documents():
    """Two YAML documents.
    ---
    get:
      responses:
        200: {description: ok}
    ---
    get:
      summary: again
    """
    return {"ok": True}


@user_services_routes.get("/dangling-ref")
def dangling_ref():
    """A $ref to a schema that does not exist.
    ---
    get:
      responses:
        200:
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/NoSuchSchema'}
    """
    return {"ok": True}


@user_services_routes.get("/unknown-schema-name")
def unknown_schema_name():
    """A marshmallow schema name that no class has.
    ---
    get:
      responses:
        200:
          description: ok
          content:
            application/json:
              schema: MissingSchema
    """
    return {"ok": True}


@user_services_routes.post("/flasgger-style")
def flasgger_style():
    """Swagger 2 style, with no method key.
    ---
    parameters:
      - in: body
        name: body
        schema: {type: object}
    responses:
      200: {description: ok}
    """
    return {"ok": True}


@user_services_routes.get("/wrong-method")
def wrong_method():
    """Documents a method the route does not allow.
    ---
    get:
      responses:
        200: {description: ok}
    delete:
      responses:
        204: {description: gone}
    """
    return {"ok": True}


@user_services_routes.get("/method-scalar")
def method_scalar():
    """The operation is a scalar.
    ---
    get: fetch it
    """
    return {"ok": True}


class BrokenView(MethodView):
    def get(self):
        """A method view whose YAML does not parse.
        ---
        responses: {200: {description: ok}
        """
        return {"ok": True}


user_services_routes.add_url_rule("/method-view", view_func=BrokenView.as_view("broken_view"))
