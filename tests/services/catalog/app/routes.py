"""Catalog: a blueprint with a url_prefix and a nested one, each URL converter, one view with
several methods, a MethodView, marshmallow components, seed-style `required: true`, integer
response codes and a docstring without `---`. Handlers trust the runtime's body validation."""
import datetime
import threading

from flask import Blueprint, request
from flask.views import MethodView

user_services_routes = Blueprint("user_services_routes", __name__, url_prefix="/catalog")
admin = Blueprint("admin", __name__, url_prefix="/admin")

ITEMS: dict = {}
LOCK = threading.Lock()


@user_services_routes.route("/items", methods=["GET", "POST"])
def items():
    """List or add items.
    ---
    get:
      parameters:
        - in: query
          name: limit
          schema: {type: integer, minimum: 1, maximum: 100}
      responses:
        200:
          description: the items
          content:
            application/json:
              schema:
                type: array
                items: {$ref: '#/components/schemas/ItemSchema'}
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: ItemSchema
      responses:
        201:
          description: the new item
          content:
            application/json:
              schema: ItemSchema
        400:
          description: the body does not match ItemSchema
          content:
            application/json:
              schema: ErrorSchema
    """
    if request.method == "GET":
        limit = request.args.get("limit", default=10, type=int)
        with LOCK:
            return {"items": list(ITEMS.values())[:limit]}
    body = request.get_json()
    with LOCK:
        item = {"id": len(ITEMS) + 1, "name": body["name"], "price": body["price"]}
        ITEMS[item["id"]] = item
    return item, 201


@user_services_routes.route("/items/<int:item_id>", methods=["GET", "PUT", "DELETE"])
def item(item_id):
    """One item; its path parameter is left for the runtime to fill in.
    ---
    get:
      responses:
        200:
          description: the item
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ItemSchema'}
        404:
          description: no such item
    put:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ItemSchema'}
      responses:
        200: {description: updated}
        404: {description: no such item}
    delete:
      responses:
        204: {description: deleted}
        404: {description: no such item}
    """
    with LOCK:
        found = ITEMS.get(item_id)
        if found is None:
            return {"error": "no such item"}, 404
        if request.method == "PUT":
            found.update(name=request.get_json()["name"], price=request.get_json()["price"])
            return found
        if request.method == "DELETE":
            del ITEMS[item_id]
            return "", 204
    return found


@user_services_routes.post("/items/<int:item_id>/reviews")
def review(item_id):
    """Review an item.
    ---
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: ReviewSchema
      responses:
        201: {description: stored}
    """
    body = request.get_json()
    return {"item": item_id, "stars": int(body["stars"])}, 201


@user_services_routes.get("/prices/<float:amount>")
def price(amount):
    """A price with tax.
    ---
    get:
      responses:
        200: {description: the price with tax}
    """
    return {"with_tax": round(amount * 1.2, 2)}


@user_services_routes.get("/files/<path:subpath>")
def file(subpath):
    """A path with slashes in it.
    ---
    get:
      responses:
        200: {description: the path}
    """
    return {"path": subpath}


@user_services_routes.get("/orders/<uuid:order_id>")
def order(order_id):
    """An order by its UUID.
    ---
    get:
      responses:
        200: {description: the order}
    """
    return {"order": str(order_id)}


@user_services_routes.post("/orders")
def create_order():
    """Place an order (properties marked the old way).
    ---
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                item_id: {type: integer, required: true}
                quantity: {type: integer, minimum: 1, required: true}
                note: {type: string, nullable: true, required: false}
      responses:
        201:
          description: placed
          content:
            application/json:
              schema:
                type: object
                properties:
                  total: {type: integer, required: true}
        400: {description: bad order}
    """
    body = request.get_json()
    return {"total": body["quantity"] * 2, "item_id": body["item_id"]}, 201


@user_services_routes.get("/tags/<string:tag>")
def tag(tag):
    """Items by tag.
    ---
    get:
      responses:
        200: {description: the tag}
    """
    return {"tag": tag}


@user_services_routes.get("/users/<name>")
def user(name):
    """A user; the path parameter is declared here by hand.
    ---
    get:
      parameters:
        - in: path
          name: name
          required: true
          schema: {type: string}
          description: the user's name
      responses:
        200: {description: the user}
    """
    return {"user": name}


@user_services_routes.get("/sort/<any(asc, desc):direction>")
def sort(direction):
    """Items sorted.
    ---
    get:
      responses:
        200: {description: sorted items}
    """
    return {"direction": direction}


@user_services_routes.get("/codes/<string(length=2):code>")
def country(code):
    """A two-letter code.
    ---
    get:
      responses:
        200: {description: the code}
    """
    return {"code": code}


@user_services_routes.get("/signed/<int(signed=True):delta>")
def signed(delta):
    """A signed integer.
    ---
    get:
      responses:
        200: {description: the delta}
    """
    return {"delta": delta}


@user_services_routes.post("/strict")
def strict():
    """A body with no extra fields allowed.
    ---
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [label]
              additionalProperties: false
              properties:
                label: {type: string}
                weight: {type: number}
      responses:
        200: {description: accepted}
    """
    return {"label": request.get_json()["label"]}


@user_services_routes.post("/events")
def event():
    """An event with a date-time and a nullable note.
    ---
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                when: {type: string, format: date-time, required: true}
                note: {type: string, nullable: true}
      responses:
        201: {description: stored}
    """
    body = request.get_json()
    when = datetime.datetime.fromisoformat(body["when"])
    return {"year": when.year, "note": body.get("note")}, 201


@user_services_routes.get("/search")
def search():
    """Search items.
    ---
    get:
      parameters:
        - {in: query, name: q, required: true, schema: {type: string}}
        - {in: query, name: page, schema: {type: integer, minimum: 1}}
      responses:
        200: {description: matches}
    """
    query = request.args.get("q", "")
    with LOCK:
        return {"matches": [i for i in ITEMS.values() if query in i["name"]]}


class CartView(MethodView):
    """A cart, documented per method."""

    def get(self, cart_id):
        """Read a cart.
        ---
        responses:
          200: {description: the cart}
        """
        return {"cart": cart_id, "items": []}

    def post(self, cart_id):
        """Add to a cart.
        ---
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                properties:
                  item_id: {type: integer, required: true}
        responses:
          201: {description: added}
        """
        return {"cart": cart_id, "added": request.get_json()["item_id"]}, 201


user_services_routes.add_url_rule("/carts/<int:cart_id>", view_func=CartView.as_view("cart"))


@admin.get("/stats")
def stats():
    """Counts of things.
    ---
    get:
      responses:
        200: {description: the counts}
    """
    with LOCK:
        return {"items": len(ITEMS)}


@admin.post("/reindex")
def reindex():
    """Rebuild the search index.

    Documented without a YAML part: summary and description only.
    """
    return {"reindexed": True}


user_services_routes.register_blueprint(admin)
