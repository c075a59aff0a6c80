"""An ASGI entry point for process managers (`uvicorn bot.asgi:app`), configured from the
environment. Like `python -m bot`, it starts from the composition root (bot/app.py)."""

from .app import create_app
from .logs import setup_logging
from .settings import load_settings

settings = load_settings()
setup_logging(settings)
app = create_app(settings)
