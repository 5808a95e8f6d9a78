"""``python -m service [FLAGS]`` runs the API server; ``python -m service worker [FLAGS]`` a training worker.

Flags and ``EMBED_*`` environment variables come from one settings class each (``service.config``).
"""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from service.config import Settings, WorkerSettings
from trainer.card import CardError, read_card

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        sys.exit(worker_main(args[1:]))
    serve_main(args)


def serve_main(args: list[str]) -> None:
    import uvicorn

    from service.app import create_app

    try:
        settings = Settings(_cli_parse_args=args)  # type: ignore[call-arg]
    except ValidationError as exc:
        sys.exit(f"invalid settings:\n{exc}")
    if settings.model is not None:
        try:  # the same check start-up makes, but answered with one line instead of a traceback
            read_card(settings.model)
        except CardError as exc:
            sys.exit(f"error: --model {settings.model}: {exc}")
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
    )


def worker_main(args: list[str]) -> int:
    """Run queued training jobs until SIGTERM (``--once``: until the queue is empty)."""
    from service.worker import run_worker

    once = "--once" in args
    try:
        settings = WorkerSettings(_cli_parse_args=[a for a in args if a != "--once"])  # type: ignore[call-arg]
    except ValidationError as exc:
        sys.exit(f"invalid settings:\n{exc}")
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    run_worker(settings, once=once)
    return 0


if __name__ == "__main__":
    main()
