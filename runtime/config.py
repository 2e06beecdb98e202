"""service.yaml: one declared table of settings that validates the file and yields its JSON Schema.

Every key of service.yaml is a `Setting` in `SETTINGS`, with its type, default and the values
it allows. `load_service` reads and checks a file against the table; `json_schema` derives the
schema that editors use from the same table, so the two never disagree.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from runtime.errors import ConfigError

SERVICE_FILE = "service.yaml"
ID_PATTERN = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
ID_RULE = "at most 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit"

#: size -> (CPUs, memory in GB, GPUs); `kiln run` and the builder's `docker run` line use it.
SIZES: dict[str, tuple[float, int, int]] = {
    "small": (1, 4, 0),
    "large": (4, 16, 0),
    "gpu": (8, 40, 1),
}

#: CUDA version -> default base image (NVIDIA's CUDA runtime with cuDNN) for the gpu target.
CUDA_IMAGES: dict[str, str] = {
    "11.8": "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04",
    "12.1": "nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04",
    "12.4": "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",
    "12.6": "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04",
    "12.8": "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04",
}

PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")


def check_id(value: str) -> str | None:
    """Return why `value` is not a valid service id, or None when it is."""
    if not isinstance(value, str) or not re.match(ID_PATTERN, value):
        return f"{value!r} is not a valid id: {ID_RULE}"
    return None


def _upper_keys(value: dict[str, Any]) -> str | None:
    lower = [k for k in value if not str(k).isupper()]
    if lower:
        return f"Flask reads upper-case keys only; {lower[0]!r} would be ignored"
    return None


@dataclass(frozen=True)
class Setting:
    """One key of service.yaml: its dotted name, type, default and what it allows."""

    key: str
    kind: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    validator: Callable[[Any], str | None] | None = None
    items: type | None = None  # element type of a list setting
    json_type: str | None = None  # override of the JSON Schema type name

    def check(self, value: Any) -> str | None:
        """Return what is wrong with `value` for this setting, or None."""
        # bool is an int in Python; a number setting must not take true/false.
        if isinstance(value, bool) and self.kind is not bool and bool not in _as_tuple(self.kind):
            return f"must be {_type_name(self.kind)}, got {value!r}"
        if not isinstance(value, self.kind):
            return f"must be {_type_name(self.kind)}, got {value!r}"
        if self.items is not None and any(not isinstance(v, self.items) for v in cast(list, value)):
            return f"must be a list of {_ITEM_NAMES.get(self.items, self.items.__name__)}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not allowed; allowed: {', '.join(map(str, self.choices))}"
        if self.validator is not None:
            return self.validator(value)
        return None


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


_ITEM_NAMES = {str: "strings", int: "integers", float: "numbers"}
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          list: "a list", dict: "a mapping"}


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(_NAMES.get(x, x.__name__) for x in _as_tuple(t))


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value!r}"


def _python(value: str) -> str | None:
    if value in PYTHON_VERSIONS:
        return None
    return f"{value!r} is not supported; allowed: {', '.join(PYTHON_VERSIONS)} (quote it: \"3.11\")"


def _unknown_key(value: dict[str, Any], allowed: tuple[str, ...], where: str) -> str | None:
    """The one-line problem for the first key of VALUE not in ALLOWED, else None."""
    unknown = next((key for key in value if key not in allowed), None)
    if unknown is None:
        return None
    return f".{unknown}: unknown key; allowed in {where}: {', '.join(allowed)}"


MODEL_KEYS = ("path", "class_path", "configuration", "method")


def _model(value: dict[str, Any]) -> str | None:
    """path | class_path (with configuration), and method: one line on what is wrong."""
    problem = _unknown_key(value, MODEL_KEYS, "model")
    if problem:
        return problem
    if ("path" in value) == ("class_path" in value):
        return ("needs one of path (a joblib or pickle file, or module:Class) or "
                "class_path (module:Class, built with configuration)")
    if "path" in value and (not isinstance(value["path"], str) or not value["path"]):
        return ".path: must be a file name in the service folder, or module:Class"
    if "class_path" in value:
        path = value["class_path"]
        module, _, name = (path.partition(":") if isinstance(path, str) and ":" in path
                           else str(path).rpartition("."))
        if not isinstance(path, str) or not module or not name.isidentifier():
            return f".class_path: {path!r} must be module:Class"
    if "configuration" in value:
        if "class_path" not in value:
            return ".configuration: needs class_path (the class it is passed to)"
        if not isinstance(value["configuration"], dict):
            return ".configuration: must be a mapping of the class's keyword arguments"
    method = value.get("method", "predict")
    if not isinstance(method, str) or not method.isidentifier():
        return f".method: {method!r} must be a method name, e.g. predict or predict_proba"
    return None


#: Signature algorithms auth.jwt may accept: public-key ones only (never `none` nor HMAC, whose
#: secret would be the provider's public key).
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                  "EdDSA")


def _url(value: str) -> str | None:
    if value.startswith(("https://", "http://")):
        return None
    return f"{value!r} is not an http(s) URL"


def _audience(value: str | list[Any]) -> str | None:
    if isinstance(value, list) and (not value or not all(isinstance(v, str) for v in value)):
        return "must be a string or a non-empty list of strings"
    return None


def _algorithms(value: list[str]) -> str | None:
    bad = [a for a in value if a not in JWT_ALGORITHMS]
    if bad or not value:
        return (f"{bad[0] if bad else 'an empty list'!r} is not allowed; "
                f"allowed: {', '.join(JWT_ALGORITHMS)}")
    return None


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value!r}"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else f"must be 1 or more, got {value!r}"


#: The keys of auth.jwt (the JWT of an identity provider), checked and documented as one table.
JWT_SETTINGS: tuple[Setting, ...] = (
    Setting("issuer", str, None, "The provider's `iss`, matched exactly."),
    Setting("audience", (str, list), None, "The `aud` tokens must carry: this service's client id "
            "(or a list of accepted ones).", validator=_audience, json_type="string"),
    Setting("jwks_url", str, None, "The provider's JWKS URL (its public keys); or keys_file.",
            validator=_url),
    Setting("keys_file", str, None, "A JWKS JSON file or a PEM public key, relative to the "
            "service folder; or jwks_url."),
    Setting("algorithms", list, ["RS256", "ES256"], "Accepted signature algorithms.",
            items=str, validator=_algorithms),
    Setting("leeway", (int, float), 0, "Seconds of clock skew allowed on exp, nbf and iat.",
            validator=_not_negative, json_type="number"),
    Setting("user_claim", str, "sub", "The claim that reaches your code as X-Forwarded-User."),
    Setting("predict_scopes", list, [], "Scopes (`scope` or `scp` claim) predict requires.",
            items=str),
)
JWT_REQUIRED = ("issuer", "audience")


def _jwt(value: dict[str, Any]) -> str | None:
    known = {s.key: s for s in JWT_SETTINGS}
    unknown = _unknown_key(value, tuple(known), "auth.jwt")
    if unknown:
        return unknown
    for key, given in value.items():
        problem = known[key].check(_as_read(known[key], given))
        if problem:
            return f".{key}: {problem}"
    for key in JWT_REQUIRED:
        if value.get(key) is None:
            return f".{key}: is required ({known[key].help})"
    if (value.get("jwks_url") is None) == (value.get("keys_file") is None):
        return "set one of jwks_url (the provider's keys) or keys_file (a local copy)"
    return None


def _as_read(setting: Setting, value: Any) -> Any:
    """VALUE as SETTING reads it: a YAML number where a string is expected becomes that string."""
    if setting.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def jwt_settings(value: dict[str, Any] | None) -> dict[str, Any]:
    """auth.jwt with every default filled in (an already validated mapping)."""
    out = {s.key: _copy(s.default) for s in JWT_SETTINGS}
    out.update({k: _as_read(BY_JWT[k], v) for k, v in (value or {}).items()})
    return out


#: Settings the runtime owns or that would run arbitrary code or exit the server.
REFUSED: dict[str, str] = {
    "bind": "the port is set by `kiln serve --host/--port` (0.0.0.0:8080 in an image)",
    "daemon": "kiln runs gunicorn in the foreground",
    "pidfile": "kiln manages the server process",
    "user": "the image sets the user", "group": "the image sets the user",
    "umask": "the image sets the user", "initgroups": "the image sets the user",
    "chdir": "kiln serves from the service folder", "pythonpath": "kiln sets the import path",
    "raw_env": "use FLASK_* variables or service.yaml flask:",
    "config": "settings come from service.yaml gunicorn:", "wsgi_app": "kiln builds the app",
    "paste": "kiln builds the app", "check_config": "it exits the server",
    "print_config": "it exits the server", "reload": "use `kiln serve --reload`",
    "reload_engine": "use `kiln serve --reload`", "reload_extra_files": "use `kiln serve --reload`",
    "spew": "it traces every line", "preload_app": "load() must run after fork, in each worker",
    **dict.fromkeys(("logconfig", "logconfig_dict", "logconfig_json", "logger_class"),
                    "kiln logs JSON lines (KILN_LOG_FORMAT=text for people)"),
}
REFUSED_PREFIXES = ("control_socket", "dirty_", "statsd_")
WORKER_CLASSES = ("sync", "gthread", "gevent")  # gevent: when installed (predict.batch)




def gunicorn_problem(key: str, value: Any, *, allow_bind: bool = False) -> str | None:
    """What is wrong with gunicorn setting KEY=VALUE for kiln: not a setting, kiln's, a hook."""
    from gunicorn.config import Config

    settings = Config().settings
    if key not in settings:
        return "not a gunicorn setting"
    if key == "bind" and allow_bind:
        return None
    if key in REFUSED:
        return f"may not be set here: {REFUSED[key]}"
    if key.startswith(REFUSED_PREFIXES):
        return "may not be set here"
    if settings[key].section == "Server Hooks":
        return "server hooks may not be set"
    if key == "worker_class" and value not in WORKER_CLASSES:
        return f"{value!r} is not allowed; allowed: {', '.join(WORKER_CLASSES)}"
    try:
        Config().set(key, value)
    except Exception as err:  # noqa: BLE001 - gunicorn's validators raise TypeError or ValueError
        return str(err)
    return None


