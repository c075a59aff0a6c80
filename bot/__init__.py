"""The core of the bot and the adapters around it."""
