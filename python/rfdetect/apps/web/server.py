"""``rfdetect serve``: uvicorn running :func:`create_app`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def serve(host: str = "127.0.0.1", port: int = 8000, data: str = ".", models: Optional[str] = None,
          zmq: Optional[str] = None, max_upload_mb: float = 512, log_level: str = "info") -> None:
    try:
        import uvicorn
        from .app import ServeConfig, create_app
    except ImportError as e:
        raise RuntimeError(f"rfdetect serve needs the web extra ({e.name} is missing): "
                           f"pip install 'gr-rfdetect[web]' (fastapi, uvicorn, python-multipart)") from None
    app = create_app(ServeConfig(Path(data), Path(models) if models else None, zmq, max_upload_mb))
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
