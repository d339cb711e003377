"""The OpenAPI 3 description of the node API, served at ``GET /v1/openapi.json``.

Hand-written rather than generated, so it says what matters to an application
author (units, ranges, the one-application rule). A test checks that every
route the server has is documented here and every documented path exists.
"""

from __future__ import annotations

import copy
from typing import Any, Final

__all__ = ["openapi_schema"]

_ERROR_CODES: Final = [
    "bad_json",
    "bad_request",
    "bad_frame",
    "bad_shape",
    "bad_dtype",
    "bad_app_id",
    "empty_body",
    "empty_batch",
    "out_of_range",
    "label_out_of_range",
    "non_finite",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "app_conflict",
    "learning_disabled",
    "store_full",
    "too_large",
    "batch_too_large",
    "unsupported_media_type",
    "internal",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


_AUTH_ERRORS: Final = {
    "401": _error("Missing or wrong bearer token."),
    "409": _error("Another application claimed this node (app_conflict)."),
}

_BATCH_ERRORS: Final = {
    "400": _error(
        "Bad batch: bad_json, bad_request, bad_frame, bad_shape, bad_dtype, empty_body, "
        "empty_batch, out_of_range, label_out_of_range, non_finite."
    ),
    **_AUTH_ERRORS,
    "409": _error(
        "app_conflict (another application owns the node), learning_disabled (no "
        "[learning] in the session) or store_full."
    ),
    "413": _error("too_large (body over the limit) or batch_too_large (too many samples)."),
    "415": _error("unsupported_media_type: use application/json or the tensor frame."),
}

_BATCH_BODY_DOC: Final = (
    "JSON, or a DeepGossip tensor frame (``application/x-deepgossip-tensors``, "
    "see deepgossip.wire.tensor) holding the same tensors by name."
)

_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["ok", "error"],
        "properties": {
            "ok": {"type": "boolean", "enum": [False]},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": _ERROR_CODES},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "Inputs": {
        "description": (
            "A batch of n samples: nested arrays shaped (n, H, W), (n, C, H, W) or flat "
            "(n, C*H*W), as the node's [learning] input_shape says. All JSON integers: "
            "pixel bytes 0..255. Otherwise: numbers in [0, 1]. NaN and Inf are refused."
        ),
        "type": "array",
        "minItems": 1,
        "items": {"type": "array"},
    },
    "TrainRequest": {
        "type": "object",
        "required": ["inputs", "labels"],
        "additionalProperties": False,
        "properties": {
            "inputs": _ref("Inputs"),
            "labels": {
                "description": "n class indices in [0, num_classes).",
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
            },
        },
    },
    "TrainResponse": {
        "type": "object",
        "required": ["ok", "accepted", "samples"],
        "properties": {
            "ok": {"type": "boolean", "enum": [True]},
            "accepted": {"type": "integer", "description": "Samples stored (all of the batch)."},
            "samples": {"type": "integer", "description": "Samples the node holds now."},
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": _ref("Inputs"),
            "probabilities": {"type": "boolean", "default": True},
        },
    },
    "PredictResponse": {
        "type": "object",
        "required": ["ok", "classes", "model_version"],
        "properties": {
            "ok": {"type": "boolean", "enum": [True]},
            "classes": {"type": "array", "items": {"type": "integer"}},
            "probabilities": {
                "description": "n rows of num_classes probabilities (omitted on request).",
                "type": "array",
                "items": {"type": "array", "items": {"type": "number"}},
            },
            "model_version": {"type": "integer"},
        },
    },
    "Learning": {
        "type": "object",
        "nullable": True,
        "description": "null when the session has no [learning] section.",
        "properties": {
            "model": {"type": "string"},
            "model_version": {"type": "integer"},
            "rounds": {"type": "integer"},
            "steps": {"type": "integer"},
            "merges": {"type": "integer"},
            "training": {"type": "boolean"},
            "samples": {"type": "integer", "description": "Samples held (durably stored)."},
            "train_samples": {"type": "integer"},
            "holdout_samples": {"type": "integer"},
            "holdout_accuracy": {"type": "number", "nullable": True},
            "accuracy_version": {"type": "integer", "nullable": True},
            "last_loss": {"type": "number", "nullable": True},
            "checkpoint_version": {"type": "integer", "nullable": True},
        },
    },
    "Trust": {
        "type": "object",
        "description": (
            "The node's defence against poisoned updates and its blacklist (the "
            "session's [defense] and [blacklist] tables; docs/api.md)."
        ),
        "required": ["defense", "blacklisted", "blacklisted_count", "updates_rejected"],
        "properties": {
            "defense": {
                "type": "string",
                "description": "The defence, e.g. auror+clipping; none without one.",
            },
            "blacklisted": {
                "type": "array",
                "items": {"type": "string"},
                "description": (
                    "Node ids (hex, sorted) of the peers this node ignores in mixing and "
                    "membership: its gossiped blacklist plus its detector's own verdicts."
                ),
            },
            "blacklisted_count": {"type": "integer"},
            "updates_rejected": {
                "type": "integer",
                "description": "Received model updates the defence dropped.",
            },
            "rejected_by_reason": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Those drops by reason: blacklisted, auror_flagged, robust, ...",
            },
            "blacklist": {
                "type": "object",
                "nullable": True,
                "description": (
                    "The gossiped blacklist's state (entries with why and how many "
                    "accusers, the quorum, counters); null when the node runs none."
                ),
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["ok", "id", "members", "traffic", "updates", "learning", "trust"],
        "properties": {
            "ok": {"type": "boolean", "enum": [True]},
            "id": {"type": "string", "description": "Node id (hex)."},
            "session": {"type": "string"},
            "address": {"type": "array", "items": {}},
            "incarnation": {"type": "integer"},
            "members": {
                "type": "object",
                "properties": {"live": {"type": "integer"}, "known": {"type": "integer"}},
            },
            "traffic": {
                "type": "object",
                "properties": {
                    "frames_in": {"type": "integer"},
                    "frames_out": {"type": "integer"},
                    "bytes_in": {"type": "integer"},
                    "bytes_out": {"type": "integer"},
                },
            },
            "updates": {
                "type": "object",
                "description": "Model updates exchanged with peers.",
                "properties": {
                    "sent": {"type": "integer"},
                    "received": {"type": "integer"},
                    "rejected": {"type": "integer"},
                    "merged": {"type": "integer"},
                },
            },
            "learning": _ref("Learning"),
            "trust": _ref("Trust"),
        },
    },
    "Members": {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "self": {"type": "string"},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "address": {"type": "array", "items": {}},
                        "state": {
                            "type": "string",
                            "enum": ["alive", "suspect", "dead", "left"],
                        },
                        "incarnation": {"type": "integer"},
                    },
                },
            },
        },
    },
}

