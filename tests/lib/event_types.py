"""event_types.py - checks events against their one schema, src/lua/event_fields.def.

    from event_types import check
    check(event_type, fields)   # raises AssertionError naming the field whose type is wrong

Used by the integration tests on `imgq events --json` lines and on webhook payloads' data.
"""
import os

_DEF = os.path.join(os.environ.get("IMGQ_SOURCE_DIR") or
                    os.path.join(os.path.dirname(__file__), "..", ".."),
                    "src", "lua", "event_fields.def")
TYPES = {}
for line in open(_DEF):
    if line.strip() and not line.startswith("#"):
        event, field, kind = line.split()
        TYPES[(event, field)] = kind


def field_type(event, field):
    return TYPES.get((event, field)) or TYPES.get(("*", field)) or "string"


def check(event, fields):
    for k, v in fields.items():
        t = field_type(event, k)
        if t == "int":
            ok = v is None or (isinstance(v, int) and not isinstance(v, bool))
        elif t == "json":
            ok = isinstance(v, (dict, list))
        else:
            ok = isinstance(v, str)
        assert ok, f"{event}: field {k} should be {t}, is {v!r}"
