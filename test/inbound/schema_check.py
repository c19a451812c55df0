#!/usr/bin/env python3
"""Validates inbound events against docs/schemas/inbound/<type>.json.

Reads a JSON array of events from the file given as argument and prints one
line per event: "valid", "invalid <json pointer>" or "unknown-type".
Exit status 3 when the jsonschema module is missing (the caller skips).
"""
import json
import os
import sys

try:
    import jsonschema
except ImportError:
    sys.exit(3)

top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
schemas = {}
for name in os.listdir(os.path.join(top, "docs", "schemas", "inbound")):
    with open(os.path.join(top, "docs", "schemas", "inbound", name)) as f:
        schemas[name[:-len(".json")]] = json.load(f)

with open(sys.argv[1]) as f:
    events = json.load(f)
for ev in events:
    schema = schemas.get(ev.get("type")) if isinstance(ev, dict) else None
    if schema is None:
        print("unknown-type")
        continue
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(ev), key=lambda e: list(e.absolute_path))
    if errors:
        print("invalid /" + "/".join(str(p) for p in errors[0].absolute_path))
    else:
        print("valid")
