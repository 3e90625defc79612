#!/usr/bin/env python3
"""The known false positives of the conformance run, applied to the bundled spec.

Each entry below is either an error in the spec files (the spec's own text says more than its
OpenAPI definitions do) or an operation this node does not build, by decision. The run's checks
apply to everything else unchanged. Review an entry before adding one: a deviation of the node
belongs in the node, not here.

    python3 tests/conformance/overlay.py BUNDLE.json OUT.json
"""

import json
import sys

ERROR = {
    "type": "object",
    "required": ["errcode"],
    "properties": {"errcode": {"type": "string"}, "error": {"type": "string"}},
}

# The spec's general rules let any request fail with a standard error response: 400 for a body or
# parameter the server cannot use (M_BAD_JSON, M_NOT_JSON, M_INVALID_PARAM: the OpenAPI types of
# ids and tokens are plain strings, so a schema-valid request can still name a malformed id or an
# unknown token), 401 for a missing or unknown token, and 403 (M_FORBIDDEN) for an action the
# caller may not take. Most operations list some of these, few list all three.
GENERAL_ERRORS = ["400", "401", "403"]

# An operation that "uses the User-Interactive Authentication API" (so its text says) answers 401
# with the authentication response, which some files leave out (`keys/device_signing/upload`
# lists no 401), and 401 with a plain error for a bad token, which the others leave out.
UIA_MARK = "User-Interactive Authentication API"
UIA_TEMPLATE = ("post", "/_matrix/client/v3/delete_devices")

# Any request that names a resource (an event, a room, a user) may find none: 404 M_NOT_FOUND is
# among the spec's common error codes. Never M_UNRECOGNIZED, which says the endpoint is not built
# (see NOT_BUILT).
NOT_FOUND = {
    "type": "object",
    "required": ["errcode"],
    "properties": {"errcode": {"type": "string", "not": {"const": "M_UNRECOGNIZED"}}, "error": {"type": "string"}},
}

# Media downloads answer with the stored file's own type; the spec's `application/octet-stream`
# stands for "any type".
ANY_CONTENT_TYPE = [
    ("get", "/_matrix/client/v1/media/download/{serverName}/{mediaId}"),
    ("get", "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}"),
    ("get", "/_matrix/media/v3/download/{serverName}/{mediaId}"),
    ("get", "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}"),
]

# Not built, by decision: these answer 404 M_UNRECOGNIZED (405 where the path serves another
# method), as the spec has a server answer an endpoint it does not implement, and the run checks
# that they do.
NOT_BUILT = {
    "third-party ids (accounts come from policy files; README feature table)": [
        ("post", "/_matrix/client/v3/account/3pid"),
        ("post", "/_matrix/client/v3/account/3pid/add"),
        ("post", "/_matrix/client/v3/account/3pid/bind"),
        ("post", "/_matrix/client/v3/account/3pid/delete"),
        ("post", "/_matrix/client/v3/account/3pid/unbind"),
        ("post", "/_matrix/client/v3/account/3pid/email/requestToken"),
        ("post", "/_matrix/client/v3/account/3pid/msisdn/requestToken"),
        ("post", "/_matrix/client/v3/account/password/email/requestToken"),
        ("post", "/_matrix/client/v3/account/password/msisdn/requestToken"),
        ("post", "/_matrix/client/v3/register/email/requestToken"),
        ("post", "/_matrix/client/v3/register/msisdn/requestToken"),
    ],
    "single sign-on (the node offers password login only)": [
        ("get", "/_matrix/client/v3/login/sso/redirect"),
        ("get", "/_matrix/client/v3/login/sso/redirect/{idpId}"),
        ("post", "/_matrix/client/v1/login/get_token"),
    ],
    "deprecated since v1.0 or 1.1 and unused by current clients": [
        ("get", "/_matrix/client/v3/events"),
        ("get", "/_matrix/client/v3/events/{eventId}"),
        ("get", "/_matrix/client/v3/initialSync"),
        ("get", "/_matrix/client/v3/rooms/{roomId}/initialSync"),
    ],
    "asynchronous media upload (clients upload in one request)": [
        ("post", "/_matrix/media/v1/create"),
        ("put", "/_matrix/media/v3/upload/{serverName}/{mediaId}"),
    ],
}

UNRECOGNIZED = {
    "type": "object",
    "required": ["errcode"],
    "properties": {"errcode": {"const": "M_UNRECOGNIZED"}, "error": {"type": "string"}},
}


def operation(doc, method, path):
    try:
        return doc["paths"][path][method]
    except KeyError:
        raise SystemExit(f"overlay names {method.upper()} {path}, which the bundle does not have")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    doc = json.load(open(sys.argv[1], encoding="utf-8"))
    uia = operation(doc, *UIA_TEMPLATE)["responses"]["401"]["content"]["application/json"]["schema"]
    for item in doc["paths"].values():
        for op in item.values():
            responses = op.setdefault("responses", {})
            if UIA_MARK in op.get("description", ""):
                responses["401"] = {
                    "description": "authentication needed, or a bad token",
                    "content": {"application/json": {"schema": {"anyOf": [uia, ERROR]}}},
                }
            for status in GENERAL_ERRORS:
                responses.setdefault(
                    status,
                    {"description": "standard error", "content": {"application/json": {"schema": ERROR}}},
                )
            responses.setdefault(
                "404", {"description": "not found", "content": {"application/json": {"schema": NOT_FOUND}}}
            )
    for method, path in ANY_CONTENT_TYPE:
        ok = operation(doc, method, path)["responses"]["200"]
        ok["content"] = {"*/*": ok["content"].pop("application/octet-stream")}
    for reason, operations in NOT_BUILT.items():
        for method, path in operations:
            for status in ["404", "405"]:
                operation(doc, method, path)["responses"][status] = {
                    "description": "not built: " + reason,
                    "content": {"application/json": {"schema": UNRECOGNIZED}},
                }
    json.dump(doc, open(sys.argv[2], "w", encoding="utf-8"))


if __name__ == "__main__":
    main()
