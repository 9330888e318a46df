"""Databricks-style API errors: `{"error_code": ..., "message": ...}` with the HTTP status that
Databricks (and MLflow's `mlflow/exceptions.py` table) pairs with each code."""

STATUS = {
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "MALFORMED_REQUEST": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "INVALID_STATE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "DIRECTORY_PROTECTED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "NOT_FOUND": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "FEATURE_DISABLED": 404,
    "CATALOG_DOES_NOT_EXIST": 404,
    "SCHEMA_DOES_NOT_EXIST": 404,
    "RESOURCE_CONFLICT": 409,
    "ALREADY_EXISTS": 409,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
}


class ApiError(Exception):
    """An error answered to the client as a Databricks JSON error body."""

    def __init__(self, error_code, message, status=None, headers=None):
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message
        self.status = status or STATUS.get(str(error_code), 500)
        self.headers = headers or {}

    def body(self):
        return {"error_code": self.error_code, "message": self.message}


def invalid(message):
    return ApiError("INVALID_PARAMETER_VALUE", message)


def not_found(message):
    return ApiError("RESOURCE_DOES_NOT_EXIST", message)


def no_endpoint(method, path):
    # Databricks' answer for a route it does not serve (the API path without the /api/2.0 prefix).
    short = path.split("?", 1)[0]
    for prefix in ("/api/2.0", "/api/2.1", "/api/3.0"):
        if short.startswith(prefix):
            short = short[len(prefix):]
            break
    return ApiError("ENDPOINT_NOT_FOUND", f"No API found for '{method} {short}'")
