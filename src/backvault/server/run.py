"""Run the server app under uvicorn until it is stopped (SIGINT or SIGTERM).

uvicorn logs the shutdown itself, and re-raises the signal after it on recent versions,
so nothing after :func:`uvicorn.run` is sure to run.
"""

from __future__ import annotations

import logging

import uvicorn
from sqlalchemy.engine import make_url

from backvault.server.app import create_app
from backvault.server.config import ServerConfig
from backvault.server.observability import configure_logging

logger = logging.getLogger("backvault.server")


def run_server(config: ServerConfig) -> None:
    configure_logging(config.log_level)
    app = create_app(config)
    scheme = "https" if config.tls_cert else "http"
    logger.info(
        "server starting",
        extra={
            "address": f"{scheme}://{config.host}:{config.port}",
            "data_dir": str(config.data_dir),
            # The URL may contain a password; SQLAlchemy masks it here.
            "database": make_url(config.database_url).render_as_string(hide_password=True),
            "storage": config.storage or str(config.blob_dir),
        },
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        log_level=config.log_level,
        log_config=None,  # keep the JSON handlers set up above
        access_log=False,  # RequestObserver writes the access log
    )