def _gunicorn(value: dict[str, Any]) -> str | None:
    for key, setting in value.items():
        name = str(key).lower().replace("-", "_")
        problem = gunicorn_problem(name, setting)
        if problem:
            return f".{key}: {problem}"
    return None


#: DNS-1123 subdomain: the names of Kubernetes Secrets and namespaces (namespaces: a label).
K8S_NAME = r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$"
K8S_LABEL = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
REPLICAS_KEYS = ("min", "max")
#: deploy.replicas when service.yaml leaves it, or one of its keys, out.
REPLICAS_DEFAULT = {"min": 1, "max": 3}
TARGET_KEYS = ("cpu_percent", "concurrency")


def _registry(value: str) -> str | None:
    if "://" in value or not re.match(r"^[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9._/-]+)?$", value):
        return (f"{value!r} is not HOST[:PORT][/NAMESPACE], e.g. registry.example.com/team "
                f"(no scheme, no tag)")
    return None


def _namespace(value: str) -> str | None:
    return None if re.match(K8S_LABEL, value) else (
        f"{value!r} is not a Kubernetes namespace: at most 63 characters of a-z, 0-9 and '-'")


def _k8s_names(value: list[str]) -> str | None:
    bad = [v for v in value if not re.match(K8S_NAME, v)]
    return (f"{bad[0]!r} is not a Kubernetes object name: a-z, 0-9, '-' and '.', "
            f"starting and ending with a letter or digit") if bad else None


