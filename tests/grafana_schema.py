"""Validates Grafana dashboards against Grafana's published dashboard schema, in the form a
package ships it: the `grafana-foundation-sdk` models, generated from Grafana's CUE kinds.

For each file: decode it with `Dashboard.from_json`, encode it again and report every key the
schema does not know (it is dropped on the way) and every value whose type the schema's type
hints refuse (enums by value, literals, lists, nested models). Prints one line per problem and
exits 1 when there is any; usage: grafana_schema.py FILE.json...
"""

import enum
import json
import sys
import typing

from grafana_foundation_sdk.cog import encoder
from grafana_foundation_sdk.models import dashboard as schema

# `id` is Grafana's instance-local database id: files carry `null`, and the SDK omits a None.
NULL_OK = {"id"}


def dropped(before, after, path):
    """Keys present in `before` that did not survive the round trip."""
    out = []
    if isinstance(before, dict):
        if not isinstance(after, dict):
            return [f"{path}: not an object in the schema"]
        for key, value in before.items():
            if key not in after:
                if not (value is None and key in NULL_OK):
                    out.append(f"{path}.{key}: not in the schema")
            else:
                out += dropped(value, after[key], f"{path}.{key}")
    elif isinstance(before, list) and isinstance(after, list):
        for i, (b, a) in enumerate(zip(before, after)):
            out += dropped(b, a, f"{path}[{i}]")
    return out


def type_ok(value, hint):
    """Whether `value` (as decoded by the SDK) fits the type hint `hint`."""
    if hint is typing.Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        return any(type_ok(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(type_ok(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(type_ok(v, args[1]) for v in value.values()))
    if hint is type(None):
        return value is None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if isinstance(hint, type) and isinstance(value, dict) and hasattr(hint, "from_json"):
        # The SDK leaves some nested models as plain JSON (panel transformations): decode
        # them with the schema's class, which must keep every key.
        try:
            model = hint.from_json(value)
        except Exception:
            return False
        back = json.loads(json.dumps(model, cls=encoder.JSONEncoder))
        return not dropped(value, back, "") and not wrong_types(model, "")
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def wrong_types(obj, path):
    """Walks the decoded models and checks every attribute against its type hint."""
    out = []
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            out += wrong_types(v, f"{path}[{i}]")
        return out
    if not hasattr(obj, "__dict__") or isinstance(obj, enum.Enum):
        return out
    try:
        hints = typing.get_type_hints(type(obj), vars(sys.modules[type(obj).__module__]))
    except Exception:  # a model whose hints do not resolve is not checked field by field
        hints = {}
    for name, value in vars(obj).items():
        hint = hints.get(name)
        if hint is not None and value is not None and not type_ok(value, hint):
            out.append(f"{path}.{name}: {value!r} is not {hint}")
        out += wrong_types(value, f"{path}.{name}")
    return out


def main(paths):
    problems = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        try:
            model = schema.Dashboard.from_json(data)
        except Exception as e:  # the SDK refuses the shape outright
            problems.append(f"{path}: does not decode: {type(e).__name__}: {e}")
            continue
        back = json.loads(json.dumps(model, cls=encoder.JSONEncoder))
        problems += [f"{path}: {p}" for p in dropped(data, back, "")]
        problems += [f"{path}: {p}" for p in wrong_types(model, "")]
        print(f"{path}: {len(data.get('panels', []))} panels checked")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