_APP_HEADER_PARAM: Final = {
    "name": "X-DeepGossip-App",
    "in": "header",
    "required": False,
    "description": (
        "Application id (1-128 of letters, digits, ._:@/+-). The first request carrying "
        "one claims the node for that application for good; a different id gets 409."
    ),
    "schema": {"type": "string"},
}


def _json_ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_PATHS: Final[dict[str, Any]] = {
    "/v1/health": {
        "get": {
            "summary": "Liveness probe; the only request served without the token.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The API is up.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/v1/status": {
        "get": {
            "summary": (
                "Node id, membership, traffic, update counters, learning state, "
                "defence and blacklist."
            ),
            "responses": {"200": _json_ok("Status.", "Status"), **_AUTH_ERRORS},
        }
    },
    "/v1/members": {
        "get": {
            "summary": "This node's view of the membership.",
            "responses": {"200": _json_ok("Members.", "Members"), **_AUTH_ERRORS},
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document.",
            "responses": {
                "200": {
                    "description": "OpenAPI 3 schema.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/train": {
        "post": {
            "summary": "Store a labelled batch for local training.",
            "description": (
                "Answers ok only after the batch is written and fsync-ed: accepted data "
                "survives a crash. A batch is stored whole or not at all. " + _BATCH_BODY_DOC
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("TrainRequest")},
                    "application/x-deepgossip-tensors": {
                        "schema": {
                            "type": "string",
                            "format": "binary",
                            "description": "Tensors 'inputs' (uint8 or float32) and 'labels' "
                            "(integers).",
                        }
                    },
                },
            },
            "responses": {"200": _json_ok("Stored.", "TrainResponse"), **_BATCH_ERRORS},
        }
    },
    "/v1/predict": {
        "post": {
            "summary": "Classify a batch with the current model.",
            "description": (
                _BATCH_BODY_DOC + " With 'Accept: application/x-deepgossip-tensors' the "
                "answer is a tensor frame with 'classes' (int64) and 'probabilities' "
                "(float32)."
            ),
            "parameters": [
                {
                    "name": "probabilities",
                    "in": "query",
                    "required": False,
                    "description": "false: return only classes.",
                    "schema": {"type": "boolean", "default": True},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("PredictRequest")},
                    "application/x-deepgossip-tensors": {
                        "schema": {
                            "type": "string",
                            "format": "binary",
                            "description": "Tensor 'inputs' (uint8 or float32).",
                        }
                    },
                },
            },
            "responses": {
                "200": {
                    "description": "Predictions.",
                    "content": {
                        "application/json": {"schema": _ref("PredictResponse")},
                        "application/x-deepgossip-tensors": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                **_BATCH_ERRORS,
            },
        }
    },
}


def openapi_schema() -> dict[str, Any]:
    """A fresh copy of the schema (callers may modify it)."""
    paths = copy.deepcopy(_PATHS)
    for path, item in paths.items():
        if path != "/v1/health":
            for operation in item.values():
                operation.setdefault("parameters", []).append(dict(_APP_HEADER_PARAM))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "DeepGossip node API",
            "version": "1",
            "description": (
                "The application's door into its learning node. Every request except "
                "GET /v1/health carries 'Authorization: Bearer <token>' with the token "
                "from <data_dir>/api-token. Errors: {ok: false, error: {code, message}}."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:{port}", "variables": {"port": {"default": "0"}}}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