def _whole(key: str, value: Any, least: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        return f".{key}: must be a whole number of at least {least}, got {value!r}"
    return None


def _replicas(value: dict[str, Any]) -> str | None:
    """{min, max}: min 0 or more (0 scales to zero, knative only), max at least 1 and min."""
    merged = {**REPLICAS_DEFAULT, **value}
    low, high = merged["min"], merged["max"]
    problem = (_unknown_key(value, REPLICAS_KEYS, "replicas")
               or _whole("min", low, 0) or _whole("max", high, 1))
    if problem:
        return problem
    if high < low:
        return f".max: must be at least min ({low}), got {high}"
    return None


def _target(value: dict[str, Any]) -> str | None:
    """{cpu_percent (1-100: the HPA's CPU target), concurrency (requests per pod: knative)}."""
    problem = (_unknown_key(value, TARGET_KEYS, "target")
               or _whole("cpu_percent", value.get("cpu_percent", 70), 1))
    if problem or value.get("cpu_percent", 70) > 100:
        return problem or f".cpu_percent: must be 1 to 100, got {value['cpu_percent']!r}"
    if value.get("concurrency") is not None:
        return _whole("concurrency", value["concurrency"], 1)
    return None


SETTINGS: tuple[Setting, ...] = (
    Setting("id", str, None, "Service id: DNS-safe name used in URLs, images and metrics.",
            validator=check_id),
    Setting("title", str, None, "Human title shown in /docs."),
    Setting("version", str, "0.1.0", "Service version shown in /docs and image labels."),
    Setting("description", str, "", "What the service does, shown in /docs."),
    Setting("target", str, "cpu", "Image target.", choices=("cpu", "gpu")),
    Setting("size", str, "small", "Resources: small (1 CPU, 4 GB), large (4 CPU, 16 GB), "
            "gpu (8 CPU, 40 GB, 1 GPU).", choices=tuple(SIZES)),
    Setting("python", str, "3.11", "Python version of the image.", validator=_python),
    Setting("packages", list, [], "pip requirements installed into the image, and only these.",
            items=str),
    Setting("system_packages", list, [], "Debian/Ubuntu packages installed with apt.", items=str),
    Setting("cuda", str, "12.4", "CUDA version for the gpu target.", choices=tuple(CUDA_IMAGES)),
    Setting("model", dict, None, "Saved model the runtime loads: {path: model.joblib} "
            "(joblib, pickle, or module:Class), or {class_path: module:Class, configuration: "
            "{...}}; method: what predict calls (default predict).", validator=_model),
    Setting("predict.timeout", (int, float), 60, "Seconds one prediction may take before 504.",
            validator=_positive, json_type="number"),
    Setting("predict.accepts_file", bool, False, "Input is base64, decoded to a temporary file "
            "whose path predict() receives."),
    Setting("predict.batch.max_size", int, None, "Adaptive batching (with predict_batch, or a "
            "model): at most this many requests in one call (32 when predict.batch is set).",
            validator=_at_least_one),
    Setting("predict.batch.max_latency_ms", (int, float), None, "Adaptive batching: "
            "milliseconds to wait for more requests after a batch's first (5 when predict.batch "
            "is set).", validator=_not_negative, json_type="number"),
    Setting("flask", dict, {}, "Key-value pairs set on Flask's app.config.", validator=_upper_keys),
    Setting("gunicorn", dict, {}, "Key-value gunicorn settings; bind may not be set here.",
            validator=_gunicorn),
    Setting("auth.mode", str, "none", "Who may call the service.",
            choices=("none", "token", "sigv4", "jwt")),
    Setting("auth.jwt", dict, None, "auth.mode jwt: the identity provider whose tokens are "
            "accepted.", validator=_jwt),
    Setting("auth.docs_public", bool, True, "/docs and /docs/specs.json stay open when auth is on."),
    Setting("docs", bool, True, "Serve /docs and /docs/specs.json."),
    Setting("metrics.public", bool, False, "/metrics stays open when auth is on."),
    Setting("capture.dir", str, "captures", "Folder for captured requests and responses."),
    Setting("capture.bodies", bool, True, "Capture request and response bodies, not only metadata."),
    Setting("deploy.registry", str, None, "HOST[:PORT]/NAMESPACE that `kiln push` pushes to and "
            "`kiln deploy` takes the image from.", validator=_registry),
    Setting("deploy.namespace", str, None, "Kubernetes namespace of the manifests "
            "[the current context's].", validator=_namespace),
    Setting("deploy.replicas", dict, dict(REPLICAS_DEFAULT), "Pods: {min, max}; min 0 (scale to "
            "zero) with --format knative only.", validator=_replicas),
    Setting("deploy.target", dict, {"cpu_percent": 70}, "Autoscaling target: {cpu_percent: "
            "the HPA's CPU use, concurrency: requests per pod (knative)}.", validator=_target),
    Setting("deploy.secrets", list, [], "Kubernetes Secrets whose keys become environment "
            "variables (KILN_AUTH_* and the like); their values are never written.",
            items=str, validator=_k8s_names),
    Setting("deploy.image_pull_secrets", list, [], "Secrets the cluster pulls the image with.",
            items=str, validator=_k8s_names),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
BY_JWT: dict[str, Setting] = {s.key: s for s in JWT_SETTINGS}
#: Sections whose keys are the settings' dotted children (flask and gunicorn are free mappings).
SECTIONS: dict[str, list[str]] = {}
for _s in SETTINGS:
    # predict.batch.max_size: predict holds batch, and predict.batch holds max_size.
    _parts = _s.key.split(".")
    for _depth in range(1, len(_parts)):
        _names = SECTIONS.setdefault(".".join(_parts[:_depth]), [])
        if _parts[_depth] not in _names:
            _names.append(_parts[_depth])
#: What a setting of an optional section takes when the section is written without it.
SECTION_DEFAULTS: dict[str, Any] = {"predict.batch.max_size": 32,
                                    "predict.batch.max_latency_ms": 5}
REQUIRED = ("id",)
#: Sections that are off unless the file names them.
OPTIONAL_SECTIONS = ("capture",)


@dataclass
class ServiceConfig:
    """A validated service.yaml with every default filled in."""

    root: Path
    values: dict[str, Any] = field(default_factory=dict)
    present: frozenset[str] = frozenset()

    def get(self, key: str) -> Any:
        return self.values[key]

    @property
    def id(self) -> str:
        return str(self.values["id"])

    @property
    def title(self) -> str:
        return str(self.values["title"])

    @property
    def version(self) -> str:
        return str(self.values["version"])

    def enabled(self, section: str) -> bool:
        """Whether an optional section (capture) was written in the file."""
        return section in self.present

    @property
    def path(self) -> Path:
        return self.root / SERVICE_FILE


def parse_service(data: Any, source: str = SERVICE_FILE) -> dict[str, Any]:
    """Check a parsed service.yaml mapping against SETTINGS; return flat dotted values with defaults.

    Raises ConfigError with one line naming `source`, the key and what is allowed.
    """
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {problem}")

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of settings, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in SECTIONS:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise fail(key, f"must be a mapping with keys {', '.join(SECTIONS[key])}")
            _section(key, value, values, fail)
        elif key in BY_KEY:
            # `flask:` with nothing under it is an empty mapping, not an error.
            values[key] = {} if value is None and BY_KEY[key].default == {} else value
        else:
            allowed = sorted({s.key.split(".")[0] for s in SETTINGS})
            raise fail(key, f"unknown key; allowed: {', '.join(allowed)}")
    for key in REQUIRED:
        if values.get(key) is None:
            raise fail(key, f"is required ({BY_KEY[key].help})")
    for key, value in values.items():
        setting = BY_KEY[key]
        if setting.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            if key == "python":
                raise fail(key, f"{value!r} must be quoted, e.g. \"3.11\" (YAML reads 3.10 as 3.1)")
            value = values[key] = str(value)
        problem = setting.check(value)
        if problem:
            # A mapping's validator names the entry at fault as ".entry: problem".
            entry, _, said = problem.partition(": ")
            raise fail(key + entry, said) if problem.startswith(".") else fail(key, problem)
    out = {s.key: _copy(s.default) for s in SETTINGS}
    out.update(values)
    if out["auth.mode"] == "jwt" and out["auth.jwt"] is None:
        raise fail("auth.jwt", "is required when auth.mode is jwt (issuer, audience, jwks_url "
                               "or keys_file)")
    if out["title"] is None:
        out["title"] = out["id"]
    return out


def _section(key: str, value: dict[str, Any], values: dict[str, Any],
             fail: Callable[[str, str], ConfigError]) -> None:
    """Put the settings of section KEY's mapping VALUE (and its own sections) into VALUES."""
    for sub, subvalue in value.items():
        dotted = f"{key}.{sub}"
        if dotted in SECTIONS:
            if subvalue is None:
                subvalue = {}
            if not isinstance(subvalue, dict):
                raise fail(dotted, f"must be a mapping with keys {', '.join(SECTIONS[dotted])}")
            # Written at all, even empty, the section is on: its keys get their defaults.
            for name in SECTIONS[dotted]:
                default = SECTION_DEFAULTS.get(f"{dotted}.{name}")
                if default is not None:
                    values.setdefault(f"{dotted}.{name}", default)
            _section(dotted, subvalue, values, fail)
        elif dotted in BY_KEY:
            values[dotted] = subvalue
        else:
            raise fail(dotted, f"unknown key; allowed in {key}: {', '.join(SECTIONS[key])}")


def _copy(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (list, dict)) else value


def load_service(root: str | Path) -> ServiceConfig:
    """Read and validate ROOT/service.yaml."""
    root = Path(root)
    path = root / SERVICE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; a service folder holds a {SERVICE_FILE} "
                          f"(create one with `kiln new-service NAME`)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at "
                          f"offset {err.start}); save it as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read: {err.strerror or err}") from err
    present = frozenset(str(k) for k in data) if isinstance(data, dict) else frozenset()
    return ServiceConfig(root=root, values=parse_service(data, str(path)), present=present)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of service.yaml, derived from SETTINGS."""
    kinds = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
             dict: "object"}

    def prop(s: Setting) -> dict[str, Any]:
        out: dict[str, Any] = {"description": s.help}
        out["type"] = s.json_type or kinds[_as_tuple(s.kind)[0]]
        if s.choices:
            out["enum"] = list(s.choices)
        if s.items is not None:
            out["items"] = {"type": kinds[s.items]}
        if s.default not in (None, [], {}):
            out["default"] = s.default
        if s.key == "id":
            out["pattern"] = ID_PATTERN
            out["maxLength"] = 63
        if s.key == "python":
            out["enum"] = list(PYTHON_VERSIONS)
        if s.key == "audience":
            out["type"] = ["string", "array"]
            out["items"] = {"type": "string"}
        if s.key == "algorithms":
            out["items"] = {"type": "string", "enum": list(JWT_ALGORITHMS)}
        if s.key in ("deploy.replicas", "deploy.target"):
            keys = REPLICAS_KEYS if s.key == "deploy.replicas" else TARGET_KEYS
            out["properties"] = {k: {"type": "integer", "minimum": 0 if k == "min" else 1}
                                 for k in keys}
            out["additionalProperties"] = False
        if s.key == "auth.jwt":
            out["properties"] = {j.key: prop(j) for j in JWT_SETTINGS}
            out["required"] = list(JWT_REQUIRED)
            out["additionalProperties"] = False
        return out

    properties: dict[str, Any] = {}
    for s in SETTINGS:
        if "." in s.key:
            *sections, sub = s.key.split(".")
            block = {"properties": properties}
            for section in sections:
                block = block["properties"].setdefault(section, {
                    "type": "object", "properties": {}, "additionalProperties": False})
            block["properties"][sub] = prop(s)
        else:
            properties[s.key] = prop(s)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "kiln service.yaml",
        "type": "object",
        "required": list(REQUIRED),
        "properties": properties,
        "additionalProperties": False,
    }
