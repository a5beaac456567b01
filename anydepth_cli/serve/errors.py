"""The server's error answers: a status and one line of JSON."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An answer other than 200: its status, a one-line message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """One line of JSON: {"error": message}."""
    return JSONResponse({"error": " ".join(message.split())}, status, headers=headers)
