"""An ASGI entry point for process managers (`uvicorn bot.web.asgi:app`), configured from the environment."""

from ..logs import setup_logging
from ..settings import load_settings
from .app import create_app

settings = load_settings()
setup_logging(settings)
app = create_app(settings)
