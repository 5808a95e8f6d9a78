"""orjson responses: numpy arrays serialise natively, without jsonable_encoder or pydantic in the way."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """JSON via orjson with numpy support; hot routes return it directly (FastAPI then skips validation)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
