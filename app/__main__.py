"""``python -m app``: validate settings, then serve with uvicorn.

Flags override the environment variables of the same meaning (see README's configuration table).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

FLAGS = {
    "--host": "SERVE_HOST",
    "--port": "AIP_HTTP_PORT",
    "--models": "SERVE_MODELS",
    "--default-model": "SERVE_DEFAULT_MODEL",
    "--workers": "SERVE_WORKERS",
    "--torch-threads": "SERVE_TORCH_THREADS",
    "--device": "SERVE_DEVICE",
    "--log-level": "SERVE_LOG_LEVEL",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve YOLO models.")
    for flag, env in FLAGS.items():
        parser.add_argument(flag, help=f"overrides ${env}")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    for flag, name in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            env[name] = value

    from app.config import Settings, SettingsError

    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"python -m app: {exc}", file=sys.stderr)
        return 2

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn

    from app.main import create_app

    failed = False
    server: uvicorn.Server | None = None

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=30,
        )
    )
    server.run()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
