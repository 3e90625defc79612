#!/usr/bin/env python3
"""Bundle the Matrix spec's Client-Server OpenAPI files into one self-contained JSON document.

The spec (matrix-org/matrix-spec) keeps one OpenAPI file per endpoint group under
data/api/client-server/, each with its own base path and with `$ref`s into shared definition
files. Schemathesis needs one document, so this script merges the groups (prefixing each path
with its group's base path) and inlines every `$ref`.

    python3 tests/conformance/bundle.py MATRIX_SPEC_CHECKOUT VERSION OUT.json

It needs PyYAML. The output is committed (CI cannot reach GitHub); run this again to move the
conformance run to another spec version.
"""

import json
import sys
from pathlib import Path

import yaml


def load(path, cache):
    path = path.resolve()
    if path not in cache:
        with open(path, encoding="utf-8") as f:
            cache[path] = yaml.safe_load(f)
    return cache[path]


def pointer(doc, fragment):
    node = doc
    for part in filter(None, fragment.split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def inline(node, base, cache, stack):
    """Replace every $ref below `node` (read from file `base`) by what it points at."""
    if isinstance(node, list):
        return [inline(item, base, cache, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target, _, fragment = node["$ref"].partition("#")
        file = (base.parent / target).resolve() if target else base
        key = (file, fragment)
        if key in stack:
            raise SystemExit(f"circular $ref {node['$ref']} in {base}")
        resolved = inline(pointer(load(file, cache), fragment), file, cache, stack | {key})
        # Siblings of a $ref (allowed in OpenAPI 3.1) refine what it points at.
        siblings = {k: inline(v, base, cache, stack) for k, v in node.items() if k != "$ref"}
        if siblings and isinstance(resolved, dict):
            return {**resolved, **siblings}
        return resolved
    return {key: inline(value, base, cache, stack) for key, value in node.items()}


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    spec, version, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    cache = {}
    paths, schemes = {}, {}
    for file in sorted((spec / "data/api/client-server").glob("*.yaml")):
        doc = load(file, cache)
        if "paths" not in doc:
            continue
        base_path = doc["servers"][0]["variables"]["basePath"]["default"]
        for name, scheme in doc.get("components", {}).get("securitySchemes", {}).items():
            schemes[name] = inline(scheme, file, cache, frozenset())
        for path, item in doc["paths"].items():
            full = base_path + path.strip()
            merged = paths.setdefault(full, {})
            for method, operation in inline(item, file, cache, frozenset()).items():
                # Two operations are documented twice, told apart in the YAML by a trailing
                # space in the path: `/events` (old sync, and peeking with `room_id`) and
                # `/rooms/{roomId}/invite` (by user id, and by third-party id). The spaced one
                # wins: peeking's superset of parameters, and the invite by user id (third-party
                # ids are not built).
                if method in merged and path == path.strip():
                    continue
                merged[method] = operation
    bundle = {
        "openapi": "3.1.0",
        "info": {
            "title": "Matrix Client-Server API",
            "version": version,
            "description": "Bundled from matrix-org/matrix-spec " + version
            + " (Apache License 2.0) by tests/conformance/bundle.py.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": schemes},
    }
    out.write_text(json.dumps(bundle, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    operations = sum(len(item) for item in paths.values())
    print(f"{out}: {len(paths)} paths, {operations} operations")


if __name__ == "__main__":
    main()
