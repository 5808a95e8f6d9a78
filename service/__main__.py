"""``python -m service``: parse flags/env into Settings and run uvicorn (one process: one index)."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.config import Settings
from trainer.card import CardError, read_card


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)  # type: ignore[call-arg]
    except ValidationError as exc:
        sys.exit(f"invalid settings:\n{exc}")
    if settings.model is not None:
        try:  # the same check start-up makes, but answered with one line instead of a traceback
            read_card(settings.model)
        except CardError as exc:
            sys.exit(f"error: --model {settings.model}: {exc}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
    )


if __name__ == "__main__":
    main()
