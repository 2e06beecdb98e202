"""Your HTTP routes, served beside the built-in predict, health and docs routes.

Add routes to the Blueprint `user_services_routes`. /docs and /docs/specs.json are built from
each route's docstring: the text after the `---` line is OpenAPI YAML keyed by the HTTP method
(`post:`, `get:` ...). Without that key the route shows up with no operation. Refer to a
Schema of app/schemas.py as `$ref: '#/components/schemas/<ClassName>'`.
"""
from flask import Blueprint, abort, request
from marshmallow import ValidationError

from app.schemas import AddNumbers

user_services_routes = Blueprint("user_services_routes", __name__)


@user_services_routes.post("/add-numbers")
def add_numbers():
    """Add two numbers.
    ---
    post:
      summary: Add two numbers
      description: Answers num1 + num2.
      requestBody:
        required: true
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/AddNumbers'
      responses:
        200:
          description: The sum.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/AddNumbersResult'
        400:
          description: The body is not two numbers num1 and num2.
    """
    body = request.get_json()
    try:
        AddNumbers().load(body)
    except ValidationError as err:
        abort(400, f"invalid body: {err.messages}")
    # The JSON numbers themselves: 2 + 5 answers 7, and 2.5 + 5 answers 7.5.
    return {"result": body["num1"] + body["num2"]}
